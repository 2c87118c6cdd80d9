"""Explaining kernel ridge regression on Coulomb-matrix and Bag-of-Bonds features, per atom.

Following the neuralization idea of Kauffmann et al. (Pattern Recognit. 101, 107198, 2020), the
KRR prediction is rewritten as a two-layer network,

    f(x) - y_mean = sum_j t_j,   t_j = alpha_j exp(-h_j / s),   h_j = sum_d delta_jd,

with a *distance layer* ``delta_jd = |x_d - x_jd|`` (Laplacian kernel, ``s = sigma``) or
``(x_d - x_jd)^2`` (Gaussian, ``s = 2 sigma^2``) against every training molecule ``j``, and a sum
pooling. Each term ``t_j`` is redistributed over the feature dimensions in proportion to their
share of the distance, ``R_d = sum_j t_j delta_jd / h_j`` (the rule the deep Taylor
decomposition of the distance layer gives for a pooled distance). Then each feature goes to the
atoms it is made of: a Coulomb-matrix entry ``M_ab`` (or a Bag-of-Bonds entry) belongs to atoms
``a`` and ``b`` and gives each half; a diagonal entry ``0.5 Z_a^2.4`` belongs to atom ``a``.

Conservation, stated and tested: ``sum(atom relevance) + padding = f(x) - y_mean`` exactly,
where *padding* is the relevance of zero-padded features (the molecule has no atom there, but a
larger training molecule does). The reference explained against is the training mean ``y_mean``
(of the residual, for a model with per-element baseline energies; each atom then also carries its
element's reference energy).

Supported representations: ``cm``, ``sorted-cm`` and ``bob`` (eigenvalues and random Coulomb
matrix sets do not map onto atoms one to one).
"""

from __future__ import annotations

import numpy as np

from qmlx.data.molecules import Molecules
from qmlx.errors import QmlxError
from qmlx.represent._base import coulomb_matrices


def feature_atoms(model, mols: Molecules) -> np.ndarray:
    """(n_mol, n_features, 2) atom indices (within each molecule) that each feature is made of.

    ``[a, a]`` for a diagonal entry, ``[a, b]`` for a pair, ``[-1, -1]`` for padding.
    """
    name = model.representation_name
    rep = model.representation
    if name in ("cm", "sorted-cm"):
        n_max = rep.n_max_
        M = coulomb_matrices(mols, n_max)
        norms = np.linalg.norm(M, axis=-1)
        pad = norms == 0
        if name == "sorted-cm":  # the order `sort_by_row_norm` uses
            order = np.argsort(np.where(pad, np.inf, -norms), axis=1, kind="stable")
        else:
            order = np.broadcast_to(np.arange(n_max), pad.shape)
        atom = np.where(np.take_along_axis(pad, order, axis=1), -1, order)
        if rep.flatten == "triangle":
            i, j = np.tril_indices(n_max)
        else:
            i, j = (g.ravel() for g in np.meshgrid(np.arange(n_max), np.arange(n_max), indexing="ij"))
        a, b = atom[:, i], atom[:, j]
        pad_pair = (a < 0) | (b < 0)
        return np.stack([np.where(pad_pair, -1, a), np.where(pad_pair, -1, b)], axis=-1)
    if name == "bob":
        return _bob_feature_atoms(rep, mols)
    raise QmlxError(f"explaining KRR needs a cm, sorted-cm or bob representation, not {name}")


def _bob_feature_atoms(rep, mols: Molecules) -> np.ndarray:
    """The Bag-of-Bonds layout of `qmlx.represent.BagOfBonds`, with atom indices instead of values."""
    M = coulomb_matrices(mols)
    Z = mols.padded()[0]
    n_max = M.shape[-1]
    idx = np.arange(n_max)
    iu, ju = np.triu_indices(n_max, 1)
    z_lo, z_hi = np.minimum(Z[:, iu], Z[:, ju]), np.maximum(Z[:, iu], Z[:, ju])
    out = np.full((len(mols), rep.n_features_out_, 2), -1, dtype=np.int64)
    start = 0
    rows = np.arange(len(mols))[:, None]
    for key, size in rep.bags_:
        if len(key) == 1:
            member, values, first, second = Z == key[0], M[:, idx, idx], idx, idx
        else:
            member = (z_lo == key[0]) & (z_hi == key[1])
            values, first, second = M[:, iu, ju], iu, ju
        order = np.argsort(-np.where(member, values, 0.0), axis=1, kind="stable")
        width = min(size, order.shape[1])
        order = order[:, :width]
        ok = member[rows, order]
        out[:, start : start + width, 0] = np.where(ok, first[order], -1)
        out[:, start : start + width, 1] = np.where(ok, second[order], -1)
        start += size
    return out


def explain_krr(
    model, mols: Molecules, block: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neuralized explanation of a `qmlx.kernels.model.KRRModel`.

    Returns ``(relevance (n_atoms_total,), padding (n_mol,), prediction (n_mol,), reference
    (n_mol,))`` in kcal/mol, with ``relevance`` summed per molecule plus ``padding`` equal to
    ``prediction - reference``.
    """
    reg = model.regressor
    owners = feature_atoms(model, mols)
    X = model.representation.transform(mols)
    Xf, alpha = reg.X_fit_, reg.alpha_
    if X.ndim != 2 or Xf.ndim != 2:
        raise QmlxError("explaining KRR needs one feature vector per molecule")
    laplacian = reg.kernel == "laplacian"
    scale = reg.sigma if laplacian else 2.0 * reg.sigma**2
    R_feat = np.empty_like(X)
    for lo in range(0, len(X), block):  # bounded memory: (block, n_train, n_features)
        diff = X[lo : lo + block, None, :] - Xf[None, :, :]
        delta = np.abs(diff) if laplacian else diff * diff
        h = delta.sum(-1)
        t = alpha * np.exp(-h / scale)
        share = np.divide(t, h, out=np.zeros_like(t), where=h > 0)
        R_feat[lo : lo + block] = np.einsum("bj,bjd->bd", share, delta)
        same = h == 0  # identical to a training molecule: its term is split evenly over features
        if same.any():
            R_feat[lo : lo + block] += (t * same).sum(1)[:, None] / X.shape[1]
    prediction = model.predict_molecules(mols)
    offsets = mols.offsets[:-1]
    relevance = model.baseline_energies(mols)  # each atom carries its element reference, if any
    a, b = owners[..., 0], owners[..., 1]
    real = a >= 0
    half = 0.5 * R_feat  # half to each atom; a diagonal entry gives both halves to its atom
    mol = np.broadcast_to(offsets[:, None], a.shape)
    np.add.at(relevance, (mol + a)[real], half[real])
    np.add.at(relevance, (mol + b)[real], half[real])
    padding = np.where(real, 0.0, R_feat).sum(1)
    return relevance, padding, prediction, np.full(len(mols), reg.y_mean_)
