"""Layers, SchNet and DTNN: symmetries, atom-wise sums, forces, saving and loading.

Tolerances: energies in float32 are compared with an absolute tolerance of 1e-4 kcal/mol
(molecular energies here are a few kcal/mol to a few hundred); forces are checked in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from qmlx.data import Molecules
from qmlx.errors import DataFormatError, QmlxError
from qmlx.nn import (
    DTNN,
    CosineCutoff,
    GaussianRBF,
    PairCache,
    SchNet,
    is_network_file,
    load_network,
    make_batch,
    predict_forces,
    predict_network,
    save_network,
    shifted_softplus,
)
from qmlx.nn.batch import half_pairs

ATOL = 1e-4  # kcal/mol, float32


def _model(kind: str):
    torch.manual_seed(0)
    if kind == "schnet":
        model = SchNet(n_features=16, n_interactions=2, cutoff=4.0, rbf_spacing=0.2)
    else:
        model = DTNN(n_features=8, n_factors=12, n_interactions=2)
    # references and scale of a realistic size, so the sums are not trivially small
    model.head.reference[[1, 6, 7, 8]] = torch.tensor([-60.0, -150.0, -110.0, -90.0], dtype=torch.float64)
    model.head.scale.fill_(3.0)
    return model.eval()


@pytest.fixture(params=["schnet", "dtnn"])
def model(request):
    return _model(request.param)


def _with_positions(mols: Molecules, R: np.ndarray) -> Molecules:
    return Molecules(
        Z=mols.Z, R=R, n_atoms=mols.n_atoms, targets=mols.targets, units=mols.units, ids=mols.ids
    )


# ---------------------------------------------------------------- layers
def test_shifted_softplus_is_zero_at_zero():
    assert shifted_softplus(torch.zeros(1)).item() == pytest.approx(0.0, abs=1e-7)


def test_gaussian_rbf_peaks_at_its_centres():
    rbf = GaussianRBF(0.0, 2.0, 0.5)
    out = rbf(torch.tensor([0.0, 1.0, 2.0]))
    assert out.shape == (3, 5)
    assert torch.argmax(out, dim=1).tolist() == [0, 2, 4]
    assert torch.allclose(out.max(dim=1).values, torch.ones(3))


def test_gaussian_rbf_returns_zero_instead_of_subnormal_values():
    # subnormal floats slow matrix products down many times on CPUs (see GaussianRBF.forward)
    rbf = GaussianRBF(-1.0, 10.0, 0.2, 0.2)
    d = torch.linspace(0.0, 12.0, 500)
    out = rbf(d)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((out != 0) & (out.abs() < tiny)).any()
    exact = torch.exp(rbf.coeff * (d.double().unsqueeze(-1) - rbf.centers.double()) ** 2)
    assert torch.allclose(out.double(), exact, atol=1e-17, rtol=1e-4)
    assert (out == 0).any()  # the far Gaussians really are cut


def test_schnet_filter_equals_its_textbook_form():
    # filter() moves the -log 2 of the shifted softplus into the next bias; the result must not change
    torch.manual_seed(0)
    block = SchNet(n_features=16, n_interactions=1, rbf_spacing=0.5).interactions[0].double()
    rbf = torch.rand(50, block.filter1.in_features, dtype=torch.float64)
    fcut = torch.rand(50, dtype=torch.float64)
    hidden = shifted_softplus(torch.nn.functional.linear(rbf, block.filter1.weight, block.filter1.bias))
    textbook = block.filter2(hidden) * fcut[:, None]
    assert torch.allclose(block.filter(rbf, fcut), textbook, atol=1e-12)


def test_cosine_cutoff_is_one_at_zero_and_zero_beyond_cutoff():
    f = CosineCutoff(5.0)(torch.tensor([0.0, 2.5, 5.0, 7.0]))
    assert torch.allclose(f, torch.tensor([1.0, 0.5, 0.0, 0.0]), atol=1e-6)


def test_half_pairs_lists_each_pair_once_within_molecules():
    i, j, counts = half_pairs(np.array([3, 1, 2]))
    assert counts.tolist() == [3, 0, 1]
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 2), (4, 5)]


def test_pair_cache_drops_pairs_beyond_cutoff():
    mols = Molecules(Z=[1, 1, 1], R=[[0, 0, 0], [1, 0, 0], [5, 0, 0]], n_atoms=[3])
    b = PairCache(mols, cutoff=2.0, target=None).batch(np.array([0]))
    assert list(zip(b.idx_i.tolist(), b.idx_j.tolist())) == [(0, 1)]


def test_pair_cache_batch_of_reordered_molecules_matches_subset(small_molecules):
    cache = PairCache(small_molecules, cutoff=5.0, target="energy")
    b = cache.batch(np.array([2, 0]))
    ref = make_batch(small_molecules.subset([2, 0]), 5.0)
    assert torch.equal(b.Z, ref.Z) and torch.equal(b.R, ref.R)
    assert torch.equal(b.idx_i, ref.idx_i) and torch.equal(b.idx_j, ref.idx_j)
    assert b.energy.tolist() == [-3.0, -1.0]


def test_fit_reference_recovers_per_element_energies_by_least_squares(small_molecules):
    extra = Molecules(
        Z=[1, 1, 6, 8], R=[[0, 0, 0], [0.74, 0, 0], [0, 0, 0], [1.13, 0, 0]], n_atoms=[2, 2],
        targets={"energy": [0.0, 0.0]}, units={"energy": "kcal/mol"}, ids=["H2", "CO"],
    )  # fmt: skip
    mols = Molecules.concatenate([small_molecules, extra])  # 5 molecules, 4 elements: determined
    ref = {1: -0.5, 6: -38.0, 7: -55.0, 8: -75.0}
    energies = np.array([ref[z] for z in mols.Z])
    mol_e = np.bincount(mols.mol_index, energies)
    model = SchNet(n_features=8, n_interactions=1)
    fitted = model.fit_reference(mols.Z, mols.n_atoms, mol_e)
    for z, e in ref.items():
        assert fitted[z] == pytest.approx(e, abs=1e-8)
        assert model.head.reference[z].item() == pytest.approx(e, abs=1e-4)


# ---------------------------------------------------------------- model properties
def test_atom_energies_sum_to_molecular_energy(model, small_molecules):
    e, ae = predict_network(model, small_molecules)
    assert e.shape == (3,) and ae.shape == (12,)
    np.testing.assert_allclose(np.bincount(small_molecules.mol_index, ae), e, atol=ATOL)


def test_energy_invariant_to_rotation_and_translation(model, small_molecules):
    e0, ae0 = predict_network(model, small_molecules)
    rot = Rotation.random(random_state=3).as_matrix()
    R = small_molecules.R @ rot.T + np.array([3.0, -7.0, 11.0])
    e1, ae1 = predict_network(model, _with_positions(small_molecules, R))
    np.testing.assert_allclose(e1, e0, atol=ATOL)
    np.testing.assert_allclose(ae1, ae0, atol=ATOL)


def test_energy_invariant_to_atom_permutation(model, small_molecules):
    rng = np.random.default_rng(0)
    off = small_molecules.offsets
    order = np.concatenate([off[m] + rng.permutation(n) for m, n in enumerate(small_molecules.n_atoms)])
    perm = Molecules(Z=small_molecules.Z[order], R=small_molecules.R[order], n_atoms=small_molecules.n_atoms)
    e0, ae0 = predict_network(model, small_molecules)
    e1, ae1 = predict_network(model, perm)
    np.testing.assert_allclose(e1, e0, atol=ATOL)
    np.testing.assert_allclose(ae1, ae0[order], atol=ATOL)


def test_batched_prediction_equals_one_molecule_at_a_time(model, small_molecules):
    e_all, _ = predict_network(model, small_molecules)
    e_one = [predict_network(model, small_molecules.subset([m]))[0][0] for m in range(3)]
    np.testing.assert_allclose(e_one, e_all, atol=ATOL)


def test_forces_equal_finite_differences_of_the_energy(model, small_molecules):
    mols = small_molecules.subset([0, 1])
    _, forces, _ = predict_forces(model, mols, dtype=torch.float64)
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (6, 1)]:
        plus, minus = mols.R.copy(), mols.R.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_p, _, _ = predict_forces(model, _with_positions(mols, plus), dtype=torch.float64)
        e_m, _, _ = predict_forces(model, _with_positions(mols, minus), dtype=torch.float64)
        fd = -(e_p.sum() - e_m.sum()) / (2 * h)
        assert forces[atom, axis] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_forces_sum_to_zero_per_molecule(model, small_molecules):
    _, forces, _ = predict_forces(model, small_molecules, dtype=torch.float64)
    for m in range(3):
        lo, hi = small_molecules.offsets[m], small_molecules.offsets[m + 1]
        np.testing.assert_allclose(forces[lo:hi].sum(axis=0), 0.0, atol=1e-9)


def test_forward_exposes_features_after_each_interaction(model, small_molecules):
    out = model(make_batch(small_molecules, model.cutoff))
    assert len(out.features) == 1 + len(model.interactions)
    assert all(f.shape == (12, model.config["n_features"]) for f in out.features)


# ---------------------------------------------------------------- files
def test_saved_and_loaded_model_predicts_identically(model, small_molecules, tmp_path):
    path = save_network(model, tmp_path / "net.pt", metadata={"dataset": "synthetic"})
    loaded = load_network(path)
    assert type(loaded) is type(model)
    assert loaded.metadata == {"dataset": "synthetic"}
    e0, ae0 = predict_network(model, small_molecules)
    e1, ae1 = predict_network(loaded, small_molecules)
    assert np.array_equal(e0, e1) and np.array_equal(ae0, ae1)
    assert is_network_file(path)


def test_corrupted_network_file_gives_a_clear_error(model, tmp_path):
    path = save_network(model, tmp_path / "net.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="net.pt"):
        load_network(path)
    path.write_bytes(b"not a model at all")
    with pytest.raises(DataFormatError, match="net.pt"):
        load_network(path)


def test_unknown_model_name_is_a_user_error():
    with pytest.raises(QmlxError, match="no-such-model"):
        load_network("no-such-model")
    assert not is_network_file("no-such-model")


def test_molecule_file_is_not_a_network_file(tmp_path):
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\n\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    assert not is_network_file(xyz)


def test_element_unknown_to_the_model_is_refused(model):
    mols = Molecules(Z=[16, 1], R=[[0, 0, 0], [1.3, 0, 0]], n_atoms=[2], name="sh.xyz")
    with pytest.raises(QmlxError, match="sh.xyz: element S was not in the model.s training data"):
        predict_network(model, mols)


# ---------------------------------------------------------------- shipped model on QM7
@pytest.mark.parametrize(
    "name, limit", [("qm7-schnet", 1.5), ("qm7-dtnn", 2.0), ("qm7-schnet-ensemble", 0.85)]
)
def test_shipped_model_reaches_its_fold0_test_mae(qm7, name, limit):
    from qmlx.pretrained import shipped_model_path

    assert shipped_model_path(name) is not None, f"{name} weights are missing from qmlx/pretrained"
    model = load_network(name)
    _, test = qm7.folds[0]
    mols = qm7.subset(test)
    e, _ = predict_network(model, mols)
    mae = np.mean(np.abs(e - mols.target("atomization_energy")))
    assert mae == pytest.approx(model.metadata["test_mae_kcal_mol"], abs=1e-3)
    assert mae <= limit


# ---------------------------------------------------------------- ASE calculator
def test_ase_calculator_reports_ev_and_forces_in_ev_per_angstrom(model, small_molecules):
    from qmlx.calculator import QmlxCalculator
    from qmlx.units import KCAL_MOL_TO_EV

    atoms = small_molecules[1]
    atoms.calc = QmlxCalculator(model)
    e_kcal, _ = predict_network(model, small_molecules.subset([1]))
    _, f_kcal, _ = predict_forces(model, small_molecules.subset([1]))
    assert atoms.get_potential_energy() == pytest.approx(e_kcal[0] * KCAL_MOL_TO_EV, abs=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), f_kcal * KCAL_MOL_TO_EV, atol=1e-6)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-5)


def test_shipped_ensemble_spread_tracks_its_errors(qm7):
    """The five-member ensemble: its spread ranks fold-0 test molecules by their error."""
    from scipy.stats import spearmanr

    from qmlx.nn.io import predict_ensemble

    model = load_network("qm7-schnet-ensemble")
    mols = qm7.subset(qm7.folds[0][1])
    mean, std, _ = predict_ensemble(model, mols)
    err = np.abs(mean - mols.target("atomization_energy"))
    assert len(model.members) == 5 and (std > 0).all()
    assert spearmanr(err, std).statistic >= 0.4
    assert spearmanr(err, std).statistic == pytest.approx(model.metadata["uncertainty"]["spearman"], abs=1e-3)
    # the reported uncertainty is the spread scaled on the validation molecules, not on these
    assert (
        model.uncertainty_scale == pytest.approx(model.metadata["uncertainty_scale"])
        and model.uncertainty_scale > 1
    )
    assert np.mean(err <= std) == pytest.approx(model.metadata["uncertainty"]["coverage_1sigma"], abs=2e-3)
    assert np.mean(err <= std / model.uncertainty_scale) < np.mean(err <= std) <= 0.75


def test_shipped_qm9_schnet_reproduces_its_recorded_test_error(qm9):
    """qm9-schnet: trained on at least 100,000 molecules; its recorded split recreates the held-out
    test molecules (hash checked) and predicting them gives the MAE its metadata states."""
    from qmlx.train.config import recorded_split

    model = load_network("qm9-schnet")
    meta = model.metadata
    assert meta["split"]["n_train"] >= 100_000 and meta["target"] == "atomization_energy"
    sp = recorded_split(qm9, meta)
    assert len(sp.test) == meta["split"]["n_test"] and not set(sp.test) & set(sp.train)
    test = qm9.subset(sp.test)
    pred, _ = predict_network(model, test)
    mae = float(np.mean(np.abs(pred - test.target("atomization_energy", "kcal/mol"))))
    assert mae == pytest.approx(meta["test_mae_kcal_mol"], abs=2e-3)
