"""Kernel (KRR) explanations: features map onto atoms, conservation against the empty molecule,
no relevance on padding, equal relevance for symmetry-equivalent atoms (synthetic and QM7 models)."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.build import molecule

from qmlx.data import Molecules
from qmlx.explain import explain

REPRESENTATIONS = {"sorted-cm": "laplacian", "bob": "laplacian", "cm": "gaussian"}


def spread_positions(rng, n: int, scale: float, min_distance: float = 0.7) -> np.ndarray:
    """(n, 3) random positions in Å with no two atoms closer than ``min_distance``."""
    while True:
        R = rng.normal(size=(n, 3)) * scale
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)[np.triu_indices(n, 1)]
        if d.min() > min_distance:
            return R


def chair_cyclohexane(cc: float = 1.53, ch: float = 1.09, angle: float = 111.0) -> ase.Atoms:
    """C6H12 in the chair form (D3d), ring axis along z, positions in Å.

    Carbons alternate at heights ±h on a circle of radius r (C–C = ``cc``, C–C–C = ``angle``
    degrees); each carbon has an axial hydrogen along ±z and an equatorial one along minus the
    sum of its other three bond directions. Returns atoms ordered C0..C5, then (axial, equatorial)
    per carbon.
    """
    k = np.arange(6)

    def ring(h: float) -> np.ndarray:
        r = np.sqrt(cc**2 - 4 * h * h)
        return np.stack([r * np.cos(k * np.pi / 3), r * np.sin(k * np.pi / 3), h * (-1.0) ** k], axis=1)

    def ccc(h: float) -> float:
        C = ring(h)
        u, v = C[5] - C[0], C[1] - C[0]
        return np.degrees(np.arccos(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))

    lo, hi = 0.01, 0.7  # bisection: the ring angle shrinks as the pucker h grows
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ccc(mid) > angle else (lo, mid)
    C = ring(0.5 * (lo + hi))
    H = []
    for i in range(6):
        axial = np.array([0.0, 0.0, (-1.0) ** i])
        bonds = [(C[i - 1] - C[i]) / cc, (C[(i + 1) % 6] - C[i]) / cc, axial]
        equatorial = -np.sum(bonds, axis=0)
        H += [C[i] + ch * axial, C[i] + ch * equatorial / np.linalg.norm(equatorial)]
    return ase.Atoms("C6H12", positions=np.vstack([C, H]))


def equivalent_sets(atoms: ase.Atoms) -> list[np.ndarray]:
    """Symmetry-equivalent atoms by construction: per element, and axial/equatorial hydrogens of
    chair cyclohexane (axial C–H bonds lie along z)."""
    Z = atoms.numbers
    if atoms.get_chemical_formula() != "C6H12":
        return [np.flatnonzero(Z == z) for z in np.unique(Z)]
    R = atoms.positions
    axial = np.array([abs(R[i, 2] - R[(i - 6) // 2, 2]) > 0.9 if Z[i] == 1 else False for i in range(len(Z))])
    return [np.flatnonzero(Z == 6), np.flatnonzero(axial), np.flatnonzero((Z == 1) & ~axial)]


@pytest.fixture(scope="module")
def krr_models():
    """KRR models on 30 random H/C/O molecules for every supported representation, and 5 of them."""
    from qmlx.kernels.training import train_krr

    rng = np.random.default_rng(3)
    atoms = [
        ase.Atoms(numbers=rng.choice([1, 6, 8], n), positions=spread_positions(rng, n, 1.4))
        for n in rng.integers(3, 8, size=30)
    ]
    train = Molecules.from_atoms(atoms)
    train.targets["energy"] = rng.normal(-500, 50, len(train))
    train.units["energy"] = "kcal/mol"
    fit = {
        name: train_krr(
            train,
            np.arange(len(train)),
            representation=name,
            kernel=kernel,
            sigma=50.0,
            lam=1e-6,
            target="energy",
        )[0]
        for name, kernel in REPRESENTATIONS.items()
    }
    fit["sorted-cm+elements"] = train_krr(
        train,
        np.arange(len(train)),
        representation="sorted-cm",
        sigma=50.0,
        lam=1e-6,
        target="energy",
        baseline="elements",
    )[0]
    return fit, train.subset(np.arange(5))


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_feature_atoms_point_at_the_coulomb_entries(name, krr_models):
    from qmlx.represent._base import coulomb_matrices

    models, mols = krr_models
    model = models[name]
    X = model.representation.transform(mols)
    owners = model.representation.feature_atoms(mols)
    M = coulomb_matrices(mols)
    for m in range(len(mols)):
        a, b = owners[m, :, 0], owners[m, :, 1]
        real = a >= 0
        np.testing.assert_allclose(X[m, real], M[m, a[real], b[real]])
        assert (X[m, ~real] == 0).all()


@pytest.mark.parametrize("name", [*sorted(REPRESENTATIONS), "sorted-cm+elements"])
def test_kernel_explanation_conserves_prediction_minus_empty_molecule(name, krr_models):
    models, mols = krr_models
    model = models[name]
    e = explain(model, mols, "neuralized")
    assert e.method == "neuralized"
    np.testing.assert_allclose(e.prediction, model.predict_molecules(mols))
    # the reference is the kernel part's prediction for all-zero features (no atoms)
    empty = model.regressor.predict(np.zeros((1, model.regressor.X_fit_.shape[1])))
    np.testing.assert_allclose(e.reference, empty[0], rtol=1e-10)
    np.testing.assert_array_equal(e.padding, 0.0)
    explained = e.prediction - e.reference
    np.testing.assert_array_less(np.abs(e.conservation_error()), 1e-9 * np.abs(explained) + 1e-9)


def test_element_baseline_is_carried_by_the_atoms(krr_models):
    models, mols = krr_models
    with_base = explain(models["sorted-cm+elements"], mols, "neuralized")
    base = models["sorted-cm+elements"].baseline_energies(mols)
    sums = np.bincount(mols.mol_index, weights=with_base.relevance - base)
    kernel_part = with_base.prediction - np.bincount(mols.mol_index, weights=base)
    np.testing.assert_allclose(sums, kernel_part - with_base.reference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_padding_features_carry_no_relevance(name, krr_models):
    from qmlx.explain.kernel import feature_relevance

    models, mols = krr_models
    X = models[name].representation.transform(mols)
    R, _ = feature_relevance(models[name], X)
    assert (X == 0).any()
    np.testing.assert_array_equal(R[X == 0], 0.0)


@pytest.mark.parametrize("name", ["sorted-cm", "bob"])
def test_relevance_follows_the_atoms_when_they_are_reordered(name, krr_models):
    models, mols = krr_models
    rng = np.random.default_rng(0)
    perms = [rng.permutation(n) for n in mols.n_atoms]
    shuffled = Molecules.from_atoms([a[p] for a, p in zip(mols.to_atoms(), perms)])
    e, f = explain(models[name], mols, "neuralized"), explain(models[name], shuffled, "neuralized")
    for i, p in enumerate(perms):
        np.testing.assert_allclose(f.molecule(i), e.molecule(i)[p], rtol=1e-9, atol=1e-9)


def test_symmetry_classes_are_the_point_group_orbits():
    from qmlx.explain.kernel import molecule_symmetry_classes

    atoms = [molecule("C6H6"), molecule("CH4"), chair_cyclohexane(), molecule("CH3CH2OH")]
    labels = molecule_symmetry_classes(Molecules.from_atoms(atoms))
    offsets = np.cumsum([0] + [len(a) for a in atoms])
    for a, lo, hi in zip(atoms[:3], offsets, offsets[1:]):
        expected = {frozenset(s) for s in equivalent_sets(a)}
        found = {frozenset(np.flatnonzero(labels[lo:hi] == v)) for v in np.unique(labels[lo:hi])}
        assert found == expected
    # trans-ethanol (Cs): the mirror swaps the two methylene hydrogens and the two out-of-plane
    # methyl hydrogens, and fixes every other atom
    ethanol = labels[offsets[3] :]
    assert (
        sorted(np.bincount(ethanol - ethanol.min())[np.unique(ethanol - ethanol.min())]) == [1] * 5 + [2] * 2
    )


@pytest.fixture(scope="module")
def qm7_krr(qm7):
    """Sorted-CM and Bag-of-Bonds KRR on 2,000 molecules of QM7 fold 0's training part."""
    from qmlx.kernels.training import train_krr

    train = qm7.folds[0][0][:2000]
    grids = {"sorted-cm": (1600.0, 1e-10), "bob": (3200.0, 1e-4)}
    return {
        name: train_krr(qm7, train, representation=name, kernel="laplacian", sigma=sigma, lam=lam)[0]
        for name, (sigma, lam) in grids.items()
    }


SYMMETRIC = {
    "benzene": lambda: molecule("C6H6"),
    "methane": lambda: molecule("CH4"),
    "cyclohexane": chair_cyclohexane,
}


@pytest.mark.parametrize("mol", sorted(SYMMETRIC))
@pytest.mark.parametrize("name", ["sorted-cm", "bob"])
def test_qm7_krr_gives_equivalent_atoms_equal_relevance(name, mol, qm7_krr):
    atoms = SYMMETRIC[mol]()
    e = explain(qm7_krr[name], [atoms], "neuralized")
    r = e.molecule(0)
    scale = np.abs(r).max()
    for members in equivalent_sets(atoms):
        assert np.ptp(r[members]) <= 0.01 * scale, (mol, members, r[members])
    assert abs(e.padding[0]) <= 0.1 * np.abs(r).sum()
    explained = e.prediction[0] - e.reference[0]
    assert abs(e.conservation_error()[0]) <= 1e-6 * abs(explained)
