"""Relevant walks: GNN-LRP for the interaction networks (SchNet, DTNN).

GNN-LRP (Schnake et al., "Higher-order explanations of graph neural networks via relevant walks",
IEEE TPAMI 44, 7581-7596, 2022) gives relevance to *walks* through the interaction blocks. For a
network with T interaction blocks a walk is a sequence of atoms ``(i_0, i_1, ..., i_T)``: atom
``i_0``'s initial embedding, passed by block 1 into atom ``i_1``, ..., by block T into atom ``i_T``,
whose atom-wise output gives the energy contribution. The residual path ``x_i + v_i`` counts as
the message ``i -> i``, so ``(i, i, ..., i)`` is what atom i's embedding gives its own energy
without any other atom in between.

Definition. The relevance of a walk is the LRP relevance of `qmlx.explain.lrp` (the same rules,
the same *relevance forward pass* on a float64 copy, whose gradient x input realizes the rules)
computed with every message masked out of the backward pass except, at block t, the one from
``i_{t-1}`` to ``i_t``, and with only atom ``i_T``'s energy explained: forward values stay those of
the unmasked pass, gradients flow along the walk only. `masked_walk_relevance` computes one walk
literally that way. Because the rules are linear in the relevance they pass on, the masked
gradient is a product of per-block Jacobians of the relevance pass,

    R(i_0..i_T) = x0[i_0] . (J^1[i_1, i_0])^T ... (J^T[i_T, i_{T-1}])^T g[i_T],

with ``J^t[i, j] = d x^t_i / d x^{t-1}_j`` ``(F, F)`` (the identity on the diagonal included) and
``g[i] = d (E_i - ref(Z_i)) / d x^T_i``, which `lrp_walks` evaluates for all walks at once. Both
rules of `qmlx.explain.lrp` (`Epsilon`, `Gamma`) are supported.

Conservation. Summed over all walks the relevances give the first-order LRP relevance of the
embeddings, ``sum(walks) = sum_i R_i`` (``lrp``), exactly up to rounding; summed over all but
``(i_0, i_T)`` they give ``lrp-pairs`` ``P[i_0, i_T]``, over all but ``i_0`` the ``lrp`` relevance
of atom ``i_0``. **Bias relevance is not attributed to walks**: a bias enters the network inside a
block, not at an atom's embedding, so no walk starts from it. It is reported separately as
``bias_total`` (the sum of ``Explanation.bias`` of ``lrp``), and
``walks_total + bias_total = E - sum_i ref(Z_i)`` (the LRP total; exact as ``eps -> 0``).

Pruning. Walks are listed only along the model's pair list (atoms closer than its cutoff: 5 Å
for SchNet, the DTNN's own cutoff) plus the residual self-steps. This is exact for both
architectures: no message is computed between atoms beyond the cutoff, so every walk through
such a step has relevance exactly 0 and is left out of ``walks`` (it still counts in
``walks_total``, as 0).

Cost. With n atoms, F features, T blocks and p pairs within the cutoff: the block Jacobians take
``O(T p F^3)`` time (factored per atom and per pair, see `_block_jacobians`) and ``8 T n^2 F^2``
bytes; the dense walk tensor (``n^(T+1)`` entries) is formed by meeting prefix products from the
embeddings and suffix products from the outputs at block ``m = T // 2``, ``O(n^(T+1) F)`` time plus
``O(n^(T-m+1) F^2)`` for the halves; listing and sorting the walks is ``O(n^(T+1) log n)``. Time and
memory thus grow as ``n^(T+1)``: molecules with more than `MAX_WALKS` = 1e7 dense walks are refused
with a `QmlxError` (see `MAX_WALKS` for the measurement behind the number).
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
from qmlx.explain.lrp import BlockRule, Epsilon, Gamma, RelevanceForward, block_rule, check_rules, lrp_atoms
from qmlx.nn.batch import Batch, PairCache
from qmlx.nn.models import InteractionNetwork
from qmlx.nn.ops import directed_pairs, segment_sum

#: Largest number of dense walks ``n^(T+1)`` per molecule. Measured with qm7-schnet (F = 64, T = 3,
#: float64, one thread on a shared 2-core machine): 23 atoms (279,841 walks, the largest QM7
#: molecule) 0.2-0.8 s; 46 atoms (4.5e6) 2.2 s; 56 atoms (9.8e6) 4.4 s and 1.0 GB peak memory;
#: 70 atoms (2.4e7) 8 s and 1.5 GB. Time and memory grow linearly in the number of walks, about
#: 0.4 us and 100 bytes per walk; 1e7 keeps one molecule near 5 s and 1 GB and admits every QM7
#: and QM9 molecule at T <= 3 (QM9: 29 atoms, 7.1e5 walks).
MAX_WALKS = 10_000_000

__all__ = ["MAX_WALKS", "WalkResult", "lrp_walks", "masked_walk_relevance"]


@dataclass
class WalkResult:
    """Relevant walks of one molecule (kcal/mol).

    walks : (k, T+1) int64 atom indices ``(i_0, ..., i_T)`` within the molecule, T = number of
        interaction blocks; all walks along the model's pair list, or the ``top`` strongest.
    relevance : (k,) relevance of each walk in kcal/mol, sorted by ``|relevance|`` descending.
    walks_total : sum of the relevance of *all* walks (before truncation), kcal/mol; equals the sum
        of the first-order ``lrp`` atom relevances.
    bias_total : relevance absorbed by biases (not attributed to walks), kcal/mol.
    prediction : predicted energy E in kcal/mol.
    reference : ``sum_i ref(Z_i)``, what E is explained against, kcal/mol.
    n_walks : number of walks along the pair list (before truncation to ``top``).
    tensor : the dense walk tensor ``(n,) * (T+1)`` in kcal/mol (``full=True``), else ``None``;
        entries for walks through pairs beyond the cutoff are 0.
    """

    walks: np.ndarray
    relevance: np.ndarray
    walks_total: float
    bias_total: float
    prediction: float
    reference: float
    n_walks: int
    tensor: np.ndarray | None = None
    unit: str = "kcal/mol"

    @property
    def order(self) -> int:
        """T, the number of interaction blocks a walk passes."""
        return self.walks.shape[1] - 1

    def conservation_error(self) -> float:
        """``walks_total + bias_total - (prediction - reference)`` in kcal/mol."""
        return self.walks_total + self.bias_total - (self.prediction - self.reference)


# -- the literal definition, one walk at a time -----------------------------------------------


def _keep(msg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``msg`` with its gradient kept only where ``mask`` (rows) is true; values unchanged."""
    return torch.where(mask.unsqueeze(-1), msg, msg.detach())


class _MaskedForward(RelevanceForward):
    """The relevance forward pass with, at block t, only the message ``walk[t-1] -> walk[t]``
    (or the residual, when the two are equal) left in the backward pass."""

    def __init__(self, model, rule, walk: Sequence[int]) -> None:
        super().__init__(model, rule)
        self.walk = [int(a) for a in walk]

    def message(self, rule: BlockRule, block, h, radial, src, dst) -> torch.Tensor:
        kept = (src == self.walk[self.t]) & (dst == self.walk[self.t + 1])
        return _keep(super().message(rule, block, h, radial, src, dst), kept)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.walk[self.t] == self.walk[self.t + 1] else x.detach()


def masked_walk_relevance(
    model: InteractionNetwork, batch: Batch, walk: Sequence[int], rule: Epsilon | Gamma | None = None
) -> float:
    """Relevance (kcal/mol) of one walk ``(i_0, ..., i_T)`` of a one-molecule ``batch``, computed
    literally: the relevance pass with every message but ``i_{t-1} -> i_t`` masked out of the
    backward pass at each block t, explaining atom ``i_T``'s energy only. One backward pass per walk:
    the reference that `lrp_walks` is checked against. ``model`` should be a float64 copy."""
    if len(walk) != len(model.interactions) + 1:
        raise QmlxError(
            f"a walk through {len(model.interactions)} blocks has {len(model.interactions) + 1} atoms"
        )
    fwd = _MaskedForward(model, rule or Epsilon(), walk)
    out = fwd.run(batch)
    (g,) = torch.autograd.grad(out[walk[-1]], fwd.x0, allow_unused=True)
    return 0.0 if g is None else float((fwd.x0[walk[0]] * g[walk[0]]).sum().detach())


# -- all walks at once ------------------------------------------------------------------------


def _rowwise_jacobian(fn, a: torch.Tensor) -> torch.Tensor:
    """Jacobians ``(rows, n_out, n_in)`` of a row-wise map ``fn: (rows, n_in) -> (rows, n_out)`` (row r
    of the output depends on row r of the input only), at ``a``: n_out batched backward passes."""
    leaf = a.detach().requires_grad_(True)
    out = fn(leaf)
    rows, n_out = out.shape
    eye = torch.eye(n_out, dtype=out.dtype).unsqueeze(1).expand(n_out, rows, n_out)
    (g,) = torch.autograd.grad(out, leaf, grad_outputs=eye, is_grads_batched=True)
    return g.permute(1, 0, 2)


def _message_jacobians(
    fwd: RelevanceForward, block, x: torch.Tensor, radial: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobians ``(n_directed, F, F)`` of the messages ``src -> dst`` of one block of the relevance
    pass, ``d v_dst / d x_src``, at features ``x (n, F)``, and the block's update ``v (n, F)``.

    A block's `BlockRule` has three parts, so ``J = update'[dst] . message'[pair] . source'[src]``, each
    factor a row-wise Jacobian."""
    n = x.shape[0]
    atoms = torch.arange(n)
    rule = block_rule(block)
    pre = _rowwise_jacobian(lambda a: rule.source(fwd, block, a, atoms), x)  # (n, k, F)
    h = rule.source(fwd, block, x, atoms).detach()
    pair = _rowwise_jacobian(lambda a: rule.message(fwd, block, a, radial, dst), h[src])  # (p, k', k)
    agg = segment_sum(rule.message(fwd, block, h[src], radial, dst).detach(), dst, n)
    msg = torch.einsum("pkj,pjf->pkf", pair, pre[src])  # (p, k', F)
    if rule.update is None:
        return msg, agg
    post = _rowwise_jacobian(lambda a: rule.update(fwd, block, a, atoms), agg)  # (n, F, k')
    return torch.einsum("pfk,pkg->pfg", post[dst], msg), rule.update(fwd, block, agg, atoms).detach()


def _block_jacobians(
    model: InteractionNetwork, batch: Batch, rule: Epsilon | Gamma
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The relevance pass of a one-molecule batch, block by block, as Jacobians.

    Returns ``x0 (n, F)``; per block ``J[i, j] = d x^t_i / d x^{t-1}_j`` ``(n, n, F, F)`` of the
    relevance pass (`RelevanceForward`: the same rules and wiring), built from the three parts of
    the block's `BlockRule` (`_message_jacobians`) plus the identity (residual) for ``i = j``. Also
    returns the head gradients ``g (n, F)`` (kcal/mol per unit of feature) of each atom's
    ``E_i - ref(Z_i)`` w.r.t. its own final features.
    """
    fwd = RelevanceForward(model, rule)
    n = len(batch.Z)
    atoms = torch.arange(n)
    x0 = model.embed(batch.Z).detach()
    x = x0
    src, dst = directed_pairs(batch.idx_i, batch.idx_j)
    with torch.no_grad():
        radial = [r.repeat(2, 1) for r in model.radial_functions(model.distances(batch))]
    eye = torch.eye(x0.shape[1], dtype=x0.dtype)
    jacobians = []
    for t, block in enumerate(model.interactions):
        msg, v = _message_jacobians(fwd, block, x, radial[t], src, dst)
        J = torch.zeros(n, n, *eye.shape, dtype=x.dtype)
        J.index_put_((dst, src), msg, accumulate=True)
        J[atoms, atoms] += eye  # the residual: the message i -> i
        jacobians.append(J)
        x = x + v
        fwd.biases.clear()
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fwd.head(leaf, batch.Z, atoms).sum(), leaf)  # row i is d E_i / d x_i
    return x0, jacobians, g


def _walk_tensor(x0: torch.Tensor, jacobians: list[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
    """Dense walk relevances ``(n,) * (T+1)``, indexed ``[i_0, ..., i_T]``, from the pieces of
    `_block_jacobians`: prefix products up to block ``m = T // 2`` meet suffix products there."""
    n, T = x0.shape[0], len(jacobians)
    m = T // 2
    prefix = x0  # (n,)*(t+1) + (F,): J^t .. J^1 x0[i_0], ending at i_t
    for J in jacobians[:m]:
        prefix = torch.einsum("...ag,bafg->...abf", prefix, J)
    suffix = g  # (n,)*(T-t+1) + (F,): (J^{t+1})^T .. (J^T)^T g[i_T], starting at i_t
    for J in reversed(jacobians[m:]):
        suffix = torch.einsum("bafg,b...f->ab...g", J, suffix)
    F = x0.shape[1]
    R = torch.einsum("pmf,msf->pms", prefix.reshape(-1, n, F), suffix.reshape(n, -1, F))
    return R.reshape((n,) * (T + 1))


def _valid_walks(n: int, T: int, batch: Batch) -> np.ndarray:
    """Bool ``(n,) * (T+1)``: every step is a pair of the model's pair list or a self-step."""
    A = np.eye(n, dtype=bool)
    i, j = batch.idx_i.numpy(), batch.idx_j.numpy()
    A[i, j] = A[j, i] = True
    valid = np.ones((n,) * (T + 1), dtype=bool)
    for t in range(1, T + 1):
        shape = [1] * (T + 1)
        shape[t - 1] = shape[t] = n
        valid &= A.T.reshape(shape)  # A[i_t, i_{t-1}] placed on axes (t-1, t)
    return valid


def _check_size(n: int, T: int, max_walks: int) -> None:
    if n ** (T + 1) > max_walks:
        raise QmlxError(
            f"{n} atoms and {T} interaction blocks make {n ** (T + 1):,} walks, above the limit of "
            f"{max_walks:,}; explain smaller molecules or use method 'lrp-pairs'"
        )


def _molecule_walks(
    model: InteractionNetwork, batch: Batch, rule: Epsilon | Gamma, top: int | None, full: bool
) -> WalkResult:
    n, T = len(batch.Z), len(model.interactions)
    x0, jacobians, g = _block_jacobians(model, batch, rule)
    R = _walk_tensor(x0, jacobians, g).numpy()
    relevance, bias, reference, atom_energies = lrp_atoms(model, batch, rule)
    index = np.flatnonzero(_valid_walks(n, T, batch).ravel())
    n_walks = len(index)
    values = R.ravel()[index]
    if top is not None and top < len(index):
        keep = np.argpartition(-np.abs(values), top)[:top] if top > 0 else np.zeros(0, dtype=np.int64)
        index, values = index[keep], values[keep]
    order = np.argsort(-np.abs(values), kind="stable")
    walks = np.stack(np.unravel_index(index[order], R.shape), axis=1).astype(np.int64)
    return WalkResult(
        walks=walks.reshape(-1, T + 1),
        relevance=values[order],
        walks_total=float(R.sum()),
        bias_total=float(bias.sum()),
        prediction=float(atom_energies.sum()),
        reference=float(reference.sum()),
        n_walks=n_walks,
        tensor=R if full else None,
    )


def lrp_walks(
    model: InteractionNetwork,
    molecules: Molecules | Sequence[ase.Atoms] | ase.Atoms,
    rule: Epsilon | Gamma | None = None,
    top: int | None = None,
    full: bool = False,
    max_walks: int = MAX_WALKS,
) -> list[WalkResult]:
    """Relevant walks (GNN-LRP, Schnake et al. 2022) of each molecule, see the module docstring.

    Parameters
    ----------
    model : a trained interaction network (SchNet, DTNN, or any whose blocks have a
        `qmlx.explain.lrp.BlockRule`); explained on a float64 copy, left unchanged.
    molecules : `Molecules`, an ``ase.Atoms`` or a list of them, positions in Å; checked against
        the model's domain as in prediction (`qmlx.errors.DomainError`).
    rule : `Epsilon` (default, eps = 1e-9) or `Gamma`, as for ``lrp``.
    top : keep only the ``top`` walks of largest ``|relevance|``; ``None`` keeps all walks along the
        pair list. ``walks_total`` always sums all of them.
    full : also return the dense walk tensor ``(n,) * (T+1)`` of each molecule.
    max_walks : refuse (`QmlxError`) molecules with more than this many dense walks ``n^(T+1)``.

    Returns one `WalkResult` per molecule, relevances in kcal/mol; per molecule
    ``walks_total + bias_total == prediction - reference`` (the LRP total).
    """
    from qmlx.nn.io import check_network_domain

    check_rules(model)
    if top is not None and top < 0:
        raise QmlxError(f"top must be a non-negative number of walks, got {top}")
    molecules = as_molecules(molecules)
    T = len(model.interactions)
    for n in np.unique(molecules.n_atoms):
        _check_size(int(n), T, max_walks)
    check_network_domain(model, molecules)
    net = copy.deepcopy(model).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cache = PairCache(molecules, net.cutoff, target=None, dtype=torch.float64)
    with torch.enable_grad():  # the relevance pass is differentiated, also under torch.no_grad()
        return [
            _molecule_walks(net, cache.batch(np.array([k])), rule or Epsilon(), top, full)
            for k in range(len(cache))
        ]
