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
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_blocked_distances_match_scipy(metric, scipy_metric, n_jobs):
    X, Y = zero_tailed(70, 12, 1), zero_tailed(45, 12, 2)
    np.testing.assert_allclose(
        distance_matrix(X, Y, metric, block_size=16, n_jobs=n_jobs), cdist(X, Y, scipy_metric), atol=1e-10
    )
    D = distance_matrix(X, None, metric, block_size=16, n_jobs=n_jobs)
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
    c, _ = cholesky_solve(K, y, 1e-6, precision="mixed")
    np.testing.assert_allclose(c, a, rtol=1e-9, atol=1e-9 * np.abs(a).max())


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
    from qmlx.kernels import fit_predict, fit_predict_subset

    K = provider(30.0)
    ref = fit_predict(K[:90, :90], y[:90], K[90:, :90], 1e-8)
    for precision in ("double", "mixed"):
        got = fit_predict_subset(K, y, np.arange(90), np.arange(90, 120), 1e-8, precision=precision)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    curve = learning_curve(provider(30.0), y, np.arange(90), np.arange(90, 120), 1e-8, [20, 90])
    assert [c["n_train"] for c in curve] == [20, 90] and curve[1]["mae"] < curve[0]["mae"]


# ---------------------------------------------------------------- saved models and `qmlx train krr`
def synthetic_set(n: int = 40, seed: int = 0, sizes: tuple[int, int] = (3, 8)):
    """Small random molecules (C, N, O, H) with an energy roughly additive in atoms, in kcal/mol."""
    from qmlx.data import Molecules

    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(*sizes, n)
    Z = rng.choice([1, 1, 6, 7, 8], size=n_atoms.sum())
    parts = []
    for k in n_atoms:  # redraw a molecule until no two atoms are closer than 0.7 Å
        while True:
            P = rng.normal(scale=1.2, size=(k, 3))
            if np.linalg.norm(P[:, None] - P[None], axis=-1)[np.triu_indices(k, 1)].min() >= 0.7:
                break
        parts.append(P)
    R = np.concatenate(parts)
    mol = np.repeat(np.arange(n), n_atoms)
    energy = np.bincount(mol, weights=-np.where(Z == 1, 60.0, 150.0)) + rng.normal(scale=2.0, size=n)
    return Molecules(
        Z=Z,
        R=R,
        n_atoms=n_atoms,
        targets={"atomization_energy": energy},
        units={"atomization_energy": "kcal/mol"},
        name="synthetic",
    )


@pytest.mark.parametrize("representation", ["sorted-cm", "bob", "random-cm", "eigenspectrum"])
def test_saved_model_predicts_like_the_original(tmp_path, representation):
    from qmlx.kernels.model import is_krr_file, load_krr
    from qmlx.kernels.training import train_krr

    mols = synthetic_set()
    params = {"n_samples": 3} if representation == "random-cm" else None
    model, info = train_krr(
        mols,
        np.arange(30),
        np.arange(30, 40),
        representation,
        representation_params=params,
        sigma=200.0,
        lam=1e-6,
    )
    assert info["test_mae_kcal_mol"] >= 0 and info["sigma"] == 200.0
    path = model.save(tmp_path / "m.h5")
    assert is_krr_file(path) and not is_krr_file(tmp_path / "missing.h5")
    loaded = load_krr(path)
    new = mols.subset(np.arange(30, 40))
    np.testing.assert_allclose(loaded.predict_molecules(new), model.predict_molecules(new), rtol=1e-12)
    assert loaded.unit == "kcal/mol" and loaded.metadata["n_train"] == 30
    assert not list(tmp_path.glob(".*part"))  # no temporary file left behind


def test_loading_a_wrong_or_corrupt_file_names_it(tmp_path):
    import h5py

    from qmlx.errors import DataFormatError
    from qmlx.kernels.model import is_krr_file, load_krr
    from qmlx.kernels.training import train_krr

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["schema"] = "qmlx.molecules"
    model, _ = train_krr(synthetic_set(), np.arange(30), None, sigma=100.0, lam=1e-6)
    good = model.save(tmp_path / "good.h5")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(good.read_bytes()[:2000])
    for bad in (text, other, broken, tmp_path / "missing.h5"):
        assert not is_krr_file(bad)
        with pytest.raises(DataFormatError, match=bad.name):
            load_krr(bad)


def test_train_krr_subcommand_trains_reports_and_saves(tmp_path, capsys):
    from qmlx.cli import main
    from qmlx.data import save_molecules
    from qmlx.kernels import load_krr

    data = save_molecules(tmp_path / "set.h5", synthetic_set(sizes=(6, 7)))  # one size: no overflow
    out = tmp_path / "model.h5"
    argv = f"train krr --data {data} --split random --fold 1 --representation sorted-cm --out {out} --quiet"
    assert main(argv.split()) == 0
    printed = capsys.readouterr().out
    assert "test MAE" in printed and "kcal/mol" in printed and out.exists()
    model = load_krr(out)
    assert model.representation_name == "sorted-cm"
    assert model.metadata["split"]["method"] == "random" and model.metadata["split"]["fold"] == 1
    assert model.metadata["domain"]["elements"] == sorted(set(model.metadata["domain"]["elements"]))


def test_quick_kernel_experiment_runs_on_qm7(qm7, tmp_path):
    from experiments._report import run_record
    from experiments.qm7_kernels import build_parser, compute, render

    argv = ["--quick", "--out-dir", str(tmp_path), "--methods", "sorted-cm-laplacian", "bob-laplacian"]
    result = compute(build_parser().parse_args(argv))
    sorted_cm, bob = (result["methods"][k]["mae_mean"] for k in ("sorted-cm-laplacian", "bob-laplacian"))
    assert bob < sorted_cm < 15  # Bag of Bonds beats the sorted Coulomb matrix even on 1200 molecules
    assert result["methods"]["bob-laplacian"]["folds"][0]["n_train"] == 1200
    result["run"] = run_record("experiments/qm7_kernels.py", argv, threads=1, wall_time_s=1.0)
    render(result, tmp_path)
    md = (tmp_path / "qm7_kernels_quick.md").read_text()
    assert "QUICK" in md and f"| bob-laplacian | {bob:.2f} ± 0.00 |" in md
    assert (tmp_path / "qm7_kernels_quick_learning_curve.png").stat().st_size > 0


def test_qm7_molecule_from_xyz_predicts_like_from_the_dataset(qm7, tmp_path):
    """What `qmlx predict` relies on: an xyz file in Å gives the same energy as the dataset entry."""
    import ase.io

    from qmlx.data import read_molecules
    from qmlx.kernels.model import load_krr
    from qmlx.kernels.training import train_krr

    train, test = np.arange(0, 600), np.arange(600, 610)
    model, _ = train_krr(qm7, train, None, "sorted-cm", sigma=1600.0, lam=1e-10)
    path = model.save(tmp_path / "m.h5")
    xyz = tmp_path / "mol.xyz"
    ase.io.write(xyz, qm7.subset(test).to_atoms(), format="xyz")
    from_file = load_krr(path).predict_molecules(read_molecules(xyz))
    np.testing.assert_allclose(from_file, model.predict_molecules(qm7.subset(test)), rtol=0, atol=1e-6)


def test_element_baseline_learns_total_energies_and_survives_saving(tmp_path):
    """Total energies (about -24,000 kcal/mol per carbon) differ between molecules mostly by
    composition; with per-element reference energies KRR fits what is left, without them the
    kernel has to learn the composition from distances and fails."""
    from qmlx.chem import element_counts
    from qmlx.explain.kernel import explain_krr
    from qmlx.kernels.model import load_krr
    from qmlx.kernels.training import train_krr

    mols = synthetic_set(n=80, seed=4)
    refs = {1: -313.0, 6: -23_820.0, 7: -34_250.0, 8: -47_100.0}  # roughly PBE0 atoms, kcal/mol
    total = mols.targets["atomization_energy"] + element_counts(mols.Z, mols.n_atoms, list(refs)) @ list(
        refs.values()
    )
    mols.targets["energy"] = total
    mols.units["energy"] = "kcal/mol"
    train, test = np.arange(60), np.arange(60, 80)
    kw = dict(representation="sorted-cm", kernel="laplacian", sigma=400.0, lam=1e-8, target="energy")
    with_base, info = train_krr(mols, train, test, baseline="elements", **kw)
    without, info_none = train_krr(mols, train, test, baseline="none", **kw)
    assert info["test_mae_kcal_mol"] < 10.0 < info_none["test_mae_kcal_mol"]
    assert set(with_base.baseline) == {1, 6, 7, 8} and with_base.metadata["baseline"] == "elements"
    loaded = load_krr(with_base.save(tmp_path / "total.h5"))
    assert loaded.baseline == with_base.baseline
    np.testing.assert_allclose(loaded.predict_molecules(mols[test]), with_base.predict_molecules(mols[test]))
    relevance, padding, prediction, reference = explain_krr(loaded, mols[test])
    sums = np.bincount(mols[test].mol_index, weights=relevance) + padding
    np.testing.assert_allclose(sums, prediction - reference, rtol=1e-10, atol=1e-6)
