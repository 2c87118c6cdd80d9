"""Local chemical potentials Omega_A(r) of DTNN and SchNet (Schütt et al., Nat. Commun. 8, 13890, 2017).

Omega_A(r) is the energy contribution the network predicts for a probe atom of element A
(hydrogen by default) placed at r next to a molecule, when messages flow only from the molecule
to the probe:

1. the molecule runs through the network alone; its atom features after each interaction block
   are those of the molecule without the probe;
2. at interaction pass t the probe's features are updated from the molecule's features at step
   t, with the model's own interaction function (``model.interact``, its radial basis and cutoff);
   the probe receives messages and sends none, and probes do not see each other;
3. the probe's final features go through the atom-wise output head (including the element
   reference energy), and the energy of the isolated probe (the same network for a probe that
   receives no message, i.e. the probe at infinite distance) is subtracted.

So Omega_A(r) < 0 means the model predicts that an A atom at r is stabilized by the molecule,
in kcal/mol. Many probe positions are evaluated at once: the molecule and k probes form one
`Batch` whose pair list holds only molecule -> probe edges within the model's cutoff, and each
interaction step runs once for all probes. Updates the interaction function computes for
molecule atoms in that batch are discarded (the molecule's features come from step 1).

Domain: a probe closer than 0.5 Å to a molecule atom is outside what the models accept (see
`qmlx.data.domain`); its value is NaN. A probe that no molecule atom reaches within the model's
cutoff receives no message and *is* the isolated probe: its value is 0 exactly. Probes between
0.5 Å and the shortest distance of the training data (about 0.97 Å for QM7) are extrapolation.

Evaluation surfaces: `potential_plane` (a plane through or parallel to the molecule's best-fit
plane, as a 2-D grid) and `potential_surface` (points on the union of spheres of radius
vdW radius + offset around the atoms). `plot_potential` draws either.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import ase
import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, vdw_radii

from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import DataFormatError, DomainError, QmlxError
from qmlx.nn.batch import Batch
from qmlx.nn.models import InteractionNetwork

#: probes closer than this to a molecule atom (Å) are outside the models' domain (NaN)
MIN_PROBE_DISTANCE = 0.5
#: probe positions per vectorized pass (bounds the memory of the pair tensors)
DEFAULT_CHUNK = 4096
#: van der Waals radius (Å) used for elements ASE has none for
FALLBACK_VDW_RADIUS = 2.0

__all__ = [
    "MIN_PROBE_DISTANCE", "PlaneBasis", "PotentialPlane", "PotentialSurface", "chemical_potential",
    "isolated_probe_energy", "molecule_plane", "plot_potential", "potential_plane", "potential_surface",
    "probe_number", "surface_points", "surface_radii",
]  # fmt: skip


@dataclass(frozen=True)
class PlaneBasis:
    """A plane in space: ``origin (3,)`` Å, orthonormal in-plane ``axes (2, 3)`` and ``normal (3,)``.

    In-plane coordinates ``(x, y)`` map to ``origin + x * axes[0] + y * axes[1]``.
    """

    origin: np.ndarray
    axes: np.ndarray
    normal: np.ndarray

    def to_3d(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Points ``(..., 3)`` Å for in-plane coordinates ``x, y`` of any equal shape (Å)."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return self.origin + x[..., None] * self.axes[0] + y[..., None] * self.axes[1]

    def project(self, positions: np.ndarray) -> np.ndarray:
        """``(n, 3)`` -> ``(n, 3)``: in-plane x, y and the height above the plane (along ``normal``), Å."""
        rel = np.asarray(positions, dtype=float) - self.origin
        return np.stack([rel @ self.axes[0], rel @ self.axes[1], rel @ self.normal], axis=-1)


class PotentialPlane(NamedTuple):
    """Omega on a planar grid: ``X, Y (ny, nx)`` in-plane coordinates in Å, ``values (ny, nx)``
    in kcal/mol (NaN within 0.5 Å of an atom), and the plane's `PlaneBasis`."""

    X: np.ndarray
    Y: np.ndarray
    values: np.ndarray
    basis: PlaneBasis


class PotentialSurface(NamedTuple):
    """Omega on a surface around a molecule: ``points (k, 3)`` in Å, ``values (k,)`` in kcal/mol."""

    points: np.ndarray
    values: np.ndarray


def _known_elements(model: InteractionNetwork) -> list[int] | None:
    """Elements the model was trained on: the recorded domain, else the head's nonzero references,
    else ``None`` (an untrained model: any element of its embedding)."""
    from qmlx.nn.io import network_domain

    domain = network_domain(model)
    if domain is not None:
        return list(domain.elements)
    known = torch.nonzero(model.head.reference != 0).flatten().tolist()
    return known or None


def probe_number(model: InteractionNetwork, probe: str | int) -> int:
    """The nuclear charge of ``probe`` (a symbol such as ``"H"`` or a number), checked against the
    elements the model knows; raises `DomainError` (or `QmlxError` for a non-element) otherwise."""
    if isinstance(probe, str):
        key = probe.strip()
        z = atomic_numbers.get(key[:1].upper() + key[1:].lower()) if key else None
        if z is None or z == 0:
            raise QmlxError(f"unknown probe element {probe!r}; give an element symbol such as 'H'")
    elif isinstance(probe, (int, np.integer)) and not isinstance(probe, bool):
        z = int(probe)
    else:
        raise QmlxError(f"probe must be an element symbol or a nuclear charge, got {probe!r}")
    known = _known_elements(model)
    n_embed = model.embedding.num_embeddings
    if not 1 <= z < n_embed or (known is not None and z not in known):
        names = ", ".join(chemical_symbols[k] for k in known) if known else f"Z = 1..{n_embed - 1}"
        label = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z = {z}"
        raise DomainError(f"probe element {label} is not one the model knows ({names})")
    return z


def _single_molecule(atoms_or_molecules: ase.Atoms | Molecules | Sequence[ase.Atoms]) -> Molecules:
    mols = as_molecules(atoms_or_molecules)
    if len(mols) != 1:
        raise QmlxError(f"chemical potentials are computed for one molecule at a time, got {len(mols)}")
    return mols


def _float64_copy(model: InteractionNetwork) -> InteractionNetwork:
    if not isinstance(model, InteractionNetwork):
        raise QmlxError(f"chemical potentials need a SchNet or DTNN model, got {type(model).__name__}")
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _molecule_batch(Z: torch.Tensor, R: torch.Tensor, cutoff: float) -> Batch:
    """One molecule with its half pair list ``i < j``, ``d_ij < cutoff``."""
    n = len(Z)
    i, j = torch.triu_indices(n, n, offset=1)
    keep = (R[j] - R[i]).norm(dim=-1) < cutoff
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(Z=Z, R=R, mol_index=zeros, idx_i=i[keep], idx_j=j[keep], n_mol=1)


@torch.no_grad()
def isolated_probe_energy(model: InteractionNetwork, probe: str | int = "H") -> float:
    """The energy (kcal/mol) the model predicts for a lone probe atom: the probe at infinite
    distance, which `chemical_potential` subtracts."""
    net = _float64_copy(model)
    z = probe_number(net, probe)
    empty = torch.zeros(0, dtype=torch.long)
    batch = Batch(torch.tensor([z]), torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, dtype=torch.long),
                  empty, empty, 1)  # fmt: skip
    return float(net(batch).atom_energies[0])


@torch.no_grad()
def _probe_pass(
    net: InteractionNetwork, mol: Batch, features: list[torch.Tensor], z: int, P: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute probe energies ``(m,)`` kcal/mol at ``P (m, 3)`` Å and whether each probe received a
    message ``(m,)`` bool, for the molecule ``mol`` whose features after each step are ``features``."""
    n, m = len(mol.Z), len(P)
    d = torch.cdist(P, mol.R)
    probe_idx, atom_idx = torch.nonzero(d < net.cutoff, as_tuple=True)
    batch = Batch(
        Z=torch.cat([mol.Z, torch.full((m,), z, dtype=torch.long)]),
        R=torch.cat([mol.R, P]),
        mol_index=torch.cat([torch.zeros(n, dtype=torch.long), torch.arange(1, m + 1)]),
        idx_i=atom_idx,  # molecule atoms come first, so idx_i < idx_j
        idx_j=probe_idx + n,
        n_mol=m + 1,
    )
    _, rbf, fcut = net.pair_features(batch)
    Zp = batch.Z[n:]
    x_probe = net.embed(Zp)
    for t in range(len(net.interactions)):
        # the molecule's features are those without the probe; their updates here are discarded
        x = torch.cat([features[t], x_probe])
        x_probe = x_probe + net.interact(t, x, rbf, fcut, batch)[n:]
    received = torch.bincount(probe_idx, minlength=m) > 0
    return net.head(x_probe, Zp), received


def chemical_potential(
    model: InteractionNetwork,
    atoms_or_molecules: ase.Atoms | Molecules | Sequence[ase.Atoms],
    points: np.ndarray,
    probe: str | int = "H",
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Local chemical potential Omega_probe at ``points``, relative to the isolated probe.

    Parameters
    ----------
    model : a trained `SchNet` or `DTNN` (left unchanged; evaluated in float64 on a copy).
    atoms_or_molecules : one molecule (``ase.Atoms`` or a one-molecule `Molecules`), positions
        in Å; elements the model never saw raise `DomainError`.
    points : ``(k, 3)`` probe positions in Å.
    probe : the probe's element symbol or nuclear charge (``"H"``); it must be an element the
        model knows, else `DomainError`.
    chunk : probes per vectorized pass.

    Returns
    -------
    ``(k,)`` Omega in kcal/mol: the probe's atom energy minus that of the isolated probe. NaN
    where a probe lies closer than `MIN_PROBE_DISTANCE` (0.5 Å) to a molecule atom; exactly 0
    where no atom lies within the model's cutoff of the probe.
    """
    from qmlx.nn.io import check_network_domain

    mols = _single_molecule(atoms_or_molecules)
    P = np.asarray(points, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 3 or not np.isfinite(P).all():
        raise DataFormatError(f"points must be a finite (k, 3) array in Å, got shape {P.shape}")
    check_network_domain(model, mols)
    net = _float64_copy(model)
    z = probe_number(net, probe)
    out = np.full(len(P), np.nan)
    if len(P) == 0:
        return out
    R = torch.as_tensor(mols.R, dtype=torch.float64)
    mol = _molecule_batch(torch.as_tensor(mols.Z, dtype=torch.long), R, net.cutoff)
    with torch.no_grad():
        features = net(mol).features
    e_iso = isolated_probe_energy(net, z)
    Pt = torch.as_tensor(P)
    valid = (torch.cdist(Pt, R).min(dim=1).values >= MIN_PROBE_DISTANCE).numpy()
    idx = np.flatnonzero(valid)
    step = max(int(chunk), 1)
    for start in range(0, len(idx), step):
        sel = idx[start : start + step]
        energy, received = _probe_pass(net, mol, features, z, Pt[sel])
        # a probe that receives no message is the isolated probe: 0 exactly, not a rounding residue
        out[sel] = np.where(received.numpy(), (energy - e_iso).numpy(), 0.0)
    return out


def molecule_plane(atoms: ase.Atoms, offset: float = 0.0, up: int | None = None) -> PlaneBasis:
    """The best-fit plane of ``atoms`` (principal axes of the positions), shifted by ``offset`` Å
    along its normal. Signs are fixed so that the result does not depend on the SVD's choice;
    with ``up`` (an atom index) the in-plane y axis points from the centre towards that atom."""
    R = np.asarray(atoms.positions, dtype=float)
    centre = R.mean(axis=0)
    if len(R) < 3:
        raise QmlxError("a best-fit plane needs at least 3 atoms; pass a PlaneBasis instead")
    _, _, vt = np.linalg.svd(R - centre, full_matrices=False)
    axes = vt.copy()
    for k in range(3):
        if axes[k][np.argmax(np.abs(axes[k]))] < 0:
            axes[k] = -axes[k]
    normal = np.cross(axes[0], axes[1])  # right-handed
    if up is not None:
        towards = R[up] - centre
        towards -= (towards @ normal) * normal
        if np.linalg.norm(towards) < 1e-6:
            raise QmlxError(f"atom {up} lies on the plane's normal through the centre; pick another")
        y = towards / np.linalg.norm(towards)
        axes[:2] = np.cross(y, normal), y  # x, y, normal stay right-handed
    return PlaneBasis(origin=centre + offset * normal, axes=axes[:2], normal=normal)


def potential_plane(
    model: InteractionNetwork,
    atoms: ase.Atoms,
    probe: str | int = "H",
    spacing: float = 0.1,
    margin: float = 2.0,
    offset: float = 0.0,
    basis: PlaneBasis | None = None,
) -> PotentialPlane:
    """Omega on a 2-D grid in the molecule's best-fit plane shifted by ``offset`` Å along its
    normal (or in ``basis``, which then overrides ``offset``), covering the atoms' in-plane extent
    plus ``margin`` Å with grid ``spacing`` Å.

    Returns `PotentialPlane` ``(X, Y, values, basis)``: ``X, Y (ny, nx)`` in-plane coordinates in
    Å, ``values (ny, nx)`` in kcal/mol (NaN within 0.5 Å of an atom)."""
    if spacing <= 0:
        raise QmlxError(f"grid spacing must be positive, got {spacing}")
    basis = basis or molecule_plane(atoms, offset)
    xy = basis.project(atoms.positions)[:, :2]
    lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    xs = np.arange(lo[0], hi[0] + 0.5 * spacing, spacing)
    ys = np.arange(lo[1], hi[1] + 0.5 * spacing, spacing)
    X, Y = np.meshgrid(xs, ys)
    values = chemical_potential(model, atoms, basis.to_3d(X, Y).reshape(-1, 3), probe)
    return PotentialPlane(X, Y, values.reshape(X.shape), basis)


def surface_radii(atoms: ase.Atoms, offset: float = 0.0) -> np.ndarray:
    """``(n_atoms,)`` sphere radii in Å: ASE's van der Waals radius (Bondi's for H C N O S;
    `FALLBACK_VDW_RADIUS` where ASE has none) plus ``offset``."""
    z = np.asarray(atoms.numbers)
    r = np.where(z < len(vdw_radii), vdw_radii[np.minimum(z, len(vdw_radii) - 1)], np.nan)
    return np.where(np.isfinite(r), r, FALLBACK_VDW_RADIUS) + offset


def _sphere(n: int) -> np.ndarray:
    """``(n, 3)`` nearly uniform unit vectors (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    cos_t = 1.0 - 2.0 * k / n
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    phi = np.pi * (1.0 + np.sqrt(5.0)) * k
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def surface_points(atoms: ase.Atoms, offset: float = 1.5, density: float = 3.0) -> np.ndarray:
    """``(k, 3)`` points (Å) on the outer surface of the union of spheres of radius
    vdW radius (ASE's, Bondi for H C N O S) + ``offset`` Å around the atoms, at about
    ``density`` points per Å^2: points inside another atom's sphere are dropped."""
    if offset < 0 or density <= 0:
        raise QmlxError(f"need offset >= 0 Å and density > 0 per Å^2, got {offset}, {density}")
    R = np.asarray(atoms.positions, dtype=float)
    radii = surface_radii(atoms, offset)
    parts = []
    for i, (centre, r) in enumerate(zip(R, radii)):
        pts = centre + r * _sphere(max(int(np.ceil(4 * np.pi * r * r * density)), 1))
        d = np.linalg.norm(pts[:, None, :] - R[None], axis=-1)
        inside = d < radii[None] - 1e-9
        inside[:, i] = False
        parts.append(pts[~inside.any(axis=1)])
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def potential_surface(
    model: InteractionNetwork,
    atoms: ase.Atoms,
    probe: str | int = "H",
    offset: float = 1.5,
    density: float = 3.0,
) -> PotentialSurface:
    """Omega on `surface_points` (vdW radius + ``offset`` Å, ``density`` points per Å^2).
    Returns `PotentialSurface` ``(points (k, 3) Å, values (k,) kcal/mol)``."""
    points = surface_points(atoms, offset, density)
    return PotentialSurface(points, chemical_potential(model, atoms, points, probe))


# ---------------------------------------------------------------------------------------------
# drawing


def _draw_atoms(ax, atoms: ase.Atoms, basis: PlaneBasis) -> None:
    """Atoms (discs with element labels, drawn from below the plane upwards) and bonds, projected
    onto ``basis``."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle

    from qmlx.chem.bonds import bonds

    proj = basis.project(atoms.positions)
    xy = proj[:, :2]
    b = bonds(atoms)
    if len(b):
        ax.add_collection(LineCollection(xy[b], colors="0.15", linewidths=1.4, zorder=3))
    for k in np.argsort(proj[:, 2]):
        z = int(atoms.numbers[k])
        radius = 0.12 + 0.25 * covalent_radii[z]
        ax.add_patch(Circle(xy[k], radius, facecolor="white", edgecolor="0.1", lw=0.9, zorder=4))
        ax.text(*xy[k], chemical_symbols[z], ha="center", va="center", fontsize=7, zorder=5)


def _draw_plane(ax, atoms: ase.Atoms, result: PotentialPlane, levels: np.ndarray, cmap: str) -> None:
    ax.set_facecolor("0.82")  # NaN: within 0.5 Å of an atom, outside the model's domain
    ax.contourf(result.X, result.Y, result.values, levels=levels, cmap=cmap, extend="both")
    if np.isfinite(result.values).any() and np.nanmin(result.values) < 0 < np.nanmax(result.values):
        ax.contour(result.X, result.Y, result.values, levels=[0.0], colors="k", linewidths=0.6)
    _draw_atoms(ax, atoms, result.basis)
    ax.set_xlim(result.X.min(), result.X.max())
    ax.set_ylim(result.Y.min(), result.Y.max())


def _draw_surface(
    ax, atoms: ase.Atoms, result: PotentialSurface, norm, cmap: str, view: PlaneBasis | None
) -> None:
    if view is None:
        view = (
            molecule_plane(atoms) if len(atoms) >= 3 else PlaneBasis(np.zeros(3), np.eye(3)[:2], np.eye(3)[2])
        )
    proj = view.project(result.points)
    order = np.argsort(proj[:, 2])  # seen from above: the points above the plane are drawn last
    order = order[np.isfinite(result.values[order])]
    ax.scatter(proj[order, 0], proj[order, 1], c=result.values[order], s=14, cmap=cmap, norm=norm,
               edgecolors="none", zorder=2)  # fmt: skip
    _draw_atoms(ax, atoms, view)
    pad = 0.3
    ax.set_xlim(proj[:, 0].min() - pad, proj[:, 0].max() + pad)
    ax.set_ylim(proj[:, 1].min() - pad, proj[:, 1].max() + pad)


def plot_potential(
    atoms: ase.Atoms | Sequence[ase.Atoms],
    results: PotentialPlane | PotentialSurface | Sequence[PotentialPlane | PotentialSurface],
    path: str | os.PathLike,
    probe: str | int = "H",
    titles: Sequence[str] | None = None,
    limit: float | None = None,
    columns: int | None = None,
    suptitle: str | None = None,
    views: PlaneBasis | Sequence[PlaneBasis | None] | None = None,
) -> Path:
    """Draw chemical potential maps and write them to ``path`` (PNG, PDF, ...) atomically.

    A `PotentialPlane` is drawn as a filled contour map (diverging colormap centred at 0, a black
    line at Omega = 0, grey where the probe is within 0.5 Å of an atom) with the atoms and bonds
    projected onto the plane. A `PotentialSurface` is drawn as its points seen from above a plane
    (``views``: one `PlaneBasis` for all panels or one per panel; default the molecule's
    best-fit plane), near points hiding far ones. Several results become panels with one shared
    colour scale; ``atoms`` is one molecule for all panels or one per result.

    limit : half-range of the colour scale in kcal/mol; default the 98th percentile of |Omega|
        over all panels, so that the large values right next to the atoms do not wash out the
        map (values beyond it take the end colours).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from qmlx._io import savefig_atomic
    from qmlx.explain.plot import CMAP

    if isinstance(results, (PotentialPlane, PotentialSurface)):
        results = [results]
    results = list(results)
    n = len(results)
    mols = [atoms] * n if isinstance(atoms, ase.Atoms) else list(atoms)
    if len(mols) != n or not results:
        raise QmlxError(f"need one molecule per result, got {len(mols)} molecules and {n} results")
    views = [views] * n if views is None or isinstance(views, PlaneBasis) else list(views)
    values = np.concatenate([np.ravel(r.values) for r in results])
    values = values[np.isfinite(values)]
    if limit is None:
        limit = float(np.percentile(np.abs(values), 98)) if len(values) else 1.0
    limit = limit if limit > 0 else 1.0
    norm = Normalize(-limit, limit)
    levels = np.linspace(-limit, limit, 25)
    cols = columns or min(n, 3)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(4.0 * cols + 1.2, 3.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        if isinstance(results[k], PotentialPlane):
            _draw_plane(ax, mols[k], results[k], levels, CMAP)
        else:
            _draw_surface(ax, mols[k], results[k], norm, CMAP, views[k] if k < len(views) else None)
        ax.set_aspect("equal")
        ax.set_xlabel("Å", fontsize=8)
        ax.set_ylabel("Å", fontsize=8)
        ax.tick_params(labelsize=7)
        if titles is not None and k < len(titles):
            ax.set_title(titles[k], fontsize=9)
    sym = chemical_symbols[int(probe)] if isinstance(probe, (int, np.integer)) else probe
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=CMAP),
        ax=axes,
        shrink=0.85,
        extend="both",
        label=rf"$\Omega_\mathrm{{{sym}}}$ (kcal/mol), relative to an isolated {sym}",
    )
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return savefig_atomic(fig, path, dpi=130)
