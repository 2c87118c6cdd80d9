"""Ring energies from atom-wise contributions.

A ring's energy, following the DTNN paper's analysis (Schütt et al., Nat. Commun. 8, 13890,
2017), is the sum of the atom-wise contributions of its atoms and of the hydrogens bonded to them
(`ring_energies`), in kcal/mol, each taken relative to its element's reference energy, the
per-element least-squares energy the network's output head was fitted with
(`qmlx.explain.contributions.atom_contributions`).
Lower is more stable. The rings themselves come from `qmlx.chem.rings.perceive_rings`; the
statistics that test what ring energies show are in `qmlx.insight.statistics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qmlx.chem.rings import Ring


def ring_energies(rings: Sequence[Ring], atom_values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_rings,) ring energies: sums of ``atom_values`` (n_atoms_total,) over each ring's atoms and
    hydrogens; ``offsets`` (n_molecules + 1,) are the molecules' first atom indices."""
    return np.array([r.energy(atom_values[offsets[r.molecule] : offsets[r.molecule + 1]]) for r in rings])
