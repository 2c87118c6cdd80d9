"""Molecules, data set loaders, user data import and the HDF5 store.

The names below are imported on first use (PEP 562): ``from qmlx.data.splits import split`` does
not load SciPy, h5py or the QM9 reader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module it comes from
_LAZY = {
    "Molecules": "qmlx.data.molecules",
    "as_molecules": "qmlx.data.molecules",
    "import_molecules": "qmlx.data.io",
    "load_dataset": "qmlx.data.io",
    "read_molecules": "qmlx.data.io",
    "load_qm7": "qmlx.data.qm7",
    "load_qm9": "qmlx.data.qm9",
    "load_molecules": "qmlx.data.store",
    "save_molecules": "qmlx.data.store",
}

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

if TYPE_CHECKING:
    from qmlx.data.io import import_molecules, load_dataset, read_molecules
    from qmlx.data.molecules import Molecules, as_molecules
    from qmlx.data.qm7 import load_qm7
    from qmlx.data.qm9 import load_qm9
    from qmlx.data.store import load_molecules, save_molecules


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
