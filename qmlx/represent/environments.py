"""Atom environments: each atom's neighbourhood as Gaussian-smeared distances per neighbour element.

For atom i and each neighbour element e (a fixed list, e.g. the training data's elements), the
descriptor holds, at the grid distances ``r_k`` (Å),

    g_e(r_k) = sum over neighbours j of element e within the cutoff of
               exp(-(r_ij - r_k)^2 / (2 w^2)) * f_cut(r_ij),

with the cosine cutoff ``f_cut(r) = 0.5 (cos(pi r / r_c) + 1)``. A neighbour adds one bump of
height up to 1 centred at its distance, so moving it by more than the width ``w`` moves the bump,
and the descriptor changes by about ``sqrt(2 * sqrt(pi) * w / spacing)`` in Euclidean norm.

Distances alone do not tell a three-membered ring from a chain, so the descriptor also holds the
angles at the atom between pairs of its first-shell neighbours (closer than ``angle_cutoff``),
Gaussian-smeared in ``cos(theta)`` and weighted by both neighbours' shell weights (1 up to 0.3 Å
inside the angle cutoff, then a cosine down to 0 at it), whatever their elements.

The descriptor is rotation, translation and permutation invariant and does not depend on the
central atom's own element (models are kept per central element). Shapes: ``(n_atoms_total,
n_elements * n_grid + n_angles)``, unitless, in the flat atom order of `Molecules`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from qmlx.data.molecules import Molecules

#: most atoms per block of `environment_blocks` (a block's descriptors: 8,192 x n_features float32)
BLOCK_ATOMS = 8192
#: half-width, in Gaussian widths, of the grid window a neighbour's Gaussian is evaluated on
_WINDOW = 5.0
#: the width (Å) over which a neighbour's weight in the angles falls from 1 to 0 at the angle cutoff
ANGLE_SWITCH = 0.3


@dataclass(frozen=True)
class EnvironmentDescriptor:
    """Settings of `atom_environments`.

    elements : nuclear charges of the neighbour elements, in descriptor order; neighbours of other
        elements are not described (a model refuses molecules with unknown elements anyway).
    cutoff : neighbour cutoff in Å (3.5: the first and second shells of organic molecules).
    start, spacing : grid distances ``start, start + spacing, ...`` up to the cutoff, in Å.
    width : Gaussian width ``w`` in Å. With 0.05 Å (2,000 training environments as centres per
        element, distances only, an earlier model) the novelty of QM7 test molecules with one atom
        moved by 0.2 Å separated from the untouched ones with AUROC 0.977; with 0.1 Å 0.942, with
        0.15 Å 0.898 (qm7-schnet's fold-0 split).
    angle_cutoff : the first shell, in Å, whose pairs of neighbours give angles (0: no angles).
    angle_spacing, angle_width : grid spacing and Gaussian width in ``cos(theta)``, from -1 to 1.
    angle_weight : height of an angle's Gaussian (a distance's is 1).

    The angle width and weight were chosen on three separations at once (AUROC of molecule
    novelty, 2,000 training environments as centres, `experiments/domain.py` and
    `domain_holdout.py` protocols): QM7 test molecules with one atom moved by 0.2 Å, and QM9
    nitriles and three-membered rings held out of training. Width 0.15, weight 0.5: 0.975, 1.000,
    0.982; width 0.05, weight 1: 0.971, 0.904, 0.985; width 0.15, weight 0.25: 0.976, 1.000, 0.927;
    without angles, three-membered rings 0.77.

    The grid spacings trade resolution for cost: the same three separations with the novelty
    model of `qmlx.novelty` (256 k-means centres in 32 principal directions) gave, for a distance
    grid of 0.05 Å and an angle grid of 0.1, 0.979, 0.994, 0.993; 0.1 Å and 0.1: 0.978, 0.993,
    0.996; 0.1 Å and 0.2 (the defaults, 166 features for five elements instead of 326): 0.977,
    0.995, 0.992.
    """

    elements: tuple[int, ...]
    cutoff: float = 3.5
    start: float = 0.5
    spacing: float = 0.1
    width: float = 0.05
    angle_cutoff: float = 2.0
    angle_spacing: float = 0.2
    angle_width: float = 0.15
    angle_weight: float = 0.5

    @property
    def grid(self) -> np.ndarray:
        """(n_grid,) the grid distances in Å."""
        return np.arange(self.start, self.cutoff + 1e-9, self.spacing)

    @property
    def angle_grid(self) -> np.ndarray:
        """(n_angles,) the grid of ``cos(theta)``, empty without angles."""
        if self.angle_cutoff <= 0:
            return np.zeros(0)
        return np.arange(-1.0, 1.0 + 1e-9, self.angle_spacing)

    @property
    def n_features(self) -> int:
        return len(self.elements) * len(self.grid) + len(self.angle_grid)

    def to_dict(self) -> dict:
        return {**asdict(self), "elements": [int(z) for z in self.elements]}

    @classmethod
    def from_dict(cls, d: dict) -> EnvironmentDescriptor:
        """The settings `to_dict` wrote (a record without ``angle_cutoff`` holds distances only)."""
        return cls(**{"angle_cutoff": 0.0, **d, "elements": tuple(int(z) for z in d["elements"])})

    def feature_element(self) -> np.ndarray:
        """(n_features,) the neighbour element each descriptor entry describes (0 for angles)."""
        return np.r_[
            np.repeat(np.asarray(self.elements), len(self.grid)), np.zeros(len(self.angle_grid), int)
        ]

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
        if len(self.angle_grid):  # each angle's Gaussian, half to each of its two neighbours
            start = len(self.elements) * len(grid)
            i, j, k, cos, weight = _angles(
                R[None], d[None], inside[None], self.angle_cutoff, self.angle_weight
            )[1:]
            g = np.exp(-((cos[:, None] - self.angle_grid) ** 2) / (2 * self.angle_width**2)) * weight[:, None]
            np.add.at(phi, (i, j, slice(start, None)), 0.5 * g)
            np.add.at(phi, (i, k, slice(start, None)), 0.5 * g)
        return phi, phi.sum(1)


def atom_environments(mols: Molecules, descriptor: EnvironmentDescriptor) -> np.ndarray:
    """(n_atoms_total, n_features) float32 descriptors of every atom of ``mols`` (see the module
    docstring), positions in Å, in the flat atom order of ``mols``."""
    out = np.zeros((len(mols.Z), descriptor.n_features), dtype=np.float32)
    for atoms, X in environment_blocks(mols, descriptor):
        out[atoms] = X
    return out


def environment_blocks(
    mols: Molecules, descriptor: EnvironmentDescriptor, max_atoms: int = BLOCK_ATOMS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The descriptors of ``mols`` block by block: ``(atoms (n,), X (n, n_features) float32)``, the
    flat indices of a block's atoms (whole molecules of similar sizes, at most ``max_atoms`` atoms
    unless one molecule has more), ordered by element, and their descriptors. ``X`` is overwritten
    by the next block: copy what you keep.

    Each neighbour within the cutoff adds its Gaussian on the grid points within `_WINDOW` widths
    of its distance (beyond them the Gaussian is below 4e-6 of its peak, left out), each angle its
    Gaussian on the whole angle grid; SciPy's sparse matrices sum them into the block."""
    order = np.argsort(mols.n_atoms, kind="stable")  # similar sizes together: little padding
    ends = np.cumsum(mols.n_atoms[order])
    buffer = np.empty(max_atoms * descriptor.n_features, dtype=np.float32)
    lo = 0
    while lo < len(order):
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - mols.n_atoms[order[lo]] + max_atoms, "right")))
        yield _block(mols, order[lo:hi], descriptor, buffer)
        lo = hi


def _block(
    mols: Molecules, idx: np.ndarray, descriptor: EnvironmentDescriptor, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(atoms, X)`` of the molecules ``idx`` (see `environment_blocks`), ``X`` in ``out`` where it
    is large enough. Window values are laid out (window point, pair): numpy's loops then run along
    the pairs."""
    from scipy.sparse import coo_array

    n_grid, n_features, cutoff = len(descriptor.grid), descriptor.n_features, descriptor.cutoff
    counts = mols.n_atoms[idx]
    slot = np.arange(counts.max(initial=0))
    valid = slot < counts[:, None]  # (B, n)
    table = np.where(valid, mols.offsets[idx][:, None] + slot, 0)  # flat atom of each slot
    atoms = table[valid]
    by_element = np.argsort(mols.Z[atoms], kind="stable")
    atoms = atoms[by_element]
    row = np.zeros(valid.shape, dtype=np.int32)  # the block row of each slot
    row[valid] = np.argsort(by_element).astype(np.int32)
    R = mols.R[table].transpose(2, 0, 1).copy()  # (3, B, n)
    d2 = sum((x[:, :, None] - x[:, None, :]) ** 2 for x in R)
    inside = valid[:, :, None] & valid[:, None, :] & (d2 < cutoff**2)
    inside[:, slot, slot] = False
    size = len(atoms) * n_features
    X = (out[:size] if size <= len(out) else np.empty(size, dtype=np.float32)).reshape(len(atoms), n_features)

    pair = np.flatnonzero(inside)  # sorted by (molecule, central atom): each atom's pairs consecutive
    n = len(slot)
    centre_slot, j = np.divmod(pair, n)  # flat slot b * n + i of the central atom, slot j of the other
    other_slot = centre_slot - centre_slot % n + j
    column = np.full(max(max(descriptor.elements), int(mols.Z.max(initial=0))) + 1, -1)
    column[list(descriptor.elements)] = np.arange(len(descriptor.elements))
    elem = column[mols.Z[table.ravel()[other_slot]]]
    known = np.flatnonzero(elem >= 0)
    if len(known) < len(pair):
        pair, centre_slot, other_slot, elem = pair[known], centre_slot[known], other_slot[known], elem[known]
    dist, centre = np.sqrt(d2.ravel()[pair]), row.ravel()[centre_slot]
    fcut = np.cos((np.pi / cutoff * dist).astype(np.float32))
    fcut += 1.0
    fcut *= 0.5
    first, values = _windows(dist, descriptor.start, descriptor.spacing, descriptor.width, n_grid, fcut)
    first += (elem * n_grid).astype(np.int32)
    columns = first + np.arange(len(values), dtype=np.int32)[:, None]
    rows = np.broadcast_to(centre, values.shape)
    coo_array((values.ravel(), (rows.ravel(), columns.ravel())), shape=X.shape).toarray(out=X)
    if len(descriptor.angle_grid):  # the whole angle grid for each angle at an atom
        shell = np.flatnonzero(dist < descriptor.angle_cutoff)
        at, cos, weight = _shell_angles(
            centre[shell], other_slot[shell], dist[shell], d2, descriptor.angle_cutoff
        )
        grid = descriptor.angle_grid.astype(np.float32)[:, None]
        g = (cos.astype(np.float32) - grid) / np.float32(descriptor.angle_width)
        g = np.exp(np.float32(-0.5) * g * g)
        g *= (descriptor.angle_weight * weight).astype(np.float32)
        angles = np.empty((len(atoms), len(grid)), dtype=np.float32)
        k = np.broadcast_to(np.arange(len(grid), dtype=np.int32)[:, None], g.shape)
        coo_array((g.ravel(), (np.broadcast_to(at, g.shape).ravel(), k.ravel())), shape=angles.shape).toarray(
            out=angles
        )
        X[:, len(descriptor.elements) * n_grid :] += angles
    return atoms, X


def _windows(
    x: np.ndarray, start: float, spacing: float, width: float, n_grid: int, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(first (P,) int32, values (w, P) float32)``: ``height * exp(-(x - g_k)^2 / (2 width^2))``
    of each value of ``x (P,)`` on the grid points ``g_k = start + k * spacing``, ``k = first ..
    first + w - 1``: the ``w = 2 * half + 1`` grid points around its nearest one, ``half`` covering
    `_WINDOW` widths, moved inside the grid where they would leave it."""
    half = int(np.ceil(_WINDOW * width / spacing + 0.5)) - 1  # farther points lie _WINDOW widths away
    size = min(2 * half + 1, n_grid)
    u = (x - start) / spacing  # in grid steps
    first = np.clip(np.rint(u).astype(np.int32) - size // 2, 0, n_grid - size)
    u -= first
    u *= spacing / width
    step = (spacing / width * np.arange(size)).astype(np.float32)[:, None]
    values = u.astype(np.float32) - step
    values *= values
    values *= np.float32(-0.5)
    np.exp(values, out=values)
    values *= height.astype(np.float32, copy=False)
    return first, values


def _shell_angles(
    centre: np.ndarray, other: np.ndarray, dist: np.ndarray, d2: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The angles at each central atom between pairs of its first-shell neighbours, from the pairs
    grouped by ``centre`` (block rows; each atom's pairs consecutive), ``other`` the flat slot
    ``b * n + j`` of the neighbour and
    ``dist`` its distance, with the squared distances ``d2 (B, n, n)`` of the padded block:
    ``(centre, cos(theta), weight)`` (the law of cosines), the weight the product of the two
    neighbours' shell weights."""
    first = np.r_[0, np.flatnonzero(np.diff(centre)) + 1] if len(centre) else np.zeros(0, np.int64)
    count = np.diff(np.r_[first, len(centre)])
    pairs = [
        (first[count > q] + p, first[count > q] + q) for q in range(1, count.max(initial=0)) for p in range(q)
    ]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    p, q = (np.concatenate(side) for side in zip(*pairs))
    dp, dq = dist[p], dist[q]
    n = d2.shape[-1]
    opposite = d2.ravel()[other[p] * n + other[q] % n]  # squared distance between the two neighbours
    cos = np.clip((dp * dp + dq * dq - opposite) / (2.0 * dp * dq), -1.0, 1.0)
    weight = shell_weight(dist, cutoff)
    return centre[p], cos, weight[p] * weight[q]


def _angles(
    R: np.ndarray, d: np.ndarray, inside: np.ndarray, cutoff: float, height: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The angles at atom i between its neighbours j < k closer than ``cutoff`` (Å), over padded
    molecules ``R (B, n, 3)``, distances ``d (B, n, n)`` and pair mask ``inside (B, n, n)``:
    ``(b, i, j, k, cos(theta), weight)``, the weight the product of the two cosine cutoffs."""
    near = inside & (d < cutoff)
    n = near.shape[1]
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    b, i, j, k = np.nonzero(near[:, :, :, None] & near[:, :, None, :] & upper)
    u, v = R[b, j] - R[b, i], R[b, k] - R[b, i]
    dij, dik = d[b, i, j], d[b, i, k]
    cos = np.clip((u * v).sum(1) / (dij * dik), -1.0, 1.0)
    return b, i, j, k, cos, shell_weight(dij, cutoff) * shell_weight(dik, cutoff) * height


def shell_weight(d: np.ndarray, cutoff: float, width: float = ANGLE_SWITCH) -> np.ndarray:
    """1 up to ``cutoff - width`` Å, then down to 0 at ``cutoff`` along a cosine: bonded neighbours
    count fully, and the weight stays continuous as a neighbour leaves the shell."""
    x = np.clip((d - (cutoff - width)) / width, 0.0, 1.0)
    return 0.5 * (np.cos(np.pi * x) + 1.0)
