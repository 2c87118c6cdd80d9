"""The data layer: Molecules, the QM7 and QM9 loaders, the HDF5 store and malformed input."""

from __future__ import annotations

import bz2
import io
import tarfile

import ase
import ase.io
import h5py
import numpy as np
import pytest
import scipy.io

from qmlx.data import Molecules, load_molecules, load_qm7, load_qm9, read_molecules, save_molecules
from qmlx.data.qm9 import parse_qm9_xyz, read_qm9_xyz
from qmlx.errors import DataFormatError
from qmlx.units import HARTREE_TO_KCAL_MOL


# ----------------------------------------------------------------------------- Molecules
def test_offsets_and_molecule_index(small_molecules):
    assert small_molecules.offsets.tolist() == [0, 5, 8, 12]
    assert small_molecules.mol_index.tolist() == [0] * 5 + [1] * 3 + [2] * 4


def test_subset_reorders_atoms_with_their_molecules(small_molecules):
    sub = small_molecules.subset([2, 0])
    assert sub.n_atoms.tolist() == [4, 5]
    assert sub.Z.tolist() == [7, 1, 1, 1, 6, 1, 1, 1, 1]
    np.testing.assert_array_equal(sub.R[4], small_molecules.R[0])
    assert sub.ids.tolist() == ["ammonia", "methane"]
    assert sub.targets["energy"].tolist() == [-3.0, -1.0]


def test_integer_index_gives_ase_atoms_and_slice_gives_molecules(small_molecules):
    water = small_molecules[1]
    assert isinstance(water, ase.Atoms)
    assert water.get_chemical_formula() == "H2O"
    assert water.info["energy"] == -2.0
    assert isinstance(small_molecules[1:], Molecules)
    assert len(small_molecules[np.array([True, False, True])]) == 2
    with pytest.raises(IndexError):
        small_molecules[3]


def test_padded_places_atoms_in_rows(small_molecules):
    Z, R, mask = small_molecules.padded()
    assert Z.shape == (3, 5) and R.shape == (3, 5, 3)
    assert Z[1].tolist() == [8, 1, 1, 0, 0]
    assert mask.sum() == 12
    np.testing.assert_array_equal(R[2, 3], small_molecules.R[11])


def test_from_atoms_round_trip(small_molecules):
    again = Molecules.from_atoms(small_molecules.to_atoms(), targets={"energy": "kcal/mol"})
    np.testing.assert_array_equal(again.Z, small_molecules.Z)
    np.testing.assert_array_equal(again.R, small_molecules.R)
    np.testing.assert_array_equal(again.targets["energy"], small_molecules.targets["energy"])


def test_inconsistent_arrays_are_rejected():
    with pytest.raises(DataFormatError, match="atom counts add up to 3"):
        Molecules(Z=[1, 1], R=np.zeros((2, 3)), n_atoms=[3])
    with pytest.raises(DataFormatError, match="invalid nuclear charge"):
        Molecules(Z=[1, 0], R=np.zeros((2, 3)), n_atoms=[2])
    with pytest.raises(DataFormatError, match="has no unit"):
        Molecules(Z=[1, 1], R=np.zeros((2, 3)), n_atoms=[2], targets={"e": [1.0]})


# ----------------------------------------------------------------------------- QM7
def test_qm7_methane_is_molecule_zero(qm7):
    methane = qm7[0]
    assert methane.numbers.tolist() == [6, 1, 1, 1, 1]
    assert qm7.targets["atomization_energy"][0] == pytest.approx(-417.96, abs=1e-3)
    assert qm7.units["atomization_energy"] == "kcal/mol"


def test_qm7_counts_composition_and_sizes(qm7):
    assert len(qm7) == 7165
    assert qm7.composition() == {"H": 61959, "C": 35761, "N": 6655, "O": 5978, "S": 297}
    assert qm7.n_atoms.min() == 4 and qm7.n_atoms.max() == 23
    assert qm7.targets["atomization_energy"].mean() == pytest.approx(-1538.04, abs=0.01)


def _mean_bond_length(mols: Molecules, z_heavy: int) -> float:
    """Mean distance (Å) from each H to its nearest atom of charge ``z_heavy`` when bonded to it."""
    Z, R, _ = mols.padded()
    d = np.linalg.norm(R[:, :, None] - R[:, None, :], axis=-1)
    d[:, np.arange(Z.shape[1]), np.arange(Z.shape[1])] = np.inf
    d[np.broadcast_to(Z[:, None, :] == 0, d.shape)] = np.inf
    nearest = d.argmin(axis=2)
    nearest_z = np.take_along_axis(Z, nearest, axis=1)
    hydrogens = (Z == 1) & (nearest_z == z_heavy)
    return float(d.min(axis=2)[hydrogens].mean())


def test_qm7_bond_lengths_are_in_angstrom(qm7):
    # in Bohr these would be about 2.06, 1.93 and 1.84: a missing conversion fails here
    assert _mean_bond_length(qm7, 6) == pytest.approx(1.092, abs=0.01)
    assert _mean_bond_length(qm7, 7) == pytest.approx(1.019, abs=0.01)
    assert _mean_bond_length(qm7, 8) == pytest.approx(0.975, abs=0.01)


def test_qm7_folds_partition_all_molecules(qm7):
    assert len(qm7.folds) == 5
    tests = np.concatenate([test for _, test in qm7.folds])
    assert sorted(tests.tolist()) == list(range(7165))
    for train, test in qm7.folds:
        assert len(test) == 1433 and len(train) == 7165 - 1433
        assert not np.intersect1d(train, test).size


def test_qm7_wrong_keys_name_the_file(tmp_path):
    bad = tmp_path / "qm7.mat"
    scipy.io.savemat(bad, {"Z": np.zeros((2, 3)), "coords": np.zeros((2, 3, 3))})
    with pytest.raises(DataFormatError, match=r"qm7\.mat: missing key\(s\) \['R', 'T', 'P'\]"):
        load_qm7(bad)


def test_qm7_unexpected_charge_is_rejected(tmp_path):
    bad = tmp_path / "qm7.mat"
    Z = np.array([[6.0, 1.0, 0.0], [9.0, 1.0, 0.0]])
    scipy.io.savemat(bad, {"Z": Z, "R": np.ones((2, 3, 3)), "T": np.ones((1, 2)), "P": np.array([[0], [1]])})
    with pytest.raises(DataFormatError, match=r"qm7\.mat: unexpected nuclear charges \[9\]"):
        load_qm7(bad)


def test_qm7_not_a_mat_file(tmp_path):
    bad = tmp_path / "qm7.mat"
    bad.write_text("not matlab")
    with pytest.raises(DataFormatError, match="qm7.mat: not a readable MATLAB file"):
        load_qm7(bad)


# ----------------------------------------------------------------------------- QM9
def test_qm9_index_1_is_methane_with_known_u0(qm9):
    assert len(qm9) == 130831
    assert qm9.ids[0] == 1
    assert qm9[0].get_chemical_formula() == "CH4"
    assert qm9.targets["U0"][0] == pytest.approx(-40.47893, abs=1e-6)
    assert qm9.units["U0"] == "Hartree"
    expected = (-40.47893 - (-37.846772 + 4 * -0.500273)) * HARTREE_TO_KCAL_MOL
    assert qm9.targets["atomization_energy"][0] == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(-396.0, abs=0.1)


def test_qm9_cache_is_reused(qm9):
    again = load_qm9()  # the fixture's cache directory now holds the HDF5 copy
    np.testing.assert_array_equal(again.R, qm9.R)
    np.testing.assert_array_equal(again.targets["U0"], qm9.targets["U0"])


METHANE_XYZ = """5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC\t
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""

WATER_XYZ = """3
gdb 3\t799.58812\t437.90386\t282.94545\t1.8511\t6.31\t-0.2928\t0.0687\t0.3615\t19.0002\t0.021375\t-76.404702\t-76.401867\t-76.400922\t-76.422349\t6.002\t
O\t-0.0343604951\t 0.9775395708\t 0.0076015923\t-0.589706
H\t 0.0647664923\t 0.0205721989\t 1.5346341*^-3\t 0.294853
H\t 0.8717903737\t 1.3007924048\t 0.0006931336\t 0.294853
1671.4222\t3803.6305\t3907.698
O\tO\t
InChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2
"""


def test_official_xyz_record_with_mathematica_exponent():
    index, Z, R, props = parse_qm9_xyz(WATER_XYZ, "water.xyz")
    assert index == 3 and Z == [8, 1, 1]
    assert R[1][2] == pytest.approx(1.5346341e-3)
    assert props[10] == pytest.approx(-76.404702)


def _write_archive(path, records, mode="w:bz2"):
    with tarfile.open(path, mode) as tar:
        for name, text in records.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_official_archive_is_read_without_unpacking(tmp_path):
    archive = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    _write_archive(archive, {"dsgdb9nsd_000003.xyz": WATER_XYZ, "dsgdb9nsd_000001.xyz": METHANE_XYZ})
    assert bz2.BZ2File(archive).read(3)  # really compressed
    mols = read_qm9_xyz(archive)
    assert mols.ids.tolist() == [1, 3]
    assert mols.targets["U0"][0] == pytest.approx(-40.47893)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dsgdb9nsd.xyz.tar.bz2"]


def test_gzip_archive_is_read_too(tmp_path):
    archive = tmp_path / "dsgdb9nsd.xyz.tar.gz"
    _write_archive(archive, {"dsgdb9nsd_000001.xyz": METHANE_XYZ}, mode="w:gz")
    assert read_qm9_xyz(archive).ids.tolist() == [1]


def test_official_folder_drops_uncharacterized(tmp_path):
    (tmp_path / "dsgdb9nsd_000001.xyz").write_text(METHANE_XYZ)
    (tmp_path / "dsgdb9nsd_000003.xyz").write_text(WATER_XYZ)
    (tmp_path / "uncharacterized.txt").write_text("header line\n 3  C1=CC=CC=C1 x y\n")
    mols = read_qm9_xyz(tmp_path)
    assert mols.ids.tolist() == [1]


def test_official_xyz_malformed_record_names_the_file(tmp_path):
    (tmp_path / "dsgdb9nsd_000001.xyz").write_text(METHANE_XYZ.replace("gdb 1", "xyz 1"))
    with pytest.raises(DataFormatError, match="dsgdb9nsd_000001.xyz: not an official QM9 xyz record"):
        read_qm9_xyz(tmp_path)


# ----------------------------------------------------------------------------- HDF5 store and files
def test_xyz_hdf5_round_trip_keeps_the_molecule(tmp_path):
    atoms = ase.Atoms(
        "CH4",
        positions=[
            [0, 0, 0],
            [0.63, 0.63, 0.63],
            [-0.63, -0.63, 0.63],
            [-0.63, 0.63, -0.63],
            [0.63, -0.63, -0.63],
        ],
    )
    xyz = tmp_path / "methane.xyz"
    ase.io.write(xyz, atoms)
    mols = read_molecules(xyz)
    save_molecules(tmp_path / "m.h5", mols)
    back = load_molecules(tmp_path / "m.h5")[0]
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-12)


def test_hdf5_keeps_targets_units_ids_and_folds(tmp_path, small_molecules):
    small_molecules.folds = [(np.array([0, 1]), np.array([2]))]
    save_molecules(tmp_path / "m.h5", small_molecules)
    back = load_molecules(tmp_path / "m.h5")
    assert back.units == {"energy": "kcal/mol"}
    assert back.ids.tolist() == ["methane", "water", "ammonia"]
    assert back.folds[0][1].tolist() == [2]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_hdf5_of_another_schema_version_is_rejected(tmp_path, small_molecules):
    path = save_molecules(tmp_path / "m.h5", small_molecules)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(DataFormatError, match="m.h5: schema version 99"):
        load_molecules(path)


def test_corrupted_hdf5_names_the_file(tmp_path, small_molecules):
    path = save_molecules(tmp_path / "m.h5", small_molecules)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="m.h5: corrupt or unreadable HDF5 file"):
        load_molecules(path)


MALFORMED = {
    "truncated.xyz": ("3\ncomment\nO 0 0 0\nH 0 0 1\n", "truncated.xyz: cannot read molecules"),
    "unknown.xyz": ("2\ncomment\nXx 0 0 0\nH 0 0 1\n", "unknown.xyz: unknown element symbol or field 'Xx'"),
    "nan.xyz": ("2\ncomment\nO 0 nan 0\nH 0 0 1\n", "nan.xyz: molecule 0 has a non-finite"),
    "empty.xyz": ("", "empty.xyz: "),
    "garbage.h5": ("not hdf5", "garbage.h5: not an HDF5 file"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_raises_error_naming_it(tmp_path, name):
    text, message = MALFORMED[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(DataFormatError, match=message.replace(".", r"\.").replace("(", r"\(")):
        read_molecules(tmp_path / name)


def test_ase_database_and_extxyz_energies_are_read(tmp_path):
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    water = ase.Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
    water.calc = SinglePointCalculator(water, energy=-14.2)
    with ase.db.connect(tmp_path / "mols.db") as db:
        db.write(water)
        db.write(ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), data={})
    mols = read_molecules(tmp_path / "mols.db")
    assert mols.n_atoms.tolist() == [3, 2]
    ase.io.write(tmp_path / "w.extxyz", water)
    from_extxyz = read_molecules(tmp_path / "w.extxyz")
    assert from_extxyz.units == {"energy": "eV"}
    assert from_extxyz.target("energy", "kcal/mol")[0] == pytest.approx(-14.2 * 23.0605, rel=1e-4)


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    import urllib.request

    from qmlx.errors import DataNotFoundError

    monkeypatch.delenv("QMLX_DATA_DIR", raising=False)
    monkeypatch.setenv("QMLX_CACHE_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="could not be downloaded .* set QMLX_DATA_DIR"):
        load_qm7()
    assert list(tmp_path.iterdir()) == []  # no half-written file left behind


def test_scikit_learn_indexes_molecules_without_converting_them(small_molecules):
    from sklearn.utils import _safe_indexing

    part = _safe_indexing(small_molecules, np.array([2, 0]))
    assert isinstance(part, Molecules)
    assert part.ids.tolist() == ["ammonia", "methane"]


def test_atomic_writes_leave_the_old_file_or_the_new_one_never_a_part(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qmlx._io import savefig_atomic, write_text_atomic

    target = tmp_path / "out" / "table.md"
    write_text_atomic(target, "first\n")
    assert target.read_text() == "first\n"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    savefig_atomic(fig, tmp_path / "out" / "curve.png")
    savefig_atomic(fig, tmp_path / "out" / "curve.pdf")
    assert (tmp_path / "out" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "curve.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError):
        savefig_atomic(fig, tmp_path / "out" / "curve.notaformat")
    plt.close(fig)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curve.pdf", "curve.png", "table.md"]
