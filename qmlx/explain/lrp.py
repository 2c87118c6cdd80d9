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

How each type of interaction block runs in the relevance pass is a table, `BLOCK_RULES`, from
block type to a `BlockRule`: the block's update split into a per-atom map of the sending atom, a
message along each directed pair, and a per-atom map of the summed messages. A new architecture
registers its block type once (`register_block`); `lrp`, `lrp-pairs` and `lrp-walks` then work on
it unchanged.

The model is never modified: parameters are read, not changed, and nothing is hooked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qmlx.errors import QmlxError
from qmlx.nn.batch import Batch
from qmlx.nn.layers import DTNNInteraction, SchNetInteraction
from qmlx.nn.models import InteractionNetwork
from qmlx.nn.ops import directed_pairs, segment_sum


def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class _Rule:
    """What every rule shares: element-wise activations pass relevance through unchanged."""

    eps: float

    def linear(self, a: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``z = a W^T + b`` for ``a (rows, n_in)``, ``W (n_out, n_in)``, ``bias (rows, n_out)`` or
        ``None``, written so that gradient x input of the result realizes the rule."""
        raise NotImplementedError

    def activation(self, act: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """``act(z)`` with the ratio ``act(z) / z`` held fixed: relevance passes through unchanged."""
        return z * (act(z) / _stabilize(z, self.eps)).detach()


@dataclass(frozen=True)
class Epsilon(_Rule):
    """The epsilon rule: stabilize denominators by ``eps * sign(z)``."""

    eps: float = 1e-9

    def linear(self, a: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return a @ W.T if bias is None else a @ W.T + bias


@dataclass(frozen=True)
class Gamma(_Rule):
    """The gamma rule for linear layers: contributions ``a_i w_ij`` with the sign of ``z_j`` are
    weighted by ``1 + gamma`` (for positive inputs: weights ``W + gamma * max(W, 0)``), then epsilon."""

    gamma: float = 0.25
    eps: float = 1e-9

    def linear(self, a: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        z = a @ W.T if bias is None else a @ W.T + bias
        if self.gamma <= 0:
            return z
        # generalized gamma rule for signed inputs: boost the contributions a_i w_ij (and b_j)
        # that share the sign of z_j
        ap, an, Wp, Wn = a.clamp(min=0), a.clamp(max=0), W.clamp(min=0), W.clamp(max=0)
        pos, neg = ap @ Wp.T + an @ Wn.T, ap @ Wn.T + an @ Wp.T
        if bias is not None:
            pos, neg = pos + bias.clamp(min=0), neg + bias.clamp(max=0)
        zg = z + self.gamma * torch.where(z.detach() >= 0, pos, neg)
        return zg * (z / _stabilize(zg, self.eps)).detach()


# -- the block table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockRule:
    """How the relevance pass runs one type of interaction block, whose update is
    ``v_i = update(sum over pairs j -> i of message(source(x)_j, radial_ij))``.

    source : ``(fwd, block, x (n_atoms, F), atoms (n_atoms,)) -> h (n_atoms, k)``, a per-atom map of
        the sending atom's features.
    message : ``(fwd, block, h_src (p, k), radial (p, r), dst (p,)) -> m (p, k')``, the message along
        each directed pair; row-wise (row q depends on row q of ``h_src`` only). ``radial`` is the
        model's distance factor of the pair (`InteractionNetwork.radial_functions`), held fixed;
        ``dst`` owns the biases of the message.
    update : ``(fwd, block, agg (n_atoms, k'), atoms) -> v (n_atoms, F)``, a per-atom map of the
        summed messages, or ``None`` for ``v = agg``.

    Every map runs its layers through ``fwd.linear``, ``fwd.dense`` and ``fwd.activation`` of the
    `RelevanceForward` ``fwd``, so that the rules apply.
    """

    source: Callable
    message: Callable
    update: Callable | None = None


#: interaction block type -> how the relevance pass runs it
BLOCK_RULES: dict[type[nn.Module], BlockRule] = {
    SchNetInteraction: BlockRule(
        source=lambda fwd, block, x, atoms: fwd.linear(block.in2f, x, atoms),
        message=lambda fwd, block, h, w, dst: h * w,  # the filter W(d): a fixed weight
        update=lambda fwd, block, agg, atoms: fwd.dense(
            block.dense, fwd.dense(block.f2out, agg, atoms), atoms
        ),
    ),
    DTNNInteraction: BlockRule(
        source=lambda fwd, block, x, atoms: fwd.linear(block.cf, x, atoms),
        # the distance factor df(rbf(d)): a fixed weight
        message=lambda fwd, block, c, d, dst: fwd.activation(torch.tanh, fwd.linear(block.fc, c * d, dst)),
    ),
}


def register_block(block_type: type[nn.Module], rule: BlockRule) -> None:
    """Teach the relevance pass (``lrp``, ``lrp-pairs``, ``lrp-walks``) a new interaction block type."""
    BLOCK_RULES[block_type] = rule


def block_rule(block: nn.Module) -> BlockRule:
    """The `BlockRule` of ``block``'s type (or of its nearest registered base class)."""
    for cls in type(block).__mro__:
        if cls in BLOCK_RULES:
            return BLOCK_RULES[cls]
    raise QmlxError(
        f"no relevance rule for interaction blocks of type {type(block).__name__}; register one with "
        "qmlx.explain.lrp.register_block"
    )


def check_rules(model: nn.Module) -> None:
    """Raise `QmlxError` unless ``model`` is an `InteractionNetwork` whose every block has a rule."""
    if not isinstance(model, InteractionNetwork):
        raise QmlxError(f"relevance propagation explains interaction networks, not {type(model).__name__}")
    for block in model.interactions:
        block_rule(block)


class RelevanceForward:
    """The relevance forward pass of one model on one batch.

    After `run`, ``x0`` (n_atoms, F) is the embedding leaf and ``biases`` lists ``(leaf, owner)``
    pairs: a bias broadcast to ``(rows, n)`` as its own leaf, and the atom index of each row.
    Subclasses may override `message` (how the messages of a block leave the pass) and `residual`.
    """

    def __init__(self, model: InteractionNetwork, rule: Epsilon | Gamma) -> None:
        check_rules(model)
        self.model = model
        self.rule = rule
        self.biases: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.t = 0  # the block being run

    # -- the layers, through the rule ----------------------------------------------------------------
    def linear(self, layer: nn.Linear, a: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """``layer(a)`` for ``a (rows, n_in)`` whose rows belong to atoms ``owner (rows,)``."""
        bias = None
        if layer.bias is not None:
            bias = layer.bias.detach().expand(a.shape[0], -1).clone().requires_grad_(True)
            self.biases.append((bias, owner))
        return self.rule.linear(a, layer.weight.detach(), bias)

    def activation(self, act, z: torch.Tensor) -> torch.Tensor:
        """``act(z)`` with relevance passed through unchanged."""
        return self.rule.activation(act, z)

    def dense(self, layer, a: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        z = self.linear(layer, a, owner)
        return z if layer.activation is None else self.activation(layer.activation, z)

    # -- one block ---------------------------------------------------------------------------------
    def message(
        self,
        rule: BlockRule,
        block,
        h: torch.Tensor,
        radial: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
    ) -> torch.Tensor:
        """The messages ``(p, k')`` along the directed pairs ``src -> dst``."""
        return rule.message(self, block, h[src], radial, dst)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """What the residual connection passes on (``x`` itself)."""
        return x

    def update(self, block, x: torch.Tensor, radial: torch.Tensor, src, dst, atoms) -> torch.Tensor:
        """The block's update ``v (n_atoms, F)`` from ``x`` and the fixed per-directed-pair ``radial``."""
        rule = block_rule(block)
        h = rule.source(self, block, x, atoms)
        agg = segment_sum(self.message(rule, block, h, radial, src, dst), dst, x.shape[0])
        return agg if rule.update is None else rule.update(self, block, agg, atoms)

    def run(self, batch: Batch) -> torch.Tensor:
        """Atom energies ``(n_atoms,)`` in kcal/mol minus the element references, through the rules."""
        model = self.model
        atoms = torch.arange(len(batch.Z), device=batch.Z.device)
        self.x0 = model.embed(batch.Z).detach().requires_grad_(True)
        x = self.x0
        src, dst = directed_pairs(batch.idx_i, batch.idx_j)
        with torch.no_grad():
            radial = [r.repeat(2, 1) for r in model.radial_functions(model.distances(batch))]
        for t, block in enumerate(model.interactions):
            self.t = t
            x = self.residual(x) + self.update(block, x, radial[t], src, dst, atoms)
        return self.head(x, batch.Z, atoms)

    def head(self, x: torch.Tensor, Z: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
        """The atom-wise output head ``(n_atoms,)`` (without the per-element reference)."""
        hidden, out = self.model.head.mlp
        y = self.dense(out, self.dense(hidden, x, atoms), atoms).squeeze(-1)
        return y * self.model.head.scale[Z].detach()


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
