"""`Molecules`: one ragged container for a set of molecules of different sizes.

Atoms of all molecules are stored flat, molecule after molecule:

- ``Z``            (n_atoms_total,)    int64 nuclear charges
- ``R``            (n_atoms_total, 3)  float64 positions in **Å**
- ``n_atoms``      (n_molecules,)      int64 atoms per molecule
- ``targets``      name -> (n_molecules,) float64 array, with its unit in ``units[name]`` and an
  optional human description in ``descriptions[name]``
- ``ids``          (n_molecules,)      identifiers (e.g. QM7 row, QM9 index or file name)
- ``forces``       (n_atoms_total, 3)  float64 forces in ``force_unit`` (e.g. ``"eV/Å"``), or None
- ``charge``       (n_molecules,)      float64 net charge in e, NaN where not stated
- ``multiplicity`` (n_molecules,)      float64 spin multiplicity 2S+1, NaN where not stated
- ``periodic``     (n_molecules,)      bool, True where the source had a periodic cell

Everything derived (offsets, molecule index per atom, padded arrays) is computed with numpy in
one shot; nothing loops over atoms in Python.

Reading ``ase.Atoms`` (`Molecules.from_atoms`):

- the net charge is ``atoms.info["charge"]``; without it, a net initial charge
  (``atoms.get_initial_charges().sum()``) of magnitude above 1e-3 counts as stated;
- the multiplicity is ``atoms.info["multiplicity"]``, else ``atoms.info["spin"]``, which is read
  as the multiplicity 2S+1 (the convention of fairchem/OMol data sets), never as S; a value below
  1 or not an integer is an error;
- ``periodic`` is True where any direction has ``pbc`` True and a nonzero cell vector;
- the target ``"energy"`` is ``atoms.info["energy"]``, else the calculator's energy
  (``atoms.calc.results``); forces are ``atoms.arrays["forces"]``, else the calculator's.
  Values are in the stated unit, else in eV and eV/Å (ASE's convention).

Writing ``ase.Atoms`` (`Molecules.to_atoms`, ``mols[i]``): targets go to ``atoms.info`` in their own
units, ``info["charge"]`` and ``info["multiplicity"]`` where stated, ``info["periodic"] = True``
for periodic molecules (no cell is kept), and forces to a ``SinglePointCalculator`` **converted to
eV/Å**, so that ``atoms.get_forces()`` follows ASE's convention.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import ase
import numpy as np
from ase.data import chemical_symbols

from qmlx.errors import DataFormatError
from qmlx.units import BOHR_TO_ANGSTROM, ENERGY_UNITS, convert_energy

MAX_Z = len(chemical_symbols) - 1

_ENERGY_ALIASES = {"kcal/mol": "kcal/mol", "ev": "eV", "hartree": "Hartree", "ha": "Hartree"}
# length unit -> its size in Å
_LENGTH_IN_ANGSTROM = {"Å": 1.0, "A": 1.0, "Ang": 1.0, "Angstrom": 1.0, "Bohr": BOHR_TO_ANGSTROM}
_LENGTH_CANONICAL = {"Å": "Å", "A": "Å", "Ang": "Å", "Angstrom": "Å", "Bohr": "Bohr"}


def energy_unit(unit: str) -> str:
    """The canonical spelling of an energy unit (``kcal/mol``, ``eV``, ``Hartree``; case-insensitive).

    Raises `DataFormatError` for a unit that `qmlx.units.convert_energy` does not know.
    """
    canonical = _ENERGY_ALIASES.get(str(unit).strip().lower(), str(unit))
    try:
        convert_energy(1.0, canonical, "kcal/mol")
    except ValueError as err:
        close = difflib.get_close_matches(str(unit).strip().lower(), _ENERGY_ALIASES, n=1, cutoff=0.6)
        hint = f"; did you mean {_ENERGY_ALIASES[close[0]]!r}?" if close else ""
        raise DataFormatError(f"energy unit {unit!r}: {err}{hint}") from None
    return canonical


#: units a user may state for a target besides the energy units (QM9's properties among them)
OTHER_UNITS = ("Debye", "Bohr^3", "Bohr^2", "Bohr", "Å", "GHz", "cal/mol/K", "e", "a.u.", "K", "cm^-1", "1")


def stated_unit(unit: str, where: str) -> str:
    """A unit a user typed for a target (``energy[eV]``): its canonical spelling if it is an
    energy unit or one of `OTHER_UNITS` (any case), else `DataFormatError` naming ``where``, with
    the closest known unit as a suggestion."""
    text = str(unit).strip()
    if text.lower() in _ENERGY_ALIASES:
        return _ENERGY_ALIASES[text.lower()]
    known = {u.lower(): u for u in OTHER_UNITS}
    if text.lower() in known:
        return known[text.lower()]
    names = {**_ENERGY_ALIASES, **known}
    close = difflib.get_close_matches(text.lower(), names, n=1, cutoff=0.6)
    hint = f"; did you mean {names[close[0]]!r}?" if close else ""
    listed = ", ".join([*ENERGY_UNITS, *OTHER_UNITS])
    raise DataFormatError(f"{where}: unknown unit {text!r}{hint} (known: {listed})")


def unit_name(unit: str) -> str:
    """The canonical spelling of ``unit`` if it is an energy unit (any case), else ``unit`` as given."""
    return _ENERGY_ALIASES.get(str(unit).strip().lower(), str(unit).strip())


def force_unit_parts(unit: str) -> tuple[str, str]:
    """Split a force unit such as ``"kcal/mol/Å"`` or ``"Hartree/Bohr"`` into (energy, length).

    The energy part is one of qmlx's energy units; the length part is Å (also written ``A``,
    ``Ang``, ``Angstrom``) or Bohr. Raises `DataFormatError` otherwise.
    """
    energy, sep, length = str(unit).strip().rpartition("/")
    if not sep or length not in _LENGTH_IN_ANGSTROM:
        raise DataFormatError(
            f"force unit {unit!r}: expected ENERGY/LENGTH with LENGTH Å or Bohr, e.g. 'kcal/mol/Å' or 'eV/Å'"
        )
    try:
        energy = energy_unit(energy)
    except DataFormatError as err:
        raise DataFormatError(f"force unit {unit!r}: {err}") from None
    return energy, _LENGTH_CANONICAL[length]


def normalize_force_unit(unit: str) -> str:
    """Canonical spelling of a force unit: ``"kcal/mol/Å"``, ``"eV/Å"``, ``"Hartree/Bohr"``, ..."""
    return "/".join(force_unit_parts(unit))


def convert_force(value, from_unit: str, to_unit: str):
    """Convert forces (scalar or array) between units such as ``eV/Å`` and ``kcal/mol/Å``."""
    e_from, l_from = force_unit_parts(from_unit)
    e_to, l_to = force_unit_parts(to_unit)
    factor = convert_energy(1.0, e_from, e_to) * _LENGTH_IN_ANGSTROM[l_to] / _LENGTH_IN_ANGSTROM[l_from]
    return value * factor


@dataclass(eq=False)
class Molecules:
    """A set of molecules stored as flat atoms plus per-molecule counts.

    Parameters
    ----------
    Z : (n_atoms_total,) int array of nuclear charges.
    R : (n_atoms_total, 3) float array of positions in Å.
    n_atoms : (n_molecules,) int array of atom counts; ``n_atoms.sum() == len(Z)``.
    targets : mapping of target name to (n_molecules,) float array.
    units : mapping of target name to its unit (``"kcal/mol"``, ``"Hartree"``, ...).
    ids : (n_molecules,) identifiers; defaults to ``arange(n_molecules)``.
    folds : optional list of ``(train_idx, test_idx)`` index pairs into this set.
    name : a short label for messages (dataset name or file path).
    forces : optional (n_atoms_total, 3) float array of forces in ``force_unit``.
    force_unit : unit of ``forces`` (``"eV/Å"``, ``"kcal/mol/Å"``, ...); None when there are no forces.
    charge : (n_molecules,) net charges in e; NaN (the default) where not stated.
    multiplicity : (n_molecules,) spin multiplicities 2S+1; NaN (the default) where not stated.
    periodic : (n_molecules,) bool, True where the molecule came with a periodic cell.
    descriptions : mapping of target name to what it is, e.g. ``"PBE0 atomization energy"``.
    """

    Z: np.ndarray
    R: np.ndarray
    n_atoms: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    ids: np.ndarray | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None
    name: str = "molecules"
    forces: np.ndarray | None = None
    force_unit: str | None = None
    charge: np.ndarray | None = None
    multiplicity: np.ndarray | None = None
    periodic: np.ndarray | None = None
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.Z = np.ascontiguousarray(self.Z, dtype=np.int64).reshape(-1)
        self.R = np.ascontiguousarray(self.R, dtype=np.float64)
        self.n_atoms = np.ascontiguousarray(self.n_atoms, dtype=np.int64).reshape(-1)
        self.targets = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in self.targets.items()}
        self.units = dict(self.units)
        n_mol = len(self.n_atoms)
        self.ids = np.arange(n_mol) if self.ids is None else np.asarray(self.ids)
        if self.forces is not None:
            self.forces = np.ascontiguousarray(self.forces, dtype=np.float64)
            if self.force_unit is not None:
                self.force_unit = self._checked(normalize_force_unit, self.force_unit)
        else:
            self.force_unit = None
        self.charge = self._per_molecule(self.charge, np.nan, np.float64)
        self.multiplicity = self._per_molecule(self.multiplicity, np.nan, np.float64)
        self.periodic = self._per_molecule(self.periodic, False, bool)
        self.descriptions = {str(k): str(v) for k, v in (self.descriptions or {}).items()}
        self._validate()

    def _per_molecule(self, value, fill, dtype) -> np.ndarray:
        if value is None:
            return np.full(len(self.n_atoms), fill, dtype=dtype)
        return np.asarray(value, dtype=dtype).reshape(-1)

    def _checked(self, func, value):
        try:
            return func(value)
        except DataFormatError as err:
            raise DataFormatError(f"{self.name}: {err}") from None

    # ------------------------------------------------------------------ validation
    def _fail(self, problem: str) -> None:
        raise DataFormatError(f"{self.name}: {problem}")

    def _validate(self) -> None:
        n_mol = len(self.n_atoms)
        if self.R.ndim != 2 or self.R.shape[1] != 3:
            self._fail(f"positions must have shape (n_atoms, 3), got {self.R.shape}")
        if len(self.Z) != len(self.R):
            self._fail(f"{len(self.Z)} nuclear charges but {len(self.R)} positions")
        if (self.n_atoms < 1).any():
            self._fail("every molecule needs at least one atom")
        if int(self.n_atoms.sum()) != len(self.Z):
            self._fail(f"atom counts add up to {int(self.n_atoms.sum())}, but there are {len(self.Z)} atoms")
        bad_z = (self.Z < 1) | (self.Z > MAX_Z)
        if bad_z.any():
            mol = int(self.mol_index[np.argmax(bad_z)])
            self._fail(f"molecule {mol} has an invalid nuclear charge {int(self.Z[bad_z][0])}")
        finite = np.isfinite(self.R).all(axis=1)
        if not finite.all():
            mol = int(self.mol_index[np.argmin(finite)])
            self._fail(f"molecule {mol} has a non-finite (NaN or inf) coordinate")
        if len(self.ids) != n_mol:
            self._fail(f"{len(self.ids)} ids for {n_mol} molecules")
        for key, value in self.targets.items():
            if len(value) != n_mol:
                self._fail(f"target {key!r} has {len(value)} values for {n_mol} molecules")
            if key not in self.units:
                self._fail(f"target {key!r} has no unit")
        if self.forces is not None:
            if self.forces.shape != self.R.shape:
                self._fail(
                    f"forces must have shape {self.R.shape} like the positions, got {self.forces.shape}"
                )
            if self.force_unit is None:
                self._fail("forces have no unit (force_unit)")
            finite = np.isfinite(self.forces).all(axis=1)
            if not finite.all():
                self._fail(f"molecule {int(self.mol_index[np.argmin(finite)])} has a non-finite force")
        for key, value in (("charge", self.charge), ("multiplicity", self.multiplicity)):
            if len(value) != n_mol:
                self._fail(f"{key} has {len(value)} values for {n_mol} molecules")
            if np.isinf(value).any():
                self._fail(f"molecule {int(np.argmax(np.isinf(value)))} has an infinite {key}")
        stated = np.isfinite(self.multiplicity)
        bad = stated & ((self.multiplicity < 1) | (self.multiplicity != np.round(self.multiplicity)))
        if bad.any():
            i = int(np.argmax(bad))
            self._fail(
                f"molecule {i} has multiplicity {self.multiplicity[i]:g}; expected 2S+1 = 1, 2, 3, ..."
            )
        if len(self.periodic) != n_mol:
            self._fail(f"periodic has {len(self.periodic)} values for {n_mol} molecules")
        unknown = sorted(set(self.descriptions) - set(self.targets))
        if unknown:
            self._fail(f"description(s) for unknown target(s) {unknown}; targets are {sorted(self.targets)}")

    # ------------------------------------------------------------------ derived arrays
    @property
    def n_molecules(self) -> int:
        return len(self.n_atoms)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def shape(self) -> tuple[int]:
        """``(n_molecules,)``: lets scikit-learn's CV tools index a set with `subset` directly."""
        return (len(self.n_atoms),)

    @property
    def offsets(self) -> np.ndarray:
        """(n_molecules + 1,) start of each molecule in the flat arrays, then the total."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)])

    @property
    def mol_index(self) -> np.ndarray:
        """(n_atoms_total,) index of the molecule each atom belongs to."""
        return np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)

    @property
    def max_atoms(self) -> int:
        return int(self.n_atoms.max()) if len(self.n_atoms) else 0

    def padded(self, n_max: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zero-padded copies: ``Z (n_mol, n_max)``, ``R (n_mol, n_max, 3)`` in Å and a mask.

        ``n_max`` defaults to the largest molecule; a smaller value raises an error.
        """
        n_max = self.max_atoms if n_max is None else int(n_max)
        if n_max < self.max_atoms:
            raise DataFormatError(
                f"{self.name}: cannot pad to {n_max} atoms, the largest molecule has {self.max_atoms}"
            )
        slot = np.arange(len(self.Z)) - np.repeat(self.offsets[:-1], self.n_atoms)
        mol = self.mol_index
        Z = np.zeros((len(self), n_max), dtype=np.int64)
        R = np.zeros((len(self), n_max, 3), dtype=np.float64)
        Z[mol, slot] = self.Z
        R[mol, slot] = self.R
        return Z, R, Z > 0

    def target(self, key: str, unit: str | None = None) -> np.ndarray:
        """(n_molecules,) values of target ``key``, converted to ``unit`` if given."""
        if key not in self.targets:
            raise KeyError(f"{self.name} has no target {key!r}; it has {sorted(self.targets)}")
        if unit is None or unit == self.units[key]:
            return self.targets[key]
        return convert_energy(self.targets[key], self.units[key], unit)

    def forces_in(self, unit: str) -> np.ndarray:
        """(n_atoms_total, 3) forces converted to ``unit`` (e.g. ``"kcal/mol/Å"``)."""
        if self.forces is None:
            raise KeyError(f"{self.name} has no forces")
        return convert_force(self.forces, self.force_unit, unit)

    def describe(self, key: str) -> str:
        """What target ``key`` is, with its unit, e.g. ``"PBE0 atomization energy (kcal/mol)"``.

        Without a description the target's name stands in for it.
        """
        if key not in self.targets:
            raise KeyError(f"{self.name} has no target {key!r}; it has {sorted(self.targets)}")
        return f"{self.descriptions.get(key) or key} ({self.units[key]})"

    def composition(self) -> dict[str, int]:
        """Element symbol -> number of atoms over the whole set, in order of Z."""
        zs, counts = np.unique(self.Z, return_counts=True)
        return {chemical_symbols[z]: int(c) for z, c in zip(zs, counts)}

    # ------------------------------------------------------------------ indexing
    def subset(self, index: Sequence[int] | np.ndarray | slice) -> Molecules:
        """Molecules at ``index`` (slice, integer array or boolean mask), in that order.

        Every per-molecule and per-atom field is carried along; ``folds`` are not.
        """
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if idx.dtype == bool:
            if len(idx) != len(self):
                raise IndexError(f"boolean mask of length {len(idx)} for {len(self)} molecules")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"molecule index out of range for {len(self)} molecules")
        idx = idx % max(len(self), 1)
        counts = self.n_atoms[idx]
        starts = self.offsets[:-1][idx]
        # atom indices of the selected molecules, built without a Python loop
        atom_idx = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(
            counts.sum()
        )
        return Molecules(
            Z=self.Z[atom_idx],
            R=self.R[atom_idx],
            n_atoms=counts,
            targets={k: v[idx] for k, v in self.targets.items()},
            units=self.units,
            ids=self.ids[idx],
            name=self.name,
            forces=None if self.forces is None else self.forces[atom_idx],
            force_unit=self.force_unit,
            charge=self.charge[idx],
            multiplicity=self.multiplicity[idx],
            periodic=self.periodic[idx],
            descriptions=self.descriptions,
        )

    def __getitem__(self, index):
        """An integer gives one ``ase.Atoms``; a slice, index array or mask gives ``Molecules``."""
        if isinstance(index, tuple) and len(index) == 2 and index[1] is Ellipsis:
            index = index[0]  # numpy-style ``mols[idx, ...]``, as scikit-learn indexes arrays
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"molecule {index} out of range for {n} molecules")
            return self._atoms(int(index) % n)
        return self.subset(index)

    def _atoms(self, i: int) -> ase.Atoms:
        """Molecule ``i`` as ``ase.Atoms``: targets, charge and multiplicity in ``info``, forces (in
        eV/Å) in a ``SinglePointCalculator``."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        atoms = ase.Atoms(numbers=self.Z[lo:hi], positions=self.R[lo:hi])
        atoms.info.update({k: float(v[i]) for k, v in self.targets.items()})
        atoms.info["id"] = self.ids[i].item() if hasattr(self.ids[i], "item") else self.ids[i]
        if np.isfinite(self.charge[i]):
            atoms.info["charge"] = float(self.charge[i])
        if np.isfinite(self.multiplicity[i]):
            atoms.info["multiplicity"] = int(self.multiplicity[i])
        if self.periodic[i]:
            atoms.info["periodic"] = True
        if self.forces is not None:
            from ase.calculators.singlepoint import SinglePointCalculator

            forces = convert_force(self.forces[lo:hi], self.force_unit, "eV/Å")
            atoms.calc = SinglePointCalculator(atoms, forces=forces)
        return atoms

    def __iter__(self) -> Iterator[ase.Atoms]:
        for i in range(len(self)):
            yield self._atoms(i)

    def to_atoms(self) -> list[ase.Atoms]:
        """All molecules as ``ase.Atoms`` (positions in Å; targets, charge and multiplicity in
        ``atoms.info``; forces in eV/Å in a ``SinglePointCalculator``)."""
        return list(self)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_atoms(
        cls,
        atoms_list: Sequence[ase.Atoms],
        targets: Mapping[str, str | None] | None = None,
        name: str = "molecules",
        *,
        unit: str | None = None,
        force_unit: str | None = None,
        ids: Sequence | np.ndarray | None = None,
    ) -> Molecules:
        """Build from ``ase.Atoms`` objects.

        ``targets`` maps names in ``atoms.info`` (or the calculator's results) to their units,
        e.g. ``{"energy": "eV"}``; a unit of None means ``unit``, else eV. ``targets={}`` reads no
        target. If ``targets`` is None, ``"energy"`` (``info["energy"]`` or the calculator's) is
        the target when every molecule has one, in ``unit`` (default eV). Forces are kept when
        every molecule has them, in ``force_unit`` (default ``unit`` per Å, else eV/Å). Charge,
        multiplicity and periodicity are read as the module docstring describes. ``ids`` default to
        ``info["id"]``, else the position in ``atoms_list``.
        """
        atoms_list = list(atoms_list)
        if not atoms_list:
            raise DataFormatError(f"{name}: contains no molecules")
        labels = [f"{name}: molecule {i}" for i in range(len(atoms_list))]
        fields = collect_frames(atoms_list, labels, targets, unit, force_unit, strict=False)
        if ids is None:
            ids = [a.info.get("id", i) for i, a in enumerate(atoms_list)]
        return cls(**fields, ids=np.asarray(ids), name=name)

    @classmethod
    def concatenate(cls, parts: Sequence[Molecules], name: str | None = None) -> Molecules:
        """Join several sets; they must share target names and units, and either all have forces
        (converted to the first part's force unit) or none. Descriptions are merged, the first
        part's winning."""
        parts = list(parts)
        if not parts:
            raise DataFormatError(f"{name or 'molecules'}: nothing to concatenate")
        keys = list(parts[0].targets)
        for p in parts[1:]:
            if set(p.targets) != set(keys) or any(p.units[k] != parts[0].units[k] for k in keys):
                raise DataFormatError(f"cannot concatenate {p.name}: its targets or units differ")
        with_forces = [p.forces is not None for p in parts]
        if any(with_forces) and not all(with_forces):
            p = parts[with_forces.index(not with_forces[0])]
            raise DataFormatError(f"cannot concatenate {p.name}: some parts have forces and some do not")
        forces = None
        force_unit = parts[0].force_unit
        if all(with_forces):
            forces = np.concatenate([convert_force(p.forces, p.force_unit, force_unit) for p in parts])
        descriptions: dict[str, str] = {}
        for p in reversed(parts):
            descriptions.update(p.descriptions)
        return cls(
            Z=np.concatenate([p.Z for p in parts]),
            R=np.concatenate([p.R for p in parts]),
            n_atoms=np.concatenate([p.n_atoms for p in parts]),
            targets={k: np.concatenate([p.targets[k] for p in parts]) for k in keys},
            units=parts[0].units,
            ids=np.concatenate([p.ids for p in parts]),
            name=name or parts[0].name,
            forces=forces,
            force_unit=force_unit,
            charge=np.concatenate([p.charge for p in parts]),
            multiplicity=np.concatenate([p.multiplicity for p in parts]),
            periodic=np.concatenate([p.periodic for p in parts]),
            descriptions=descriptions,
        )

    def __repr__(self) -> str:
        targets = ", ".join(f"{k} [{self.units[k]}]" for k in self.targets)
        forces = f", forces [{self.force_unit}]" if self.forces is not None else ""
        return (
            f"Molecules({self.name!r}, {len(self)} molecules, {len(self.Z)} atoms, "
            f"targets: {targets or 'none'}{forces})"
        )


# ---------------------------------------------------------------------------- reading ase.Atoms
def _scalar(value, label: str, key: str) -> float | None:
    """``value`` as a float; None if absent; an error if present but not a number."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bool, np.bool_)):
        raise DataFormatError(f"{label}: {key} is {value!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{label}: {key} is {value!r}, not a number") from None


def _value(atoms: ase.Atoms, key: str, label: str) -> float | None:
    """``info[key]``, else the calculator's result ``key``; None if neither exists."""
    value = atoms.info.get(key)
    if value is None and atoms.calc is not None:
        value = getattr(atoms.calc, "results", {}).get(key)
    return _scalar(value, label, key)


def frame_charge(atoms: ase.Atoms, label: str) -> float:
    """Net charge of ``atoms`` as stated (``info["charge"]`` or nonzero initial charges), else NaN."""
    charge = _scalar(atoms.info.get("charge"), label, "charge")
    if charge is None and "initial_charges" in atoms.arrays:
        net = float(atoms.arrays["initial_charges"].sum())
        if abs(net) > 1e-3:
            charge = float(round(net)) if abs(net - round(net)) < 1e-3 else net
    if charge is not None and not math.isfinite(charge):
        raise DataFormatError(f"{label}: charge is {charge}")
    return np.nan if charge is None else charge


def frame_multiplicity(atoms: ase.Atoms, label: str) -> float:
    """Spin multiplicity 2S+1 from ``info["multiplicity"]`` or ``info["spin"]``, else NaN."""
    for key in ("multiplicity", "spin"):
        value = _scalar(atoms.info.get(key), label, key)
        if value is None:
            continue
        if not math.isfinite(value) or value < 1 or value != round(value):
            raise DataFormatError(
                f"{label}: {key} {value:g} is not a spin multiplicity 2S+1 = 1, 2, 3, ... "
                "(info 'spin' is read as 2S+1, not S)"
            )
        return value
    return np.nan


def collect_frames(
    frames: Sequence[ase.Atoms],
    labels: Sequence[str],
    targets: Mapping[str, str | None] | None,
    unit: str | None,
    force_unit: str | None,
    strict: bool,
    forces_key: str = "forces",
) -> dict:
    """The `Molecules` fields (all but ``ids`` and ``name``) of a list of ``ase.Atoms``.

    ``labels[i]`` names frame ``i`` in error messages. With ``strict``, a target ``"energy"`` or
    forces present in some frames but not in others, and malformed forces, are errors; otherwise
    they are left out. Forces are read from ``atoms.arrays[forces_key]`` (and, for ``"forces"``,
    from the calculator).
    """
    n = len(frames)
    e_unit = energy_unit(unit) if unit is not None else "eV"
    f_unit = normalize_force_unit(force_unit) if force_unit is not None else f"{e_unit}/Å"
    n_atoms = np.fromiter((len(a) for a in frames), dtype=np.int64, count=n)
    empty = np.flatnonzero(n_atoms == 0)
    if len(empty):
        raise DataFormatError(f"{labels[empty[0]]}: contains no atoms")
    Z = np.concatenate([a.numbers for a in frames])
    R = np.concatenate([a.positions for a in frames])
    charge = np.array([frame_charge(a, lab) for a, lab in zip(frames, labels)], dtype=np.float64)
    multiplicity = np.array([frame_multiplicity(a, lab) for a, lab in zip(frames, labels)], dtype=np.float64)
    periodic = np.array(
        [bool(np.any(a.pbc & (np.abs(a.cell.array).sum(axis=1) > 0))) for a in frames], dtype=bool
    )

    values: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    wanted = {"energy": None} if targets is None else dict(targets)
    for key, key_unit in wanted.items():
        column = [_value(a, key, lab) for a, lab in zip(frames, labels)]
        missing = [i for i, v in enumerate(column) if v is None]
        if missing:
            if targets is None and (len(missing) == n or not strict):
                continue  # the automatic energy target: absent, or dropped when partial
            what = "an energy" if key == "energy" else f"a value {key!r}"
            raise DataFormatError(
                f"{labels[missing[0]]}: has no {key!r} (in atoms.info or the calculator), but "
                f"{n - len(missing)} of {n} molecules have {what}"
            )
        arr = np.array(column, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            raise DataFormatError(f"{labels[bad[0]]}: {key} is {arr[bad[0]]}")
        values[key] = arr
        units[key] = unit_name(key_unit) if key_unit is not None else e_unit

    per_frame = []
    for a, lab in zip(frames, labels):
        f = a.arrays.get(forces_key)
        if f is None and a.calc is not None and forces_key == "forces":
            f = getattr(a.calc, "results", {}).get("forces")
        if f is not None:
            f = np.asarray(f, dtype=np.float64)
            if f.shape != (len(a), 3) or not np.isfinite(f).all():
                if not strict:
                    f = None  # unusable forces are left out when reading leniently
                elif f.shape != (len(a), 3):
                    raise DataFormatError(f"{lab}: forces have shape {f.shape}, expected {(len(a), 3)}")
                else:
                    raise DataFormatError(f"{lab}: forces hold NaN or infinite values")
        per_frame.append(f)
    missing = [i for i, f in enumerate(per_frame) if f is None]
    forces = None
    if not missing:
        forces = np.concatenate(per_frame)
    elif strict and len(missing) < n:
        raise DataFormatError(
            f"{labels[missing[0]]}: has no forces, but {n - len(missing)} of {n} molecules have forces"
        )
    return dict(
        Z=Z,
        R=R,
        n_atoms=n_atoms,
        targets=values,
        units=units,
        forces=forces,
        force_unit=f_unit if forces is not None else None,
        charge=charge,
        multiplicity=multiplicity,
        periodic=periodic,
    )


def as_molecules(X: Molecules | ase.Atoms | Iterable[ase.Atoms]) -> Molecules:
    """`Molecules` as given, or built from one ``ase.Atoms`` or a sequence of them (what
    scikit-learn's CV indexing yields, and what users hold). Positions in Å."""
    if isinstance(X, Molecules):
        return X
    if isinstance(X, ase.Atoms):
        return Molecules.from_atoms([X], targets={}, name=X.get_chemical_formula())
    try:
        atoms = list(X)
    except TypeError:
        raise DataFormatError(
            f"expected Molecules or a sequence of ase.Atoms, got {type(X).__name__}"
        ) from None
    if not atoms or not all(isinstance(a, ase.Atoms) for a in atoms):
        raise DataFormatError("expected Molecules or a non-empty sequence of ase.Atoms")
    return Molecules.from_atoms(atoms, targets={})
