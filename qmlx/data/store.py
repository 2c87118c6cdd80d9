"""HDF5 store for `Molecules` (h5py).

Layout of a file (schema ``qmlx.molecules``, version `SCHEMA_VERSION`):

- root attributes ``schema``, ``schema_version``, ``name``, ``qmlx_version``
- ``Z`` (n_atoms_total,) int8-int64, ``R`` (n_atoms_total, 3) float64 in Å, ``n_atoms`` (n_mol,)
- ``ids`` (n_mol,) integers or UTF-8 strings
- ``targets/<name>`` (n_mol,) float64 with attributes ``unit`` and ``description`` (may be empty)
- optional ``folds/<k>/train`` and ``folds/<k>/test`` index arrays
- ``charge`` (n_mol,) float64 (NaN: not stated), ``multiplicity`` (n_mol,) float64 (NaN: not
  stated), ``periodic`` (n_mol,) int8 0/1
- optional ``forces`` (n_atoms_total, 3) float64 with attribute ``unit`` (e.g. ``"eV/Å"``)

Version 1 files (no charge, multiplicity, periodic, forces or descriptions) are still read; those
fields then take their defaults (NaN, NaN, False, none, none).

Writes go to a temporary file in the same folder, renamed into place with ``os.replace``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from qmlx._io import atomic_path
from qmlx.data.molecules import Molecules
from qmlx.errors import DataFormatError

SCHEMA = "qmlx.molecules"
SCHEMA_VERSION = 2
#: schema versions `load_molecules` reads
READABLE_VERSIONS = (1, 2)


def save_molecules(path: str | os.PathLike, molecules: Molecules, **attrs) -> Path:
    """Write ``molecules`` to ``path`` atomically (schema version `SCHEMA_VERSION`); extra
    ``attrs`` become root attributes."""
    from qmlx import __version__

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            schema=SCHEMA, schema_version=SCHEMA_VERSION, name=molecules.name, qmlx_version=__version__
        )
        f.attrs.update(attrs)
        f.create_dataset("Z", data=molecules.Z.astype(np.int16))
        f.create_dataset("R", data=molecules.R)
        f.create_dataset("n_atoms", data=molecules.n_atoms.astype(np.int32))
        ids = molecules.ids
        if ids.dtype.kind in "UOS":
            f.create_dataset("ids", data=ids.astype(str).astype(object), dtype=h5py.string_dtype())
        else:
            f.create_dataset("ids", data=ids)
        group = f.create_group("targets")
        for key, values in molecules.targets.items():
            dataset = group.create_dataset(key, data=values)
            dataset.attrs["unit"] = molecules.units[key]
            dataset.attrs["description"] = molecules.descriptions.get(key, "")
        f.create_dataset("charge", data=molecules.charge)
        f.create_dataset("multiplicity", data=molecules.multiplicity)
        f.create_dataset("periodic", data=molecules.periodic.astype(np.int8))
        if molecules.forces is not None:
            f.create_dataset("forces", data=molecules.forces).attrs["unit"] = molecules.force_unit
        for k, (train, test) in enumerate(molecules.folds or []):
            f.create_dataset(f"folds/{k}/train", data=train)
            f.create_dataset(f"folds/{k}/test", data=test)
    return path


def is_qmlx_hdf5(path: str | os.PathLike) -> bool:
    """True if ``path`` is an HDF5 file (by its signature), whatever its schema."""
    try:
        return h5py.is_hdf5(path)
    except (OSError, TypeError):
        return False


def load_molecules(path: str | os.PathLike) -> Molecules:
    """Read a file written by `save_molecules`; a wrong schema or a corrupt file is an error."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if not is_qmlx_hdf5(path):
        raise DataFormatError(f"{path}: not an HDF5 file (no HDF5 signature; corrupt or another format)")
    try:
        with h5py.File(path, "r") as f:
            schema, version = f.attrs.get("schema"), f.attrs.get("schema_version")
            if schema != SCHEMA:
                raise DataFormatError(f"{path}: not a qmlx molecules file (schema {schema!r})")
            if version not in READABLE_VERSIONS:
                raise DataFormatError(
                    f"{path}: schema version {version}, but this qmlx reads versions "
                    f"{', '.join(map(str, READABLE_VERSIONS))}"
                )
            ids = f["ids"][()]
            if ids.dtype.kind == "O":
                ids = ids.astype(str)
            targets = {k: d[()] for k, d in f["targets"].items()}
            units = {k: str(d.attrs["unit"]) for k, d in f["targets"].items()}
            descriptions = {
                k: str(d.attrs["description"]) for k, d in f["targets"].items() if d.attrs.get("description")
            }
            optional = {
                key: f[key][()] if key in f else None for key in ("charge", "multiplicity", "periodic")
            }
            forces = f["forces"][()] if "forces" in f else None
            force_unit = str(f["forces"].attrs["unit"]) if "forces" in f else None
            folds = None
            if "folds" in f:
                folds = [
                    (f[f"folds/{k}/train"][()], f[f"folds/{k}/test"][()]) for k in sorted(f["folds"], key=int)
                ]
            return Molecules(
                Z=f["Z"][()],
                R=f["R"][()],
                n_atoms=f["n_atoms"][()],
                targets=targets,
                units=units,
                ids=ids,
                folds=folds,
                name=str(f.attrs.get("name", path)),
                forces=forces,
                force_unit=force_unit,
                descriptions=descriptions,
                **optional,
            )
    except DataFormatError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError on truncated or tampered files
        raise DataFormatError(f"{path}: corrupt or unreadable HDF5 file ({err})") from None
