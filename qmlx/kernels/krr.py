"""Kernel ridge regression with a Cholesky solve, following scikit-learn's estimator contract.

Model: ``f(x) = y_mean + sum_i alpha_i k(x_i, x)`` with ``alpha = (K + lam I)^-1 (y - y_mean)``,
solved by a Cholesky factorization in float64 (``scipy.linalg.cho_factor``/``cho_solve``).
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from qmlx.errors import QmlxError
from qmlx.kernels.distances import DEFAULT_BLOCK
from qmlx.kernels.kernels import KERNELS, kernel_matrix


class KernelSolveError(QmlxError, np.linalg.LinAlgError):
    """The regularized kernel matrix is not positive definite, even after adding jitter."""


def _factor_solve(A: np.ndarray, y: np.ndarray, backend: str) -> np.ndarray | None:
    """Cholesky-solve ``A x = y`` without modifying ``A``; ``None`` if ``A`` is not positive definite."""
    if backend == "torch":
        import torch

        A_t = torch.from_numpy(A)
        L, info = torch.linalg.cholesky_ex(A_t)
        if int(info) != 0:
            return None
        y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))
        x = torch.cholesky_solve(y_t.reshape(len(y), -1), L)
        return x.numpy().reshape(y.shape)
    try:
        # A.T is a Fortran-ordered view of the symmetric A, so LAPACK reads it without a transpose
        factor = scipy.linalg.cho_factor(A.T, lower=True, overwrite_a=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    return scipy.linalg.cho_solve(factor, y, check_finite=False)


def mixed_refine(
    A32: np.ndarray, matvec, b: np.ndarray, norm_a: float, max_iter: int = 30
) -> np.ndarray | None:
    """Solve ``A x = b`` by a float32 Cholesky of ``A32`` and float64 iterative refinement
    (the scheme of LAPACK's ``dsposv``).

    ``A32`` is the float32 (n, n) matrix (C-ordered, overwritten by its factor); ``matvec(x)``
    returns ``A @ x`` in float64 and ``norm_a`` bounds ``|A|_inf``. Returns the float64 solution
    once ``|r|_inf <= |x|_inf norm_a eps64 sqrt(n)`` (the ``dsposv`` stopping test), or ``None`` if
    the factorization fails or the refinement does not converge (callers then use float64).
    """
    try:
        # A32.T is a Fortran-ordered view of the symmetric matrix: LAPACK factorizes it in place
        factor = scipy.linalg.cho_factor(A32.T, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    tol = norm_a * np.finfo(np.float64).eps * np.sqrt(len(b))
    x = scipy.linalg.cho_solve(factor, b.astype(np.float32), check_finite=False).astype(np.float64)
    for _ in range(max_iter):
        r = b - matvec(x)
        if np.abs(r).max() <= tol * max(np.abs(x).max(), np.finfo(np.float64).tiny):
            return x
        x += scipy.linalg.cho_solve(factor, r.astype(np.float32), check_finite=False)
    return None


def _mixed_solve(A: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """`mixed_refine` on a float64 matrix ``A``."""
    return mixed_refine(A.astype(np.float32), lambda x: A @ x, y, float(np.abs(A).sum(axis=1).max()))


def cholesky_solve(
    K: np.ndarray,
    y: np.ndarray,
    lam: float,
    max_jitter: float = 0.0,
    backend: str = "scipy",
    precision: str = "double",
) -> tuple[np.ndarray, float]:
    """Solve ``(K + lam I) alpha = y`` by a float64 Cholesky factorization; returns ``(alpha, jitter)``.

    ``K`` is (n, n) and symmetric, ``y`` is (n,) or (n, t). ``K``'s diagonal is shifted during
    the solve and restored afterwards; the factorization takes one extra (n, n) array.

    If the factorization fails, jitter ``eps * mean(diag K)`` is added to the diagonal, from
    ``eps = 1e-12`` growing tenfold up to ``max_jitter``; past that (at once with
    ``max_jitter=0``) `KernelSolveError` is raised. A warning reports any jitter used.

    ``backend``: ``"scipy"`` (``cho_factor``/``cho_solve``, LAPACK) or ``"torch"``
    (``cholesky_ex``/``cholesky_solve``, MKL). Both are Cholesky solves in float64. On a busy
    machine, limit BLAS threads (``threadpoolctl.threadpool_limits(1)``): multi-threaded OpenBLAS
    slows down many-fold when its threads compete with other processes.

    ``precision="mixed"`` factorizes in float32 and refines the solution in float64 until the
    residual meets LAPACK ``dsposv``'s float64 test, falling back to the float64 factorization
    when that fails; the answer agrees with ``"double"`` to float64 accuracy for well-enough
    conditioned matrices (cond << 1e8) and takes about half the time. Default ``"double"``.
    """
    n = len(K)
    if K.ndim != 2 or K.shape != (n, n):
        raise ValueError(f"kernel matrix must be square, got shape {K.shape}")
    if backend not in ("scipy", "torch"):
        raise ValueError(f"backend must be 'scipy' or 'torch', got {backend!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be non-negative, got {lam}")
    if precision not in ("double", "mixed"):
        raise ValueError(f"precision must be 'double' or 'mixed', got {precision!r}")
    idx = np.arange(n)
    diag = K[idx, idx].copy()
    base = float(np.mean(np.abs(diag))) or 1.0
    jitter, eps = 0.0, 1e-12
    try:
        while True:
            K[idx, idx] = diag + lam + jitter
            alpha = (
                _mixed_solve(K, np.asarray(y, dtype=np.float64))
                if precision == "mixed" and not jitter
                else None
            )
            if alpha is None:
                alpha = _factor_solve(K, y, backend)
            if alpha is not None:
                break
            if eps > max_jitter:
                raise KernelSolveError(
                    f"the {n}x{n} kernel matrix plus lam={lam:g} is not positive definite"
                    + (f" even with jitter {jitter:g}" if jitter else "")
                    + "; increase lam (the regularization) or allow jitter with max_jitter"
                )
            jitter = eps * base
            eps *= 10.0
    finally:
        K[idx, idx] = diag
    if jitter:
        warnings.warn(f"kernel matrix was not positive definite; added jitter {jitter:g}", stacklevel=2)
    return alpha, jitter


def validate_features(
    estimator, X, y=None, *, reset: bool, fitted: np.ndarray | None = None, precomputed: bool = False
):
    """Validate the input of a kernel ridge estimator with scikit-learn's `validate_data`.

    Returns float64 ``X`` of 2 or 3 dimensions (2 for a ``precomputed`` kernel), and float64 ``y``
    (n,) when ``reset``. ``reset=True`` records ``estimator.n_features_in_`` (the last axis of
    ``X``); ``reset=False`` checks ``X`` against it and against the dimension of ``fitted`` (the
    training features or centres).
    """
    name = type(estimator).__name__
    if not (hasattr(X, "__array__") or hasattr(X, "__array_namespace__") or isinstance(X, (list, tuple))):
        if not sp.issparse(X):
            raise TypeError(
                f"{name} expects numeric features, got {type(X).__name__}; put a representation "
                "(e.g. qmlx.represent.SortedCoulombMatrix) before it in a Pipeline"
            )
    # ensure_2d=False: validate_data would count features along axis 1, which for (n, L, d) sets is
    # L; the dimension and the feature count (last axis) are checked below instead.
    check = {"dtype": np.float64, "allow_nd": True, "ensure_2d": False}
    if reset:
        X, y = validate_data(estimator, X, y, reset=True, y_numeric=True, **check)
        y = np.asarray(y, dtype=np.float64)
    else:
        X = validate_data(estimator, X, reset=False, **check)
    if X.ndim not in (2, 3) or (precomputed and X.ndim != 2):
        expected = (
            "a 2-D (n_samples, n_fit) kernel matrix"
            if precomputed
            else "a 2-D (n_samples, n_features) array or 3-D (n_samples, n_members, n_features) sets"
        )
        hint = (
            " Reshape your data either using array.reshape(-1, 1) if your data has a single feature "
            "or array.reshape(1, -1) if it contains a single sample."
            if X.ndim < 2
            else ""
        )
        raise ValueError(f"{name} expects {expected}, got shape {X.shape}.{hint}")
    if X.ndim == 3 and 0 in X.shape[1:]:
        raise ValueError(f"sets must have at least one member and one feature, got shape {X.shape}")
    if reset:
        estimator.n_features_in_ = X.shape[-1]
        return X, y
    if not precomputed and fitted is not None and X.ndim != fitted.ndim:
        kind = {2: "2-D features", 3: "3-D sets"}
        raise ValueError(
            f"X is {kind[X.ndim]} of shape {X.shape}, but {name} was fitted on {kind[fitted.ndim]} of shape "
            f"{fitted.shape}"
        )
    if X.shape[-1] != estimator.n_features_in_:
        note = " (a precomputed kernel has one column per training sample)" if precomputed else ""
        raise ValueError(
            f"X has {X.shape[-1]} features, but {name} is expecting {estimator.n_features_in_} "
            f"features as input{note}."
        )
    return X


class KernelRidge(RegressorMixin, BaseEstimator):
    """Kernel ridge regression (float64, Cholesky), compatible with ``clone``/``GridSearchCV``/``Pipeline``.

    Parameters
    ----------
    kernel : ``"laplacian"`` (``exp(-|x-x'|_1 / sigma)``), ``"gaussian"``
        (``exp(-|x-x'|^2 / (2 sigma^2))``) or ``"precomputed"`` (X is a kernel matrix).
    sigma : kernel width (> 0), in the units of the features.
    lam : ridge regularization (>= 0) added to the kernel diagonal (dimensionless; the kernel is in [0, 1]).
    center : subtract the training mean of y before solving, add it back when predicting.
    max_jitter : largest relative jitter tried when the matrix is not positive definite
        (0 = raise `KernelSolveError` straight away).
    block_size : rows per block when computing kernels (bounds memory).
    n_jobs : threads (>= 1) for the distance blocks (``None``: one).
    precision : ``"double"`` (float64 Cholesky) or ``"mixed"`` (float32 Cholesky refined to float64
        accuracy, falling back to float64; see `cholesky_solve`).

    Hyperparameters are validated when `fit` is called (``ValueError`` if invalid).

    X is an (n, d) feature array, an (n, L, d) array of sets (kernel averaged over members; see
    `qmlx.kernels.kernel_matrix`; L may differ between fit and predict), or with
    ``kernel="precomputed"`` an (n, n_fit) kernel matrix (square (n_fit, n_fit) when fitting).
    y is (n,) in any unit; predictions come back in the same unit.

    Fitted attributes: ``alpha_`` (n_fit,), ``X_fit_`` (the training features, (n_fit, d),
    (n_fit, L, d) or (n_fit, n_fit)), ``y_mean_`` (float), ``jitter_`` (float), ``n_features_in_``
    (d, or n_fit with ``kernel="precomputed"``), and ``feature_names_in_`` when X had column names.
    """

    _parameter_constraints: dict = {
        "kernel": [StrOptions({*KERNELS, "precomputed"})],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "lam": [Interval(Real, 0, None, closed="left")],
        "center": ["boolean"],
        "max_jitter": [Interval(Real, 0, None, closed="left")],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "precision": [StrOptions({"double", "mixed"})],
    }

    def __init__(
        self,
        kernel: str = "laplacian",
        sigma: float = 1.0,
        lam: float = 1e-8,
        center: bool = True,
        max_jitter: float = 1e-8,
        block_size: int = DEFAULT_BLOCK,
        n_jobs: int | None = None,
        precision: str = "double",
    ):
        self.kernel = kernel
        self.sigma = sigma
        self.lam = lam
        self.center = center
        self.max_jitter = max_jitter
        self.block_size = block_size
        self.n_jobs = n_jobs
        self.precision = precision

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        precomputed = self.kernel == "precomputed"
        tags.input_tags.pairwise = precomputed
        tags.input_tags.three_d_array = not precomputed
        return tags

    def _validate(self, X, y=None, *, reset: bool):
        fitted = None if reset else self.X_fit_
        return validate_features(
            self, X, y, reset=reset, fitted=fitted, precomputed=self.kernel == "precomputed"
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> KernelRidge:
        """Fit on features ``X`` ((n, d), (n, L, d) sets or an (n, n) precomputed kernel) and ``y`` (n,)."""
        X, y = self._validate(X, y, reset=True)
        if self.kernel == "precomputed":
            if X.shape[0] != X.shape[1]:
                raise ValueError(f"precomputed kernel must be square when fitting, got {X.shape}")
            # cholesky_solve shifts the diagonal in place and restores it: copy a read-only matrix
            K = X if X.flags.writeable else X.copy()
        else:
            K = kernel_matrix(
                X, None, self.kernel, self.sigma, block_size=self.block_size, n_jobs=self.n_jobs
            )
        self.y_mean_ = float(y.mean()) if self.center else 0.0
        self.alpha_, self.jitter_ = cholesky_solve(
            K, y - self.y_mean_, self.lam, self.max_jitter, precision=self.precision
        )
        self.X_fit_ = X
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions (n,) for features ``X`` (or a (n, n_fit) kernel with ``kernel="precomputed"``)."""
        check_is_fitted(self, ("alpha_", "X_fit_", "y_mean_"))
        X = self._validate(X, reset=False)
        if self.kernel == "precomputed":
            return self.y_mean_ + X @ self.alpha_
        out = np.empty(len(X))
        step = max(1, 4 * self.block_size)
        for lo in range(0, len(X), step):
            K = kernel_matrix(
                X[lo : lo + step],
                self.X_fit_,
                self.kernel,
                self.sigma,
                block_size=self.block_size,
                n_jobs=self.n_jobs,
            )
            out[lo : lo + step] = self.y_mean_ + K @ self.alpha_
        return out
