"""`qmlx.kernels.KernelRidge` under scikit-learn's estimator contract (``check_estimator``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

from qmlx.kernels import KernelRidge, NystromKernelRidge, kernel_matrix


@pytest.fixture
def regression():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 4))
    y = np.cos(X[:, 0]) + 0.3 * X[:, 1] + 0.02 * rng.normal(size=60)
    return X, y


@pytest.mark.parametrize("estimator", [KernelRidge, NystromKernelRidge])
def test_passes_check_estimator(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator(), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert len(results) > 40
    assert not failed, f"check_estimator failed: {failed}"


@pytest.mark.parametrize(
    "params",
    [
        {"sigma": 0.0},
        {"sigma": -1.0},
        {"lam": -1e-3},
        {"kernel": "rbf"},
        {"precision": "half"},
        {"block_size": 0},
        {"max_jitter": -1.0},
    ],
)
def test_bad_hyperparameters_raise_value_error_at_fit(regression, params):
    X, y = regression
    est = KernelRidge(**params)  # constructing never validates (scikit-learn's contract)
    with pytest.raises(ValueError, match=next(iter(params))):
        est.fit(X, y)


def test_set_input_fits_and_predicts():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 3, 5))  # 30 sets of 3 members with 5 features each
    y = X.mean(axis=1).sum(axis=1)
    model = KernelRidge(kernel="laplacian", sigma=5.0, lam=1e-10).fit(X, y)
    assert model.n_features_in_ == 5 and model.X_fit_.shape == (30, 3, 5)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-6)
    new = rng.normal(size=(4, 2, 5))  # fewer members per set than in training
    K = kernel_matrix(new, X, "laplacian", 5.0)
    np.testing.assert_allclose(model.predict(new), model.y_mean_ + K @ model.alpha_, rtol=1e-12)
    with pytest.raises(ValueError, match="features"):
        model.predict(new[:, :, :4])
    with pytest.raises(ValueError, match="3-D sets"):
        model.predict(new[:, 0, :])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 3, 5), np.nan))


def test_input_validation_messages(regression):
    X, y = regression
    with pytest.raises(ValueError, match="Reshape your data"):
        KernelRidge().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="got shape"):
        KernelRidge().fit(X.reshape(60, 2, 1, 2), y)
    with pytest.raises(ValueError, match="inf"):
        KernelRidge().fit(np.where(X > 2, np.inf, X), y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KernelRidge().fit(X, y[:-1])
    with pytest.raises(TypeError, match="representation"):
        KernelRidge().fit(object(), y)
    with pytest.raises(ValueError, match="square"):
        KernelRidge(kernel="precomputed").fit(np.eye(60)[:, :50], y)


def test_clone_and_grid_search(regression):
    X, y = regression
    est = KernelRidge(kernel="gaussian", sigma=1.0, lam=1e-6)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "alpha_")
    search = GridSearchCV(
        est, {"sigma": [0.3, 3.0], "lam": [1e-8, 1e-3]}, cv=3, scoring="neg_mean_absolute_error"
    ).fit(X, y)
    assert search.best_params_["sigma"] == 3.0  # 0.3 is far too narrow for these data
    assert search.predict(X).shape == (len(X),)
    assert not hasattr(est, "alpha_")  # the search fitted clones


def test_precomputed_predictions_match_closed_form(regression):
    X, y = regression
    train, test = slice(0, 45), slice(45, None)
    lam = 1e-4
    K = kernel_matrix(X, X[train], "gaussian", 1.5)
    model = KernelRidge(kernel="precomputed", lam=lam).fit(K[train], y[train])
    assert model.n_features_in_ == 45
    y_mean = y[train].mean()
    alpha = np.linalg.solve(K[train] + lam * np.eye(45), y[train] - y_mean)
    np.testing.assert_allclose(model.alpha_, alpha, rtol=1e-8, atol=1e-10 * np.abs(alpha).max())
    np.testing.assert_allclose(model.predict(K[test]), y_mean + K[test] @ alpha, rtol=1e-10, atol=1e-10)
    # the same model on features gives the same predictions
    features = KernelRidge(kernel="gaussian", sigma=1.5, lam=lam).fit(X[train], y[train])
    np.testing.assert_allclose(features.predict(X[test]), model.predict(K[test]), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="one column per training sample"):
        model.predict(K[test, :40])
    readonly = K[train].copy()
    readonly.flags.writeable = False  # the solve must not write into a read-only kernel
    np.testing.assert_allclose(
        KernelRidge(kernel="precomputed", lam=lam).fit(readonly, y[train]).alpha_, alpha
    )


def test_precomputed_estimator_is_pairwise():
    from sklearn.utils import get_tags

    assert get_tags(KernelRidge(kernel="precomputed")).input_tags.pairwise
    assert not get_tags(KernelRidge()).input_tags.pairwise
    assert get_tags(KernelRidge()).input_tags.three_d_array


def test_loaded_model_predicts_through_validation(tmp_path):
    from qmlx.data import Molecules
    from qmlx.kernels import is_krr_file, load_krr
    from qmlx.kernels.training import train_krr

    rng = np.random.default_rng(0)
    n_atoms = rng.integers(3, 8, 40)
    Z = rng.choice([1, 6, 7, 8], size=n_atoms.sum())
    energy = np.bincount(np.repeat(np.arange(40), n_atoms), weights=-np.where(Z == 1, 60.0, 150.0))
    mols = Molecules(
        Z=Z,
        R=rng.normal(scale=1.2, size=(n_atoms.sum(), 3)),
        n_atoms=n_atoms,
        targets={"atomization_energy": energy},
        units={"atomization_energy": "kcal/mol"},
        name="synthetic",
    )
    model, _ = train_krr(mols, np.arange(30), None, "sorted-cm", sigma=200.0, lam=1e-6)
    path = model.save(tmp_path / "m.h5")
    assert is_krr_file(path)
    loaded = load_krr(path)
    new = mols.subset(np.arange(30, 40))
    np.testing.assert_allclose(loaded.predict_molecules(new), model.predict_molecules(new), rtol=1e-12)
    with pytest.raises(ValueError, match="features"):
        loaded.regressor.predict(np.zeros((2, loaded.regressor.n_features_in_ + 1)))
