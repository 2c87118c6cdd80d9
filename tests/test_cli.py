"""The ``qmlx`` command line: output of ``data info`` and one-line errors with non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qmlx.cli import main


def test_data_info_qm7_prints_counts(qm7_path, capsys, monkeypatch):
    monkeypatch.setenv("QMLX_DATA_DIR", str(qm7_path.parent))
    assert main(["data", "info", "qm7"]) == 0
    out = capsys.readouterr().out
    assert "molecules    7165" in out
    assert "5 official folds, test size 1433" in out
    assert "H 61959 / C 35761 / N 6655 / O 5978 / S 297" in out
    assert "4-23" in out


def test_data_info_on_an_xyz_file(tmp_path, capsys):
    (tmp_path / "w.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    assert main(["data", "info", str(tmp_path / "w.xyz")]) == 0
    assert "composition  H 2 / O 1" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["", "3\ncomment\nO 0 0 0\n", "1\nc\nQq 0 0 0\n"])
def test_data_info_on_bad_file_exits_nonzero_with_one_line(tmp_path, content):
    bad = tmp_path / "bad.xyz"
    bad.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "qmlx", "data", "info", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qmlx: error: ") and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_file_exits_nonzero(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope.xyz")]) == 1
    assert "nope.xyz: no such file" in capsys.readouterr().err


@pytest.fixture
def network_file(tmp_path):
    import torch

    from qmlx.nn import SchNet, save_network

    torch.manual_seed(0)
    model = SchNet(n_features=8, n_interactions=1)
    with torch.no_grad():
        model.head.reference[[1, 8]] = torch.tensor([-10.0, -60.0], dtype=torch.float64)
    return save_network(model, tmp_path / "tiny.pt")


def test_predict_prints_energy_and_atom_table(network_file, tmp_path, capsys):
    (tmp_path / "w.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    assert main(["predict", str(network_file), str(tmp_path / "w.xyz"), "--atoms", "--format", "json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    mol = result["molecules"][0]
    assert result["unit"] == "kcal/mol" and mol["formula"] == "H2O"
    assert sum(a["energy"] for a in mol["atoms"]) == pytest.approx(mol["energy"], abs=1e-4)


def test_explain_writes_png_and_table(network_file, tmp_path, capsys):
    (tmp_path / "w.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    png = tmp_path / "w.png"
    assert main(["explain", str(network_file), str(tmp_path / "w.xyz"), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "H2O" in out and "relevance" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_on_malformed_file_exits_nonzero(network_file, tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("5\ntruncated\nC 0 0 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "qmlx", "explain", str(network_file), str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"qmlx: error: {bad}") and "Traceback" not in proc.stderr


def test_predict_krr_on_xyz_in_angstrom_matches_dataset_prediction(qm7, tmp_path, capsys):
    import ase.io
    import numpy as np

    from qmlx.kernels.model import load_krr
    from qmlx.kernels.training import train_krr

    train, test = np.arange(0, 600), np.arange(600, 610)
    model, _ = train_krr(qm7, train, representation="sorted-cm", kernel="laplacian", sigma=1000.0, lam=1e-8)
    path = model.save(tmp_path / "krr.h5")
    expected = load_krr(path).predict_molecules(qm7.subset(test))
    xyz = tmp_path / "mols.xyz"
    ase.io.write(xyz, [qm7[int(i)] for i in test])  # ASE writes Å, the unit Molecules holds
    assert main(["predict", str(path), str(xyz), "--format", "csv"]) == 0
    import csv
    import io

    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == [
        "file",
        "molecule",
        "formula",
        "PBE0 atomization energy [kcal/mol]",
        "novelty",
        "novelty p",
        "in_domain",
        "domain_notes",
    ]
    printed = np.array([float(row[3]) for row in rows[1:]])
    assert all(0 < float(row[5]) <= 1 for row in rows[1:])  # p-values
    np.testing.assert_allclose(printed, expected, atol=1e-5)
    assert np.abs(expected - qm7.targets["atomization_energy"][test]).mean() < 40  # a real model


def test_explain_potential_draws_one_map_per_molecule(network_file, tmp_path, capsys):
    (tmp_path / "w.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    (tmp_path / "w2.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    png = tmp_path / "map.png"
    argv = [
        "explain",
        str(network_file),
        str(tmp_path / "w.xyz"),
        str(tmp_path / "w2.xyz"),
        "--method",
        "potential",
    ]
    assert main(argv) == 1
    assert "give --png" in capsys.readouterr().err
    assert main(argv + ["--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("Omega_H") == 2 and "kcal/mol" in out
    for path in (png, tmp_path / "map-2.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_streams_chunks_with_the_same_numbers(network_file, tmp_path, capsys):
    """A multi-frame file read in chunks gives the same energies, in order, as reading it whole;
    jsonl has one object per line and json stays one valid document."""
    import json

    import ase.build
    import ase.io

    frames = []
    for k in range(7):
        atoms = ase.build.molecule("H2O")
        atoms.positions *= 1.0 + 0.01 * k
        frames.append(atoms)
    path = tmp_path / "many.extxyz"
    ase.io.write(path, frames)
    assert main(["predict", str(network_file), str(path), "--format", "json", "--no-progress"]) == 0
    whole = json.loads(capsys.readouterr().out)["molecules"]
    assert [m["molecule"] for m in whole] == list(range(7))
    argv = ["predict", str(network_file), str(path), "--chunk-size", "3", "--no-progress"]
    assert main(argv + ["--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 7 and [r["molecule"] for r in rows] == list(range(7))
    # the network runs in float32, whose matrix products round by batch shape (about 1e-7 kcal/mol
    # here); the energies are float64 sums of its outputs, so chunks agree to that rounding
    assert [r["energy"] for r in rows] == pytest.approx([m["energy"] for m in whole], abs=1e-6)
    assert main(argv + ["--format", "json"]) == 0
    streamed = json.loads(capsys.readouterr().out)
    assert [m["energy"] for m in streamed["molecules"]] == pytest.approx(
        [m["energy"] for m in whole], abs=1e-6
    )


def test_explain_lrp_walks_json_conserves_and_draws(network_file, tmp_path, capsys):
    import json

    (tmp_path / "w.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    argv = ["explain", str(network_file), str(tmp_path / "w.xyz"), "--method", "lrp-walks", "--top", "4"]
    assert main(argv + ["--format", "json", "--png", str(tmp_path / "walks.png")]) == 0
    mol = json.loads(capsys.readouterr().out)["molecules"][0]
    assert len(mol["walks"]) == 4 and mol["n_walks"] == 3**2  # one interaction block: (i0, i1)
    total = mol["walks_total"] + mol["bias_total"]
    assert total == pytest.approx(mol["prediction"] - mol["reference"], rel=1e-8)
    assert mol["walks_total"] == pytest.approx(sum(mol["relevance"]), rel=1e-8)
    assert abs(mol["walks"][0]["relevance"]) >= abs(mol["walks"][-1]["relevance"])
    assert (tmp_path / "walks.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_draws_every_one_of_13_molecules_and_names_their_files(network_file, tmp_path, capsys):
    import ase.build
    import ase.io

    frames = [ase.build.molecule("H2O") for _ in range(13)]
    for k, atoms in enumerate(frames):
        atoms.positions *= 1.0 + 0.01 * k
    path = tmp_path / "thirteen.extxyz"
    ase.io.write(path, frames)
    png = tmp_path / "e.png"
    assert main(["explain", str(network_file), str(path), "--png", str(png), "--depiction", "3d"]) == 0
    captured = capsys.readouterr()
    assert "thirteen.extxyz #12" in captured.out  # every molecule is named by its file
    written = [line.split("wrote ")[1] for line in captured.err.splitlines() if line.startswith("wrote ")]
    assert written == [str(png), str(tmp_path / "e-2.png")]  # 12 panels, then the 13th on a second page
    assert all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in written)


def test_explain_a_kernel_model_from_the_command_line(tmp_path, capsys):
    import json

    from conftest import grid_molecules

    from qmlx.kernels.training import train_krr

    mols = grid_molecules(40)
    model, _ = train_krr(
        mols, np.arange(40), None, "bob", "laplacian", sigma=100.0, lam=1e-6, target="energy"
    )
    path = model.save(tmp_path / "krr.h5")
    xyz = tmp_path / "w.xyz"
    xyz.write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    assert main(["explain", str(path), str(xyz), "--format", "json"]) == 0
    mol = json.loads(capsys.readouterr().out)["molecules"][0]
    assert mol["remainder"] == pytest.approx(0.0, abs=1e-9)
    assert sum(mol["relevance"]) == pytest.approx(mol["prediction"] - mol["reference"], rel=1e-8, abs=1e-8)
    assert mol["relevance"][1] == pytest.approx(mol["relevance"][2], rel=1e-9)  # the two equivalent H
    assert main(["explain", str(path), str(xyz), "--method", "gradient"]) == 1
    assert (
        "--method gradient does not explain krr models (use: neuralized, novelty)" in capsys.readouterr().err
    )


def test_explain_streams_chunks_with_the_same_relevances(network_file, tmp_path, capsys):
    import json

    import ase.build
    import ase.io

    frames = [ase.build.molecule("H2O") for _ in range(7)]  # the tiny network knows H and O
    for k, atoms in enumerate(frames):
        atoms.positions *= 1.0 + 0.01 * k
    path = tmp_path / "many.extxyz"
    ase.io.write(path, frames)
    assert main(["explain", str(network_file), str(path), "--format", "json"]) == 0
    whole = json.loads(capsys.readouterr().out)["molecules"]
    assert main(["explain", str(network_file), str(path), "--format", "jsonl", "--chunk-size", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["molecule"] for r in rows] == list(range(7))
    for a, b in zip(rows, whole):
        assert a["relevance"] == pytest.approx(b["relevance"], abs=1e-9)
    assert main(["explain", str(network_file), str(path), "--chunk-size", "3"]) == 0
    assert "many.extxyz #6" in capsys.readouterr().out
