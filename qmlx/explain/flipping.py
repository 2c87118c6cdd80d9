"""Atom flipping: the molecular counterpart of pixel flipping (Samek et al., IEEE TNNLS 2017).

Atoms are **removed** (deleted from the molecule, which is then predicted again as the smaller
fragment) in order of relevance, and the energy is re-predicted after each step. The x-axis is
the fraction of each molecule's atoms removed (``ceil(q * n_atoms)`` atoms at fraction ``q``), so
that molecules of different sizes share one curve; with every atom removed the energy is 0.

Relevances here are contributions to the energy in kcal/mol. For atomization energies, which are
negative, the atoms that matter most are the most *stabilizing* (most negative) ones, so the score
of an atom is ``-relevance`` for signed methods and the magnitude for unsigned ones (``gradient``).
The area over the perturbation curve,

    AOPC = mean over fractions q and molecules of  E(x_q) - E(x)   (kcal/mol),

is large when the atoms ranked first really carry the (negative) energy: a faithful explanation
has a large AOPC when the most relevant atoms go first (MoRF) and a small one when the least
relevant go first (LeRF).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qmlx.data.molecules import Molecules

DEFAULT_FRACTIONS = np.linspace(0.0, 1.0, 11)


@dataclass
class FlippingCurve:
    """Energies after removing atoms: ``energies (n_fractions, n_mol)`` in kcal/mol."""

    fractions: np.ndarray
    energies: np.ndarray

    @property
    def mean_change(self) -> np.ndarray:
        """(n_fractions,) mean over molecules of E(x_q) - E(x), kcal/mol."""
        return (self.energies - self.energies[0]).mean(axis=1)

    @property
    def aopc(self) -> float:
        """Area over the perturbation curve in kcal/mol (mean of `mean_change`)."""
        return float(self.mean_change.mean())


def removal_ranks(molecules: Molecules, scores: np.ndarray) -> np.ndarray:
    """(n_atoms_total,) rank of each atom within its molecule, 0 = highest score (removed first)."""
    mol = molecules.mol_index
    order = np.lexsort((-np.asarray(scores, dtype=float), mol))  # by molecule, then score descending
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - np.repeat(molecules.offsets[:-1], molecules.n_atoms)
    return ranks


def flipping_curve(
    predict,
    molecules: Molecules,
    scores: np.ndarray,
    fractions: np.ndarray = DEFAULT_FRACTIONS,
) -> FlippingCurve:
    """Remove atoms highest ``scores`` first and re-predict.

    ``predict(mols) -> (n_mol,)`` energies in kcal/mol; ``scores (n_atoms_total,)``. For least
    relevant first, pass ``-scores``.
    """
    ranks = removal_ranks(molecules, scores)
    mol = molecules.mol_index
    energies = np.zeros((len(fractions), len(molecules)))
    for k, q in enumerate(fractions):
        n_remove = np.ceil(q * molecules.n_atoms - 1e-9).astype(np.int64)
        keep = ranks >= n_remove[mol]
        counts = np.bincount(mol[keep], minlength=len(molecules))
        alive = counts > 0  # a molecule with every atom removed has energy 0
        if alive.any():
            fragment = Molecules(Z=molecules.Z[keep], R=molecules.R[keep], n_atoms=counts[alive])
            energies[k, alive] = predict(fragment)
    return FlippingCurve(fractions=np.asarray(fractions), energies=energies)


def relative_energy(model) -> Callable[[Molecules], np.ndarray]:
    """``mols -> (n_mol,)`` energies relative to the network's per-element reference energies,
    ``E(x) - sum_i reference[Z_i]`` in kcal/mol: the quantity LRP explains.

    ``model`` is a network from `qmlx.load_model` (or the network itself). Flipping on this
    function keeps a trivial effect out of the test: removing a carbon atom removes its large
    reference energy whatever the explanation says.
    """
    from qmlx.models import as_trained_model

    trained = as_trained_model(model)
    reference = trained.estimator.head.reference.detach().double().cpu().numpy()

    def predict(mols: Molecules) -> np.ndarray:
        energies = trained.predict(mols).energy
        return energies - np.bincount(mols.mol_index, weights=reference[mols.Z], minlength=len(mols))

    return predict


def atom_scores(relevance: np.ndarray, signed: bool = True) -> np.ndarray:
    """Removal scores from relevances: ``-relevance`` (most stabilizing first) or ``|relevance|``."""
    return -relevance if signed else np.abs(relevance)
