"""Inputs a model should not answer confidently: each is refused or flagged with a note by
``qmlx predict`` with the shipped ``qm7-schnet`` (rules of `qmlx.data.domain` and its novelty model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from qmlx.cli import main


def _predict(capsys, model: str, path) -> tuple[int, dict]:
    status = main(["predict", model, str(path), "--format", "json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    return status, doc["molecules"][0] | {"stderr": err}


def _flagged(row: dict, *needles: str) -> str:
    assert row["in_domain"] is False and row["energy"] is not None
    text = "; ".join(row["domain_notes"])
    for needle in needles:
        assert needle in text, text
    return text


def test_a_stretched_carbon_carbon_bond_is_flagged(tmp_path, capsys):
    ethane = molecule("C2H6")
    axis = ethane.positions[1] - ethane.positions[0]
    axis /= np.linalg.norm(axis)
    far = [1] + [
        i for i in range(len(ethane)) if ethane.positions[i] @ axis > ethane.positions[0] @ axis + 0.5
    ]
    ethane.positions[sorted(set(far))] += (2.5 - ethane.get_distance(0, 1)) * axis  # C-C 1.51 -> 2.5 Å
    assert ethane.get_distance(0, 1) == pytest.approx(2.5, abs=1e-6)
    ethane.write(tmp_path / "ethane.xyz")
    status, row = _predict(capsys, "qm7-schnet", tmp_path / "ethane.xyz")
    assert status == 0
    # each methyl alone looks familiar to the novelty model (CH3-X-C has a carbon 2.5 Å away);
    # the structure rule sees the broken bond
    _flagged(row, "2 disconnected fragments (training molecules have at most 1)")


def test_isolated_atoms_are_flagged(tmp_path, capsys):
    benzene = molecule("C6H6")
    benzene.positions *= 100.0  # every atom alone
    benzene.write(tmp_path / "apart.xyz")
    _, row = _predict(capsys, "qm7-schnet", tmp_path / "apart.xyz")
    _flagged(row, "12 disconnected fragments", "unlike the training environments")


def test_positions_in_bohr_read_as_angstrom_get_a_units_hint(tmp_path, capsys):
    benzene = molecule("C6H6")
    benzene.positions *= 1.8897261  # Bohr written where Å belongs
    benzene.write(tmp_path / "bohr.xyz")
    _, row = _predict(capsys, "qm7-schnet", tmp_path / "bohr.xyz")
    _flagged(row, "positions in Bohr")


def test_a_radical_without_a_stated_multiplicity_is_flagged(tmp_path, capsys):
    methyl = Atoms("CH3", positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.935, 0], [-0.54, -0.935, 0]])
    methyl.write(tmp_path / "methyl.xyz")
    _, row = _predict(capsys, "qm7-schnet", tmp_path / "methyl.xyz")
    _flagged(row, "odd number of electrons", "radical")


def test_a_charge_stated_in_a_mol_file_is_read_and_refused(tmp_path, capsys):
    acetate = """acetate
  hand-written

  7  6  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.5200    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    2.1500    1.0900    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
    2.1500   -1.0900    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600    1.0300    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600   -0.5150    0.8900 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600   -0.5150   -0.8900 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  2  0
  2  4  1  0
  1  5  1  0
  1  6  1  0
  1  7  1  0
M  CHG  1   4  -1
M  END
"""
    path = tmp_path / "acetate.mol"
    path.write_text(acetate)
    status, row = _predict(capsys, "qm7-schnet", path)
    assert status == 1 and row["energy"] is None
    assert "net charge -1 differs from the training data's 0" in row["error"]
    assert "acetate.mol" in row["stderr"] and len(row["stderr"].strip().splitlines()) == 1


def test_a_kernel_model_trained_on_larger_molecules_flags_methane(qm7, tmp_path, capsys):
    from qmlx.kernels.training import train_krr

    big = np.flatnonzero(qm7.n_atoms >= 9)[:300]
    model, _ = train_krr(qm7, big, None, "sorted-cm", "laplacian", sigma=1600.0, lam=1e-8)
    path = model.save(tmp_path / "krr-large.h5")
    molecule("CH4").write(tmp_path / "methane.xyz")
    _, row = _predict(capsys, str(path), tmp_path / "methane.xyz")
    _flagged(row, "5 atoms, fewer than any training molecule (9)")


def test_an_optimisation_that_leaves_the_domain_stops_with_a_domain_error():
    from ase.optimize import BFGS

    from qmlx.calculator import QmlxCalculator
    from qmlx.errors import DomainError

    methanol = molecule("CH3OH")
    methanol.calc = QmlxCalculator("qm7-schnet")
    methanol.get_potential_energy()  # the equilibrium geometry is familiar
    assert methanol.calc.results["novelty"] < 1.0
    with pytest.raises(DomainError, match="left the model's training domain"):
        BFGS(methanol, logfile=None).run(fmax=0.01, steps=200)
    assert methanol.calc.domain_notes  # what the last step was flagged for


@pytest.mark.parametrize("mode", ["flag", "refuse", "skip"])
def test_on_novel_flags_refuses_or_leaves_out_what_lies_outside(tmp_path, capsys, mode):
    import ase.io

    near, apart = molecule("C6H6"), molecule("C6H6")
    apart.positions *= 100.0
    ase.io.write(tmp_path / "two.xyz", [near, apart])
    status = main(
        ["predict", "qm7-schnet", str(tmp_path / "two.xyz"), "--format", "json", "--on-novel", mode]
    )
    out, err = capsys.readouterr()
    rows = json.loads(out)["molecules"]
    if mode == "flag":
        assert status == 0 and [r["in_domain"] for r in rows] == [True, False]
        assert rows[1]["energy"] is not None
    elif mode == "refuse":
        assert status == 1 and rows[0]["energy"] is not None and rows[1]["energy"] is None
        assert "outside the training domain" in rows[1]["error"] and "molecule 1" in err
    else:
        assert status == 0 and [r["molecule"] for r in rows] == [0]
        assert "1 of 2 molecules outside the training domain left out" in err
