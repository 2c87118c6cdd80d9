"""qmlx: machine learning for quantum chemistry that explains what it learned."""

from qmlx.data import Molecules, load_dataset, load_qm7, load_qm9, read_molecules

__version__ = "0.1.0"
__all__ = ["Molecules", "load_dataset", "load_qm7", "load_qm9", "read_molecules", "__version__"]
