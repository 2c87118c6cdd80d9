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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmlx.chem.rings import RING_TYPE_NAMES, Ring, per_atom_composition, perceive_rings, ring_type_name
from qmlx.data import load_dataset
from qmlx.data.molecules import Molecules
from qmlx.explain.rings import atom_contributions, element_references, ring_energies
from qmlx.insight.statistics import bootstrap_draws, group_codes, matched_difference, percentile_intervals
from qmlx.nn import load_network
from qmlx.nn.io import predict_network
from qmlx.train.config import recorded_split

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

SIZES = (3, 4, 5, 6, 7, 8)
STRAIN_PER_CH2 = {
    "cyclopropane": 27.5 / 3,
    "cyclobutane": 26.3 / 4,
    "cyclopentane": 6.2 / 5,
    "cyclohexane": 0.0,
}
"""Textbook ring strain energies of the cycloalkanes per CH2 group, kcal/mol (e.g. Anslyn and
Dougherty, Modern Physical Organic Chemistry, 2006: 27.5, 26.3, 6.2 and 0 kcal/mol per ring)."""
CONTRASTS = (  # (a, b, what chemistry says)
    ("cyclopropane", "cyclohexane", "ring strain"),
    ("cyclobutane", "cyclohexane", "ring strain"),
    ("cyclopentane", "cyclohexane", "ring strain"),
    ("cyclopropane", "cyclobutane", "ring strain"),
    ("cyclobutane", "cyclopentane", "ring strain"),
    ("imidazole", "pyrazole", "N-N bond vs 1,3 nitrogens"),
    ("oxazole", "isoxazole", "N-O bond vs 1,3 heteroatoms"),
    ("1,2,4-triazole", "1,2,3-triazole", "one vs two N-N bonds"),
    ("pyrimidine", "pyrazine", "1,3 vs 1,4 nitrogens"),
    ("thiazole", "isothiazole", "N-S bond vs 1,3 heteroatoms"),
    ("pyrimidine", "pyridazine", "1,3 nitrogens vs N-N bond"),
)


@dataclass
class Source:
    """Rings of one set of molecules with one network's per-atom ring energies.

    name, description : labels. mols : the molecules. rings : their rings (RDKit; molecules whose
    bonds RDKit could not perceive are left out). per_atom : (n_rings,) ring energy per ring
    atom, kcal/mol. types : (n_rings,) ring type names. perception : counts by method.
    parents : ring type -> DFT energy per ring atom of the unsubstituted parent molecule.
    """

    name: str
    description: str
    mols: Molecules
    rings: list[Ring]
    per_atom: np.ndarray
    types: np.ndarray
    perception: dict
    parents: dict[str, dict]


def perceive(mols: Molecules) -> tuple[list[Ring], dict]:
    found = [perceive_rings(atoms, i, sizes=SIZES, fallback=False) for i, atoms in enumerate(mols)]
    counts = {m: sum(p.method == m for p in found) for m in ("rdkit", "rdkit-retry", "failed")}
    counts["failed_ids"] = [int(mols.ids[i]) for i, p in enumerate(found) if p.method == "failed"]
    return [r for p in found for r in p.rings], counts


def parent_energies(mols: Molecules, model, max_heavy: int = 8) -> dict[str, dict]:
    """DFT energy per ring atom (minus element references) of each ring type's parent molecule.

    A parent is a molecule made only of one ring's atoms and their hydrogens (cyclohexane,
    pyridine, ...). Its value is ``(E_atomization - sum_i ref(Z_i)) / ring size`` with the
    data set's own reference energy (``atomization_energy``, kcal/mol) and the network's
    element references, and the network's prediction for it the same way.
    """
    heavy = np.bincount(mols.mol_index, weights=mols.Z > 1, minlength=len(mols))
    candidates = np.flatnonzero(heavy <= max_heavy)
    sub = mols.subset(candidates)
    ref = element_references(model)
    ref_sum = np.bincount(sub.mol_index, weights=ref[sub.Z], minlength=len(sub))
    energy = sub.target("atomization_energy", "kcal/mol")
    out: dict[str, dict] = {}
    rows = []
    for i, atoms in enumerate(sub):
        for ring in perceive_rings(atoms, i, sizes=SIZES, fallback=False).rings:
            if ring.size + ring.n_hydrogens == len(atoms):
                rows.append((i, ring))
    if not rows:
        return out
    predicted = predict_network(model, sub.subset([i for i, _ in rows]))[0]
    for (i, ring), pred in zip(rows, predicted):
        name = ring_type_name(ring)
        out.setdefault(
            name,
            {
                "molecule_id": int(sub.ids[i]),
                "formula": sub[i].get_chemical_formula(),
                "dft_per_atom": float((energy[i] - ref_sum[i]) / ring.size),
                "model_per_atom": float((pred - ref_sum[i]) / ring.size),
            },
        )
    return out


def make_source(name: str, description: str, mols: Molecules, model, parents: dict) -> Source:
    t0 = time.perf_counter()
    rings, counts = perceive(mols)
    contributions = atom_contributions(model, mols, ("decomposition",))["decomposition"]
    energy = ring_energies(rings, contributions, mols.offsets)
    per_atom = energy / np.array([r.size for r in rings])
    types = np.array([ring_type_name(r) for r in rings])
    counts["seconds"] = time.perf_counter() - t0
    return Source(name, description, mols, rings, per_atom, types, counts, parents)


def type_table(source: Source, names: list[str], resamples: int, seed: int) -> dict:
    """Count, mean [interval], rank [interval] and H per ring atom of the ring types ``names``.

    Ranks run over ``names`` (1 = lowest mean energy per ring atom, the most stable). With parent
    molecules for at least 5 of the types, also the Spearman correlation between the types'
    means and their parents' DFT values (``spearman_with_parents``), with its interval.
    """
    from scipy.stats import spearmanr

    code = {n: k for k, n in enumerate(names)}
    t = np.array([code.get(str(x), -1) for x in source.types])
    keep = t >= 0
    t, e = t[keep], source.per_atom[keep]
    molecule = np.array([r.molecule for r in source.rings])[keep]
    h = np.array([r.n_hydrogens / r.size for r in source.rings])[keep]
    k = len(names)

    def means(w: np.ndarray) -> np.ndarray:
        n = np.bincount(t, weights=w, minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(t, weights=w * e, minlength=k) / n

    point, draws = bootstrap_draws(means, molecule, len(source.mols), resamples, seed)
    intervals = percentile_intervals(point, draws)
    rank_point = np.argsort(np.argsort(point)) + 1
    rank_draws = np.argsort(np.argsort(np.where(np.isfinite(draws), draws, np.inf), axis=1), axis=1) + 1
    table: dict = {"types": {}}
    for j, n in enumerate(names):
        lo, hi = np.quantile(rank_draws[:, j], [0.025, 0.975])
        first = next(r for r, x in zip(source.rings, source.types) if x == n)
        table["types"][n] = {
            "count": int((t == j).sum()),
            "mean_per_atom": intervals[j].as_dict(),
            "rank": int(rank_point[j]),
            "rank_low": int(lo),
            "rank_high": int(hi),
            "h_per_ring_atom": float(h[t == j].mean()),
            "aromatic": first.aromatic,
            "saturated": bool(not first.aromatic and first.ring_double_bonds == 0),
            "size": first.size,
            "parent": source.parents.get(n),
        }
    with_parent = [j for j, n in enumerate(names) if n in source.parents]
    if len(with_parent) >= 5:
        dft = np.array([source.parents[names[j]]["dft_per_atom"] for j in with_parent])
        rho = [spearmanr(row[with_parent], dft).statistic for row in np.vstack([point, draws])]
        (interval,) = percentile_intervals(np.array(rho[:1]), np.array(rho[1:])[:, None])
        table["spearman_with_parents"] = {**interval.as_dict(), "n_types": len(with_parent)}
    return table


def contrasts(source: Source, resamples: int, seed: int, min_rings: int = 10) -> dict:
    """Reference-free comparisons: per-atom energy of type a minus type b at equal per-atom composition.

    Only contrasts with at least ``min_rings`` rings of each type in the shared strata.
    """
    strata = group_codes([per_atom_composition(r) for r in source.rings])
    molecule = np.array([r.molecule for r in source.rings])
    usable = []
    for a, b, why in CONTRASTS:
        in_a, in_b = source.types == a, source.types == b
        shared = np.intersect1d(strata[in_a], strata[in_b])
        if (
            np.isin(strata[in_a], shared).sum() >= min_rings
            and np.isin(strata[in_b], shared).sum() >= min_rings
        ):
            usable.append((a, b, why, in_a, in_b))
    if not usable:
        return {}

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.array(
            [matched_difference(source.per_atom, ia, ib, strata, w) for _, _, _, ia, ib in usable]
        )

    point, draws = bootstrap_draws(statistic, molecule, len(source.mols), resamples, seed)
    out = {}
    for (a, b, why, in_a, in_b), interval in zip(usable, percentile_intervals(point, draws)):
        shared = set(strata[in_a].tolist()) & set(strata[in_b].tolist())
        pa, pb = source.parents.get(a), source.parents.get(b)
        out[f"{a} - {b}"] = {
            "chemistry": why,
            "model": interval.as_dict(),
            "n_a": int(sum(s in shared for s in strata[in_a])),
            "n_b": int(sum(s in shared for s in strata[in_b])),
            "n_strata": len(shared),
            "dft_parents": pa["dft_per_atom"] - pb["dft_per_atom"] if pa and pb else None,
            "textbook_strain": (
                STRAIN_PER_CH2[a] - STRAIN_PER_CH2[b] if a in STRAIN_PER_CH2 and b in STRAIN_PER_CH2 else None
            ),
        }
    return out


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
    sources: list[Source] = []

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
