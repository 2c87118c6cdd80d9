"""Explaining kernel ridge regression on Coulomb-matrix and Bag-of-Bonds features, per atom.

The explanation has three steps; each conserves what it is given exactly.

1. **Features, against a root point.** Following the neuralization of Kauffmann et al. (Pattern
   Recognit. 101, 107198, 2020), the KRR prediction is a distance layer against the training
   molecules followed by a weighted sum,

       f(x) = y_mean + sum_j alpha_j g(h_j(x)),   h_j(x) = sum_d delta_d(x_d, x_jd),

   with ``delta = |x_d - x_jd|`` and ``g(h) = exp(-h / sigma)`` (Laplacian) or
   ``delta = (x_d - x_jd)^2`` and ``g(h) = exp(-h / (2 sigma^2))`` (Gaussian). It is explained
   against the root point ``x~ = 0``, the feature vector of the *empty molecule*: every
   Coulomb-matrix and Bag-of-Bonds entry is zero there. Each training term's change
   ``alpha_j [g(h_j(x)) - g(h_j(0))]`` is split over the features in proportion to their change of
   distance, ``delta_d(x_d, x_jd) - delta_d(0, x_jd)``: the rescale rule of DeepLIFT (Shrikumar,
   Greenside and Kundaje, ICML 2017), which is exact for a one-dimensional function of a sum.
   A zero-padded feature (``x_d = 0``: the molecule has no atom there, but larger training
   molecules do) has the same distance in ``x`` and in ``x~``, so it receives **no** relevance;
   its distance only scales ``g(h_j(x))`` and ``g(h_j(0))`` by the same factor, and that effect is
   carried by the features that differ. (Against the training mean instead, the padded distances
   take thousands of kcal/mol for small molecules, balanced by equally large atom relevances.)
2. **Features to atoms.** A Coulomb-matrix or Bag-of-Bonds entry ``M_ab`` belongs to atoms ``a``
   and ``b`` and gives each half; a diagonal entry ``0.5 Z_a^2.4`` belongs to atom ``a``. Entries of a
   Bag-of-Bonds bag with equal values (within ``rtol``) cannot be told apart by the
   representation, so their relevance is pooled and shared equally by the atom pairs that make
   them (the order `numpy.argsort` gives such ties is arbitrary).
3. **Symmetry.** Atom permutations that leave the Coulomb matrix unchanged (within ``rtol``; for
   a rigid molecule its point-group operations, found by a backtracking search) leave the
   feature vector, and so the prediction, unchanged, but move the atoms a feature belongs to. In
   the sorted Coulomb matrix these are the orderings of tied row norms that give the same
   matrix. The explanation is averaged over them: every atom gets the mean relevance of its
   symmetry class. Rows with equal norms but different contents keep the representation's own
   (stable) order.

Conservation, stated and tested: ``sum(atom relevance) + remainder = f(x) - f(0)`` to rounding,
and the remainder (the relevance of features no atom makes) is zero. The reference is
``f(0) = y_mean + sum_j alpha_j g(h_j(0))``, the model's prediction for the empty molecule, one
constant per model (Letzgus et al., IEEE Signal Process. Mag. 39, 2022: explain against a stated
reference). For a model with per-element baseline energies (``baseline="elements"``) the baseline
is exactly additive over atoms, so each atom also carries its element's reference energy and the
reference is the kernel part's ``f(0)``.

Supported representations: ``cm``, ``sorted-cm`` and ``bob`` (eigenvalues and random Coulomb
matrix sets do not map onto atoms one to one).
"""

from __future__ import annotations

import numpy as np

from qmlx.data.molecules import Molecules
from qmlx.errors import QmlxError
from qmlx.represent._base import coulomb_matrices

#: relative tolerance under which two Coulomb-matrix entries (or bag values) count as equal
DEFAULT_RTOL = 1e-3
#: molecules per block when building Coulomb matrices for the symmetry search
_BLOCK = 1024


def _close(a: np.ndarray, b: np.ndarray, rtol: float) -> np.ndarray:
    return np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b))


def symmetry_classes(M: np.ndarray, rtol: float = DEFAULT_RTOL, max_nodes: int = 20_000) -> np.ndarray:
    """(n,) class labels of one molecule's atoms under the automorphisms of its Coulomb matrix.

    ``M`` is the (n, n) Coulomb matrix of one molecule (no padding). An automorphism is a
    permutation ``s`` of the atoms with ``M[s(a), s(b)] = M[a, b]`` for all ``a, b`` (within
    ``rtol``, relative): it keeps every element and every distance, so for a rigid molecule it is
    a point-group operation. Two atoms share a label when an automorphism maps one onto the
    other (the orbits of the group). Each search for a map ``a -> b`` is a backtracking over
    atoms with equal sorted rows, pruned by all distances to the atoms already placed; it gives
    up after ``max_nodes`` steps and then keeps ``a`` and ``b`` apart.
    """
    n = len(M)
    rows = np.sort(M, axis=1)
    compat = _close(rows[:, None, :], rows[None, :, :], rtol).all(-1)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def search(a: int, b: int) -> np.ndarray | None:
        # place the atoms with the fewest candidates first: they pin the geometry quickly
        rest = sorted((c for c in range(n) if c != a), key=lambda c: compat[c].sum())
        order = [a, *rest]
        sigma = np.full(n, -1)
        used = np.zeros(n, dtype=bool)
        nodes = 0

        def place(k: int) -> bool:
            nonlocal nodes
            if k == n:
                return True
            nodes += 1
            if nodes > max_nodes:
                return False
            c, done = order[k], order[:k]
            for t in [b] if k == 0 else np.flatnonzero(compat[c] & ~used):
                if k and not _close(M[t, sigma[done]], M[c, done], rtol).all():
                    continue
                sigma[c], used[t] = t, True
                if place(k + 1):
                    return True
                sigma[c], used[t] = -1, False
            return False

        return sigma if place(0) else None

    for a in range(n):
        for b in range(a + 1, n):
            if compat[a, b] and find(a) != find(b):
                sigma = search(a, b)
                if sigma is not None:
                    for c in range(n):
                        parent[find(c)] = find(int(sigma[c]))
    return np.array([find(i) for i in range(n)])


def molecule_symmetry_classes(mols: Molecules, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """(n_atoms_total,) labels, unique over all molecules, of the `symmetry_classes` of each atom."""
    labels = np.empty(len(mols.Z), dtype=np.int64)
    offsets = mols.offsets
    for lo in range(0, len(mols), _BLOCK):
        part = np.arange(lo, min(lo + _BLOCK, len(mols)))
        M = coulomb_matrices(mols.subset(part))
        for k, i in enumerate(part):
            n = int(mols.n_atoms[i])
            labels[offsets[i] : offsets[i + 1]] = offsets[i] + symmetry_classes(M[k, :n, :n], rtol)
    return labels


def _pool_ties(groups: np.ndarray, X: np.ndarray, R: np.ndarray, rtol: float) -> np.ndarray:
    """(n_mol, n_features) ``R`` with the relevance of equal entries within a feature group (a Bag
    of Bonds bag, `FittedState.feature_groups`) shared equally.

    Entries of a group are sorted in descending order, so equal values are neighbours; padding
    zeros stay alone (and carry no relevance).
    """
    tied = np.zeros(X.shape, dtype=bool)
    tied[:, 1:] = (groups[1:] == groups[:-1]) & (X[:, 1:] > 0) & (X[:, :-1] - X[:, 1:] <= rtol * X[:, :-1])
    group = np.cumsum(~tied, axis=1) + np.arange(len(X))[:, None] * (X.shape[1] + 1)
    sums = np.bincount(group.ravel(), weights=R.ravel())
    counts = np.bincount(group.ravel())
    return (sums / np.maximum(counts, 1))[group]


def _expm1_over(u: np.ndarray) -> np.ndarray:
    """``expm1(u) / u`` without cancellation (1 at ``u = 0``)."""
    small = np.abs(u) < 1e-8
    safe = np.where(small, 1.0, u)
    return np.where(small, 1.0 + 0.5 * u, np.expm1(safe) / safe)


def feature_relevance(model, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-feature relevance of ``f(x) - f(0)`` for a fitted KRR (rescale rule, see the module docstring).

    Parameters
    ----------
    model : a `qmlx.kernels.model.KRRModel` (exact or Nyström) on 2-D features.
    X : (n_mol, n_features) features of the molecules, atomic units.

    Returns
    -------
    R : (n_mol, n_features) relevances in kcal/mol, ``R.sum(1) = f(x) - f(0)`` of the kernel part;
        features with ``x_d = 0`` get exactly 0.
    f0 : the kernel part's prediction for the empty molecule ``x = 0``, kcal/mol.
    """
    reg = model.regressor
    Xf, alpha = model.support, reg.alpha_
    if X.ndim != 2 or Xf.ndim != 2:
        raise QmlxError("explaining KRR needs one feature vector per molecule")
    laplacian = reg.kernel == "laplacian"
    if not laplacian and reg.kernel != "gaussian":
        raise QmlxError(f"explaining KRR needs a laplacian or gaussian kernel, not {reg.kernel}")
    scale = reg.sigma if laplacian else 2.0 * reg.sigma**2

    def dist(d: np.ndarray) -> np.ndarray:
        return np.abs(d) if laplacian else d * d

    k0 = np.exp(-dist(Xf).sum(1) / scale)  # (n_train,) k(0, x_j)
    R = np.zeros_like(X, dtype=np.float64)
    for m in range(len(X)):  # one molecule at a time: only its non-zero features differ from x~ = 0
        support = np.flatnonzero(X[m])
        xf = Xf[:, support]
        change = dist(X[m, support] - xf) - dist(xf)  # (n_train, n_support) distance change vs x~
        u = -change.sum(1) / scale
        # alpha_j [g(h_j(x)) - g(h_j(0))] / (h_j(x) - h_j(0)): the rescale multiplier of term j
        slope = -alpha * k0 * _expm1_over(u) / scale
        R[m, support] = slope @ change
    return R, float(reg.y_mean_ + alpha @ k0)


def explain_krr(
    model, mols: Molecules, rtol: float = DEFAULT_RTOL
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Explain a `qmlx.kernels.model.KRRModel` per atom, against the empty molecule.

    Parameters
    ----------
    model : a KRR model (exact or Nyström) on a representation whose features map onto atoms
        (``cm``, ``sorted-cm``, ``bob``: `FittedState.feature_atoms`).
    mols : the molecules (positions in Å).
    rtol : relative tolerance for equal Coulomb-matrix entries and bag values (symmetry
        classes and bag ties).

    Returns
    -------
    relevance : (n_atoms_total,) kcal/mol; atoms of one symmetry class get equal values.
    remainder : (n_mol,) relevance of features that no atom makes (zero-padded features); it is 0.
    prediction : (n_mol,) ``f(x)`` in kcal/mol.
    reference : (n_mol,) ``f(0)``, the model's prediction for the empty molecule, kcal/mol.

    ``relevance`` summed per molecule plus ``remainder`` equals ``prediction - reference``.
    """
    rep = model.representation
    owners = rep.feature_atoms(mols)
    X = rep.transform(mols)
    R, f0 = feature_relevance(model, X)
    groups = rep.feature_groups()
    if groups is not None:
        R = _pool_ties(groups, X, R, rtol)
    relevance = model.baseline_energies(mols)  # each atom carries its element reference, if any
    a, b = owners[..., 0], owners[..., 1]
    real = a >= 0
    half = 0.5 * R  # half to each atom; a diagonal entry gives both halves to its atom
    mol = np.broadcast_to(mols.offsets[:-1, None], a.shape)
    np.add.at(relevance, (mol + a)[real], half[real])
    np.add.at(relevance, (mol + b)[real], half[real])
    remainder = np.where(real, 0.0, R).sum(1)
    labels = molecule_symmetry_classes(mols, rtol)  # average over the symmetry classes
    n = len(relevance)
    counts = np.maximum(np.bincount(labels, minlength=n), 1)
    relevance = (np.bincount(labels, weights=relevance, minlength=n) / counts)[labels]
    prediction = model.energies(mols)  # the domain was checked by `qmlx.explain.explain`
    return relevance, remainder, prediction, np.full(len(mols), f0)
