"""`qmlx.kernels.NystromKernelRidge`: FALKON against the exact solver, CG reporting, the estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from qmlx.kernels import KernelRidge, NystromKernelRidge, kernel_matrix


@pytest.fixture
def smooth():
    """A smooth function of 3 features: (1200, 3) training and (300, 3) test rows with targets."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(1500, 3))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 1] * X[:, 2]
    return X[:1200], y[:1200], X[1200:], y[1200:]


def sparse_features(n: int, d: int, seed: int) -> np.ndarray:
    """Non-negative rows with zeros scattered over the columns, like Bag of Bonds vectors."""
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(size=(n, d)))
    X[rng.random((n, d)) < np.linspace(0.05, 0.9, d)[rng.permutation(d)]] = 0.0
    return X


@pytest.mark.parametrize("kernel,sigma,lam", [("laplacian", 6.0, 1e-6), ("gaussian", 1.5, 1e-4)])
def test_all_rows_as_centres_reproduce_exact_krr(kernel, sigma, lam):
    X = sparse_features(400, 10, 1)
    y = X @ np.linspace(-1.0, 1.0, 10) + np.sin(X[:, 0] * X[:, 3])
    Xt = sparse_features(100, 10, 2)
    exact = KernelRidge(kernel, sigma, lam).fit(X, y)
    approx = NystromKernelRidge(kernel, sigma=sigma, lam=lam, n_centers=len(X), block_size=64).fit(X, y)
    assert approx.n_centers_ == len(X) and approx.converged_
    assert approx.n_iter_ <= 3  # the preconditioner inverts the system exactly when M = n
    np.testing.assert_allclose(approx.predict(Xt), exact.predict(Xt), rtol=0, atol=1e-8)
    np.testing.assert_allclose(approx.alpha_, exact.alpha_, rtol=0, atol=1e-6 * np.abs(exact.alpha_).max())


def test_all_members_as_centres_reproduce_exact_krr_on_sets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 3, 4))  # 60 sets of 3 members with 4 features each
    y = X.mean(axis=1).sum(axis=1)
    exact = KernelRidge("laplacian", 4.0, 1e-8).fit(X, y)
    approx = NystromKernelRidge("laplacian", sigma=4.0, lam=1e-8, n_centers=60).fit(X, y)
    assert approx.centers_.shape == (60, 3, 4)
    new = rng.normal(size=(7, 2, 4))  # fewer members per set than in training
    np.testing.assert_allclose(approx.predict(new), exact.predict(new), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="3-D sets"):
        approx.predict(new[:, 0, :])


def test_fewer_centres_approximate_exact_krr_on_a_smooth_problem(smooth):
    X, y, Xt, yt = smooth
    exact = KernelRidge("gaussian", 2.0, 1e-3).fit(X, y).predict(Xt)
    gaps = []
    for M in (100, 400):
        pred = (
            NystromKernelRidge("gaussian", sigma=2.0, lam=1e-3, n_centers=M, random_state=0)
            .fit(X, y)
            .predict(Xt)
        )
        gaps.append(np.sqrt(np.mean((pred - exact) ** 2)) / np.std(yt))
    assert gaps[1] < 5e-3  # 400 of 1200 centres: predictions within 0.5 % of the target spread
    assert gaps[1] < gaps[0]  # more centres, closer to the exact solution


def test_conjugate_gradients_converge_and_report_residuals(smooth):
    X, y, _, _ = smooth
    kernel, sigma, lam = "laplacian", 3.0, 1e-3
    model = NystromKernelRidge(kernel, sigma=sigma, lam=lam, n_centers=200, tol=1e-9, random_state=0).fit(
        X, y
    )
    r = model.residuals_
    assert model.converged_ and r[0] == 1.0 and r[-1] <= 1e-9 and len(r) == model.n_iter_ + 1
    assert 1 < model.n_iter_ < 60
    # the normal equations (K_nM^T K_nM + lam K_MM) alpha = K_nM^T (y - y_mean) hold
    K_nM = kernel_matrix(X, model.centers_, kernel, sigma)
    K_MM = kernel_matrix(model.centers_, None, kernel, sigma)
    b = K_nM.T @ (y - model.y_mean_)
    residual = K_nM.T @ (K_nM @ model.alpha_) + lam * (K_MM @ model.alpha_) - b
    assert np.linalg.norm(residual) <= 1e-8 * np.linalg.norm(b)

    with pytest.warns(ConvergenceWarning, match="2 iterations"):
        early = NystromKernelRidge(kernel, sigma=sigma, lam=lam, n_centers=200, max_iter=2, tol=1e-12).fit(
            X, y
        )
    assert not early.converged_ and early.n_iter_ == 2 and early.residuals_[-1] > 1e-12


def test_constant_target_needs_no_iterations():
    X = np.random.default_rng(0).normal(size=(30, 2))
    model = NystromKernelRidge(n_centers=10, random_state=0).fit(X, np.full(30, 4.0))
    assert model.n_iter_ == 0 and model.converged_
    np.testing.assert_allclose(model.predict(X), 4.0)


@pytest.mark.parametrize(
    "params",
    [
        {"sigma": 0.0},
        {"sigma": -1.0},
        {"lam": -1e-3},
        {"kernel": "rbf"},
        {"kernel": "precomputed"},
        {"n_centers": 0},
        {"max_iter": 0},
        {"tol": -1e-6},
        {"block_size": 0},
        {"cache_size": -1.0},
        {"n_jobs": 0},
        {"random_state": "seed"},
    ],
)
def test_bad_hyperparameters_raise_value_error_at_fit(smooth, params):
    X, y, _, _ = smooth
    est = NystromKernelRidge(**params)  # constructing never validates (scikit-learn's contract)
    with pytest.raises(ValueError, match=next(iter(params))):
        est.fit(X[:50], y[:50])


def test_same_random_state_gives_the_same_model(smooth):
    X, y, Xt, _ = smooth

    def fit(seed: int) -> NystromKernelRidge:
        return NystromKernelRidge(sigma=3.0, lam=1e-6, n_centers=100, random_state=seed).fit(X, y)

    a, b, c = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(a.center_indices_, b.center_indices_)
    np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))
    assert not np.array_equal(a.center_indices_, c.center_indices_)
    np.testing.assert_array_equal(a.centers_, X[a.center_indices_])


def test_streamed_kernel_rows_give_the_cached_solution():
    X = sparse_features(500, 8, 4)
    y = np.cos(X).sum(axis=1)
    params = {"sigma": 3.0, "lam": 1e-6, "n_centers": 120, "block_size": 50, "random_state": 1}
    cached = NystromKernelRidge(**params).fit(X, y)
    streamed = NystromKernelRidge(**params, cache_size=0).fit(X, y)
    partly = NystromKernelRidge(**params, cache_size=150 * 120 * 8 / 2**20).fit(X, y)  # 3 of 10 chunks
    assert (cached.cached_rows_, streamed.cached_rows_, partly.cached_rows_) == (500, 0, 150)
    np.testing.assert_allclose(streamed.alpha_, cached.alpha_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(partly.predict(X), cached.predict(X), rtol=1e-12)


def test_duplicated_rows_become_one_centre():
    X = np.repeat(np.random.default_rng(2).normal(size=(20, 3)), 3, axis=0)
    y = X.sum(axis=1)
    model = NystromKernelRidge(sigma=2.0, lam=1e-8, n_centers=60).fit(X, y)
    assert model.n_centers_ == 20 and len(np.unique(model.centers_, axis=0)) == 20
    exact = KernelRidge(sigma=2.0, lam=1e-8).fit(X[::3], y[::3])
    np.testing.assert_allclose(model.predict(X), exact.predict(X), atol=1e-6)


def test_clone_and_grid_search(smooth):
    X, y, _, _ = smooth
    est = NystromKernelRidge(sigma=1.0, lam=1e-6, n_centers=100, random_state=0)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "alpha_")
    search = GridSearchCV(
        est, {"sigma": [0.05, 3.0], "lam": [1e-6, 1e-3]}, cv=3, scoring="neg_mean_absolute_error"
    ).fit(X[:300], y[:300])
    assert search.best_params_["sigma"] == 3.0  # 0.05 is far too narrow for these data


def test_saved_model_predicts_like_the_original(tmp_path):
    from qmlx.data import Molecules
    from qmlx.kernels import KRRModel, load_krr
    from qmlx.represent import make_representation

    rng = np.random.default_rng(0)
    n_atoms = rng.integers(3, 8, 60)
    Z = rng.choice([1, 6, 7, 8], size=n_atoms.sum())
    grid = 1.4 * np.stack(np.meshgrid(*[np.arange(3)] * 3), axis=-1).reshape(-1, 3)  # points 1.4 Å apart
    R = np.concatenate([grid[rng.choice(len(grid), k, replace=False)] for k in n_atoms])
    energy = np.bincount(np.repeat(np.arange(60), n_atoms), weights=-np.where(Z == 1, 60.0, 150.0))
    mols = Molecules(
        Z=Z,
        R=R + rng.normal(scale=0.05, size=R.shape),
        n_atoms=n_atoms,
        targets={"atomization_energy": energy},
        units={"atomization_energy": "kcal/mol"},
        name="synthetic",
    )
    train, new = mols.subset(np.arange(50)), mols.subset(np.arange(50, 60))
    rep = make_representation("bob").fit(mols)
    reg = NystromKernelRidge(sigma=200.0, lam=1e-6, n_centers=20, random_state=3, n_jobs=2)
    reg.fit(rep.transform(train), train.target("atomization_energy"))
    model = KRRModel("bob", rep, reg, metadata={"n_train": 50})
    loaded = load_krr(model.save(tmp_path / "m.h5"))
    assert isinstance(loaded.regressor, NystromKernelRidge) and "20 Nyström centres" in repr(loaded)
    params = {k: v for k, v in reg.get_params().items() if k != "n_jobs"}
    assert {k: v for k, v in loaded.regressor.get_params().items() if k != "n_jobs"} == params
    np.testing.assert_array_equal(loaded.regressor.centers_, reg.centers_)
    np.testing.assert_allclose(loaded.predict_molecules(new), model.predict_molecules(new), rtol=1e-12)

    # the file stores the centres as the kernel rows: read as an exact KernelRidge (as by a reader
    # that knows no other regressor) it predicts the same
    import h5py

    with h5py.File(tmp_path / "m.h5", "a") as f:
        del f.attrs["regressor"], f.attrs["regressor_params"]
    as_exact = load_krr(tmp_path / "m.h5")
    assert isinstance(as_exact.regressor, KernelRidge)
    np.testing.assert_allclose(as_exact.predict_molecules(new), model.predict_molecules(new), rtol=1e-12)
