"""Hyperparameter search and learning curves for kernel ridge regression.

The expensive part of KRR model selection is the kernel, not the solve. `select_hyperparameters`
takes the training kernels one ``sigma`` at a time (from a distance matrix computed once, see
`KernelProvider`), and for each inner split factorizes ``K + lam I`` for every ``lam``. Only the
training part of an outer fold is used: the test fold never influences ``sigma`` or ``lam``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import KFold
from tqdm.auto import tqdm

from qmlx.kernels.distances import distance_matrix
from qmlx.kernels.kernels import kernel_from_distances, kernel_matrices, kernel_metric
from qmlx.kernels.krr import KernelSolveError, cholesky_solve, mixed_refine
from qmlx.metrics import metrics


class KernelProvider:
    """Kernel matrices for several ``sigma`` from one pass over the data.

    For 2-D features the pairwise distance matrix (n, n) is computed once and each `__call__`
    applies the kernel function to a copy. For 3-D sets (random Coulomb matrices), the kernels of
    all ``sigmas`` are accumulated in a single pass (`kernel_matrices`) and stored.

    ``provider(sigma)`` returns an (n, n) float64 kernel matrix over all rows of ``X``;
    `submatrix` gives blocks of it without forming the whole kernel twice.
    """

    def __init__(
        self,
        X: np.ndarray,
        kernel: str,
        sigmas: Sequence[float] = (),
        progress: bool = False,
        n_jobs: int | None = None,
    ):
        self.kernel = kernel
        self.X = np.asarray(X, dtype=np.float64)
        self._cache: dict[float, np.ndarray] = {}
        if self.X.ndim == 2:
            self.D = distance_matrix(self.X, None, kernel_metric(kernel), progress=progress, n_jobs=n_jobs)
        else:
            self.D = None
            if not sigmas:
                raise ValueError("for 3-D sets, pass the sigmas to precompute")
            Ks = kernel_matrices(self.X, None, kernel, sigmas, progress=progress, n_jobs=n_jobs)
            for s, K in zip(sigmas, Ks):
                self._cache[float(s)] = K

    def __len__(self) -> int:
        return len(self.X)

    def __call__(self, sigma: float) -> np.ndarray:
        if self.D is None:
            try:
                return self._cache[float(sigma)]
            except KeyError:
                raise ValueError(f"sigma={sigma} was not precomputed; have {sorted(self._cache)}") from None
        return kernel_from_distances(self.D, self.kernel, sigma)


@dataclass
class GridSearchResult:
    """Inner cross-validation MAE over the (sigma, lam) grid; ``mae[i, j]`` for ``sigmas[i], lams[j]``."""

    sigmas: list[float]
    lams: list[float]
    mae: np.ndarray
    best_sigma: float = field(init=False)
    best_lam: float = field(init=False)

    def __post_init__(self) -> None:
        i, j = np.unravel_index(np.nanargmin(self.mae), self.mae.shape)
        self.best_sigma = float(self.sigmas[i])
        self.best_lam = float(self.lams[j])

    @property
    def best_mae(self) -> float:
        return float(np.nanmin(self.mae))

    def on_edge(self) -> bool:
        """True if the best point lies on the border of the grid (the grid may be too small)."""
        i, j = np.unravel_index(np.nanargmin(self.mae), self.mae.shape)
        return bool(
            (len(self.sigmas) > 1 and i in (0, len(self.sigmas) - 1))
            or (len(self.lams) > 1 and j in (0, len(self.lams) - 1))
        )

    def to_dict(self) -> dict:
        return {
            "sigmas": self.sigmas,
            "lams": self.lams,
            "inner_cv_mae": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.mae],
            "best_sigma": self.best_sigma,
            "best_lam": self.best_lam,
        }


def select_hyperparameters(
    kernels: Callable[[float], np.ndarray],
    y: np.ndarray,
    sigmas: Sequence[float],
    lams: Sequence[float],
    n_splits: int = 3,
    random_state: int = 0,
    index: np.ndarray | None = None,
    progress: bool = False,
) -> GridSearchResult:
    """Choose ``(sigma, lam)`` by ``n_splits``-fold cross-validation (mean absolute error).

    Parameters
    ----------
    kernels : ``kernels(sigma)`` returns an (N, N) kernel matrix, e.g. a `KernelProvider`.
    y : (n,) targets of the rows ``index`` (all N rows if ``index`` is None).
    index : rows of the kernel that form the training data (e.g. one outer training fold).
    """
    y = np.asarray(y, dtype=np.float64)
    index = np.arange(len(y)) if index is None else np.asarray(index)
    if len(index) != len(y):
        raise ValueError(f"{len(index)} kernel rows but {len(y)} targets")
    splits = list(KFold(n_splits, shuffle=True, random_state=random_state).split(index))
    mae = np.full((len(sigmas), len(lams)), np.nan)
    bar = tqdm(total=len(sigmas) * len(lams) * n_splits, desc="inner CV", disable=not progress, leave=False)
    for a, sigma in enumerate(sigmas):
        K = kernels(sigma)
        errors = np.zeros(len(lams))
        for tr, va in splits:
            K_tr = K[np.ix_(index[tr], index[tr])]
            K_va = K[np.ix_(index[va], index[tr])]
            y_mean = y[tr].mean()
            for b, lam in enumerate(lams):
                try:
                    alpha, _ = cholesky_solve(K_tr, y[tr] - y_mean, lam, max_jitter=0.0)
                    errors[b] += metrics(y_mean + K_va @ alpha, y[va])["mae"] / n_splits
                except KernelSolveError:
                    errors[b] = np.inf
                bar.update()
        mae[a] = errors
    bar.close()
    return GridSearchResult([float(s) for s in sigmas], [float(v) for v in lams], mae)


def fit_predict(K_train: np.ndarray, y_train: np.ndarray, K_test: np.ndarray, lam: float) -> np.ndarray:
    """Train KRR on a precomputed (n, n) kernel and predict from the (m, n) test kernel; (m,) output."""
    y_mean = float(np.mean(y_train))
    alpha, _ = cholesky_solve(K_train, y_train - y_mean, lam, max_jitter=1e-8)
    return y_mean + K_test @ alpha


def fit_predict_subset(
    K: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    lam: float,
    precision: str = "double",
    K32: np.ndarray | None = None,
) -> np.ndarray:
    """KRR on the rows ``train`` of a precomputed (N, N) kernel; (len(test),) predictions for ``test``.

    ``y`` is (N,). Equivalent to ``fit_predict(K[train, train], y[train], K[test, train], lam)``
    but copies less: the training block is factorized in place and, with ``precision="mixed"``,
    only its float32 copy is formed (taken from ``K32 = K.astype(np.float32)`` when given, so
    several folds share one conversion) and the float64 residuals of the refinement use
    products with the whole of ``K``. Falls back to the float64 path of `cholesky_solve`.
    """
    train, test = np.asarray(train), np.asarray(test)
    y_mean = float(np.mean(y[train]))
    b = y[train] - y_mean
    alpha = None
    if precision == "mixed":
        n = len(train)
        A32 = (K32 if K32 is not None else K)[np.ix_(train, train)].astype(np.float32, copy=False)
        A32[np.arange(n), np.arange(n)] += np.float32(lam)
        x_full = np.zeros(len(K))

        def matvec(x: np.ndarray) -> np.ndarray:
            # (K_TT + lam I) x from products with the whole K: no float64 copy of the block
            x_full[train] = x
            return (K @ x_full)[train] + lam * x

        # for a positive semi-definite K every entry is at most the largest diagonal one, so
        # n * max(diag) + lam bounds |K_TT + lam I|_inf without a pass over K
        alpha = mixed_refine(A32, matvec, b, n * float(np.diagonal(K).max()) + lam)
    elif precision != "double":
        raise ValueError(f"precision must be 'double' or 'mixed', got {precision!r}")
    if alpha is None:
        alpha, _ = cholesky_solve(K[np.ix_(train, train)], b, lam, max_jitter=1e-8)
    return y_mean + K[np.ix_(test, train)] @ alpha


def learning_curve(
    K: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    lam: float,
    sizes: Sequence[int],
    random_state: int = 0,
) -> list[dict]:
    """Test MAE and RMSE vs training-set size, with fixed hyperparameters.

    Training subsets are nested: the first ``size`` rows of one seeded permutation of ``train``.
    ``K`` is the (N, N) kernel over all rows; ``train``/``test`` index it; ``y`` is (N,).
    Returns ``[{"n_train", "mae", "rmse"}, ...]`` in the unit of ``y``.
    """
    perm = np.random.default_rng(random_state).permutation(np.asarray(train))
    out = []
    for size in sizes:
        tr = perm[: int(size)]
        m = metrics(fit_predict(K[np.ix_(tr, tr)], y[tr], K[np.ix_(test, tr)], lam), y[test])
        out.append({"n_train": int(size), "mae": m["mae"], "rmse": m["rmse"]})
    return out
