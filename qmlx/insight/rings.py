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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qmlx.chem.rings import Ring, perceive_rings, ring_type_name
from qmlx.data.molecules import Molecules
from qmlx.explain.contributions import atom_contributions
from qmlx.insight.statistics import Interval, bootstrap, group_codes, pair_fraction

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
