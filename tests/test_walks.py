"""Relevant walks (GNN-LRP): conservation, marginals against lrp / lrp-pairs, the literal masked
definition, pruning beyond the cutoff, truncation, the size limit and the picture."""

from __future__ import annotations

import copy
import itertools

import ase
import numpy as np
import pytest
import torch
from conftest import randomized

from qmlx.data import Molecules
from qmlx.errors import QmlxError
from qmlx.explain import Epsilon, Gamma, explain
from qmlx.explain.plot import plot_walks
from qmlx.explain.walks import lrp_walks, masked_walk_relevance
from qmlx.nn import DTNN, SchNet
from qmlx.nn.batch import PairCache

MODELS = {
    "schnet-2": lambda: randomized(lambda: SchNet(n_features=16, n_interactions=2, cutoff=5.0)),
    "schnet-3": lambda: randomized(lambda: SchNet(n_features=12, n_interactions=3, cutoff=5.0)),
    "dtnn-2": lambda: randomized(lambda: DTNN(n_features=8, n_factors=12, n_interactions=2)),
    "dtnn-3": lambda: randomized(lambda: DTNN(n_features=8, n_factors=10, n_interactions=3, cutoff=4.0)),
}
RULES = {"epsilon": Epsilon(1e-9), "gamma": Gamma(0.25, 1e-9)}


def _spread(rng, n: int, scale: float, min_distance: float = 0.7) -> np.ndarray:
    """(n, 3) random positions in Å, no two atoms closer than ``min_distance``."""
    while True:
        R = rng.normal(size=(n, 3)) * scale
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)[np.triu_indices(n, 1)]
        if n < 2 or d.min() >= min_distance:
            return R


@pytest.fixture(scope="module")
def molecules() -> Molecules:
    rng = np.random.default_rng(3)
    atoms = [
        ase.Atoms(numbers=rng.choice([1, 6, 7, 8], n), positions=_spread(rng, n, 1.4)) for n in (1, 3, 5, 7)
    ]
    return Molecules.from_atoms(atoms)


def _lrp_totals(e) -> np.ndarray:
    """(n_mol,) sum of atom relevance + bias relevance of an ``lrp`` explanation."""
    return np.bincount(e.molecules.mol_index, weights=e.relevance + e.bias, minlength=len(e.molecules))


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_walks_plus_bias_equal_the_lrp_total(name, rule, molecules):
    model = MODELS[name]()
    walks = lrp_walks(model, molecules, rule=RULES[rule])
    e = explain(model, molecules, "lrp", rule=RULES[rule])
    totals = _lrp_totals(e)
    assert len(walks) == len(molecules)
    for k, w in enumerate(walks):
        assert w.order == len(model.interactions)
        assert abs(totals[k]) > 0.1  # a non-trivial amount to explain
        assert abs(w.walks_total + w.bias_total - totals[k]) <= 1e-8 * abs(totals[k])
        # the walks alone carry the atom relevances, the biases the rest
        assert w.walks_total == pytest.approx(e.molecule(k).sum(), rel=1e-8, abs=1e-10)
        assert abs(w.conservation_error()) <= 1e-6 * abs(e.prediction[k] - e.reference[k])
        assert w.prediction == pytest.approx(e.prediction[k], rel=1e-12)
        assert w.reference == pytest.approx(e.reference[k], rel=1e-12)
        assert abs(w.bias_total) > 0  # bias relevance is reported, not hidden
        # the listed walks are all non-zero-able walks and sum to the total
        assert w.relevance.sum() == pytest.approx(w.walks_total, rel=1e-9, abs=1e-10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_marginals_are_lrp_pairs_and_lrp(name, molecules):
    model = MODELS[name]()
    walks = lrp_walks(model, molecules, full=True)
    pairs = explain(model, molecules, "lrp-pairs")
    first = explain(model, molecules, "lrp")
    for k, w in enumerate(walks):
        n, T = molecules.n_atoms[k], w.order
        assert w.tensor.shape == (n,) * (T + 1)
        P = w.tensor.sum(axis=tuple(range(1, T)))  # keep (i_0, i_T)
        np.testing.assert_allclose(P, pairs.pairs[k], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(w.tensor.reshape(n, -1).sum(1), first.molecule(k), rtol=1e-8, atol=1e-10)
        if n > 2:  # walks through other atoms carry relevance: not all of it is on i_0 -> i_T directly
            off_diagonal = w.tensor.copy()
            off_diagonal[(np.arange(n),) * (T + 1)] = 0
            assert np.abs(off_diagonal).max() > 1e-6


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", ["schnet-3", "dtnn-2"])
def test_walks_match_the_masked_relevance_pass(name, rule, molecules):
    """Each walk's relevance equals one relevance pass with every other message masked."""
    model = MODELS[name]()
    k = 2  # five atoms
    (w,) = lrp_walks(model, molecules[[k]], rule=RULES[rule], full=True)
    net = copy.deepcopy(model).double().eval()
    batch = PairCache(molecules[[k]], net.cutoff, target=None, dtype=torch.float64).batch(np.array([0]))
    rng = np.random.default_rng(0)
    n, T = molecules.n_atoms[k], w.order
    every = list(itertools.product(range(n), repeat=T + 1))
    sample = [every[i] for i in rng.choice(len(every), 40, replace=False)] + [tuple(w.walks[0])]
    values = np.array([masked_walk_relevance(net, batch, walk, RULES[rule]) for walk in sample])
    np.testing.assert_allclose(values, [w.tensor[walk] for walk in sample], rtol=1e-9, atol=1e-12)
    assert np.abs(values).max() > 1e-3


@pytest.mark.parametrize("name", ["schnet-2", "dtnn-3"])
def test_walks_beyond_the_cutoff_are_pruned_exactly(name):
    model = MODELS[name]()
    far = model.cutoff + 1.0
    atoms = ase.Atoms("OH2N", positions=[[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47], [far, 0, 0]])
    (w,) = lrp_walks(model, atoms, full=True)
    T = w.order
    # the N atom (index 3) is alone: a walk touching it and another atom is zero and not listed
    mixed = [walk for walk in itertools.product(range(4), repeat=T + 1) if 3 in walk and set(walk) != {3}]
    assert all(w.tensor[walk] == 0.0 for walk in mixed)
    listed = {tuple(row) for row in w.walks}
    assert not listed & set(mixed)
    assert w.n_walks == 3 ** (T + 1) + 1 == len(w.walks)
    (alone,) = lrp_walks(model, atoms[[3]])
    assert w.tensor[(3,) * (T + 1)] == pytest.approx(alone.relevance[0], rel=1e-12)


def test_top_keeps_the_strongest_walks_and_the_total(molecules):
    model = MODELS["schnet-3"]()
    (full,) = lrp_walks(model, molecules[[3]])
    (top,) = lrp_walks(model, molecules[[3]], top=10)
    assert full.walks.shape == (full.n_walks, 4) and full.walks.dtype == np.int64
    assert top.walks.shape == (10, 4) and top.n_walks == full.n_walks
    assert np.all(np.diff(np.abs(full.relevance)) <= 0)  # sorted by |relevance|, descending
    np.testing.assert_allclose(top.relevance, full.relevance[:10], rtol=1e-12)
    np.testing.assert_array_equal(top.walks, full.walks[:10])
    assert top.walks_total == full.walks_total
    assert top.tensor is None
    (none,) = lrp_walks(model, molecules[[3]], top=0)
    assert none.walks.shape == (0, 4) and none.walks_total == full.walks_total


def test_large_molecules_are_refused_before_any_work(molecules):
    model = MODELS["dtnn-2"]()
    with pytest.raises(QmlxError, match="7 atoms and 2 interaction blocks make 343 walks"):
        lrp_walks(model, molecules, max_walks=300)
    assert len(lrp_walks(model, molecules[[0, 1, 2]], max_walks=300)) == 3
    with pytest.raises(QmlxError, match="explains interaction networks, not Linear"):
        lrp_walks(torch.nn.Linear(2, 2), molecules)


def test_model_is_left_unchanged(molecules):
    model = MODELS["schnet-2"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # works under no_grad too
        lrp_walks(model, molecules[[1]])
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_plot_walks_writes_a_png(tmp_path, molecules):
    model = MODELS["dtnn-2"]()
    atoms = molecules[3]
    (w,) = lrp_walks(model, atoms, top=8)
    path = tmp_path / "walks.png"
    plot_walks(atoms, w, path, top=8)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
