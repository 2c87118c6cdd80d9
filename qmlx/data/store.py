"""HDF5 store for `Molecules` (h5py).

Layout of a file (schema ``qmlx.molecules``, version `SCHEMA_VERSION`):

- root attributes ``schema``, ``schema_version``, ``name``, ``qmlx_version``
- ``Z`` (n_atoms_total,) int8-int64, ``R`` (n_atoms_total, 3) float64 in Å, ``n_atoms`` (n_mol,)
- ``ids`` (n_mol,) integers or UTF-8 strings
- ``targets/<name>`` (n_mol,) float64 with attribute ``unit``
- optional ``folds/<k>/train`` and ``folds/<k>/test`` index arrays

Writes go to a temporary file in the same folder, renamed into place with ``os.replace``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from qmlx.data.molecules import Molecules
from qmlx.data.paths import atomic_path
from qmlx.errors import DataFormatError

SCHEMA = "qmlx.molecules"
SCHEMA_VERSION = 1


def save_molecules(path: str | os.PathLike, molecules: Molecules, **attrs) -> Path:
    """Write ``molecules`` to ``path`` atomically; extra ``attrs`` become root attributes."""
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
            group.create_dataset(key, data=values).attrs["unit"] = molecules.units[key]
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
            if version != SCHEMA_VERSION:
                raise DataFormatError(
                    f"{path}: schema version {version}, but this qmlx reads version {SCHEMA_VERSION}"
                )
            ids = f["ids"][()]
            if ids.dtype.kind == "O":
                ids = ids.astype(str)
            targets = {k: d[()] for k, d in f["targets"].items()}
            units = {k: str(d.attrs["unit"]) for k, d in f["targets"].items()}
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
            )
    except DataFormatError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError on truncated or tampered files
        raise DataFormatError(f"{path}: corrupt or unreadable HDF5 file ({err})") from None
