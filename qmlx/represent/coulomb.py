"""Coulomb-matrix representations as scikit-learn transformers.

Every transformer takes **X = a `Molecules` object** (or a sequence of ``ase.Atoms``, which is
what scikit-learn's cross-validation hands over after indexing) and returns float64 numpy
arrays. ``fit`` only learns the padding size ``n_max_`` (the largest molecule seen, unless
``n_max`` is given); later molecules with more atoms raise `RepresentationError`.

References
----------
- Rupp, Tkatchenko, Müller, von Lilienfeld, PRL 108, 058301 (2012): Coulomb matrix, eigenspectrum.
- Montavon et al., NIPS 25 (2012): sorted and random Coulomb matrices.
- Hansen et al., JCTC 9, 3404 (2013): the three compared with kernel ridge regression.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.represent._base import (
    BLOCK_MOLECULES,
    FittedState,
    RepresentationError,
    coulomb_matrices,
    flatten_matrices,
    where,
)


def _rng(random_state) -> np.random.Generator | np.random.RandomState:
    """A numpy generator from a seed, a generator, a ``RandomState`` or ``None``."""
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    return np.random.default_rng(random_state)


class _CoulombBase(FittedState, TransformerMixin, BaseEstimator):
    """Learns ``n_max_`` in `fit`; subclasses implement `transform`."""

    def fit(self, X, y=None):
        """Learn the padding size from the molecules ``X`` (`Molecules`)."""
        mols = as_molecules(X)
        self.n_max_ = int(self.n_max) if self.n_max is not None else mols.max_atoms
        if mols.max_atoms > self.n_max_:
            raise RepresentationError(
                f"n_max={self.n_max} but {mols.name} has a molecule with {mols.max_atoms} atoms"
            )
        return self

    def fitted_state(self) -> dict[str, np.ndarray]:
        """``{"n_max": ()}``: the padding size."""
        return {"n_max": np.asarray(self.n_max_, dtype=np.int64)}

    def set_fitted_state(self, state: dict[str, np.ndarray]):
        self.n_max_ = int(np.asarray(state["n_max"]))
        return self

    def check_fits(self, mols: Molecules) -> None:
        if mols.max_atoms > self.n_max_:
            i = int(np.argmax(mols.n_atoms > self.n_max_))
            raise RepresentationError(
                f"{where(mols, i)}: {int(mols.n_atoms[i])} atoms, but this model's {type(self).__name__} "
                f"holds at most {self.n_max_}"
            )

    def _matrices(self, X) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "n_max_"):
            raise RepresentationError(f"{type(self).__name__} is not fitted yet; call fit first")
        mols = as_molecules(X)
        return coulomb_matrices(mols, self.n_max_), mols.n_atoms


def row_norm_order(M: np.ndarray) -> np.ndarray:
    """(n, n_max) row order of each matrix of ``M (n, n_max, n_max)`` by descending row L2 norm;
    padding rows (norm 0) last, ties in atom order."""
    norms = np.linalg.norm(M, axis=-1)
    return np.argsort(np.where(norms == 0, np.inf, -norms), axis=1, kind="stable")


def sort_by_row_norm(M: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """Permute rows and columns of each matrix by descending row L2 norm (plus optional noise).

    Parameters
    ----------
    M : (n, n_max, n_max) zero-padded matrices.
    noise : optional (n, L, n_max) values added to the row norms; gives (n, L, n_max, n_max).

    Padding rows (norm 0, and never perturbed) always stay last; ties keep the atom order.
    """
    n = np.arange(len(M))
    if noise is None:
        order = row_norm_order(M)
        return M[n[:, None, None], order[:, :, None], order[:, None, :]]
    norms = np.linalg.norm(M, axis=-1)
    key = np.where((norms == 0)[:, None, :], np.inf, -(norms[:, None, :] + noise))
    order = np.argsort(key, axis=2, kind="stable")
    return M[n[:, None, None, None], order[:, :, :, None], order[:, :, None, :]]


class CoulombMatrix(_CoulombBase):
    """Plain Coulomb matrix in the atom order of each molecule (not permutation invariant).

    Parameters
    ----------
    n_max : padding size; ``None`` learns the largest molecule in `fit`.
    flatten : ``"triangle"`` (lower triangle row by row, ``n_max (n_max + 1) / 2`` features) or
        ``"full"`` (``n_max^2`` features).

    ``transform`` returns an (n_molecules, n_features) float64 array in atomic units.
    """

    def __init__(self, n_max: int | None = None, flatten: str = "triangle"):
        self.n_max = n_max
        self.flatten = flatten

    def transform(self, X) -> np.ndarray:
        M, _ = self._matrices(X)
        return flatten_matrices(M, self.flatten)

    def _row_order(self, M: np.ndarray) -> np.ndarray:
        """(n_mol, n_max) the atom behind each row of the transformed matrices (the atom order)."""
        return np.broadcast_to(np.arange(M.shape[-1]), M.shape[:2])

    def feature_atoms(self, mols: Molecules) -> np.ndarray:
        """(n_mol, n_features, 2): entry ``M_ab`` is made of atoms ``a`` and ``b`` (``[a, a]`` on the
        diagonal, ``[-1, -1]`` for padding), in the layout `transform` gives."""
        M, _ = self._matrices(mols)
        pad = np.linalg.norm(M, axis=-1) == 0
        order = self._row_order(M)
        atom = np.where(np.take_along_axis(pad, order, axis=1), -1, order)
        n_max = M.shape[-1]
        if self.flatten == "triangle":
            i, j = np.tril_indices(n_max)
        else:
            i, j = (g.ravel() for g in np.meshgrid(np.arange(n_max), np.arange(n_max), indexing="ij"))
        a, b = atom[:, i], atom[:, j]
        pad_pair = (a < 0) | (b < 0)
        return np.stack([np.where(pad_pair, -1, a), np.where(pad_pair, -1, b)], axis=-1)


class SortedCoulombMatrix(CoulombMatrix):
    """Coulomb matrix with rows and columns sorted by descending row L2 norm (Rupp 2012; Hansen 2013).

    Same parameters as `CoulombMatrix`. With the default ``flatten="triangle"``, a molecule with
    ``n`` atoms fills exactly the first ``n (n + 1) / 2`` features (padding rows sort last), which
    `qmlx.kernels.distance_matrix` exploits to skip zeros. ``transform`` returns an
    (n_molecules, n_features) float64 array.
    """

    def transform(self, X) -> np.ndarray:
        M, _ = self._matrices(X)
        return flatten_matrices(sort_by_row_norm(M), self.flatten)

    def _row_order(self, M: np.ndarray) -> np.ndarray:
        """The order `sort_by_row_norm` gives: descending row norm, padding last, ties stable."""
        return row_norm_order(M)


class Eigenspectrum(_CoulombBase):
    """Eigenvalues of the Coulomb matrix, in descending order, zero-padded (Rupp et al. 2012).

    A molecule with ``n`` atoms has ``n`` eigenvalues; they fill the first ``n`` of the
    ``n_max`` features in descending order (negative ones included), zeros follow. ``transform``
    returns an (n_molecules, n_max) float64 array in atomic units.
    """

    def __init__(self, n_max: int | None = None):
        self.n_max = n_max

    def transform(self, X) -> np.ndarray:
        M, n_atoms = self._matrices(X)
        n_max = M.shape[-1]
        # put a large negative sentinel on padding diagonals: the matrix is block diagonal, so the
        # molecule's own eigenvalues are unchanged and the sentinels sort behind them
        pad = np.arange(n_max)[None, :] >= n_atoms[:, None]
        sentinel = -1e3 * (1.0 + np.abs(M).sum(axis=(1, 2)))
        idx = np.arange(n_max)
        M[:, idx, idx] = np.where(pad, sentinel[:, None], M[:, idx, idx])
        out = np.empty((len(M), n_max))
        for lo in range(0, len(M), BLOCK_MOLECULES):
            out[lo : lo + BLOCK_MOLECULES] = np.linalg.eigvalsh(M[lo : lo + BLOCK_MOLECULES])[:, ::-1]
        out[pad] = 0.0
        return out


class RandomCoulombMatrix(CoulombMatrix):
    """Sets of randomly sorted Coulomb matrices (Montavon et al., NIPS 2012).

    For each molecule and each of ``n_samples`` draws, Gaussian noise of standard deviation
    ``noise`` is added to the row norms, and rows and columns are sorted by the noisy norms in
    descending order. ``noise=0`` gives ``n_samples`` copies of the sorted matrix.

    Parameters
    ----------
    n_samples : random matrices per molecule (L).
    noise : standard deviation of the noise on the row norms, in the units of the matrix.
    n_max, flatten : as in `CoulombMatrix`.
    random_state : seed (int), ``numpy.random.Generator``/``RandomState``, or ``None``. With an int
        the same molecules give the same matrices on every call.

    ``transform`` returns an (n_molecules, n_samples, n_features) float64 array: a *set* per
    molecule. `qmlx.kernels.KernelRidge` treats 3-D input as sets and averages the kernel over all
    pairs of set members (Hansen et al. 2013).
    """

    def __init__(
        self,
        n_samples: int = 10,
        noise: float = 1.0,
        n_max: int | None = None,
        flatten: str = "triangle",
        random_state=None,
    ):
        self.n_samples = n_samples
        self.noise = noise
        self.n_max = n_max
        self.flatten = flatten
        self.random_state = random_state

    def feature_atoms(self, mols: Molecules) -> np.ndarray:
        """Random orderings: the features of a set do not map onto atoms one to one."""
        raise RepresentationError("random Coulomb matrix sets do not map onto atoms one to one")

    def transform(self, X) -> np.ndarray:
        M, _ = self._matrices(X)
        rng = _rng(self.random_state)
        n, n_max = len(M), M.shape[-1]
        n_feat = flatten_matrices(M[:1], self.flatten).shape[-1]
        out = np.empty((n, int(self.n_samples), n_feat))
        block = max(1, BLOCK_MOLECULES // max(1, int(self.n_samples)))
        for lo in range(0, n, block):
            m = M[lo : lo + block]
            eps = self.noise * rng.standard_normal((len(m), int(self.n_samples), n_max))
            out[lo : lo + block] = flatten_matrices(sort_by_row_norm(m, eps), self.flatten)
        return out
