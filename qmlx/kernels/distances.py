"""Blocked pairwise distances in float64, with a fast path for zero-padded representations.

Sorted Coulomb matrices flattened with ``flatten="triangle"`` are zero after the first
``n (n + 1) / 2`` features of a molecule with ``n`` atoms. For the L1 distance between two rows
whose non-zeros end at ``a <= b``::

    |x - y|_1 = |x[:a] - y[:a]|_1 + |y[a:]|_1

`distance_matrix` groups rows by the position of their last non-zero, computes the first term
on the shortest common prefix of each block pair and adds precomputed tail sums. The result is
exact (up to the order of floating-point additions) for any input; it is only faster when
rows have zero tails of different lengths.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial.distance import cdist
from tqdm.auto import tqdm

METRICS = ("l1", "sqeuclidean")
#: rows per block: a block pair needs 2 * block_size * n_features + block_size^2 float64 values
DEFAULT_BLOCK = 1024


def _nonzero_length(X: np.ndarray) -> np.ndarray:
    """(n,) index of the last non-zero feature of each row, plus one (0 for all-zero rows)."""
    nz = X != 0
    last = X.shape[1] - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(axis=1), last, 0)


def _as_2d(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_samples, n_features) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def distance_matrix(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    metric: str = "l1",
    block_size: int = DEFAULT_BLOCK,
    progress: bool = False,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Pairwise distances between the rows of ``X`` (n, d) and ``Y`` (m, d), as an (n, m) float64 array.

    ``metric``: ``"l1"`` (Manhattan, for the Laplacian kernel) or ``"sqeuclidean"`` (squared
    Euclidean, for the Gaussian kernel). ``Y=None`` means ``Y = X``; then only the upper block
    triangle is computed and mirrored, and the diagonal is exactly zero. Memory beyond the output
    is ``O(n_jobs * block_size * (block_size + d))``. ``n_jobs > 1`` computes blocks in that many
    threads (scipy's ``cdist`` releases the GIL).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    X = _as_2d(X, "X")
    symmetric = Y is None
    Y = X if symmetric else _as_2d(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features but Y has {Y.shape[1]}")
    n, m, d = len(X), len(Y), X.shape[1]
    D = np.empty((n, m))
    if n == 0 or m == 0:
        return D
    len_x = _nonzero_length(X)
    order_x = np.argsort(len_x, kind="stable")
    if symmetric:
        len_y, order_y = len_x, order_x
    else:
        len_y = _nonzero_length(Y)
        order_y = np.argsort(len_y, kind="stable")

    if metric == "l1":
        # tail[i, k] = sum(|X[i, k:]|), with a zero column at k = d
        tail_x = np.zeros((n, d + 1))
        tail_x[:, :d] = np.cumsum(np.abs(X)[:, ::-1], axis=1)[:, ::-1]
        tail_y = tail_x if symmetric else np.zeros((m, d + 1))
        if not symmetric:
            tail_y[:, :d] = np.cumsum(np.abs(Y)[:, ::-1], axis=1)[:, ::-1]
    else:
        sq_x = np.einsum("ij,ij->i", X, X)
        sq_y = sq_x if symmetric else np.einsum("ij,ij->i", Y, Y)

    tasks = [
        (i0, j0)
        for i0 in range(0, n, block_size)
        for j0 in range(0, m, block_size)
        if not symmetric or j0 >= i0
    ]

    def fill(task: tuple[int, int]) -> None:
        i0, j0 = task
        ix = order_x[i0 : i0 + block_size]
        iy = order_y[j0 : j0 + block_size]
        if metric == "l1":
            k = int(min(len_x[ix].max(), len_y[iy].max()))
            block = cdist(X[ix, :k], Y[iy, :k], "cityblock") if k > 0 else np.zeros((len(ix), len(iy)))
            block += tail_x[ix, k][:, None]
            block += tail_y[iy, k][None, :]
        else:
            block = sq_x[ix][:, None] + sq_y[iy][None, :] - 2.0 * (X[ix] @ Y[iy].T)
            np.maximum(block, 0.0, out=block)
        D[np.ix_(ix, iy)] = block
        if symmetric and j0 != i0:
            D[np.ix_(iy, ix)] = block.T

    bar = tqdm(total=len(tasks), desc=f"{metric} distances", unit="block", disable=not progress, leave=False)
    if n_jobs is not None and n_jobs > 1 and len(tasks) > 1:
        # scipy's cdist releases the GIL, so threads run blocks in parallel; each writes its own region
        with ThreadPoolExecutor(n_jobs) as pool:
            for _ in pool.map(fill, tasks):
                bar.update()
    else:
        for task in tasks:
            fill(task)
            bar.update()
    bar.close()
    if symmetric:
        np.fill_diagonal(D, 0.0)
    return D
