"""Rings, aromaticity, ring types and ring energies from atom-wise contributions, and the statistics
that test what they show.

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
`ring_type_name` names ring types (benzene, pyridine, oxirane, ...) from RDKit's perception.

Ring energy
-----------
A ring's energy, following the DTNN paper's analysis (Schütt et al., Nat. Commun. 8, 13890,
2017), is the sum of the atom-wise contributions of its atoms and of the hydrogens bonded to them
(`ring_energies`), in kcal/mol, each taken relative to its element's reference energy, the
per-element least-squares energy the network's output head was fitted with (`atom_contributions`).
Lower is more stable.

Statistics
----------
- `pair_fraction`: the fraction of (aromatic, non-aromatic) pairs, optionally only within
  groups such as same-composition rings, in which the aromatic ring has the lower energy. Over one
  group it is the ROC AUC of ``-energy``. It accepts per-ring weights so that a bootstrap can
  reuse it.
- `bootstrap` (and `bootstrap_draws`, `percentile_intervals`): a seeded percentile interval of
  any such statistic, resampling molecules (all rings of a molecule travel together).
- `composition_features`, `composition_scores`, `composition_residual`: what ring composition
  (ring elements and hydrogen count) alone predicts, the baselines an energy ranking has to beat.
- `matched_difference`, `per_atom_composition`: the difference between two ring types compared
  only at equal composition per ring atom, where the element references cancel.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
    """An RDKit molecule with bonds and bond orders perceived from the geometry (Å).

    ``cov_factor`` ``None``: RDKit's default connectivity ("connect the dots"); a number: bonds
    between atoms closer than ``cov_factor`` times the sum of their covalent radii, and the result
    accepted only without formal charges or radicals. Raises ``ImportError`` without RDKit and
    ``ValueError`` when RDKit cannot perceive the bonds.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    block = f"{len(atoms)}\n\n" + "\n".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
    )
    mol = Chem.MolFromXYZBlock(block)
    if mol is None:
        raise ValueError("RDKit could not read the geometry")
    try:
        if cov_factor is None:
            rdDetermineBonds.DetermineBonds(mol, charge=0)
        else:
            rdDetermineBonds.DetermineConnectivity(mol, useVdw=True, covFactor=cov_factor)
            rdDetermineBonds.DetermineBondOrders(mol, charge=0)
    except Exception as err:  # RDKit cannot assign bond orders (charged or unusual structures)
        raise ValueError(f"RDKit could not assign bond orders: {err}".strip()) from err
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


# --- atom contributions and ring energies -----------------------------------------------------------


def atom_contributions(
    model, mols, methods: Sequence[str] = ("decomposition", "lrp")
) -> dict[str, np.ndarray]:
    """Per-atom contributions relative to the element references, (n_atoms_total,) kcal/mol each.

    ``decomposition``: the network's atom energies E_i - ref(Z_i). ``lrp``: LRP relevance plus
    bias relevance of each atom, which together explain E - sum_i ref(Z_i). ``ref`` is the
    network's per-element reference (``model.head.reference``), fitted on its training molecules.
    """
    from qmlx.explain import explain

    reference = element_references(model)[mols.Z]
    out = {}
    for method in methods:
        ex = explain(model, mols, method)
        if method == "decomposition":
            out[method] = ex.relevance - reference
        elif method == "lrp":
            out[method] = ex.relevance + ex.bias
        else:
            raise ValueError(f"ring energies use 'decomposition' or 'lrp', not {method!r}")
    return out


def element_references(model) -> np.ndarray:
    """(max_z + 1,) the network's per-element reference energies in kcal/mol (0 for unknown elements)."""
    return model.head.reference.detach().double().cpu().numpy()


def ring_energies(rings: Sequence[Ring], atom_values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_rings,) ring energies: sums of ``atom_values`` (n_atoms_total,) over each ring's atoms and
    hydrogens; ``offsets`` (n_molecules + 1,) are the molecules' first atom indices."""
    return np.array([r.energy(atom_values[offsets[r.molecule] : offsets[r.molecule + 1]]) for r in rings])


# --- statistics ---------------------------------------------------------------------------------------


def _wins(e_pos: np.ndarray, w_pos: np.ndarray, e_neg: np.ndarray, w_neg: np.ndarray) -> float:
    """Weighted count of (pos, neg) pairs with e_pos < e_neg, ties counting one half."""
    order = np.argsort(e_neg, kind="stable")
    e_sorted = e_neg[order]
    cum = np.concatenate([[0.0], np.cumsum(w_neg[order])])
    left = np.searchsorted(e_sorted, e_pos, side="left")
    right = np.searchsorted(e_sorted, e_pos, side="right")
    above = cum[-1] - cum[right]
    tied = cum[right] - cum[left]
    return float(np.sum(w_pos * (above + 0.5 * tied)))


def group_codes(labels: Sequence | np.ndarray) -> np.ndarray:
    """(n,) integer codes of hashable ``labels`` (n,), numbered in order of first appearance.

    An integer array is returned unchanged.
    """
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return labels.astype(np.int64, copy=False)
    lookup: dict = {}
    return np.array([lookup.setdefault(g, len(lookup)) for g in labels], dtype=np.int64)


@dataclass
class PairStatistic:
    """Result of `pair_fraction`.

    fraction : weighted fraction of (aromatic, non-aromatic) pairs in which the aromatic ring has
        the lower energy (ties count one half); ``nan`` without pairs.
    n_pairs : number of pairs (weighted).
    n_groups : groups that hold at least one pair.
    """

    fraction: float
    n_pairs: float
    n_groups: int


def pair_fraction(
    energy: np.ndarray,
    aromatic: np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> PairStatistic:
    """How often an aromatic ring is more stable (lower energy) than a non-aromatic one.

    Parameters
    ----------
    energy : (n_rings,) ring energies, or any score where lower means "predicted aromatic".
    aromatic : (n_rings,) bool.
    groups : (n_rings,) hashable labels, or integer codes from `group_codes` (faster when called
        many times); only pairs within a group count (e.g. ring composition, `Ring.composition`).
        ``None``: all pairs, which makes the fraction the ROC AUC of ``-energy``.
    weights : (n_rings,) non-negative multiplicities (a bootstrap resample); default 1.

    Every (aromatic, non-aromatic) pair in a group counts with weight ``w_a * w_n``.
    """
    energy = np.asarray(energy, dtype=np.float64)
    aromatic = np.asarray(aromatic, dtype=bool)
    weights = np.ones(len(energy)) if weights is None else np.asarray(weights, dtype=np.float64)
    codes = np.zeros(len(energy), dtype=np.int64) if groups is None else group_codes(groups)
    used = weights > 0
    both = np.intersect1d(codes[used & aromatic], codes[used & ~aromatic])
    order = np.argsort(codes, kind="stable")
    bounds = (
        np.searchsorted(codes[order], both, side="left"),
        np.searchsorted(codes[order], both, side="right"),
    )
    wins = total = 0.0
    for lo, hi in zip(*bounds):
        idx = order[lo:hi]
        idx = idx[used[idx]]
        pos, neg = idx[aromatic[idx]], idx[~aromatic[idx]]
        wins += _wins(energy[pos], weights[pos], energy[neg], weights[neg])
        total += weights[pos].sum() * weights[neg].sum()
    return PairStatistic(float(wins / total) if total else float("nan"), float(total), len(both))


@dataclass
class Interval:
    """A point estimate with a bootstrap percentile interval.

    value : the statistic on the data as measured.
    low, high : percentile interval bounds (``level``, e.g. 2.5th and 97.5th percentiles).
    level : the interval's coverage, e.g. 0.95.
    n_resamples : resamples drawn; n_undefined : resamples where the statistic was ``nan`` (for
        example no aromatic ring drawn), left out of the percentiles.
    """

    value: float
    low: float
    high: float
    level: float = 0.95
    n_resamples: int = 0
    n_undefined: int = 0

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("value", "low", "high", "level", "n_resamples", "n_undefined")}


def resample_weights(n_molecules: int, n_resamples: int = 1000, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield ``n_resamples`` arrays (n_molecules,): multiplicities of molecules drawn with replacement.

    Seeded: the same ``seed`` yields the same resamples, one at a time (no (n_resamples,
    n_molecules) matrix is held in memory).
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        draw = rng.integers(0, n_molecules, size=n_molecules)
        yield np.bincount(draw, minlength=n_molecules).astype(np.float64)


def bootstrap_draws(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    molecule: np.ndarray,
    n_molecules: int,
    n_resamples: int = 1000,
    seed: int = 0,
    point: float | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The statistic measured, (k,), and on each resample of molecules, (n_resamples, k).

    ``statistic`` maps per-ring weights (n_rings,) to a number or to k numbers; ``molecule``
    (n_rings,) is each ring's molecule in ``range(n_molecules)``; ``point`` the statistic at
    weights 1 if already computed. See `bootstrap`.
    """
    molecule = np.asarray(molecule, dtype=np.int64)
    if point is None:
        point = statistic(np.ones(len(molecule)))
    point = np.atleast_1d(np.asarray(point, dtype=np.float64))
    draws = np.array(
        [np.atleast_1d(statistic(w[molecule])) for w in resample_weights(n_molecules, n_resamples, seed)],
        dtype=np.float64,
    ).reshape(n_resamples, len(point))
    return point, draws


def percentile_intervals(point: np.ndarray, draws: np.ndarray, level: float = 0.95) -> list[Interval]:
    """Percentile intervals from `bootstrap_draws` output: ``point`` (k,), ``draws`` (n_resamples, k).

    Resamples where a statistic is not finite are left out of its percentiles and counted.
    """
    alpha = (1 - level) / 2
    out = []
    for k, value in enumerate(np.atleast_1d(point)):
        column = draws[:, k]
        ok = column[np.isfinite(column)]
        low, high = np.quantile(ok, [alpha, 1 - alpha]) if len(ok) else (np.nan, np.nan)
        out.append(
            Interval(float(value), float(low), float(high), level, len(column), int(len(column) - len(ok)))
        )
    return out


def bootstrap(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    molecule: np.ndarray,
    n_molecules: int,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval | list[Interval]:
    """Bootstrap over molecules: a seeded percentile interval of ``statistic``.

    Parameters
    ----------
    statistic : maps per-ring weights (n_rings,) to a number, or to an array of numbers (one
        interval each); with all weights 1 it is the point estimate. A molecule drawn k times
        gives each of its rings weight k.
    molecule : (n_rings,) index of each ring's molecule in ``range(n_molecules)``.
    n_molecules : molecules to resample from, including those without rings.
    n_resamples, seed, level : resamples drawn, the generator's seed, and the interval's coverage.

    Returns one `Interval` for a scalar statistic, else a list. The same ``seed`` draws the same
    molecules, so statistics bootstrapped with one seed are resampled jointly.
    """
    measured = statistic(np.ones(len(molecule)))
    point, draws = bootstrap_draws(statistic, molecule, n_molecules, n_resamples, seed, measured)
    intervals = percentile_intervals(point, draws, level)
    return intervals[0] if np.ndim(measured) == 0 else intervals


def per_atom_composition(ring: Ring) -> tuple:
    """Ring composition per ring atom: ``(("C", 1), ("H", 4/3))`` for a C3H4 ring, as exact fractions.

    Two rings with the same per-atom composition have the same sum of element references per
    ring atom, so their per-atom energies can be compared whatever the references are.
    """
    from fractions import Fraction

    counts = _element_counts(ring)
    counts["H"] = ring.n_hydrogens
    return tuple(sorted((el, Fraction(n, ring.size)) for el, n in counts.items() if n))


def matched_difference(
    values: np.ndarray,
    in_a: np.ndarray,
    in_b: np.ndarray,
    strata: Sequence,
    weights: np.ndarray | None = None,
) -> float:
    """Mean of ``values`` over group a minus group b, compared only within matching strata.

    ``values`` (n_rings,), e.g. ring energy per ring atom (kcal/mol); ``in_a``, ``in_b``
    (n_rings,) bool; ``strata`` (n_rings,) labels such as `Ring.composition` or
    `per_atom_composition`, or their `group_codes`; ``weights`` (n_rings,) bootstrap
    multiplicities. Each stratum that holds both groups contributes ``mean_a - mean_b`` with
    weight ``n_a n_b / (n_a + n_b)``; ``nan`` if no stratum holds both.
    """
    values = np.asarray(values, dtype=np.float64)
    w = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
    codes = group_codes(strata)
    k = int(codes.max()) + 1 if len(codes) else 0
    a = np.asarray(in_a, dtype=bool)
    b = np.asarray(in_b, dtype=bool)
    n_a = np.bincount(codes[a], weights=w[a], minlength=k)
    n_b = np.bincount(codes[b], weights=w[b], minlength=k)
    s_a = np.bincount(codes[a], weights=(w * values)[a], minlength=k)
    s_b = np.bincount(codes[b], weights=(w * values)[b], minlength=k)
    both = (n_a > 0) & (n_b > 0)
    if not both.any():
        return float("nan")
    h = n_a[both] * n_b[both] / (n_a[both] + n_b[both])
    diff = s_a[both] / n_a[both] - s_b[both] / n_b[both]
    return float(np.sum(h * diff) / np.sum(h))


def composition_features(rings: Sequence[Ring], elements: Sequence[str] = RING_ELEMENTS) -> np.ndarray:
    """(n_rings, len(elements) + 1) ring atoms of each element and the ring's hydrogen count."""
    rows = []
    for r in rings:
        counts = _element_counts(r)
        rows.append([counts.get(el, 0) for el in elements] + [r.n_hydrogens])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(elements) + 1)


def composition_scores(
    features: np.ndarray, aromatic: np.ndarray, molecule: np.ndarray, n_splits: int = 5, seed: int = 0
) -> np.ndarray:
    """(n_rings,) out-of-fold logistic-regression scores of "aromatic" from composition alone.

    ``features`` (n_rings, k) from `composition_features`; the folds split molecules (all rings of
    a molecule in one fold), so no ring is scored by a model fitted on its own molecule. Higher
    means more likely aromatic. A fold whose training part holds one class scores its rings with
    that class's training frequency.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    features = np.asarray(features, dtype=np.float64)
    aromatic = np.asarray(aromatic, dtype=bool)
    scores = np.zeros(len(aromatic))
    n_splits = min(n_splits, len(np.unique(molecule)))
    if n_splits < 2:
        return scores
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.unique(molecule))  # GroupKFold is deterministic: shuffle group labels
    relabel = dict(zip(np.unique(molecule), shuffled))
    groups = np.array([relabel[m] for m in molecule])
    for train, test in GroupKFold(n_splits=n_splits).split(features, aromatic, groups):
        y = aromatic[train]
        if y.all() or not y.any():
            scores[test] = float(y.mean())
            continue
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(features[train], y)
        scores[test] = clf.decision_function(features[test])
    return scores


def composition_residual(
    energy: np.ndarray, features: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """(n_rings,) ring energy minus its least-squares fit on composition (with an intercept).

    ``energy`` (n_rings,) kcal/mol, ``features`` (n_rings, k) from `composition_features`,
    ``weights`` (n_rings,) multiplicities of a weighted fit (rings of weight 0 get residuals too).
    The fit does not see which rings are aromatic.
    """
    energy = np.asarray(energy, dtype=np.float64)
    X = np.column_stack([np.asarray(features, dtype=np.float64), np.ones(len(energy))])
    w = np.ones(len(energy)) if weights is None else np.asarray(weights, dtype=np.float64)
    s = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * s[:, None], energy * s, rcond=None)
    return energy - X @ coef
