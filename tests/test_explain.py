"""Explanations: LRP conservation per layer type, pair relevances, baselines, model untouched."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from conftest import randomized

from qmlx.data import Molecules
from qmlx.errors import QmlxError
from qmlx.explain import Epsilon, Gamma, explain
from qmlx.nn import DTNN, SchNet

MODELS = {
    "schnet": lambda: randomized(lambda: SchNet(n_features=16, n_interactions=2, cutoff=5.0)),
    "dtnn": lambda: randomized(lambda: DTNN(n_features=8, n_factors=12, n_interactions=2)),
}
RULES = {"epsilon": Epsilon(1e-9), "gamma": Gamma(0.25, 1e-9)}


def spread_positions(rng, n: int, scale: float, min_distance: float = 0.7) -> np.ndarray:
    """(n, 3) random positions in Å, redrawn until no two atoms are closer than ``min_distance``
    (closer than 0.5 Å is outside every model's domain)."""
    while True:
        R = rng.normal(size=(n, 3)) * scale
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)[np.triu_indices(n, 1)]
        if n < 2 or d.min() >= min_distance:
            return R


@pytest.fixture
def random_molecules() -> Molecules:
    rng = np.random.default_rng(1)
    atoms = [
        ase.Atoms(numbers=rng.choice([1, 6, 7, 8], n), positions=spread_positions(rng, n, 1.3))
        for n in (2, 4, 6, 9)
    ]
    return Molecules.from_atoms(atoms)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lrp_conserves_the_energy(name, rule, random_molecules):
    e = explain(MODELS[name](), random_molecules, "lrp", rule=RULES[rule])
    explained = e.prediction - e.reference
    assert np.abs(explained).min() > 0.1  # a non-trivial amount to explain
    np.testing.assert_array_less(np.abs(e.conservation_error()), 1e-4 * np.abs(explained))
    assert np.abs(e.bias).sum() > 0  # bias relevance is reported, not hidden


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pair_relevances_sum_to_atom_relevances(name, random_molecules):
    model = MODELS[name]()
    pairs = explain(model, random_molecules, "lrp-pairs")
    first = explain(model, random_molecules, "lrp")
    for i, P in enumerate(pairs.pairs):
        assert P.shape == (random_molecules.n_atoms[i],) * 2
        np.testing.assert_allclose(P.sum(axis=1), first.molecule(i), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_isolated_atom_keeps_its_own_contribution(name):
    model = MODELS[name]()
    far = model.cutoff + 5.0
    water = ase.Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
    with_far_atom = water + ase.Atoms("N", positions=[[far, 0, 0]])
    together = explain(model, Molecules.from_atoms([with_far_atom]), "lrp")
    alone = explain(model, Molecules.from_atoms([ase.Atoms("N")]), "lrp")
    assert together.relevance[3] == pytest.approx(alone.relevance[0], rel=1e-9, abs=1e-12)
    assert together.bias[3] == pytest.approx(alone.bias[0], rel=1e-9, abs=1e-12)


def test_lrp_relevances_are_rotation_invariant(random_molecules):
    model = MODELS["schnet"]()
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    turned = Molecules(
        Z=random_molecules.Z, R=random_molecules.R @ q.T + 1.5, n_atoms=random_molecules.n_atoms
    )
    a = explain(model, random_molecules, "lrp").relevance
    b = explain(model, turned, "lrp").relevance
    np.testing.assert_allclose(a, b, atol=1e-8)


@pytest.mark.parametrize("method", ["decomposition", "lrp", "gradient-x-input", "integrated-gradients"])
def test_explanation_leaves_model_unchanged(method, random_molecules):
    from qmlx.nn import predict_network

    model = MODELS["dtnn"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    energies_before, _ = predict_network(model, random_molecules)
    explain(model, random_molecules, method)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(predict_network(model, random_molecules)[0], energies_before)
    assert next(model.parameters()).dtype == torch.float32


def test_decomposition_sums_to_prediction(random_molecules):
    e = explain(MODELS["schnet"](), random_molecules, "decomposition")
    np.testing.assert_allclose(e.totals(), e.prediction, atol=1e-9)


def test_integrated_gradients_is_complete_against_zero_embeddings(random_molecules):
    e = explain(MODELS["schnet"](), random_molecules, "integrated-gradients", steps=100)
    np.testing.assert_allclose(e.totals(), e.prediction - e.reference, rtol=1e-3, atol=1e-3)


def test_gradient_is_unsigned_sensitivity(random_molecules):
    e = explain(MODELS["schnet"](), random_molecules, "gradient")
    assert (e.relevance >= 0).all()
    assert np.isnan(e.reference).all()


def test_unknown_method_is_a_clear_error(random_molecules):
    with pytest.raises(QmlxError, match="unknown explanation method 'shap'"):
        explain(MODELS["schnet"](), random_molecules, "shap")


def test_removal_ranks_order_atoms_within_each_molecule(random_molecules):
    from qmlx.explain.flipping import removal_ranks

    scores = np.arange(len(random_molecules.Z), dtype=float)
    ranks = removal_ranks(random_molecules, scores)
    o = random_molecules.offsets
    for i in range(len(random_molecules)):
        assert ranks[o[i] : o[i + 1]].tolist() == list(range(random_molecules.n_atoms[i]))[::-1]


def test_flipping_an_additive_model_ranks_true_contributions_best(random_molecules):
    from qmlx.explain.flipping import flipping_curve

    weight = np.zeros(10)
    weight[[1, 6, 7, 8]] = [-1.0, -8.0, -5.0, -3.0]

    def predict(mols):  # energy = sum of element contributions, so the truth is known
        return np.bincount(mols.mol_index, weights=weight[mols.Z], minlength=len(mols))

    truth = weight[random_molecules.Z]
    morf = flipping_curve(predict, random_molecules, -truth)
    lerf = flipping_curve(predict, random_molecules, truth)
    shuffled = flipping_curve(predict, random_molecules, np.random.default_rng(0).random(len(truth)))
    assert morf.aopc > shuffled.aopc > lerf.aopc
    assert morf.energies[-1].tolist() == [0.0] * len(random_molecules)  # everything removed
    np.testing.assert_allclose(morf.energies[0], predict(random_molecules))


def test_rings_find_aromatic_benzene_and_its_hydrogens():
    from ase.build import molecule

    from qmlx.chem.rings import _fallback_rings, find_rings

    benzene = molecule("C6H6")
    (ring,) = find_rings(benzene)
    assert ring.size == 6 and ring.aromatic and ring.carbon_only
    assert len(ring.hydrogens) == 6
    rings, aromatic, _ = _fallback_rings(benzene)
    assert [len(r) for r in rings] == [6] and aromatic == [True]
    values = np.zeros(len(benzene))
    values[list(ring.atoms)] = -2.0
    values[list(ring.hydrogens)] = -0.5
    assert ring.energy(values) == pytest.approx(-15.0)
    assert ring.energy(values, with_hydrogens=False) == pytest.approx(-12.0)


def test_saturated_ring_is_not_aromatic():
    from qmlx.chem.rings import _fallback_rings, find_rings

    # cyclopentane: a puckered ring of sp3 carbons (positions in Å)
    angles = np.arange(5) * 2 * np.pi / 5
    carbons = np.stack([1.28 * np.cos(angles), 1.28 * np.sin(angles), 0.25 * (-1) ** np.arange(5)], axis=1)
    hydrogens = []
    for c in carbons:
        out = c[:2] / np.linalg.norm(c[:2])
        hydrogens += [c + 0.63 * np.r_[out, 0] + [0, 0, 0.89], c + 0.63 * np.r_[out, 0] - [0, 0, 0.89]]
    atoms = ase.Atoms("C5H10", positions=np.vstack([carbons, hydrogens]))
    (ring,) = find_rings(atoms)
    assert ring.size == 5 and not ring.aromatic and len(ring.hydrogens) == 10
    assert _fallback_rings(atoms)[1] == [False]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_relevance_pass_reproduces_the_model_energies(name, random_molecules):
    model = MODELS[name]()
    lrp = explain(model, random_molecules, "lrp")
    own = explain(model, random_molecules, "decomposition")  # the model's own forward pass
    # equal up to what the epsilon stabilizer (1e-9) changes in the activations
    np.testing.assert_allclose(lrp.prediction, own.prediction, rtol=1e-7)


# ---------------------------------------------------------------------------- RDKit and 3-D views
@pytest.fixture(scope="module")
def g2_explanation():
    import ase.build

    from qmlx.explain import explain
    from qmlx.models import load_model

    frames = [ase.build.molecule(n) for n in ("C6H6", "CH3CONH2", "CH3")]  # CH3: a radical
    return explain(load_model("qm7-schnet"), frames[:2], method="lrp"), frames


def test_to_rdkit_carries_relevance_in_atom_order(g2_explanation):
    from rdkit import Chem

    e, frames = g2_explanation
    mols = e.to_rdkit()
    assert len(mols) == 2
    for i, (mol, atoms) in enumerate(zip(mols, frames)):
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == list(atoms.numbers)
        np.testing.assert_allclose(mol.GetConformer().GetPositions(), atoms.positions, atol=1e-6)
        np.testing.assert_allclose([a.GetDoubleProp("relevance") for a in mol.GetAtoms()], e.molecule(i))
        assert mol.GetDoubleProp("prediction") == pytest.approx(e.prediction[i])
        assert mol.GetProp("method") == "lrp" and mol.GetProp("unit") == "kcal/mol"
        assert mol.GetProp("qmlx_bond_orders") == "assigned"
    assert Chem.MolToSmiles(Chem.RemoveHs(mols[0])) == "c1ccccc1"
    assert Chem.MolToSmiles(Chem.RemoveHs(mols[1])) == "CC(N)=O"


def test_to_rdkit_keeps_a_molecule_whose_bond_orders_fail(g2_explanation):
    import ase

    from qmlx.data import Molecules
    from qmlx.explain import Explanation

    _, frames = g2_explanation
    bad = ase.Atoms(
        "NH4", positions=[[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [-0.6, 0.6, -0.6], [0.6, -0.6, -0.6]]
    )
    mols = Molecules.from_atoms([frames[2], bad], targets={})
    e = Explanation("lrp", mols, np.arange(len(mols.Z), dtype=float), np.zeros(2), np.zeros(2))
    out = e.to_rdkit()
    assert len(out) == 2 and out[1].GetProp("qmlx_bond_orders") == "not assigned"
    assert out[1].GetNumBonds() == 4
    assert [a.GetDoubleProp("relevance") for a in out[1].GetAtoms()] == [4.0, 5.0, 6.0, 7.0, 8.0]


def test_similarity_map_writes_a_png(g2_explanation, tmp_path):
    from qmlx.explain.plot import similarity_map

    e, _ = g2_explanation
    for with_h in (True, False):
        path = similarity_map(e, 1, tmp_path / f"map-{with_h}.png", with_hydrogens=with_h)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map-False.png", "map-True.png"]


def test_3d_view_is_self_contained_and_draws_what_it_should(g2_explanation, tmp_path):
    import json
    import re

    import matplotlib
    from matplotlib.colors import Normalize, to_hex

    from qmlx.chem import bonds
    from qmlx.explain.plot import write_html_report
    from qmlx.explain.view3d import view3d_html, write_view3d

    e, frames = g2_explanation
    norm = Normalize(-20, 20)
    snippet = view3d_html(frames[1], e.molecule(1), norm, "RdBu_r", "v1")
    data = json.loads(re.search(r"\}\)\((\{.*\})\);</script>", snippet).group(1))
    assert data["id"] == "v1" and data["bonds"] == bonds(frames[1]).tolist()
    np.testing.assert_allclose([a[:3] for a in data["atoms"]], frames[1].positions, atol=1e-4)
    expected = [to_hex(matplotlib.colormaps["RdBu_r"](norm(v))) for v in e.molecule(1)]
    assert [a[4] for a in data["atoms"]] == expected
    assert [a[5] for a in data["atoms"]] == [
        f"{s}{k}" for k, s in enumerate(frames[1].get_chemical_symbols())
    ]
    page = write_view3d(e, tmp_path / "view.html").read_text()
    report = write_html_report(e, tmp_path / "report.html").read_text()
    for text in (page, report):
        assert text.count("<canvas") == 2
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text)  # nothing from the network
        assert "</script>" in text and text.count("<script>") == text.count("</script>")
