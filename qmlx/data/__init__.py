"""Molecules, data set loaders and the HDF5 store."""

from qmlx.data.molecules import Molecules
from qmlx.data.qm7 import load_qm7
from qmlx.data.qm9 import load_qm9
from qmlx.data.store import load_molecules, save_molecules

__all__ = ["Molecules", "load_qm7", "load_qm9", "load_molecules", "save_molecules"]
