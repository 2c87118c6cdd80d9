"""The command line refuses what it cannot answer: bad options, outputs it cannot write, molecules
outside a model's domain, and resumes that do not match their checkpoint. Each case exits
non-zero with one line on stderr, no traceback and no file left behind; soft domain cases answer
and mark the molecule."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from qmlx.cli import main
from qmlx.data import Molecules, save_molecules

WATER = "3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n"
METHANE = (
    "5\nmethane\nC 0 0 0\nH 0.629 0.629 0.629\nH -0.629 -0.629 0.629\nH -0.629 0.629 -0.629\n"
    "H 0.629 -0.629 -0.629\n"
)
CHLOROMETHANE = (
    "5\nchloromethane\nC 0 0 0\nCl 0 0 1.78\nH 1.03 0 -0.36\nH -0.51 0.89 -0.36\nH -0.51 -0.89 -0.36\n"
)


def _one_error_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _fails(argv: list[str], capsys, *needles: str, code: int | None = None) -> str:
    """Run ``qmlx argv`` in-process; it must fail with one line naming ``needles``."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse rejects the option
        status = exc.code
    assert status != 0 and (code is None or status == code)
    return _one_error_line(capsys.readouterr().err, *needles)


def _synthetic() -> Molecules:
    from conftest import grid_molecules

    return grid_molecules()


@pytest.fixture
def network(tmp_path):
    """A tiny SchNet file that knows H, C, O, with a recorded training domain (neutral singlets,
    at most 9 atoms, shortest distance 0.95 Å)."""
    from qmlx.nn import SchNet, save_network

    torch.manual_seed(0)
    model = SchNet(n_features=8, n_interactions=1)
    with torch.no_grad():
        model.head.reference[[1, 6, 8]] = torch.tensor([-10.0, -40.0, -60.0], dtype=torch.float64)
    domain = {
        "elements": [1, 6, 8], "max_atoms": 9, "min_distance_angstrom": 0.95, "charge": 0.0,
        "multiplicity": 1.0, "n_molecules": 100,
    }  # fmt: skip
    meta = {"target": "energy", "target_description": "PBE0 atomization energy", "domain": domain}
    return save_network(model, tmp_path / "tiny.pt", metadata=meta)


def _xyz(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------- hard domain
def test_unknown_element_is_refused_by_predict_and_explain(network, tmp_path, capsys):
    f = _xyz(tmp_path, "chloromethane.xyz", CHLOROMETHANE)
    png = tmp_path / "map.png"
    _fails(["predict", str(network), f], capsys, "chloromethane.xyz", "Cl", "training data")
    _fails(["explain", str(network), f, "--png", str(png)], capsys, "chloromethane.xyz", "Cl")
    assert not png.exists()


def test_atoms_closer_than_half_an_angstrom_are_refused(network, tmp_path, capsys):
    f = _xyz(tmp_path, "close.xyz", "2\nclose\nO 0 0 0\nH 0 0 0.3\n")
    _fails(["predict", str(network), f], capsys, "close.xyz", "0.300 Å")


def test_periodic_cell_is_refused(network, tmp_path, capsys):
    f = _xyz(
        tmp_path,
        "cell.xyz",
        '3\nLattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
        "O 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n",
    )
    _fails(["predict", str(network), f], capsys, "cell.xyz", "periodic")


def test_charge_other_than_the_training_data_is_refused(network, tmp_path, capsys):
    f = _xyz(
        tmp_path,
        "cation.xyz",
        "3\nProperties=species:S:1:pos:R:3 charge=1\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n",
    )
    _fails(["predict", str(network), f], capsys, "cation.xyz", "charge 1")
    f = _xyz(
        tmp_path,
        "triplet.xyz",
        "3\nProperties=species:S:1:pos:R:3 multiplicity=3\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n",
    )
    _fails(["explain", str(network), f], capsys, "triplet.xyz", "spin multiplicity 3")


def test_krr_refuses_a_molecule_larger_than_its_coulomb_matrices(tmp_path, capsys):
    from qmlx.kernels.training import train_krr

    mols = _synthetic()
    model, _ = train_krr(
        mols, np.arange(40), None, "sorted-cm", "laplacian", sigma=100.0, lam=1e-6, target="energy"
    )
    path = model.save(tmp_path / "krr.h5")
    big = "\n".join(f"H 0 0 {1.0 * k}" for k in range(8)) + "\n"  # 8 atoms; the model holds 5
    f = _xyz(tmp_path, "chain.xyz", f"8\nchain\n{big}")
    _fails(["predict", str(path), f], capsys, "chain.xyz", "at most 5")


def test_hard_domain_error_in_a_subprocess_is_one_line(network, tmp_path):
    f = _xyz(tmp_path, "chloromethane.xyz", CHLOROMETHANE)
    proc = subprocess.run(
        [sys.executable, "-m", "qmlx", "explain", str(network), f], capture_output=True, text=True
    )
    # the refused molecule is a record in the output (as in predict), and one line on stderr
    assert proc.returncode == 1 and "chloromethane.xyz  refused: " in proc.stdout
    _one_error_line(proc.stderr, "qmlx: error:", "chloromethane.xyz")


# ------------------------------------------------------------------------------------- soft domain
def test_soft_flags_answer_and_mark_the_molecule(network, tmp_path, capsys):
    big = _xyz(
        tmp_path,
        "big.xyz",
        "11\nbig\n" + "".join(f"C {1.5 * k} 0 0\n" for k in range(11)),
    )
    tight = _xyz(tmp_path, "tight.xyz", "2\ntight\nH 0 0 0\nH 0 0 0.74\n")
    atom = _xyz(tmp_path, "atom.xyz", "1\natom\nO 0 0 0\n")
    water = _xyz(tmp_path, "water.xyz", WATER)
    assert main(["predict", str(network), big, tight, atom, water, "--format", "json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["quantity"] == "PBE0 atomization energy" and doc["unit"] == "kcal/mol"
    flags = {m["file"]: (m["in_domain"], " ".join(m["domain_notes"])) for m in doc["molecules"]}
    assert flags[big][0] is False and "more than any training molecule (9)" in flags[big][1]
    assert flags[tight][0] is False and "below the training minimum" in flags[tight][1]
    assert flags[atom][0] is False and "single atom" in flags[atom][1]
    assert flags[water] == (True, "")
    warning = _one_error_line(captured.err, "warning", "3 of 4 molecules")
    assert warning.startswith("qmlx: warning:")


def test_table_and_csv_carry_the_domain_note(network, tmp_path, capsys):
    atom = _xyz(tmp_path, "atom.xyz", "1\natom\nO 0 0 0\n")
    assert main(["predict", str(network), atom]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "PBE0 atomization energy (kcal/mol)"
    assert "outside training domain: a single atom" in out
    assert main(["predict", str(network), atom, "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].endswith("in_domain,domain_notes") and ",false," in rows[1]


def test_explain_json_marks_soft_cases_and_never_writes_nan(network, tmp_path, capsys):
    atom = _xyz(tmp_path, "atom.xyz", "1\natom\nO 0 0 0\n")
    water = _xyz(tmp_path, "water.xyz", WATER)
    assert main(["explain", str(network), atom, water, "--method", "gradient", "--format", "json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text
    doc = json.loads(text)
    assert doc["molecules"][0]["reference"] is None  # the gradient has no reference value
    assert [m["in_domain"] for m in doc["molecules"]] == [False, True]
    assert [m["file"] for m in doc["molecules"]] == [atom, water]


def test_calculator_applies_the_same_domain_checks(network):
    import ase

    from qmlx.calculator import QmlxCalculator
    from qmlx.errors import DomainError

    atoms = ase.Atoms("CCl", positions=[[0, 0, 0], [0, 0, 1.78]])
    atoms.calc = QmlxCalculator(str(network))
    with pytest.raises(DomainError, match="Cl"):
        atoms.get_potential_energy()


# ------------------------------------------------------------------------------------- bad options
BAD_TRAIN = [
    ("--batch-size", "0"), ("--lr", "-1"), ("--threads", "0"), ("--n-train", "-10"), ("--max-minutes", "-1"),
    ("--ema", "2"), ("--epochs", "0"), ("--lr-factor", "1.5"), ("--cutoff", "0"), ("--fold", "-1"),
    ("--weight-decay", "-0.1"), ("--schedule", "linear"), ("--loss", "huber"),
]  # fmt: skip


@pytest.mark.parametrize(("option", "value"), BAD_TRAIN)
def test_bad_network_training_options_fail_before_any_work(option, value, tmp_path, capsys):
    out = tmp_path / "run"
    _fails(["train", "schnet", "--data", "nope.h5", option, value, "--out", str(out)], capsys, option, code=2)
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--sigma", "-1"), ("--lam", "-1"), ("--n-samples", "0")])
def test_bad_krr_options_fail_before_any_work(option, value, capsys):
    _fails(["train", "krr", "--data", "nope.h5", option, value], capsys, option, code=2)


@pytest.mark.parametrize(("option", "value"), [("--steps", "0"), ("--epsilon", "-1"), ("--gamma", "-1")])
def test_bad_explain_options_fail(network, tmp_path, option, value, capsys):
    _fails(["explain", str(network), _xyz(tmp_path, "w.xyz", WATER), option, value], capsys, option, code=2)


def test_output_folder_must_exist(network, tmp_path, capsys):
    water = _xyz(tmp_path, "w.xyz", WATER)
    missing = tmp_path / "missing" / "x.png"
    _fails(["explain", str(network), water, "--png", str(missing)], capsys, "--png", "does not exist")
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    _fails(
        ["train", "krr", "--data", str(data), "--out", str(tmp_path / "no" / "m.h5")],
        capsys,
        "does not exist",
    )
    _fails(
        ["train", "schnet", "--data", str(data), "--out", str(tmp_path / "no" / "run")],
        capsys,
        "does not exist",
    )
    assert not (tmp_path / "missing").exists() and not (tmp_path / "no").exists()


def test_output_folder_must_be_writable(network, tmp_path, capsys, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(tmp_path / "ro") else real(p, mode)
    )
    (tmp_path / "ro").mkdir()
    water = _xyz(tmp_path, "w.xyz", WATER)
    _fails(["explain", str(network), water, "--png", str(tmp_path / "ro" / "x.png")], capsys, "not writable")


def test_missing_model_says_no_such_file(tmp_path, capsys):
    water = _xyz(tmp_path, "w.xyz", WATER)
    _fails(["predict", str(tmp_path / "model.pt"), water], capsys, "model.pt", "no such file")
    _fails(["explain", str(tmp_path / "model.h5"), water], capsys, "model.h5", "no such file")


def test_missing_input_file_fails_before_prediction(network, tmp_path, capsys):
    _fails(["predict", str(network), str(tmp_path / "gone.xyz")], capsys, "gone.xyz", "no such file")


# ------------------------------------------------------------------------------------- resume
def _train_args(data, out, *extra: str) -> list[str]:
    return [
        "train", "schnet", "--data", str(data), "--target", "energy", "--split", "random", "--epochs", "1",
        "--features", "8", "--interactions", "1", "--batch-size", "8", "--out", str(out), "--no-progress",
        *extra,
    ]  # fmt: skip


def test_resume_with_another_fold_is_refused(tmp_path, capsys):
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    out = tmp_path / "run"
    assert main(_train_args(data, out, "--fold", "0")) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["split"]["fold"] == 0 and result["split"]["method"] == "random"
    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    line = _fails(_train_args(data, out, "--fold", "3", "--epochs", "2", "--resume"), capsys, "cannot resume")
    assert "split.fold 0 -> 3" in line
    assert (out / "checkpoint.pt").read_bytes() == before  # untouched
    # the same settings (and a longer budget) resume fine
    assert main(_train_args(data, out, "--fold", "0", "--epochs", "2", "--resume")) == 0
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 2


def test_resume_with_other_model_settings_names_them(tmp_path, capsys):
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    out = tmp_path / "run"
    assert main(_train_args(data, out)) == 0
    capsys.readouterr()
    line = _fails(_train_args(data, out, "--resume", "--lr", "0.01", "--seed", "1"), capsys, "cannot resume")
    assert "lr 0.001 -> 0.01" in line and "split.seed 0 -> 1" in line


def test_resume_of_a_cosine_run_with_other_epochs_is_refused(tmp_path, capsys):
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    out = tmp_path / "run"
    assert main(_train_args(data, out, "--schedule", "cosine", "--epochs", "2")) == 0
    capsys.readouterr()
    line = _fails(
        _train_args(data, out, "--schedule", "cosine", "--epochs", "3", "--resume"), capsys, "cannot resume"
    )
    assert "epochs 2 -> 3" in line


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    _fails(_train_args(data, tmp_path / "fresh", "--resume"), capsys, "no checkpoint to resume")


def test_split_none_trains_on_everything(tmp_path, capsys):
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    out = tmp_path / "m.h5"
    argv = [
        "train",
        "krr",
        "--data",
        str(data),
        "--split",
        "none",
        "--sigma",
        "100",
        "--lam",
        "1e-6",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    from qmlx.kernels import load_krr

    meta = load_krr(out).metadata
    assert meta["split"]["n_test"] == 0 and meta["split"]["n_train"] == 40
    assert "test MAE        none" in capsys.readouterr().out


def test_python_api_takes_a_list_of_ase_atoms(network, tmp_path):
    import ase.io

    from qmlx.explain import explain
    from qmlx.nn import load_network, predict_network

    model = load_network(network)
    atoms = [ase.io.read(_xyz(tmp_path, "w.xyz", WATER)), ase.io.read(_xyz(tmp_path, "m.xyz", METHANE))]
    energies, atom_energies = predict_network(model, atoms)
    reference, _ = predict_network(model, Molecules.from_atoms(atoms, targets={}))
    np.testing.assert_array_equal(energies, reference)
    result = explain(model, atoms, "lrp")
    np.testing.assert_allclose(result.prediction, energies, rtol=1e-5)
    assert np.abs(result.conservation_error()).max() < 1e-6 * np.abs(energies).max()


def test_network_trains_on_everything_with_split_none(tmp_path, capsys):
    data = save_molecules(tmp_path / "syn.h5", _synthetic())
    argv = _train_args(data, tmp_path / "run")
    argv[argv.index("random")] = "none"
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_test"] == 0 and summary["test_mae_kcal_mol"] is None
    assert summary["n_train"] + summary["n_val"] == 40
