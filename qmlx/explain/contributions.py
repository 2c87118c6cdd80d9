"""Atom contributions to a model's energy, relative to per-element references (kcal/mol), the
quantities ring and group energies add up (`qmlx.explain.rings`, `qmlx.insight.groups`):

- ``decomposition`` (networks, ensembles): each atom's energy minus its element's reference energy,
  the per-element least-squares energy the network's output head was fitted with on its training
  molecules, ``E_i - ref(Z_i)``;
- ``lrp`` (networks, ensembles): each atom's LRP relevance plus its bias relevance, which together
  explain ``E - sum_i ref(Z_i)``;
- ``neuralized`` (kernel models): each atom's share of ``f(x) - f(0)`` (`qmlx.explain.kernel`)
  minus per-element references fitted by least squares to the molecules' summed shares, the
  counterpart of a network head's references (a kernel model has none of its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qmlx.data.molecules import Molecules

#: explanation methods that give atom contributions, per model kind
CONTRIBUTION_METHODS = {"network": ("decomposition", "lrp"), "ensemble": ("decomposition", "lrp"),
                        "krr": ("neuralized",)}  # fmt: skip


def atom_contributions(model, mols: Molecules, methods: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per method, every atom's contribution (n_atoms_total,) in kcal/mol (see the module
    docstring); ``methods`` defaults to those of the model's kind (`CONTRIBUTION_METHODS`)."""
    from qmlx.explain import explain
    from qmlx.models import as_trained_model

    trained = as_trained_model(model)
    methods = tuple(methods or CONTRIBUTION_METHODS.get(trained.kind, ()))
    if not methods:
        raise ValueError(f"no atom contributions for {trained.kind} models")
    out = {}
    for method in methods:
        ex = explain(trained, mols, method)
        if method == "decomposition":
            out[method] = ex.relevance - element_references(trained)[mols.Z]
        elif method == "lrp":
            out[method] = ex.relevance + ex.bias
        elif method == "neuralized":  # relative to per-element references, as a network's head has them
            from qmlx.chem import fit_element_energies

            sums = np.bincount(mols.mol_index, weights=ex.relevance, minlength=len(mols))
            refs = fit_element_energies(mols.Z, mols.n_atoms, sums)
            table = np.zeros(int(mols.Z.max()) + 1)
            table[list(refs)] = list(refs.values())
            out[method] = ex.relevance - table[mols.Z]
        else:
            raise ValueError(
                f"atom contributions come from {', '.join(sorted({m for v in CONTRIBUTION_METHODS.values() for m in v}))}, not {method!r}"
            )
    return out


def element_references(model) -> np.ndarray:
    """(max_z + 1,) a network's (or an ensemble's mean) per-element reference energies in kcal/mol."""
    from qmlx.models import as_trained_model

    est = as_trained_model(model).estimator
    members = getattr(est, "members", [est])
    return np.mean([m.head.reference.detach().double().cpu().numpy() for m in members], axis=0)
