"""Representations own their fitted state, say which atoms each feature comes from and whether a
molecule fits; kernel models save and load through that, and a fitted Pipeline is saveable."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import grid_molecules
from sklearn.pipeline import Pipeline

import qmlx
from qmlx.cli import main
from qmlx.data import Molecules
from qmlx.errors import DataFormatError, DomainError
from qmlx.kernels import KernelRidge, NystromKernelRidge, load_krr, save_krr
from qmlx.represent import REPRESENTATIONS, BagOfBonds, RepresentationError, make_representation


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_fitted_state_round_trips(name):
    mols = grid_molecules(30)
    params = {"random_state": 0} if name == "random-cm" else {}
    rep = make_representation(name, **params).fit(mols)
    state = rep.fitted_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    again = type(rep).from_fitted_state(rep.get_params(), state)
    np.testing.assert_array_equal(again.transform(mols), rep.transform(mols))


def test_bag_of_bonds_state_is_its_bag_layout():
    mols = grid_molecules(30)
    rep = BagOfBonds().fit(mols)
    rows = rep.fitted_state()["bags"]
    assert rows.shape == (len(rep.bags_), 3) and rows[:, 2].sum() == rep.n_features_out_
    assert rep.known_elements() == [1, 6, 8]
    groups = rep.feature_groups()
    assert groups.shape == (rep.n_features_out_,) and np.all(np.diff(groups) >= 0)


def _molecule(symbols: str, n: int) -> Molecules:
    from ase import Atoms

    return Molecules.from_atoms([Atoms(symbols, positions=[[1.2 * k, 0, 0] for k in range(n)])], targets={})


@pytest.mark.parametrize("name", ["cm", "sorted-cm", "eigenspectrum", "random-cm"])
def test_a_coulomb_matrix_too_small_names_the_molecule(name):
    rep = make_representation(name).fit(grid_molecules(30))
    big = Molecules.concatenate([_molecule("H2", 2), _molecule("H" * 9, 9)])
    with pytest.raises(RepresentationError, match=r"molecule 1: 9 atoms, but .* holds at most 5"):
        rep.check_fits(big)
    rep.check_fits(_molecule("H5", 5))


def test_bag_of_bonds_names_the_bag_that_overflows_and_unseen_elements():
    rep = BagOfBonds().fit(grid_molecules(30))
    with pytest.raises(RepresentationError, match=r"9 entries in bag H, but .* at most 4"):
        rep.check_fits(_molecule("H" * 9, 9))
    with pytest.raises(RepresentationError, match="contains N"):
        rep.check_fits(_molecule("NH", 2))
    BagOfBonds(on_overflow="truncate").fit(grid_molecules(30)).check_fits(_molecule("H" * 9, 9))


@pytest.mark.parametrize("name", ["eigenspectrum", "random-cm"])
def test_representations_that_do_not_map_onto_atoms_say_so(name):
    rep = make_representation(name).fit(grid_molecules(10))
    with pytest.raises(RepresentationError, match="do not map onto atoms"):
        rep.feature_atoms(grid_molecules(2))


@pytest.mark.parametrize("regressor", [KernelRidge, NystromKernelRidge])
def test_a_fitted_pipeline_saves_and_predicts_like_the_pipeline(tmp_path, regressor):
    mols = grid_molecules(40)
    y = mols.target("energy")
    extra = {"n_centers": 20, "random_state": 0} if regressor is NystromKernelRidge else {}
    pipe = Pipeline([("bob", BagOfBonds()), ("krr", regressor("laplacian", sigma=100.0, lam=1e-6, **extra))])
    pipe.fit(mols.subset(np.arange(30)), y[:30])
    path = save_krr(pipe, tmp_path / "pipe.h5")
    test = mols.subset(np.arange(30, 40))
    np.testing.assert_allclose(load_krr(path).predict_molecules(test), pipe.predict(test), rtol=1e-12)
    assert qmlx.load_model(path).kind == "krr"
    with pytest.raises(DataFormatError, match="saveable pipeline"):
        save_krr(Pipeline([("krr", KernelRidge())]), tmp_path / "bad.h5")


def test_train_krr_sizes_the_representation_for_the_whole_data_set(qm7, tmp_path, capsys):
    from qmlx.data.splits import split

    out = tmp_path / "k300.h5"
    argv = [
        "train",
        "krr",
        "--data",
        "qm7",
        "--representation",
        "sorted-cm",
        "--fold",
        "0",
        "--n-train",
        "300",
    ]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    mae = float(text.split("test MAE")[1].split()[0])
    assert 0 < mae < 40 and "refused" not in text
    model = load_krr(out)
    assert model.representation.n_max_ == qm7.max_atoms == 23
    test = split(qm7, "official", 0).test
    assert qm7.n_atoms[test].max() == 23  # the molecule that did not fit when sized from 300 molecules


def test_a_kernel_model_refuses_a_molecule_that_does_not_fit_alone(tmp_path):
    from qmlx.kernels.training import train_krr

    model, _ = train_krr(grid_molecules(), np.arange(30), None, "bob", sigma=100.0, lam=1e-6, target="energy")
    trained = qmlx.load_model(model.save(tmp_path / "bob.h5"))
    mols = Molecules.concatenate([_molecule("H2", 2), _molecule("H" * 9, 9), _molecule("CH", 2)])
    pred = trained.predict(mols)
    assert pred.refused.tolist() == [False, True, False]
    assert "entries in bag H," in pred.errors[1] and np.isfinite(pred.energy[[0, 2]]).all()
    with pytest.raises(DomainError, match="molecule 1: 9 entries in bag H,"):
        trained.check_domain(mols)
