"""Gaussian and Laplacian kernels in float64, computed block by block.

- Gaussian:  ``k(x, x') = exp(-|x - x'|_2^2 / (2 sigma^2))``
- Laplacian: ``k(x, x') = exp(-|x - x'|_1 / sigma)``

``sigma`` is in the units of the representation (atomic units for Coulomb matrices).

Inputs are 2-D ``(n, d)`` feature arrays or 3-D ``(n, L, d)`` *sets* (e.g. random Coulomb
matrices). For sets the kernel between two molecules is the mean over all ``L x L'`` pairs of
members, ``k(A, B) = 1/(L L') sum_{a in A, b in B} k(a, b)`` (Hansen et al., JCTC 9, 3404,
2013), a positive-definite kernel on sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from qmlx.kernels.distances import DEFAULT_BLOCK, distance_matrix

KERNELS = {"laplacian": "l1", "gaussian": "sqeuclidean"}


def kernel_metric(kernel: str) -> str:
    """The distance a kernel is built on: ``"l1"`` for Laplacian, ``"sqeuclidean"`` for Gaussian."""
    try:
        return KERNELS[kernel]
    except KeyError:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}") from None


def kernel_from_distances(
    D: np.ndarray, kernel: str, sigma: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Apply a kernel to a distance matrix from `distance_matrix` with the matching metric.

    ``D`` holds L1 distances for ``"laplacian"`` and squared Euclidean ones for ``"gaussian"``.
    Pass ``out=D`` to work in place. Returns an array of the shape of ``D``.
    """
    kernel_metric(kernel)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    scale = -1.0 / sigma if kernel == "laplacian" else -0.5 / sigma**2
    out = np.multiply(D, scale, out=out)
    return np.exp(out, out=out)


def kernel_matrix(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    kernel: str = "laplacian",
    sigma: float = 1.0,
    block_size: int = DEFAULT_BLOCK,
    progress: bool = False,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Kernel matrix (n, m) between ``X`` and ``Y`` (``Y=None``: ``Y = X``), float64.

    ``X``/``Y`` are (n, d) features or (n, L, d) sets; see the module docstring.
    """
    return kernel_matrices(X, Y, kernel, [sigma], block_size=block_size, progress=progress, n_jobs=n_jobs)[0]


def kernel_matrices(
    X: np.ndarray,
    Y: np.ndarray | None = None,
    kernel: str = "laplacian",
    sigmas: Sequence[float] = (1.0,),
    block_size: int = DEFAULT_BLOCK,
    progress: bool = False,
    n_jobs: int | None = None,
) -> list[np.ndarray]:
    """One (n, m) kernel matrix per ``sigma``, sharing a single pass over the distances.

    For 2-D input the distance matrix is computed once (memory: one extra (n, m) array). For
    3-D sets the member distances are streamed in blocks of molecules and reduced to means per
    molecule pair for every ``sigma``, so memory stays ``O(len(sigmas) * n * m)`` plus one block.
    ``n_jobs`` threads compute distance blocks in parallel (see `distance_matrix`).
    """
    metric = kernel_metric(kernel)
    sigmas = [float(s) for s in sigmas]
    X = np.asarray(X, dtype=np.float64)
    Y_arr = None if Y is None else np.asarray(Y, dtype=np.float64)
    if X.ndim == 2:
        if Y_arr is not None and Y_arr.ndim != 2:
            raise ValueError(f"X is 2-D but Y has shape {Y_arr.shape}")
        D = distance_matrix(X, Y_arr, metric, block_size=block_size, progress=progress, n_jobs=n_jobs)
        out = [kernel_from_distances(D, kernel, s) for s in sigmas[:-1]]
        out.append(kernel_from_distances(D, kernel, sigmas[-1], out=D))
        return out
    if X.ndim != 3 or (Y_arr is not None and Y_arr.ndim != 3):
        raise ValueError("expected (n, d) features or (n, L, d) sets for X and Y")
    symmetric = Y_arr is None
    Ys = X if symmetric else Y_arr
    n, L, d = X.shape
    m, Lm, dm = Ys.shape
    if dm != d:
        raise ValueError(f"X has {d} features but Y has {dm}")
    Xf = X.reshape(n * L, d)
    Yf = Ys.reshape(m * Lm, d)
    out = [np.empty((n, m)) for _ in sigmas]
    mol_block = max(1, block_size // L)
    col_block = max(1, (4 * block_size) // Lm)
    starts = list(range(0, n, mol_block))
    cols = list(range(0, m, col_block))
    bar = tqdm(
        total=len(starts) * len(cols), desc="set kernel", unit="block", disable=not progress, leave=False
    )
    for i0 in starts:
        i1 = min(n, i0 + mol_block)
        for j0 in cols:
            j1 = min(m, j0 + col_block)
            if symmetric and j1 <= i0:
                bar.update()
                continue
            D = distance_matrix(
                Xf[i0 * L : i1 * L], Yf[j0 * Lm : j1 * Lm], metric, block_size=block_size, n_jobs=n_jobs
            )
            K = np.empty_like(D)
            for s, res in zip(sigmas, out):
                kernel_from_distances(D, kernel, s, out=K)
                res[i0:i1, j0:j1] = K.reshape(i1 - i0, L, j1 - j0, Lm).mean(axis=(1, 3))
            bar.update()
    bar.close()
    if symmetric:
        for res in out:
            upper = np.triu(res)
            res[:] = upper + np.triu(upper, 1).T
    return out
