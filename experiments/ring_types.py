"""Which ring types does a network rate most stable? A ranking on molecules it never saw.

Every ring of 3 to 8 atoms is typed from RDKit's perception (`qmlx.chem.rings.ring_type_name`:
element sequence around the ring, aromaticity, double bonds inside the ring, and whether a ring
atom carries an exocyclic double bond such as C=O). Its energy per ring atom is the network's atom
energies (``decomposition``) minus the element references, summed over the ring's atoms and their
hydrogens and divided by the number of ring atoms (kcal/mol; lower is more stable).

Sources, each analysed on its own (the references, and so the values, differ between networks):

- ``qm9-test``: qm9-schnet-50k on the 10,000 test molecules of its recorded split;
- ``qm9-unseen``: qm9-schnet-50k on every QM9 molecule outside its training and validation sets (the
  test molecules plus those the split never used), for ring types too rare in the test part;
- ``qm7-test``: qm7-schnet on the 1,433 molecules of QM7 fold 0's test part.

For each ring type with at least ``--min-count`` rings: count, mean with a 95% bootstrap interval
over molecules, rank (1 = most stable) with its bootstrap interval, and mean hydrogens per ring
atom. Comparisons with chemistry that do not depend on the element references (same ring
elements and hydrogens per ring atom on both sides) are reported next to the same difference
for the unsubstituted parent molecules (the data set's own DFT energies) and textbook strain
energies.

    python experiments/ring_types.py

Writes ``ring_types.json``, ``.md`` and ``.png`` to ``--out-dir`` (default ``results/``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from qmlx.chem.rings import RING_TYPE_NAMES
from qmlx.data import load_dataset
from qmlx.insight.rings import RingSet, contrasts, parent_energies, type_table
from qmlx.insight.rings import ring_set as make_source
from qmlx.nn import load_network
from qmlx.train.config import recorded_split

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report


def fmt(v: dict, digits: int = 2) -> str:
    """``-1.23 [-1.40, -1.05]`` (`_report.format_interval` with two digits)."""
    return report.format_interval(v, digits)


def kind(row: dict) -> str:
    return "aromatic" if row["aromatic"] else ("saturated" if row["saturated"] else "unsaturated")


def _rows(result: dict, key: str, with_parent: bool) -> list[str]:
    """Table rows of ``key`` (``types`` or ``other_types``) over all sources, ordered by the main one."""
    main = result["order_by"]
    order = [main, *[n for n in result["sources"] if n != main]]
    src = result["sources"]
    table = src[main][key]
    names = sorted(table, key=lambda n: table[n]["mean_per_atom"]["value"])
    extra = sorted(
        {n for o in order[1:] for n in src[o][key] if n not in table},
        key=lambda n: min(src[o][key][n]["mean_per_atom"]["value"] for o in order[1:] if n in src[o][key]),
    )
    lines = [
        "| ring type | kind | H/atom | "
        + " | ".join(f"{n}: rings | {n}: mean [95%] | {n}: rank [95%]" for n in order)
        + (" | parent, DFT (QM9) |" if with_parent else " |"),
        "|---|---|---|" + "---|---|---|" * len(order) + ("---|" if with_parent else ""),
    ]
    for n in names + extra:
        row = next(src[o][key][n] for o in order if n in src[o][key])
        cells = [n, kind(row), f"{row['h_per_ring_atom']:.2f}"]
        for o in order:
            r = src[o][key].get(n)
            if r is None:
                cells += [f"{src[o]['all_counts'].get(n, 0)}", "–", "–"]
            else:
                rank = f"{r['rank']} [{r['rank_low']}, {r['rank_high']}]"
                cells += [f"{r['count']:,}", fmt(r["mean_per_atom"]), rank]
        if with_parent:
            parent = row["parent"]
            cells.append(f"{parent['dft_per_atom']:.2f} ({parent['formula']})" if parent else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    main = result["order_by"]
    src = result["sources"]
    lines = [
        "# Ring types ranked by ring energy per ring atom, on molecules the networks never saw",
        "",
        "Ring energy per ring atom: the network's atom energies minus the element references, summed over "
        "the ring's atoms and the hydrogens bonded to them, divided by the number of ring atoms "
        "(kcal/mol; lower is more stable). Rank 1 = most stable, among the types of the same table with at "
        f"least {result['min_count']} rings in that column. Brackets: 95% bootstrap intervals over molecules "
        f"({result['resamples']:,} resamples, seed {result['seed']}), for means and for ranks. "
        "H/atom: mean hydrogens per ring atom, the main difference in composition between types. "
        "Ring types come from RDKit: element sequence around the ring, aromaticity (RDKit's model) and "
        "double bonds inside the ring.",
        "",
    ]
    for name, s in src.items():
        p = s["perception"]
        lines.append(
            f"- **{name}**: {s['description']}. {s['n_rings']:,} rings of 3 to 8 atoms; RDKit perceived "
            f"{p['rdkit']:,} molecules directly and {p['rdkit-retry']:,} on a second try with tighter "
            f"covalent radii; {p['failed']} failed both and are left out "
            f"({', '.join(map(str, p['failed_ids'])) or 'none'})."
        )
    lines += [
        "",
        f"Ordered by the `{main}` column. Values are not comparable between networks (each has its own "
        "element references); ranks are. `parent, DFT (QM9)`: the unsubstituted parent molecule's own energy "
        "per ring atom in QM9 (its B3LYP atomization energy minus qm9-schnet-50k's element references), where "
        "QM9 holds it.",
        "",
        "## Named ring types",
        "",
        *_rows(result, "types", True),
        "",
    ]
    for name, s in src.items():
        rho = s.get("spearman_with_parents")
        if rho:
            lines.append(
                f"- {name}: Spearman correlation between the types' mean energies and their parents' DFT "
                f"energies per ring atom: {fmt(rho)} over {rho['n_types']} types with a parent in the "
                "data set."
            )
    lines += [
        "",
        "![ring types](ring_types.png)",
        "",
        "## Comparisons that do not depend on the element references",
        "",
        "Per-atom energy of type a minus type b, compared only between rings with the same ring elements "
        "and hydrogens per ring atom (then the references cancel), pooled over such strata "
        "(kcal/mol per ring atom; negative: a more stable). `DFT parents`: the same difference between the "
        "unsubstituted parent molecules in the data set. `strain`: textbook ring strain per CH2 "
        "(27.5, 26.3, 6.2, 0 kcal/mol for cyclopropane to cyclohexane). "
        "Reported where each side has at least 10 rings in the shared strata.",
        "",
        "| source | a - b | chemistry | rings a / b (strata) | model [95%] | DFT parents | strain |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in src.items():
        for key, c in s["contrasts"].items():
            dft = f"{c['dft_parents']:+.2f}" if c["dft_parents"] is not None else "–"
            strain = f"{c['textbook_strain']:+.2f}" if c["textbook_strain"] is not None else "–"
            lines.append(
                f"| {name} | {key} | {c['chemistry']} | {c['n_a']:,} / {c['n_b']:,} ({c['n_strata']}) "
                f"| {fmt(c['model'])} | {dft} | {strain} |"
            )
    lines += [
        "",
        "## Other ring types",
        "",
        "Rings with an exocyclic double bond on a ring atom (`+ exocyclic =X`: C=O, C=C or C=N), and ring "
        "types without a common name (labelled by elements, sequence and ring double bonds).",
        "",
        *_rows(result, "other_types", False),
        "",
        "Types with at least "
        + f"{result['min_count']} rings (named + other): "
        + ", ".join(f"{n} {len(s['types'])} + {len(s['other_types'])}" for n, s in src.items())
        + ".",
        "",
        f"Run time: {result['seconds']:.0f} s with {result['threads']} thread(s).",
    ]
    return "\n".join(lines) + "\n"


def render(result: dict, out_dir: Path) -> None:
    """``ring_types.md`` and ``ring_types.png``."""
    figure(result, out_dir / "ring_types.png")
    report.write_markdown(
        out_dir / "ring_types.md", [markdown(result).rstrip("\n"), *report.run_lines(result)]
    )


def figure(result: dict, path: Path) -> None:
    """Mean ring energy per ring atom of the named types with intervals, qm9-schnet-50k sources."""
    plt = report.pyplot()

    main = result["order_by"]
    table = result["sources"][main]["types"]
    order = sorted(table, key=lambda n: table[n]["mean_per_atom"]["value"])
    colours = {"aromatic": "tab:red", "saturated": "tab:blue", "unsaturated": "tab:green"}
    markers = {main: "o", "qm9-test": "s", "qm7-test": "^"}
    fig, ax = plt.subplots(figsize=(7.5, 0.24 * len(order) + 1.5))
    y = np.arange(len(order))[::-1]
    for offset, (name, s) in zip((0.0, -0.25, 0.25), result["sources"].items()):
        if name == "qm7-test":
            continue  # another network, other references: not on the same axis
        for yi, n in zip(y, order):
            r = s["types"].get(n)
            if r is None:
                continue
            m = r["mean_per_atom"]
            ax.errorbar(
                m["value"],
                yi + offset,
                xerr=[[m["value"] - m["low"]], [m["high"] - m["value"]]],
                fmt=markers.get(name, "o"),
                ms=3.5,
                color=colours[kind(r)],
                alpha=1.0 if name == main else 0.5,
                capsize=1.5,
                lw=1,
            )
    ax.set_yticks(y)
    ax.set_yticklabels([f"{n} ({table[n]['count']})" for n in order], fontsize=7)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("ring energy per ring atom, qm9-schnet-50k decomposition [kcal/mol] (lower: more stable)")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=k) for k, c in colours.items()]
    handles += [
        plt.Line2D([], [], color="k", marker=markers.get(n, "o"), ls="", label=n)
        for n in result["sources"]
        if n != "qm7-test"
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    ax.set_title(f"Ring types, 95% bootstrap intervals ({main}: circles)", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the bootstrap")
    parser.add_argument("--min-count", type=int, default=30)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--skip-unseen", action="store_true", help="QM9 test molecules only")
    return parser


def compute(args: argparse.Namespace) -> dict:
    """Ring-type tables, Spearman correlations with the parents and contrasts of every source."""
    start = time.perf_counter()
    sources: list[RingSet] = []

    qm9, model9 = load_dataset("qm9"), load_network("qm9-schnet-50k")
    split9 = recorded_split(qm9, model9.metadata)
    parents9 = parent_energies(qm9, model9)
    test9 = np.sort(split9.test)
    sources.append(
        make_source(
            "qm9-test",
            f"qm9-schnet-50k, the {len(test9):,} QM9 test molecules",
            qm9.subset(test9),
            model9,
            parents9,
        )
    )
    if not args.skip_unseen:
        seen = np.zeros(len(qm9), dtype=bool)
        seen[split9.train] = seen[split9.val] = True
        unseen = np.flatnonzero(~seen)
        description = (
            f"qm9-schnet-50k, the {len(unseen):,} QM9 molecules outside its training and validation sets "
            f"({len(test9):,} test molecules and {len(unseen) - len(test9):,} the split never used)"
        )
        sources.append(make_source("qm9-unseen", description, qm9.subset(unseen), model9, parents9))
    qm7, model7 = load_dataset("qm7"), load_network("qm7-schnet")
    test7 = np.sort(recorded_split(qm7, model7.metadata).test)
    parents7 = parent_energies(qm7, model7)
    sources.append(
        make_source(
            "qm7-test",
            f"qm7-schnet, the {len(test7):,} QM7 fold-0 test molecules",
            qm7.subset(test7),
            model7,
            parents7,
        )
    )

    result = {
        "min_count": args.min_count,
        "resamples": args.resamples,
        "seed": args.seed,
        "threads": args.threads,
        "order_by": "qm9-unseen" if not args.skip_unseen else "qm9-test",
        "sources": {},
    }
    named = set(RING_TYPE_NAMES.values())
    for s in sources:
        names, counts = np.unique(s.types, return_counts=True)
        common = [str(n) for n, c in zip(names, counts) if c >= args.min_count]
        main_types = type_table(s, [n for n in common if n in named], args.resamples, args.seed)
        other_types = type_table(s, [n for n in common if n not in named], args.resamples, args.seed)
        result["sources"][s.name] = {
            "description": s.description,
            "n_molecules": len(s.mols),
            "n_rings": len(s.rings),
            "perception": s.perception,
            "types": main_types["types"],
            "spearman_with_parents": main_types.get("spearman_with_parents"),
            "other_types": other_types["types"],
            "contrasts": contrasts(s, args.resamples, args.seed),
            "all_counts": {str(n): int(c) for n, c in zip(names, counts)},
        }
    result["seconds"] = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "ring_types", argv)


if __name__ == "__main__":
    main()
