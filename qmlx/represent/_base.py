"""Shared plumbing of the representations: errors and Coulomb matrices."""

from __future__ import annotations

import numpy as np

from qmlx.data.molecules import Molecules
from qmlx.errors import QmlxError
from qmlx.units import ANGSTROM_TO_BOHR

#: molecules per block when building padded matrices, so memory stays bounded on large sets
BLOCK_MOLECULES = 2048


class RepresentationError(QmlxError, ValueError):
    """Molecules do not fit a fitted representation (too many atoms, unseen elements, ...)."""


class FittedState:
    """What every representation offers besides ``fit``/``transform``: its fitted state as plain
    arrays (what a model file stores), the atoms each feature comes from, and a check that new
    molecules fit.

    Subclasses implement `fitted_state`, `set_fitted_state` and `check_fits`; those whose features
    map onto atoms implement `feature_atoms` (and `feature_groups` where equal features may be
    told apart only by their order).
    """

    def fitted_state(self) -> dict[str, np.ndarray]:
        """The learned state as named numpy arrays (e.g. ``n_max``, ``bags``)."""
        raise NotImplementedError

    def set_fitted_state(self, state: dict[str, np.ndarray]):
        """Restore the state `fitted_state` returned; returns ``self``."""
        raise NotImplementedError

    @classmethod
    def from_fitted_state(cls, params: dict, state: dict[str, np.ndarray]):
        """A fitted transformer from its constructor ``params`` and `fitted_state`."""
        return cls(**params).set_fitted_state(state)

    def check_fits(self, mols: Molecules) -> None:
        """Raise `RepresentationError` naming the first molecule of ``mols`` the fitted layout cannot
        hold (more atoms than ``n_max``, an unseen element, an overfull bag)."""
        raise NotImplementedError

    def known_elements(self) -> list[int] | None:
        """The nuclear charges the fitted layout holds, or ``None`` if it holds any."""
        return None

    def feature_atoms(self, mols: Molecules) -> np.ndarray:
        """(n_mol, n_features, 2) atom indices (within each molecule) each feature is made of:
        ``[a, a]`` for a diagonal (one-atom) entry, ``[a, b]`` for a pair, ``[-1, -1]`` for padding."""
        raise RepresentationError(f"{type(self).__name__} features do not map onto atoms one to one")

    def feature_groups(self) -> np.ndarray | None:
        """(n_features,) group of each feature within which equal values are told apart by their
        order only (Bag of Bonds: the bag), or ``None``."""
        return None


def where(mols: Molecules, i: int) -> str:
    """``"name: molecule i"`` (or the name alone for a one-molecule set), for messages."""
    return f"{mols.name}: molecule {i}" if len(mols) > 1 else mols.name


def coulomb_matrices(mols: Molecules, n_max: int | None = None) -> np.ndarray:
    """Zero-padded Coulomb matrices (Rupp et al., PRL 108, 058301, 2012) in atomic units.

    ``M_ii = 0.5 Z_i^2.4`` and ``M_ij = Z_i Z_j / |R_i - R_j|`` with distances in Bohr (the
    positions of `Molecules` are in Å and are converted here). Rows and columns follow the atom
    order of each molecule; padding rows and columns are zero.

    Returns
    -------
    (n_molecules, n_max, n_max) float64 array, in Hartree-like atomic units (e^2/Bohr).
    """
    n_max = mols.max_atoms if n_max is None else int(n_max)
    if mols.max_atoms > n_max:
        big = int(np.argmax(mols.n_atoms))
        raise RepresentationError(
            f"{mols.name}: molecule {big} has {mols.max_atoms} atoms, but this representation holds "
            f"at most {n_max}"
        )
    Z, R, mask = mols.padded(n_max)
    out = np.empty((len(mols), n_max, n_max), dtype=np.float64)
    diag = np.arange(n_max)
    for lo in range(0, len(mols), BLOCK_MOLECULES):
        sl = slice(lo, lo + BLOCK_MOLECULES)
        z = Z[sl].astype(np.float64)
        r = R[sl] * ANGSTROM_TO_BOHR
        pair = mask[sl, :, None] & mask[sl, None, :]
        pair[:, diag, diag] = False
        dist = np.sqrt(((r[:, :, None, :] - r[:, None, :, :]) ** 2).sum(-1))
        if (dist[pair] == 0).any():
            mol = lo + int(np.argmax((pair & (dist == 0)).any(axis=(1, 2))))
            raise RepresentationError(f"{mols.name}: molecule {mol} has two atoms at the same position")
        m = np.zeros_like(dist)
        np.divide(z[:, :, None] * z[:, None, :], dist, out=m, where=pair)
        m[:, diag, diag] = 0.5 * z**2.4
        out[sl] = m
    return out


def triangle_index(n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)``, ``j <= i``, of the lower triangle, row by row.

    In this order a molecule with ``n`` atoms (in the first ``n`` rows of a padded, sorted
    matrix) fills exactly the first ``n (n + 1) / 2`` features and is zero after them.
    """
    return np.tril_indices(n_max)


def flatten_matrices(M: np.ndarray, flatten: str) -> np.ndarray:
    """(n, n_max, n_max) -> (n, n_max (n_max + 1) / 2) for ``"triangle"``, (n, n_max^2) for ``"full"``."""
    if flatten == "triangle":
        i, j = triangle_index(M.shape[-1])
        return np.ascontiguousarray(M[..., i, j])
    if flatten == "full":
        return M.reshape(*M.shape[:-2], -1).copy()
    raise ValueError(f"flatten must be 'triangle' or 'full', got {flatten!r}")
