"""Bonds from geometry: pairs of atoms closer than 1.2 times the sum of their covalent radii."""

from __future__ import annotations

import ase
import numpy as np
from ase.neighborlist import natural_cutoffs, neighbor_list


def bonds(atoms: ase.Atoms) -> np.ndarray:
    """(n_bonds, 2) atom index pairs ``i < j`` closer than 1.2 times the sum of their covalent radii
    (ASE's ``natural_cutoffs``), positions in Å."""
    if len(atoms) < 2:
        return np.zeros((0, 2), dtype=int)
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    keep = i < j
    return np.stack([i[keep], j[keep]], axis=1)
