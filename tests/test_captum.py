"""The captum adapter (`qmlx.explain.captum_adapter`) against qmlx's own attributions and closed forms."""

from __future__ import annotations

import itertools
import math

import ase.build
import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation, IntegratedGradients, ShapleyValues, ShapleyValueSampling

from qmlx.errors import QmlxError
from qmlx.explain import explain
from qmlx.explain.captum_adapter import captum_explain
from qmlx.models import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("qm7-schnet")


@pytest.fixture(scope="module")
def molecules():
    return [ase.build.molecule(n) for n in ("H2O", "CH4", "CH3OH")]


def test_captum_integrated_gradients_equal_qmlx(model, molecules):
    ours = explain(model, molecules, method="integrated-gradients", steps=32)
    theirs = captum_explain(model, molecules, IntegratedGradients, n_steps=32, method="riemann_middle")
    assert theirs.method == "captum:IntegratedGradients"
    np.testing.assert_allclose(theirs.relevance, ours.relevance, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(theirs.prediction, ours.prediction, rtol=0, atol=1e-4)
    np.testing.assert_allclose(theirs.reference, ours.reference, rtol=0, atol=1e-4)


def test_captum_shapley_values_are_the_exact_atom_shapley_values(model, molecules):
    """Each atom is one player: captum's exact Shapley values equal an enumeration of coalitions
    (absent atoms have features 0), and they add up to E(x) - E(0)."""
    water = molecules[:1]
    e = captum_explain(model, water, ShapleyValues)
    net = model.estimator
    from qmlx.data.molecules import as_molecules
    from qmlx.nn.batch import PairCache

    mols = as_molecules(water)
    batch = PairCache(mols, net.cutoff, target=None).batch(np.array([0]))
    with torch.no_grad():
        x0 = net.embed(batch.Z).double()
        net64 = __import__("copy").deepcopy(net).double()
        batch64 = PairCache(mols, net.cutoff, target=None, dtype=torch.float64).batch(np.array([0]))

        def value(coalition) -> float:
            mask = torch.zeros(len(x0), 1, dtype=torch.float64)
            mask[list(coalition)] = 1.0
            return float(net64.forward_from(x0 * mask, batch64).energy[0])

        n = len(x0)
        exact = np.zeros(n)
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for k in range(n):
                for s in itertools.combinations(others, k):
                    w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                    exact[i] += w * (value(s + (i,)) - value(s))
    # captum sums its Shapley values in float32: agreement to float32 rounding
    np.testing.assert_allclose(e.relevance, exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e.conservation_error(), 0.0, atol=1e-5)


def test_sampled_shapley_values_conserve_and_ablation_runs(model, molecules):
    e = captum_explain(model, molecules, ShapleyValueSampling, n_samples=5)
    np.testing.assert_allclose(
        e.conservation_error(), 0.0, atol=1e-5
    )  # each permutation adds up (float32 sums)
    ablation = captum_explain(model, molecules[1:2], FeatureAblation)
    assert ablation.relevance.shape == (5,) and np.isfinite(ablation.relevance).all()


def test_captum_adapter_refuses_what_it_cannot_explain(model):
    with pytest.raises(QmlxError, match="single networks"):
        captum_explain(load_model("qm7-schnet-ensemble"), [ase.build.molecule("H2O")], IntegratedGradients)
    from qmlx.errors import DomainError

    with pytest.raises(DomainError, match="Cl"):
        captum_explain(model, [ase.build.molecule("CH3Cl")], IntegratedGradients)
