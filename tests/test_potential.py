"""Local chemical potentials: the cutoff, known values from independent forward passes,
vectorization, invariance, the probe's domain, and the drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from conftest import randomized

from qmlx.errors import DataFormatError, DomainError, QmlxError
from qmlx.explain.potential import (
    chemical_potential,
    isolated_probe_energy,
    molecule_plane,
    plot_potential,
    potential_plane,
    potential_surface,
)
from qmlx.nn import DTNN, Batch, SchNet, load_network

ONE_BLOCK = {
    "schnet": lambda: randomized(lambda: SchNet(n_features=16, n_interactions=1, cutoff=5.0)),
    "dtnn": lambda: randomized(lambda: DTNN(n_features=8, n_factors=12, n_interactions=1, cutoff=4.0)),
}
SHIPPED = ("qm7-schnet", "qm7-dtnn")


@pytest.fixture(scope="module")
def shipped():
    return {name: load_network(name) for name in SHIPPED}


@pytest.fixture(scope="module")
def pyridine():
    return molecule("C5H5N")


def _probe_points(atoms, rng, n: int) -> np.ndarray:
    """``(n, 3)`` points 1 to 3.5 Å from the molecule's centre region, at least 0.8 Å from atoms."""
    out = []
    while len(out) < n:
        p = atoms.positions.mean(axis=0) + rng.normal(size=3) * 2.0
        if np.linalg.norm(atoms.positions - p, axis=1).min() > 0.8:
            out.append(p)
    return np.array(out)


@pytest.mark.parametrize("name", SHIPPED)
def test_probe_beyond_the_cutoff_is_exactly_zero(name, shipped, pyridine):
    model = shipped[name]
    far = pyridine.positions.mean(axis=0) + np.array([[0.0, 0.0, 60.0], [70.0, 0.0, 0.0]])
    assert np.array_equal(chemical_potential(model, pyridine, far), [0.0, 0.0])
    if name == "qm7-schnet":  # the cosine cutoff: Omega goes to 0 continuously at 5 Å
        n_idx = 0
        outward = pyridine.positions[n_idx] / np.linalg.norm(pyridine.positions[n_idx])
        just_inside = pyridine.positions[n_idx] + (model.cutoff - 1e-3) * outward
        assert abs(chemical_potential(model, pyridine, just_inside[None])[0]) < 1e-4


@pytest.mark.parametrize("name", sorted(ONE_BLOCK))
def test_one_block_equals_the_probe_energy_of_a_full_forward_pass(name, pyridine):
    """With one interaction block the probe's final features depend only on the initial features
    of the molecule's atoms and its own, so the full forward pass of molecule + probe (where the
    probe also sends messages) gives the same probe atom energy: a known value."""
    model = ONE_BLOCK[name]().double()
    rng = np.random.default_rng(0)
    points = _probe_points(pyridine, rng, 6)
    omega = chemical_potential(model, pyridine, points)
    e_iso = isolated_probe_energy(model)
    n = len(pyridine)
    for p, value in zip(points, omega):
        Z = torch.tensor(list(pyridine.numbers) + [1])
        R = torch.tensor(np.vstack([pyridine.positions, p]))
        i, j = torch.triu_indices(n + 1, n + 1, offset=1)
        keep = (R[i] - R[j]).norm(dim=-1) < model.cutoff
        batch = Batch(Z, R, torch.zeros(n + 1, dtype=torch.long), i[keep], j[keep], 1)
        with torch.no_grad():
            expected = float(model(batch).atom_energies[-1]) - e_iso
        assert value == pytest.approx(expected, abs=1e-9)
    assert np.abs(omega).max() > 0.01  # a non-trivial value was compared


def _by_hand(model, atoms, point: np.ndarray) -> float:
    """Omega_H at one point, with the messages into the probe written out from the layers."""
    model = model.double()
    Z = torch.as_tensor(atoms.numbers)
    R = torch.as_tensor(atoms.positions)
    n = len(atoms)
    i, j = torch.triu_indices(n, n, offset=1)
    keep = (R[i] - R[j]).norm(dim=-1) < model.cutoff
    with torch.no_grad():
        features = model(Batch(Z, R, torch.zeros(n, dtype=torch.long), i[keep], j[keep], 1)).features
        d = (R - torch.as_tensor(point)).norm(dim=-1)
        near = d < model.cutoff
        rbf = model.rbf(d[near])
        x = model.embed(torch.tensor([1]))
        for t, block in enumerate(model.interactions):
            x_mol = features[t][near]
            if isinstance(model, SchNet):
                w = block.filter(rbf, model.cutoff_fn(d[near]))
                agg = (block.in2f(x_mol) * w).sum(0, keepdim=True)
                x = x + block.dense(block.f2out(agg))
            else:
                x = x + torch.tanh(block.fc(block.cf(x_mol) * block.df(rbf))).sum(0, keepdim=True)
        return float(model.head(x, torch.tensor([1]))[0]) - isolated_probe_energy(model)


@pytest.mark.parametrize("name", SHIPPED)
def test_vectorized_equals_point_by_point_and_messages_by_hand(name, shipped, pyridine):
    model = shipped[name]
    points = _probe_points(pyridine, np.random.default_rng(1), 12)
    omega = chemical_potential(model, pyridine, points, chunk=5)
    single = np.array([chemical_potential(model, pyridine, p[None])[0] for p in points])
    np.testing.assert_allclose(omega, single, rtol=0, atol=1e-9)
    import copy

    hand = [_by_hand(copy.deepcopy(model), pyridine, p) for p in points[:4]]
    np.testing.assert_allclose(omega[:4], hand, rtol=0, atol=1e-9)
    assert model.embedding.weight.dtype == torch.float32  # the model passed in is left unchanged


@pytest.mark.parametrize("name", SHIPPED)
def test_invariant_under_rotation_and_translation(name, shipped, pyridine):
    rng = np.random.default_rng(2)
    points = _probe_points(pyridine, rng, 15)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    shift = rng.normal(size=3) * 5.0
    moved = pyridine.copy()
    moved.positions = pyridine.positions @ q.T + shift
    a = chemical_potential(shipped[name], pyridine, points)
    b = chemical_potential(shipped[name], moved, points @ q.T + shift)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)


def test_probes_on_top_of_atoms_are_masked(shipped, pyridine):
    points = pyridine.positions[:2] + np.array([[0.0, 0.0, 0.49], [0.0, 0.51, 0.0]])
    omega = chemical_potential(shipped["qm7-schnet"], pyridine, points)
    assert np.isnan(omega[0]) and np.isfinite(omega[1])


def test_probe_element_and_input_errors(shipped, pyridine):
    model = shipped["qm7-schnet"]
    p = np.array([[0.0, 0.0, 3.0]])
    with pytest.raises(QmlxError, match="unknown probe element 'Xx'"):
        chemical_potential(model, pyridine, p, probe="Xx")
    with pytest.raises(DomainError, match=r"probe element F is not one the model knows \(H, C, N, O, S\)"):
        chemical_potential(model, pyridine, p, probe="F")
    with pytest.raises(QmlxError, match="symbol or a nuclear charge"):
        chemical_potential(model, pyridine, p, probe=1.0)
    assert chemical_potential(model, pyridine, p, probe=6) == pytest.approx(
        chemical_potential(model, pyridine, p, probe="c")
    )
    with pytest.raises(DataFormatError):
        chemical_potential(model, pyridine, np.zeros((3, 2)))
    with pytest.raises(QmlxError, match="one molecule at a time"):
        chemical_potential(model, [pyridine, pyridine], p)
    assert chemical_potential(model, pyridine, np.zeros((0, 3))).shape == (0,)


def test_plane_surface_and_plot(shipped, pyridine, tmp_path):
    model = shipped["qm7-dtnn"]
    plane = potential_plane(model, pyridine, spacing=0.4, offset=1.0)
    basis = plane.basis
    assert plane.X.shape == plane.Y.shape == plane.values.shape
    heights = basis.project(pyridine.positions)[:, 2]
    np.testing.assert_allclose(heights, -1.0, atol=1e-9)  # a planar molecule lies 1 Å below
    grid = basis.to_3d(plane.X, plane.Y).reshape(-1, 3)
    np.testing.assert_allclose(chemical_potential(model, pyridine, grid[:7]), plane.values.ravel()[:7])
    assert molecule_plane(pyridine).normal @ basis.normal == pytest.approx(1.0)
    surface = potential_surface(model, pyridine, offset=1.0, density=0.5)
    d = np.linalg.norm(surface.points[:, None] - pyridine.positions[None], axis=-1)
    assert d.min() > 1.0 + 1.2 - 1e-6  # at least vdW radius (H: 1.2 Å) + offset from every atom
    assert surface.values.shape == (len(surface.points),) and np.isfinite(surface.values).all()
    out = plot_potential(pyridine, [plane, surface], tmp_path / "map.png", titles=["plane", "surface"])
    assert out.stat().st_size > 1000
