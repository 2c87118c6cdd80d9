"""User data sets: import_molecules (files, folders, property tables), load_dataset, and the new
Molecules fields (forces, charge, multiplicity, periodic, descriptions) through the HDF5 store.

The real-data tests read the qm7-pbe0 folder from ``$QMLX_DATA_DIR``; when ``CI=true`` a missing
folder is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import ase
import ase.build
import ase.db
import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from qmlx.data import (
    Molecules,
    import_molecules,
    load_dataset,
    load_molecules,
    read_molecules,
    save_molecules,
)
from qmlx.data.io import read_frames
from qmlx.errors import DataFormatError
from qmlx.units import EV_TO_KCAL_MOL, HARTREE_TO_KCAL_MOL

WATER = [[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]]
XYZ_H2 = "2\n{comment}\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"


def _water(**info) -> ase.Atoms:
    atoms = ase.Atoms("OH2", positions=WATER)
    atoms.info.update(info)
    return atoms


def _assert_same(a: Molecules, b: Molecules) -> None:
    np.testing.assert_array_equal(a.Z, b.Z)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.n_atoms, b.n_atoms)
    assert a.ids.tolist() == b.ids.tolist()
    assert a.units == b.units and a.descriptions == b.descriptions and a.name == b.name
    for key in a.targets:
        np.testing.assert_array_equal(a.targets[key], b.targets[key])
    np.testing.assert_array_equal(a.charge, b.charge)  # NaN == NaN here
    np.testing.assert_array_equal(a.multiplicity, b.multiplicity)
    np.testing.assert_array_equal(a.periodic, b.periodic)
    assert a.force_unit == b.force_unit
    if a.forces is None:
        assert b.forces is None
    else:
        np.testing.assert_array_equal(a.forces, b.forces)


# ----------------------------------------------------------------------------- the real qm7-pbe0 folder
@pytest.fixture(scope="module")
def pbe0_dir() -> Path:
    data_dir = os.environ.get("QMLX_DATA_DIR")
    folder = Path(data_dir or ".") / "qm7-pbe0"
    if not data_dir or not (folder / "xyz").is_dir() or not (folder / "hof_qm7.txt").is_file():
        reason = f"{folder} with xyz/ and hof_qm7.txt not found" if data_dir else "QMLX_DATA_DIR is not set"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but qm7-pbe0 is not available: {reason}")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="module")
def pbe0(pbe0_dir) -> tuple[Molecules, float]:
    start = time.perf_counter()
    mols = import_molecules(
        [pbe0_dir / "xyz"],
        table=pbe0_dir / "hof_qm7.txt",
        columns=["name", "energy", "-"],
        unit="kcal/mol",
        descriptions={"energy": "PBE0/def2-TZVP atomization energy"},
        name="qm7-pbe0",
    )
    return mols, time.perf_counter() - start


def test_real_folder_and_table_import(pbe0):
    mols, seconds = pbe0
    assert seconds < 60
    assert len(mols) == 7101 and len(mols.Z) == 109600
    assert list(mols.composition()) == ["H", "C", "N", "O", "S"]
    assert mols.ids[0] == "0001" and mols.ids[-1] == "7172"
    assert mols.target("energy")[-1] == pytest.approx(-1320.97, abs=1e-9)
    methane = mols[0]
    assert methane.get_chemical_formula() == "CH4"
    assert mols.target("energy")[0] == pytest.approx(-417.031, abs=1e-9)
    assert mols.target("energy")[1] == pytest.approx(-711.117, abs=1e-9)
    assert mols.units == {"energy": "kcal/mol"}
    assert mols.describe("energy") == "PBE0/def2-TZVP atomization energy (kcal/mol)"
    # every comment line is "charge = 0": stated, neutral; no multiplicity, cell or forces
    assert methane.info["charge"] == 0 and (mols.charge == 0).all()
    assert np.isnan(mols.multiplicity).all() and not mols.periodic.any() and mols.forces is None
    # C-H bond of methane in Å
    d = np.linalg.norm(methane.positions[1:] - methane.positions[0], axis=1)
    assert d == pytest.approx(np.full(4, 1.0892), abs=2e-3)


def test_real_comment_line_charge_is_read(pbe0_dir):
    frames, labels, ids = read_frames(pbe0_dir / "xyz" / "0001.xyz")
    assert len(frames) == 1 and frames[0].info["charge"] == 0
    assert labels == [str(pbe0_dir / "xyz" / "0001.xyz")] and ids == ["0001.xyz:0"]


def test_real_import_round_trips_through_the_store(pbe0, tmp_path):
    mols, _ = pbe0
    path = save_molecules(tmp_path / "pbe0.h5", mols)
    back = load_molecules(path)
    _assert_same(mols, back)
    assert back.describe("energy") == "PBE0/def2-TZVP atomization energy (kcal/mol)"
    assert load_dataset(path, target="energy").target("energy")[0] == pytest.approx(-417.031)


def test_real_import_with_progress_bar(pbe0_dir, tmp_path, capsys):
    table = tmp_path / "two.txt"
    table.write_text("0001.xyz -417.031\n0002.xyz -711.117\n")
    mols = import_molecules(
        [pbe0_dir / "xyz" / "0001.xyz", pbe0_dir / "xyz" / "0002.xyz"],
        table=table,
        columns=["name", "energy"],
        unit="kcal/mol",
        progress=True,
    )
    assert mols.ids.tolist() == ["0001", "0002"]
    assert "2/2" in capsys.readouterr().err


# ----------------------------------------------------------------------------- extxyz, calculators, ASE db
def test_extxyz_energies_forces_charge_and_multiplicity(tmp_path):
    forces = np.arange(9.0).reshape(3, 3)
    frames = []
    for energy, charge, mult in ((-1.5, -1, 2), (-2.5, 0, 1)):
        atoms = _water(energy=energy, charge=charge, multiplicity=mult)
        atoms.arrays["forces"] = forces * energy
        frames.append(atoms)
    ase.io.write(tmp_path / "w.extxyz", frames, format="extxyz")
    mols = import_molecules([tmp_path / "w.extxyz"], unit="eV")
    assert mols.ids.tolist() == ["w.extxyz:0", "w.extxyz:1"]
    assert mols.units == {"energy": "eV"} and mols.force_unit == "eV/Å"
    np.testing.assert_allclose(mols.target("energy"), [-1.5, -2.5])
    np.testing.assert_allclose(mols.target("energy", "kcal/mol"), [-1.5 * 23.0605, -2.5 * 23.0605], rtol=1e-5)
    np.testing.assert_allclose(mols.target("energy", "kcal/mol"), np.array([-1.5, -2.5]) * EV_TO_KCAL_MOL)
    np.testing.assert_allclose(mols.forces[3:], forces * -2.5)
    np.testing.assert_allclose(mols.forces_in("kcal/mol/Å")[:3], forces * -1.5 * EV_TO_KCAL_MOL)
    assert mols.charge.tolist() == [-1.0, 0.0] and mols.multiplicity.tolist() == [2.0, 1.0]


def test_info_and_arrays_of_atoms_in_memory_and_the_unit_of_forces(tmp_path):
    atoms = _water(energy=-0.25)
    atoms.arrays["forces"] = np.full((3, 3), 0.5)
    mols = Molecules.from_atoms([atoms], unit="Hartree")
    assert mols.units == {"energy": "Hartree"} and mols.force_unit == "Hartree/Å"
    assert mols.target("energy", "kcal/mol")[0] == pytest.approx(-0.25 * 627.509474)
    np.testing.assert_allclose(mols.forces_in("kcal/mol/Å"), 0.5 * HARTREE_TO_KCAL_MOL)
    # back to ase.Atoms: forces in a SinglePointCalculator, in eV/Å
    again = mols[0]
    np.testing.assert_allclose(again.get_forces(), 0.5 * HARTREE_TO_KCAL_MOL / EV_TO_KCAL_MOL)
    assert again.info["energy"] == -0.25


def test_single_point_calculator_values_are_ev_unless_a_unit_is_given(tmp_path):
    atoms = _water()
    atoms.calc = SinglePointCalculator(atoms, energy=-14.2, forces=np.ones((3, 3)))
    ase.io.write(tmp_path / "calc.extxyz", atoms)
    mols = import_molecules([tmp_path / "calc.extxyz"])
    assert mols.units == {"energy": "eV"} and mols.force_unit == "eV/Å"
    assert mols.target("energy", "kcal/mol")[0] == pytest.approx(-14.2 * 23.0605, rel=1e-5)
    np.testing.assert_array_equal(mols.forces, np.ones((3, 3)))
    stated = import_molecules([tmp_path / "calc.extxyz"], unit="kcal/mol")
    assert stated.units == {"energy": "kcal/mol"} and stated.target("energy")[0] == -14.2
    assert stated.force_unit == "kcal/mol/Å"
    direct = Molecules.from_atoms([atoms])
    assert direct.target("energy")[0] == -14.2 and direct.force_unit == "eV/Å"


def test_ase_database_rows_with_key_value_pairs(tmp_path):
    path = tmp_path / "mols.db"
    with ase.db.connect(path) as db:
        water = _water()
        water.calc = SinglePointCalculator(water, energy=-14.2, forces=np.full((3, 3), 0.1))
        db.write(water, homo=-0.3, multiplicity=3)
        ion = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], charges=[0.5, 0.5])
        ion.calc = SinglePointCalculator(ion, energy=-1.0, forces=np.zeros((2, 3)))
        db.write(ion, homo=-0.6)
    mols = import_molecules([path], columns=["energy", "homo[Hartree]"], unit="eV")
    assert mols.ids.tolist() == ["mols.db:1", "mols.db:2"]
    assert mols.n_atoms.tolist() == [3, 2]
    np.testing.assert_allclose(mols.target("energy"), [-14.2, -1.0])
    assert mols.units == {"energy": "eV", "homo": "Hartree"}
    np.testing.assert_allclose(mols.target("homo", "eV"), [-0.3 * 27.211386, -0.6 * 27.211386])
    assert np.isnan(mols.charge[0]) and mols.charge[1] == 1.0  # net initial charge +1 counts
    assert mols.multiplicity[0] == 3 and np.isnan(mols.multiplicity[1])
    assert mols.forces.shape == (5, 3) and mols.forces[0, 0] == pytest.approx(0.1)


def test_spin_means_multiplicity_and_a_zero_spin_is_refused(tmp_path):
    mols = Molecules.from_atoms([_water(spin=2, charge=1)])
    assert mols.multiplicity.tolist() == [2.0] and mols.charge.tolist() == [1.0]
    with pytest.raises(DataFormatError, match=r"spin 0 is not a spin multiplicity 2S\+1"):
        Molecules.from_atoms([_water(spin=0)])


def test_comment_line_charge_that_ase_does_not_parse(tmp_path):
    (tmp_path / "ion.xyz").write_text(XYZ_H2.format(comment="charge: -1  multiplicity: 2"))
    frames, _, _ = read_frames(tmp_path / "ion.xyz")
    assert frames[0].info["charge"] == -1 and frames[0].info["multiplicity"] == 2
    (tmp_path / "n.xyz").write_text(XYZ_H2.format(comment="charge = 0"))
    assert read_molecules(tmp_path / "n.xyz").charge.tolist() == [0.0]


def test_periodic_cell_is_flagged(tmp_path):
    cell = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True)
    gas = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], pbc=True)  # pbc without a cell
    ase.io.write(tmp_path / "p.extxyz", [cell, gas])
    assert import_molecules([tmp_path / "p.extxyz"]).periodic.tolist() == [True, False]


def test_table_with_comments_commas_charges_and_units(tmp_path):
    folder = tmp_path / "mols"
    folder.mkdir()
    (folder / "a.xyz").write_text(XYZ_H2.format(comment="charge = 0"))
    (folder / "b.xyz").write_text(XYZ_H2.format(comment="plain comment"))
    (folder / "notes.txt").write_text("not a molecule file, ignored\n")
    table = tmp_path / "props.csv"
    table.write_text("# name, energy, charge, dipole\n\na.xyz, -1.0, 0, 0.5  # first\nb , -2.0, 1, 1.5\n")
    mols = import_molecules(
        [folder],
        table=table,
        columns=["name", "energy", "charge", "mu[Debye]"],
        unit="Hartree",
        descriptions={"mu": "dipole moment"},
    )
    assert mols.ids.tolist() == ["a", "b"] and mols.name == "mols"
    np.testing.assert_allclose(mols.target("energy", "kcal/mol"), [-627.509474, -2 * 627.509474])
    assert mols.units == {"energy": "Hartree", "mu": "Debye"}
    assert mols.charge.tolist() == [0.0, 1.0]
    assert mols.describe("mu") == "dipole moment (Debye)" and mols.describe("energy") == "energy (Hartree)"


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder with a.xyz and b.xyz (H2), and the table path beside it (not yet written)."""
    xyz = tmp_path / "xyz"
    xyz.mkdir()
    for name in ("a.xyz", "b.xyz"):
        (xyz / name).write_text(XYZ_H2.format(comment="charge = 0"))
    return xyz


def _import_table(folder: Path, text: str, columns=("name", "energy")) -> Molecules:
    table = folder.parent / "table.txt"
    table.write_text(text)
    return import_molecules([folder], table=table, columns=list(columns), unit="eV")


TABLE_ERRORS = {
    "missing file": ("a.xyz 1\nb.xyz 2\nc.xyz 3\n", r"table\.txt, line 3: file 'c\.xyz' not found in .*xyz"),
    "file without row": ("a.xyz 1\n", r"xyz: 1 xyz file\(s\) have no row in .*table\.txt \(first: b\.xyz\)"),
    "duplicate": (
        "a.xyz 1\nb.xyz 2\na.xyz 3\n",
        r"table\.txt, line 3: 'a\.xyz' is listed again \(first on line 1\)",
    ),
    "same file twice": ("a.xyz 1\na 2\n", r"table\.txt, line 2: 'a' names the same file as line 1"),
    "non-numeric": ("a.xyz 1\nb.xyz x2\n", r"table\.txt, line 2: column 2 \(energy\) is 'x2', not a number"),
    "words after the first row": (
        "a.xyz 1\nname energy\n",
        r"table\.txt, line 2: column 2 \(energy\) is 'energy', not a number$",
    ),
    "a word where the first row's number goes": (
        "a.xyz x\nb.xyz 2\n",
        r"table\.txt, line 1: column 2 \(energy\) is 'x', not a number \(a header row names the columns",
    ),
    "nan": ("a.xyz nan\nb.xyz 2\n", r"table\.txt, line 1: column 2 \(energy\) is NaN"),
    "inf": ("a.xyz 1\n\nb.xyz -inf\n", r"table\.txt, line 3: column 2 \(energy\) is infinite"),
    "column count": ("a.xyz 1\nb.xyz 2 3\n", r"table\.txt, line 2: 3 columns, expected 2 \(name energy\)"),
    "trailing comma": ("a.xyz, 1,\n", r"table\.txt, line 1: 3 columns, expected 2"),
    "empty table": ("# nothing\n\n", r"table\.txt: the table has no rows"),
}


@pytest.mark.parametrize("case", sorted(TABLE_ERRORS))
def test_bad_table_names_file_and_line(folder, case):
    text, message = TABLE_ERRORS[case]
    with pytest.raises(DataFormatError, match=message) as err:
        _import_table(folder, text)
    assert "\n" not in str(err.value)


def test_table_header_row_is_skipped_or_names_the_columns(folder):
    table = folder.parent / "h.csv"
    table.write_text("file,energy[kcal/mol],homo[Hartree]\na.xyz,-1.5,-0.3\nb.xyz,-2.5,-0.4\n")
    mols = import_molecules([folder], table=table)  # the columns from the header
    assert mols.units == {"energy": "kcal/mol", "homo": "Hartree"}
    np.testing.assert_allclose(mols.targets["energy"], [-1.5, -2.5])
    np.testing.assert_allclose(mols.targets["homo"], [-0.3, -0.4])
    same = import_molecules([folder], table=table, columns=["name", "energy[kcal/mol]", "-"])
    np.testing.assert_allclose(same.targets["energy"], [-1.5, -2.5])  # a header given --columns is skipped
    table.write_text("a.xyz,-1.5\nb.xyz,-2.5\n")
    with pytest.raises(DataFormatError, match=r"h\.csv: no header row; give the table's columns"):
        import_molecules([folder], table=table)
    table.write_text("molecule,energy[eV]\na.xyz,-1.5\nb.xyz,-2.5\n")
    with pytest.raises(
        DataFormatError, match=r"h\.csv: the header 'molecule,energy\[eV\]' has no file-name column"
    ):
        import_molecules([folder], table=table)


def test_bad_multiplicity_column(folder):
    with pytest.raises(DataFormatError, match=r"table\.txt, line 2: column 2 \(multiplicity\) is 0"):
        _import_table(folder, "a.xyz 1\nb.xyz 0\n", columns=("name", "multiplicity"))


@pytest.mark.parametrize(
    "columns, message",
    [
        (["name", "energy (eV)"], r"table\.txt: unknown column spec 'energy \(eV\)'"),
        (["name", ""], r"table\.txt: unknown column spec ''"),
        (["energy", "-"], r"table\.txt: columns .* need exactly one 'name' column"),
        (["name", "energy", "energy"], r"table\.txt: column 'energy' is given twice"),
    ],
)
def test_bad_column_specs(folder, columns, message):
    with pytest.raises(DataFormatError, match=message):
        _import_table(folder, "a.xyz 1 2\nb.xyz 2 3\n", columns=columns)


def test_table_column_needs_a_unit(folder):
    (folder.parent / "t.txt").write_text("a.xyz 1\nb.xyz 2\n")
    with pytest.raises(
        DataFormatError, match=r"t\.txt: column 'energy' has no unit; pass --unit \(unit= in Python"
    ):
        import_molecules([folder], table=folder.parent / "t.txt", columns=["name", "energy"])
    mols = import_molecules([folder], table=folder.parent / "t.txt", columns=["name", "energy[eV]"])
    assert mols.units == {"energy": "eV"}


def test_folder_without_table_and_empty_folder(folder, tmp_path):
    with pytest.raises(DataFormatError, match=r"xyz: a folder of xyz files needs a property table"):
        import_molecules([folder])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no molecules here")
    with pytest.raises(DataFormatError, match=r"empty: no xyz files in this folder"):
        import_molecules([empty], table=tmp_path / "t.txt", columns=["name", "energy"], unit="eV")


def test_unreadable_xyz_in_folder_names_the_file(folder):
    (folder / "b.xyz").write_text("3\ncomment\nH 0 0 0\nH 0 0\n")
    with pytest.raises(DataFormatError, match=r"b\.xyz: cannot read molecules"):
        _import_table(folder, "a.xyz 1\nb.xyz 2\n")
    (folder / "b.xyz").write_text("2\ncomment\nQq 0 0 0\nH 0 0 1\n")
    with pytest.raises(DataFormatError, match=r"b\.xyz: unknown element symbol or field 'Qq'"):
        _import_table(folder, "a.xyz 1\nb.xyz 2\n")


def test_multi_frame_file_named_by_one_row(folder):
    (folder / "b.xyz").write_text(XYZ_H2.format(comment="x") * 2)
    with pytest.raises(DataFormatError, match=r"b\.xyz: holds 2 molecules, but a table row describes one"):
        _import_table(folder, "a.xyz 1\nb.xyz 2\n")


def test_missing_sources_table_and_bad_units(folder, tmp_path):
    with pytest.raises(DataFormatError, match=r"nowhere\.xyz: no such file or folder"):
        import_molecules([tmp_path / "nowhere.xyz"])
    with pytest.raises(DataFormatError, match=r"missing\.txt: no such file"):
        import_molecules([folder], table=tmp_path / "missing.txt", columns=["name", "energy"], unit="eV")
    with pytest.raises(DataFormatError, match="energy unit 'kcal'"):
        import_molecules([folder], table=tmp_path / "t.txt", columns=["name", "energy"], unit="kcal")
    with pytest.raises(DataFormatError, match="force unit 'eV/nm'"):
        import_molecules([folder], force_unit="eV/nm")


def test_partial_energies_or_forces_name_the_frame(tmp_path):
    with_energy = _water(energy=-1.0)
    ase.io.write(tmp_path / "mixed.extxyz", [with_energy, _water()])
    with pytest.raises(DataFormatError, match=r"mixed\.extxyz, frame 1: has no 'energy'.* 1 of 2 molecules"):
        import_molecules([tmp_path / "mixed.extxyz"])
    a, b = _water(energy=-1.0), _water(energy=-2.0)
    a.arrays["forces"] = np.zeros((3, 3))
    ase.io.write(tmp_path / "f.extxyz", [a, b])
    with pytest.raises(DataFormatError, match=r"f\.extxyz, frame 1: has no forces, but 1 of 2"):
        import_molecules([tmp_path / "f.extxyz"])


def test_non_finite_energy_in_file_and_unknown_description(tmp_path):
    ase.io.write(tmp_path / "nan.extxyz", _water(energy=float("nan")))
    with pytest.raises(DataFormatError, match=r"nan\.extxyz: energy is nan"):
        import_molecules([tmp_path / "nan.extxyz"])
    bad = _water(energy=-1.0)
    bad.arrays["forces"] = np.full((3, 3), np.inf)
    ase.io.write(tmp_path / "inf.extxyz", bad)
    with pytest.raises(DataFormatError, match=r"inf\.extxyz: forces hold NaN or infinite values"):
        import_molecules([tmp_path / "inf.extxyz"])
    assert read_molecules(tmp_path / "inf.extxyz").forces is None  # lenient reading leaves them out
    ase.io.write(tmp_path / "ok.extxyz", _water(energy=-1.0))
    with pytest.raises(DataFormatError, match=r"description\(s\) for unknown target\(s\) \['U0'\]"):
        import_molecules([tmp_path / "ok.extxyz"], descriptions={"U0": "x"})


# ----------------------------------------------------------------------------- load_dataset
def test_load_dataset_paths_and_targets(tmp_path, small_molecules):
    with pytest.raises(DataFormatError, match=r"^nothing\.h5: no such file"):
        load_dataset("nothing.h5")
    h5 = save_molecules(tmp_path / "small.h5", small_molecules)
    assert load_dataset(h5).ids.tolist() == ["methane", "water", "ammonia"]
    with pytest.raises(DataFormatError, match=r"small: no target 'U0'; available targets: energy"):
        load_dataset(str(h5), target="U0")
    ase.io.write(tmp_path / "w.extxyz", _water(energy=-3.0))
    assert load_dataset(tmp_path / "w.extxyz", target="energy").target("energy").tolist() == [-3.0]
    with pytest.raises(DataFormatError, match="is a folder"):
        load_dataset(tmp_path)


def test_load_dataset_qm7_by_name(qm7_path, monkeypatch):
    monkeypatch.setenv("QMLX_DATA_DIR", str(qm7_path.parent))
    qm7 = load_dataset("qm7", target="atomization_energy")
    assert qm7.describe("atomization_energy") == "PBE0 atomization energy (kcal/mol)"
    assert (qm7.charge == 0).all() and (qm7.multiplicity == 1).all() and len(qm7) == 7165
    with pytest.raises(
        DataFormatError, match=r"qm7: no target 'energy'; available targets: atomization_energy"
    ):
        load_dataset("qm7", target="energy")


# ----------------------------------------------------------------------------- Molecules fields and store
@pytest.fixture
def rich(small_molecules) -> Molecules:
    """small_molecules with forces, charges, multiplicities, a periodic flag and a description."""
    m = small_molecules
    return Molecules(
        Z=m.Z,
        R=m.R,
        n_atoms=m.n_atoms,
        targets=m.targets,
        units=m.units,
        ids=m.ids,
        name="rich",
        forces=np.arange(36.0).reshape(12, 3),
        force_unit="kcal/mol/A",
        charge=[0, np.nan, 1],
        multiplicity=[1, np.nan, 2],
        periodic=[False, True, False],
        descriptions={"energy": "made-up energy"},
    )


def test_defaults_keep_old_constructor_calls(small_molecules):
    assert small_molecules.forces is None and small_molecules.force_unit is None
    assert np.isnan(small_molecules.charge).all() and np.isnan(small_molecules.multiplicity).all()
    assert small_molecules.periodic.tolist() == [False] * 3 and small_molecules.descriptions == {}
    assert small_molecules.describe("energy") == "energy (kcal/mol)"


def test_subset_concatenate_and_atoms_carry_the_new_fields(rich):
    assert rich.force_unit == "kcal/mol/Å"
    sub = rich.subset([2, 0])
    np.testing.assert_array_equal(sub.forces, rich.forces[[8, 9, 10, 11, 0, 1, 2, 3, 4]])
    assert sub.charge.tolist() == [1, 0] and sub.multiplicity.tolist() == [2, 1]
    assert sub.periodic.tolist() == [False, False] and sub.descriptions == {"energy": "made-up energy"}
    both = Molecules.concatenate([rich, rich.subset([1])])
    assert len(both) == 4 and both.periodic.tolist() == [False, True, False, True]
    np.testing.assert_array_equal(both.forces[12:], rich.forces[5:8])
    with pytest.raises(DataFormatError, match="some parts have forces and some do not"):
        Molecules.concatenate([rich, Molecules(Z=[1], R=[[0, 0, 0]], n_atoms=[1], targets={"energy": [0]},
                                               units={"energy": "kcal/mol"})])  # fmt: skip
    ammonia = rich[2]
    assert ammonia.info["charge"] == 1 and ammonia.info["multiplicity"] == 2
    np.testing.assert_allclose(ammonia.get_forces(), rich.forces[8:] / EV_TO_KCAL_MOL)
    assert rich[1].info["periodic"] is True and "charge" not in rich[1].info


def test_store_keeps_every_field(tmp_path, rich):
    back = load_molecules(save_molecules(tmp_path / "rich.h5", rich))
    _assert_same(rich, back)
    with h5py.File(tmp_path / "rich.h5") as f:
        assert f.attrs["schema_version"] == 2
        assert f["targets/energy"].attrs["description"] == "made-up energy"
        assert f["forces"].attrs["unit"] == "kcal/mol/Å"


def test_store_reads_version_1_files(tmp_path, small_molecules):
    path = save_molecules(tmp_path / "v1.h5", small_molecules)
    with h5py.File(path, "a") as f:  # what qmlx wrote before schema version 2
        f.attrs["schema_version"] = 1
        for key in ("charge", "multiplicity", "periodic"):
            del f[key]
        del f["targets/energy"].attrs["description"]
    back = load_molecules(path)
    assert np.isnan(back.charge).all() and not back.periodic.any() and back.forces is None
    np.testing.assert_array_equal(back.targets["energy"], small_molecules.targets["energy"])


def test_invalid_new_fields_are_rejected():
    base = dict(Z=[1, 1], R=[[0, 0, 0], [0, 0, 0.74]], n_atoms=[2])
    with pytest.raises(DataFormatError, match="forces must have shape"):
        Molecules(**base, forces=np.zeros((3, 3)), force_unit="eV/Å")
    with pytest.raises(DataFormatError, match="forces have no unit"):
        Molecules(**base, forces=np.zeros((2, 3)))
    with pytest.raises(DataFormatError, match="non-finite force"):
        Molecules(**base, forces=[[0, 0, np.nan], [0, 0, 0]], force_unit="eV/Å")
    with pytest.raises(DataFormatError, match=r"multiplicity 0.5; expected 2S\+1"):
        Molecules(**base, multiplicity=[0.5])
    with pytest.raises(DataFormatError, match=r"description\(s\) for unknown target"):
        Molecules(**base, descriptions={"energy": "x"})


# ---------------------------------------------------------------------------- other tools' files
SCHNETPACK_DB = Path(__file__).parent / "fixtures" / "schnetpack" / "molecules.db"


def test_schnetpack_database_reads_data_units_and_atom_references():
    """A database written by schnetpack's ASEAtomsData: properties in row.data, units and atom
    references in the metadata (made by tests/fixtures/schnetpack/make_fixtures.py)."""
    mols = import_molecules([SCHNETPACK_DB])
    assert len(mols) == 40 and mols.units["energy"] == "eV" and mols.force_unit == "eV/Å"
    with ase.db.connect(SCHNETPACK_DB) as db:
        rows = list(db.select())
        refs = np.asarray(db.metadata["atomrefs"]["energy"])
    np.testing.assert_allclose(mols.targets["energy"], [r.data["energy"][0] for r in rows])
    np.testing.assert_allclose(mols.forces, np.concatenate([r.data["forces"] for r in rows]))
    by_hand = mols.targets["energy"][3] - refs[rows[3].numbers].sum()
    assert mols.targets["energy_atomization"][3] == pytest.approx(by_hand)
    assert mols.units["energy_atomization"] == "eV" and "atom references" in mols.describe(
        "energy_atomization"
    )
    assert load_dataset(SCHNETPACK_DB).units["energy"] == "eV"  # every loader reads it the same way


def test_schnetpack_database_units_contradicted_or_missing_properties_name_the_file():
    with pytest.raises(DataFormatError, match=r"molecules\.db: records energy in eV, not kcal/mol"):
        import_molecules([SCHNETPACK_DB], unit="kcal/mol")
    with pytest.raises(DataFormatError, match=r"molecules\.db: records energy in eV, not Hartree"):
        import_molecules([SCHNETPACK_DB], columns=["energy[Hartree]"])
    with pytest.raises(
        DataFormatError,
        match=r"molecules\.db: no molecule has a property 'U0'; its molecules have: energy, forces",
    ):
        import_molecules([SCHNETPACK_DB], columns=["U0[eV]"])


def test_extxyz_property_by_name_and_unit_from_the_command_line(tmp_path, capsys):
    from qmlx.cli import main

    frames = []
    for k, name in enumerate(["H2O", "CH4", "NH3"]):
        atoms = ase.build.molecule(name)
        atoms.info["U0"], atoms.info["homo"] = -40.0 - k, -0.3
        frames.append(atoms)
    src, out = tmp_path / "u0.extxyz", tmp_path / "u0.h5"
    ase.io.write(src, frames)
    assert main(["data", "import", str(src), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no 'energy', but the molecules have U0, homo" in err and "--target U0[eV]" in err
    assert not out.exists()
    assert (
        main(["data", "import", str(src), "--target", "U0[Hartree]", "--out", str(out), "--no-progress"]) == 0
    )
    mols = load_dataset(out)
    assert mols.units == {"U0": "Hartree"}
    np.testing.assert_allclose(mols.targets["U0"], [-40.0, -41.0, -42.0])
    assert (
        main(["data", "import", str(src), "--target", "U0[kcal/mole]", "--out", str(out), "--no-progress"])
        == 1
    )
    assert "unknown unit 'kcal/mole'; did you mean 'kcal/mol'?" in capsys.readouterr().err
    assert main(["data", "import", str(src), "--columns", "U0", "--out", str(out), "--no-progress"]) == 1
    assert "--target KEY[UNIT]" in capsys.readouterr().err


def test_every_molecule_of_a_multi_molecule_sdf_and_mol2(tmp_path):
    from qmlx.models import load_model

    blocks = []
    for k, name in enumerate(["H2O", "CH4", "NH3"]):
        path = tmp_path / f"{k}.sdf"
        ase.io.write(path, ase.build.molecule(name), format="sdf")
        blocks.append(path.read_text().rstrip("\n").removesuffix("$$$$").rstrip("\n") + "\n$$$$\n")
    sdf = tmp_path / "three.sdf"
    sdf.write_text("".join(blocks))
    frames, labels, _ = read_frames(sdf)
    assert [a.get_chemical_formula() for a in frames] == ["H2O", "CH4", "H3N"]
    assert labels[2].endswith("three.sdf, frame 2")
    pred = load_model("qm7-schnet").predict(frames)
    assert len(pred.energy) == 3 and np.isfinite(pred.energy).all()
    mol2 = tmp_path / "two.mol2"
    mol2.write_text(
        "@<TRIPOS>MOLECULE\nwater\n 3 2 0 0 0\nSMALL\nNO_CHARGES\n\n@<TRIPOS>ATOM\n"
        "1 O1 0.0 0.0 0.119 O.3 1 HOH 0.0\n2 H1 0.0 0.763 -0.477 H 1 HOH 0.0\n3 H2 0.0 -0.763 -0.477 H 1 HOH 0.0\n"
        "@<TRIPOS>BOND\n1 1 2 1\n2 1 3 1\n"
        "@<TRIPOS>MOLECULE\nmethane\n 5 4 0 0 0\nSMALL\nNO_CHARGES\n\n@<TRIPOS>ATOM\n"
        "1 C1 0.0 0.0 0.0 C.3 1 MET 0.0\n2 H1 0.629 0.629 0.629 H 1 MET 0.0\n3 H2 -0.629 -0.629 0.629 H 1 MET 0.0\n"
        "4 H3 -0.629 0.629 -0.629 H 1 MET 0.0\n5 H4 0.629 -0.629 -0.629 H 1 MET 0.0\n"
    )
    frames, _, _ = read_frames(mol2)
    assert [a.get_chemical_formula() for a in frames] == ["H2O", "CH4"]
    np.testing.assert_allclose(frames[0].positions[1], [0.0, 0.763, -0.477])
    mol2.write_text("@<TRIPOS>MOLECULE\nx\n@<TRIPOS>ATOM\n1 X1 0 0 0 Xx.3\n")
    with pytest.raises(DataFormatError, match=r"two\.mol2.*unknown atom type 'Xx\.3'"):
        read_frames(mol2)


@pytest.mark.parametrize(
    "extra, status, message",
    [
        ([], 0, "40 molecules, 312 atoms; energy (eV), energy minus the database's atom references (eV)"),
        (["--target", "energy"], 0, "40 molecules, 312 atoms; energy (eV), energy minus"),
        (
            ["--target", "U0[eV]"],
            1,
            "molecules.db: no molecule has a property 'U0'; its molecules have: energy, forces",
        ),
        (["--unit", "kcal/mol"], 1, "molecules.db: records energy in eV, not kcal/mol"),
        (["--target", "energy[Hartree]"], 1, "molecules.db: records energy in eV, not Hartree"),
        (["--target", "energy[ev]", "--target", "energy"], 1, "column 'energy' is given twice"),
    ],
)
def test_schnetpack_database_from_the_command_line(tmp_path, capsys, extra, status, message):
    from qmlx.cli import main

    out = tmp_path / "spk.h5"
    assert main(["data", "import", str(SCHNETPACK_DB), "--out", str(out), "--no-progress", *extra]) == status
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert out.exists() == (status == 0)
    if status == 0:
        mols = load_dataset(out)
        assert mols.units["energy"] == "eV" and mols.force_unit == "eV/Å" and len(mols) == 40


def test_table_with_a_header_and_a_multi_molecule_sdf_from_the_command_line(folder, tmp_path, capsys):
    from qmlx.cli import main

    table = folder.parent / "h.csv"
    table.write_text("file,energy[kcal/mol]\na.xyz,-1.5\nb.xyz,-2.5\n")
    out = tmp_path / "t.h5"
    assert (
        main(["data", "import", str(folder), "--table", str(table), "--out", str(out), "--no-progress"]) == 0
    )
    assert "2 molecules" in capsys.readouterr().err
    np.testing.assert_allclose(load_dataset(out).targets["energy"], [-1.5, -2.5])
    blocks = []
    for k, name in enumerate(["H2O", "CH4", "NH3"]):
        part = tmp_path / f"{k}.sdf"
        ase.io.write(part, ase.build.molecule(name), format="sdf")
        blocks.append(part.read_text().rstrip("\n").removesuffix("$$$$").rstrip("\n") + "\n$$$$\n")
    sdf = tmp_path / "three.sdf"
    sdf.write_text("".join(blocks))
    assert main(["data", "import", str(sdf), "--out", str(tmp_path / "s.h5"), "--no-progress"]) == 0
    assert "3 molecules" in capsys.readouterr().err
    assert main(["predict", "qm7-schnet", str(sdf), "--format", "jsonl", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["formula"] for r in rows] == ["H2O", "CH4", "H3N"] and all(r["energy"] < 0 for r in rows)


def test_forces_from_a_named_array_with_its_unit(tmp_path, capsys):
    from qmlx.cli import main

    frames = []
    rng = np.random.default_rng(1)
    for name in ("H2O", "CH4"):
        atoms = ase.build.molecule(name)
        atoms.info["energy"] = -10.0
        atoms.arrays["dft_forces"] = rng.normal(size=(len(atoms), 3))
        frames.append(atoms)
    src, out = tmp_path / "f.extxyz", tmp_path / "f.h5"
    ase.io.write(src, frames)
    argv = [
        "data",
        "import",
        str(src),
        "--forces",
        "dft_forces[Hartree/Bohr]",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    mols = load_dataset(out)
    assert mols.force_unit == "Hartree/Bohr"
    np.testing.assert_allclose(
        mols.forces, np.concatenate([a.arrays["dft_forces"] for a in frames]), atol=1e-8
    )
    assert main(["data", "import", str(src), "--forces", "grad", "--out", str(out), "--no-progress"]) == 1
    assert (
        "f.extxyz: no molecule has per-atom 'grad'; its molecules have: dft_forces" in capsys.readouterr().err
    )
