"""RDKit molecules from geometries: the one place qmlx perceives bonds and bond orders with RDKit
(optional: ``pip install qmlx[chem]``)."""

from __future__ import annotations

import ase
import numpy as np


def rdkit_molecule(atoms: ase.Atoms, charge: int | None = None, cov_factor: float | None = None):
    """An RDKit molecule with a 3-D conformer (the positions, Å), in the atom order of ``atoms``,
    with bonds and bond orders perceived from the geometry (``rdDetermineBonds``).

    charge : net charge for the bond orders; default ``atoms.info["charge"]`` where stated, else 0.
    cov_factor : ``None``: RDKit's default connectivity; a number: bonds between atoms closer than
        ``cov_factor`` times the sum of their covalent radii.

    Raises ``ImportError`` without RDKit and ``ValueError`` when RDKit cannot read the geometry or
    assign bond orders (radicals, unusual charges).
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds

    if charge is None:
        stated = atoms.info.get("charge", 0)
        charge = int(round(stated)) if isinstance(stated, (int, float)) and np.isfinite(stated) else 0
    block = f"{len(atoms)}\n\n" + "\n".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
    )
    with rdBase.BlockLogs():
        mol = Chem.MolFromXYZBlock(block)
        if mol is None or mol.GetNumAtoms() != len(atoms):
            raise ValueError("RDKit could not read the geometry")
        try:
            if cov_factor is None:
                rdDetermineBonds.DetermineBonds(mol, charge=charge)
            else:
                rdDetermineBonds.DetermineConnectivity(mol, useVdw=True, covFactor=cov_factor)
                rdDetermineBonds.DetermineBondOrders(mol, charge=charge)
        except Exception as err:  # RDKit cannot assign bond orders (charged or unusual structures)
            raise ValueError(f"RDKit could not assign bond orders: {err}".strip()) from err
    return mol


def rdkit_connectivity(atoms: ase.Atoms):
    """An RDKit molecule with a 3-D conformer and single bonds from the geometry only (no bond
    orders), for structures whose bond orders RDKit cannot assign."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds

    block = f"{len(atoms)}\n\n" + "\n".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
    )
    with rdBase.BlockLogs():
        mol = Chem.MolFromXYZBlock(block)
        if mol is None:
            raise ValueError("RDKit could not read the geometry")
        rdDetermineBonds.DetermineConnectivity(mol)
    return mol
