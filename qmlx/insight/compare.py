"""Models compared by their explanations (after Lapuschkin et al., CVPR 2016, who compared
classifiers by what their decisions rest on).

For two or more models on the same molecules (any mix of networks, ensembles and kernel models,
each through its first atom-contribution method, `qmlx.insight.groups.CONTRIBUTION_METHODS`):

- group energies side by side, and their Spearman rank correlation over the groups that occur at
  least ``min_occurrences`` times;
- per-atom agreement: the Pearson correlation of the models' atom contributions over every atom;
- per molecule, the disagreement of two models' explanations (the mean absolute difference of their
  atom contributions, kcal/mol), the molecules where it is largest, and whether that is where their
  predictions differ in error (Spearman of disagreement with ``| |err_a| - |err_b| |``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from qmlx.chem.groups import load_groups, match_groups
from qmlx.data.molecules import Molecules
from qmlx.explain.contributions import CONTRIBUTION_METHODS, atom_contributions
from qmlx.insight.groups import group_energies


def compare_models(
    models: Sequence,
    mols: Molecules,
    names: Sequence[str],
    groups="functional",
    n_resamples: int = 1000,
    seed: int = 0,
    top: int = 10,
    min_occurrences: int = 10,
) -> dict:
    """The comparison (see the module docstring) as a JSON-ready dict: ``groups`` (per group its
    ``occurrences`` and per model its mean energy), ``pairs`` (per pair of models the group Spearman,
    atom Pearson, and disagreement-error Spearman), ``most_disagreeing`` molecules, ``methods``."""
    from scipy.stats import pearsonr, spearmanr

    from qmlx.models import as_trained_model

    trained = [as_trained_model(m) for m in models]
    groups = list(load_groups(groups))
    matches = match_groups(mols, groups)
    methods = [CONTRIBUTION_METHODS[t.kind][0] for t in trained]
    contributions = [atom_contributions(t, mols, [m])[m] for t, m in zip(trained, methods)]
    energies = [
        group_energies(
            t, mols, groups, contributions={m: c}, matches=matches, n_resamples=n_resamples, seed=seed
        )
        for t, m, c in zip(trained, methods, contributions)
    ]
    target = trained[0].metadata.get("target")
    reference = mols.target(target, "kcal/mol") if target in mols.targets else None
    errors = [np.abs(t.predict(mols).energy - reference) if reference is not None else None for t in trained]
    rows = []
    for j, g in enumerate(groups):
        n = energies[0].summary[j]["occurrences"]
        if n:
            rows.append({"group": g.name, "occurrences": n,
                         "energies": [e.summary[j][e.methods[0]] for e in energies]})  # fmt: skip
    pairs, disagreement = [], np.zeros(len(mols))
    for a, b in combinations(range(len(trained)), 2):
        common = [r for r in rows if r["occurrences"] >= min_occurrences]
        rho = spearmanr([r["energies"][a] for r in common], [r["energies"][b] for r in common]).statistic
        diff = np.abs(contributions[a] - contributions[b])
        per_mol = np.bincount(mols.mol_index, weights=diff, minlength=len(mols)) / mols.n_atoms
        disagreement += per_mol
        err_rho = None
        if errors[a] is not None:
            err_rho = float(spearmanr(per_mol, np.abs(errors[a] - errors[b])).statistic)
        pairs.append({
            "a": names[a], "b": names[b], "group_spearman": float(rho), "groups_compared": len(common),
            "atom_pearson": float(pearsonr(contributions[a], contributions[b]).statistic),
            "mean_disagreement": float(per_mol.mean()), "disagreement_error_spearman": err_rho,
        })  # fmt: skip
    disagreement /= max(len(pairs), 1)
    worst = np.argsort(-disagreement, kind="stable")[:top]
    most = [
        {"molecule": int(i), "id": str(mols.ids[i]), "formula": mols[int(i)].get_chemical_formula(),
         "disagreement": float(disagreement[i]),
         "abs_errors": [float(e[i]) for e in errors] if errors[0] is not None else []}
        for i in worst
    ]  # fmt: skip
    return {"models": list(names), "methods": methods, "unit": "kcal/mol", "groups": rows, "pairs": pairs,
            "most_disagreeing": most, "perception_failures": len(matches.failures)}  # fmt: skip
