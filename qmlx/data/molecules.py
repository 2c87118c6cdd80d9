"""`Molecules`: one ragged container for a set of molecules of different sizes.

Atoms of all molecules are stored flat, molecule after molecule:

- ``Z``        (n_atoms_total,)    int64 nuclear charges
- ``R``        (n_atoms_total, 3)  float64 positions in **Å**
- ``n_atoms``  (n_molecules,)      int64 atoms per molecule
- ``targets``  name -> (n_molecules,) float64 array, with its unit in ``units[name]``
- ``ids``      (n_molecules,)      identifiers (e.g. QM7 row or QM9 index)

Everything derived (offsets, molecule index per atom, padded arrays) is computed with numpy in
one shot; nothing loops over atoms in Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike

import ase
import numpy as np
from ase.data import chemical_symbols

from qmlx.errors import DataFormatError

MAX_Z = len(chemical_symbols) - 1


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
    """

    Z: np.ndarray
    R: np.ndarray
    n_atoms: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    ids: np.ndarray | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None
    name: str = "molecules"

    def __post_init__(self) -> None:
        self.Z = np.ascontiguousarray(self.Z, dtype=np.int64).reshape(-1)
        self.R = np.ascontiguousarray(self.R, dtype=np.float64)
        self.n_atoms = np.ascontiguousarray(self.n_atoms, dtype=np.int64).reshape(-1)
        self.targets = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in self.targets.items()}
        self.units = dict(self.units)
        n_mol = len(self.n_atoms)
        self.ids = np.arange(n_mol) if self.ids is None else np.asarray(self.ids)
        self._validate()

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
        from qmlx.units import convert_energy

        return convert_energy(self.targets[key], self.units[key], unit)

    def composition(self) -> dict[str, int]:
        """Element symbol -> number of atoms over the whole set, in order of Z."""
        zs, counts = np.unique(self.Z, return_counts=True)
        return {chemical_symbols[z]: int(c) for z, c in zip(zs, counts)}

    # ------------------------------------------------------------------ indexing
    def subset(self, index: Sequence[int] | np.ndarray | slice) -> Molecules:
        """Molecules at ``index`` (slice, integer array or boolean mask), in that order."""
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
        lo, hi = self.offsets[i], self.offsets[i + 1]
        atoms = ase.Atoms(numbers=self.Z[lo:hi], positions=self.R[lo:hi])
        atoms.info.update({k: float(v[i]) for k, v in self.targets.items()})
        atoms.info["id"] = self.ids[i].item() if hasattr(self.ids[i], "item") else self.ids[i]
        return atoms

    def __iter__(self) -> Iterator[ase.Atoms]:
        for i in range(len(self)):
            yield self._atoms(i)

    def to_atoms(self) -> list[ase.Atoms]:
        """All molecules as ``ase.Atoms`` (positions in Å; targets in ``atoms.info``)."""
        return list(self)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_atoms(
        cls,
        atoms_list: Sequence[ase.Atoms],
        targets: Mapping[str, str] | None = None,
        name: str = "molecules",
    ) -> Molecules:
        """Build from ``ase.Atoms`` objects.

        ``targets`` maps names in ``atoms.info`` to their units, e.g. ``{"energy": "eV"}``; if
        omitted, the calculator energy (eV, ASE's unit) is used as target ``"energy"`` when
        every molecule has one.
        """
        atoms_list = list(atoms_list)
        if not atoms_list:
            raise DataFormatError(f"{name}: contains no molecules")
        n_atoms = np.array([len(a) for a in atoms_list])
        Z = np.concatenate([a.numbers for a in atoms_list])
        R = np.concatenate([a.positions for a in atoms_list])
        values: dict[str, np.ndarray] = {}
        units: dict[str, str] = {}
        if targets:
            for key, unit in targets.items():
                try:
                    values[key] = np.array([float(a.info[key]) for a in atoms_list])
                except (KeyError, TypeError, ValueError):
                    raise DataFormatError(
                        f"{name}: not every molecule has a numeric {key!r} in its info"
                    ) from None
                units[key] = unit
        elif all(a.calc is not None and "energy" in a.calc.results for a in atoms_list):
            values["energy"] = np.array([a.calc.results["energy"] for a in atoms_list])
            units["energy"] = "eV"
        ids = [a.info.get("id", i) for i, a in enumerate(atoms_list)]
        return cls(Z=Z, R=R, n_atoms=n_atoms, targets=values, units=units, ids=np.asarray(ids), name=name)

    @classmethod
    def read(
        cls,
        path: str | PathLike,
        format: str | None = None,
        targets: Mapping[str, str] | None = None,
    ) -> Molecules:
        """Read every molecule in a file that ASE can read (xyz, extxyz, sdf, ASE db, ...).

        Positions are taken in Å, ASE's unit. Any problem raises `DataFormatError` naming the
        file.
        """
        import ase.io

        from qmlx.data.store import is_qmlx_hdf5, load_molecules

        path = str(path)
        if is_qmlx_hdf5(path) or path.lower().endswith((".h5", ".hdf5")):
            return load_molecules(path)
        try:
            atoms_list = ase.io.read(path, index=":", format=format)
        except FileNotFoundError:
            raise DataFormatError(f"{path}: no such file") from None
        except KeyError as err:  # ASE's lookup of a chemical symbol
            raise DataFormatError(f"{path}: unknown element symbol or field {err}") from None
        except Exception as err:  # ASE raises many kinds of errors on malformed input
            reason = str(err) or type(err).__name__
            raise DataFormatError(f"{path}: cannot read molecules: {reason}") from None
        if isinstance(atoms_list, ase.Atoms):
            atoms_list = [atoms_list]
        if not atoms_list or any(len(a) == 0 for a in atoms_list):
            raise DataFormatError(f"{path}: contains no molecules (empty file or an empty frame)")
        return cls.from_atoms(atoms_list, targets=targets, name=path)

    @classmethod
    def concatenate(cls, parts: Sequence[Molecules], name: str | None = None) -> Molecules:
        """Join several sets; they must share target names and units."""
        parts = list(parts)
        keys = set(parts[0].targets)
        for p in parts[1:]:
            if set(p.targets) != keys or any(p.units[k] != parts[0].units[k] for k in keys):
                raise DataFormatError(f"cannot concatenate {p.name}: its targets or units differ")
        return cls(
            Z=np.concatenate([p.Z for p in parts]),
            R=np.concatenate([p.R for p in parts]),
            n_atoms=np.concatenate([p.n_atoms for p in parts]),
            targets={k: np.concatenate([p.targets[k] for p in parts]) for k in keys},
            units=parts[0].units,
            ids=np.concatenate([p.ids for p in parts]),
            name=name or parts[0].name,
        )

    def __repr__(self) -> str:
        targets = ", ".join(f"{k} [{self.units[k]}]" for k in self.targets)
        return (
            f"Molecules({self.name!r}, {len(self)} molecules, {len(self.Z)} atoms, "
            f"targets: {targets or 'none'})"
        )
