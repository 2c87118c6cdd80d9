"""Layer-wise Relevance Propagation for the interaction networks (DTNN, SchNet).

LRP (Bach et al., PLoS ONE 2015; Montavon et al., Pattern Recognit. 2017) redistributes the
predicted energy layer by layer onto the atoms' initial embeddings. The rules live here, apart
from the models: a *relevance forward pass* recomputes the model's forward with the model's own
parameters, modified so that gradient x input of the result realizes the rules (Montavon et al.,
"Layer-wise relevance propagation: an overview", 2019):

- linear layers, ``z = W a + b``: the epsilon rule ``R_a = a W^T (R_z / (z + eps sign z))``, or with
  ``gamma > 0`` the gamma rule, generalized to signed inputs (activations here can be negative):
  the contributions ``a_i w_ij`` (and the bias) that share the sign of ``z_j`` are weighted by
  ``1 + gamma``;
- element-wise activations ``act(z)``: written ``z * (act(z) / (z + eps sign z))`` with the ratio
  held fixed, so relevance passes through unchanged;
- the multiplicative interactions (SchNet's filter, DTNN's distance factor): the geometry-dependent
  factor is held fixed and acts as a weight, the way LRP for LSTMs treats gates (Arras et al.
  2017), so relevance flows through atom features only;
- residual sums and the sum over atoms: relevance splits in proportion to the summands.

Every bias receives relevance ``b * (dz)``; it is reported per atom (the atom whose features the
biased layer computes), never hidden. What is explained is the energy relative to the output
head's per-element reference energies (fitted on the training data); with ``eps -> 0`` in float64,
``sum(relevance) + sum(bias_relevance) == energy - sum(reference)`` for every molecule.

The model is never modified: parameters are read, not changed, and nothing is hooked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qmlx.nn.batch import Batch
from qmlx.nn.layers import DTNNInteraction, SchNetInteraction, _symmetric_sum
from qmlx.nn.models import DTNN, InteractionNetwork, SchNet


@dataclass(frozen=True)
class Epsilon:
    """The epsilon rule: stabilize denominators by ``eps * sign(z)``."""

    eps: float = 1e-9


@dataclass(frozen=True)
class Gamma:
    """The gamma rule for linear layers: contributions ``a_i w_ij`` with the sign of ``z_j`` are
    weighted by ``1 + gamma`` (for positive inputs: weights ``W + gamma * max(W, 0)``), then epsilon."""

    gamma: float = 0.25
    eps: float = 1e-9


def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class RelevanceForward:
    """The relevance forward pass of one model on one batch.

    After `run`, ``x0`` (n_atoms, F) is the embedding leaf and ``biases`` lists ``(leaf, owner)``
    pairs: a bias broadcast to ``(rows, n)`` as its own leaf, and the atom index of each row.
    """

    def __init__(self, model: InteractionNetwork, rule: Epsilon | Gamma) -> None:
        if not isinstance(model, (SchNet, DTNN)):
            raise TypeError(f"LRP has rules for SchNet and DTNN, not {type(model).__name__}")
        self.model = model
        self.rule = rule
        self.biases: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- rules for the layer types -------------------------------------------------------
    def linear(self, layer: nn.Linear, a: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """``layer(a)`` for ``a (rows, n_in)`` whose rows belong to atoms ``owner (rows,)``."""
        W = layer.weight.detach()
        bias = None
        if layer.bias is not None:
            bias = layer.bias.detach().expand(a.shape[0], -1).clone().requires_grad_(True)
            self.biases.append((bias, owner))
        z = a @ W.T if bias is None else a @ W.T + bias
        if isinstance(self.rule, Gamma) and self.rule.gamma > 0:
            # generalized gamma rule for signed inputs: boost the contributions a_i w_ij (and b_j)
            # that share the sign of z_j
            ap, an, Wp, Wn = a.clamp(min=0), a.clamp(max=0), W.clamp(min=0), W.clamp(max=0)
            pos, neg = ap @ Wp.T + an @ Wn.T, ap @ Wn.T + an @ Wp.T
            if bias is not None:
                pos, neg = pos + bias.clamp(min=0), neg + bias.clamp(max=0)
            zg = z + self.rule.gamma * torch.where(z.detach() >= 0, pos, neg)
            return zg * (z / _stabilize(zg, self.rule.eps)).detach()
        return z

    def activation(self, act, z: torch.Tensor) -> torch.Tensor:
        """``act(z)`` with relevance passed through unchanged."""
        return z * (act(z) / _stabilize(z, self.rule.eps)).detach()

    def dense(self, layer, a: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        z = self.linear(layer, a, owner)
        return z if layer.activation is None else self.activation(layer.activation, z)

    # -- the two architectures -----------------------------------------------------------
    def schnet_update(self, block: SchNetInteraction, x, rbf, fcut, batch: Batch, atoms) -> torch.Tensor:
        w = block.filter(rbf, fcut).detach()  # geometry-dependent factor: a fixed weight
        h = self.linear(block.in2f, x, atoms)
        agg = _symmetric_sum(h[batch.idx_i] * w, h[batch.idx_j] * w, batch.idx_i, batch.idx_j, x.shape[0])
        return self.dense(block.dense, self.dense(block.f2out, agg, atoms), atoms)

    def dtnn_update(self, block: DTNNInteraction, x, rbf, batch: Batch, atoms) -> torch.Tensor:
        d = block.df(rbf).detach()  # geometry-dependent factor: a fixed weight
        c = self.linear(block.cf, x, atoms)
        i, j = batch.idx_i, batch.idx_j
        v_ji = self.activation(torch.tanh, self.linear(block.fc, c[j] * d, i))
        v_ij = self.activation(torch.tanh, self.linear(block.fc, c[i] * d, j))
        return _symmetric_sum(v_ij, v_ji, i, j, x.shape[0])

    def run(self, batch: Batch) -> torch.Tensor:
        """Atom energies ``(n_atoms,)`` in kcal/mol, computed through the rules."""
        model = self.model
        atoms = torch.arange(len(batch.Z), device=batch.Z.device)
        self.x0 = model.embed(batch.Z).detach().requires_grad_(True)
        x = self.x0
        with torch.no_grad():
            _, rbf, fcut = model.pair_features(batch)
        for block in model.interactions:
            if isinstance(block, SchNetInteraction):
                v = self.schnet_update(block, x, rbf, fcut, batch, atoms)
            else:
                v = self.dtnn_update(block, x, rbf, batch, atoms)
            x = x + v
        head = model.head
        hidden, out = head.mlp
        y = self.dense(out, self.dense(hidden, x, atoms), atoms).squeeze(-1)
        return y * head.scale[batch.Z].detach()


def lrp_atoms(
    model: InteractionNetwork, batch: Batch, rule: Epsilon | Gamma = Epsilon()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-order LRP of the molecular energies of ``batch``.

    Explains each atom energy relative to its element's reference energy (the output head's
    per-element offset, fitted on the training data): ``E_i - reference[Z_i]``.

    Returns ``(relevance, bias_relevance, reference, atom_energies)``, each ``(n_atoms,)`` in
    kcal/mol. ``relevance`` ends on each atom's initial embedding; per molecule
    ``sum(relevance + bias_relevance) == energy - sum(reference)`` (exactly for ``eps -> 0``), and
    ``atom_energies`` are the model's own, computed by the same pass.
    """
    fwd = RelevanceForward(model, rule)
    scaled = fwd.run(batch)
    leaves = [fwd.x0] + [b for b, _ in fwd.biases]
    grads = torch.autograd.grad(scaled.sum(), leaves)
    relevance = (fwd.x0 * grads[0]).sum(-1).detach()
    bias_rel = torch.zeros_like(relevance)
    for (leaf, owner), g in zip(fwd.biases, grads[1:]):
        bias_rel.index_add_(0, owner, (leaf * g).sum(-1).detach())
    reference = model.head.reference[batch.Z].detach()
    return relevance, bias_rel, reference, scaled.detach() + reference


def lrp_pairs(model: InteractionNetwork, batch: Batch, rule: Epsilon | Gamma = Epsilon()) -> torch.Tensor:
    """Second-order relevance ``P (n_atoms, n_atoms)``: ``P[i, j]`` is the relevance that atom
    ``i``'s embedding receives from atom ``j``'s energy contribution.

    It is GNN-LRP (Schnake et al., IEEE TPAMI 2022) with the walks through the interaction layers
    summed over their intermediate atoms, keeping their source (the embedding) and sink (the
    atom-wise output). Since the rules are linear in the relevance they propagate,
    ``P.sum(axis=1)`` equals the first-order relevance of `lrp_atoms`. Entries between atoms of
    different molecules are zero. Memory and time grow as n_atoms^2: use small batches.
    """
    fwd = RelevanceForward(model, rule)
    atom_e = fwd.run(batch)  # without the per-element reference, as in `lrp_atoms`
    n = len(atom_e)
    eye = torch.eye(n, dtype=atom_e.dtype, device=atom_e.device)
    (g,) = torch.autograd.grad(atom_e, fwd.x0, grad_outputs=eye, is_grads_batched=True)
    # g[j] is d(atom_e[j]) / d(x0); relevance of source i for sink j is x0_i . g[j, i]
    return torch.einsum("if,jif->ij", fwd.x0.detach(), g)
