"""Molecules, data set loaders, user data import and the HDF5 store."""

from qmlx.data.io import import_molecules, load_dataset, read_molecules
from qmlx.data.molecules import Molecules, as_molecules
from qmlx.data.qm7 import load_qm7
from qmlx.data.qm9 import load_qm9
from qmlx.data.store import load_molecules, save_molecules

__all__ = [
    "Molecules",
    "as_molecules",
    "import_molecules",
    "load_dataset",
    "load_qm7",
    "load_qm9",
    "load_molecules",
    "read_molecules",
    "save_molecules",
]
