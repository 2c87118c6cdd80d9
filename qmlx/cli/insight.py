"""``qmlx insight groups`` and ``qmlx insight compare``: chemical groups' energies under a model, and
models compared by their explanations (`qmlx.insight.groups`, `qmlx.insight.compare`)."""

from __future__ import annotations

import argparse
import sys

from qmlx.cli import common
from qmlx.errors import QmlxError


def groups_command(args: argparse.Namespace) -> None:
    from qmlx._io import json_dumps
    from qmlx.chem.groups import load_groups
    from qmlx.data import load_dataset
    from qmlx.insight.groups import group_report, held_out_molecules
    from qmlx.models import load_model

    common.check_writable(args.png, "--png")
    common.check_writable(args.html, "--html")
    groups = load_groups(args.groups)  # a bad groups file fails before any work
    model = load_model(args.model)
    mols = load_dataset(args.data)
    analysed, train, chosen = held_out_molecules(model, mols, args.all, args.unseen)
    report = group_report(model, analysed, train, groups, n_resamples=args.resamples, seed=args.seed)
    report.update(model=args.model, data=args.data, molecules=chosen)
    first = report["methods"][0]
    if args.format == "json":
        print(json_dumps(report))
    else:
        _print_groups(report, first)
    if args.png:
        from qmlx.insight.plot import plot_group_energies

        plot_group_energies(report, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    if args.html:
        from qmlx.insight.plot import write_group_report_html

        write_group_report_html(report, args.html)
        print(f"wrote {args.html}", file=sys.stderr)


def _print_groups(report: dict, first: str) -> None:
    methods = report["methods"]
    print(f"{report['model']} on {report['data']}: {report['molecules']}; group energies in kcal/mol "
          f"(sum over the group's atoms and their hydrogens), 95 % bootstrap intervals")  # fmt: skip
    inc = (report.get("additivity") or {}).get("increments", {})
    head = f"{'group':<22} {'n':>5}  " + "  ".join(f"{m:>24}" for m in methods)
    head += f"  {'per heavy atom':>14}  {'beyond composition':>24}" + ("  additivity" if inc else "")
    print(head)
    for r in report["groups"]:
        if not r["occurrences"]:
            continue
        cells = [f"{r[m]:8.2f} [{r[m + '_low']:7.2f},{r[m + '_high']:7.2f}]" for m in methods]
        res = f"{r['residual']:8.2f} [{r['residual_low']:7.2f},{r['residual_high']:7.2f}]"
        add = (
            f"  {inc[r['group']]:10.2f}"
            if inc.get(r["group"]) is not None
            else ("  " + " " * 10 if inc else "")
        )
        flag = f"  [{r['confound']} alone could give this]" if r.get("confound") else ""
        print(f"{r['group']:<22} {r['occurrences']:>5}  " + "  ".join(cells)
              + f"  {r[first + '_per_heavy_atom']:14.2f}  {res}{add}{flag}")  # fmt: skip
    a = report.get("additivity")
    if a and a.get("spearman") is not None:
        print(f"group additivity (fitted to the training molecules' reference energies): held-out MAE "
              f"{a['test_mae']:.2f} kcal/mol (element references alone {a['element_only_test_mae']:.2f}); "
              f"Spearman of {first} group energies with the increments {a['spearman']:.2f} over "
              f"{len(a['groups'])} groups")  # fmt: skip
    if report.get("contrasts"):
        print("groups compared at equal composition per heavy atom (element references cancel): energy per heavy "
              "atom of the first minus the second, kcal/mol, 95 % interval")  # fmt: skip
        for c in report["contrasts"]:
            d = c["difference_per_heavy_atom"]
            print(f"  {c['a']} - {c['b']}: {d['value']:.2f} [{d['low']:.2f}, {d['high']:.2f}] "
                  f"({c['n_a']} and {c['n_b']} occurrences in {c['strata']} strata)")  # fmt: skip
    if report["perception_failures"]:
        print(f"bonds not perceived (RDKit): {report['perception_failures']} molecule(s), left out")


def compare_command(args: argparse.Namespace) -> None:
    from qmlx._io import json_dumps
    from qmlx.data import load_dataset
    from qmlx.insight.compare import compare_models
    from qmlx.insight.groups import held_out_molecules
    from qmlx.models import load_model

    if len(args.models) < 2:
        raise QmlxError("insight compare needs at least two models")
    models = [load_model(name) for name in args.models]
    mols = load_dataset(args.data)
    analysed, _, chosen = held_out_molecules(models[0], mols, args.all, args.unseen)
    result = compare_models(models, analysed, args.models, groups=args.groups, n_resamples=args.resamples,
                            seed=args.seed, top=args.top)  # fmt: skip
    result["data"], result["molecules"] = args.data, chosen
    if args.format == "json":
        print(json_dumps(result))
        return
    print(f"{', '.join(args.models)} on {args.data}: {chosen}")
    print("group energies (kcal/mol, first contribution method of each model):")
    names = args.models
    print(f"{'group':<22} {'n':>5}  " + "  ".join(f"{n[-14:]:>14}" for n in names))
    for row in result["groups"]:
        vals = "  ".join(f"{v:14.2f}" if v is not None else f"{'':>14}" for v in row["energies"])
        print(f"{row['group']:<22} {row['occurrences']:>5}  {vals}")
    for pair in result["pairs"]:
        print(f"{pair['a']} vs {pair['b']}: group energies Spearman {pair['group_spearman']:.2f}; atom "
              f"contributions Pearson {pair['atom_pearson']:.2f}; disagreement vs |error difference| "
              f"Spearman {pair['disagreement_error_spearman']:.2f}")  # fmt: skip
    print("molecules whose explanations disagree most (mean |atom contribution difference|, kcal/mol):")
    for m in result["most_disagreeing"]:
        errs = ", ".join(f"{e:.2f}" for e in m["abs_errors"])
        print(
            f"  molecule {m['molecule']:>5} {m['formula']:<10} disagreement {m['disagreement']:.2f}  |errors| {errs}"
        )


def rings_command(args: argparse.Namespace) -> None:
    from qmlx._io import json_dumps
    from qmlx.data import load_dataset
    from qmlx.insight.groups import held_out_molecules
    from qmlx.insight.rings import ranked_ring_types, ring_report
    from qmlx.models import load_model

    model = load_model(args.model)
    mols = load_dataset(args.data)
    analysed, _, chosen = held_out_molecules(model, mols, args.all, args.unseen)
    report = ring_report(model, analysed, n_resamples=args.resamples, seed=args.seed)
    report.update(model=args.model, data=args.data, molecules=chosen)
    if args.types:
        report["ranked_types"] = ranked_ring_types(
            model, mols, analysed, args.min_count, args.resamples, args.seed
        )
    if args.format == "json":
        print(json_dumps(report))
        return
    perception = report["perception"]
    print(f"{args.model} on {args.data}: {chosen}; {perception['n_rings']} five- and six-membered rings "
          f"({perception['failed']} molecules without perceived bonds left out, "
          f"{perception['rdkit_retry']} perceived on a second try)")  # fmt: skip
    print("aromatic against non-aromatic rings of the same ring elements and hydrogen count: the fraction of "
          "pairs in which the aromatic ring has the lower energy, 95 % bootstrap interval; beside it, the same "
          "ranking over all rings (AUC) from the energies and from composition alone (hydrogen count)")  # fmt: skip
    for name, row in report["ring_sets"].items():
        if "note" in row or not row.get("n_pairs"):
            print(
                f"  {name:<15} {row.get('n_pairs', 0):>7} pairs  no aromatic and non-aromatic rings of the same composition"
            )
            continue
        cells = "  ".join(_interval(m, row[f"pairs_{m}"]) for m in report["methods"])
        base = f"AUC {_interval(report['methods'][0], row['auc_' + report['methods'][0]])}, {_interval('H count', row['auc_h_count'])}"
        print(f"  {name:<15} {row['n_pairs']:>7} pairs  {cells};  {base}")
    ranked = report.get("ranked_types")
    if ranked:
        rho = ranked.get("spearman_with_parents")
        print(f"named ring types with at least {args.min_count} rings, ranked by decomposition energy per ring atom "
              "(kcal/mol; rank 1 = most stable), 95 % intervals; parent: the unsubstituted parent molecule's "
              "reference energy per ring atom, where the data set holds it")  # fmt: skip
        for name, t in sorted(ranked["types"].items(), key=lambda kv: kv[1]["rank"]):
            e, parent = t["mean_per_atom"], t.get("parent")
            par = f"  parent {parent['dft_per_atom']:7.2f}" if parent else ""
            print(f"  {t['rank']:>3} [{t['rank_low']:>2}, {t['rank_high']:>2}]  {name:<22} {t['count']:>6}  "
                  f"{e['value']:7.2f} [{e['low']:.2f}, {e['high']:.2f}]{par}")  # fmt: skip
        if rho:
            print(f"Spearman with the parents' energies: {rho['value']:.2f} [{rho['low']:.2f}, {rho['high']:.2f}] "
                  f"over {rho['n_types']} types")  # fmt: skip
    print("ring types (decomposition ring energy, kcal/mol, mean per ring):")
    for t in report["types"]:
        e = t["decomposition"]
        print(f"  {t['type']:<34} {t['rings']:>6}  {e['value']:8.2f} [{e['low']:.2f}, {e['high']:.2f}]")


def _interval(name: str, d: dict) -> str:
    return f"{name} {d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def add(sub: argparse._SubParsersAction) -> None:
    insight = sub.add_parser("insight", help="chemical insight: group energies, models compared")
    insight_sub = insight.add_subparsers(dest="insight_command", required=True)
    p = insight_sub.add_parser(
        "groups",
        help="energies of chemical groups (SMARTS) under a model, with intervals and a group-additivity check",
        description="For each group (a SMARTS pattern: the library of functional groups or ring types, or "
        "your own file), the sum of the model's atom contributions over the group's atoms and their "
        "hydrogens, per occurrence and per heavy atom, with 95 %% bootstrap intervals over molecules, what "
        "composition alone gives, and the increment of a group-additivity fit to the data set's own "
        "reference energies. By default on the held-out test molecules of the model's recorded split.",
    )
    p.add_argument("model", help="a shipped model name, network .pt or KRR .h5 file")
    _common(p)
    p.add_argument("--png", default=None, help="draw the group energies with their intervals")
    p.add_argument("--html", default=None, help="also write a self-contained HTML report (figure and table)")
    p.set_defaults(func=groups_command)
    p = insight_sub.add_parser(
        "compare",
        help="models compared by their explanations: group energies, atom agreement, where they disagree",
    )
    p.add_argument("models", nargs="+", help="two or more models (networks, ensembles, KRR files)")
    _common(p)
    p.add_argument(
        "--top",
        type=common.positive_int,
        default=10,
        help="molecules listed where explanations disagree most",
    )
    p.set_defaults(func=compare_command)
    p = insight_sub.add_parser(
        "rings",
        help="ring energies by type, and aromatic against non-aromatic rings of the same composition",
    )
    p.add_argument("model", help="a shipped model name, network .pt or KRR .h5 file")
    _common(p)
    p.add_argument(
        "--types", action="store_true",
        help="also rank the named ring types (rings of 3 to 8 atoms) with intervals, against their parent "
        "molecules' reference energies where the data set holds them",
    )  # fmt: skip
    p.add_argument(
        "--min-count", type=common.positive_int, default=30, help="with --types: rings a type needs"
    )
    p.set_defaults(func=rings_command)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="qm7, qm9, a qmlx .h5 store or a molecule file")
    p.add_argument("--groups", default="functional",
                   help="functional, rings, functional,rings, or a groups file (name SMARTS [description] per line)")  # fmt: skip
    p.add_argument(
        "--all", action="store_true", help="every molecule, not only the model's held-out test set"
    )
    p.add_argument(
        "--unseen", action="store_true",
        help="every molecule outside the model's training and validation sets (its test set and those its split "
        "never used), for rare groups",
    )  # fmt: skip
    p.add_argument("--resamples", type=common.positive_int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=common.nonnegative_int, default=0, help="bootstrap seed")
    p.add_argument("--format", choices=["table", "json"], default="table")
