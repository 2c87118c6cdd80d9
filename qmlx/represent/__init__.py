"""Molecular representations for the kernel path, as scikit-learn transformers.

All take **X = a `qmlx.data.Molecules` object** (positions in Å; converted to Bohr inside) or a
sequence of ``ase.Atoms``, and return float64 numpy arrays in atomic units:

=========================  ==============================================  ===========================
name (`make_representation`)  class                                      output shape
=========================  ==============================================  ===========================
``cm``                     `CoulombMatrix`                                 (n, n_max (n_max + 1) / 2)
``sorted-cm``              `SortedCoulombMatrix`                           (n, n_max (n_max + 1) / 2)
``eigenspectrum``          `Eigenspectrum`                                 (n, n_max)
``random-cm``              `RandomCoulombMatrix`                           (n, n_samples, n_features)
``bob``                    `BagOfBonds`                                    (n, sum of bag sizes)
=========================  ==============================================  ===========================
"""

from __future__ import annotations

from qmlx.represent._base import RepresentationError, coulomb_matrices
from qmlx.represent.bob import BagOfBonds
from qmlx.represent.coulomb import (
    CoulombMatrix,
    Eigenspectrum,
    RandomCoulombMatrix,
    SortedCoulombMatrix,
    sort_by_row_norm,
)

REPRESENTATIONS = {
    "cm": CoulombMatrix,
    "sorted-cm": SortedCoulombMatrix,
    "eigenspectrum": Eigenspectrum,
    "random-cm": RandomCoulombMatrix,
    "bob": BagOfBonds,
}


def make_representation(name: str, **params):
    """A new, unfitted transformer by its short name (see `REPRESENTATIONS`)."""
    try:
        cls = REPRESENTATIONS[name]
    except KeyError:
        raise RepresentationError(
            f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}"
        ) from None
    return cls(**params)


__all__ = [
    "BagOfBonds",
    "CoulombMatrix",
    "Eigenspectrum",
    "RandomCoulombMatrix",
    "SortedCoulombMatrix",
    "REPRESENTATIONS",
    "RepresentationError",
    "coulomb_matrices",
    "make_representation",
    "sort_by_row_norm",
]
