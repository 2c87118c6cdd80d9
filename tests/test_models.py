"""The trained-model protocol (`qmlx.load_model`): every model kind predicts, checks its domain,
reports its metadata and saves through one interface, with the numbers of the model-specific code."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import grid_molecules

import qmlx
from qmlx.cli import main
from qmlx.errors import DataFormatError, DomainError, DomainWarning, QmlxError
from qmlx.explain import explain
from qmlx.models import CoulombNetworkModel, KernelModel, NetworkModel, Prediction, load_model

CHLOROMETHANE = "5\nCH3Cl\nC 0 0 0\nCl 0 0 1.78\nH 1.03 0 -0.36\nH -0.51 0.89 -0.36\nH -0.51 -0.89 -0.36\n"


@pytest.fixture(scope="module")
def qm7_sample(qm7):
    """Fifty molecules from QM7's official fold-0 test part."""
    from qmlx.data.splits import split

    return qm7.subset(split(qm7, "official", 0).test[:50])


# ------------------------------------------------------------------------ same numbers as before
def test_shipped_network_predicts_what_predict_network_does(qm7_sample):
    from qmlx.nn import load_network, predict_network

    model = qmlx.load_model("qm7-schnet")
    assert isinstance(model, NetworkModel) and model.kind == "network"
    pred = model.predict(qm7_sample)
    energy, atom_energies = predict_network(load_network("qm7-schnet"), qm7_sample)
    np.testing.assert_array_equal(pred.energy, energy)
    np.testing.assert_array_equal(pred.atom_energies, atom_energies)
    assert pred.uncertainty is None and pred.forces is None and not pred.refused.any()
    assert model.metadata["target"] == "atomization_energy" and model.unit == "kcal/mol"
    assert "PBE0" in model.quantity and "domain" in model.metadata and "split" in model.metadata


def test_shipped_ensemble_gives_the_ensemble_mean_and_uncertainty(qm7_sample):
    from qmlx.nn import load_network
    from qmlx.nn.io import predict_ensemble

    model = qmlx.load_model("qm7-schnet-ensemble")
    assert model.kind == "ensemble" and "uncertainty" in model.properties
    pred = model.predict(qm7_sample)
    mean, std, atom_mean = predict_ensemble(load_network("qm7-schnet-ensemble"), qm7_sample)
    np.testing.assert_allclose(pred.energy, mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred.uncertainty, std, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred.atom_energies, atom_mean, rtol=0, atol=1e-9)
    assert (pred.uncertainty > 0).all()
    # atom energies still sum to the molecular energy
    sums = np.bincount(qm7_sample.mol_index, weights=pred.atom_energies)
    np.testing.assert_allclose(sums, pred.energy, atol=1e-9)


def test_exact_krr_file_predicts_what_the_krr_model_does(qm7, tmp_path):
    from qmlx.kernels import load_krr
    from qmlx.kernels.training import train_krr

    model, _ = train_krr(qm7, np.arange(300), None, "sorted-cm", "laplacian", sigma=1600.0, lam=1e-8)
    path = model.save(tmp_path / "krr.h5")
    test = qm7.subset(np.arange(6000, 6050))
    loaded = qmlx.load_model(path)
    assert isinstance(loaded, KernelModel) and loaded.kind == "krr"
    pred = loaded.predict(test)
    np.testing.assert_array_equal(pred.energy, load_krr(path).predict_molecules(test))
    np.testing.assert_allclose(pred.energy, model.predict_molecules(test), rtol=1e-12)
    assert pred.atom_energies is None and pred.uncertainty is None


def test_nystrom_krr_trained_from_the_command_line_predicts_and_explains(qm7, tmp_path, capsys):
    from qmlx.data import save_molecules
    from qmlx.kernels import NystromKernelRidge, load_krr

    data = save_molecules(tmp_path / "part.h5", qm7.subset(np.arange(0, 7165, 12)))  # 598 molecules
    out = tmp_path / "nys.h5"
    argv = [
        "train", "krr", "--data", str(data), "--representation", "bob", "--solver", "nystrom",
        "--centers", "100", "--sigma", "3200", "--lam", "1e-4", "--split", "random", "--fold", "0",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "Nyström with 100 centres" in capsys.readouterr().out
    model = qmlx.load_model(out)
    assert isinstance(model.estimator.regressor, NystromKernelRidge)
    assert model.estimator.regressor.n_centers_ == 100 and model.metadata["solver"] == "nystrom"
    mols = qm7.subset(np.arange(1, 40, 3))
    pred = model.predict(mols)
    np.testing.assert_array_equal(pred.energy, load_krr(out).predict_molecules(mols))
    e = explain(model, mols)
    assert e.method == "neuralized"
    np.testing.assert_allclose(e.prediction, pred.energy, rtol=1e-12)
    np.testing.assert_allclose(e.conservation_error(), 0.0, atol=1e-8)


def test_coulomb_matrix_network_file_round_trips(tmp_path):
    from qmlx.nn.cm_mlp import CMMLPConfig, save_cm_network, train_cm_mlp

    mols = grid_molecules(60)
    y = mols.target("energy")
    config = CMMLPConfig(hidden=(16,), epochs=3, batch_size=16, test_samples=4)
    reg, _ = train_cm_mlp(mols, np.arange(50), y[:50], config, metadata={"target": "energy"})
    path = save_cm_network(reg, tmp_path / "cm.pt")
    model = load_model(path)
    assert isinstance(model, CoulombNetworkModel) and model.kind == "cm-network"
    pred = model.predict(mols)
    np.testing.assert_array_equal(pred.energy, reg.predict_molecules(mols))
    assert model.metadata["target"] == "energy" and model.metadata["domain"]["n_molecules"] == 50
    model.save(tmp_path / "again.pt")
    np.testing.assert_array_equal(load_model(tmp_path / "again.pt").predict(mols).energy, pred.energy)
    with pytest.raises(DataFormatError, match="Coulomb-matrix network"):
        from qmlx.nn import load_network

        load_network(path)
    assert explain(model, mols).method == "novelty"  # the one method that explains it
    with pytest.raises(QmlxError, match="Coulomb-matrix network models are explained with: novelty"):
        explain(model, mols, "lrp")


# ------------------------------------------------------------------------------------ the protocol
@pytest.fixture
def tiny_network(tmp_path):
    """A small SchNet that knows H, C, O, with a recorded training domain, saved to a file."""
    from conftest import randomized

    from qmlx.data.domain import Domain
    from qmlx.nn import SchNet, save_network

    net = randomized(lambda: SchNet(n_features=8, n_interactions=2))
    meta = {"target": "energy", "domain": Domain.from_molecules(grid_molecules()).to_dict()}
    return save_network(net, tmp_path / "tiny.pt", metadata=meta)


def test_a_refused_molecule_does_not_stop_the_others(tiny_network, tmp_path, capsys):
    import ase.io

    from qmlx.data import read_molecules

    (tmp_path / "cl.xyz").write_text(CHLOROMETHANE)
    good = list(grid_molecules(3, seed=5))
    ase.io.write(tmp_path / "mixed.xyz", [good[0], ase.io.read(tmp_path / "cl.xyz"), good[1], good[2]])
    mixed = read_molecules(tmp_path / "mixed.xyz")
    model = load_model(tiny_network)
    pred = model.predict(mixed)
    assert isinstance(pred, Prediction)
    assert pred.refused.tolist() == [False, True, False, False]
    assert "molecule 1" in pred.errors[1] and "Cl" in pred.errors[1]
    assert np.isnan(pred.energy[1]) and np.isfinite(pred.energy[[0, 2, 3]]).all()
    alone = model.predict(grid_molecules(3, seed=5)).energy
    np.testing.assert_allclose(pred.energy[[0, 2, 3]], alone, rtol=1e-5)
    lo, hi = mixed.offsets[1], mixed.offsets[2]
    assert np.isnan(pred.atom_energies[lo:hi]).all()
    assert np.isfinite(np.delete(pred.atom_energies, np.arange(lo, hi))).all()
    # the same file through the command line: the others are printed, the exit status says so
    assert main(["predict", str(tiny_network), str(tmp_path / "mixed.xyz"), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [m["energy"] is None for m in doc["molecules"]] == [False, True, False, False]
    assert "Cl" in doc["molecules"][1]["error"]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qmlx: error:") and "molecule 1" in lines[0]


def test_soft_flags_are_marked_and_warned_once(tiny_network):
    from qmlx.data import Molecules

    model = load_model(tiny_network)
    big = Molecules.concatenate([grid_molecules(2), grid_molecules(1, seed=3)])
    # a single atom is flagged, not refused
    atom = Molecules(
        Z=[6], R=np.zeros((1, 3)), n_atoms=[1], targets={"energy": [0.0]}, units={"energy": "kcal/mol"}
    )
    with pytest.warns(DomainWarning):
        pred = model.predict(Molecules.concatenate([big, atom]))
    assert pred.in_domain.tolist() == [True, True, True, False] and not pred.refused.any()
    assert "single atom" in pred.notes[3][0]
    with pytest.raises(DomainError):
        model.check_domain(Molecules(Z=[6, 1], R=np.zeros((2, 3)), n_atoms=[2], targets={}))


def test_forces_through_the_protocol_equal_the_network_forces(tiny_network):
    from qmlx.nn import load_network, predict_forces

    mols = grid_molecules(4)
    pred = load_model(tiny_network).predict(mols, forces=True)
    energy, forces, atom_energies = predict_forces(load_network(tiny_network), mols)
    np.testing.assert_array_equal(pred.forces, forces)
    np.testing.assert_array_equal(pred.energy, energy)
    with pytest.raises(QmlxError, match="gives no forces"):
        KernelModel(_tiny_krr()).predict(mols, forces=True)


def test_save_and_load_round_trip_for_networks(tiny_network, tmp_path):
    model = load_model(tiny_network)
    again = load_model(model.save(tmp_path / "copy.pt"))
    mols = grid_molecules(5)
    np.testing.assert_array_equal(again.predict(mols).energy, model.predict(mols).energy)
    assert again.metadata == model.metadata


def test_load_model_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(DataFormatError, match="nope.pt: no such file"):
        load_model(tmp_path / "nope.pt")
    bad = tmp_path / "text.h5"
    bad.write_text("not a model")
    with pytest.raises(DataFormatError, match="text.h5: not a qmlx model"):
        load_model(bad)
    with pytest.raises(QmlxError, match="not a trained qmlx model"):
        explain(torch.nn.Linear(2, 2), grid_molecules(1))


def _tiny_krr():
    from qmlx.kernels.training import train_krr

    return train_krr(
        grid_molecules(), np.arange(30), None, "bob", "laplacian", sigma=100.0, lam=1e-6, target="energy"
    )[0]


def test_calculator_goes_through_the_protocol_and_warns_once(tiny_network):
    import ase

    from qmlx.calculator import QmlxCalculator

    mols = grid_molecules(1, seed=2)
    atoms = mols[0]
    atoms.calc = QmlxCalculator(str(tiny_network))
    pred = load_model(tiny_network).predict(mols, forces=True)
    np.testing.assert_allclose(atoms.get_potential_energy(), pred.energy[0] * 0.0433641, rtol=1e-5)
    # more atoms than any training molecule: flagged; the warning comes once per calculator
    big = ase.Atoms("H8", positions=[[1.1 * k, 0, 0] for k in range(8)])
    big.calc = QmlxCalculator(str(tiny_network))
    with pytest.raises(
        DomainError, match="left the model's training domain .*more than any training molecule"
    ):
        big.get_potential_energy()  # by default, leaving the domain stops an optimisation or MD
    big.calc = QmlxCalculator(str(tiny_network), on_novel="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            big.positions[0, 0] -= 0.01 * step
            big.get_potential_energy()
    assert sum(issubclass(w.category, DomainWarning) for w in caught) == 1
    assert "more than any training molecule" in big.calc.domain_notes[0]
    with pytest.raises(QmlxError, match="gives no forces"):
        QmlxCalculator(_tiny_krr())


@pytest.mark.parametrize("fmt", ["csv", "table", "json"])
def test_an_ensemble_with_every_molecule_refused_still_writes_every_row(tmp_path, capsys, fmt):
    from conftest import randomized

    from qmlx.nn import SchNet, save_network
    from qmlx.nn.ensemble import Ensemble

    members = [randomized(lambda: SchNet(n_features=8, n_interactions=1)) for _ in range(2)]
    path = save_network(Ensemble(members), tmp_path / "ens.pt", metadata={"target": "energy"})
    (tmp_path / "cl.xyz").write_text(CHLOROMETHANE)
    pred = load_model(path).predict(grid_molecules(1))
    assert pred.uncertainty.shape == (1,) and np.isfinite(pred.uncertainty).all()
    assert main(["predict", str(path), str(tmp_path / "cl.xyz"), "--format", fmt]) == 1
    out, err = capsys.readouterr()
    assert "Cl" in err and len(err.strip().splitlines()) == 1
    if fmt == "csv":
        header, row = out.strip().splitlines()
        assert "uncertainty [kcal/mol]" in header and row.split(",")[3:5] == ["", ""]
    elif fmt == "json":
        (mol,) = json.loads(out)["molecules"]
        assert mol["energy"] is None and mol["uncertainty"] is None and "Cl" in mol["error"]
    else:
        assert "refused" in out.splitlines()[-1]
