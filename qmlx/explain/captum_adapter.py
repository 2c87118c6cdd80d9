"""Any captum attribution of a qmlx network's energy, per atom, beside qmlx's own explanations.

captum (Kokhlikyan et al., arXiv 2009.07896) attributes a model's output to its input features. The
adapter hands it each molecule's initial atom features ``x^0 (n_atoms, F)`` (the element
embeddings, the input of `InteractionNetwork.forward_from`) and the molecule's energy as the output;
an atom's relevance is the sum of its features' attributions, in kcal/mol. Perturbation methods
(``ShapleyValues``, ``ShapleyValueSampling``, ``FeatureAblation``, ``Lime``, ...) get a feature mask
that makes each atom one player, so a Shapley value is an atom's. The baseline is all features 0 (as
qmlx's ``integrated-gradients``); the explanation's ``reference`` is the energy at that baseline, so
methods that are complete (integrated gradients, Shapley values) conserve
``sum relevance = prediction - reference`` (with other ``baselines``, the reference is the energy
at them).

    from captum.attr import ShapleyValueSampling
    from qmlx.explain.captum_adapter import captum_explain
    e = captum_explain(load_model("qm7-schnet"), molecules, ShapleyValueSampling, n_samples=200)

The network runs in float64 on a copy, one molecule at a time. Needs captum (``pip install
qmlx[captum]``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import numpy as np
import torch

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import QmlxError


def captum_explain(model, molecules: Molecules | Sequence, attribution, **attribute_kwargs):
    """A `qmlx.explain.Explanation` (method ``captum:<class name>``) of ``model``'s energies.

    model : a single network (`qmlx.load_model` or an `InteractionNetwork`); checked against its
        domain first, as `qmlx.explain.explain` does.
    attribution : a captum attribution class taking the forward function (``IntegratedGradients``,
        ``ShapleyValueSampling``, ...).
    attribute_kwargs : passed to its ``attribute`` (``n_steps``, ``n_samples``, ...); ``baselines``
        defaults to 0 and ``feature_mask`` to one group per atom where ``attribute`` takes them (a
        mask of your own must also group by atom: captum gives every feature of a group the group's
        attribution, which is then the atom's).
    """
    from qmlx.explain import Explanation
    from qmlx.models import as_trained_model
    from qmlx.nn.batch import PairCache

    trained = as_trained_model(model)
    if trained.kind != "network":
        raise QmlxError(f"captum_explain explains single networks, not {trained.kind} models")
    mols = as_molecules(molecules)
    trained.check_domain(mols)
    net = copy.deepcopy(trained.estimator).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cache = PairCache(mols, net.cutoff, target=None, dtype=torch.float64)
    params = inspect.signature(attribution.attribute).parameters
    relevance = np.zeros(len(mols.Z))
    prediction, reference = np.zeros(len(mols)), np.zeros(len(mols))
    for m in range(len(mols)):
        batch = cache.batch(np.array([m]))
        x0 = net.embed(batch.Z).detach()
        n, f = x0.shape

        def forward(x: torch.Tensor, batch=batch) -> torch.Tensor:  # (B, n, F) -> (B,) energies, kcal/mol
            return torch.stack([net.forward_from(xb, batch).energy[0] for xb in x])

        kwargs = dict(attribute_kwargs)
        if "baselines" in params:
            kwargs.setdefault("baselines", 0.0)
        if "feature_mask" in params:
            kwargs.setdefault("feature_mask", torch.arange(n).view(1, n, 1).expand(1, n, f).contiguous())
        attr = attribution(forward).attribute(x0.unsqueeze(0), **kwargs)
        attr = attr[0] if isinstance(attr, tuple) else attr
        lo = mols.offsets[m]
        # grouped (a feature mask): every feature of an atom holds the atom's attribution
        per_atom = attr[0].mean(-1) if "feature_mask" in kwargs else attr[0].sum(-1)
        relevance[lo : lo + n] = per_atom.detach().numpy()
        base = torch.as_tensor(kwargs.get("baselines", 0.0), dtype=x0.dtype).expand(1, n, f)
        with torch.no_grad():
            prediction[m] = float(forward(x0.unsqueeze(0))[0])
            reference[m] = float(forward(base)[0])
    return Explanation(f"captum:{attribution.__name__}", mols, relevance, prediction, reference)
