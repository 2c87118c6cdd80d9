"""Novelty: the atom-environment descriptor, the one-class score, its calibration, its storage in
every model file, and what prediction reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from conftest import grid_molecules
from scipy.spatial.transform import Rotation

from qmlx.cli import main
from qmlx.data import Molecules
from qmlx.models import as_trained_model, load_model
from qmlx.novelty import NoveltyModel, fit_domain_model, soft_min
from qmlx.represent.environments import EnvironmentDescriptor

DESCRIPTOR = EnvironmentDescriptor((1, 6, 8))


def _mols(*atoms: Atoms) -> Molecules:
    return Molecules.from_atoms(list(atoms), targets={})


# ------------------------------------------------------------------------------------ descriptor
def test_descriptor_of_a_pair_is_one_gaussian_at_its_distance():
    r = 1.13
    X = DESCRIPTOR.transform(_mols(Atoms("CO", positions=[[0, 0, 0], [0, 0, r]])))
    grid = DESCRIPTOR.grid
    fcut = 0.5 * (np.cos(np.pi * r / 3.5) + 1)
    expected_o = fcut * np.exp(-((r - grid) ** 2) / (2 * 0.05**2))
    n = len(grid)
    # carbon sees one oxygen, nothing else; oxygen sees one carbon
    np.testing.assert_allclose(X[0, 2 * n : 3 * n], expected_o, rtol=1e-5, atol=1e-5)  # window: 5 widths
    assert not X[0, : 2 * n].any()
    np.testing.assert_allclose(X[1, n : 2 * n], expected_o, rtol=1e-5, atol=1e-5)
    assert not X[:, 3 * n :].any()  # two atoms: no angles
    assert DESCRIPTOR.n_features == 3 * n + 11 and DESCRIPTOR.feature_element()[2 * n] == 8


def test_descriptor_angles_hold_the_angle_at_the_atom():
    water = molecule("H2O")  # O0, H1, H2
    X = DESCRIPTOR.transform(_mols(water))
    start = 3 * len(DESCRIPTOR.grid)
    cos = np.cos(np.radians(water.get_angle(1, 0, 2)))
    d1, d2 = water.get_distance(0, 1), water.get_distance(0, 2)
    assert max(d1, d2) < 1.7  # both O-H bonds inside the shell: weight 1
    weight = 0.5  # the angle Gaussians' height
    expected = weight * np.exp(-((cos - DESCRIPTOR.angle_grid) ** 2) / (2 * 0.15**2))
    np.testing.assert_allclose(X[0, start:], expected, atol=1e-5)
    assert EnvironmentDescriptor.from_dict({"elements": [1, 6]}).angle_cutoff == 0.0  # older files


def test_descriptor_is_invariant_to_rotation_translation_and_atom_order():
    mols = grid_molecules(6, seed=4)
    X = DESCRIPTOR.transform(mols)
    turned = Rotation.random(random_state=1).as_matrix()
    moved = Molecules(Z=mols.Z, R=mols.R @ turned.T + 3.0, n_atoms=mols.n_atoms, targets={})
    np.testing.assert_allclose(DESCRIPTOR.transform(moved), X, atol=1e-5)
    one = mols[2]
    order = np.random.default_rng(0).permutation(len(one))
    Xp = DESCRIPTOR.transform(_mols(one[order]))
    lo = mols.offsets[2]
    np.testing.assert_allclose(Xp, X[lo + order], atol=1e-6)


def test_descriptor_blocks_hold_every_atom_once_by_element_and_agree_with_the_contributions():
    from ase.build import molecule

    from qmlx.represent.environments import environment_blocks

    mols = _mols(
        *[molecule(name) for name in ("CH3OH", "H2O", "C2H6", "CH3CHO", "HCOOH")], *grid_molecules(20)
    )
    blocks = list((atoms.copy(), X.copy()) for atoms, X in environment_blocks(mols, DESCRIPTOR, max_atoms=12))
    assert len(blocks) > 3  # several blocks, each of whole molecules
    seen = np.concatenate([atoms for atoms, _ in blocks])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(mols.Z)))
    for atoms, X in blocks:
        assert (np.diff(mols.Z[atoms]) >= 0).all()  # ordered by element
        molecules = np.unique(mols.mol_index[atoms])
        assert len(atoms) == len(X) == mols.n_atoms[molecules].sum()  # whole molecules
    X = DESCRIPTOR.transform(mols)
    for m in range(len(mols)):  # the exact Gaussians, each molecule alone; the windows leave < 4e-6 out
        _, x = DESCRIPTOR.contributions(mols, m)
        np.testing.assert_allclose(X[mols.offsets[m] : mols.offsets[m + 1]], x, atol=2e-5)


def test_descriptor_skips_neighbours_of_elements_it_does_not_describe_and_reaches_the_grid_ends():
    pair = DESCRIPTOR.transform(_mols(Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.13]])))
    with_n = DESCRIPTOR.transform(_mols(Atoms("CON", positions=[[0, 0, 0], [0, 0, 1.13], [0, 3.0, 0]])))
    np.testing.assert_allclose(with_n[:2], pair, atol=1e-6)  # nitrogen is not described
    close = DESCRIPTOR.transform(_mols(Atoms("HH", positions=[[0, 0, 0], [0, 0, 0.52]])))
    far = DESCRIPTOR.transform(_mols(Atoms("HH", positions=[[0, 0, 0], [0, 0, 3.45]])))
    grid = DESCRIPTOR.grid
    for X, r in ((close, 0.52), (far, 3.45)):  # windows moved inside the grid at both of its ends
        expected = 0.5 * (np.cos(np.pi * r / 3.5) + 1) * np.exp(-((r - grid) ** 2) / (2 * 0.05**2))
        np.testing.assert_allclose(X[0, : len(grid)], expected, atol=1e-6)


def test_descriptor_contributions_add_up_to_it_and_stop_at_the_cutoff():
    mols = _mols(Atoms("CHO", positions=[[0, 0, 0], [1.09, 0, 0], [0, 4.0, 0]]))
    phi, x = DESCRIPTOR.contributions(mols, 0)
    np.testing.assert_allclose(x, DESCRIPTOR.transform(mols), atol=1e-6)
    assert not phi[0, 2].any() and not phi[2].any()  # O lies 4 Å away: beyond the 3.5 Å cutoff
    assert not phi[[0, 1, 2], [0, 1, 2]].any()  # an atom is not its own neighbour


# ------------------------------------------------------------------------------------ the score
def test_soft_min_closed_forms():
    U = np.array([[0.0, 0.0], [3.0, 4.0]])
    x = np.array([[0.0, 0.0]])
    assert soft_min(x, U[:1], gamma=0.5)[0] == pytest.approx(0.0)  # one centre: the squared distance
    assert soft_min(np.array([[3.0, 4.0]]), U[:1], gamma=0.5)[0] == pytest.approx(25.0)
    o = soft_min(x, U, gamma=0.5)  # two centres: -(1/g) log((1 + e^{-25 g}) / 2)
    assert o[0] == pytest.approx(-2.0 * np.log((1 + np.exp(-12.5)) / 2), rel=1e-9)
    o = soft_min(x, U, gamma=100.0)  # sharp: the nearest centre, plus log(M) / gamma
    assert o[0] == pytest.approx(np.log(2) / 100.0, rel=1e-6)


def test_element_scores_split_exactly_into_the_part_outside_the_span_and_the_soft_min_inside():
    from qmlx.novelty import ElementDomain

    rng = np.random.default_rng(3)
    train = rng.normal(size=(600, 12)) @ rng.normal(
        size=(12, 40)
    )  # environments spanning 12 of 40 dimensions
    domain = ElementDomain.fit(train, n_centres=50, n_components=8, seed=0)
    assert domain.basis.shape == (8, 40) and domain.coordinates.shape == (50, 8)
    np.testing.assert_allclose(domain.basis @ domain.basis.T, np.eye(8), atol=1e-5)  # orthonormal
    domain = ElementDomain(domain.mean, domain.basis, domain.coordinates, gamma=0.05)
    near = train[:20] + rng.normal(scale=0.1, size=(20, 40))
    far = train[:3] + 40.0  # every centre far: the exponentials underflow in float32
    X = np.vstack([near, far]).astype(np.float32)
    expected = soft_min(X.astype(np.float64), domain.centres, 0.05)
    np.testing.assert_allclose(domain.scores(X), expected, rtol=1e-5)
    single = ElementDomain.fit(train[:1], n_centres=50, n_components=8, seed=0)  # one atom: the centre
    np.testing.assert_allclose(single.scores(train[1:3]), ((train[1:3] - train[0]) ** 2).sum(1), rtol=1e-5)


def test_p_values_count_the_calibration_molecules_at_least_as_novel():
    model = NoveltyModel(DESCRIPTOR, {}, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(model.p_values(np.array([0.5, 2.0, 2.5, 9.0])), [1.0, 0.75, 0.5, 0.25])


def _vibrating(n: int, seed: int) -> Molecules:
    """``n`` small organic molecules (ASE's g2 geometries, positions in Å) with every atom moved by
    Gaussian noise of 0.02 Å: a training set of near-equilibrium structures."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    names = ["CH4", "C2H6", "CH3OH", "H2O", "C2H4", "CH3CHO", "CH3CH2OH", "HCOOH"]
    out = []
    for k in range(n):
        atoms = molecule(names[k % len(names)])
        atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        out.append(atoms)
    return _mols(*out)


@pytest.fixture(scope="module")
def novelty():
    mols = _vibrating(240, seed=7)
    return mols, fit_domain_model(mols, np.arange(200), np.arange(200, 240))


def test_a_familiar_molecule_is_in_domain_and_a_stretched_bond_points_at_its_atoms(novelty):
    from ase.build import molecule

    mols, model = novelty
    calib = model.evaluate(mols.subset(np.arange(200, 240)))
    assert np.median(calib.novelty) < 1.0 and (calib.p_value >= 1 / 41).all()
    base = molecule("CH3OH")  # atoms: C0, O1, H2 (on O), H3, H4, H5
    stretched = base.copy()
    co = stretched.positions[1] - stretched.positions[0]
    stretched.positions[1] += 0.3 * co / np.linalg.norm(co)  # C-O from 1.43 to 1.73 Å
    stretched.positions[2] += 0.3 * co / np.linalg.norm(co)  # its hydrogen goes along
    res = model.evaluate(_mols(base, stretched))
    assert res.novelty[0] < 1.0 and not model.outside(res.p_value[:1]).any()
    assert res.novelty[1] > 2.0 and res.p_value[1] == pytest.approx(
        1 / 41
    )  # beyond every calibration molecule
    assert model.outside(res.p_value[1:]).all()
    worst = np.argsort(-res.atom_novelty[len(base) :])[:2]
    assert set(worst.tolist()) == {0, 1}  # carbon and oxygen: both atoms of the stretched bond
    (note,) = model.notes(_mols(base, stretched), res)[1]
    assert "unlike the training environments" in note and "C0" in note and "O1" in note


def test_novelty_state_round_trips_and_scores_the_same(novelty):
    mols, model = novelty
    again = NoveltyModel.from_state(model.to_state())
    np.testing.assert_array_equal(again.evaluate(mols).atom_score, model.evaluate(mols).atom_score)
    assert again.level == model.level and again.descriptor == model.descriptor


def test_a_version_1_state_scores_against_its_stored_centres(novelty):
    """Files written before the centres were summarised hold training environments as centres."""
    mols, _ = novelty
    old = EnvironmentDescriptor((1, 6, 8), spacing=0.05, angle_spacing=0.1)
    X = old.transform(mols)
    centres = {1: X[mols.Z == 1][:30], 6: X[mols.Z == 6][:20], 8: X[mols.Z == 8][:10]}
    state = {
        "settings": {"descriptor": old.to_dict(), "elements": [1, 6, 8], "gamma": [20.0, 10.0, 5.0],
                     "scale": [1.0, 2.0, 4.0], "level": 0.01, "version": 1},
        "arrays": {"centres": np.concatenate(list(centres.values())).astype(np.float16),
                   "centre_element": np.repeat([1, 6, 8], [30, 20, 10]), "calibration": np.array([0.5, 1.0])},
    }  # fmt: skip
    model = NoveltyModel.from_state(state)
    assert model.descriptor == old
    score = model.atom_scores(mols)
    for z, gamma in ((1, 20.0), (6, 10.0), (8, 5.0)):
        U = centres[z].astype(np.float16).astype(np.float64)
        np.testing.assert_allclose(
            score[mols.Z == z], soft_min(X[mols.Z == z], U, gamma), rtol=1e-4, atol=1e-5
        )


def test_an_unknown_element_is_infinitely_novel(novelty):
    _, model = novelty
    res = model.evaluate(_mols(Atoms("NH3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])))
    assert np.isinf(res.atom_novelty[0]) and np.isinf(res.novelty[0]) and res.p_value[0] < 0.05


# ------------------------------------------------------------------------------- in model files
def test_every_training_command_stores_a_novelty_model_that_prediction_reports(tmp_path, capsys):
    from qmlx.data import save_molecules
    from qmlx.kernels.training import train_krr

    mols = grid_molecules(60)
    krr, _ = train_krr(mols, np.arange(50), None, "bob", sigma=100.0, lam=1e-6, target="energy")
    model = load_model(krr.save(tmp_path / "krr.h5"))
    assert model.novelty is not None and len(model.novelty.calibration) == 5  # 10 % of 50
    pred = model.predict(mols)
    assert pred.novelty.shape == (60,) and pred.atom_novelty.shape == (len(mols.Z),)
    assert ((pred.novelty_p > 0) & (pred.novelty_p <= 1)).all()
    # a network run: centres from the training part, calibration on its validation part
    data = save_molecules(tmp_path / "syn.h5", mols)
    argv = [
        "train", "schnet", "--data", str(data), "--target", "energy", "--split", "random", "--fold", "0",
        "--epochs", "1", "--features", "8", "--interactions", "1", "--out", str(tmp_path / "run"),
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    net = load_model(tmp_path / "run" / "model.pt")
    assert net.novelty is not None
    assert len(net.novelty.calibration) == net.metadata["n_val"]
    xyz = tmp_path / "one.xyz"
    mols[0].write(xyz)
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(xyz), "--format", "json", "--atoms"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["molecules"]
    assert row["novelty"] == pytest.approx(max(a["novelty"] for a in row["atoms"]))
    assert 0 < row["novelty_p"] <= 1


def test_kernel_models_report_atom_novelty_without_atom_energies(tmp_path, capsys):
    from qmlx.kernels.training import train_krr

    mols = grid_molecules(40)
    krr, _ = train_krr(mols, np.arange(40), None, "bob", sigma=100.0, lam=1e-6, target="energy")
    path = krr.save(tmp_path / "krr.h5")
    xyz = tmp_path / "one.xyz"
    mols[1].write(xyz)
    assert main(["predict", str(path), str(xyz), "--format", "json", "--atoms"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["molecules"]
    assert all("novelty" in a and "energy" not in a for a in row["atoms"])


# ------------------------------------------------------------------------------ novelty explained
def _stretched_methanol() -> Molecules:
    from ase.build import molecule

    base = molecule("CH3OH")  # C0, O1, H2 (on O), H3, H4, H5
    stretched = base.copy()
    co = stretched.positions[1] - stretched.positions[0]
    stretched.positions[[1, 2]] += 0.3 * co / np.linalg.norm(co)
    return _mols(base, stretched)


@pytest.fixture
def network_with_novelty(novelty):
    from conftest import randomized

    from qmlx.nn import SchNet

    net = randomized(lambda: SchNet(n_features=8, n_interactions=1))
    net.novelty_state = novelty[1].to_state()
    return net


def test_novelty_explanation_conserves_and_points_at_both_atoms_of_a_stretched_bond(network_with_novelty):
    from qmlx.explain import explain

    mols = _stretched_methanol()
    e = explain(network_with_novelty, mols, "novelty")
    pred = as_trained_model(network_with_novelty).predict(mols)
    np.testing.assert_allclose(e.prediction, pred.novelty, rtol=1e-5)
    np.testing.assert_allclose(e.conservation_error() / e.prediction, 0.0, atol=1e-6)
    assert (e.padding >= 0).all() and (e.padding < e.prediction).all()  # the soft-min remainder
    top = np.argsort(-e.molecule(1))[:2]
    assert set(top.tolist()) == {0, 1}  # carbon and oxygen
    assert e.molecule(1)[[0, 1]].sum() > 0.5 * e.prediction[1]


def test_novelty_explanation_from_the_command_line(network_with_novelty, tmp_path, capsys):
    from qmlx.nn import save_network

    path = save_network(network_with_novelty, tmp_path / "net.pt")
    xyz = tmp_path / "stretched.xyz"
    _stretched_methanol()[1].write(xyz)
    png = tmp_path / "novelty.png"
    assert (
        main(["explain", str(path), str(xyz), "--method", "novelty", "--format", "json", "--png", str(png)])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["quantity"] == "novelty" and out["unit"] is None
    (mol,) = out["molecules"]
    assert sum(mol["relevance"]) + mol["remainder"] == pytest.approx(mol["novelty"], rel=1e-6)
    assert png.stat().st_size > 0


def test_a_model_without_a_novelty_model_says_so(tmp_path):
    from conftest import randomized

    from qmlx.errors import QmlxError
    from qmlx.explain import explain
    from qmlx.nn import SchNet

    net = randomized(lambda: SchNet(n_features=8, n_interactions=1))
    with pytest.raises(QmlxError, match="holds no novelty model"):
        explain(net, _stretched_methanol(), "novelty")
