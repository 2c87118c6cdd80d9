"""Shared fixtures.

Tests that need the real QM7 file use the ``qm7`` fixture. When ``CI=true`` a missing file is a
failure, not a skip: a CI run that silently skips them would hide a broken set-up.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from qmlx.data import Molecules
from qmlx.errors import DataNotFoundError


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but QM7 is not available: {reason}")
    pytest.skip(f"QM7 not available: {reason}")


@pytest.fixture(scope="session")
def qm7_path():
    """Path of qm7.mat from $QMLX_DATA_DIR or the cache; never downloads."""
    from qmlx.data.qm7 import locate_qm7

    try:
        return locate_qm7(download_if_missing=False)
    except DataNotFoundError as err:
        _missing(str(err))


@pytest.fixture(scope="session")
def qm7(qm7_path) -> Molecules:
    """The full QM7 set (positions in Å, atomization energies in kcal/mol)."""
    from qmlx.data import load_qm7

    return load_qm7(qm7_path)


@pytest.fixture
def small_molecules() -> Molecules:
    """Three tiny molecules (methane, water, ammonia; positions in Å) with a made-up target."""
    Z = [6, 1, 1, 1, 1, 8, 1, 1, 7, 1, 1, 1]
    R = np.array(
        [
            [0.0, 0.0, 0.0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629], [-0.629, 0.629, -0.629],
            [0.629, -0.629, -0.629],
            [0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469],
            [0.0, 0.0, 0.0], [0.0, -0.938, -0.381], [0.812, 0.469, -0.381], [-0.812, 0.469, -0.381],
        ]
    )  # fmt: skip
    return Molecules(
        Z=Z,
        R=R,
        n_atoms=[5, 3, 4],
        targets={"energy": [-1.0, -2.0, -3.0]},
        units={"energy": "kcal/mol"},
        ids=["methane", "water", "ammonia"],
        name="small",
    )
