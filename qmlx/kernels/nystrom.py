"""Approximate kernel ridge regression with Nyström centres and a preconditioned CG solve (FALKON).

Model: ``f(x) = y_mean + sum_j alpha_j k(c_j, x)`` over ``M`` centres ``c_j``, a uniform random
subset of the ``n`` training rows. ``alpha`` (M,) solves the Nyström normal equations

    (K_nM^T K_nM + lam K_MM) alpha = K_nM^T (y - y_mean),

where ``K_nM`` (n, M) is the kernel between the training rows and the centres and ``K_MM``
(M, M) the kernel among the centres. ``lam`` has the meaning it has in the exact
`qmlx.kernels.KernelRidge`: with all rows as centres (``M = n``) the system reads
``K (K + lam I) alpha = K y``, whose solution is the exact ``alpha = (K + lam I)^-1 y``. In
FALKON's normalization the regularization is ``lambda = lam / n``.

Solver (Rudi, Carratino, Rosasco, NeurIPS 2017; Meanti, Carratino, Rosasco, Rudi, NeurIPS
2020): with the Cholesky factors ``T^T T = K_MM`` (upper ``T``) and
``A^T A = T T^T / M + lambda I`` (upper ``A``), the preconditioner ``B = T^-1 A^-1`` turns the
system into ``B^T H B beta = B^T b`` with ``H = K_nM^T K_nM / n + lambda T^T T`` and
``b = K_nM^T y / n``; it is solved by conjugate gradients and ``alpha = B beta``. ``B B^T``
inverts ``H`` exactly when ``K_nM^T K_nM = (n / M) K_MM^2``, which holds for ``M = n``, so there
CG converges in one step. ``K_MM`` is factorized as it is; if it is numerically singular, jitter
(``eps`` times its mean diagonal) is added, from ``eps = M * 2.2e-16`` (FALKON's choice) growing
tenfold up to ``1e-6``. The solved system then has ``lam (K_MM + jitter I)``: an extra ridge of
at most ``1e-6 lam`` on ``alpha``.

Memory: the centres' factors take ``2 M^2`` float64 values. Each CG iteration needs
``K_nM^T (K_nM v)``; ``K_nM`` is computed in row chunks of ``block_size`` rows, and as many chunks
as fit into ``cache_size`` MiB are kept (all of them when ``8 n M`` bytes fit, the fast case).
Chunks beyond the cache are recomputed in every iteration, so memory stays
``O(min(n M, cache) + block_size M + M^2)`` float64 values at the price of one kernel evaluation
per iteration for the uncached rows. Time: ``O(n M d)`` for the kernel (once, if cached) plus
``O(n M + M^2)`` per CG iteration and ``O(M^3)`` for the factors.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Tags, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from qmlx.kernels.distances import DEFAULT_BLOCK
from qmlx.kernels.kernels import KERNELS, kernel_matrix
from qmlx.kernels.krr import KernelSolveError, validate_features

#: bytes of ``K_nM`` rows multiplied at once in a CG pass: small enough that the second product
#: (with the transpose) reads the rows from cache rather than from main memory
_PASS_BYTES = 1 << 22
#: largest relative jitter put on ``K_MM`` before its factorization gives up
_MAX_JITTER = 1e-6


def _upper_cholesky(K: np.ndarray) -> np.ndarray | None:
    """Upper ``T`` with ``T^T T = K`` for a symmetric C-ordered ``K`` (overwritten); ``None`` if not PD.

    ``K.T`` is a Fortran-ordered view of ``K``, so LAPACK factorizes it in place; its lower
    factor ``L`` (``L L^T = K``) is returned transposed, a C-ordered view of the same memory.
    """
    try:
        L = scipy.linalg.cholesky(K.T, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    return L.T


def _column_order(centers: np.ndarray) -> np.ndarray:
    """Feature columns by descending count of non-zero values among the centres (stable).

    Permuting columns changes no L1 or Euclidean distance. In this order the zeros of sparse,
    zero-padded features such as Bag of Bonds (Hansen et al., JPCL 6, 2326, 2015; one padded bag
    per element pair) gather at the end of each row, where `qmlx.kernels.distance_matrix` skips
    them; sorted Coulomb matrices keep their order.
    """
    members = centers.reshape(-1, centers.shape[-1])
    return np.argsort(-np.count_nonzero(members, axis=0), kind="stable")


def _row_order(X: np.ndarray, cols: np.ndarray, block: int = 8192) -> np.ndarray:
    """Rows of the (n, d) ``X`` sorted by the position of their last non-zero in the column order
    ``cols`` (stable), so that rows with similar zero tails share a kernel chunk."""
    rank = np.empty(len(cols), dtype=np.int64)
    rank[cols] = np.arange(len(cols))
    last = np.empty(len(X), dtype=np.int64)
    for lo in range(0, len(X), block):
        last[lo : lo + block] = np.where(X[lo : lo + block] != 0, rank, -1).max(axis=1)
    return np.argsort(last, kind="stable")


class _KernelRows:
    """``K_nM`` in row chunks, the first ones kept in memory up to a byte budget.

    Rows are visited in ``order`` (see `_row_order`); ``centers`` and the rows of ``X`` enter the
    kernel with their feature columns in the order ``cols`` (see `_column_order`).
    """

    def __init__(
        self,
        X: np.ndarray,
        centers: np.ndarray,
        order: np.ndarray,
        cols: np.ndarray,
        kernel: str,
        sigma: float,
        block_size: int,
        n_jobs: int | None,
        cache_bytes: float,
    ):
        self.X, self.order, self.cols = X, order, cols
        self.centers = centers[..., cols]
        self.kernel, self.sigma, self.block_size, self.n_jobs = kernel, sigma, block_size, n_jobs
        self.starts = list(range(0, len(order), block_size))
        chunk_bytes = 8.0 * block_size * len(centers)
        self.n_cached = int(min(len(self.starts), cache_bytes // chunk_bytes))
        self.cache: list[np.ndarray] = []

    @property
    def cached_rows(self) -> int:
        return sum(len(K) for K in self.cache)

    def _compute(self, i: int) -> np.ndarray:
        rows = self.order[self.starts[i] : self.starts[i] + self.block_size]
        return kernel_matrix(
            self.X[rows][..., self.cols],
            self.centers,
            self.kernel,
            self.sigma,
            block_size=self.block_size,
            n_jobs=self.n_jobs,
        )

    def _chunk(self, i: int) -> np.ndarray:
        if i < len(self.cache):
            return self.cache[i]
        K = self._compute(i)
        if i == len(self.cache) and i < self.n_cached:
            self.cache.append(K)
        return K

    def normal_product(self, v: np.ndarray | None, y: np.ndarray | None = None) -> np.ndarray:
        """``K_nM^T (K_nM v + y)`` (M,) for ``v`` (M,) or ``None`` (0) and ``y`` (n,) in ``order`` or ``None``."""
        out = np.zeros(len(self.centers))
        for i, lo in enumerate(self.starts):
            K = self._chunk(i)
            step = max(16, _PASS_BYTES // (8 * K.shape[1]))
            for s in range(0, len(K), step):
                Ks = K[s : s + step]
                t = Ks @ v if v is not None else np.zeros(len(Ks))
                if y is not None:
                    t += y[lo + s : lo + s + len(Ks)]
                out += t @ Ks
        return out


class NystromKernelRidge(RegressorMixin, BaseEstimator):
    """Kernel ridge regression on ``M`` Nyström centres, solved by FALKON (see the module docstring).

    A sibling of the exact `qmlx.kernels.KernelRidge` with the same kernels, hyperparameters
    (``lam`` is added to the kernel diagonal in both) and input conventions, for training sets
    whose ``(n, n)`` kernel does not fit into memory. With ``n_centers >= n`` every training
    row is a centre and the predictions equal the exact solver's up to the CG tolerance.

    Parameters
    ----------
    kernel : ``"laplacian"`` (``exp(-|x-x'|_1 / sigma)``) or ``"gaussian"``
        (``exp(-|x-x'|^2 / (2 sigma^2))``).
    sigma : kernel width (> 0), in the units of the features.
    lam : ridge regularization (>= 0), as in `KernelRidge` (dimensionless; the kernel is in [0, 1]).
    n_centers : number of Nyström centres ``M`` (uniform without replacement; duplicated rows
        among them are dropped); ``min(n_centers, n)`` are used.
    center : subtract the training mean of y before solving, add it back when predicting.
    max_iter : largest number of conjugate-gradient iterations.
    tol : stop when the preconditioned residual has shrunk to ``tol`` times its initial norm
        (``0``: run ``max_iter`` iterations).
    block_size : rows per kernel chunk (bounds the memory of uncached chunks: ``block_size * M``
        float64 values) and per distance tile.
    cache_size : MiB of ``K_nM`` chunks held in memory during `fit`; chunks beyond it are
        recomputed in every CG iteration.
    n_jobs : threads (>= 1) for the distance blocks (``None``: one). BLAS threads are set with
        ``threadpoolctl``.
    random_state : seed, ``RandomState`` or ``None``, for drawing the centres.

    Hyperparameters are validated when `fit` is called (``ValueError`` if invalid).

    Memory: two (M, M) float64 factors plus the cached part of ``K_nM``. Holding all of ``K_nM``
    (``8 n M`` bytes; 8 GB for n = 100,000 and M = 10,000) is the fast path: each CG iteration is
    then two matrix-vector products. When it exceeds ``cache_size``, the remaining row chunks are
    recomputed in every iteration (``block_size * M`` values at a time), trading time for memory.
    Pass ``cache_size`` of at least ``8 n M / 2**20`` MiB to hold everything.

    X is an (n, d) feature array or an (n, L, d) array of sets (kernel averaged over members, see
    `qmlx.kernels.kernel_matrix`). y is (n,) in any unit; predictions come back in the same unit.

    Fitted attributes: ``centers_`` (M, d) or (M, L, d), ``center_indices_`` (M,) rows of the
    training X, ``n_centers_`` (M), ``alpha_`` (M,), ``y_mean_`` (float), ``n_iter_`` (CG
    iterations), ``residuals_`` (n_iter_ + 1,) relative preconditioned residual norms, starting
    at 1, ``converged_`` (bool), ``jitter_`` (absolute jitter on ``K_MM``'s diagonal),
    ``cached_rows_`` (rows of ``K_nM`` held in memory), ``timings_`` (seconds: ``centers_s`` for
    drawing the centres and factorizing, ``kernel_s`` for the first pass over ``K_nM``, which
    computes it, ``solve_s`` for CG), ``n_features_in_`` (d) and ``feature_names_in_`` when X had
    column names.

    References
    ----------
    - Rudi, Carratino, Rosasco, "FALKON: An optimal large scale kernel method", NeurIPS 2017.
    - Meanti, Carratino, Rosasco, Rudi, "Kernel methods through the roof: handling billions of
      points efficiently", NeurIPS 2020.
    """

    _parameter_constraints: dict = {
        "kernel": [StrOptions(set(KERNELS))],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "lam": [Interval(Real, 0, None, closed="left")],
        "n_centers": [Interval(Integral, 1, None, closed="left")],
        "center": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "cache_size": [Interval(Real, 0, None, closed="left")],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        kernel: str = "laplacian",
        *,
        sigma: float = 1.0,
        lam: float = 1e-8,
        n_centers: int = 1000,
        center: bool = True,
        max_iter: int = 200,
        tol: float = 1e-7,
        block_size: int = DEFAULT_BLOCK,
        cache_size: float = 2048.0,
        n_jobs: int | None = None,
        random_state=None,
    ):
        self.kernel = kernel
        self.sigma = sigma
        self.lam = lam
        self.n_centers = n_centers
        self.center = center
        self.max_iter = max_iter
        self.tol = tol
        self.block_size = block_size
        self.cache_size = cache_size
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _validate(self, X, y=None, *, reset: bool):
        return validate_features(self, X, y, reset=reset, fitted=None if reset else self.centers_)

    def _choose_centers(self, X: np.ndarray) -> np.ndarray:
        """Sorted indices of ``min(n_centers, n)`` uniformly drawn rows, without duplicated rows."""
        n = len(X)
        if self.n_centers >= n:
            idx = np.arange(n)
        else:
            idx = np.sort(check_random_state(self.random_state).choice(n, self.n_centers, replace=False))
        _, first = np.unique(X[idx].reshape(len(idx), -1), axis=0, return_index=True)
        return idx[np.sort(first)]

    def _factor_centers(self, centers: np.ndarray, lam_f: float) -> tuple[np.ndarray, np.ndarray, float]:
        """FALKON's preconditioner factors: upper ``T`` (``T^T T = K_MM + jitter I``) and upper ``A``
        (``A^T A = T T^T / M + lam_f I``), both (M, M), and the jitter."""
        M = len(centers)
        jitter, eps = 0.0, M * np.finfo(np.float64).eps
        while True:
            K = kernel_matrix(
                centers, None, self.kernel, self.sigma, block_size=self.block_size, n_jobs=self.n_jobs
            )
            diag = np.diag_indices(M)
            base = float(K[diag].mean()) or 1.0
            K[diag] += jitter
            T = _upper_cholesky(K)
            if T is not None:
                break
            if eps > _MAX_JITTER:
                raise KernelSolveError(
                    f"the {M}x{M} kernel matrix of the Nyström centres is not positive definite even with "
                    f"jitter {jitter:g}; use fewer centres (or, for the Gaussian kernel, a smaller sigma)"
                )
            jitter, eps = eps * base, eps * 10.0
        del K
        # T T^T = L^T L for the Fortran-ordered lower factor L = T.T: one symmetric rank-k update
        # (upper triangle), factorized in place
        W = scipy.linalg.blas.dsyrk(1.0 / M, T.T, trans=1, lower=0)
        W[np.diag_indices(M)] += lam_f
        try:
            A = scipy.linalg.cholesky(W, lower=False, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise KernelSolveError(
                f"the FALKON preconditioner of {M} centres is not positive definite"
            ) from None
        return T, A, jitter

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> NystromKernelRidge:
        """Fit on features ``X`` ((n, d) or (n, L, d) sets) and targets ``y`` (n,)."""
        X, y = self._validate(X, y, reset=True)
        t0 = time.perf_counter()
        n = len(X)
        idx = self._choose_centers(X)
        centers = X[idx]
        M = len(idx)
        lam_f = float(self.lam) / n
        cols = _column_order(centers)
        T, A, jitter = self._factor_centers(centers[..., cols], lam_f)
        t1 = time.perf_counter()

        self.y_mean_ = float(y.mean()) if self.center else 0.0
        order = _row_order(X, cols) if X.ndim == 2 else np.arange(n)
        rows = _KernelRows(
            X,
            centers,
            order,
            cols,
            self.kernel,
            float(self.sigma),
            int(self.block_size),
            self.n_jobs,
            float(self.cache_size) * 2**20,
        )
        b = rows.normal_product(None, (y - self.y_mean_)[order]) / n  # also fills the cache
        t2 = time.perf_counter()

        def operator(p: np.ndarray) -> np.ndarray:
            s = solve_triangular(A, p, check_finite=False)  # A^-1 p = T v
            v = solve_triangular(T, s, check_finite=False)  # v = B p
            w = solve_triangular(T, rows.normal_product(v) / n, trans="T", check_finite=False)
            return solve_triangular(A, w + lam_f * s, trans="T", check_finite=False)

        r = solve_triangular(
            A, solve_triangular(T, b, trans="T", check_finite=False), trans="T", check_finite=False
        )
        beta, residuals = self._conjugate_gradients(operator, r)
        self.alpha_ = solve_triangular(T, solve_triangular(A, beta, check_finite=False), check_finite=False)
        self.centers_ = centers
        self.center_indices_ = idx
        self.n_centers_ = M
        self.residuals_ = np.asarray(residuals)
        self.n_iter_ = len(residuals) - 1
        self.converged_ = bool(residuals[-1] <= self.tol) or residuals[0] == 0.0
        self.jitter_ = jitter
        self.cached_rows_ = rows.cached_rows
        t3 = time.perf_counter()
        self.timings_ = {"centers_s": t1 - t0, "kernel_s": t2 - t1, "solve_s": t3 - t2}
        if not self.converged_ and self.tol > 0:
            warnings.warn(
                f"conjugate gradients stopped after {self.n_iter_} iterations at relative residual "
                f"{residuals[-1]:.2e} > tol={self.tol:g}; increase max_iter or lam",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _conjugate_gradients(self, operator, r: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Solve ``operator(x) = r`` (symmetric positive definite) from ``x = 0``.

        Returns ``x`` and the residual norms relative to ``|r|``, the first being 1 (or ``[0.0]``
        when ``r = 0``).
        """
        x = np.zeros_like(r)
        norm0 = float(np.linalg.norm(r))
        if not np.isfinite(norm0):
            raise KernelSolveError("the right-hand side of the Nyström system is not finite")
        if norm0 == 0.0:
            return x, [0.0]
        p = r.copy()
        rs = norm0**2
        residuals = [1.0]
        for _ in range(int(self.max_iter)):
            Ap = operator(p)
            pAp = float(p @ Ap)
            if not pAp > 0.0:  # the search direction has vanished to rounding: as converged as it gets
                break
            step = rs / pAp
            x += step * p
            r -= step * Ap
            rs_new = float(r @ r)
            residuals.append(np.sqrt(rs_new) / norm0)
            if residuals[-1] <= self.tol:
                break
            p *= rs_new / rs
            p += r
            rs = rs_new
        return x, residuals

    def predict(self, X) -> np.ndarray:
        """Predictions (n,) for features ``X`` ((n, d), or (n, L, d) sets), in the unit of the training y."""
        check_is_fitted(self, ("alpha_", "centers_", "y_mean_"))
        X = self._validate(X, reset=False)
        cols = _column_order(self.centers_)
        centers = self.centers_[..., cols]
        out = np.empty(len(X))
        step = max(1, 4 * self.block_size)
        for lo in range(0, len(X), step):
            K = kernel_matrix(
                X[lo : lo + step][..., cols],
                centers,
                self.kernel,
                self.sigma,
                block_size=self.block_size,
                n_jobs=self.n_jobs,
            )
            out[lo : lo + step] = self.y_mean_ + K @ self.alpha_
        return out
