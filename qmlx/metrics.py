"""Regression errors of predictions against references: one function for every model and report."""

from __future__ import annotations

import numpy as np


def metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | int]:
    """Errors of predictions ``pred`` (n,) against references ``ref`` (n,), in their common unit.

    Returns ``mae`` (mean absolute error), ``rmse`` (root mean squared error), ``max_abs_error``
    (the largest absolute error) and ``n`` (the number of pairs). The errors carry the unit of the
    inputs (kcal/mol for energies in kcal/mol); they are computed in float64. With ``n = 0`` the
    errors are ``nan``; a ``nan`` in either input makes them ``nan``.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"{len(pred)} predictions but {len(ref)} references")
    if len(pred) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "max_abs_error": float("nan"), "n": 0}
    abs_err = np.abs(pred - ref)
    return {
        "mae": float(np.mean(abs_err)),
        "rmse": float(np.sqrt(np.mean(abs_err**2))),
        "max_abs_error": float(np.max(abs_err)),
        "n": len(pred),
    }
