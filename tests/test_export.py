"""Files other tools read: `qmlx.data.export`, ``qmlx data export``, and ``--out`` of ``qmlx
predict`` and ``qmlx explain`` (extxyz and ASE databases in ASE's conventions)."""

from __future__ import annotations

import json

import ase
import ase.build
import ase.db
import ase.io
import numpy as np
import pytest

from qmlx.cli import main
from qmlx.data import Molecules, import_molecules
from qmlx.data.export import export_molecules, write_frames
from qmlx.errors import DataFormatError
from qmlx.units import EV_TO_KCAL_MOL, HARTREE_TO_KCAL_MOL


def _store() -> Molecules:
    frames = [ase.build.molecule(n) for n in ("H2O", "CH4", "NH3", "CH3OH")]
    n_atoms = np.array([len(a) for a in frames])
    rng = np.random.default_rng(0)
    return Molecules(
        Z=np.concatenate([a.numbers for a in frames]),
        R=np.concatenate([a.positions for a in frames]),
        n_atoms=n_atoms,
        targets={"energy": rng.normal(-500, 50, 4), "homo": rng.normal(-0.3, 0.01, 4), "mu": rng.random(4)},
        units={"energy": "kcal/mol", "homo": "Hartree", "mu": "Debye"},
        forces=rng.normal(0, 1, (n_atoms.sum(), 3)),
        force_unit="kcal/mol/Å",
        charge=np.array([0.0, np.nan, 0.0, 0.0]),
        name="four",
    )


@pytest.mark.parametrize("suffix", [".extxyz", ".db"])
def test_export_reads_back_to_the_same_numbers_and_units(tmp_path, suffix):
    mols = _store()
    path = export_molecules(mols, tmp_path / f"four{suffix}")
    back = import_molecules([path])
    assert back.units == mols.units and back.force_unit == mols.force_unit  # every unit kept
    for key in mols.targets:  # energies went through eV and back: float rounding only
        np.testing.assert_allclose(back.targets[key], mols.targets[key], rtol=1e-12)
    # extxyz writes 8 decimals: forces to 1e-8 eV/Å, 2.3e-7 kcal/mol/Å
    np.testing.assert_allclose(back.forces, mols.forces, rtol=0, atol=3e-7)
    np.testing.assert_array_equal(back.ids, [f"four.{suffix[1:]}:{k + (suffix == '.db')}" for k in range(4)])
    np.testing.assert_array_equal(back.Z, mols.Z)
    np.testing.assert_allclose(back.R, mols.R, atol=1e-7)
    np.testing.assert_array_equal(np.isnan(back.charge), np.isnan(mols.charge))
    # other tools read ASE's conventions: the energy in eV from the calculator
    first = ase.io.read(path, index=0) if suffix == ".extxyz" else ase.db.connect(path).get(id=1).toatoms()
    assert first.get_potential_energy() == pytest.approx(mols.targets["energy"][0] / EV_TO_KCAL_MOL)


def test_export_command_and_bad_suffix(tmp_path, capsys):
    store = tmp_path / "four.h5"
    from qmlx.data import save_molecules

    save_molecules(store, _store())
    assert main(["data", "export", str(store), "--out", str(tmp_path / "four.db")]) == 0
    assert "wrote" in capsys.readouterr().err
    assert main(["data", "export", str(store), "--out", str(tmp_path / "four.csv")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "write .extxyz or .db" in err
    assert not (tmp_path / "four.csv").exists()
    with pytest.raises(DataFormatError, match="four.json"):
        write_frames(tmp_path / "four.json", [])


def test_a_failed_write_leaves_nothing(tmp_path):
    class Boom(ase.Atoms):
        @property
        def arrays(self):
            raise RuntimeError("disk full")

        @arrays.setter
        def arrays(self, value):
            pass

    good = ase.build.molecule("H2O")
    for suffix in (".extxyz", ".db"):
        path = tmp_path / f"out{suffix}"
        with pytest.raises(Exception):
            write_frames(path, [good, Boom("H")])
        assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def three_sdf(tmp_path):
    """Water, the formate anion (charge -1: qm7-schnet refuses it), methane, in one SDF."""
    blocks = []
    for k, atoms in enumerate(
        [ase.build.molecule("H2O"), ase.build.molecule("HCOOH"), ase.build.molecule("CH4")]
    ):
        part = tmp_path / f"{k}.sdf"
        ase.io.write(part, atoms, format="sdf")
        text = part.read_text().rstrip("\n").removesuffix("$$$$").rstrip("\n")
        if k == 1:
            text = text.replace("M  END", "M  CHG  1   2  -1\nM  END")
        blocks.append(text + "\n$$$$\n")
    path = tmp_path / "three.sdf"
    path.write_text("".join(blocks))
    return path


def test_predict_out_writes_energies_atom_energies_and_novelty(three_sdf, tmp_path, capsys):
    out = tmp_path / "pred.extxyz"
    argv = [
        "predict",
        "qm7-schnet",
        str(three_sdf),
        "--format",
        "json",
        "--atoms",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 1  # one molecule refused
    rows = json.loads(capsys.readouterr().out)["molecules"]
    frames = ase.io.read(out, index=":")
    assert len(frames) == 3
    for row, atoms in zip(rows, frames):
        if "error" in row:
            assert atoms.info["error"] == row["error"] and atoms.calc is None
            continue
        assert atoms.get_potential_energy() == pytest.approx(row["energy"] / EV_TO_KCAL_MOL, rel=1e-12)
        assert atoms.info["energy_kcal_mol"] == pytest.approx(row["energy"], rel=1e-12)
        assert atoms.arrays["atom_energy_kcal_mol"].sum() == pytest.approx(row["energy"], rel=1e-6)
        np.testing.assert_allclose(
            atoms.arrays["atom_energy"] * EV_TO_KCAL_MOL, atoms.arrays["atom_energy_kcal_mol"]
        )
        np.testing.assert_allclose(atoms.arrays["atom_novelty"], [a["novelty"] for a in row["atoms"]])
        assert atoms.info["novelty"] == pytest.approx(row["novelty"])


def test_explain_out_and_refusals_leave_the_rest(three_sdf, tmp_path, capsys):
    out = tmp_path / "why.db"
    assert main(["explain", "qm7-schnet", str(three_sdf), "--format", "jsonl"]) == 1
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(r["molecule"] for r in records) == [0, 1, 2]
    refused = [r for r in records if "error" in r]
    assert len(refused) == 1 and refused[0]["molecule"] == 1 and "charge -1" in refused[0]["error"]
    assert captured.err.count("qmlx: error:") == 1
    explained = {r["molecule"]: r for r in records if "error" not in r}
    assert main(["explain", "qm7-schnet", str(three_sdf), "--out", str(out)]) == 1
    capsys.readouterr()
    with ase.db.connect(out) as db:
        rows = list(db.select())
    assert len(rows) == 2
    for row, k in zip(rows, (0, 2)):
        np.testing.assert_allclose(row.data["relevance_kcal_mol"], explained[k]["relevance"])
        np.testing.assert_allclose(row.data["relevance"] * EV_TO_KCAL_MOL, explained[k]["relevance"])
        assert row.energy == pytest.approx(explained[k]["prediction"] / EV_TO_KCAL_MOL)
        assert row.method == "lrp"


def test_hartree_targets_keep_their_unit_in_an_extxyz(tmp_path):
    frames = []
    for k, name in enumerate(["H2O", "CH4"]):
        atoms = ase.build.molecule(name)
        atoms.info["U0"] = -76.4 + k
        frames.append(atoms)
    src = tmp_path / "u0.extxyz"
    ase.io.write(src, frames)
    mols = import_molecules([src], columns=["U0[Hartree]"])
    back = import_molecules([export_molecules(mols, tmp_path / "again.extxyz")])
    assert back.units == {"U0": "Hartree"}
    np.testing.assert_allclose(back.target("U0", "kcal/mol"), np.array([-76.4, -75.4]) * HARTREE_TO_KCAL_MOL)
