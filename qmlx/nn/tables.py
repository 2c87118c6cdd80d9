"""Tables over distance: the interactions' distance-only factors read by linear interpolation.

An interaction's factor that depends on the pair distance alone (SchNet's filter ``W(d)``, DTNN's
``df(rbf(d))``) can be tabulated once on a uniform grid and read at every pair
(`RadialTables`), instead of a Gaussian expansion and one or two dense layers per pair.

- **Inference** (`inference_tables`): a fine table (``TABLE_POINTS_PER_WIDTH`` points per Gaussian
  width), built in float64 from the current weights, cached beside the model and rebuilt when the
  weights change; it agrees with the exact path to float32 rounding.
- **Training** (`training_tables`): built in every step on a coarser grid
  (``TRAIN_TABLE_POINTS_PER_WIDTH``) by the layers themselves, so the gradient reaches the weights
  through the grid values; only for batches with at least ``TRAIN_TABLE_MIN_PAIRS_PER_POINT``
  pairs per grid point (below that, computing the factors per pair is as fast).

A model takes part through `InteractionNetwork.radial_functions`, ``radial_stop``,
``_table_sources`` and ``_table_key`` (`qmlx.nn.models`).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable

import torch
from torch import nn

#: grid points of the tabulated inference tables per Gaussian width of the radial basis
TABLE_POINTS_PER_WIDTH = 400
#: fewest intervals of a table grid
TABLE_MIN_INTERVALS = 4096
#: grid points per Gaussian width of the tables a training step builds (see `forward_from`)
TRAIN_TABLE_POINTS_PER_WIDTH = 90
#: a training step reads tables only for batches with at least this many pairs per grid point
TRAIN_TABLE_MIN_PAIRS_PER_POINT = 2
#: per network: its inference tables, the settings and a copy of the weights they were built from
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Whether two lists of tensors agree in length, shape, dtype, device and every value."""
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.device == y.device and torch.equal(x, y)
        for x, y in zip(a, b)
    )


def grid_intervals(model, points_per_width: int) -> int:
    """Intervals of a table grid from 0 to ``model.radial_stop()`` with this many points per
    Gaussian width of the model's radial basis."""
    return math.ceil(model.radial_stop() * points_per_width / model.rbf.width)


def inference_tables(model) -> RadialTables:
    """The `RadialTables` of the tabulated inference path of ``model`` for its current weights.

    Built on first use (float64 evaluation by a copy of the model on a grid of
    ``TABLE_POINTS_PER_WIDTH`` points per Gaussian width, at least ``TABLE_MIN_INTERVALS``
    intervals, stored in the model's dtype on its device) and kept with a copy of the weights they
    read; any later change of those weights, dtype or device (an optimizer step,
    ``load_state_dict``, ``.to()``, an edit through ``.data``) makes the next call rebuild them.
    Checking costs one comparison per tensor. The tables live beside the model, not in it: copies,
    state dicts and saved files never carry them.
    """
    sources = [s.detach() for s in model._table_sources()]
    key = model._table_key()
    cached = _TABLES.get(model)
    if cached is not None:
        tables, old_key, snapshot = cached
        if old_key == key and _same_tensors(snapshot, sources):
            return tables
    n_intervals = max(TABLE_MIN_INTERVALS, grid_intervals(model, TABLE_POINTS_PER_WIDTH))
    centers = model.rbf.centers
    tables = RadialTables.evaluate(
        copy.deepcopy(model).double().radial_functions, model.radial_stop(), n_intervals,
        dtype=centers.dtype, device=centers.device,
    )  # fmt: skip
    _TABLES[model] = (tables, key, [s.clone() for s in sources])
    return tables


def training_tables(model, n_pairs: int) -> RadialTables | None:
    """Tables of ``model.radial_functions`` on ``TRAIN_TABLE_POINTS_PER_WIDTH`` points per Gaussian
    width, computed by the layers themselves (gradients flow to the weights), or ``None`` when a
    batch of ``n_pairs`` half pairs has fewer than ``TRAIN_TABLE_MIN_PAIRS_PER_POINT`` per grid point
    (computing the factors per pair is then as fast)."""
    n_intervals = grid_intervals(model, TRAIN_TABLE_POINTS_PER_WIDTH)
    if n_pairs < TRAIN_TABLE_MIN_PAIRS_PER_POINT * (n_intervals + 1):
        return None
    stop = model.radial_stop()
    centers = model.rbf.centers
    grid = torch.linspace(0.0, stop, n_intervals + 1, dtype=centers.dtype, device=centers.device)
    return RadialTables(model.radial_functions(grid), stop)


class _Interpolate(torch.autograd.Function):
    """``out[p] = sum_k weights[p, k] * table[idx[p, k]]`` with a fast gradient for the table.

    The forward pass is one ``embedding_bag``. Its gradient with respect to the table,
    ``grad_table[r] = sum over the reads (p, k) of row r of weights[p, k] * grad[p]``, is the same
    kind of read turned around: an ``embedding_bag`` over the rows of ``grad`` with one bag per
    table row, from `_turn_around`. ``embedding_bag``'s own backward sorts the indices in every
    call; here one sort serves every table of a step, and the rest is a fast forward read
    (docs/networks.md has the timing).
    """

    @staticmethod
    def forward(ctx, table, idx, weights, turned):
        ctx.turned = turned
        return nn.functional.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        pair, offsets, weights = ctx.turned
        grad_table = nn.functional.embedding_bag(
            pair, grad.contiguous(), offsets, per_sample_weights=weights.to(grad.dtype), mode="sum"
        )
        return grad_table, None, None, None


def _turn_around(
    idx: torch.Tensor, weights: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reads of ``idx (n_pairs, 2)`` with ``weights (n_pairs, 2)`` grouped by table row: the
    reading pair of each read ``(2 n_pairs,)``, sorted by row, the start of each row's group
    ``(n_rows,)`` and each read's weight ``(2 n_pairs,)``."""
    flat = idx.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_rows)
    return order // idx.shape[1], torch.cumsum(counts, 0) - counts, weights.flatten()[order]


class RadialTables:
    """Functions of the pair distance tabulated on one uniform grid, read by linear interpolation.

    The interactions need their distance-only factors (SchNet's filters, DTNN's ``df(rbf(d))``) at
    every pair; reading them from a table replaces a Gaussian expansion and one or two dense layers
    per pair by two table rows. The error of linear interpolation is at most
    ``step^2 / 8 * max|f''|``; with the step a small fraction of the Gaussian width it stays near
    the level of float32 rounding. Reading is differentiable with respect to the table values, so a
    table computed by the layers passes gradients on to their weights.

    Parameters
    ----------
    values : one tensor ``(n_intervals + 1, F_t)`` per function, its values at the distances
        ``d_k = k * stop / n_intervals`` Å, ``k = 0..n_intervals``.
    stop : the last grid distance in Å; past it each function keeps its last value (it must be
        constant there: 0 beyond a cosine cutoff, the bias beyond the Gaussians' support).
    """

    def __init__(self, values: list[torch.Tensor], stop: float) -> None:
        n = {v.shape[0] for v in values}
        if len(n) != 1 or min(n) < 2:
            raise ValueError("the tables need one common grid of two or more points")
        self.values = [v.contiguous() for v in values]
        self.n_intervals = n.pop() - 1
        self.stop = float(stop)
        self.inv_step = self.n_intervals / self.stop

    @classmethod
    @torch.no_grad()
    def evaluate(
        cls,
        functions: Callable[[torch.Tensor], list[torch.Tensor]],
        stop: float,
        n_intervals: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> RadialTables:
        """Tables of ``functions`` (float64 distances ``(n,)`` Å -> one ``(n, F_t)`` tensor per
        function), evaluated in float64 on ``n_intervals + 1`` points from 0 to ``stop`` Å and stored
        as ``dtype``."""
        grid = torch.linspace(0.0, float(stop), n_intervals + 1, dtype=torch.float64, device=device)
        return cls([v.to(dtype) for v in functions(grid)], stop)

    def __len__(self) -> int:
        return len(self.values)

    def locate(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For distances ``d (n_pairs,)`` Å: the two grid points around each, ``(n_pairs, 2)`` int64,
        and their interpolation weights ``(n_pairs, 2)`` (summing to 1)."""
        u = (d * self.inv_step).clamp_(0.0, float(self.n_intervals))
        lower = u.floor().clamp_(max=self.n_intervals - 1)
        frac = u - lower
        lower = lower.long()
        return torch.stack((lower, lower + 1), dim=1), torch.stack((1.0 - frac, frac), dim=1)

    def interpolate(self, where: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Every function at the distances that `locate` placed: ``(n_pairs, F_t)`` each;
        differentiable with respect to the table values."""
        idx, weights = where
        turned = None
        out = []
        for table in self.values:
            w = weights.to(table.dtype)
            if table.requires_grad and torch.is_grad_enabled():
                turned = turned or _turn_around(idx, weights, self.n_intervals + 1)
                out.append(_Interpolate.apply(table, idx, w, turned))
            else:
                out.append(nn.functional.embedding_bag(idx, table, per_sample_weights=w, mode="sum"))
        return out
