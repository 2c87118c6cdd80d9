"""Rings as groups: ring energies by ring type, and aromatic against non-aromatic rings compared
within matching compositions (the DTNN paper's ring-stability question, Schütt et al., Nat.
Commun. 8, 13890, 2017).

Rings are perceived from the geometry (`qmlx.chem.rings.perceive_rings`: RDKit, retried with
tighter covalent radii for strained polycyclics; molecules where both fail are left out and
counted). Each ring is an occurrence of its ring type (`qmlx.chem.rings.ring_type_name`) whose
energy is the sum of the model's atom contributions over its atoms and their hydrogens
(`qmlx.explain.contributions`), kcal/mol.

`matched_pairs` is the comparison between two sets of occurrences that generalises the ring
analysis: among pairs (one of set A, one of set B) in the same stratum (for rings: the same ring
elements and the same number of ring hydrogens, so that element references cancel), the fraction
in which the A occurrence has the lower energy, with a bootstrap interval over molecules.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qmlx.chem.rings import Ring, per_atom_composition, perceive_rings, ring_type_name
from qmlx.data.molecules import Molecules
from qmlx.explain.contributions import atom_contributions, element_references
from qmlx.insight.statistics import (
    Interval,
    bootstrap,
    bootstrap_draws,
    group_codes,
    matched_difference,
    pair_fraction,
    percentile_intervals,
)

#: ring sizes of the ring-type tables (`perceive`, `type_table`)
TYPE_SIZES = (3, 4, 5, 6, 7, 8)
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


#: ring sets compared by `ring_report`, as the ring analysis of ``experiments/ring_stability.py``
RING_SETS = {
    "6-rings": lambda r: r.size == 6,
    "5-rings": lambda r: r.size == 5,
    "5- and 6-rings": lambda r: True,
}


@dataclass
class RingOccurrences:
    """The rings of a set of molecules with their energies.

    rings : every ring perceived (RDKit or its retry; none from the covalent-radius fallback).
    energy : method -> (n_rings,) ring energies, kcal/mol.
    failed : indices of molecules whose bonds RDKit could not perceive (left out).
    retried : indices of molecules perceived on the second try.
    n_molecules : molecules analysed.
    """

    rings: list[Ring]
    energy: dict[str, np.ndarray]
    failed: list[int]
    retried: list[int]
    n_molecules: int


def ring_occurrences(
    model, mols: Molecules, sizes: tuple[int, ...] = (5, 6), methods: Sequence[str] | None = None
) -> RingOccurrences:
    """The rings of ``sizes`` in ``mols`` and their energies under ``model`` (see the module
    docstring)."""
    perceptions = [perceive_rings(atoms, i, sizes=sizes) for i, atoms in enumerate(mols)]
    rings = [r for p in perceptions for r in p.rings if p.method != "fallback"]
    contributions = atom_contributions(model, mols, methods)
    energy = {
        m: np.array(
            [r.energy(values[mols.offsets[r.molecule] : mols.offsets[r.molecule + 1]]) for r in rings]
        )
        for m, values in contributions.items()
    }
    failed = [i for i, p in enumerate(perceptions) if p.method == "fallback"]
    retried = [i for i, p in enumerate(perceptions) if p.method == "rdkit-retry"]
    return RingOccurrences(rings, energy, failed, retried, len(mols))


def matched_pairs(
    energy: np.ndarray,
    in_a: np.ndarray,
    strata: Sequence,
    molecule: np.ndarray,
    n_molecules: int,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[Interval, dict]:
    """How often an occurrence of set A (``in_a``) has a lower energy than one of set B (the rest)
    in the same stratum: ``(interval, counts)`` with a bootstrap interval over molecules and the
    numbers of pairs, strata and A occurrences in pairs."""
    in_a = np.asarray(in_a, dtype=bool)
    codes = group_codes(strata)
    interval = bootstrap(
        lambda w: pair_fraction(energy, in_a, codes, weights=w).fraction,
        molecule,
        n_molecules,
        n_resamples,
        seed,
    )
    pairs = pair_fraction(energy, in_a, codes)
    paired = np.isin(codes, codes[~in_a]) & np.isin(codes, codes[in_a])
    return interval, {
        "pairs": int(pairs.n_pairs),
        "strata": pairs.n_groups,
        "a_in_pairs": int((paired & in_a).sum()),
    }


def ring_report(model, mols: Molecules, n_resamples: int = 1000, seed: int = 0) -> dict:
    """What ``qmlx insight rings`` prints: per ring set (`RING_SETS`) and contribution method, the
    composition-matched fraction of (aromatic, non-aromatic) pairs in which the aromatic ring has
    the lower energy, with its interval; per ring type, count and mean energy with an interval."""
    occ = ring_occurrences(model, mols)
    rings = occ.rings
    molecule = np.array([r.molecule for r in rings], dtype=np.int64)
    aromatic = np.array([r.aromatic for r in rings], dtype=bool)
    report: dict = {"methods": list(occ.energy), "unit": "kcal/mol", "n_molecules": occ.n_molecules,
                    "n_rings": len(rings), "failed_molecules": len(occ.failed),
                    "retried_molecules": len(occ.retried), "ring_sets": {}}  # fmt: skip
    for name, keep in RING_SETS.items():
        idx = np.array([k for k, r in enumerate(rings) if keep(r)], dtype=np.int64)
        row: dict = {"rings": len(idx), "aromatic": int(aromatic[idx].sum())}
        for m, e in occ.energy.items():
            if len(idx) and aromatic[idx].any() and not aromatic[idx].all():
                interval, counts = matched_pairs(e[idx], aromatic[idx], [rings[k].composition for k in idx],
                                                 molecule[idx], occ.n_molecules, n_resamples, seed)  # fmt: skip
                row[m] = interval.as_dict()
                row.update(counts)
        report["ring_sets"][name] = row
    types: dict[str, list[int]] = {}
    for k, r in enumerate(rings):
        types.setdefault(ring_type_name(r), []).append(k)
    first = next(iter(occ.energy))
    report["types"] = []
    for name, idx in sorted(types.items(), key=lambda kv: -len(kv[1])):
        idx = np.asarray(idx)
        interval = bootstrap(
            lambda w, idx=idx: float(np.sum(w * occ.energy[first][idx]) / np.sum(w)) if np.sum(w) else float("nan"),
            molecule[idx], occ.n_molecules, n_resamples, seed,
        )  # fmt: skip
        report["types"].append({"type": name, "rings": len(idx), "aromatic": bool(aromatic[idx].all()),
                                first: interval.as_dict()})  # fmt: skip
    return report


# -- ring types ranked, with their parent molecules and reference-free contrasts --------------------
@dataclass
class RingSet:
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


def perceive(mols: Molecules, sizes: tuple[int, ...] = TYPE_SIZES) -> tuple[list[Ring], dict]:
    """Every ring of ``sizes`` in ``mols`` (RDKit, or its retry; none from the covalent-radius
    fallback) and counts of how the molecules were perceived."""
    found = [perceive_rings(atoms, i, sizes=sizes, fallback=False) for i, atoms in enumerate(mols)]
    counts = {m: sum(p.method == m for p in found) for m in ("rdkit", "rdkit-retry", "failed")}
    counts["failed_ids"] = [int(mols.ids[i]) for i, p in enumerate(found) if p.method == "failed"]
    return [r for p in found for r in p.rings], counts


def ring_set(name: str, description: str, mols: Molecules, model, parents: dict) -> RingSet:
    """The rings of ``mols`` (`TYPE_SIZES`) with ``model``'s decomposition energies per ring atom."""
    t0 = time.perf_counter()
    rings, counts = perceive(mols)
    contributions = atom_contributions(model, mols, ("decomposition",))["decomposition"]
    energy = np.array(
        [r.energy(contributions[mols.offsets[r.molecule] : mols.offsets[r.molecule + 1]]) for r in rings]
    )
    per_atom = energy / np.array([r.size for r in rings])
    types = np.array([ring_type_name(r) for r in rings])
    counts["seconds"] = time.perf_counter() - t0
    return RingSet(name, description, mols, rings, per_atom, types, counts, parents)


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
        for ring in perceive_rings(atoms, i, sizes=TYPE_SIZES, fallback=False).rings:
            if ring.size + ring.n_hydrogens == len(atoms):
                rows.append((i, ring))
    if not rows:
        return out
    from qmlx.nn.io import predict_network

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


def type_table(source: RingSet, names: list[str], resamples: int, seed: int) -> dict:
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


def contrasts(source: RingSet, resamples: int, seed: int, min_rings: int = 10) -> dict:
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


def ranked_ring_types(model, data: Molecules, mols: Molecules, min_count: int = 30, n_resamples: int = 1000,
                      seed: int = 0) -> dict:  # fmt: skip
    """The named ring types (`qmlx.chem.rings.RING_TYPE_NAMES`) with at least ``min_count`` rings of
    3 to 8 atoms in ``mols``, ranked by energy per ring atom with intervals (`type_table`), and the
    Spearman correlation with their parent molecules' reference energies, looked up in the whole
    ``data`` set (`parent_energies`)."""
    from qmlx.chem.rings import RING_TYPE_NAMES
    from qmlx.models import as_trained_model

    net = as_trained_model(model).estimator
    rings = ring_set("", "", mols, net, parent_energies(data, net))
    names, counts = np.unique(rings.types, return_counts=True)
    named = set(RING_TYPE_NAMES.values())
    return type_table(
        rings, [str(n) for n, c in zip(names, counts) if c >= min_count and n in named], n_resamples, seed
    )
