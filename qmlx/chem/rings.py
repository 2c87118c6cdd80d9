"""Rings of molecules: perception from geometry, aromaticity, ring types and ring composition.

Perception
----------
Bonds and aromaticity come from RDKit when it is installed (``pip install "qmlx[chem]"``):
`rdDetermineBonds.DetermineBonds` assigns connectivity and bond orders from the xyz geometry of a
neutral molecule, RDKit's aromaticity model flags the bonds, and a ring counts as aromatic when all
its bonds are aromatic. RDKit's default connectivity fails on some strained polycyclic molecules;
`perceive_rings` then tries RDKit again with tighter covalent-radius bonds and says which attempt
succeeded (``Perception.method``). If both fail, and only if asked to, it uses a fallback: bonds
from covalent radii (ASE's ``natural_cutoffs`` times 1.2), every simple cycle of 3 to 6 atoms,
and a ring called aromatic when it is a planar (all atoms within 0.1 Å of the ring's mean plane)
6-ring of carbon atoms that each have exactly three neighbours. The fallback misses heteroaromatic
and five-membered aromatic rings, and it counts the envelope cycles of fused rings too; every ring
it yields is marked ``perception="fallback"`` so that an analysis can exclude or count them.

Names and composition
---------------------
`ring_type_name` names ring types (benzene, pyridine, oxirane, ...) from RDKit's perception.
`composition_features` counts a ring's atoms per element and its hydrogens;
`per_atom_composition` divides them by the ring size, so that rings of different sizes with the
same sum of element references per ring atom can be compared.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import ase
import numpy as np

from qmlx.chem.bonds import bonds

RING_ELEMENTS = ("C", "N", "O", "S")
"""Ring elements that `composition_features` counts (QM7 and QM9 rings hold no others)."""


@dataclass
class Ring:
    """One ring of a molecule: its atoms, the hydrogens bonded to them, and its kind.

    molecule : index of the molecule in its set.
    atoms : ring atom indices within the molecule, in ring order (RDKit) or path order (fallback).
    hydrogens : indices of the hydrogens bonded to ring atoms.
    aromatic : all ring bonds aromatic (RDKit), or the fallback's planar-carbon test.
    elements : ring element formula, e.g. ``"C6"`` or ``"C5N"`` (carbon first).
    perception : ``"rdkit"``, ``"rdkit-retry"`` or ``"fallback"`` (see `Perception.method`).
    sequence : ring elements in ring order, e.g. ``("N", "C", "N", "C", "C")``.
    ring_double_bonds : double and triple bonds inside the ring (aromatic bonds not counted);
        ``None`` from the fallback.
    exocyclic_double_bonds : double bonds from ring atoms to atoms outside the ring (C=O, C=C,
        C=N); ``None`` from the fallback.
    """

    molecule: int
    atoms: tuple[int, ...]
    hydrogens: tuple[int, ...]
    aromatic: bool
    elements: str
    perception: str = "rdkit"
    sequence: tuple[str, ...] = ()
    ring_double_bonds: int | None = None
    exocyclic_double_bonds: int | None = None

    @property
    def size(self) -> int:
        return len(self.atoms)

    @property
    def carbon_only(self) -> bool:
        return self.elements == f"C{self.size}"

    @property
    def n_hydrogens(self) -> int:
        return len(self.hydrogens)

    @property
    def composition(self) -> tuple[str, int]:
        """``(elements, n_hydrogens)``: the atoms summed into the ring energy, e.g. ``("C6", 6)``."""
        return self.elements, self.n_hydrogens

    @property
    def ring_type(self) -> str:
        """A name such as ``"benzene"`` or ``"oxirane"`` (see `ring_type_name`)."""
        return ring_type_name(self)

    def energy(self, atom_values: np.ndarray, with_hydrogens: bool = True) -> float:
        """Sum of ``atom_values`` (n_atoms of this molecule,) over the ring (and its hydrogens)."""
        idx = list(self.atoms) + (list(self.hydrogens) if with_hydrogens else [])
        return float(np.sum(atom_values[idx]))


@dataclass
class Perception:
    """The rings of one molecule and how they were found.

    rings : the rings of the requested sizes (empty if perception failed and no fallback was used).
    method : ``"rdkit"`` (RDKit's default bond perception); ``"rdkit-retry"`` (the default failed,
        RDKit succeeded with covalent radii times ``cov_factor``); ``"fallback"`` (RDKit failed or
        is not installed, rings from the covalent-radius fallback); or ``"failed"`` (RDKit failed
        and the fallback was not requested).
    error : why RDKit's default perception failed, or ``None``.
    cov_factor : the covalent-radius factor of a successful retry, or ``None``.
    """

    rings: list[Ring]
    method: str
    error: str | None = None
    cov_factor: float | None = None


def _formula(symbols: Sequence[str]) -> str:
    counts = Counter(symbols)
    return "".join(
        f"{el}{n if n > 1 else ''}" for el, n in sorted(counts.items(), key=lambda kv: (kv[0] != "C", kv[0]))
    )


def _element_counts(ring: Ring) -> Counter:
    """Ring atoms per element, from the ring sequence or, for a ring built without one, its formula."""
    if ring.sequence:
        return Counter(ring.sequence)
    return Counter({el: int(n or 1) for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", ring.elements)})


def canonical_sequence(symbols: Sequence[str]) -> str:
    """The ring's element sequence, the same for every rotation and direction, e.g. ``"CCCCCN"``.

    ``symbols`` are element symbols in ring order. Carbon sorts first, so pyridine is ``"CCCCCN"``,
    imidazole ``"CCNCN"`` and pyrazole ``"CCCNN"``.
    """
    seq = list(symbols)
    variants = [seq[k:] + seq[:k] for k in range(len(seq))]
    variants += [list(reversed(v)) for v in variants]
    best = min(variants, key=lambda v: [(s != "C", s) for s in v])
    return "".join(best)


RETRY_COVALENT_FACTORS = (1.2, 1.15)
"""Covalent-radius factors of the second RDKit attempt (see `perceive_rings`), tried in order."""


def _rdkit_mol(atoms: ase.Atoms, cov_factor: float | None = None):
    """An RDKit molecule with bonds and bond orders perceived from the geometry (Å), as neutral
    (`qmlx.chem.rdkit.rdkit_molecule`).

    ``cov_factor`` ``None``: RDKit's default connectivity ("connect the dots"); a number: bonds
    between atoms closer than ``cov_factor`` times the sum of their covalent radii, and the result
    accepted only without formal charges or radicals. Raises ``ImportError`` without RDKit and
    ``ValueError`` when RDKit cannot perceive the bonds.
    """
    from qmlx.chem.rdkit import rdkit_molecule

    mol = rdkit_molecule(atoms, charge=0, cov_factor=cov_factor)
    if cov_factor is not None and any(
        a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()
    ):
        raise ValueError(f"covalent radii x {cov_factor}: charged or radical structure")
    return mol


def _rdkit_ring_list(
    atoms: ase.Atoms, molecule: int, sizes: tuple[int, ...], cov_factor: float | None = None
) -> list[Ring]:
    from rdkit import Chem

    mol = _rdkit_mol(atoms, cov_factor)
    how = "rdkit" if cov_factor is None else "rdkit-retry"
    info = mol.GetRingInfo()
    symbols = atoms.get_chemical_symbols()
    out = []
    for ring, bond_ring in zip(info.AtomRings(), info.BondRings()):
        if len(ring) not in sizes:
            continue
        ring_bonds = [mol.GetBondWithIdx(b) for b in bond_ring]
        aromatic = all(b.GetIsAromatic() for b in ring_bonds)
        multiple = (Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)
        inside = sum(b.GetBondType() in multiple for b in ring_bonds)
        members = set(ring)
        exo = sum(
            b.GetBondType() == Chem.BondType.DOUBLE and b.GetOtherAtomIdx(i) not in members
            for i in ring
            for b in mol.GetAtomWithIdx(i).GetBonds()
        )
        hydrogens = tuple(
            sorted(
                {
                    n.GetIdx()
                    for i in ring
                    for n in mol.GetAtomWithIdx(i).GetNeighbors()
                    if n.GetAtomicNum() == 1
                }
            )
        )
        seq = tuple(symbols[i] for i in ring)
        out.append(Ring(molecule, tuple(ring), hydrogens, aromatic, _formula(seq), how, seq, inside, exo))
    return out


def _fallback_rings(
    atoms: ase.Atoms, sizes: tuple[int, ...] = (3, 4, 5, 6)
) -> tuple[list[tuple[int, ...]], list[bool], list[list[int]]]:
    """(rings in path order, aromatic flags, neighbour lists) from covalent radii; see the module notes."""
    neighbours: list[list[int]] = [[] for _ in range(len(atoms))]
    for i, j in bonds(atoms):
        neighbours[i].append(int(j))
        neighbours[j].append(int(i))
    longest = max(sizes)
    found: dict[tuple[int, ...], tuple[int, ...]] = {}
    for start in range(len(atoms)):  # simple cycles through each atom, by bounded search
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in neighbours[node]:
                if nxt == start and len(path) in sizes:
                    found.setdefault(tuple(sorted(path)), path)
                elif nxt not in path and len(path) < longest and nxt > start:
                    stack.append((nxt, path + (nxt,)))
    rings = [found[k] for k in sorted(found)]
    aromatic = []
    for r in rings:
        pos = atoms.positions[list(r)]
        centred = pos - pos.mean(axis=0)
        flat = np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(r)) < 0.1
        sp2 = all(atoms.numbers[i] == 6 and len(neighbours[i]) == 3 for i in r)
        aromatic.append(bool(len(r) == 6 and flat and sp2))
    return rings, aromatic, neighbours


def _fallback_ring_list(atoms: ase.Atoms, molecule: int, sizes: tuple[int, ...]) -> list[Ring]:
    rings, aromatic, neighbours = _fallback_rings(atoms, tuple(s for s in sizes if 3 <= s <= 6) or (5, 6))
    symbols = atoms.get_chemical_symbols()
    out = []
    for ring, arom in zip(rings, aromatic):
        if len(ring) not in sizes:
            continue
        hydrogens = tuple(sorted({n for i in ring for n in neighbours[i] if atoms.numbers[n] == 1}))
        seq = tuple(symbols[i] for i in ring)
        out.append(Ring(molecule, tuple(ring), hydrogens, arom, _formula(seq), "fallback", seq))
    return out


def perceive_rings(
    atoms: ase.Atoms,
    molecule: int = 0,
    sizes: tuple[int, ...] = (5, 6),
    fallback: bool = True,
    retry: Sequence[float] = RETRY_COVALENT_FACTORS,
) -> Perception:
    """The rings of ``sizes`` in one molecule (positions in Å), and how they were perceived.

    RDKit's default bond perception comes first. It fails on some strained polycyclic molecules
    (bicyclo[1.1.1]pentanes, oxabicyclics, cages), where it bonds atoms across a small ring that
    are 1.9-2.0 Å apart and then finds no valid bond orders. RDKit is then tried again with bonds
    only between atoms closer than each factor in ``retry`` times the sum of their covalent radii
    (accepted only without charges or radicals). When that fails too, the covalent-radius fallback
    is used if ``fallback`` (its rings carry ``perception="fallback"``); otherwise no rings are
    returned and ``method`` is ``"failed"``.
    """
    try:
        return Perception(_rdkit_ring_list(atoms, molecule, sizes), "rdkit")
    except ImportError:
        error = "RDKit is not installed"
        retry = ()
    except ValueError as err:
        error = str(err)
    for factor in retry:
        try:
            return Perception(_rdkit_ring_list(atoms, molecule, sizes, factor), "rdkit-retry", error, factor)
        except ValueError:
            continue
    if not fallback:
        return Perception([], "failed", error)
    return Perception(_fallback_ring_list(atoms, molecule, sizes), "fallback", error)


def find_rings(atoms: ase.Atoms, molecule: int = 0, sizes: tuple[int, ...] = (5, 6)) -> list[Ring]:
    """The rings of ``sizes`` in one molecule, with aromaticity (RDKit if installed).

    Warns (``RuntimeWarning``) when the rings come from the fallback; use `perceive_rings` to
    handle that case explicitly.
    """
    found = perceive_rings(atoms, molecule, sizes, fallback=True)
    if found.method == "fallback":
        warnings.warn(
            f"molecule {molecule}: {found.error}; rings from the covalent-radius fallback",
            RuntimeWarning,
            stacklevel=2,
        )
    return found.rings


# --- ring types -------------------------------------------------------------------------------------

_AROMATIC = {
    "benzene": "CCCCCC",
    "pyridine": "CCCCCN",
    "pyridazine": "CCCCNN",
    "pyrimidine": "CCCNCN",
    "pyrazine": "CCNCCN",
    "1,2,3-triazine": "CCCNNN",
    "1,2,4-triazine": "CCNCNN",
    "1,3,5-triazine": "CNCNCN",
    "pyran (aromatic in RDKit)": "CCCCCO",
    "pyrrole": "CCCCN",
    "furan": "CCCCO",
    "thiophene": "CCCCS",
    "pyrazole": "CCCNN",
    "imidazole": "CCNCN",
    "oxazole": "CCNCO",
    "isoxazole": "CCCNO",
    "thiazole": "CCNCS",
    "isothiazole": "CCCNS",
    "1,2,3-triazole": "CCNNN",
    "1,2,4-triazole": "CNCNN",
    "tetrazole": "CNNNN",
    "pentazole": "NNNNN",
    "1,2,3-oxadiazole": "CCNNO",
    "1,2,4-oxadiazole": "CNCNO",
    "1,2,5-oxadiazole": "CCNON",
    "1,3,4-oxadiazole": "CNNCO",
    "1,2,4-thiadiazole": "CNCNS",
    "1,3,4-thiadiazole": "CNNCS",
    "1,3-dioxole (aromatic in RDKit)": "CCOCO",
}
_SATURATED = {
    "cyclopropane": "CCC",
    "aziridine": "CCN",
    "oxirane": "CCO",
    "diaziridine": "CNN",
    "oxaziridine": "CNO",
    "cyclobutane": "CCCC",
    "azetidine": "CCCN",
    "oxetane": "CCCO",
    "1,3-diazetidine": "CNCN",
    "1,3-dioxetane": "COCO",
    "1,3-oxazetidine": "CNCO",
    "cyclopentane": "CCCCC",
    "pyrrolidine": "CCCCN",
    "tetrahydrofuran": "CCCCO",
    "tetrahydrothiophene": "CCCCS",
    "pyrazolidine": "CCCNN",
    "imidazolidine": "CCNCN",
    "oxazolidine": "CCNCO",
    "isoxazolidine": "CCCNO",
    "1,3-dioxolane": "CCOCO",
    "1,2-dioxolane": "CCCOO",
    "cyclohexane": "CCCCCC",
    "piperidine": "CCCCCN",
    "tetrahydropyran": "CCCCCO",
    "piperazine": "CCNCCN",
    "morpholine": "CCNCCO",
    "1,3-dioxane": "CCCOCO",
    "1,4-dioxane": "CCOCCO",
    "hexahydropyrimidine": "CCCNCN",
}
_UNSATURATED = {  # (sequence, ring double bonds)
    "cyclopropene": ("CCC", 1),
    "2H-azirine": ("CCN", 1),
    "cyclobutene": ("CCCC", 1),
    "cyclopentene": ("CCCCC", 1),
    "cyclopentadiene": ("CCCCC", 2),
    "dihydrofuran": ("CCCCO", 1),
    "pyrroline": ("CCCCN", 1),
    "oxazoline": ("CCNCO", 1),
    "imidazoline": ("CCNCN", 1),
    "pyrazoline": ("CCCNN", 1),
    "1,3-dioxole": ("CCOCO", 1),
    "cyclohexene": ("CCCCCC", 1),
    "cyclohexadiene": ("CCCCCC", 2),
    "dihydropyran": ("CCCCCO", 1),
    "pyran": ("CCCCCO", 2),
    "tetrahydropyridine": ("CCCCCN", 1),
}
RING_TYPE_NAMES: dict[tuple[str, bool, int], str] = {
    **{(canonical_sequence(s), True, 0): n for n, s in _AROMATIC.items()},
    **{(canonical_sequence(s), False, 0): n for n, s in _SATURATED.items()},
    **{(canonical_sequence(s), False, k): n for n, (s, k) in _UNSATURATED.items()},
}
"""Ring type names by (canonical element sequence, aromatic, double bonds inside the ring)."""


def ring_type_name(ring: Ring, exocyclic: bool = True) -> str:
    """A ring type from RDKit's perception: size, element sequence, aromaticity, double bonds.

    ``"benzene"``, ``"pyridine"``, ``"imidazole"``, ``"cyclopropane"``, ``"oxirane"``, ...
    (`RING_TYPE_NAMES`); otherwise a generic label such as ``"C4N2 6-ring, 1 ring double bond"``.
    With ``exocyclic``, rings with exocyclic double bonds (C=O, C=C, C=N on a ring atom) get
    ``" + exocyclic =X"``: a cyclohexanone ring is ``"cyclohexane + exocyclic =X"``. Fallback
    rings (no bond orders) are ``"<elements> <size>-ring (fallback)"``.
    """
    if ring.ring_double_bonds is None:
        return f"{ring.elements} {ring.size}-ring (fallback)"
    seq = canonical_sequence(ring.sequence)
    key = (seq, ring.aromatic, 0 if ring.aromatic else ring.ring_double_bonds)
    if key in RING_TYPE_NAMES:
        name = RING_TYPE_NAMES[key]
    elif ring.aromatic:
        name = f"{ring.elements} {ring.size}-ring, aromatic ({seq})"
    else:
        k = ring.ring_double_bonds
        name = f"{ring.elements} {ring.size}-ring ({seq}), {k} ring double bond{'s' if k != 1 else ''}"
    if exocyclic and ring.exocyclic_double_bonds:
        name += " + exocyclic =X"
    return name


# --- ring composition -------------------------------------------------------------------------------


def per_atom_composition(ring: Ring) -> tuple:
    """Ring composition per ring atom: ``(("C", 1), ("H", 4/3))`` for a C3H4 ring, as exact fractions.

    Two rings with the same per-atom composition have the same sum of element references per
    ring atom, so their per-atom energies can be compared whatever the references are.
    """
    from fractions import Fraction

    counts = _element_counts(ring)
    counts["H"] = ring.n_hydrogens
    return tuple(sorted((el, Fraction(n, ring.size)) for el, n in counts.items() if n))


def composition_features(rings: Sequence[Ring], elements: Sequence[str] = RING_ELEMENTS) -> np.ndarray:
    """(n_rings, len(elements) + 1) ring atoms of each element and the ring's hydrogen count."""
    rows = []
    for r in rings:
        counts = _element_counts(r)
        rows.append([counts.get(el, 0) for el in elements] + [r.n_hydrogens])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(elements) + 1)
