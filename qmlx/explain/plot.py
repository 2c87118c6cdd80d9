"""Pictures of explanations: molecules drawn in 2-D with atoms coloured by relevance.

Each molecule is projected onto its two principal axes (PCA of the positions, Å), atoms drawn as
discs sized by covalent radius with element labels, bonds where two atoms are closer than the
sum of their covalent radii times 1.2 (ASE's ``natural_cutoffs``), and a diverging colormap centred at zero
with a colorbar in kcal/mol. Pair relevances, when given, colour the bonds.
"""

from __future__ import annotations

import os

import ase
import matplotlib
import numpy as np
from ase.data import chemical_symbols, covalent_radii
from ase.neighborlist import natural_cutoffs, neighbor_list
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from qmlx.data.paths import savefig_atomic

CMAP = "RdBu_r"  # red: raises the energy (positive), blue: lowers it (negative)


def bonds(atoms: ase.Atoms) -> np.ndarray:
    """(n_bonds, 2) atom index pairs ``i < j`` closer than the sum of their covalent radii."""
    if len(atoms) < 2:
        return np.zeros((0, 2), dtype=int)
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    keep = i < j
    return np.stack([i[keep], j[keep]], axis=1)


def project_2d(positions: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates of ``positions (n, 3)`` on their two principal axes."""
    centred = positions - positions.mean(axis=0)
    if len(positions) < 2:
        return centred[:, :2]
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def draw_molecule(
    ax: Axes,
    atoms: ase.Atoms,
    relevance: np.ndarray,
    norm: Normalize,
    pairs: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """Draw one molecule on ``ax``; ``relevance (n_atoms,)`` in kcal/mol colours the atoms and
    ``pairs (n_atoms, n_atoms)`` (symmetrized) colours the bonds."""
    cmap = matplotlib.colormaps[CMAP]
    xy = project_2d(atoms.positions)
    b = bonds(atoms)
    if len(b):
        segments = xy[b]
        if pairs is not None:
            sym = pairs + pairs.T
            colors = cmap(norm(sym[b[:, 0], b[:, 1]]))
            ax.add_collection(LineCollection(segments, colors=colors, linewidths=5, zorder=1))
        ax.add_collection(LineCollection(segments, colors="0.3", linewidths=1.2, zorder=2))
    order = np.argsort(-atoms.positions[:, 2] if len(atoms) else [])
    for k in order:
        z = atoms.numbers[k]
        radius = 0.25 + 0.35 * covalent_radii[z]
        ax.add_patch(
            Circle(xy[k], radius, facecolor=cmap(norm(relevance[k])), edgecolor="0.2", lw=0.8, zorder=3)
        )
        ax.text(*xy[k], chemical_symbols[z], ha="center", va="center", fontsize=8, zorder=4)
    pad = 1.0
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


def plot_explanation(
    explanation, path: str | os.PathLike, max_molecules: int = 12, pairs: bool = False
) -> None:
    """Write a PNG of the first ``max_molecules`` molecules of an `Explanation`, in a grid with
    one shared colorbar (kcal/mol), atomically."""
    mols = explanation.molecules
    n = min(len(mols), max_molecules)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    shown = np.concatenate([explanation.molecule(i) for i in range(n)])
    limit = float(np.nanmax(np.abs(shown))) or 1.0
    norm = Normalize(-limit, limit)  # centred at zero
    fig = Figure(figsize=(3.2 * cols + 1.0, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        atoms = mols[k]
        title = f"{atoms.get_chemical_formula()}  E = {explanation.prediction[k]:.1f} kcal/mol"
        matrix = explanation.pairs[k] if pairs and explanation.pairs is not None else None
        draw_molecule(ax, atoms, explanation.molecule(k), norm, matrix, title)
    mappable = ScalarMappable(norm=norm, cmap=CMAP)
    fig.colorbar(mappable, ax=axes, shrink=0.8, label=f"{explanation.method} relevance [kcal/mol]")
    savefig_atomic(fig, path, dpi=130)
