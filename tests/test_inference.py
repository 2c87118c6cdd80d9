"""The tabulated path: the interactions' distance factors read from tables over distance.

``forward(batch, tabulated=True)`` (used by `predict_network`, `predict_ensemble` and training
steps) must equal the exact forward pass to float32 rounding without gradients, follow every
change of the weights, refuse gradients with respect to positions, and leave explanations (which
take the exact path) untouched. With gradients (a training step) it builds a coarser table from
the layers and must give the exact energies and weight gradients within the interpolation error.

Tolerance: energies and atom energies in float32 agree within ``1e-4 kcal/mol`` per unit of the
models' energy scale (``head.scale``, 3 kcal/mol here, so 3e-4 kcal/mol) plus a relative 1e-6 for
the float32 rounding of large sums (a few ulp; 4e-4 kcal/mol at 4000 kcal/mol). The training
tables have 90 instead of 400 points per Gaussian width, so their interpolation error
(``step^2 / 8 * max|f''|``) is 20 times larger; they get 10 times the energy tolerance, and the
weight gradient must agree to 1e-4 of its norm.
"""

from __future__ import annotations

import copy

import ase
import numpy as np
import pytest
import torch
from conftest import randomized

from qmlx.data import Molecules
from qmlx.explain import explain
from qmlx.nn import DTNN, SchNet, make_batch, predict_network
from qmlx.nn import tables as nn_tables
from qmlx.nn.ensemble import Ensemble
from qmlx.nn.io import predict_ensemble
from qmlx.nn.models import InteractionNetwork
from qmlx.nn.tables import RadialTables

SCALE = 3.0  # kcal/mol, the head's scale set by `randomized`
ATOL = 1e-4 * SCALE  # kcal/mol
RTOL = 1e-6  # float32 rounding of sums of some thousand kcal/mol

MODELS = {
    "schnet": lambda: randomized(lambda: SchNet(n_features=16, n_interactions=2, cutoff=5.0)),
    # the paper's DTNN: Gaussians up to 20 Å, every pair of a molecule (tables end where the Gaussians do)
    "dtnn": lambda: randomized(lambda: DTNN(n_features=8, n_factors=12, n_interactions=2)),
    # the shipped QM7 DTNN's settings: tables end at the cutoff
    "dtnn-cutoff3": lambda: randomized(
        lambda: DTNN(n_features=8, n_factors=12, n_interactions=2, rbf_stop=3.0, cutoff=3.0)
    ),
}


@pytest.fixture(params=sorted(MODELS))
def model(request) -> InteractionNetwork:
    return MODELS[request.param]()


def _spread(rng, n: int, scale: float, min_distance: float = 0.5) -> np.ndarray:
    """(n, 3) random positions in Å with no two atoms closer than ``min_distance``."""
    while True:
        R = rng.normal(size=(n, 3)) * scale
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)[np.triu_indices(n, 1)]
        if d.min() >= min_distance:
            return R


def molecules(cutoff: float, seed: int = 0) -> Molecules:
    """Random molecules (2 to 23 atoms, every pair at least 0.5 Å apart), plus molecules with a pair
    at exactly 0.5 Å and pairs just inside (1e-3 Å and 1e-5 Å) and just outside the cutoff."""
    rng = np.random.default_rng(seed)
    atoms = [
        ase.Atoms(numbers=rng.choice([1, 6, 7, 8], n), positions=_spread(rng, n, 0.25 * n**0.5 + 0.5))
        for n in (2, 3, 5, 8, 12, 17, 23)
    ]
    atoms.append(ase.Atoms(numbers=[6, 1], positions=[[0, 0, 0], [0.5, 0, 0]]))
    edge = [[0, 0, 0], [cutoff - 1e-3, 0, 0], [0, cutoff - 1e-5, 0], [0, 0, cutoff + 1e-3], [0.5, 0.5, 0.5]]
    atoms.append(ase.Atoms(numbers=[6, 8, 7, 1, 1], positions=edge))
    return Molecules.from_atoms(atoms)


def _both(model: InteractionNetwork, mols: Molecules):
    batch = make_batch(mols, model.cutoff)
    with torch.no_grad():
        return model(batch), model(batch, tabulated=True)


# ---------------------------------------------------------------- the tables
def test_tables_interpolate_linearly_and_hold_their_last_value():
    """Linear functions come back exactly, a parabola within step^2 / 8, and past ``stop`` the
    last value holds."""
    tables = RadialTables.evaluate(
        lambda d: [torch.stack([1.0 + 2.0 * d, d * d], dim=1)], 5.0, 1000, dtype=torch.float64
    )
    d = torch.tensor([0.0, 1e-9, 0.5, 1.2345, 4.99999, 5.0, 5.5, 100.0], dtype=torch.float64)
    (values,) = tables.interpolate(tables.locate(d))
    held = d.clamp(max=5.0)
    np.testing.assert_allclose(values[:, 0], 1.0 + 2.0 * held, rtol=0, atol=1e-12)
    assert (values[:, 1] - held**2).abs().max() <= (5.0 / 1000) ** 2 / 8 + 1e-12
    idx, weights = tables.locate(d)
    assert idx.min() >= 0 and idx.max() <= 1000
    np.testing.assert_allclose(weights.sum(1), 1.0)


def test_reading_tables_passes_the_exact_gradient_to_their_values():
    """The gradient of interpolated values with respect to the table values (the turned-around
    read of the training tables) equals finite differences, also with distances on grid points,
    past ``stop`` and several pairs reading the same rows."""
    torch.manual_seed(0)
    values = [torch.randn(11, 3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    d = torch.cat([torch.rand(40, dtype=torch.float64) * 6.0, torch.tensor([0.0, 2.5, 5.0, 7.0]).double()])

    def read(*tables):
        t = RadialTables(list(tables), 5.0)
        return tuple(t.interpolate(t.locate(d)))

    assert torch.autograd.gradcheck(read, tuple(values))
    turned = read(*values)  # gradients enabled: the read with the turned-around backward
    assert all(type(v.grad_fn).__name__ == "_InterpolateBackward" for v in turned)
    with torch.no_grad():
        plain = read(*values)  # the plain embedding_bag read
    for a, b in zip(turned, plain):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)


def test_tables_read_the_exact_radial_factors(model):
    """The tabulated filters (SchNet) or ``df(rbf(d))`` (DTNN) equal the layers' own, from 0.5 Å to
    the cutoff, to 1e-5 of their largest value."""
    stop = min(model.cutoff, 12.0)
    d = torch.cat([torch.linspace(0.5, stop, 20001), torch.tensor([stop - 1e-3, stop - 1e-5])])
    tables = model.inference_tables()
    read = tables.interpolate(tables.locate(d))
    with torch.no_grad():
        rbf, fcut = model.rbf(d.double()), model.cutoff_fn(d.double())
        for t, block in enumerate(copy.deepcopy(model).double().interactions):
            exact = block.filter(rbf, fcut) if isinstance(model, SchNet) else block.df(rbf)
            err = (read[t].double() - exact).abs().max()
            assert err <= 1e-5 * exact.abs().max(), f"interaction {t}: {err:.2e}"


def test_table_grid_is_fine_against_the_gaussian_width(model):
    tables = model.inference_tables()
    assert tables.n_intervals >= 4096
    assert tables.stop / tables.n_intervals <= model.rbf.width / 100
    assert tables.values[0].dtype == torch.float32


# ---------------------------------------------------------------- energies
def test_tabulated_energies_equal_exact(model):
    mols = molecules(model.cutoff)
    exact, tab = _both(model, mols)
    np.testing.assert_allclose(tab.energy, exact.energy, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(tab.atom_energies, exact.atom_energies, rtol=RTOL, atol=ATOL)
    assert len(tab.features) == len(exact.features)


def test_tabulated_energies_equal_exact_on_many_random_molecules():
    model = MODELS["schnet"]()
    mols = molecules(model.cutoff, seed=1)
    for seed in range(2, 6):
        more = molecules(model.cutoff, seed=seed)
        mols = Molecules(
            Z=np.concatenate([mols.Z, more.Z]),
            R=np.concatenate([mols.R, more.R]),
            n_atoms=np.concatenate([mols.n_atoms, more.n_atoms]),
        )
    exact, tab = _both(model, mols)
    np.testing.assert_allclose(tab.energy, exact.energy, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(tab.atom_energies, exact.atom_energies, rtol=RTOL, atol=ATOL)


def test_tabulated_float64_model_uses_float64_tables():
    model = MODELS["schnet"]().double()
    mols = molecules(model.cutoff)
    batch = make_batch(mols, model.cutoff)
    batch.R = batch.R.double()
    with torch.no_grad():
        exact, tab = model(batch), model(batch, tabulated=True)
    assert model.inference_tables().values[0].dtype == torch.float64
    np.testing.assert_allclose(tab.energy, exact.energy, rtol=RTOL, atol=ATOL)


def test_predict_network_reads_the_tables(model, monkeypatch):
    mols = molecules(model.cutoff)
    exact_e, exact_ae = predict_network(model, mols, tabulated=False)
    calls = []
    original = InteractionNetwork.inference_tables

    def spy(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(InteractionNetwork, "inference_tables", spy)
    e, ae = predict_network(model, mols, batch_size=3)
    assert calls  # the default is the tabulated path
    np.testing.assert_allclose(e, exact_e, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ae, exact_ae, rtol=RTOL, atol=ATOL)


def test_ensemble_tabulated_equals_exact():
    members = [MODELS["schnet"]()]
    members.append(copy.deepcopy(members[0]))
    with torch.no_grad():
        for p in members[1].parameters():
            p.mul_(1.1)
    ensemble = Ensemble(members).eval()
    mols = molecules(ensemble.cutoff)
    batch = make_batch(mols, ensemble.cutoff)
    with torch.no_grad():
        exact, tab = ensemble(batch), ensemble(batch, tabulated=True)
        spread = ensemble.member_energies(batch, tabulated=True)
    np.testing.assert_allclose(tab.energy, exact.energy, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(tab.atom_energies, exact.atom_energies, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(spread, ensemble.member_energies(batch).detach(), rtol=RTOL, atol=ATOL)
    mean, std, ae = predict_ensemble(ensemble, mols)
    mean_x, std_x, ae_x = predict_ensemble(ensemble, mols, tabulated=False)
    np.testing.assert_allclose(mean, mean_x, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(std, std_x, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ae, ae_x, rtol=RTOL, atol=ATOL)


def test_tabulated_forward_refuses_gradients_to_positions(model):
    batch = make_batch(molecules(model.cutoff), model.cutoff)
    batch.R.requires_grad_(True)
    with pytest.raises(RuntimeError, match="forces"):
        model(batch, tabulated=True)


# ---------------------------------------------------------------- training steps
def _energies_and_gradient(model: InteractionNetwork, batch, tabulated: bool):
    """Energies of ``batch`` with gradients enabled and the gradient of their sum with respect to
    every weight, flattened into one vector."""
    model.zero_grad()
    out = model(batch, tabulated=tabulated)
    out.energy.sum().backward()
    grad = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    return out, torch.cat([g.flatten() for g in grad])


def test_training_tables_give_the_exact_energies_and_weight_gradients(model, monkeypatch):
    monkeypatch.setattr(nn_tables, "TRAIN_TABLE_MIN_PAIRS_PER_POINT", 0)  # tables for any batch
    batch = make_batch(molecules(model.cutoff), model.cutoff)
    built = []
    monkeypatch.setattr(
        model, "training_tables", lambda n: built.append(n) or type(model).training_tables(model, n)
    )
    exact, g_exact = _energies_and_gradient(model, batch, tabulated=False)
    tab, g_tab = _energies_and_gradient(model, batch, tabulated=True)
    assert built == [len(batch.idx_i)]  # the tabulated pass did read training tables
    np.testing.assert_allclose(tab.energy.detach(), exact.energy.detach(), rtol=RTOL, atol=10 * ATOL)
    np.testing.assert_allclose(
        tab.atom_energies.detach(), exact.atom_energies.detach(), rtol=RTOL, atol=10 * ATOL
    )
    assert g_exact.norm() > 1.0
    assert (g_tab - g_exact).norm() <= 1e-4 * g_exact.norm()


def test_training_table_grid_follows_the_gaussian_width(model):
    tables = model.training_tables(10**9)
    assert tables.stop == model.radial_stop()
    assert tables.stop / tables.n_intervals <= model.rbf.width / nn_tables.TRAIN_TABLE_POINTS_PER_WIDTH
    assert all(v.requires_grad for v in tables.values)  # computed by the layers, not a detached copy


def test_small_training_batches_take_the_exact_path(model):
    """A batch with fewer pairs than twice the grid points computes every factor per pair: the
    energies equal the exact path's bit for bit."""
    batch = make_batch(molecules(model.cutoff), model.cutoff)
    assert model.training_tables(len(batch.idx_i)) is None
    assert (
        model.training_tables(
            2 * (nn_tables.grid_intervals(model, nn_tables.TRAIN_TABLE_POINTS_PER_WIDTH) + 1)
        )
        is not None
    )
    exact, g_exact = _energies_and_gradient(model, batch, tabulated=False)
    tab, g_tab = _energies_and_gradient(model, batch, tabulated=True)
    assert torch.equal(tab.energy, exact.energy) and torch.equal(g_tab, g_exact)


# ---------------------------------------------------------------- following the weights
def _assert_tables_follow(model: InteractionNetwork, mols: Molecules, before: torch.Tensor) -> None:
    """The tabulated energies equal the exact ones of the current weights, which differ from
    ``before``."""
    exact, tab = _both(model, mols)
    assert (exact.energy - before).abs().max() > 100 * ATOL  # the weights did change the energies
    np.testing.assert_allclose(tab.energy, exact.energy, rtol=RTOL, atol=ATOL)


def test_tables_are_rebuilt_after_an_optimizer_step(model):
    mols = molecules(model.cutoff)
    before = _both(model, mols)[1].energy
    batch = make_batch(mols, model.cutoff)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss = (model(batch).energy ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    _assert_tables_follow(model, mols, before)


def test_tables_are_rebuilt_after_load_state_dict_and_data_edits(model):
    mols = molecules(model.cutoff)
    before = _both(model, mols)[1].energy
    other = copy.deepcopy(model)
    with torch.no_grad():
        for block in other.interactions:
            for p in block.parameters():
                p.mul_(-1.5)
    model.load_state_dict(other.state_dict())
    _assert_tables_follow(model, mols, before)
    before = _both(model, mols)[1].energy
    for block in model.interactions:
        for p in block.parameters():
            p.data.mul_(0.5)  # an edit that leaves the version counters alone
    _assert_tables_follow(model, mols, before)


def test_tables_are_reused_while_the_weights_stay():
    model = MODELS["schnet"]()
    first = model.inference_tables()
    predict_network(model, molecules(model.cutoff))
    assert model.inference_tables() is first


def test_tables_are_not_part_of_the_model():
    model = MODELS["schnet"]()
    keys = set(model.state_dict())
    tables = model.inference_tables()
    assert set(model.state_dict()) == keys
    twin = copy.deepcopy(model)
    assert twin.inference_tables() is not tables
    torch.testing.assert_close(twin.inference_tables().values[0], tables.values[0], rtol=0, atol=0)


# ---------------------------------------------------------------- training and explanations untouched
def _train_step(model: InteractionNetwork, batch) -> list[torch.Tensor]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = ((model(batch).energy - 1.0) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_training_step_is_the_same_with_tables_built(model):
    mols = molecules(model.cutoff)
    batch = make_batch(mols, model.cutoff)
    used = copy.deepcopy(model)
    predict_network(used, mols)  # builds and caches the tables
    fresh = _train_step(model, batch)
    after_tables = _train_step(used, batch)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in used.interactions[0].parameters())
    for a, b in zip(fresh, after_tables):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["lrp", "gradient-x-input", "integrated-gradients", "lrp-walks"])
def test_explanations_take_the_exact_path(model, method, monkeypatch):
    mols = molecules(model.cutoff).subset([0, 1, 2, 7, 8])  # the small ones and both edge cases
    before = explain(model, mols, method, steps=2)

    def refuse(self):
        raise AssertionError("explanations must not read the inference tables")

    predict_network(model, mols)  # tables built
    monkeypatch.setattr(InteractionNetwork, "inference_tables", refuse)
    after = explain(model, mols, method, steps=2)
    np.testing.assert_array_equal(after.relevance, before.relevance)
    np.testing.assert_array_equal(after.prediction, before.prediction)
