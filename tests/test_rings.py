"""Ring perception and types (`qmlx.chem.rings`), ring energies (`qmlx.explain.rings`) and their
statistics (`qmlx.insight.statistics`) on hand-made molecules."""

from __future__ import annotations

import ase
import numpy as np
import pytest

from qmlx.chem.rings import (
    Ring,
    canonical_sequence,
    composition_features,
    per_atom_composition,
    perceive_rings,
)
from qmlx.explain.rings import ring_energies
from qmlx.insight.statistics import (
    bootstrap,
    composition_residual,
    composition_scores,
    matched_difference,
    pair_fraction,
)


def _atoms(smiles: str) -> ase.Atoms:
    """A 3D geometry (Å) of ``smiles`` with hydrogens: RDKit embedding (seed 0) and MMFF relaxation."""
    Chem = pytest.importorskip("rdkit.Chem")
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=0) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    return ase.Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


# (SMILES, ring composition, aromatic, ring type, hand-set ring energy in kcal/mol)
SIX_RINGS = [
    ("c1ccccc1", ("C6", 6), True, "benzene", -30.0),
    ("CC1(C)C=CC=CC1", ("C6", 6), False, "cyclohexadiene", -20.0),  # 5,5-dimethylcyclohexa-1,3-diene
    ("CC1(C)C=CC=CC1", ("C6", 6), False, "cyclohexadiene", -30.0),  # the same ring, tied with benzene
    ("Cc1ccccc1", ("C6", 5), True, "benzene", -25.0),  # toluene
    ("CC1=CC=CC(C)(C)C1", ("C6", 5), False, "cyclohexadiene", -22.0),  # 1,5,5-trimethylcyclohexa-1,3-diene
    ("C1CCCCC1", ("C6", 12), False, "cyclohexane", -40.0),
    ("C1=CC=CCC1", ("C6", 8), False, "cyclohexadiene", -10.0),  # 1,3-cyclohexadiene
]


@pytest.fixture(scope="module")
def six_rings() -> list[Ring]:
    rings = []
    for k, (smiles, *_) in enumerate(SIX_RINGS):
        found = perceive_rings(_atoms(smiles), k, sizes=(6,))
        assert found.method == "rdkit" and len(found.rings) == 1
        rings += found.rings
    return rings


def test_perception_and_types_of_the_hand_made_set(six_rings):
    for ring, (smiles, composition, aromatic, kind, _) in zip(six_rings, SIX_RINGS):
        assert ring.composition == composition, smiles
        assert ring.aromatic is aromatic, smiles
        assert ring.ring_type == kind, smiles


def test_pair_fraction_within_composition_is_known_exactly(six_rings):
    energy = np.array([row[-1] for row in SIX_RINGS])
    aromatic = np.array([r.aromatic for r in six_rings])
    groups = [r.composition for r in six_rings]
    # (C6, 6): benzene -30 beats -20 and ties -30 -> 1.5 of 2; (C6, 5): toluene -25 beats -22 -> 1 of 1;
    # cyclohexane and 1,3-cyclohexadiene have no aromatic ring of their composition.
    matched = pair_fraction(energy, aromatic, groups)
    assert matched.fraction == pytest.approx(2.5 / 3)
    assert matched.n_pairs == 3 and matched.n_groups == 2
    # Over all pairs it is the ROC AUC of -energy: benzene wins 3.5 of 5, toluene 3 of 5.
    everything = pair_fraction(energy, aromatic)
    assert everything.fraction == pytest.approx(6.5 / 10)
    from sklearn.metrics import roc_auc_score

    assert everything.fraction == pytest.approx(roc_auc_score(aromatic, -energy))
    # Benzene, cyclohexane and 1,3-cyclohexadiene alone share no composition: no matched pair.
    three = [0, 5, 6]
    assert np.isnan(pair_fraction(energy[three], aromatic[three], [groups[i] for i in three]).fraction)


def test_pair_fraction_weights_are_multiplicities():
    rng = np.random.default_rng(1)
    energy = rng.normal(size=12)
    aromatic = np.arange(12) % 3 == 0
    groups = np.arange(12) % 2
    weights = rng.integers(0, 3, size=12).astype(float)
    repeated = np.repeat(np.arange(12), weights.astype(int))
    weighted = pair_fraction(energy, aromatic, groups, weights)
    copies = pair_fraction(energy[repeated], aromatic[repeated], groups[repeated])
    assert weighted.fraction == pytest.approx(copies.fraction)
    assert weighted.n_pairs == copies.n_pairs


def test_element_references_cancel_within_a_composition(six_rings):
    """Adding any per-element reference to every atom leaves the matched pair fraction unchanged."""
    mols = [_atoms(row[0]) for row in SIX_RINGS]
    offsets = np.cumsum([0] + [len(a) for a in mols])
    numbers = np.concatenate([a.numbers for a in mols])
    values = np.random.default_rng(0).normal(size=len(numbers))
    reference = np.zeros(100)
    reference[[1, 6]] = [-70.0, -150.0]
    aromatic = np.array([r.aromatic for r in six_rings])
    groups = [r.composition for r in six_rings]
    relative = ring_energies(six_rings, values, offsets)
    raw = ring_energies(six_rings, values + reference[numbers], offsets)
    assert pair_fraction(raw, aromatic, groups).fraction == pytest.approx(
        pair_fraction(relative, aromatic, groups).fraction
    )
    # Without grouping the references dominate: rings with more hydrogens look more stable.
    assert pair_fraction(raw, aromatic).fraction < 0.5


def test_bootstrap_is_seeded_and_contains_the_estimate():
    rng = np.random.default_rng(2)
    values = rng.normal(1.0, 1.0, size=200)
    molecule = np.repeat(np.arange(100), 2)  # two rings per molecule

    def mean(w):
        return float(np.sum(w * values) / np.sum(w))

    first = bootstrap(mean, molecule, 100, n_resamples=200, seed=5)
    again = bootstrap(mean, molecule, 100, n_resamples=200, seed=5)
    other = bootstrap(mean, molecule, 100, n_resamples=200, seed=6)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low <= first.value <= first.high
    assert first.value == pytest.approx(values.mean())
    assert first.n_resamples == 200 and first.n_undefined == 0


def test_bootstrap_resamples_molecules_not_rings():
    molecule = np.array([0, 0, 1, 2, 2, 2])
    together = []

    def record(w):
        together.append(w[0] == w[1] and w[3] == w[4] == w[5])
        return float(w.sum())

    bootstrap(record, molecule, 3, n_resamples=50, seed=0)
    assert all(together)


def test_bootstrap_counts_undefined_resamples():
    aromatic = np.array([True, False, False, False])
    energy = np.array([-1.0, 0.0, 1.0, 2.0])
    interval = bootstrap(
        lambda w: pair_fraction(energy, aromatic, weights=w).fraction,
        np.arange(4),
        4,
        n_resamples=300,
        seed=0,
    )
    assert interval.value == 1.0
    assert 0 < interval.n_undefined < 300  # resamples without the aromatic ring have no pairs


def test_composition_baselines(six_rings):
    features = composition_features(six_rings)
    assert features.shape == (len(six_rings), 5)  # C, N, O, S, H
    np.testing.assert_array_equal(features[:, 0], 6)
    np.testing.assert_array_equal(features[:, -1], [6, 6, 6, 5, 5, 12, 8])
    # An energy that composition explains exactly leaves residuals of zero: every pair ties.
    exact = 3.0 * features[:, 0] - 2.5 * features[:, -1] + 1.0
    assert np.abs(composition_residual(exact, features)).max() < 1e-9
    aromatic = np.array([r.aromatic for r in six_rings])
    residual = np.round(composition_residual(exact, features), 9)  # zero up to rounding error
    assert pair_fraction(residual, aromatic).fraction == pytest.approx(0.5)
    # An aromatic shift on top survives the fit.
    shifted = exact - 5.0 * aromatic
    assert pair_fraction(composition_residual(shifted, features), aromatic).fraction == 1.0


def test_composition_scores_are_out_of_fold():
    # Composition (H count) separates the classes perfectly: the out-of-fold scores do too.
    rng = np.random.default_rng(3)
    n = 200
    aromatic = rng.random(n) < 0.3
    hydrogens = np.where(aromatic, rng.integers(3, 6, n), rng.integers(7, 12, n))
    features = np.column_stack([np.full(n, 6.0), np.zeros((n, 3)), hydrogens])
    molecule = np.arange(n) // 2
    scores = composition_scores(features, aromatic, molecule, n_splits=5, seed=0)
    assert pair_fraction(-scores, aromatic).fraction == 1.0
    # Labels unrelated to composition: out-of-fold scores carry no signal beyond chance.
    noise = rng.random(n) < 0.5
    random_features = np.column_stack([np.full(n, 6.0), np.zeros((n, 3)), rng.integers(5, 12, n)])
    auc = pair_fraction(-composition_scores(random_features, noise, molecule), noise).fraction
    assert abs(auc - 0.5) < 0.15


def test_matched_difference_compares_only_within_strata():
    values = np.array([1.0, 3.0, 10.0, 0.0, 2.0, 8.0])
    in_a = np.array([True, True, True, False, False, False])
    in_b = ~in_a
    strata = ["x", "x", "y", "x", "x", "z"]  # "y" and "z" hold one group each and are ignored
    assert matched_difference(values, in_a, in_b, strata) == pytest.approx(2.0 - 1.0)
    assert np.isnan(matched_difference(values, in_a, in_b, ["p", "p", "p", "q", "q", "q"]))


def test_ring_types_and_sequences():
    assert canonical_sequence("NCNCC") == canonical_sequence("CCNCN") == canonical_sequence("CNCCN")
    assert canonical_sequence("NCNCC") != canonical_sequence("NNCCC")  # imidazole vs pyrazole
    names = {}
    for smiles in ("c1cnc[nH]1", "c1cn[nH]c1", "c1ccncc1", "O=C1CCCCC1", "C1CC1", "C1CO1"):
        (ring,) = perceive_rings(_atoms(smiles), sizes=(3, 5, 6)).rings
        names[smiles] = ring.ring_type
    assert names == {
        "c1cnc[nH]1": "imidazole",
        "c1cn[nH]c1": "pyrazole",
        "c1ccncc1": "pyridine",
        "O=C1CCCCC1": "cyclohexane + exocyclic =X",
        "C1CC1": "cyclopropane",
        "C1CO1": "oxirane",
    }
    cyclopropane = perceive_rings(_atoms("C1CC1"), sizes=(3,)).rings[0]
    cyclohexane = perceive_rings(_atoms("C1CCCCC1"), sizes=(6,)).rings[0]
    assert per_atom_composition(cyclopropane) == per_atom_composition(cyclohexane)  # CH2 per ring atom


def test_strained_cage_is_perceived_on_the_second_try():
    """Bicyclo[1.1.1]pentane: RDKit's default connectivity bonds the bridgeheads (about 1.9 Å apart)."""
    found = perceive_rings(_atoms("C1C2CC1C2"), sizes=(4,))
    assert found.method == "rdkit-retry" and found.cov_factor == 1.2 and found.error
    assert {r.ring_type for r in found.rings} == {"cyclobutane"}
    assert all(r.perception == "rdkit-retry" for r in found.rings)
    failed = perceive_rings(_atoms("C1C2CC1C2"), sizes=(4,), fallback=False, retry=())
    assert failed.method == "failed" and failed.rings == []
    fallback = perceive_rings(_atoms("C1C2CC1C2"), sizes=(4,), retry=())
    assert fallback.method == "fallback" and all(r.perception == "fallback" for r in fallback.rings)
