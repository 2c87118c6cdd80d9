"""Sums over atoms, pairs and molecules: the scatter operations every message pass shares.

All run on flat tensors (one row per atom, pair or molecule of a `qmlx.nn.Batch`) with
``index_add_``, whose backward is a gather: they serve training, inference and explanations alike.
"""

from __future__ import annotations

import torch


def segment_sum(values: torch.Tensor, index: torch.Tensor, n_segments: int) -> torch.Tensor:
    """``out[s] = sum of values[r] over the rows r with index[r] == s``.

    values : (n_rows, ...) any trailing shape; index : (n_rows,) int64 in ``[0, n_segments)``.
    Returns ``(n_segments, ...)`` in the dtype and on the device of ``values``; empty segments are 0.
    """
    out = torch.zeros((n_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def symmetric_sum(
    msg_ij: torch.Tensor, msg_ji: torch.Tensor, idx_i: torch.Tensor, idx_j: torch.Tensor, n_atoms: int
) -> torch.Tensor:
    """Sum messages over a half pair list (``i < j``) in both directions.

    ``msg_ji`` (n_half, F) is the message from j to i, ``msg_ij`` the one from i to j. Returns
    ``(n_atoms, F)`` with ``out[a] = sum of the messages that reach atom a``.
    """
    out = torch.zeros(n_atoms, msg_ji.shape[1], dtype=msg_ji.dtype, device=msg_ji.device)
    out.index_add_(0, idx_i, msg_ji)
    out.index_add_(0, idx_j, msg_ij)
    return out


def directed_pairs(idx_i: torch.Tensor, idx_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(src, dst)`` (2 n_half,) of the half pair list ``i < j`` taken in both directions: first
    every ``j -> i``, then every ``i -> j`` (so per-pair tensors repeat as ``t.repeat(2, 1)``)."""
    return torch.cat([idx_j, idx_i]), torch.cat([idx_i, idx_j])
