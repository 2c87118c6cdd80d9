"""Representations: invariances, known values, shapes and the Bag of Bonds layout policy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from qmlx.data import Molecules
from qmlx.represent import (
    BagOfBonds,
    CoulombMatrix,
    Eigenspectrum,
    RandomCoulombMatrix,
    RepresentationError,
    SortedCoulombMatrix,
    coulomb_matrices,
    make_representation,
)
from qmlx.units import ANGSTROM_TO_BOHR


def random_molecules(n_mol: int = 6, seed: int = 0, max_atoms: int = 9) -> Molecules:
    """Random, well-separated atoms (no symmetric ties), positions in Å."""
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(3, max_atoms + 1, n_mol)
    Z = rng.choice([1, 6, 7, 8, 16], size=n_atoms.sum())
    R = rng.normal(scale=1.5, size=(n_atoms.sum(), 3))
    return Molecules(Z=Z, R=R, n_atoms=n_atoms, name="random")


def transformed(mols: Molecules, seed: int = 1) -> Molecules:
    """Each molecule with its atoms permuted, rotated and translated."""
    rng = np.random.default_rng(seed)
    Z, R = [], []
    for lo, hi in zip(mols.offsets[:-1], mols.offsets[1:]):
        perm = rng.permutation(hi - lo)
        rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
        Z.append(mols.Z[lo:hi][perm])
        R.append(mols.R[lo:hi][perm] @ rot.T + rng.normal(size=3) * 10)
    return Molecules(Z=np.concatenate(Z), R=np.concatenate(R), n_atoms=mols.n_atoms, name="moved")


@pytest.mark.parametrize("cls", [SortedCoulombMatrix, Eigenspectrum, BagOfBonds])
def test_invariant_to_permutation_rotation_translation(cls):
    mols = random_molecules()
    rep = cls().fit(mols)
    np.testing.assert_allclose(rep.transform(transformed(mols)), rep.transform(mols), rtol=1e-10, atol=1e-10)


def test_plain_coulomb_matrix_depends_on_atom_order():
    mols = random_molecules()
    rep = CoulombMatrix().fit(mols)
    assert not np.allclose(rep.transform(transformed(mols)), rep.transform(mols))


def test_coulomb_diagonal_is_half_z_to_the_2_4(small_molecules):
    M = coulomb_matrices(small_molecules)
    Z = small_molecules.padded()[0]
    idx = np.arange(M.shape[1])
    np.testing.assert_allclose(M[:, idx, idx], np.where(Z > 0, 0.5 * Z.astype(float) ** 2.4, 0.0))


def test_coulomb_off_diagonal_uses_bohr():
    mols = Molecules(Z=[6, 8], R=[[0, 0, 0], [0, 0, 1.2]], n_atoms=[2])
    M = coulomb_matrices(mols)[0]
    assert M[0, 1] == pytest.approx(6 * 8 / (1.2 * ANGSTROM_TO_BOHR))
    assert M[1, 0] == M[0, 1]


def test_padding_is_zero_and_sorted_rows_descend(small_molecules):
    M = coulomb_matrices(small_molecules, n_max=6)
    assert M.shape == (3, 6, 6)
    assert (M[1, 3:] == 0).all() and (M[1, :, 3:] == 0).all()  # water has 3 atoms
    X = SortedCoulombMatrix(n_max=6, flatten="full").fit(small_molecules).transform(small_molecules)
    norms = np.linalg.norm(X.reshape(3, 6, 6), axis=2)
    assert (np.diff(norms, axis=1) <= 1e-12).all()


def test_triangle_layout_puts_a_molecule_in_a_prefix():
    mols = random_molecules(seed=3)
    X = SortedCoulombMatrix().fit(mols).transform(mols)
    assert X.shape == (len(mols), mols.max_atoms * (mols.max_atoms + 1) // 2)
    for row, n in zip(X, mols.n_atoms):
        size = n * (n + 1) // 2
        assert (row[:size] != 0).all() and (row[size:] == 0).all()


def test_eigenspectrum_matches_numpy_and_descends():
    mols = random_molecules(seed=4)
    X = Eigenspectrum().fit(mols).transform(mols)
    for i, n in enumerate(mols.n_atoms):
        M = coulomb_matrices(mols.subset([i]))[0]
        np.testing.assert_allclose(X[i, :n], np.sort(np.linalg.eigvalsh(M))[::-1], atol=1e-10)
        assert (X[i, n:] == 0).all()


def test_molecule_larger_than_fitted_raises():
    small, big = random_molecules(max_atoms=4), random_molecules(seed=5, max_atoms=9)
    rep = SortedCoulombMatrix().fit(small)
    with pytest.raises(RepresentationError, match="at most"):
        rep.transform(big)


def test_random_cm_is_seeded_and_permutes_only_near_ties():
    mols = random_molecules(seed=6)
    rep = RandomCoulombMatrix(n_samples=4, noise=1.0, random_state=3).fit(mols)
    A, B = rep.transform(mols), rep.transform(mols)
    assert A.shape == (len(mols), 4, mols.max_atoms * (mols.max_atoms + 1) // 2)
    np.testing.assert_array_equal(A, B)
    assert not np.array_equal(A, RandomCoulombMatrix(4, random_state=4).fit(mols).transform(mols))
    # no noise: every sample is the sorted Coulomb matrix
    Z0 = RandomCoulombMatrix(n_samples=3, noise=0.0).fit(mols).transform(mols)
    S = SortedCoulombMatrix().fit(mols).transform(mols)
    np.testing.assert_array_equal(Z0, np.repeat(S[:, None], 3, axis=1))
    # every sample holds the same multiset of entries as the molecule's own matrix
    np.testing.assert_allclose(np.sort(A, axis=2), np.sort(np.repeat(S[:, None], 4, axis=1), axis=2))


def test_bag_of_bonds_layout_and_values():
    water = Molecules(Z=[8, 1, 1], R=[[0, 0, 0.117], [0, 0.757, -0.469], [0, -0.757, -0.469]], n_atoms=[3])
    bob = BagOfBonds().fit(water)
    assert bob.bags_ == [((1,), 2), ((8,), 1), ((1, 1), 1), ((1, 8), 2)]
    x = bob.transform(water)[0]
    M = coulomb_matrices(water)[0]
    np.testing.assert_allclose(x, [0.5, 0.5, 0.5 * 8**2.4, M[1, 2], M[0, 1], M[0, 2]])
    assert list(bob.get_feature_names_out()[:3]) == ["H[0]", "H[1]", "O[0]"]


def test_bag_of_bonds_overflow_is_an_error_or_truncated():
    methane = Molecules(Z=[6, 1, 1, 1, 1], R=np.eye(5, 3) * 1.1 + np.arange(5)[:, None] * 0.3, n_atoms=[5])
    water = Molecules(Z=[8, 1, 1], R=[[0, 0, 0.117], [0, 0.757, -0.469], [0, -0.757, -0.469]], n_atoms=[3])
    bob = BagOfBonds().fit(water)
    with pytest.raises(RepresentationError, match="C"):
        bob.transform(methane)  # carbon unseen
    ammonia = Molecules(Z=[8, 1, 1, 1], R=np.eye(4, 3) * 1.1 + np.arange(4)[:, None] * 0.4, n_atoms=[4])
    with pytest.raises(RepresentationError, match="bag H"):
        bob.transform(ammonia)  # three H, the H bag holds two
    x = BagOfBonds(on_overflow="truncate").fit(water).transform(ammonia)
    assert x.shape == (1, bob.n_features_out_)


def test_transformers_accept_lists_of_atoms_and_clone(small_molecules):
    from sklearn.base import clone

    for name in ["cm", "sorted-cm", "eigenspectrum", "bob"]:
        rep = make_representation(name).fit(small_molecules)
        np.testing.assert_allclose(rep.transform(small_molecules.to_atoms()), rep.transform(small_molecules))
        assert clone(rep).get_params() == rep.get_params()
    with pytest.raises(RepresentationError, match="unknown representation"):
        make_representation("nope")


def test_coincident_atoms_are_an_error():
    mols = Molecules(Z=[1, 1], R=[[0, 0, 0], [0, 0, 0]], n_atoms=[2], name="bad.xyz")
    with pytest.raises(RepresentationError, match="bad.xyz"):
        coulomb_matrices(mols)
