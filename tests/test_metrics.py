"""`qmlx.metrics.metrics` against closed-form values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qmlx.metrics import metrics


def test_errors_of_a_hand_made_example():
    # errors -3, 0, 4, -1: |e| = 3, 0, 4, 1; MAE 8/4 = 2, RMSE sqrt(26/4), max 4
    m = metrics(np.array([1.0, 2.0, 7.0, 3.0]), np.array([4.0, 2.0, 3.0, 4.0]))
    assert m == {"mae": 2.0, "rmse": pytest.approx(math.sqrt(6.5)), "max_abs_error": 4.0, "n": 4}


def test_a_constant_offset_gives_equal_mae_rmse_and_max():
    ref = np.linspace(-10.0, 10.0, 7)
    m = metrics(ref + 0.5, ref)
    assert m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(0.5)
    assert m["max_abs_error"] == pytest.approx(0.5) and m["n"] == 7


def test_perfect_predictions_and_float32_inputs():
    ref = np.array([1.5, -2.25, 3.0], dtype=np.float32)
    assert metrics(ref, ref) == {"mae": 0.0, "rmse": 0.0, "max_abs_error": 0.0, "n": 3}
    assert isinstance(metrics(ref, ref)["mae"], float)


def test_empty_and_mismatched_inputs():
    m = metrics(np.zeros(0), np.zeros(0))
    assert m["n"] == 0 and all(math.isnan(m[k]) for k in ("mae", "rmse", "max_abs_error"))
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        metrics(np.zeros(3), np.zeros(2))
