"""Ensembles: one file, mean prediction, members' spread as uncertainty, conserving explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qmlx.cli import main
from qmlx.explain import explain
from qmlx.nn import SchNet, load_network, predict_network, save_network
from qmlx.nn.ensemble import Ensemble
from qmlx.nn.io import predict_ensemble
from qmlx.train.ensemble import uncertainty_calibration


def _member(seed: int) -> SchNet:
    torch.manual_seed(seed)
    model = SchNet(n_features=8, n_interactions=2)
    with torch.no_grad():
        model.head.reference[[1, 6, 8]] = torch.tensor([-10.0, -40.0, -60.0], dtype=torch.float64)
    return model.eval()


def test_ensemble_file_predicts_the_members_mean_and_spread(tmp_path):
    from conftest import grid_molecules

    members = [_member(s) for s in range(3)]
    path = save_network(Ensemble(members), tmp_path / "ens.pt", metadata={"target": "energy"})
    loaded = load_network(path)
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 3
    assert loaded.metadata["target"] == "energy"
    mols = grid_molecules(12)
    each = np.stack([predict_network(m, mols)[0] for m in members])
    mean, std, atom_mean = predict_ensemble(loaded, mols)
    np.testing.assert_allclose(mean, each.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, each.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.bincount(mols.mol_index, weights=atom_mean), mean, rtol=1e-6)
    result = explain(loaded, mols, "lrp")
    np.testing.assert_allclose(result.conservation_error(), 0.0, atol=1e-6 * np.abs(mean).max())
    singles = [explain(m, mols, "lrp").relevance for m in members]
    np.testing.assert_allclose(result.relevance, np.mean(singles, 0), atol=1e-10)
    np.testing.assert_allclose(result.spread, np.std(singles, 0), atol=1e-10)


def test_reported_uncertainty_is_the_spread_times_the_fitted_scale():
    from conftest import grid_molecules

    ensemble, mols = Ensemble([_member(s) for s in range(3)]), grid_molecules(6)
    _, raw, _ = predict_ensemble(ensemble, mols)
    ensemble.metadata = {"uncertainty_scale": 2.5}
    mean, scaled, _ = predict_ensemble(ensemble, mols)
    np.testing.assert_allclose(scaled, 2.5 * raw, rtol=1e-12)
    np.testing.assert_allclose(mean, predict_ensemble(Ensemble(ensemble.members), mols)[0])


def test_members_of_different_cutoffs_are_refused():
    with pytest.raises(ValueError, match="share"):
        Ensemble([SchNet(n_features=8, cutoff=5.0), SchNet(n_features=8, cutoff=4.0)])


def test_calibration_numbers_on_known_errors():
    std = np.array([1.0, 1.0, 2.0, 2.0])
    err = np.array([0.5, -1.5, 1.0, 5.0])  # |err| <= std for 2 of 4, <= 2 std for 3 of 4
    cal = uncertainty_calibration(err, std)
    assert cal["coverage_1sigma"] == 0.5 and cal["coverage_2sigma"] == 0.75
    perfect = uncertainty_calibration(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert perfect["spearman"] == pytest.approx(1.0)


def test_train_ensemble_from_the_command_line(grid_set_file, tmp_path, capsys):
    out = tmp_path / "ens"
    argv = [
        "train", "schnet", "--data", str(grid_set_file), "--target", "energy", "--split", "random",
        "--epochs", "2", "--batch-size", "8", "--features", "8", "--interactions", "1", "--ensemble", "2",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["members"] == 2 and summary["member_seeds"] == [0, 1]
    assert 0 <= summary["uncertainty"]["coverage_1sigma"] <= 1
    scale = summary["uncertainty_scale"]  # fitted on the validation molecules
    assert scale > 0 and summary["uncertainty_scale_n_val"] == summary["split"]["n_val"]
    raw, reported = summary["uncertainty_raw"], summary["uncertainty"]
    assert reported["mean_std_kcal_mol"] == pytest.approx(scale * raw["mean_std_kcal_mol"], rel=1e-9)
    assert reported["spearman"] == pytest.approx(raw["spearman"])  # one factor keeps the ranking
    splits = [json.loads((out / f"member-{k}" / "result.json").read_text())["split"] for k in range(2)]
    assert splits[0] == splits[1]  # one split, different initializations
    model = load_network(out / "model.pt")
    assert isinstance(model, Ensemble) and len(model.members) == 2
    xyz = tmp_path / "w.xyz"
    xyz.write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    assert main(["predict", str(out / "model.pt"), str(xyz), "--format", "json"]) == 0
    mol = json.loads(capsys.readouterr().out)["molecules"][0]
    assert mol["uncertainty"] >= 0 and np.isfinite(mol["energy"])
    assert main(["predict", str(out / "model.pt"), str(xyz), "--format", "csv"]) == 0
    assert "uncertainty [kcal/mol]" in capsys.readouterr().out.splitlines()[0]
    # resuming a finished ensemble trains nothing more and gives the same file
    assert main(argv + ["--resume"]) == 0
