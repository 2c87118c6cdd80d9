"""Rings as groups: the ring analysis of the DTNN paper (Schütt et al., Nat. Commun. 8, 13890,
2017) on any model and data set, and ring types ranked against their parent molecules.

Rings are perceived from the geometry (`qmlx.chem.rings.perceive_rings`: RDKit, retried with
tighter covalent radii for strained polycyclics; molecules where both fail are left out and
counted). A ring's energy is the sum of the model's atom contributions over its atoms and their
hydrogens (`qmlx.explain.contributions`), kcal/mol.

- **Aromatic against non-aromatic rings** (`make_part`, `analyse_part`, `ring_set_statistics`):
  for rings of 5 and 6 atoms, the fraction of (aromatic, non-aromatic) pairs with the same ring
  elements and hydrogen count (where element references cancel) in which the aromatic ring has
  the lower energy, next to what composition alone gives (hydrogen count, a logistic regression on
  ring composition, the residual after a composition fit), all with bootstrap intervals over
  molecules. `ring_report` is what ``qmlx insight rings`` prints.
- **Ring types ranked** (`ring_set`, `type_table`, `parent_energies`, `contrasts`): rings of 3 to
  8 atoms by type, energy per ring atom with intervals for means and ranks, against the parent
  molecules' own reference energies, and reference-free contrasts between types at equal
  composition per ring atom (`ranked_ring_types` for ``qmlx insight rings --types``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qmlx.chem.rings import (
    Perception,
    Ring,
    composition_features,
    per_atom_composition,
    perceive_rings,
    ring_type_name,
)
from qmlx.data.molecules import Molecules
from qmlx.explain.contributions import atom_contributions, element_references
from qmlx.explain.rings import ring_energies
from qmlx.insight.statistics import (
    bootstrap,
    bootstrap_draws,
    composition_residual,
    composition_scores,
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


#: the contribution methods of the ring analysis
METHODS = ("decomposition", "lrp")
#: the ring sets `ring_set_statistics` is computed for
RING_SETS: dict[str, Callable[[Ring], bool]] = {
    "6-rings": lambda r: r.size == 6,
    "carbon 6-rings": lambda r: r.size == 6 and r.carbon_only,
    "5-rings": lambda r: r.size == 5,
    "5- and 6-rings": lambda r: True,
}


@dataclass
class Part:
    """Molecules analysed together and their rings.

    label : e.g. ``"held out (test)"``; held_out : whether the networks never saw them.
    index : (n_molecules,) indices into the data set; mols : those molecules.
    perceptions : one `Perception` per molecule; rings : the rings analysed (fallback rings only
        with ``--use-fallback``).
    """

    label: str
    held_out: bool
    index: np.ndarray
    mols: Molecules
    perceptions: list[Perception]
    rings: list[Ring]


def make_part(mols: Molecules, index: np.ndarray, label: str, held_out: bool, use_fallback: bool) -> Part:
    sub = mols.subset(index)
    perceptions = [perceive_rings(atoms, i, sizes=(5, 6)) for i, atoms in enumerate(sub)]
    rings = [r for p in perceptions for r in p.rings if use_fallback or p.method != "fallback"]
    return Part(label, held_out, np.asarray(index), sub, perceptions, rings)


def perception_summary(part: Part) -> dict:
    """Counts and ids of molecules by how their bonds were perceived."""
    ids = part.mols.ids
    by = {
        m: [i for i, p in enumerate(part.perceptions) if p.method == m]
        for m in ("rdkit", "rdkit-retry", "fallback")
    }
    return {
        "n_molecules": len(part.perceptions),
        "rdkit": len(by["rdkit"]),
        "rdkit_retry": len(by["rdkit-retry"]),
        "rdkit_retry_ids": [int(ids[i]) for i in by["rdkit-retry"]],
        "rdkit_retry_factor": {str(int(ids[i])): part.perceptions[i].cov_factor for i in by["rdkit-retry"]},
        "failed": len(by["fallback"]),
        "failed_ids": [int(ids[i]) for i in by["fallback"]],
        "failed_errors": {str(int(ids[i])): part.perceptions[i].error for i in by["fallback"]},
        "fallback_rings": sum(len(part.perceptions[i].rings) for i in by["fallback"]),
        "rings_from_retry": sum(len(part.perceptions[i].rings) for i in by["rdkit-retry"]),
        "n_rings": len(part.rings),
    }


def ring_set_statistics(
    rings: list[Ring],
    energies: dict[str, np.ndarray],
    raw: dict[str, np.ndarray],
    n_molecules: int,
    resamples: int,
    seed: int,
) -> dict:
    """All statistics of one set of rings, with bootstrap intervals from one joint set of resamples.

    ``energies`` / ``raw``: per explanation, (n_rings,) ring energies with / without the element
    references subtracted, kcal/mol.
    """
    aromatic = np.array([r.aromatic for r in rings], dtype=bool)
    molecule = np.array([r.molecule for r in rings], dtype=np.int64)
    out: dict = {
        "n_rings": len(rings),
        "n_aromatic": int(aromatic.sum()),
        "n_molecules_with_rings": len(set(molecule.tolist())),
    }
    if len(rings) == 0 or aromatic.all() or not aromatic.any():
        out["note"] = "needs aromatic and non-aromatic rings"
        return out
    features = composition_features(rings)
    hydrogens = features[:, -1]
    scores = composition_scores(features, aromatic, molecule, seed=seed)
    composition = group_codes([r.composition for r in rings])
    names = ["auc_h_count", "auc_element_counts"]
    for m in energies:
        names += [f"auc_{m}", f"auc_{m}_residual", f"auc_{m}_no_reference", f"pairs_{m}"]

    def statistic(w: np.ndarray) -> np.ndarray:
        values = [pair_fraction(hydrogens, aromatic, weights=w).fraction]
        values.append(pair_fraction(-scores, aromatic, weights=w).fraction)
        for m, e in energies.items():
            values.append(pair_fraction(e, aromatic, weights=w).fraction)
            values.append(pair_fraction(composition_residual(e, features, w), aromatic, weights=w).fraction)
            values.append(pair_fraction(raw[m], aromatic, weights=w).fraction)
            values.append(pair_fraction(e, aromatic, composition, weights=w).fraction)
        return np.array(values)

    point, draws = bootstrap_draws(statistic, molecule, n_molecules, resamples, seed)
    for name, interval in zip(names, percentile_intervals(point, draws)):
        out[name] = interval.as_dict()
    pairs = pair_fraction(next(iter(energies.values())), aromatic, composition)
    out["n_pairs"] = int(pairs.n_pairs)
    out["n_composition_groups"] = pairs.n_groups
    paired = np.isin(composition, composition[~aromatic]) & np.isin(composition, composition[aromatic])
    out["n_aromatic_in_pairs"] = int((paired & aromatic).sum())
    for m in energies:  # references cancel within a composition: the pair fraction is the same without them
        out[f"pairs_{m}_no_reference"] = pair_fraction(raw[m], aromatic, composition).fraction
    return out


def composition_groups(part: Part, energy: np.ndarray, resamples: int, seed: int) -> list[dict]:
    """The composition-matched pair fraction of each composition group with both kinds of ring.

    ``energy`` (n_rings,) ring energies of ``part.rings`` (kcal/mol). Groups ordered by pairs.
    """
    from collections import Counter

    aromatic = np.array([r.aromatic for r in part.rings], dtype=bool)
    labels = [r.composition for r in part.rings]
    codes = group_codes(labels)
    both = np.intersect1d(codes[aromatic], codes[~aromatic])
    if len(both) == 0:
        return []
    masks = [codes == c for c in both]
    molecule = np.array([r.molecule for r in part.rings], dtype=np.int64)

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.array([pair_fraction(energy[m], aromatic[m], weights=w[m]).fraction for m in masks])

    point, draws = bootstrap_draws(statistic, molecule, len(part.mols), resamples, seed)
    out = []
    for m, interval in zip(masks, percentile_intervals(point, draws)):
        rings = [r for r, keep in zip(part.rings, m) if keep]
        kinds = {
            a: Counter(r.ring_type for r in rings if r.aromatic == a).most_common(3) for a in (True, False)
        }
        elements, hydrogens = labels[int(np.flatnonzero(m)[0])]
        out.append(
            {
                "elements": elements,
                "hydrogens": hydrogens,
                "n_aromatic": int(aromatic[m].sum()),
                "n_non_aromatic": int((~aromatic[m]).sum()),
                "n_pairs": int(aromatic[m].sum() * (~aromatic[m]).sum()),
                "fraction": interval.as_dict(),
                "aromatic_types": [f"{k} ({n})" for k, n in kinds[True]],
                "non_aromatic_types": [f"{k} ({n})" for k, n in kinds[False]],
            }
        )
    return sorted(out, key=lambda g: -g["n_pairs"])


def analyse_part(part: Part, models: dict, resamples: int, seed: int) -> dict:
    """Statistics of one part for every model and ring set, plus perception counts."""
    result: dict = {"label": part.label, "held_out": part.held_out, "perception": perception_summary(part)}
    retried = {i for i, p in enumerate(part.perceptions) if p.method == "rdkit-retry"}
    for name, model in models.items():
        t0 = time.perf_counter()
        contributions = atom_contributions(model, part.mols, METHODS)
        reference = element_references(model)[part.mols.Z]
        raw_atoms = {m: v + reference for m, v in contributions.items()}
        energies = {m: ring_energies(part.rings, v, part.mols.offsets) for m, v in contributions.items()}
        raw = {m: ring_energies(part.rings, v, part.mols.offsets) for m, v in raw_atoms.items()}
        per_model: dict = {"ring_sets": {}, "seconds_explain": time.perf_counter() - t0}
        t1 = time.perf_counter()
        for set_name, keep in RING_SETS.items():
            idx = [k for k, r in enumerate(part.rings) if keep(r)]
            per_model["ring_sets"][set_name] = ring_set_statistics(
                [part.rings[k] for k in idx],
                {m: e[idx] for m, e in energies.items()},
                {m: e[idx] for m, e in raw.items()},
                len(part.mols),
                resamples,
                seed,
            )
            if retried:  # the same numbers without the molecules perceived on the second try
                keep_idx = [k for k in idx if part.rings[k].molecule not in retried]
                sub = [part.rings[k] for k in keep_idx]
                aromatic = np.array([r.aromatic for r in sub], dtype=bool)
                e = energies["decomposition"][keep_idx]
                per_model["ring_sets"][set_name]["without_retried"] = {
                    "n_rings": len(sub),
                    "auc_decomposition": pair_fraction(e, aromatic).fraction,
                    "pairs_decomposition": pair_fraction(e, aromatic, [r.composition for r in sub]).fraction,
                }
        per_model["by_composition"] = composition_groups(part, energies["decomposition"], resamples, seed)
        per_model["seconds_statistics"] = time.perf_counter() - t1
        per_model["_energies"] = {m: e.tolist() for m, e in energies.items()}  # for the figure only
        result[name] = per_model
    result["_ring_aromatic"] = [r.aromatic for r in part.rings]
    result["_ring_size"] = [r.size for r in part.rings]
    return result


def ring_report(
    model, mols: Molecules, n_resamples: int = 1000, seed: int = 0, label: str = "held out"
) -> dict:
    """What ``qmlx insight rings`` prints: `analyse_part` of ``mols`` (rings of 5 and 6 atoms; for
    each ring set the composition-matched pair fractions, AUCs and composition baselines, with
    intervals), and per ring type its count and mean ``decomposition`` energy with an interval."""
    from qmlx.models import as_trained_model

    net = as_trained_model(model).estimator
    part = make_part(mols, np.arange(len(mols)), label, True, use_fallback=False)
    analysed = analyse_part(part, {"model": net}, n_resamples, seed)
    energy = np.asarray(analysed["model"]["_energies"]["decomposition"])
    molecule = np.array([r.molecule for r in part.rings], dtype=np.int64)
    types: dict[str, list[int]] = {}
    for k, r in enumerate(part.rings):
        types.setdefault(ring_type_name(r), []).append(k)
    rows = []
    for name, idx in sorted(types.items(), key=lambda kv: -len(kv[1])):
        idx = np.asarray(idx)
        interval = bootstrap(
            lambda w, idx=idx: float(np.sum(w * energy[idx]) / np.sum(w)) if np.sum(w) else float("nan"),
            molecule[idx], len(mols), n_resamples, seed,
        )  # fmt: skip
        rows.append({"type": name, "rings": len(idx), "aromatic": bool(part.rings[idx[0]].aromatic),
                     "decomposition": interval.as_dict()})  # fmt: skip
    return {"methods": list(METHODS), "unit": "kcal/mol", "perception": analysed["perception"],
            "ring_sets": analysed["model"]["ring_sets"], "by_composition": analysed["model"]["by_composition"],
            "types": rows}  # fmt: skip


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
    energy = ring_energies(rings, contributions, mols.offsets)
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
