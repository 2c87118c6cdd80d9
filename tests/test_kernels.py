"""Kernels and kernel ridge regression: agreement with scipy/scikit-learn and the estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from qmlx.kernels import (
    KernelProvider,
    KernelRidge,
    KernelSolveError,
    cholesky_solve,
    distance_matrix,
    kernel_matrices,
    kernel_matrix,
    learning_curve,
    select_hyperparameters,
)


@pytest.fixture
def regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.05 * rng.normal(size=120)
    return X, y


def zero_tailed(n: int, d: int, seed: int) -> np.ndarray:
    """Rows with zero tails of random length, like flattened sorted Coulomb matrices."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[np.arange(d)[None, :] >= rng.integers(0, d + 1, n)[:, None]] = 0.0
    return X


@pytest.mark.parametrize("metric,scipy_metric", [("l1", "cityblock"), ("sqeuclidean", "sqeuclidean")])
def test_blocked_distances_match_scipy(metric, scipy_metric):
    X, Y = zero_tailed(70, 12, 1), zero_tailed(45, 12, 2)
    np.testing.assert_allclose(
        distance_matrix(X, Y, metric, block_size=16), cdist(X, Y, scipy_metric), atol=1e-10
    )
    D = distance_matrix(X, None, metric, block_size=16)
    np.testing.assert_allclose(D, cdist(X, X, scipy_metric), atol=1e-10)
    assert (D == D.T).all() and (np.diag(D) == 0).all()


def test_kernels_are_float64_and_match_definitions(regression):
    X, _ = regression
    K = kernel_matrix(X[:30], X[:20], "laplacian", sigma=2.0)
    assert K.dtype == np.float64
    np.testing.assert_allclose(K, np.exp(-cdist(X[:30], X[:20], "cityblock") / 2.0), rtol=1e-13)
    G = kernel_matrix(X[:30], X[:20], "gaussian", sigma=2.0)
    np.testing.assert_allclose(G, np.exp(-cdist(X[:30], X[:20], "sqeuclidean") / 8.0), rtol=1e-12)


def test_set_kernel_is_mean_over_member_pairs():
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(7, 3, 5)), rng.normal(size=(4, 2, 5))
    K = kernel_matrix(A, B, "laplacian", sigma=3.0, block_size=4)
    ref = (
        np.exp(-cdist(A.reshape(-1, 5), B.reshape(-1, 5), "cityblock") / 3.0)
        .reshape(7, 3, 4, 2)
        .mean(axis=(1, 3))
    )
    np.testing.assert_allclose(K, ref, rtol=1e-13)
    S1, S2 = kernel_matrices(A, None, "laplacian", [1.0, 3.0], block_size=4)
    np.testing.assert_allclose(S2, kernel_matrix(A, A, "laplacian", 3.0), rtol=1e-13)
    assert (S1 == S1.T).all()


@pytest.mark.parametrize("kernel,sk_kernel", [("laplacian", "laplacian"), ("gaussian", "rbf")])
def test_predictions_equal_scikit_learn(regression, kernel, sk_kernel):
    X, y = regression
    sigma, lam = 1.5, 1e-3
    gamma = 1 / sigma if kernel == "laplacian" else 1 / (2 * sigma**2)
    ours = KernelRidge(kernel=kernel, sigma=sigma, lam=lam, center=False).fit(X[:100], y[:100])
    ref = SkKernelRidge(kernel=sk_kernel, gamma=gamma, alpha=lam).fit(X[:100], y[:100])
    np.testing.assert_allclose(ours.predict(X[100:]), ref.predict(X[100:]), rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.alpha_, ref.dual_coef_, rtol=0, atol=1e-8)


def test_vanishing_lambda_interpolates_training_data(regression):
    X, y = regression
    model = KernelRidge(kernel="laplacian", sigma=3.0, lam=1e-12).fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-7)
    assert model.y_mean_ == pytest.approx(y.mean())


def test_solver_backends_agree(regression):
    X, y = regression
    K = kernel_matrix(X, None, "gaussian", 2.0)
    a, _ = cholesky_solve(K, y, 1e-6, backend="scipy")
    b, _ = cholesky_solve(K, y, 1e-6, backend="torch")
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(np.diag(K), 1.0)  # diagonal restored


def test_non_positive_definite_matrix_raises_or_gets_jitter():
    K = np.ones((4, 4))  # rank one: singular
    with pytest.raises(KernelSolveError, match="not positive definite"):
        cholesky_solve(K, np.ones(4), lam=0.0, max_jitter=0.0)
    with pytest.warns(UserWarning, match="jitter"):
        alpha, jitter = cholesky_solve(K, np.ones(4), lam=0.0, max_jitter=1e-6)
    assert 0 < jitter <= 1e-6 and np.isfinite(alpha).all()
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(KernelSolveError):
        cholesky_solve(indefinite, np.ones(2), lam=0.0, max_jitter=1e-6)


def test_clone_gridsearch_and_pipeline(regression):
    X, y = regression
    est = KernelRidge(kernel="gaussian", sigma=2.0, lam=1e-4)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "alpha_")
    search = GridSearchCV(
        est, {"sigma": [0.5, 2.0, 8.0], "lam": [1e-6, 1e-2]}, cv=3, scoring="neg_mean_absolute_error"
    ).fit(X, y)
    assert search.best_params_["sigma"] in (0.5, 2.0, 8.0)
    assert search.predict(X).shape == (len(X),)


def test_pipeline_on_molecules(small_molecules):
    from qmlx.represent import SortedCoulombMatrix

    y = small_molecules.target("energy")
    pipe = Pipeline([("rep", SortedCoulombMatrix()), ("krr", KernelRidge(sigma=50.0, lam=1e-10))])
    pipe.fit(small_molecules, y)
    np.testing.assert_allclose(pipe.predict(small_molecules), y, atol=1e-6)


def test_predict_checks_feature_count(regression):
    X, y = regression
    model = KernelRidge().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])


def test_inner_cv_selection_and_learning_curve(regression):
    X, y = regression
    provider = KernelProvider(X, "laplacian")
    res = select_hyperparameters(provider, y, sigmas=[0.1, 3.0, 30.0], lams=[1e-8, 1e-2], n_splits=3)
    assert res.mae.shape == (3, 2) and res.best_mae == res.mae.min()
    assert res.best_sigma == 30.0 and res.on_edge()  # 0.1 is far too narrow for this data
    curve = learning_curve(provider(30.0), y, np.arange(90), np.arange(90, 120), 1e-8, [20, 90])
    assert [c["n_train"] for c in curve] == [20, 90] and curve[1]["mae"] < curve[0]["mae"]
