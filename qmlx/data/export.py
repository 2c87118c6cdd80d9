"""Writing molecules, and what models say of them, in files other tools read: extxyz and ASE
databases.

ASE's conventions hold: energies in eV, forces in eV/Å, positions in Å. A molecule's energy goes
into a ``SinglePointCalculator`` (``atoms.get_potential_energy()`` reads it back) and per-atom
values into ``atoms.arrays`` (extxyz columns; an ASE database keeps them in ``row.data``). Every
other number is written in its own unit and says which: a value ``key`` comes with a string
``key_unit`` beside it (``"energy_kcal_mol": -512.3`` needs none: the unit is in its name).
An ASE database also records the units of its properties in its metadata, the way schnetpack's
databases do (``_property_unit_dict``), so `qmlx.data.import_molecules` reads them back unchanged.

Every file is written to a temporary file first and then moved into place (`qmlx._io.atomic_path`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import ase
import numpy as np

from qmlx._io import atomic_path
from qmlx.data.molecules import Molecules
from qmlx.errors import DataFormatError
from qmlx.units import ENERGY_UNITS, convert_energy

#: file suffixes `write_frames` writes
EXPORT_SUFFIXES = (".extxyz", ".xyz", ".db")


def check_export_path(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` if its suffix is one `write_frames` writes, else a `DataFormatError` naming it."""
    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise DataFormatError(
            f"{option} {path}: write .extxyz or .db (ASE's extended xyz or database), not {path.suffix or 'no suffix'}"
        )
    return path


class FrameWriter:
    """Writes frames to an extxyz file or ASE database in batches, atomically: everything goes to a
    temporary file that replaces ``path`` when the ``with`` block ends without an error (and is
    deleted otherwise). ``units`` (property -> unit) goes into a database's metadata as
    ``_property_unit_dict``. For a database, each frame's numeric and text ``info`` entries become
    key-value pairs, its ``arrays`` beyond positions and numbers (and its ``id``) go into ``data``.

        with FrameWriter("out.extxyz") as out:
            out.write(frames)
    """

    def __init__(self, path: str | os.PathLike, units: dict[str, str] | None = None) -> None:
        self.path = check_export_path(path)
        self.units = dict(units or {})
        self.db = self.path.suffix.lower() == ".db"

    def __enter__(self) -> FrameWriter:
        import ase.db

        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        if self.db:
            self._tmp.unlink()  # ASE creates the database itself
            self._conn = ase.db.connect(self._tmp, type="db")
            self._conn.__enter__()
        else:
            self._fh = open(self._tmp, "w")
        return self

    def write(self, frames: Sequence[ase.Atoms]) -> None:
        import ase.io

        if not self.db:
            if frames:
                ase.io.write(self._fh, list(frames), format="extxyz")
            return
        with warnings.catch_warnings():
            # ASE warns of keys that read as formulas (U0, H); they are stored all the same
            warnings.filterwarnings("ignore", message="It is best not to use keys", category=UserWarning)
            for atoms in frames:
                self._conn.write(
                    _plain_atoms(atoms), key_value_pairs=_key_values(atoms.info), data=_data(atoms)
                )

    def __exit__(self, kind, value, tb) -> None:
        try:
            if self.db:
                if kind is None:
                    self._conn.metadata = {"_property_unit_dict": self.units, "_distance_unit": "Ang"}
                self._conn.__exit__(kind, value, tb)
            else:
                self._fh.close()
        finally:
            self._atomic.__exit__(kind, value, tb)


def write_frames(
    path: str | os.PathLike, frames: Sequence[ase.Atoms], units: dict[str, str] | None = None
) -> Path:
    """Write ``frames`` to ``path`` (``.extxyz``/``.xyz``: extended xyz; ``.db``: an ASE database)
    atomically (see `FrameWriter`)."""
    with FrameWriter(path, units) as out:
        out.write(frames)
    return out.path


def _plain_atoms(atoms: ase.Atoms) -> ase.Atoms:
    """A copy with numbers, positions and the calculator only (the rest goes to key-value pairs and data)."""
    plain = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, pbc=atoms.pbc, cell=atoms.cell)
    plain.calc = atoms.calc
    return plain


def _key_values(info: dict) -> dict:
    """The numbers, flags and texts of ``info`` that an ASE database takes as key-value pairs (its
    reserved names, such as ``id`` and ``charge``, go to ``data`` instead; see `_data`)."""
    from ase.db.core import reserved_keys

    out = {}
    for key, value in info.items():
        if key in reserved_keys:
            continue
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
            out[key] = value.item() if hasattr(value, "item") else value
        elif isinstance(value, str):
            out[key] = value
    return out


def _data(atoms: ase.Atoms) -> dict:
    from ase.db.core import reserved_keys

    out = {k: np.asarray(v) for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    out.update(
        {k: v if isinstance(v, str) else np.asarray(v) for k, v in atoms.info.items() if k in reserved_keys}
    )
    return out


def export_molecules(mols: Molecules, path: str | os.PathLike) -> Path:
    """Write ``mols`` with their targets, forces, charge and multiplicity to an extxyz file or ASE
    database that `qmlx.data.import_molecules` reads back to the same numbers and units.

    A target ``energy`` in an energy unit goes into the calculator in eV (ASE's convention), with
    the unit the set keeps it in as ``qmlx_energy_unit``; every other target stays in ``info`` in its
    own unit, with ``<key>_unit`` beside it. Forces are written in eV/Å, with the set's force unit
    as ``qmlx_force_unit``. Reading the file back restores both units.
    """
    frames = []
    units: dict[str, str] = {}
    for i in range(len(mols)):
        atoms = mols[i]  # targets (own units), charge, multiplicity in info; forces (eV/Å) in a calculator
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        for key, unit in mols.units.items():
            if key == "energy" and unit in ENERGY_UNITS:
                results["energy"] = float(convert_energy(atoms.info.pop("energy"), unit, "eV"))
                atoms.info["qmlx_energy_unit"] = unit
                units["energy"] = "eV"
            else:
                atoms.info[f"{key}_unit"] = unit
                units[key] = unit
        if "forces" in results:
            units["forces"] = "eV/Ang"
            atoms.info["qmlx_force_unit"] = mols.force_unit
        _attach(atoms, results)
        frames.append(atoms)
    return write_frames(path, frames, units)


def _attach(atoms: ase.Atoms, results: dict) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = SinglePointCalculator(atoms, **results) if results else None


def result_frames(
    mols: Molecules,
    energy: np.ndarray | None = None,
    atom_values: dict[str, np.ndarray] | None = None,
    info: dict[str, Sequence] | None = None,
) -> list[ase.Atoms]:
    """One ``ase.Atoms`` per molecule carrying a model's results, in ASE's conventions.

    energy : (n_mol,) kcal/mol, or None; a finite value goes into the calculator in eV and into
        ``info["energy_kcal_mol"]``.
    atom_values : name -> (n_atoms_total,) per-atom values for ``atoms.arrays``; a name ending in
        ``_kcal_mol`` is an energy, also written in eV under the name without that ending.
    info : name -> per-molecule values for ``atoms.info`` (None entries are left out).
    """
    frames = []
    for i in range(len(mols)):
        lo, hi = mols.offsets[i], mols.offsets[i + 1]
        atoms = ase.Atoms(numbers=mols.Z[lo:hi], positions=mols.R[lo:hi])
        atoms.info["id"] = mols.ids[i].item() if hasattr(mols.ids[i], "item") else mols.ids[i]
        if np.isfinite(mols.charge[i]):
            atoms.info["charge"] = float(mols.charge[i])
        for key, values in (info or {}).items():
            if values[i] is not None:
                atoms.info[key] = values[i]
        results = {}
        if energy is not None and np.isfinite(energy[i]):
            atoms.info["energy_kcal_mol"] = float(energy[i])
            results["energy"] = float(convert_energy(energy[i], "kcal/mol", "eV"))
        for key, values in (atom_values or {}).items():
            part = np.asarray(values[lo:hi], dtype=np.float64)
            if not np.isfinite(part).any():
                continue
            atoms.arrays[key] = part
            if key.endswith("_kcal_mol"):
                atoms.arrays[key.removesuffix("_kcal_mol")] = convert_energy(part, "kcal/mol", "eV")
        _attach(atoms, results)
        frames.append(atoms)
    return frames
