"""Group energies from a model's atom-wise explanations, with intervals, composition baselines and a
check against group additivity.

A group's energy in a molecule is the sum of the atom contributions of its atoms and their
hydrogens (`qmlx.chem.groups`), in kcal/mol, relative to per-element references: ``decomposition``
and ``lrp`` for networks, ``neuralized`` for kernel models (`qmlx.explain.contributions`).

Lower means the model finds the group more stabilizing than its elements' references. Intervals are
95 % bootstrap percentile intervals over molecules (all groups of a molecule travel together,
`qmlx.insight.statistics.bootstrap`).

**Composition and count baselines.** A group's energy partly follows from what it is made of.
The composition baseline fits every occurrence's energy on its composition (heavy atoms per element
and hydrogens, with an intercept) by least squares over all occurrences of all groups; a group's
mean ``residual`` is what its energy says beyond its composition, and ``baseline`` what
composition alone gives. The count baseline does the same with the numbers of heavy atoms and
hydrogens only (``count_residual``). A group is marked ``confound`` (``"composition"`` or
``"atom counts"``) when what is left beyond a baseline is not distinguishable from 0 (its interval
holds 0) or has the other sign than the group's energy: a conclusion drawn from that group's
energy could be produced by the baseline alone.

**Group additivity** (Benson; Cohen and Benson, Chem. Rev. 93, 2419, 1993). `group_additivity`
fits the data set's own reference energies, minus per-element references (least squares on element
counts), by least squares on the molecules' group counts: one increment per group, in kcal/mol per
occurrence, learned from the reference data alone. It is the transparent baseline the model's group
energies are compared with (rank correlation). Published Benson increments are enthalpies of
formation at 298 K; these increments are fitted to whatever the data set holds (for QM7 and QM9,
atomization energies at 0 K, at the data set's level of theory), so rankings and differences
compare, raw values do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qmlx.chem.groups import Group, GroupMatches, group_counts, load_groups, match_groups
from qmlx.data.molecules import Molecules
from qmlx.explain.contributions import atom_contributions
from qmlx.insight.statistics import bootstrap_draws, composition_residual, group_codes, percentile_intervals


@dataclass
class GroupEnergies:
    """Group energies of one model on one set of molecules.

    groups : the groups, in the order of ``summary``.
    methods : the contribution methods (``decomposition``, ``lrp``, ``neuralized``).
    summary : one dict per group: ``group``, ``description``, ``smarts``, ``occurrences``,
        ``molecules``, ``heavy_atoms`` (per occurrence), and per method ``<method>`` (mean energy per
        occurrence), ``<method>_low``/``_high`` (95 % interval), ``<method>_per_heavy_atom`` (mean
        energy over its heavy atoms) with its interval; for the first method also ``baseline``,
        ``residual`` and ``count_residual`` with their intervals, and ``confound`` (see the module
        docstring). kcal/mol throughout; ``None``
        for a group that never occurs.
    occurrence_group, occurrence_molecule, occurrence_heavy : (n_occ,) per occurrence.
    occurrence_composition : (n_occ, 7) heavy atoms of C, N, O, F, S, other and hydrogens.
    occurrence_energy : method -> (n_occ,) energies in kcal/mol.
    failures : molecule index -> why its bonds could not be perceived.
    n_molecules : molecules analysed (including failures).
    """

    groups: list[Group]
    methods: tuple[str, ...]
    summary: list[dict]
    occurrence_group: np.ndarray
    occurrence_molecule: np.ndarray
    occurrence_heavy: np.ndarray
    occurrence_energy: dict[str, np.ndarray]
    failures: dict[int, str] = field(default_factory=dict)
    n_molecules: int = 0
    occurrence_composition: np.ndarray | None = None

    def row(self, name: str) -> dict:
        return next(r for r in self.summary if r["group"] == name)


def group_energies(
    model,
    mols: Molecules,
    groups: str | Sequence[Group] = "functional",
    methods: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    contributions: dict[str, np.ndarray] | None = None,
    matches: GroupMatches | None = None,
) -> GroupEnergies:
    """Energies of ``groups`` (a library name, a groups file or `Group`s) in ``mols`` under
    ``model`` (see the module docstring). ``contributions`` and ``matches``: atom contributions
    (`atom_contributions`) and matches (`qmlx.chem.groups.match_groups`) if already computed."""
    groups = list(load_groups(groups))
    matches = matches or match_groups(mols, groups)
    contributions = contributions or atom_contributions(model, mols, methods)
    methods = tuple(contributions)
    index = {g.name: j for j, g in enumerate(groups)}
    occ = matches.occurrences
    g_idx = np.array([index[o.group] for o in occ], dtype=np.int64)
    mol_idx = np.array([o.molecule for o in occ], dtype=np.int64)
    heavy = np.array([len(o.atoms) for o in occ], dtype=np.float64)
    energy = {
        m: np.array([values[mols.offsets[o.molecule] + np.asarray(o.members)].sum() for o in occ])
        for m, values in contributions.items()
    }
    composition = _composition(mols, occ)
    residual = composition_residual(energy[methods[0]], composition) if len(occ) else np.zeros(0)
    # a count-only baseline: heavy atoms and hydrogens, whatever their elements
    counts_only = np.column_stack([heavy, composition[:, -1]]) if len(occ) else np.zeros((0, 2))
    count_residual = composition_residual(energy[methods[0]], counts_only) if len(occ) else np.zeros(0)
    k = len(groups)

    def means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        n = np.bincount(g_idx, weights=weights, minlength=k)
        s = np.bincount(g_idx, weights=weights * values, minlength=k)
        return np.divide(s, n, out=np.full(k, np.nan), where=n > 0)

    columns = [energy[m] for m in methods] + [energy[m] / np.maximum(heavy, 1) for m in methods]
    columns += [residual, count_residual]

    def statistic(weights: np.ndarray) -> np.ndarray:
        return np.concatenate([means(c, weights) for c in columns])

    point, draws = bootstrap_draws(statistic, mol_idx, len(mols), n_resamples, seed)
    intervals = percentile_intervals(point, draws)
    baseline = means(energy[methods[0]] - residual, np.ones(len(occ)))
    summary = []
    for j, g in enumerate(groups):
        mask = g_idx == j
        row = {"group": g.name, "description": g.description, "smarts": g.smarts,
               "occurrences": int(mask.sum()), "molecules": int(len(np.unique(mol_idx[mask]))),
               "heavy_atoms": float(heavy[mask].mean()) if mask.any() else None}  # fmt: skip
        for c, name in enumerate(
            [*methods, *(f"{m}_per_heavy_atom" for m in methods), "residual", "count_residual"]
        ):
            iv = intervals[c * k + j]
            ok = mask.any() and np.isfinite(iv.value)
            row[name] = float(iv.value) if ok else None
            row[f"{name}_low"] = float(iv.low) if ok else None
            row[f"{name}_high"] = float(iv.high) if ok else None
        row["baseline"] = float(baseline[j]) if mask.any() else None
        # a conclusion about this group's energy that composition or counts alone could produce:
        # what is left beyond them is not distinguishable from 0, or has the other sign
        row["confound"] = None
        if mask.any() and row[methods[0]] is not None:
            for key, what in (("residual", "composition"), ("count_residual", "atom counts")):
                lo, hi = row[f"{key}_low"], row[f"{key}_high"]
                if lo <= 0 <= hi or np.sign(row[key]) != np.sign(row[methods[0]]):
                    row["confound"] = what
                    break
        summary.append(row)
    return GroupEnergies(
        groups,
        methods,
        summary,
        g_idx,
        mol_idx,
        heavy,
        energy,
        dict(matches.failures),
        len(mols),
        composition,
    )


def matched_contrasts(
    result: GroupEnergies, min_occurrences: int = 10, n_resamples: int = 1000, seed: int = 0, top: int = 20
) -> list[dict]:
    """Groups compared at equal composition, the comparison the ring analysis makes for aromatic and
    non-aromatic rings: for each pair of groups whose occurrences share strata of equal composition
    per heavy atom (heavy atoms per element and hydrogens, divided by the heavy atoms: there the
    element references cancel), with at least ``min_occurrences`` of each in them, the difference
    of their mean energies per heavy atom (first contribution method, kcal/mol), matched within
    strata (`qmlx.insight.statistics.matched_difference`), with a 95 % bootstrap interval over
    molecules. The ``top`` largest differences, largest first."""
    from itertools import combinations

    from qmlx.insight.statistics import matched_difference

    comp = result.occurrence_composition
    if comp is None or not len(comp):
        return []
    per_heavy = comp / np.maximum(result.occurrence_heavy, 1)[:, None]
    strata = group_codes([tuple(np.round(row, 6)) for row in per_heavy])
    values = result.occurrence_energy[result.methods[0]] / np.maximum(result.occurrence_heavy, 1)
    pairs = []
    for a, b in combinations(range(len(result.groups)), 2):
        in_a, in_b = result.occurrence_group == a, result.occurrence_group == b
        shared = np.intersect1d(strata[in_a], strata[in_b])
        n_a, n_b = int(np.isin(strata[in_a], shared).sum()), int(np.isin(strata[in_b], shared).sum())
        if n_a >= min_occurrences and n_b >= min_occurrences:
            pairs.append((a, b, in_a, in_b, n_a, n_b, len(shared)))
    if not pairs:
        return []

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.array([matched_difference(values, ia, ib, strata, w) for _, _, ia, ib, *_ in pairs])

    point, draws = bootstrap_draws(
        statistic, result.occurrence_molecule, result.n_molecules, n_resamples, seed
    )
    out = [
        {"a": result.groups[a].name, "b": result.groups[b].name, "difference_per_heavy_atom": iv.as_dict(),
         "n_a": n_a, "n_b": n_b, "strata": n_strata}
        for (a, b, _, _, n_a, n_b, n_strata), iv in zip(pairs, percentile_intervals(point, draws))
    ]  # fmt: skip
    return sorted(out, key=lambda c: -abs(c["difference_per_heavy_atom"]["value"]))[:top]


def _composition(mols: Molecules, occurrences) -> np.ndarray:
    """(n_occ, k) heavy atoms per element (C, N, O, F, S, other) and hydrogens of each occurrence."""
    columns = {6: 0, 7: 1, 8: 2, 9: 3, 16: 4}
    out = np.zeros((len(occurrences), 7))
    for i, o in enumerate(occurrences):
        z = mols.Z[mols.offsets[o.molecule] + np.asarray(o.atoms, dtype=np.int64)]
        for zz in z:
            out[i, columns.get(int(zz), 5)] += 1
        out[i, 6] = len(o.hydrogens)
    return out


@dataclass
class Additivity:
    """`group_additivity` output.

    increments : group name -> fitted increment in kcal/mol per occurrence (None for a group that
        no training molecule has).
    element_references : element -> per-element reference energy of the first fit, kcal/mol.
    train_mae, test_mae : mean absolute error of element references + increments on the fitting
        molecules and on the held-out ones (kcal/mol), against the element references alone
        (``element_only_test_mae``).
    """

    increments: dict[str, float | None]
    element_references: dict[int, float]
    train_mae: float
    test_mae: float
    element_only_test_mae: float


def group_additivity(
    train: Molecules, train_energy: np.ndarray, test: Molecules, test_energy: np.ndarray,
    groups: Sequence[Group], ridge: float = 1e-6,
) -> Additivity:  # fmt: skip
    """Fit element references, then group increments, to ``train_energy`` (kcal/mol) by least
    squares (a tiny ``ridge``, relative to the mean squared count, keeps collinear groups finite),
    and measure both on ``test`` (see the module docstring)."""
    from qmlx.chem import element_counts, fit_element_energies

    refs = fit_element_energies(train.Z, train.n_atoms, train_energy)
    elements = np.array(sorted(refs))
    ref = np.array([refs[z] for z in elements])

    def residual(mols: Molecules, energy: np.ndarray) -> np.ndarray:
        return np.asarray(energy, dtype=np.float64) - element_counts(mols.Z, mols.n_atoms, elements) @ ref

    r_train, r_test = residual(train, train_energy), residual(test, test_energy)
    X_train = group_counts(match_groups(train, groups), groups, len(train))
    X_test = group_counts(match_groups(test, groups), groups, len(test))
    present = X_train.sum(0) > 0
    A = X_train[:, present]
    lam = ridge * float(np.mean(A * A)) * len(A)
    coef = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ r_train) if A.shape[1] else np.zeros(0)
    inc = np.zeros(len(groups))
    inc[present] = coef
    return Additivity(
        {g.name: (float(inc[j]) if present[j] else None) for j, g in enumerate(groups)},
        {int(z): float(v) for z, v in zip(elements, ref)},
        float(np.mean(np.abs(r_train - X_train @ inc))),
        float(np.mean(np.abs(r_test - X_test @ inc))),
        float(np.mean(np.abs(r_test))),
    )


def rank_agreement(model_energy: dict[str, float | None], increments: dict[str, float | None],
                   min_occurrences: dict[str, int] | None = None, minimum: int = 10) -> dict:  # fmt: skip
    """Spearman rank correlation between a model's group energies and the additivity increments,
    over the groups both have (and, with ``min_occurrences``, that occur at least ``minimum``
    times), with the groups ranked most differently."""
    from scipy.stats import spearmanr

    names = [
        n for n, v in model_energy.items()
        if v is not None and increments.get(n) is not None
        and (min_occurrences is None or min_occurrences.get(n, 0) >= minimum)
    ]  # fmt: skip
    if len(names) < 3:
        return {"spearman": None, "groups": names, "largest_rank_differences": []}
    a = np.array([model_energy[n] for n in names])
    b = np.array([increments[n] for n in names])
    rho = float(spearmanr(a, b).statistic)
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    order = np.argsort(-np.abs(ra - rb), kind="stable")
    worst = [
        {"group": names[i], "model_rank": int(ra[i]) + 1, "additivity_rank": int(rb[i]) + 1}
        for i in order[:5]
    ]
    return {"spearman": rho, "groups": names, "largest_rank_differences": worst}


def held_out_molecules(
    model, mols: Molecules, use_all: bool = False, unseen: bool = False
) -> tuple[Molecules, Molecules | None, str]:
    """``(molecules analysed, training molecules or None, what was chosen)``: the test part of the
    model's recorded split (`qmlx.train.config.recorded_split`); with ``unseen``, every molecule
    outside its training and validation parts (the test part and those the split never used);
    every molecule with ``use_all`` or when the model records no split."""
    from qmlx.errors import QmlxError
    from qmlx.models import as_trained_model
    from qmlx.train.config import recorded_split

    trained = as_trained_model(model)
    meta = trained.metadata
    if use_all or not ("split" in meta or "seed" in meta):
        return mols, None, "all molecules" if use_all else "all molecules (the model records no split)"
    try:
        sp = recorded_split(mols, meta)
    except Exception as err:  # noqa: BLE001 - a split that does not fit this data set
        raise QmlxError(
            f"{trained.name}: its recorded split does not fit {mols.name} ({err}); use --all"
        ) from None
    if unseen:
        seen = np.zeros(len(mols), dtype=bool)
        seen[sp.train] = seen[sp.val] = True
        index = np.flatnonzero(~seen)
        what = f"the {len(index):,} molecules outside its training and validation sets"
        return mols.subset(index), mols.subset(sp.train), what
    return (
        mols.subset(sp.test),
        mols.subset(sp.train),
        f"the {len(sp.test):,} held-out test molecules of its split",
    )


def group_report(
    model,
    mols: Molecules,
    train: Molecules | None,
    groups="functional",
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """What ``qmlx insight groups --format json`` prints: `group_energies` of ``mols`` and, with the
    training molecules ``train`` and the model's target in them, the `group_additivity` fit and its
    `rank_agreement` with the model's group energies (first contribution method)."""
    from qmlx.models import as_trained_model

    trained = as_trained_model(model)
    groups = list(load_groups(groups))
    result = group_energies(trained, mols, groups, n_resamples=n_resamples, seed=seed)
    first = result.methods[0]
    report = {"methods": list(result.methods), "unit": "kcal/mol", "groups": result.summary,
              "contrasts": matched_contrasts(result, n_resamples=n_resamples, seed=seed),
              "perception_failures": len(result.failures), "failed_molecules": sorted(result.failures)[:50],
              "n_molecules": len(mols)}  # fmt: skip
    target = trained.metadata.get("target")
    if train is not None and target in mols.targets:
        add = group_additivity(
            train, train.target(target, "kcal/mol"), mols, mols.target(target, "kcal/mol"), groups
        )
        counts = {r["group"]: r["occurrences"] for r in result.summary}
        agreement = rank_agreement({r["group"]: r[first] for r in result.summary}, add.increments, counts)
        report["additivity"] = {"increments": add.increments, "train_mae": add.train_mae, "test_mae": add.test_mae,
                                "element_only_test_mae": add.element_only_test_mae, **agreement}  # fmt: skip
    return report
