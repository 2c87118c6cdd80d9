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
import os
from collections.abc import Sequence
from dataclasses import dataclass

import ase
import numpy as np
import torch

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import QmlxError
from qmlx.explain.lrp import Epsilon, Gamma, RelevanceForward, lrp_atoms
from qmlx.nn.batch import Batch, PairCache
from qmlx.nn.layers import SchNetInteraction, _symmetric_sum
from qmlx.nn.models import DTNN, InteractionNetwork, SchNet

#: Largest number of dense walks ``n^(T+1)`` per molecule. Measured with qm7-schnet (F = 64, T = 3,
#: float64, one thread on a shared 2-core machine): 23 atoms (279,841 walks, the largest QM7
#: molecule) 0.2-0.8 s; 46 atoms (4.5e6) 2.2 s; 56 atoms (9.8e6) 4.4 s and 1.0 GB peak memory;
#: 70 atoms (2.4e7) 8 s and 1.5 GB. Time and memory grow linearly in the number of walks, about
#: 0.4 us and 100 bytes per walk; 1e7 keeps one molecule near 5 s and 1 GB and admits every QM7
#: and QM9 molecule at T <= 3 (QM9: 29 atoms, 7.1e5 walks).
MAX_WALKS = 10_000_000
#: diverging colormap of `plot_walks`: red raises the energy, blue lowers it
CMAP = "RdBu_r"

__all__ = ["MAX_WALKS", "WalkResult", "lrp_walks", "masked_walk_relevance", "plot_walks"]


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
        self.t = 0

    def _masks(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(n_pairs,)`` of the messages ``idx_j -> idx_i`` and ``idx_i -> idx_j`` kept at this
        block (the residual is kept in `run`)."""
        src, dst = self.walk[self.t], self.walk[self.t + 1]
        return (batch.idx_j == src) & (batch.idx_i == dst), (batch.idx_i == src) & (batch.idx_j == dst)

    def schnet_update(self, block, x, rbf, fcut, batch, atoms):
        to_i, to_j = self._masks(batch)
        w = block.filter(rbf, fcut).detach()
        h = self.linear(block.in2f, x, atoms)
        msg_ji = _keep(h[batch.idx_j] * w, to_i)  # j -> i
        msg_ij = _keep(h[batch.idx_i] * w, to_j)  # i -> j
        agg = _symmetric_sum(msg_ij, msg_ji, batch.idx_i, batch.idx_j, x.shape[0])
        return self.dense(block.dense, self.dense(block.f2out, agg, atoms), atoms)

    def dtnn_update(self, block, x, rbf, batch, atoms):
        to_i, to_j = self._masks(batch)
        d = block.df(rbf).detach()
        c = self.linear(block.cf, x, atoms)
        i, j = batch.idx_i, batch.idx_j
        v_ji = _keep(self.activation(torch.tanh, self.linear(block.fc, c[j] * d, i)), to_i)
        v_ij = _keep(self.activation(torch.tanh, self.linear(block.fc, c[i] * d, j)), to_j)
        return _symmetric_sum(v_ij, v_ji, i, j, x.shape[0])

    def run(self, batch: Batch) -> torch.Tensor:
        model = self.model
        atoms = torch.arange(len(batch.Z))
        self.x0 = model.embed(batch.Z).detach().requires_grad_(True)
        x = self.x0
        with torch.no_grad():
            _, rbf, fcut = model.pair_features(batch)
        for t, block in enumerate(model.interactions):
            self.t = t
            if isinstance(block, SchNetInteraction):
                v = self.schnet_update(block, x, rbf, fcut, batch, atoms)
            else:
                v = self.dtnn_update(block, x, rbf, batch, atoms)
            keep_self = self.walk[t] == self.walk[t + 1]
            x = (x if keep_self else x.detach()) + v
        hidden, out = model.head.mlp
        y = self.dense(out, self.dense(hidden, x, atoms), atoms).squeeze(-1)
        return y * model.head.scale[batch.Z].detach()


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
    fwd: RelevanceForward, block, x: torch.Tensor, rbf, fcut, src: torch.Tensor, dst: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobians ``(n_directed, F, F)`` of the messages ``src -> dst`` of one block of the relevance
    pass, ``d v_dst / d x_src``, at features ``x (n, F)``, and the block's update ``v (n, F)``."""
    n = x.shape[0]
    atoms = torch.arange(n)
    if isinstance(block, SchNetInteraction):
        w = block.filter(rbf, fcut).detach().repeat(2, 1)  # (n_directed, n_filters), a fixed weight

        def post_fn(a):
            return fwd.dense(block.dense, fwd.dense(block.f2out, a, atoms), atoms)

        pre = _rowwise_jacobian(lambda a: fwd.linear(block.in2f, a, atoms), x)  # (n, nf, F)
        h = fwd.linear(block.in2f, x, atoms).detach()
        agg = torch.zeros(n, w.shape[1], dtype=x.dtype).index_add_(0, dst, h[src] * w)
        post = _rowwise_jacobian(post_fn, agg)  # (n, F, nf)
        return torch.einsum("pfk,pk,pkg->pfg", post[dst], w, pre[src]), post_fn(agg).detach()
    d = block.df(rbf).detach().repeat(2, 1)  # (n_directed, n_factors), a fixed weight

    def pair_fn(a):
        return fwd.activation(torch.tanh, fwd.linear(block.fc, a * d, dst))

    pre = _rowwise_jacobian(lambda a: fwd.linear(block.cf, a, atoms), x)  # (n, nf, F)
    c = fwd.linear(block.cf, x, atoms).detach()
    pair = _rowwise_jacobian(pair_fn, c[src])  # (n_directed, F, nf)
    v = torch.zeros_like(x).index_add_(0, dst, pair_fn(c[src]).detach())
    return torch.einsum("pfk,pkg->pfg", pair, pre[src]), v


def _block_jacobians(
    model: InteractionNetwork, batch: Batch, rule: Epsilon | Gamma
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The relevance pass of a one-molecule batch, block by block, as Jacobians.

    Returns ``x0 (n, F)``; per block ``J[i, j] = d x^t_i / d x^{t-1}_j`` ``(n, n, F, F)`` of the
    relevance pass (`RelevanceForward`: the same rules and wiring), built from its factors: a block
    sends the message ``j -> i`` through a per-atom map of ``x_j`` (SchNet: ``in2f``; DTNN: ``cf``),
    a per-pair map (SchNet: the fixed filter ``W(d_ij)``; DTNN: ``tanh(fc(. * d_ij))``) and, for
    SchNet, a per-atom map of the sum at ``i`` (``f2out``, ``dense``), so
    ``J[i, j] = post_i . pair_ij . pre_j`` plus the identity (residual) for ``i = j``. Also returns
    the head gradients ``g (n, F)`` (kcal/mol per unit of feature) of each atom's ``E_i - ref(Z_i)``
    w.r.t. its own final features.
    """
    fwd = RelevanceForward(model, rule)
    n = len(batch.Z)
    atoms = torch.arange(n)
    x0 = model.embed(batch.Z).detach()
    x = x0
    with torch.no_grad():
        _, rbf, fcut = model.pair_features(batch)
    # directed messages src -> dst: each half pair in both directions
    src = torch.cat([batch.idx_j, batch.idx_i])
    dst = torch.cat([batch.idx_i, batch.idx_j])
    eye = torch.eye(x0.shape[1], dtype=x0.dtype)
    jacobians = []
    for block in model.interactions:
        msg, v = _message_jacobians(fwd, block, x, rbf, fcut, src, dst)
        J = torch.zeros(n, n, *eye.shape, dtype=x.dtype)
        J.index_put_((dst, src), msg, accumulate=True)
        J[atoms, atoms] += eye  # the residual: the message i -> i
        jacobians.append(J)
        x = x + v
        fwd.biases.clear()
    leaf = x.clone().requires_grad_(True)
    hidden, out = model.head.mlp
    scaled = fwd.dense(out, fwd.dense(hidden, leaf, atoms), atoms).squeeze(-1) * model.head.scale[batch.Z]
    (g,) = torch.autograd.grad(scaled.sum(), leaf)  # atom-wise head: row i is d E_i / d x_i
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
    model : a trained `SchNet` or `DTNN`; explained on a float64 copy, left unchanged.
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

    if not isinstance(model, (SchNet, DTNN)):
        raise QmlxError(f"relevant walks need a SchNet or DTNN model, got {type(model).__name__}")
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


# -- picture ----------------------------------------------------------------------------------


def _label(atoms: ase.Atoms, i: int) -> str:
    return f"{atoms[i].symbol}{i}"


def _walk_curve(xy: np.ndarray, walk: np.ndarray, rank: int, radii: np.ndarray) -> np.ndarray:
    """(m, 2) polyline of one walk on the 2-D drawing: a quadratic Bezier arc per step between two
    atoms (curvature varied by ``rank`` so overlapping walks stay apart), one petal-shaped loop per
    run of self-steps (longer for longer runs), trimmed where it enters the first and last atoms'
    discs (``radii``)."""
    centre = xy.mean(axis=0)
    t = np.linspace(0.0, 1.0, 40)[:, None]
    parts = []
    s = 0
    while s < len(walk) - 1:
        a = xy[walk[s]]
        run = 0
        while s + run < len(walk) - 1 and walk[s + run + 1] == walk[s]:
            run += 1
        if run:  # the residual, ``run`` blocks in a row
            out = a - centre
            theta = np.arctan2(out[1], out[0]) if np.hypot(*out) > 1e-6 else np.pi / 2
            theta += 0.5 * ((rank % 5) - 2) + 1.2 * s
            angle = theta + (t - 0.5) * 1.4
            length = (0.45 + 0.15 * run) * np.sin(np.pi * t)
            parts.append(a + length * np.hstack([np.cos(angle), np.sin(angle)]))
            s += run
            continue
        c = xy[walk[s + 1]]
        d = c - a
        rad = (0.12 + 0.06 * (rank % 4)) * (1 if rank % 2 == 0 else -1)
        ctrl = (a + c) / 2 + rad * np.array([-d[1], d[0]])
        parts.append((1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * c)
        s += 1
    curve = np.concatenate(parts)
    start = np.linalg.norm(curve - xy[walk[0]], axis=1) > radii[walk[0]]
    end = np.linalg.norm(curve - xy[walk[-1]], axis=1) > radii[walk[-1]]
    first = int(np.argmax(start))
    last = len(curve) - int(np.argmax(end[::-1]))
    return curve[first:last]


def plot_walks(
    atoms: ase.Atoms, result: WalkResult, path: str | os.PathLike, top: int = 12, title: str | None = None
) -> None:
    """Draw the ``top`` strongest walks of ``result`` on the molecule ``atoms`` (positions in Å) and
    write a PNG (or PDF, by suffix) atomically.

    Left: the molecule projected on its two principal axes (`qmlx.explain.plot.project_2d`), bonds
    in grey, atoms labelled element + index; each walk one stroke from a dot at ``i_0`` through
    ``i_1, ...`` to an arrowhead at ``i_T``, a run of self-steps (``i_t = i_{t+1}``, the residual) a
    loop out of the atom and back, longer for more steps; red raises the energy, blue lowers it, width grows with ``|relevance|``,
    colour bar in kcal/mol. Right: the same walks as a bar chart, labelled with their atoms.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyArrowPatch
    from matplotlib.path import Path as MplPath

    from qmlx._io import savefig_atomic
    from qmlx.chem.bonds import bonds
    from qmlx.explain.plot import project_2d

    k = min(top, len(result.relevance))
    walks, rel = result.walks[:k], result.relevance[:k]
    cmap = ScalarMappable(cmap=CMAP).get_cmap()
    limit = float(np.abs(rel).max()) if k else 1.0
    norm = Normalize(-limit, limit)  # centred at zero
    xy = project_2d(atoms.positions)
    radii = np.where(atoms.numbers == 1, 0.22, 0.3)
    fig = Figure(figsize=(13, 6.2), layout="constrained")
    ax, bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1.0]})
    b = bonds(atoms)
    if len(b):
        ax.add_collection(LineCollection(xy[b], colors="0.8", linewidths=2.5, zorder=1))
    for z, w in enumerate(range(k - 1, -1, -1)):  # strongest drawn last, on top
        color = cmap(norm(rel[w]))
        width = 0.8 + 3.2 * abs(rel[w]) / limit
        curve = _walk_curve(xy, walks[w], w, radii)
        if len(curve) < 2:
            continue
        ax.plot(*curve[0], "o", color=color, ms=2 + width, zorder=5 + z)
        ax.add_patch(
            FancyArrowPatch(
                path=MplPath(curve),
                arrowstyle="-|>",
                mutation_scale=6 + 2.5 * width,
                color=color,
                lw=width,
                alpha=0.9,
                zorder=5 + z,
                capstyle="round",
                joinstyle="round",
            )  # fmt: skip
        )
    for i in range(len(atoms)):
        ax.add_patch(Circle(xy[i], radii[i], fc="white", ec="0.35", lw=1.0, zorder=100))
        ax.text(*xy[i], _label(atoms, i), ha="center", va="center", fontsize=7, zorder=101)
    pad = 1.2
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        f"top {k} of {result.n_walks:,} walks i0 → … → i{result.order} (● start, ▶ end)", fontsize=10
    )
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=CMAP), ax=ax, location="bottom", shrink=0.6, pad=0.02,
        label="walk relevance [kcal/mol]",
    )  # fmt: skip
    pos = np.arange(k)[::-1]
    bar.barh(pos, rel, color=cmap(norm(rel)), edgecolor="0.3", lw=0.5)
    bar.set_yticks(pos, [" → ".join(_label(atoms, int(i)) for i in seq) for seq in walks], fontsize=8)
    bar.axvline(0, color="0.3", lw=0.8)
    bar.set_xlabel("walk relevance [kcal/mol]")
    explained = result.prediction - result.reference
    bar.set_title(
        f"E − Σref = {explained:.2f} kcal/mol = all walks {result.walks_total:.2f} + bias {result.bias_total:.2f}",
        fontsize=9,
    )
    fig.suptitle(title or f"{atoms.get_chemical_formula()}: relevant walks (GNN-LRP)", fontsize=11)
    savefig_atomic(fig, path, dpi=130)
