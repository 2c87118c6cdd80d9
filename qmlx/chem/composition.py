"""Composition of molecules and the per-element ("dressed atom") reference energies fitted to it.

A molecule's energy is approximated by ``E ≈ sum_e count_e * ref_e``: least squares over the
training molecules. Total energies (tens of thousands of kcal/mol) and atomization energies alike
become residuals of a few kcal/mol per atom, which models learn far more easily. Networks fit
these references in their output head; kernel models can subtract them (``baseline="elements"``).
"""

from __future__ import annotations

import numpy as np


def element_counts(Z: np.ndarray, n_atoms: np.ndarray, elements) -> np.ndarray:
    """(n_molecules, len(elements)) atoms of each element per molecule; other elements are ignored.

    ``Z`` (n_atoms_total,) nuclear charges of molecules stored one after another, ``n_atoms``
    (n_molecules,) their sizes, ``elements`` the sorted nuclear charges to count.
    """
    Z = np.asarray(Z)
    n_atoms = np.asarray(n_atoms)
    elements = np.asarray(elements, dtype=np.int64)
    counts = np.zeros((len(n_atoms), len(elements)))
    known = np.isin(Z, elements)
    mol = np.repeat(np.arange(len(n_atoms)), n_atoms)
    np.add.at(counts, (mol[known], np.searchsorted(elements, Z[known])), 1.0)
    return counts


def fit_element_energies(Z: np.ndarray, n_atoms: np.ndarray, energies: np.ndarray) -> dict[int, float]:
    """Least-squares energy per element, ``{Z: ref}``, in the unit of ``energies`` (n_molecules,)."""
    elements = np.unique(np.asarray(Z))
    counts = element_counts(Z, n_atoms, elements)
    ref, *_ = np.linalg.lstsq(counts, np.asarray(energies, dtype=np.float64), rcond=None)
    return {int(e): float(r) for e, r in zip(elements, ref)}
