"""Atom environments: each atom's neighbourhood as Gaussian-smeared distances per neighbour element.

For atom i and each neighbour element e (a fixed list, e.g. the training data's elements), the
descriptor holds, at the grid distances ``r_k`` (Å),

    g_e(r_k) = sum over neighbours j of element e within the cutoff of
               exp(-(r_ij - r_k)^2 / (2 w^2)) * f_cut(r_ij),

with the cosine cutoff ``f_cut(r) = 0.5 (cos(pi r / r_c) + 1)``. A neighbour adds one bump of
height up to 1 centred at its distance, so moving it by more than the width ``w`` moves the bump,
and the descriptor changes by about ``sqrt(2 * sqrt(pi) * w / spacing)`` in Euclidean norm. The
descriptor is rotation, translation and permutation invariant and does not depend on the central
atom's own element (models are kept per central element). Shapes: ``(n_atoms_total, n_elements *
n_grid)``, unitless, in the flat atom order of `Molecules`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from qmlx.data.molecules import Molecules

#: molecules per block when listing neighbour pairs (memory: block * n_max^2 floats)
_BLOCK = 1024
#: half-width, in Gaussian widths, of the grid window a neighbour's Gaussian is evaluated on
_WINDOW = 5.0


@dataclass(frozen=True)
class EnvironmentDescriptor:
    """Settings of `atom_environments`.

    elements : nuclear charges of the neighbour elements, in descriptor order; neighbours of other
        elements are not described (a model refuses molecules with unknown elements anyway).
    cutoff : neighbour cutoff in Å (3.5: the first and second shells of organic molecules).
    start, spacing : grid distances ``start, start + spacing, ...`` up to the cutoff, in Å.
    width : Gaussian width ``w`` in Å. With 0.05 Å (and 2,000 centres per element) the novelty of
        QM7 test molecules with one atom moved by 0.2 Å separates from the untouched ones with
        AUROC 0.977; with 0.1 Å 0.942, with 0.15 Å 0.898 (qm7-schnet's fold-0 split).
    """

    elements: tuple[int, ...]
    cutoff: float = 3.5
    start: float = 0.5
    spacing: float = 0.05
    width: float = 0.05

    @property
    def grid(self) -> np.ndarray:
        """(n_grid,) the grid distances in Å."""
        return np.arange(self.start, self.cutoff + 1e-9, self.spacing)

    @property
    def n_features(self) -> int:
        return len(self.elements) * len(self.grid)

    def to_dict(self) -> dict:
        return {**asdict(self), "elements": [int(z) for z in self.elements]}

    @classmethod
    def from_dict(cls, d: dict) -> EnvironmentDescriptor:
        return cls(**{**d, "elements": tuple(int(z) for z in d["elements"])})

    def feature_element(self) -> np.ndarray:
        """(n_features,) the neighbour element each descriptor entry describes."""
        return np.repeat(np.asarray(self.elements), len(self.grid))

    def transform(self, mols: Molecules) -> np.ndarray:
        """(n_atoms_total, n_features) float32 descriptors of every atom of ``mols``."""
        return atom_environments(mols, self)

    def contributions(self, mols: Molecules, molecule: int) -> tuple[np.ndarray, np.ndarray]:
        """For molecule ``molecule`` with n atoms: ``(phi (n, n, n_features), x (n, n_features))``,
        ``phi[i, j]`` the part of atom i's descriptor that neighbour j makes (zero for j = i and
        beyond the cutoff), so that ``x[i] = phi[i].sum(0)``."""
        lo, hi = mols.offsets[molecule], mols.offsets[molecule + 1]
        Z, R = mols.Z[lo:hi], mols.R[lo:hi]
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)
        n, grid = len(Z), self.grid
        inside = (d < self.cutoff) & ~np.eye(n, dtype=bool)
        bump = np.exp(-((d[..., None] - grid) ** 2) / (2 * self.width**2))
        bump *= (0.5 * (np.cos(np.pi * np.minimum(d, self.cutoff) / self.cutoff) + 1) * inside)[..., None]
        phi = np.zeros((n, n, self.n_features))
        for k, z in enumerate(self.elements):
            cols = slice(k * len(grid), (k + 1) * len(grid))
            phi[:, Z == z, cols] = bump[:, Z == z]
        return phi, phi.sum(1)


def atom_environments(mols: Molecules, descriptor: EnvironmentDescriptor) -> np.ndarray:
    """(n_atoms_total, n_features) float32 descriptors of every atom of ``mols`` (see the module
    docstring), positions in Å.

    Built pair by pair: each neighbour within the cutoff adds its Gaussian on the grid points
    within ``_WINDOW`` widths of its distance (beyond them the Gaussian is below 4e-6 of its peak,
    left out), summed with a sparse matrix."""
    from scipy.sparse import coo_matrix

    grid = descriptor.grid
    n_grid, w, cutoff = len(grid), descriptor.width, descriptor.cutoff
    half = int(np.ceil(_WINDOW * w / descriptor.spacing))
    element_column = np.full(max(max(descriptor.elements), int(mols.Z.max())) + 1, -1)
    element_column[list(descriptor.elements)] = np.arange(len(descriptor.elements))
    rows, cols, vals = [], [], []
    order = np.argsort(mols.n_atoms, kind="stable")  # similar sizes together: little padding
    for lo in range(0, len(mols), _BLOCK):
        idx = order[lo : lo + _BLOCK]
        sub = mols.subset(idx)
        Z, R, mask = sub.padded()
        d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
        n = Z.shape[1]
        inside = mask[:, :, None] & mask[:, None, :] & (d < cutoff) & ~np.eye(n, dtype=bool)
        b, i, j = np.nonzero(inside)
        dist, elem = d[b, i, j], element_column[Z[b, j]]
        keep = elem >= 0
        b, i, dist, elem = b[keep], i[keep], dist[keep], elem[keep]
        atom = mols.offsets[idx[b]] + i
        fcut = 0.5 * (np.cos(np.pi * dist / cutoff) + 1)
        nearest = np.rint((dist - descriptor.start) / descriptor.spacing).astype(np.int64)
        for offset in range(-half, half + 1):
            k = nearest + offset
            ok = (k >= 0) & (k < n_grid)
            rows.append(atom[ok])
            cols.append(elem[ok] * n_grid + k[ok])
            vals.append(np.exp(-((dist[ok] - grid[k[ok]]) ** 2) / (2 * w**2)) * fcut[ok])
    shape = (len(mols.Z), descriptor.n_features)
    if not rows:
        return np.zeros(shape, dtype=np.float32)
    matrix = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    return matrix.toarray().astype(np.float32)
