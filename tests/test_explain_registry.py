"""Explanations are driven by tables: a new interaction block is taught to LRP in one place (a
`BlockRule`), a new method is one `register_method` call, and neither edits a qmlx file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import grid_molecules
from torch import nn

from qmlx.errors import QmlxError
from qmlx.explain import METHODS, Explanation, explain, register_method
from qmlx.explain.lrp import BLOCK_RULES, BlockRule, Gamma, register_block
from qmlx.explain.walks import masked_walk_relevance
from qmlx.nn import PairCache
from qmlx.nn.layers import AtomwiseHead, CosineCutoff, Dense, ElementEmbedding, GaussianRBF
from qmlx.nn.models import InteractionNetwork
from qmlx.nn.ops import symmetric_sum


class GatedInteraction(nn.Module):
    """A third kind of block: ``v_i = tanh(out(sum_j tanh(msg(x_j * g(d_ij)))))``, with a learned
    distance gate ``g`` and a nonlinear message (unlike SchNet's linear filter product)."""

    def __init__(self, n_features: int, n_rbf: int) -> None:
        super().__init__()
        self.source = Dense(n_features, n_features)
        self.gate = Dense(n_rbf, n_features)
        self.msg = Dense(n_features, n_features, activation=torch.tanh)
        self.out = Dense(n_features, n_features, activation=torch.tanh)

    def propagate(self, x, g, idx_i, idx_j):
        h = self.source(x)
        m_ji, m_ij = self.msg(h[idx_j] * g), self.msg(h[idx_i] * g)
        return self.out(symmetric_sum(m_ij, m_ji, idx_i, idx_j, x.shape[0]))


class GatedNetwork(InteractionNetwork):
    def __init__(self, n_features: int = 6, n_interactions: int = 2, cutoff: float = 4.0) -> None:
        super().__init__()
        self.config = {"n_features": n_features, "n_interactions": n_interactions, "cutoff": cutoff}
        self.cutoff = cutoff
        self.embedding = ElementEmbedding(n_features, 10)
        self.rbf = GaussianRBF(0.0, cutoff, 0.5, 0.5)
        self.cutoff_fn = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(
            GatedInteraction(n_features, self.rbf.n_rbf) for _ in range(n_interactions)
        )
        self.head = AtomwiseHead(n_features, max_z=10)

    def radial_functions(self, d):
        rbf, fcut = self.rbf(d), self.cutoff_fn(d)
        return [b.gate(rbf) * fcut.unsqueeze(-1) for b in self.interactions]


register_block(
    GatedInteraction,
    BlockRule(
        source=lambda fwd, block, x, atoms: fwd.linear(block.source, x, atoms),
        message=lambda fwd, block, h, g, dst: fwd.dense(block.msg, h * g, dst),
        update=lambda fwd, block, agg, atoms: fwd.dense(block.out, agg, atoms),
    ),
)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(3)
    net = GatedNetwork()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.6)
        net.head.reference[[1, 6, 8]] = torch.tensor([-1.0, -4.0, -6.0], dtype=torch.float64)
        net.head.scale[:] = 2.0
    return net.eval()


@pytest.fixture(scope="module")
def molecules():
    return grid_molecules(4, seed=11)


@pytest.mark.parametrize("rule", [None, Gamma(0.3)])
def test_lrp_conserves_on_a_block_type_registered_outside_qmlx(toy, molecules, rule):
    e = explain(toy, molecules, "lrp", rule=rule)
    with torch.no_grad():
        energy = toy(PairCache(molecules, toy.cutoff, target=None).batch(np.arange(len(molecules)))).energy
    np.testing.assert_allclose(e.prediction, energy.double().numpy(), rtol=1e-5)
    reference = np.bincount(molecules.mol_index, weights=toy.head.reference.double().numpy()[molecules.Z])
    np.testing.assert_allclose(e.reference, reference, rtol=1e-12)
    np.testing.assert_allclose(e.conservation_error(), 0.0, atol=1e-8)
    assert np.abs(e.relevance).max() > 1e-3  # the relevances are not trivially zero


def test_pairs_sum_to_the_atom_relevances_on_the_toy_block(toy, molecules):
    atoms = explain(toy, molecules, "lrp")
    pairs = explain(toy, molecules, "lrp-pairs")
    for i, P in enumerate(pairs.pairs):
        np.testing.assert_allclose(P.sum(axis=1), atoms.molecule(i), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(pairs.conservation_error(), 0.0, atol=1e-8)


def test_walks_conserve_and_match_literal_masking_on_the_toy_block(toy, molecules):
    e = explain(toy, molecules, "lrp-walks")
    atoms = explain(toy, molecules, "lrp")
    net = toy.double()
    try:
        for i, w in enumerate(e.walks):
            assert w.walks_total == pytest.approx(atoms.molecule(i).sum(), rel=1e-9, abs=1e-10)
            assert w.conservation_error() == pytest.approx(0.0, abs=1e-8)
            batch = PairCache(molecules.subset([i]), net.cutoff, target=None, dtype=torch.float64).batch(
                np.array([0])
            )
            for walk, r in list(zip(w.walks, w.relevance))[:5]:  # the strongest walks, one by one
                assert masked_walk_relevance(net, batch, walk) == pytest.approx(r, rel=1e-7, abs=1e-10)
    finally:
        toy.float()


def test_an_unregistered_block_is_named(molecules):
    class Unknown(GatedInteraction):
        pass

    class Other(nn.Module):
        def propagate(self, x, g, i, j):
            return x

    net = GatedNetwork()
    assert type(net.interactions[0]) in BLOCK_RULES
    net.interactions[0] = Unknown(6, net.rbf.n_rbf)  # a subclass inherits its base's rule
    explain(net, molecules, "lrp")
    net.interactions[1] = Other()
    with pytest.raises(QmlxError, match="no relevance rule for interaction blocks of type Other"):
        explain(net, molecules, "lrp")


def test_a_method_registered_outside_qmlx_is_dispatched_by_kind(toy, molecules):
    def uniform(model, mols, options) -> Explanation:
        energy = explain(model, mols, "decomposition").prediction
        share = (energy / mols.n_atoms)[mols.mol_index]
        return Explanation("uniform", mols, share, energy, np.zeros(len(mols)))

    register_method("uniform", ["network"], uniform)
    try:
        e = explain(toy, molecules, "uniform")
        np.testing.assert_allclose(e.conservation_error(), 0.0, atol=1e-9)
        with pytest.raises(QmlxError, match="kernel models are explained with: neuralized, novelty"):
            from qmlx.kernels.training import train_krr

            krr = train_krr(
                grid_molecules(), np.arange(30), None, "bob", sigma=100.0, lam=1e-6, target="energy"
            )
            explain(krr[0], molecules, "uniform")
    finally:
        del METHODS["uniform"]
