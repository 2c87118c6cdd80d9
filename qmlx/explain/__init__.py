"""Explanations of energy predictions: which atoms (and atom pairs) carry them, with sign.

One entry point, `explain(model, molecules, method=...)`, returns an `Explanation` with per-atom
relevances in kcal/mol and the reference value each molecule is explained against (Letzgus et
al., IEEE Signal Process. Mag. 2022: explain ``f(x) - f(x~)`` for a stated ``x~``).

| method | what it is | reference | conserves |
|---|---|---|---|
| ``decomposition`` | the network's own atom energies E_i | 0 | E = sum E_i |
| ``lrp`` | LRP (epsilon / gamma rules), see `qmlx.explain.lrp` | sum of element references | with bias relevance |
| ``lrp-pairs`` | second-order LRP: relevance of (source, sink) atom pairs | as ``lrp`` | sums to ``lrp`` |
| ``lrp-walks`` | relevant walks (GNN-LRP), see `qmlx.explain.walks`; atoms as ``lrp`` | as ``lrp`` | walks sum to ``lrp`` |
| ``gradient`` | sensitivity: ``||dE/dx_i^0||_2`` w.r.t. atom i's embedding (unsigned) | none | no |
| ``gradient-x-input`` | ``x_i^0 . dE/dx_i^0`` w.r.t. the embedding | none | no |
| ``integrated-gradients`` | Sundararajan et al. 2017, embeddings scaled from 0 to x^0 | E with all embeddings 0 | yes (path integral) |
| ``neuralized`` (KRR) | Kauffmann et al. 2020 neuralization against the empty molecule, features mapped onto atoms, symmetry-averaged | f(0), the prediction for all-zero features | exact (no remainder) |

Explanations run on a float64 copy of the model; the model passed in is left unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import ase
import numpy as np
import torch

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import QmlxError
from qmlx.explain.lrp import Epsilon, Gamma, lrp_atoms, lrp_pairs
from qmlx.nn.batch import Batch, PairCache
from qmlx.nn.models import Ensemble, InteractionNetwork

METHODS = (
    "decomposition", "lrp", "lrp-pairs", "lrp-walks", "gradient", "gradient-x-input", "integrated-gradients",
)  # fmt: skip

__all__ = ["METHODS", "Epsilon", "Explanation", "Gamma", "explain"]


@dataclass
class Explanation:
    """Per-atom relevances of a set of molecules.

    method : the method's name.
    molecules : the explained molecules (positions in Å).
    relevance : (n_atoms_total,) relevance of each atom in kcal/mol (``gradient``: kcal/mol per
        unit of embedding, unsigned).
    prediction : (n_mol,) predicted energies in kcal/mol.
    reference : (n_mol,) the value each prediction is explained against, kcal/mol.
    bias : (n_atoms_total,) relevance absorbed by biases (LRP), or ``None``.
    pairs : per molecule an (n_i, n_i) array ``P[a, b]`` (``lrp-pairs``), or ``None``.
    padding : (n_mol,) relevance of zero-padded features (kernel models), or ``None``.
    walks : per molecule a `qmlx.explain.walks.WalkResult` (``lrp-walks``), or ``None``.
    spread : for an ensemble, (n_atoms_total,) standard deviation of the members' atom relevances
        (the explanation itself is the members' mean, so conservation still holds), else ``None``.
    """

    method: str
    molecules: Molecules
    relevance: np.ndarray
    prediction: np.ndarray
    reference: np.ndarray
    bias: np.ndarray | None = None
    pairs: list[np.ndarray] | None = None
    padding: np.ndarray | None = None
    unit: str = "kcal/mol"
    walks: list | None = None  # lrp-walks: one `qmlx.explain.walks.WalkResult` per molecule
    spread: np.ndarray | None = None  # ensembles: (n_atoms_total,) std of the members' relevances

    def molecule(self, i: int) -> np.ndarray:
        """(n_atoms_i,) relevances of molecule ``i``."""
        o = self.molecules.offsets
        return self.relevance[o[i] : o[i + 1]]

    def totals(self) -> np.ndarray:
        """(n_mol,) sum of relevance (plus bias relevance, if any) per molecule."""
        total = self.relevance if self.bias is None else self.relevance + self.bias
        sums = np.bincount(self.molecules.mol_index, weights=total, minlength=len(self.molecules))
        return sums if self.padding is None else sums + self.padding

    def conservation_error(self) -> np.ndarray:
        """(n_mol,) ``totals() - (prediction - reference)`` in kcal/mol."""
        return self.totals() - (self.prediction - self.reference)


def _per_mol(values: torch.Tensor, batch: Batch) -> torch.Tensor:
    return torch.zeros(batch.n_mol, dtype=values.dtype, device=values.device).index_add_(
        0, batch.mol_index, values
    )


def _explain_batch(model, batch: Batch, method: str, rule, steps: int):
    """(relevance, prediction, reference, bias or None, pair matrix or None) for one batch."""
    if method in ("lrp", "lrp-pairs"):  # the relevance pass computes the energies too
        relevance, bias, ref, atom_energies = lrp_atoms(model, batch, rule)
        pairs = lrp_pairs(model, batch, rule) if method == "lrp-pairs" else None
        return relevance, _per_mol(atom_energies, batch), _per_mol(ref, batch), bias, pairs
    with torch.no_grad():
        out = model(batch)
    energy = out.energy
    if method == "decomposition":
        return out.atom_energies, energy, torch.zeros_like(energy), None, None
    x0 = model.embed(batch.Z).detach()
    if method in ("gradient", "gradient-x-input"):
        x = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.forward_from(x, batch).energy.sum(), x)
        rel = g.norm(dim=-1) if method == "gradient" else (x0 * g).sum(-1)
        return rel, energy, torch.full_like(energy, float("nan")), None, None
    if method == "integrated-gradients":
        total = torch.zeros_like(x0)
        for alpha in (torch.arange(steps, dtype=x0.dtype, device=x0.device) + 0.5) / steps:  # midpoint rule
            x = (alpha * x0).requires_grad_(True)
            (g,) = torch.autograd.grad(model.forward_from(x, batch).energy.sum(), x)
            total += g
        with torch.no_grad():
            baseline = model.forward_from(torch.zeros_like(x0), batch).energy
        return (x0 * total / steps).sum(-1), energy, baseline, None, None
    raise QmlxError(f"unknown explanation method {method!r}; expected one of {', '.join(METHODS)}")


def _explain_ensemble(
    model, molecules: Molecules, method: str, rule, steps: int, batch_size: int
) -> Explanation:
    """The mean of the members' explanations (conserving, since every member's does and the sum
    is linear), with the members' standard deviation per atom as ``spread``."""
    from qmlx.nn.io import check_network_domain

    if method == "lrp-walks":
        raise QmlxError("lrp-walks explains one network; explain an ensemble member, or use lrp-pairs")
    check_network_domain(model, molecules)
    parts = [explain(m, molecules, method, rule, steps, batch_size) for m in model.members]

    def mean(key: str) -> np.ndarray | None:
        return None if getattr(parts[0], key) is None else np.mean([getattr(p, key) for p in parts], 0)

    pairs = None
    if parts[0].pairs is not None:
        pairs = [np.mean([p.pairs[i] for p in parts], 0) for i in range(len(molecules))]
    return Explanation(
        method=method, molecules=molecules, relevance=mean("relevance"), prediction=mean("prediction"),
        reference=mean("reference"), bias=mean("bias"), pairs=pairs,
        spread=np.std([p.relevance for p in parts], 0),
    )  # fmt: skip


def explain(
    model: InteractionNetwork,
    molecules: Molecules | Sequence[ase.Atoms],
    method: str = "lrp",
    rule: Epsilon | Gamma | None = None,
    steps: int = 50,
    batch_size: int = 64,
    top: int | None = None,
) -> Explanation:
    """Explain the energies that ``model`` predicts for ``molecules``.

    Parameters
    ----------
    model : a trained `SchNet` or `DTNN` (left unchanged), or a `KRRModel` on cm, sorted-cm or
        bob features (explained with ``neuralized``, see `qmlx.explain.kernel`).
    molecules : `Molecules` or a list of ``ase.Atoms``, positions in Å. Molecules outside the
        model's domain raise `qmlx.errors.DomainError` as in prediction (unknown elements,
        atoms closer than 0.5 Å, periodic cells, another charge or spin).
    method : one of `METHODS` (see the module docstring), or ``neuralized`` for kernel models.
    rule : LRP rule for the linear layers: `Epsilon` (default, eps = 1e-9) or `Gamma`.
    steps : integration steps of ``integrated-gradients``.
    batch_size : molecules per batch (``lrp-pairs`` runs one molecule at a time).
    top : ``lrp-walks``: keep the ``top`` strongest walks per molecule (``None``: all); the atom
        relevances and ``walks_total`` are over all walks either way.
    """
    from qmlx.kernels.model import KRRModel
    from qmlx.nn.io import check_network_domain

    molecules = as_molecules(molecules)
    if isinstance(model, KRRModel):
        model.check_domain(molecules)
        if method not in ("lrp", "neuralized"):
            raise QmlxError(f"kernel models are explained with method 'neuralized', not {method!r}")
        from qmlx.explain.kernel import explain_krr

        relevance, padding, prediction, reference = explain_krr(model, molecules)
        return Explanation("neuralized", molecules, relevance, prediction, reference, padding=padding)
    if method not in METHODS:
        raise QmlxError(f"unknown explanation method {method!r}; expected one of {', '.join(METHODS)}")
    if isinstance(model, Ensemble):
        return _explain_ensemble(model, molecules, method, rule, steps, batch_size)
    if not isinstance(model, InteractionNetwork):
        raise QmlxError(f"explain() needs a SchNet or DTNN model, got {type(model).__name__}")
    check_network_domain(model, molecules)
    if method == "lrp-walks":
        from qmlx.explain.walks import lrp_walks

        walks = lrp_walks(model, molecules, rule=rule, top=top)
        atoms = explain(model, molecules, "lrp", rule=rule, batch_size=batch_size)
        atoms.method, atoms.walks = "lrp-walks", walks
        return atoms
    net = copy.deepcopy(model).double().eval()  # on the model's device
    for p in net.parameters():
        p.requires_grad_(False)
    rule = rule or Epsilon()
    cache = PairCache(molecules, net.cutoff, target=None, dtype=torch.float64).to(
        next(net.parameters()).device
    )
    size = 1 if method == "lrp-pairs" else batch_size
    parts = []
    for start in range(0, len(molecules), size):
        batch = cache.batch(np.arange(start, min(start + size, len(molecules))))
        parts.append(_explain_batch(net, batch, method, rule, steps))
    cat = lambda k: np.concatenate([p[k].detach().cpu().numpy() for p in parts])  # noqa: E731
    return Explanation(
        method=method,
        molecules=molecules,
        relevance=cat(0),
        prediction=cat(1),
        reference=cat(2),
        bias=cat(3) if parts[0][3] is not None else None,
        pairs=[p[4].cpu().numpy() for p in parts] if method == "lrp-pairs" else None,
    )
