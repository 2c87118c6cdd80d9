"""qmlx: machine learning for quantum chemistry that explains what it learned.

The names below are imported on first use (PEP 562), so that ``import qmlx`` and the ``qmlx``
command start without loading NumPy, PyTorch or SciPy:

- `Molecules`, `load_dataset`, `load_qm7`, `load_qm9`, `read_molecules` from `qmlx.data`;
- `load_model` from `qmlx.models`.

Explanations are ``from qmlx.explain import explain``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


def _version() -> str:
    """The installed version (``importlib.metadata``), or ``0+unknown`` when qmlx runs from a
    source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qmlx")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

#: public name -> module it comes from
_LAZY = {
    "Molecules": "qmlx.data",
    "load_dataset": "qmlx.data",
    "load_qm7": "qmlx.data",
    "load_qm9": "qmlx.data",
    "read_molecules": "qmlx.data",
    "load_model": "qmlx.models",
}

__all__ = [
    "Molecules",
    "load_dataset",
    "load_model",
    "load_qm7",
    "load_qm9",
    "read_molecules",
    "__version__",
]

if TYPE_CHECKING:
    from qmlx.data import Molecules, load_dataset, load_qm7, load_qm9, read_molecules
    from qmlx.models import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
