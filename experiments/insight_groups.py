"""Functional-group energies under a trained model, on its held-out test molecules, checked against
group additivity (`qmlx.insight.groups`; the same as ``qmlx insight groups MODEL --data DATA``).

    python experiments/insight_groups.py                     # qm9-schnet on QM9
    python experiments/insight_groups.py --model qm7-schnet --data qm7

Writes ``insight_groups.json``, ``.md`` and ``.png`` to ``--out-dir`` (default ``results/``); for a
model other than qm9-schnet the names end in ``_<model>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

DEFAULT_MODEL = "qm9-schnet"


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the bootstrap")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default="qm9")
    parser.add_argument("--groups", default="functional")
    parser.add_argument("--resamples", type=int, default=1000)
    return parser


def stem(args: argparse.Namespace) -> str:
    return "insight_groups" if args.model == DEFAULT_MODEL else f"insight_groups_{args.model}"


def compute(args: argparse.Namespace) -> dict:
    from qmlx.data import load_dataset
    from qmlx.insight.groups import group_report, held_out_molecules
    from qmlx.models import load_model

    model = load_model(args.model)
    mols = load_dataset(args.data)
    analysed, train, chosen = held_out_molecules(model, mols)
    out = group_report(model, analysed, train, args.groups, n_resamples=args.resamples, seed=args.seed)
    out.update(model=args.model, data=args.data, molecules=chosen, groups_spec=args.groups, stem=stem(args),
               target=model.metadata.get("target"), quantity=model.quantity)  # fmt: skip
    return out


def render(result: dict, out_dir: Path) -> None:
    from qmlx.insight.plot import plot_group_energies

    name = result["stem"]
    methods = result["methods"]
    add = result.get("additivity") or {}
    inc = add.get("increments") or {}
    rows = [r for r in result["groups"] if r["occurrences"]]
    rows.sort(key=lambda r: r[f"{methods[0]}_per_heavy_atom"])
    fmt = report.format_number
    lines = [
        f"# Group energies: {result['model']} on {result['data']}",
        "",
        f"{result['quantity']} ({result['target']}), explained on {result['molecules']}. A group's energy is the sum "
        "of its atoms' and their hydrogens' contributions relative to the element references of the model's output "
        "head (kcal/mol; `decomposition`: atom energies, `lrp`: relevance plus bias relevance); 95 % bootstrap "
        "intervals over molecules. *Beyond composition*: the group energy minus what its composition (heavy atoms "
        "per element and hydrogens) gives in a least-squares fit over all occurrences. *Additivity*: the increment "
        "of a group-additivity fit to the training molecules' reference energies (element references first, then "
        "one increment per group). *A baseline could give it*: what is left of the group's energy beyond its "
        "composition (or beyond its numbers of heavy atoms and hydrogens alone) is not distinguishable from 0 or has "
        "the other sign, so a conclusion drawn from that energy could come from the baseline. Sorted by the "
        "decomposition energy per heavy atom.",
        "",
        *report.table(
            [
                "group",
                "n",
                "molecules",
                *methods,
                "per heavy atom",
                "beyond composition",
                "additivity",
                "a baseline could give it",
            ],
            [
                [
                    r["group"],
                    r["occurrences"],
                    r["molecules"],
                    *[f"{r[m]:.2f} [{r[m + '_low']:.2f}, {r[m + '_high']:.2f}]" for m in methods],
                    f"{r[methods[0] + '_per_heavy_atom']:.2f}",
                    f"{r['residual']:.2f} [{r['residual_low']:.2f}, {r['residual_high']:.2f}]",
                    fmt(inc.get(r["group"]), ".2f"),
                    r.get("confound") or "",
                ]
                for r in rows
            ],
        ),  # fmt: skip
        "",
    ]
    if add.get("spearman") is not None:
        worst = ", ".join(f"{w['group']} (model rank {w['model_rank']}, additivity {w['additivity_rank']})"
                          for w in add["largest_rank_differences"][:3])  # fmt: skip
        lines += [
            f"Group additivity on the held-out molecules: MAE {add['test_mae']:.2f} kcal/mol against "
            f"{add['element_only_test_mae']:.2f} for element references alone (training MAE {add['train_mae']:.2f}). "
            f"Spearman of the {methods[0]} group energies with the increments: {add['spearman']:.2f} over the "
            f"{len(add['groups'])} groups with at least 10 occurrences; ranked most differently: {worst}.",
            "",
        ]
    if result.get("contrasts"):
        lines += [
            "Groups compared at equal composition per heavy atom (there the element references cancel): the "
            f"{methods[0]} energy per heavy atom of the first group minus the second, matched within strata, kcal/mol; "
            "the largest differences:",
            "",
            *report.table(
                ["first", "second", "difference per heavy atom", "occurrences", "strata"],
                [
                    [
                        c["a"],
                        c["b"],
                        report.format_interval(c["difference_per_heavy_atom"], 2),
                        f"{c['n_a']} / {c['n_b']}",
                        c["strata"],
                    ]
                    for c in result["contrasts"]
                ],
            ),  # fmt: skip
            "",
        ]
    lines += [
        f"Bonds not perceived by RDKit: {result['perception_failures']} of {result['n_molecules']:,} molecules "
        "(left out). Figure: " + f"[{name}.png]({name}.png).",
        "",
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / f"{name}.md", lines)
    plot_group_energies(result, out_dir / f"{name}.png", min_occurrences=10)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), stem, argv)


if __name__ == "__main__":
    main()
