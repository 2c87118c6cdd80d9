"""Shared fixtures and markers.

Tests that need the real QM7 file use the ``qm7`` fixture. When ``CI=true`` a missing file is a
failure, not a skip: a CI run that silently skips them would hide a broken set-up.

Every test that uses a real data set (`DATA_FIXTURES`, directly or through another fixture) is
marked ``data``; tests that take more than a few seconds are marked ``slow`` where they are
defined. ``python -m pytest -m "not data and not slow"`` runs the rest in well under a minute.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from qmlx.data import Molecules
from qmlx.errors import DataNotFoundError

#: fixtures that read a real data set (QM7 and the qm7-pbe0 folder from $QMLX_DATA_DIR, QM9)
DATA_FIXTURES = frozenset({"qm7", "qm7_path", "qm9", "pbe0", "pbe0_dir"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``data`` every test that uses one of `DATA_FIXTURES`, directly or indirectly."""
    for item in items:
        if DATA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


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


@pytest.fixture(scope="session")
def qm9(tmp_path_factory) -> Molecules:
    """QM9 from the qm9pack extra (a failure, not a skip, under CI=true), read through a fresh cache."""
    try:
        from qmlx.data.qm9 import qm9pack_files

        qm9pack_files()
    except Exception as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but qm9pack is not installed: {err}")
        pytest.skip(str(err))
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("QMLX_CACHE_DIR")
    os.environ["QMLX_CACHE_DIR"] = str(cache)
    try:
        from qmlx.data import load_qm9

        yield load_qm9()
    finally:
        if old is None:
            del os.environ["QMLX_CACHE_DIR"]
        else:
            os.environ["QMLX_CACHE_DIR"] = old


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


def grid_molecules(n_mol: int = 40, seed: int = 0) -> Molecules:
    """Small random molecules of H, C, O on a 1.2 Å grid (atoms at least 1 Å apart, inside every
    model's domain), with a made-up energy target ``energy`` in kcal/mol."""
    rng = np.random.default_rng(seed)
    grid = 1.2 * np.stack(np.meshgrid(*[np.arange(3)] * 3), -1).reshape(-1, 3)
    n_atoms = rng.integers(3, 6, n_mol)
    R = np.concatenate([grid[rng.choice(len(grid), n, replace=False)] for n in n_atoms])
    R += rng.uniform(-0.05, 0.05, R.shape)
    Z = rng.choice([1, 6, 8], n_atoms.sum())
    e = -10.0 * n_atoms + rng.normal(size=n_mol)
    return Molecules(
        Z=Z, R=R, n_atoms=n_atoms, targets={"energy": e}, units={"energy": "kcal/mol"}, name="syn"
    )


@pytest.fixture
def grid_set_file(tmp_path):
    """`grid_molecules` saved as a qmlx HDF5 store."""
    from qmlx.data import save_molecules

    return save_molecules(tmp_path / "syn.h5", grid_molecules())


def randomized(build):
    """The network ``build()`` makes, with non-trivial weights, biases, references and scale (as
    after training), in eval mode; seeded, so every call gives the same model."""
    import torch

    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        model.head.reference[[1, 6, 7, 8]] = torch.tensor([-5.0, -30.0, -40.0, -50.0], dtype=torch.float64)
        model.head.scale.fill_(3.0)
    return model.eval()
