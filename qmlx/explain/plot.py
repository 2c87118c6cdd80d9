"""Pictures of explanations: molecules drawn in 2-D with atoms coloured by relevance.

Layout of a molecule (`depict`):

- ``2d``: RDKit's 2-D depiction. Bonds and bond orders are perceived from the xyz geometry
  (`rdkit.Chem.rdDetermineBonds.DetermineBonds`, the molecule's charge, 0 when unknown) and
  `rdDepictor.Compute2DCoords` lays the graph out so that rings and methyl groups do not overlap
  (CoordGen's layout instead where two atoms' discs would overlap, as around crowded carbons with
  explicit hydrogens). Needs the ``chem`` extra.
- ``3d``: the positions projected onto their two principal axes (PCA, Å), atoms drawn back to
  front, bonds where two atoms are closer than the sum of their covalent radii times 1.2 (ASE's
  ``natural_cutoffs``). Used when RDKit is missing or cannot assign bonds (radicals, unusual
  charges), and for molecules of more than `RDKIT_MAX_ATOMS` atoms.

On either layout atoms are discs (sized by covalent radius) filled by relevance and labelled with
their element and 0-based index in the input (``C0``, ``H7``), the numbering of the ``qmlx
explain`` table; the label is black or white, whichever contrasts more with the fill. Signed
relevances use a diverging colormap centred at zero (red raises the energy, blue lowers it);
the unsigned ``gradient`` sensitivity uses a sequential one. Pair relevances, when given, colour
the bonds. The colour bar states the quantity and its unit: kcal/mol for relevances that split an
energy, none for the gradient norm.

`plot_explanation` draws every molecule, `PER_PAGE` to a page (``out.png``, ``out-2.png``, ... or
the pages of one PDF), and `write_html_report` writes a self-contained HTML page with the
pictures, the relevance tables and the model's metadata. All files are written atomically.
"""

from __future__ import annotations

import html
import io
import os
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ase
import matplotlib
import numpy as np
from ase.data import chemical_symbols, covalent_radii
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch
from matplotlib.path import Path as MplPath
from matplotlib.text import Text

from qmlx._io import atomic_path, savefig_atomic, write_text_atomic
from qmlx.chem.bonds import bonds
from qmlx.errors import QmlxError
from qmlx.explain.view3d import view3d_html

if TYPE_CHECKING:
    from qmlx.explain.walks import WalkResult

CMAP = "RdBu_r"  # signed relevance: red raises the energy (positive), blue lowers it (negative)
CMAP_UNSIGNED = "Reds"  # unsigned sensitivity (``gradient``): white 0 to dark red
PER_PAGE = 12  # molecules per page (PNG file or PDF page)
DEPICTIONS = ("auto", "2d", "3d")
MIN_SPAN = 5.0  # smallest width and height of a panel's drawing, in drawing units (Å for 3-D)
RDKIT_MAX_ATOMS = 150  # larger molecules are drawn from their 3-D geometry (bond orders get slow)
MIN_LABEL_PT = 5.0  # smallest atom-label font; a label larger than its disc gets a halo

# Colour-bar text per method, without the unit; ``None`` marks the unsigned methods (no kcal/mol).
_QUANTITIES: dict[str, str] = {
    "lrp": "LRP relevance",
    "lrp-pairs": "LRP relevance",
    "decomposition": "atom energy contribution $E_i$",
    "gradient-x-input": "gradient × input relevance",
    "integrated-gradients": "integrated-gradients relevance",
    "neuralized": "neuralized-KRR relevance",
    "novelty": "share of the molecule's novelty (unitless)",
}
UNSIGNED_METHODS = ("gradient",)
# no spaces inside $...$: colour-bar labels are wrapped at spaces
_GRADIENT_LABEL = r"sensitivity $\Vert\partial{E}/\partial{x_i^0}\Vert$ (unsigned gradient norm, no unit)"

__all__ = [
    "CMAP",
    "CMAP_UNSIGNED",
    "DEPICTIONS",
    "PER_PAGE",
    "Depiction",
    "colorbar_label",
    "depict",
    "draw_molecule",
    "explanation_figures",
    "label_color",
    "page_paths",
    "plot_explanation",
    "plot_walks",
    "project_2d",
    "relative_luminance",
    "write_html_report",
]


def _principal(positions: np.ndarray) -> np.ndarray:
    """(n, 3) coordinates of ``positions (n, 3)`` on their principal axes, largest variance first."""
    centred = positions - positions.mean(axis=0) if len(positions) else positions
    if len(positions) < 2:
        return np.zeros((len(positions), 3))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt.T
    return np.pad(coords, ((0, 0), (0, 3 - coords.shape[1])))


def project_2d(positions: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates of ``positions (n, 3)`` on their two principal axes."""
    return _principal(np.asarray(positions, dtype=float))[:, :2]


@dataclass
class Depiction:
    """2-D layout of one molecule.

    xy : (n_atoms, 2) drawing coordinates (Å for ``3d``; RDKit's units, 1.5 per bond, for ``2d``).
    bonds : (n_bonds, 2) atom index pairs.
    orders : (n_bonds,) bond orders 1, 2 or 3 to draw (Kekulé form for aromatic rings; all 1 for
        ``3d``).
    kind : ``"2d"`` (RDKit depiction) or ``"3d"`` (principal-axes projection).
    draw_order : atom indices in drawing order (back to front for ``3d``).
    """

    xy: np.ndarray
    bonds: np.ndarray
    orders: np.ndarray
    kind: str
    draw_order: np.ndarray


def _projection(atoms: ase.Atoms) -> Depiction:
    coords = _principal(atoms.positions)
    b = bonds(atoms)
    return Depiction(
        coords[:, :2], b, np.ones(len(b), dtype=int), "3d", np.argsort(coords[:, 2], kind="stable")
    )


def _have_rdkit() -> bool:
    try:
        import rdkit  # noqa: F401
    except ImportError:
        return False
    return True


def _disc_radii(numbers: np.ndarray) -> np.ndarray:
    """Drawn disc radius of each atom (Å, or RDKit units for ``2d``), from its covalent radius."""
    return 0.25 + 0.35 * covalent_radii[np.asarray(numbers, dtype=int)]


def _clearance(xy: np.ndarray, b: np.ndarray, radii: np.ndarray) -> float:
    """Smallest gap between the discs of two atoms that share no bond (negative: they overlap)."""
    if len(xy) < 2:
        return np.inf
    gap = np.linalg.norm(xy[:, None] - xy[None], axis=-1) - (radii[:, None] + radii[None])
    gap[np.diag_indices(len(xy))] = np.inf
    gap[b[:, 0], b[:, 1]] = gap[b[:, 1], b[:, 0]] = np.inf
    return float(gap.min())


def _rdkit_coords(mol, b: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(n, 2) 2-D coordinates of an RDKit molecule, scaled to a median bond length of 1.5.

    RDKit's own depiction (zig-zag chains, ring templates) is used unless two atoms' discs overlap
    there, as they can around crowded carbons with explicit hydrogens; then CoordGen's layout is
    used where it leaves more room.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDepictor

    def scaled(m) -> np.ndarray:
        xy = np.asarray(m.GetConformer().GetPositions(), dtype=float)[:, :2]
        if len(b):
            length = float(np.median(np.linalg.norm(xy[b[:, 0]] - xy[b[:, 1]], axis=1)))
            xy = xy * (1.5 / length if length > 1e-6 else 1.0)
        return xy

    first = Chem.Mol(mol)
    rdDepictor.Compute2DCoords(first)
    xy = scaled(first)
    if _clearance(xy, b, radii) >= 0.05:
        return xy
    try:
        from rdkit.Chem import rdCoordGen

        other = Chem.Mol(mol)
        rdCoordGen.AddCoords(other)
        xy_other = scaled(other)
    except Exception:  # CoordGen is missing from some RDKit builds
        return xy
    return xy_other if _clearance(xy_other, b, radii) > _clearance(xy, b, radii) else xy


def _rdkit_depiction(atoms: ase.Atoms) -> Depiction | None:
    """RDKit's 2-D layout with perceived bonds, or ``None`` if RDKit is missing or cannot assign
    bonds to this geometry."""
    if not 0 < len(atoms) <= RDKIT_MAX_ATOMS:
        return None
    try:
        from rdkit import Chem, rdBase

        from qmlx.chem.rdkit import rdkit_molecule
    except ImportError:
        return None
    try:
        with rdBase.BlockLogs():
            mol = rdkit_molecule(atoms)
            kekule = Chem.Mol(mol)
            try:
                Chem.Kekulize(kekule, clearAromaticFlags=True)
            except Exception:  # keep the aromatic bonds, drawn single
                kekule = mol
            b = np.array(
                [sorted((x.GetBeginAtomIdx(), x.GetEndAtomIdx())) for x in kekule.GetBonds()], dtype=int
            ).reshape(-1, 2)
            xy = _rdkit_coords(mol, b, _disc_radii(atoms.numbers))
    except Exception:  # RDKit cannot assign bonds (radicals, other charges) or lay them out
        return None
    orders = [x.GetBondTypeAsDouble() for x in kekule.GetBonds()]
    orders = np.array([int(o) if o in (1.0, 2.0, 3.0) else 1 for o in orders], dtype=int)
    # hydrogens first, so that heavy atoms and their labels lie on top where discs touch
    draw_order = np.argsort(atoms.numbers != 1, kind="stable")
    return Depiction(xy - xy.mean(axis=0), b, orders, "2d", draw_order)


def depict(atoms: ase.Atoms, depiction: str = "auto") -> Depiction:
    """Layout of ``atoms`` for drawing.

    ``"auto"`` and ``"2d"`` use RDKit's 2-D depiction when bonds can be perceived and fall back to
    the principal-axes projection otherwise (``"2d"`` raises if RDKit is not installed); ``"3d"``
    always projects the 3-D geometry.
    """
    if depiction not in DEPICTIONS:
        raise QmlxError(f"unknown depiction {depiction!r}; expected one of {', '.join(DEPICTIONS)}")
    if depiction == "2d" and not _have_rdkit():
        raise QmlxError('2-D depictions need RDKit: pip install "qmlx[chem]"')
    if depiction != "3d":
        found = _rdkit_depiction(atoms)
        if found is not None:
            return found
    return _projection(atoms)


def relative_luminance(color) -> float:
    """WCAG relative luminance (0 black to 1 white) of a matplotlib colour."""
    rgb = np.asarray(to_rgba(color)[:3])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def label_color(fill) -> str:
    """``"white"`` or ``"black"``, whichever contrasts more with ``fill`` (WCAG contrast ratio)."""
    lum = relative_luminance(fill)
    return "white" if (1.05 / (lum + 0.05)) > ((lum + 0.05) / 0.05) else "black"


def _quantity(explanation, unit: str | None) -> tuple[str, str]:
    """(what the colour scale shows, its unit or ``""``) for ``explanation.method``."""
    if explanation.method in UNSIGNED_METHODS:
        if unit is None:
            return _GRADIENT_LABEL, ""
        return _GRADIENT_LABEL.split(" (")[0], unit
    text = _QUANTITIES.get(explanation.method, f"{explanation.method} relevance")
    return text, getattr(explanation, "unit", "kcal/mol") if unit is None else unit


def _predicted(explanation, i: int, digits: int = 1, prefix: str = "") -> str:
    """What was explained for molecule ``i``: its predicted energy, or its novelty."""
    value = explanation.prediction[i]
    if explanation.method == "novelty":
        return f"novelty = {value:.{max(digits, 2)}f}"
    return f"{prefix}E = {value:.{digits}f} kcal/mol"


def colorbar_label(
    explanation, unit: str | None = None, label: str | None = None, pairs: bool = False
) -> str:
    """Colour-bar text for ``explanation``: the quantity its method computes and, where it has one,
    its unit (``[kcal/mol]`` for relevances that split an energy, none for ``gradient``).

    ``label`` replaces the whole text; ``unit`` replaces the unit (``""`` for none); ``pairs`` adds
    that the bonds show pair relevances.
    """
    if label is not None:
        return label
    text, unit = _quantity(explanation, unit)
    if pairs:
        text += "; bonds: pair relevance $P_{ij}+P_{ji}$"
    return f"{text} [{unit}]" if unit else text


def _norm(explanation, shown: Sequence[int], signed: bool) -> Normalize:
    """Colour scale shared by all pages: symmetric about 0 (signed) or from 0 (unsigned)."""
    values = [explanation.molecule(i) for i in shown]
    values = np.abs(np.concatenate(values)) if values else np.zeros(0)
    values = values[np.isfinite(values)]
    limit = float(values.max()) if len(values) else 0.0
    limit = limit if limit > 0 else 1.0
    return Normalize(-limit, limit) if signed else Normalize(0.0, limit)


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters from the left (keeps file names at the end of paths)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _segments(xy: np.ndarray, b: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """(n_lines, 2, 2) line segments of the bonds, two or three parallel lines for multiple bonds."""
    lines = []
    for (i, j), order in zip(b, orders):
        d = xy[j] - xy[i]
        length = float(np.hypot(*d)) or 1.0
        normal = np.array([-d[1], d[0]]) / length * 0.11 * length / 1.5
        offsets = {1: (0.0,), 2: (-0.5, 0.5), 3: (-1.0, 0.0, 1.0)}[int(order)]
        lines.extend([[xy[i] + o * normal, xy[j] + o * normal] for o in offsets])
    return np.array(lines, dtype=float).reshape(-1, 2, 2)


def draw_molecule(
    ax: Axes,
    atoms: ase.Atoms,
    relevance: np.ndarray,
    norm: Normalize,
    pairs: np.ndarray | None = None,
    title: str | None = None,
    depiction: str | Depiction = "auto",
    cmap: str = CMAP,
    note: bool = True,
) -> list[tuple[Text, float]]:
    """Draw one molecule on ``ax``.

    ``relevance (n_atoms,)`` colours the atoms through ``norm`` and ``cmap``, ``pairs (n_atoms,
    n_atoms)`` (symmetrized) colours the bonds; each atom is labelled with its element and 0-based
    index. ``depiction`` is a `Depiction` or a mode of `depict`. With ``note``, a molecule drawn from
    its 3-D geometry although a 2-D depiction was asked for says so under the panel.

    Returns ``(label, disc radius)`` pairs for `_fit_labels`.
    """
    colormap = matplotlib.colormaps[cmap]
    layout = depiction if isinstance(depiction, Depiction) else depict(atoms, depiction)
    xy = layout.xy
    if len(layout.bonds):
        if pairs is not None:
            sym = pairs + pairs.T
            colors = colormap(norm(sym[layout.bonds[:, 0], layout.bonds[:, 1]]))
            ax.add_collection(LineCollection(xy[layout.bonds], colors=colors, linewidths=8, zorder=1))
        lines = _segments(xy, layout.bonds, layout.orders)
        ax.add_collection(LineCollection(lines, colors="0.25", linewidths=1.1, zorder=2))
    labels = []
    radii = _disc_radii(atoms.numbers)
    step = 1.0 / (2 * len(atoms) + 1)  # each atom's label above its own disc, below nearer discs
    for rank, k in enumerate(layout.draw_order):
        fill = colormap(norm(relevance[k])) if np.isfinite(relevance[k]) else (0.85, 0.85, 0.85, 1.0)
        z = 3 + 2 * rank * step
        ax.add_patch(Circle(xy[k], radii[k], facecolor=fill, edgecolor="0.2", lw=0.8, zorder=z))
        text = ax.text(
            *xy[k],
            f"{chemical_symbols[atoms.numbers[k]]}{k}",
            ha="center",
            va="center_baseline",
            fontsize=8,
            color=label_color(fill),
            zorder=z + step,
            gid=f"atom-{k}",
        )
        labels.append((text, float(radii[k])))
    if len(atoms):
        pad = float(radii.max()) + 0.15
        lo, hi = xy.min(axis=0) - pad, xy.max(axis=0) + pad
        grow = np.maximum(MIN_SPAN - (hi - lo), 0.0) / 2  # small molecules are not blown up
        ax.update_datalim(np.stack([lo - grow, hi + grow]))
    else:
        ax.update_datalim([[-1.0, -1.0], [1.0, 1.0]])
    ax.margins(0)
    ax.autoscale_view()
    # equal aspect by widening the data limits: the axes keep their layout slot, so constrained
    # layout reserves the right space for titles (with adjustable="box" they can be cut off)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_gid(f"depiction-{layout.kind}")
    if note and layout.kind == "3d" and depiction in ("auto", "2d") and _have_rdkit():
        ax.set_xlabel("3-D projection: RDKit could not assign bonds", fontsize=6.5, color="0.4")
    if title:
        ax.set_title(title, fontsize=8.5)
    return labels


def _fit_labels(fig: Figure, labels: list[tuple[Text, float]]) -> None:
    """Shrink each atom label to fit its disc (after layout), between 5 and 8 pt; a label that still
    does not fit gets a halo in the opposite colour so it stays readable off the disc."""
    if not labels:
        return
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()
    for text, radius in labels:
        transform = text.axes.transData
        diameter = 2 * abs(transform.transform((radius, 0))[0] - transform.transform((0, 0))[0])
        box = text.get_window_extent(renderer)
        scale = min(0.86 * diameter / max(box.width, 1e-9), 0.8 * diameter / max(box.height, 1e-9))
        wanted = text.get_fontsize() * scale
        text.set_fontsize(float(np.clip(wanted, MIN_LABEL_PT, 8.0)))
        if wanted < MIN_LABEL_PT:
            halo = "black" if text.get_color() == "white" else "white"
            text.set_path_effects([patheffects.withStroke(linewidth=1.5, foreground=halo)])


def _validated_names(explanation, names: Sequence[str] | None) -> list[str]:
    n = len(explanation.molecules)
    if names is None:
        return [f"molecule {i}" for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise QmlxError(f"{len(names)} names for {n} molecules; give one name per molecule")
    return names


def _plan(
    explanation, names: Sequence[str] | None, depiction: str, per_page: int, max_molecules: int | None
) -> tuple[list[str], list[range]]:
    """Checked panel names and the molecule indices of each page."""
    if depiction not in DEPICTIONS:
        raise QmlxError(f"unknown depiction {depiction!r}; expected one of {', '.join(DEPICTIONS)}")
    if per_page < 1:
        raise QmlxError(f"per_page must be at least 1, got {per_page}")
    names = _validated_names(explanation, names)
    n = len(explanation.molecules)
    n = n if max_molecules is None else min(n, max_molecules)
    if n < 1:
        raise QmlxError("nothing to draw: no molecules")
    return names, [range(start, min(start + per_page, n)) for start in range(0, n, per_page)]


def _pages(
    explanation,
    names: list[str],
    pages: list[range],
    pairs: bool,
    depiction: str,
    unit: str | None,
    label: str | None,
) -> Iterator[Figure]:
    """One figure per page, on a colour scale shared by all pages."""
    mols = explanation.molecules
    n = pages[-1][-1] + 1
    signed = explanation.method not in UNSIGNED_METHODS
    cmap = CMAP if signed else CMAP_UNSIGNED
    norm = _norm(explanation, range(n), signed)
    draw_pairs = pairs and explanation.pairs is not None
    bar_label = colorbar_label(explanation, unit, label, pairs=draw_pairs)
    cols = min(len(pages[0]), 4)
    if label is None:  # derived labels have no spaces inside $...$ and can be wrapped
        bar_label = "\n".join(textwrap.wrap(bar_label, 60 if cols > 1 else 48))
    for number, shown in enumerate(pages, start=1):
        rows = int(np.ceil(len(shown) / cols))
        fig = Figure(figsize=(max(2.9 * cols, 4.2), 3.0 * rows + 1.0), layout="constrained")
        fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06, wspace=0.04, hspace=0.06)
        axes = fig.subplots(rows, cols, squeeze=False)
        labels = []
        for ax, i in zip(axes.flat, shown):
            atoms = mols[i]
            title = f"{_shorten(names[i], 40)}\n{atoms.get_chemical_formula()}   {_predicted(explanation, i)}"
            matrix = explanation.pairs[i] if draw_pairs else None
            labels += draw_molecule(ax, atoms, explanation.molecule(i), norm, matrix, title, depiction, cmap)
        for ax in axes.flat[len(shown) :]:
            ax.set_axis_off()
        bar = fig.colorbar(
            ScalarMappable(norm=norm, cmap=cmap),
            ax=axes,
            location="bottom",
            shrink=min(0.7, 0.45 * cols),
            aspect=35,
        )
        bar.set_label(bar_label, fontsize=9)
        bar.ax.tick_params(labelsize=8)
        if len(pages) > 1:
            fig.suptitle(f"molecules {shown[0]}–{shown[-1]} of {n}  (page {number}/{len(pages)})", fontsize=9)
        _fit_labels(fig, labels)
        yield fig


def explanation_figures(
    explanation,
    names: Sequence[str] | None = None,
    *,
    pairs: bool = False,
    depiction: str = "auto",
    unit: str | None = None,
    label: str | None = None,
    per_page: int = PER_PAGE,
    max_molecules: int | None = None,
) -> list[Figure]:
    """The pages `plot_explanation` writes, as matplotlib figures (one per ``per_page``
    molecules), without saving them. The arguments are those of `plot_explanation`."""
    names, pages = _plan(explanation, names, depiction, per_page, max_molecules)
    return list(_pages(explanation, names, pages, pairs, depiction, unit, label))


def page_paths(path: str | os.PathLike, n_pages: int) -> list[Path]:
    """File names of ``n_pages`` pages: ``path`` itself, then ``stem-2.suffix``, ``stem-3.suffix``..."""
    path = Path(path)
    return [path] + [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(2, n_pages + 1)]


def plot_explanation(
    explanation,
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    *,
    pairs: bool = False,
    depiction: str = "auto",
    unit: str | None = None,
    label: str | None = None,
    per_page: int = PER_PAGE,
    max_molecules: int | None = None,
    dpi: int = 200,
) -> list[Path]:
    """Draw the molecules of an `Explanation` with atoms coloured by relevance; returns the paths
    written.

    Every molecule is drawn (or the first ``max_molecules`` when given), ``per_page`` to a page in a
    grid of up to four columns, with one colour bar per page on a scale shared by all pages. A
    ``.pdf`` path gets one page per figure in that single file; any other suffix (``.png``,
    ``.svg``) writes ``path`` for the first page and ``stem-2.suffix``, ``stem-3.suffix``, ... for
    the rest. Each file is written atomically.

    Parameters
    ----------
    explanation : the `Explanation` to draw.
    path : output file; the format comes from its suffix.
    names : one label per molecule for the panel titles (e.g. ``"benzene.xyz"`` or
        ``"mols.xyz #3"``); by default ``"molecule i"``. Each title also gives the formula and
        the predicted energy.
    pairs : colour the bonds by pair relevance (``lrp-pairs`` explanations).
    depiction : ``"auto"`` (RDKit's 2-D depiction where bonds can be perceived, else the 3-D
        projection), ``"2d"`` (as auto, but RDKit must be installed) or ``"3d"``; see `depict`.
    unit : unit shown on the colour bar instead of the method's (``""`` for none).
    label : the whole colour-bar text, instead of the one derived from ``explanation.method``.
    per_page : molecules per page.
    max_molecules : draw only the first ``max_molecules`` molecules.
    dpi : resolution of raster output.
    """
    path = Path(path)
    names, pages = _plan(explanation, names, depiction, per_page, max_molecules)
    figures = _pages(explanation, names, pages, pairs, depiction, unit, label)
    if path.suffix.lower() == ".pdf":
        from matplotlib.backends.backend_pdf import PdfPages

        with atomic_path(path) as tmp:
            with PdfPages(tmp, metadata={"Creator": "qmlx"}) as pdf:
                for fig in figures:
                    pdf.savefig(fig)
        return [path]
    return [
        savefig_atomic(fig, target, dpi=dpi) for fig, target in zip(figures, page_paths(path, len(pages)))
    ]


def inline_svg(fig: Figure, salt: str) -> str:
    """Inline SVG text of ``fig`` (no XML prolog), text kept as text; ``salt`` keeps element ids
    distinct between the pictures of one page."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)


def write_html_report(
    explanation,
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    metadata: Mapping[str, object] | None = None,
    *,
    pairs: bool = False,
    depiction: str = "auto",
    unit: str | None = None,
    label: str | None = None,
) -> Path:
    """Write a self-contained HTML page: per molecule an inline SVG picture (as drawn by
    `plot_explanation`) and its relevance table, plus the model ``metadata`` (key → value) and the
    method; atomically. Returns ``path``."""
    names = _validated_names(explanation, names)
    mols = explanation.molecules
    signed = explanation.method not in UNSIGNED_METHODS
    cmap = CMAP if signed else CMAP_UNSIGNED
    norm = _norm(explanation, range(len(mols)), signed)
    draw_pairs = pairs and explanation.pairs is not None
    bar_label = colorbar_label(explanation, unit, label, pairs=draw_pairs)
    bar_fig = Figure(figsize=(5.5, 0.9), layout="constrained")
    bar = bar_fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), cax=bar_fig.add_subplot(), orientation="horizontal"
    )
    bar.set_label(bar_label, fontsize=9)
    esc = html.escape
    unit_text = _quantity(explanation, unit)[1] or "none (unsigned sensitivity)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>qmlx explanation ({esc(explanation.method)})</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;"
        "text-align:right}th{background:#eee}td.l,th.l{text-align:left}"
        ".mol{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start;border-top:1px solid #ccc;"
        "padding-top:1em;margin-top:1em}.mol svg{width:22em;height:auto}</style></head><body>",
        f"<h1>Explanation: {esc(explanation.method)}</h1>",
        f"<p>{len(mols)} molecule(s); relevance unit: {esc(unit_text)}. Atom indices are 0-based, in the "
        "order of the input file.</p>",
    ]
    if metadata:
        rows = "".join(
            f'<tr><th class="l">{esc(str(k))}</th><td class="l">{esc(str(v))}</td></tr>'
            for k, v in metadata.items()
        )
        parts.append(f"<h2>Model</h2><table>{rows}</table>")
    parts.append(inline_svg(bar_fig, "qmlx-colorbar"))
    for i, atoms in enumerate(mols):
        fig = Figure(figsize=(3.4, 3.4), layout="constrained")
        ax = fig.add_subplot()
        matrix = explanation.pairs[i] if draw_pairs else None
        rel = explanation.molecule(i)
        _fit_labels(fig, draw_molecule(ax, atoms, rel, norm, matrix, None, depiction, cmap))
        lo = explanation.molecules.offsets[i]
        bias = None if explanation.bias is None else explanation.bias[lo : lo + len(atoms)]
        head = '<tr><th>atom</th><th class="l">element</th><th>relevance</th>'
        head += "<th>bias</th></tr>" if bias is not None else "</tr>"
        body = "".join(
            f'<tr><td>{k}</td><td class="l">{chemical_symbols[z]}</td><td>{rel[k]:.4f}</td>'
            + (f"<td>{bias[k]:.4f}</td></tr>" if bias is not None else "</tr>")
            for k, z in enumerate(atoms.numbers)
        )
        ref = explanation.reference[i]
        summary = (
            f"{esc(atoms.get_chemical_formula())}, {_predicted(explanation, i, digits=4, prefix='predicted ')}"
            + (f", explained against {ref:.4f} kcal/mol" if np.isfinite(ref) else "")
        )
        view = view3d_html(atoms, rel, norm, cmap, f"qmlx-view-{i}", explanation.unit or "", size=300)
        parts.append(
            f'<div class="mol"><div>{inline_svg(fig, f"qmlx-{i}")}</div><div>{view}</div>'
            f"<div><h3>{esc(names[i])}</h3><p>{summary}</p><table>{head}{body}</table></div></div>"
        )
    parts.append("</body></html>")
    return write_text_atomic(path, "\n".join(parts) + "\n")


def similarity_map(
    explanation,
    i: int,
    path: str | os.PathLike,
    size: tuple[int, int] = (420, 420),
    with_hydrogens: bool = True,
) -> Path:
    """Draw molecule ``i`` of ``explanation`` in the style of RDKit's similarity maps (Riniker and
    Landrum, J. Cheminform. 5, 43, 2013): RDKit's 2-D depiction under a field of Gaussians, one per
    atom, weighted by its relevance (red positive, blue negative, contour lines), as a PNG written
    atomically. ``with_hydrogens=False`` adds each hydrogen's relevance to its heavy atom and draws
    the heavy atoms only. Needs RDKit (`Explanation.to_rdkit` builds the molecule)."""
    from rdkit import Chem
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import SimilarityMaps, rdMolDraw2D

    mol = Chem.Mol(explanation.to_rdkit()[i])
    weights = [a.GetDoubleProp("relevance") for a in mol.GetAtoms()]
    if not with_hydrogens:
        heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() != 1]
        folded = dict.fromkeys(heavy, 0.0)
        for atom in mol.GetAtoms():
            k = atom.GetIdx()
            target = k if atom.GetAtomicNum() != 1 else next((n.GetIdx() for n in atom.GetNeighbors()), None)
            if target in folded:
                folded[target] += weights[k]
        mol = Chem.RemoveHs(mol, sanitize=False)
        weights = [folded[k] for k in heavy]
    mol.RemoveAllConformers()
    rdDepictor.Compute2DCoords(mol)
    drawer = rdMolDraw2D.MolDraw2DCairo(*size)
    SimilarityMaps.GetSimilarityMapFromWeights(
        mol, weights, draw2d=drawer, colorMap=matplotlib.colormaps[CMAP], contourLines=8
    )
    drawer.FinishDrawing()
    with atomic_path(path) as tmp:
        tmp.write_bytes(drawer.GetDrawingText())
    return Path(path)


# -- relevant walks ----------------------------------------------------------------------------------


def _atom_label(atoms: ase.Atoms, i: int) -> str:
    return f"{atoms[i].symbol}{i}"


def _walk_curve(xy: np.ndarray, walk: np.ndarray, rank: int, radii: np.ndarray) -> np.ndarray:
    """(m, 2) polyline of one walk on the 2-D drawing: a quadratic Bezier arc per step between two
    atoms (curvature varied by ``rank`` so overlapping walks stay apart), one petal-shaped loop per
    run of self-steps (longer for longer runs), trimmed where it enters the first and last atoms'
    discs (``radii``)."""
    centre = xy.mean(axis=0)
    t = np.linspace(0.0, 1.0, 40)[:, None]
    parts = []
    s = 0
    while s < len(walk) - 1:
        a = xy[walk[s]]
        run = 0
        while s + run < len(walk) - 1 and walk[s + run + 1] == walk[s]:
            run += 1
        if run:  # the residual, ``run`` blocks in a row
            out = a - centre
            theta = np.arctan2(out[1], out[0]) if np.hypot(*out) > 1e-6 else np.pi / 2
            theta += 0.5 * ((rank % 5) - 2) + 1.2 * s
            angle = theta + (t - 0.5) * 1.4
            length = (0.45 + 0.15 * run) * np.sin(np.pi * t)
            parts.append(a + length * np.hstack([np.cos(angle), np.sin(angle)]))
            s += run
            continue
        c = xy[walk[s + 1]]
        d = c - a
        rad = (0.12 + 0.06 * (rank % 4)) * (1 if rank % 2 == 0 else -1)
        ctrl = (a + c) / 2 + rad * np.array([-d[1], d[0]])
        parts.append((1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * c)
        s += 1
    curve = np.concatenate(parts)
    start = np.linalg.norm(curve - xy[walk[0]], axis=1) > radii[walk[0]]
    end = np.linalg.norm(curve - xy[walk[-1]], axis=1) > radii[walk[-1]]
    first = int(np.argmax(start))
    last = len(curve) - int(np.argmax(end[::-1]))
    return curve[first:last]


def plot_walks(
    atoms: ase.Atoms, result: WalkResult, path: str | os.PathLike, top: int = 12, title: str | None = None
) -> None:
    """Draw the ``top`` strongest walks of ``result`` on the molecule ``atoms`` (positions in Å) and
    write a PNG (or PDF, by suffix) atomically.

    Left: the molecule projected on its two principal axes (`qmlx.explain.plot.project_2d`), bonds
    in grey, atoms labelled element + index; each walk one stroke from a dot at ``i_0`` through
    ``i_1, ...`` to an arrowhead at ``i_T``, a run of self-steps (``i_t = i_{t+1}``, the residual) a
    loop out of the atom and back, longer for more steps; red raises the energy, blue lowers it, width grows with ``|relevance|``,
    colour bar in kcal/mol. Right: the same walks as a bar chart, labelled with their atoms.
    """
    k = min(top, len(result.relevance))
    walks, rel = result.walks[:k], result.relevance[:k]
    cmap = ScalarMappable(cmap=CMAP).get_cmap()
    limit = float(np.abs(rel).max()) if k else 1.0
    norm = Normalize(-limit, limit)  # centred at zero
    xy = project_2d(atoms.positions)
    radii = np.where(atoms.numbers == 1, 0.22, 0.3)
    fig = Figure(figsize=(13, 6.2), layout="constrained")
    ax, bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1.0]})
    b = bonds(atoms)
    if len(b):
        ax.add_collection(LineCollection(xy[b], colors="0.8", linewidths=2.5, zorder=1))
    for z, w in enumerate(range(k - 1, -1, -1)):  # strongest drawn last, on top
        color = cmap(norm(rel[w]))
        width = 0.8 + 3.2 * abs(rel[w]) / limit
        curve = _walk_curve(xy, walks[w], w, radii)
        if len(curve) < 2:
            continue
        ax.plot(*curve[0], "o", color=color, ms=2 + width, zorder=5 + z)
        ax.add_patch(
            FancyArrowPatch(
                path=MplPath(curve),
                arrowstyle="-|>",
                mutation_scale=6 + 2.5 * width,
                color=color,
                lw=width,
                alpha=0.9,
                zorder=5 + z,
                capstyle="round",
                joinstyle="round",
            )  # fmt: skip
        )
    for i in range(len(atoms)):
        ax.add_patch(Circle(xy[i], radii[i], fc="white", ec="0.35", lw=1.0, zorder=100))
        ax.text(*xy[i], _atom_label(atoms, i), ha="center", va="center", fontsize=7, zorder=101)
    pad = 1.2
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        f"top {k} of {result.n_walks:,} walks i0 → … → i{result.order} (● start, ▶ end)", fontsize=10
    )
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=CMAP), ax=ax, location="bottom", shrink=0.6, pad=0.02,
        label="walk relevance [kcal/mol]",
    )  # fmt: skip
    pos = np.arange(k)[::-1]
    bar.barh(pos, rel, color=cmap(norm(rel)), edgecolor="0.3", lw=0.5)
    bar.set_yticks(pos, [" → ".join(_atom_label(atoms, int(i)) for i in seq) for seq in walks], fontsize=8)
    bar.axvline(0, color="0.3", lw=0.8)
    bar.set_xlabel("walk relevance [kcal/mol]")
    explained = result.prediction - result.reference
    bar.set_title(
        f"E − Σref = {explained:.2f} kcal/mol = all walks {result.walks_total:.2f} + bias {result.bias_total:.2f}",
        fontsize=9,
    )
    fig.suptitle(title or f"{atoms.get_chemical_formula()}: relevant walks (GNN-LRP)", fontsize=11)
    savefig_atomic(fig, path, dpi=130)
