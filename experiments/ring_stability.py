"""Do networks rate aromatic rings as more stable? Held-out molecules, composition controls, intervals.

For every 5- and 6-membered ring (bonds and aromaticity from RDKit, see `qmlx.chem.rings`), the
ring energy is the sum over the ring's atoms and their hydrogens of each atom's contribution
relative to its element's reference energy (kcal/mol; lower is more stable), from two
explanations: ``decomposition`` (the network's atom energies E_i - ref(Z_i)) and ``lrp`` (LRP
relevance plus bias relevance, which explains E - sum_i ref(Z_i)).

Molecules analysed (the network's recorded split, ``qmlx.train.config.recorded_split``):

- held out (the headline): the split's test molecules, which the network saw neither in training
  nor in validation (QM7: the 1,433 molecules of fold 0's test part; QM9: 10,000 molecules);
- training molecules, labelled as such: all of them (QM7) or a seeded random ``--n-train``
  (QM9).

Statistics (all with a 95% bootstrap interval over molecules, ``--resamples`` resamples, seeded):

- composition-matched pairs: among (aromatic, non-aromatic) pairs of rings with the same ring
  elements and the same number of ring hydrogens, the fraction in which the aromatic ring has the
  lower energy (ties count one half). The element references cancel within such a pair;
- ROC AUC of -E_ring for aromatic vs non-aromatic rings, next to what composition alone gives:
  the ring's hydrogen count (fewer hydrogens ranks as aromatic), and a logistic regression on
  ring element counts and hydrogen count (5-fold, split by molecule, out-of-fold scores);
- the AUC of the residual after a least-squares fit of E_ring on composition, and the AUC of
  ring energies summed without subtracting the element references.

Molecules on which RDKit's default bond perception fails are retried with tighter covalent radii
and listed; molecules on which both fail are left out and listed (``--use-fallback`` includes the
rings of the covalent-radius fallback instead).

    python experiments/ring_stability.py --dataset qm7     # qm7-schnet and qm7-dtnn
    python experiments/ring_stability.py --dataset qm9     # qm9-schnet-50k

Writes ``ring_stability_<dataset>.json``, ``.md`` and ``_hist.png`` to ``--out-dir`` (default
``results/``; ``--report-only`` rewrites the Markdown only, the JSON holds no ring energies).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from qmlx.data import load_dataset
from qmlx.insight.rings import METHODS, analyse_part, make_part
from qmlx.nn import load_network
from qmlx.train.config import recorded_split

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

MODELS = {"qm7": ("qm7-schnet", "qm7-dtnn"), "qm9": ("qm9-schnet-50k",)}


def fmt(v: dict | None, digits: int = 3) -> str:
    """``0.842 [0.707, 0.937]`` (`_report.format_interval`); ``–`` if undefined; ``*`` if some
    resamples were undefined (no aromatic or no non-aromatic ring drawn)."""
    return report.format_interval(v, digits)


def markdown(result: dict) -> str:
    ds = result["dataset"]
    lines = [f"# Ring stability on {ds.upper()}: held-out molecules, composition controls, intervals", ""]
    lines += [f"- `{name}`: {desc}" for name, desc in result["model_descriptions"].items()]
    lines += [
        "",
        "Ring energy: the sum, over a ring's atoms and the hydrogens bonded to them, of each atom's",
        "contribution minus its element's reference energy (kcal/mol; lower is more stable).",
        "`decomposition`: the network's atom energies; `LRP`: relevance plus bias relevance.",
        "Every number in brackets is a 95% percentile interval from a bootstrap over molecules",
        f"({result['resamples']} resamples, seed {result['seed']}). Bonds and aromaticity: RDKit.",
        "",
    ]
    for part in result["parts"]:
        p = part["perception"]
        title = "Held-out molecules" if part["held_out"] else "Training molecules (seen in training)"
        lines += [f"## {title}: {part['label']}", ""]
        lines += [
            f"Bond perception: {p['n_molecules']:,} molecules; RDKit's default perception succeeded on "
            f"{p['rdkit']:,}; {p['rdkit_retry']} more succeeded on a second try with tighter covalent radii "
            f"(strained polycyclics, {p['rings_from_retry']} rings); {p['failed']} failed both "
            "and are left out"
            + (
                f" ({p['fallback_rings']} rings of the covalent-radius fallback not used)"
                if p["failed"]
                else ""
            )
            + f". {p['n_rings']:,} five- and six-membered rings analysed.",
            "",
        ]
        if p["rdkit_retry_ids"]:
            shown = ", ".join(str(i) for i in p["rdkit_retry_ids"][:40])
            more = (
                f" and {len(p['rdkit_retry_ids']) - 40} more (JSON)" if len(p["rdkit_retry_ids"]) > 40 else ""
            )
            lines += [f"Molecule ids perceived on the second try: {shown}{more}.", ""]
        if p["failed_ids"]:
            lines += [f"Molecule ids left out: {', '.join(str(i) for i in p['failed_ids'])}.", ""]
        lines += [
            "**Composition-matched pairs**: (aromatic, non-aromatic) ring pairs with the same ring elements "
            "and the same hydrogen count; the fraction in which the aromatic ring has the lower energy.",
            "",
            "| model | rings | pairs | composition groups | aromatic rings in pairs | decomposition | LRP |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in result["models"]:
            for set_name, s in part[name]["ring_sets"].items():
                lines.append(
                    f"| {name} | {set_name} | {s.get('n_pairs', 0):,} | {s.get('n_composition_groups', 0)} "
                    f"| {s.get('n_aromatic_in_pairs', 0)} | {fmt(s.get('pairs_decomposition'))} "
                    f"| {fmt(s.get('pairs_lrp'))} |"
                )
        first = result["models"][0]
        groups = part[first].get("by_composition", [])
        if groups:
            lines += [
                "",
                f"Pairs by composition group ({first}, decomposition; groups with at least 10 pairs; "
                "the three "
                "most common ring types of each kind):",
                "",
                "| ring elements, H | aromatic / non-aromatic rings | pairs | aromatic more stable "
                "| aromatic types | non-aromatic types |",
                "|---|---|---|---|---|---|",
            ]
            for g in groups:
                if g["n_pairs"] >= 10:
                    lines.append(
                        f"| {g['elements']}, H{g['hydrogens']} | {g['n_aromatic']} / {g['n_non_aromatic']} "
                        f"| {g['n_pairs']:,} | {fmt(g['fraction'])} | {', '.join(g['aromatic_types'])} "
                        f"| {', '.join(g['non_aromatic_types'])} |"
                    )
        lines += [
            "",
            "**ROC AUC** of -E_ring, aromatic vs non-aromatic, next to composition alone (hydrogen count; "
            "logistic regression on ring element and hydrogen counts, out-of-fold), the AUC of the "
            "residual of E_ring after a least-squares fit on composition, and of E_ring without the "
            "element references.",
            "",
            "| model | rings | rings (aromatic) | H count only | element counts | decomposition "
            "| decomposition, residual | LRP | LRP, residual | decomposition, no references |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in result["models"]:
            for set_name, s in part[name]["ring_sets"].items():
                if set_name == "5- and 6-rings":
                    continue
                few = " (few aromatic rings)" if s["n_aromatic"] < 10 else ""
                lines.append(
                    f"| {name} | {set_name} | {s['n_rings']:,} ({s['n_aromatic']}){few} "
                    f"| {fmt(s.get('auc_h_count'))} "
                    f"| {fmt(s.get('auc_element_counts'))} | {fmt(s.get('auc_decomposition'))} "
                    f"| {fmt(s.get('auc_decomposition_residual'))} | {fmt(s.get('auc_lrp'))} "
                    f"| {fmt(s.get('auc_lrp_residual'))} | {fmt(s.get('auc_decomposition_no_reference'))} |"
                )
        lines += [
            "",
            "`*`: some resamples drew no aromatic (or no non-aromatic) ring and are left out of that "
            "interval (counts in the JSON).",
        ]
        retried = [
            (name, set_name, s["without_retried"])
            for name in result["models"]
            for set_name, s in part[name]["ring_sets"].items()
            if "without_retried" in s and set_name != "carbon 6-rings"
        ]
        if retried:
            lines += [
                "",
                "Without the molecules perceived on the second try (decomposition, point estimates): "
                + "; ".join(
                    f"{n} {sn}: pairs {report.format_number(w['pairs_decomposition'])}, "
                    f"AUC {report.format_number(w['auc_decomposition'])}"
                    for n, sn, w in retried
                    if report.is_number(w["pairs_decomposition"]) or report.is_number(w["auc_decomposition"])
                )
                + ".",
            ]
        lines.append("")
    lines += [
        "Within a composition group every ring holds the same atoms, so the element references cancel: "
        "the pair fractions are identical with and without them (checked; `pairs_*_no_reference` in the "
        "JSON). Without references the AUC over all rings measures mostly how many atoms a ring holds.",
        "",
        f"![ring energies]({result['stem']}_hist.png)",
        "",
        f"Run time: {result['seconds']:.0f} s with {result['threads']} thread(s) "
        "(perception, explanations and bootstrap together).",
    ]
    return "\n".join(lines) + "\n"


def render(result: dict, out_dir: Path) -> None:
    """``STEM.md`` and, when the result holds the ring energies (not after ``--report-only``),
    ``STEM_hist.png``."""
    stem = result["stem"]
    if "_ring_aromatic" in result["parts"][0]:
        histogram(result, out_dir / f"{stem}_hist.png")
    report.write_markdown(out_dir / f"{stem}.md", [markdown(result).rstrip("\n"), *report.run_lines(result)])


def histogram(result: dict, path: Path) -> None:
    """Ring energies of the first part, by ring size and aromaticity, per model and method."""
    plt = report.pyplot()
    part = result["parts"][0]
    aromatic = np.array(part["_ring_aromatic"], dtype=bool)
    six = np.array(part["_ring_size"]) == 6
    names = result["models"]
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for ax, m in zip(axes[row], METHODS):
            e = np.array(part[name]["_energies"][m])
            if len(e) == 0:
                continue
            bins = np.linspace(np.percentile(e, 0.5), np.percentile(e, 99.5), 50)
            for label, mask in (
                ("6-ring, aromatic", six & aromatic),
                ("6-ring, not aromatic", six & ~aromatic),
                ("5-ring, aromatic", ~six & aromatic),
                ("5-ring, not aromatic", ~six & ~aromatic),
            ):
                if mask.sum() > 1:
                    ax.hist(e[mask], bins=bins, alpha=0.5, density=True, label=f"{label} ({mask.sum()})")
            ax.set_xlabel(f"ring energy, {m} [kcal/mol]")
            ax.set_title(f"{name}, {m}, {part['label']}", fontsize=9)
        axes[row][0].set_ylabel("density")
        axes[row][1].legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the training subset and the bootstrap")
    parser.add_argument("--dataset", choices=sorted(MODELS), default="qm7")
    parser.add_argument("--models", nargs="+", default=None, help="networks sharing one recorded split")
    parser.add_argument(
        "--n-train", type=int, default=10000, help="training molecules analysed (seeded subset)"
    )
    parser.add_argument("--no-train", action="store_true", help="held-out molecules only")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--use-fallback", action="store_true", help="keep rings of the covalent-radius fallback"
    )
    return parser


def stem(args: argparse.Namespace) -> str:
    return f"ring_stability_{args.dataset}"


def compute(args: argparse.Namespace) -> dict:
    """Statistics of the held-out (and training) rings of every model; the ring energies, for the
    figure, under ``_`` keys (not written to the JSON)."""
    start = time.perf_counter()
    names = args.models or list(MODELS[args.dataset])
    models = {n: load_network(n) for n in names}
    mols = load_dataset(args.dataset)
    splits = {n: recorded_split(mols, m.metadata) for n, m in models.items()}
    first = splits[names[0]]
    for n, s in splits.items():
        if not np.array_equal(s.test, first.test) or not np.array_equal(s.train, first.train):
            raise SystemExit(f"{n} was trained on another split than {names[0]}; analyse it separately")
    parts = [
        make_part(mols, np.sort(first.test), f"{len(first.test):,} test molecules", True, args.use_fallback)
    ]
    if not args.no_train:
        train = np.sort(first.train)
        if args.n_train < len(train):
            train = np.sort(np.random.default_rng(args.seed).choice(train, args.n_train, replace=False))
            label = f"{len(train):,} random training molecules (seed {args.seed}) of {len(first.train):,}"
        else:
            label = f"all {len(train):,} training molecules"
        parts.append(make_part(mols, train, label, False, args.use_fallback))
    result = {
        "dataset": args.dataset,
        "models": names,
        "model_descriptions": {
            n: f"{m.metadata.get('model', type(m).__name__)}, split {m.metadata['split']['method']}"
            + (f" fold {m.metadata['split']['fold']}" if m.metadata["split"].get("fold") is not None else "")
            + f", {m.metadata['split']['n_train']:,} training molecules, test MAE "
            f"{m.metadata.get('test_mae_kcal_mol', float('nan')):.2f} kcal/mol"
            for n, m in models.items()
        },
        "resamples": args.resamples,
        "seed": args.seed,
        "use_fallback": args.use_fallback,
        "threads": args.threads,
        "parts": [analyse_part(p, models, args.resamples, args.seed) for p in parts],
    }
    result["seconds"] = time.perf_counter() - start
    result["stem"] = stem(args)
    return result


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), stem, argv)


if __name__ == "__main__":
    main()
