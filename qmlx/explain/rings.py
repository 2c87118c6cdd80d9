"""Rings, aromaticity and ring energies from atom-wise contributions.

Bonds and aromaticity come from RDKit when it is installed (``pip install "qmlx[chem]"``):
`rdDetermineBonds.DetermineBonds` assigns connectivity and bond orders from the xyz geometry of a
neutral molecule, and RDKit's aromaticity model flags the rings. Without RDKit a documented
fallback is used: bonds from covalent radii (ASE's ``natural_cutoffs`` times 1.2), rings as the
smallest cycles through each bond, and a ring called aromatic when it is a planar (all atoms
within 0.1 Å of the ring's mean plane) 6-ring of carbon atoms that each have exactly three
neighbours. The fallback misses heteroaromatic and five-membered aromatic rings.

A ring's energy, following the DTNN paper's analysis (Schütt et al., Nat. Commun. 2017), is the
sum of the atom-wise contributions of its atoms and of the hydrogens bonded to them, in kcal/mol.
"""

from __future__ import annotations

from dataclasses import dataclass

import ase
import numpy as np

from qmlx.explain.plot import bonds


@dataclass
class Ring:
    """One ring of a molecule: its atoms, the hydrogens bonded to them, and its kind."""

    molecule: int
    atoms: tuple[int, ...]
    hydrogens: tuple[int, ...]
    aromatic: bool
    elements: str  # e.g. "C6" or "C5N"

    @property
    def size(self) -> int:
        return len(self.atoms)

    @property
    def carbon_only(self) -> bool:
        return self.elements == f"C{self.size}"

    def energy(self, atom_values: np.ndarray, with_hydrogens: bool = True) -> float:
        """Sum of ``atom_values`` (n_atoms of this molecule,) over the ring (and its hydrogens)."""
        idx = list(self.atoms) + (list(self.hydrogens) if with_hydrogens else [])
        return float(np.sum(atom_values[idx]))


def _formula(numbers) -> str:
    from collections import Counter

    from ase.data import chemical_symbols

    counts = Counter(chemical_symbols[z] for z in numbers)
    return "".join(
        f"{el}{n if n > 1 else ''}" for el, n in sorted(counts.items(), key=lambda kv: (kv[0] != "C", kv[0]))
    )


def _rdkit_rings(atoms: ase.Atoms) -> tuple[list[tuple[int, ...]], list[bool], list[list[int]]] | None:
    """(rings, aromatic flags, neighbour lists) from RDKit, or ``None`` if it cannot perceive them."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    block = f"{len(atoms)}\n\n" + "\n".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
    )
    mol = Chem.MolFromXYZBlock(block)
    if mol is None:
        return None
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except Exception:  # RDKit cannot assign bond orders (charged or unusual structures)
        return None
    rings = [tuple(r) for r in mol.GetRingInfo().AtomRings()]
    aromatic = [all(mol.GetAtomWithIdx(i).GetIsAromatic() for i in r) for r in rings]
    neighbours = [[n.GetIdx() for n in a.GetNeighbors()] for a in mol.GetAtoms()]
    return rings, aromatic, neighbours


def _fallback_rings(atoms: ase.Atoms) -> tuple[list[tuple[int, ...]], list[bool], list[list[int]]]:
    neighbours: list[list[int]] = [[] for _ in range(len(atoms))]
    for i, j in bonds(atoms):
        neighbours[i].append(int(j))
        neighbours[j].append(int(i))
    found: set[tuple[int, ...]] = set()
    for start in range(len(atoms)):  # cycles of length 5 and 6 through each atom, by bounded search
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in neighbours[node]:
                if nxt == start and len(path) in (5, 6):
                    found.add(tuple(sorted(path)))
                elif nxt not in path and len(path) < 6 and nxt > start:
                    stack.append((nxt, path + (nxt,)))
    rings = sorted(found)
    aromatic = []
    for r in rings:
        pos = atoms.positions[list(r)]
        centred = pos - pos.mean(axis=0)
        flat = np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(r)) < 0.1
        sp2 = all(atoms.numbers[i] == 6 and len(neighbours[i]) == 3 for i in r)
        aromatic.append(bool(len(r) == 6 and flat and sp2))
    return rings, aromatic, neighbours


def find_rings(atoms: ase.Atoms, molecule: int = 0, sizes: tuple[int, ...] = (5, 6)) -> list[Ring]:
    """The rings of ``sizes`` in one molecule, with aromaticity (RDKit if installed)."""
    try:
        perceived = _rdkit_rings(atoms)
    except ImportError:
        perceived = None
    rings, aromatic, neighbours = perceived if perceived is not None else _fallback_rings(atoms)
    out = []
    for ring, arom in zip(rings, aromatic):
        if len(ring) not in sizes:
            continue
        hydrogens = tuple(sorted({n for i in ring for n in neighbours[i] if atoms.numbers[n] == 1}))
        out.append(Ring(molecule, tuple(ring), hydrogens, arom, _formula(atoms.numbers[list(ring)])))
    return out
