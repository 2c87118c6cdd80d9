"""Local chemical potentials Omega_H of the shipped QM7 networks for benzene and pyridine.

Omega_H(r) (Schütt et al., Nat. Commun. 8, 13890, 2017; `qmlx.explain.potential`) is the energy
the network predicts for a hydrogen probe at r that receives messages from the molecule and
sends none, relative to an isolated H, in kcal/mol. For qm7-dtnn and qm7-schnet and for benzene
and pyridine (ASE's geometries), this script computes

- maps in the ring plane and in the plane 1 Å above it (0.1 Å grid, 2.5 Å margin);
- Omega on the surfaces vdW radius + 1.0 Å and + 1.5 Å around the atoms
  (10 points per Å^2), with statistics per element of the atom each surface point belongs to;
- Omega at named points: over the ring centre, outward from N (pyridine's lone pair) or from
  the corresponding C (benzene), and outward from the H opposite it;
- timings of the vectorized evaluation (points per second, one thread).

    python experiments/chemical_potentials.py

Writes ``chemical_potential_in_plane.png``, ``_above.png``, ``_surface.png`` and
``chemical_potentials.md`` / ``.json`` to ``--out-dir`` (default ``results/``); ``--report-only``
rewrites the Markdown only (the JSON does not hold the maps).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.data import chemical_symbols

from qmlx.explain.potential import (
    chemical_potential,
    isolated_probe_energy,
    molecule_plane,
    plot_potential,
    potential_plane,
    potential_surface,
    surface_radii,
)
from qmlx.nn import load_network

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

MODELS = ("qm7-dtnn", "qm7-schnet")
#: name: (ASE formula, index of the atom whose outward direction is the map's +y axis, index of
#: the H opposite it)
MOLECULES = {"benzene": ("C6H6", 0, 9), "pyridine": ("C5H5N", 0, 6)}
SURFACE_OFFSETS = (1.0, 1.5)
#: distances (Å) of the line profiles above the ring centre and outward from atom ``up``
PROFILE = np.arange(0.5, 5.51, 0.25)
SPACING, MARGIN, DENSITY = 0.1, 2.5, 10.0


def _where(atoms, point: np.ndarray, basis) -> str:
    """Where ``point`` (Å) lies: nearest atom, its distance, height above the ring plane."""
    d = np.linalg.norm(atoms.positions - point, axis=1)
    k = int(np.argmin(d))
    h = float(basis.project(point[None])[0, 2])
    return f"{d[k]:.2f} Å from {chemical_symbols[atoms.numbers[k]]}{k}, {h:+.2f} Å from the ring plane"


def _extremes(atoms, points: np.ndarray, values: np.ndarray, basis) -> dict:
    ok = np.isfinite(values)
    p, v = points[ok], values[ok]
    lo, hi = int(np.argmin(v)), int(np.argmax(v))
    return {
        "min": float(v[lo]),
        "min_where": _where(atoms, p[lo], basis),
        "max": float(v[hi]),
        "max_where": _where(atoms, p[hi], basis),
        "n_points": int(len(values)),
        "n_masked": int((~ok).sum()),
    }


def named_points(atoms, up: int, opposite: int) -> dict[str, np.ndarray]:
    """Probe positions (Å) to compare between molecules and models."""
    basis = molecule_plane(atoms, 0.0, up=up)
    c, n = basis.origin, basis.normal
    X = chemical_symbols[atoms.numbers[up]]
    u = atoms.positions[up] - c
    u /= np.linalg.norm(u)
    carbon = int(np.argmin(np.linalg.norm(atoms.positions[:6] - atoms.positions[opposite], axis=1)))
    v = atoms.positions[opposite] - atoms.positions[carbon]
    v /= np.linalg.norm(v)
    pts = {
        "ring centre, in plane": c,
        "ring centre, 1 Å above": c + n,
        "ring centre, 2 Å above": c + 2 * n,
        f"{X}{up}, 1 Å above": atoms.positions[up] + n,
    }
    for s in (1.0, 1.5, 2.0, 2.5, 3.0):
        pts[f"outward from {X}{up}, {s:.1f} Å in plane"] = atoms.positions[up] + s * u
    for s in (1.0, 1.5, 2.0):
        pts[f"outward from H{opposite} (opposite), {s:.1f} Å along C-H"] = atoms.positions[opposite] + s * v
    return pts


def surface_stats(atoms, points: np.ndarray, values: np.ndarray, offset: float) -> dict:
    """Mean/min/max of Omega per element of the atom whose sphere each point lies on."""
    radii = surface_radii(atoms, offset)
    owner = np.argmin(np.linalg.norm(points[:, None] - atoms.positions[None], axis=-1) - radii, axis=1)
    out = {}
    for z in np.unique(atoms.numbers):
        sel = atoms.numbers[owner] == z
        v = values[sel]
        out[chemical_symbols[z]] = {
            "n": int(sel.sum()),
            "mean": float(np.mean(v)),
            "min": float(np.min(v)),
            "max": float(np.max(v)),
        }
    out["all"] = {"n": len(values), "mean": float(np.mean(values)), "zero": float(np.mean(values == 0.0))}
    return out


def compute(args: argparse.Namespace) -> dict:
    """Maps, surfaces, profiles and named points of every model and molecule (kcal/mol); the
    maps themselves, for the figures, under ``_maps`` (not written to the JSON)."""
    result: dict = {"load_average_at_start": list(os.getloadavg()), "models": {}}
    maps: dict = {}
    for model_name in MODELS:
        model = load_network(model_name)
        entry = {
            "cutoff_angstrom": model.cutoff,
            "isolated_H_kcal_mol": isolated_probe_energy(model, "H"),
            "molecules": {},
        }
        for mol_name, (formula, up, opposite) in MOLECULES.items():
            atoms = molecule(formula)
            rec: dict = {"timings": {}}
            for key, offset in (("in_plane", 0.0), ("above", 1.0)):
                basis = molecule_plane(atoms, offset, up=up)
                t0 = time.perf_counter()
                plane = potential_plane(model, atoms, spacing=SPACING, margin=MARGIN, basis=basis)
                dt = time.perf_counter() - t0
                rec["timings"][key] = {"points": int(plane.values.size), "seconds": dt}
                grid = basis.to_3d(plane.X, plane.Y).reshape(-1, 3)
                rec[key] = _extremes(atoms, grid, plane.values.ravel(), molecule_plane(atoms, up=up))
                maps[(model_name, mol_name, key)] = (atoms, plane)
            rec["surface"] = {}
            for offset in SURFACE_OFFSETS:
                t0 = time.perf_counter()
                surf = potential_surface(model, atoms, offset=offset, density=DENSITY)
                dt = time.perf_counter() - t0
                rec["timings"][f"surface_{offset}"] = {"points": len(surf.points), "seconds": dt}
                stats = surface_stats(atoms, surf.points, surf.values, offset)
                stats.update(_extremes(atoms, surf.points, surf.values, molecule_plane(atoms, up=up)))
                rec["surface"][f"{offset}"] = stats
                maps[(model_name, mol_name, f"surface_{offset}")] = (atoms, surf)
            basis0 = molecule_plane(atoms, up=up)
            u = basis0.axes[1]  # in plane, from the ring centre towards atom ``up``
            rec["profiles"] = {
                "above_centre": chemical_potential(
                    model, atoms, basis0.origin + PROFILE[:, None] * basis0.normal
                ),
                "outward": chemical_potential(model, atoms, atoms.positions[up] + PROFILE[:, None] * u),
            }
            rec["profiles"] = {k: v.tolist() for k, v in rec["profiles"].items()}
            pts = named_points(atoms, up, opposite)
            values = chemical_potential(model, atoms, np.array(list(pts.values())))
            rec["points"] = {k: float(v) for k, v in zip(pts, values)}
            entry["molecules"][mol_name] = rec
        result["models"][model_name] = entry
    result["_maps"] = maps
    return result


def _fmt(v: float | None) -> str:
    """A value in kcal/mol; ``masked`` for probes too close to an atom (NaN, ``null`` in the JSON)."""
    return f"{v:.2f}" if report.is_number(v) else "masked"


def render(result: dict, out_dir: Path) -> None:
    """``chemical_potentials.md`` and, when the result holds the maps (not after
    ``--report-only``), the three figures."""
    labels = {"in_plane": "in the ring plane", "above": "1 Å above the ring plane"}
    if "_maps" in result:
        figures(result["_maps"], out_dir, labels)
    lines = markdown(result, labels)
    report.write_markdown(out_dir / "chemical_potentials.md", lines)


def figures(maps: dict, out_dir: Path, labels: dict) -> None:
    """The in-plane, above-plane and surface figures from ``maps``: (model, molecule, set) ->
    (atoms, plane or surface)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("in_plane", "above"):
        panels = [(m, mol) for m in MODELS for mol in MOLECULES]
        plot_potential(
            [maps[(m, mol, key)][0] for m, mol in panels],
            [maps[(m, mol, key)][1] for m, mol in panels],
            out_dir / f"chemical_potential_{key}.png",
            titles=[f"{m}: {mol}, {labels[key]}" for m, mol in panels],
            columns=2,
            suptitle="Local chemical potential of an H probe (grey: within 0.5 Å of an atom; black line: 0)",
        )
    panels = [(m, mol, o) for m in MODELS for o in SURFACE_OFFSETS for mol in MOLECULES]
    plot_potential(
        [maps[(m, mol, f"surface_{o}")][0] for m, mol, o in panels],
        [maps[(m, mol, f"surface_{o}")][1] for m, mol, o in panels],
        out_dir / "chemical_potential_surface.png",
        titles=[f"{m}: {mol}, vdW + {o} Å" for m, mol, o in panels],
        columns=4,
        suptitle="Omega_H on the surface vdW radius + offset, seen from above the ring plane",
        views=[molecule_plane(maps[(m, mol, "in_plane")][0], up=MOLECULES[mol][1]) for m, mol, o in panels],
    )


def markdown(result: dict, labels: dict) -> list[str]:
    """The lines of ``chemical_potentials.md``."""
    lines = [
        "# Local chemical potentials of qm7-dtnn and qm7-schnet: benzene and pyridine",
        "",
        "Omega_H(r): energy the network predicts for an H probe at r that receives messages from the",
        "molecule and sends none, minus the energy of an isolated H (`qmlx.explain.potential`), in",
        "kcal/mol; negative = the model predicts the H to be stabilized there. Geometries: ASE's",
        "`molecule('C6H6')` and `molecule('C5H5N')`. Probes within 0.5 Å of an atom are masked.",
        f"Maps: 0.1 Å grid, {MARGIN} Å margin; surfaces: vdW radius + offset, {DENSITY} points/Å^2.",
        "Figures: `chemical_potential_in_plane.png`, `chemical_potential_above.png`,",
        "`chemical_potential_surface.png` (pyridine's N and benzene's C0 point up in every panel).",
        "",
        "| model | cutoff (Å) | isolated H (kcal/mol) |",
        "|---|---|---|",
    ]
    for m, e in result["models"].items():
        lines.append(f"| {m} | {e['cutoff_angstrom']:g} | {e['isolated_H_kcal_mol']:.2f} |")
    lines += ["", "## Named points (kcal/mol)", ""]
    for mol in MOLECULES:
        names = list(result["models"][MODELS[0]]["molecules"][mol]["points"])
        lines += [
            f"**{mol}**",
            "",
            "| point | " + " | ".join(MODELS) + " |",
            "|---" * (len(MODELS) + 1) + "|",
        ]
        for name in names:
            vals = [_fmt(result["models"][m]["molecules"][mol]["points"][name]) for m in MODELS]
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
        lines.append("")
    lines += [
        "## Line profiles (kcal/mol)",
        "",
        "Along the normal above the ring centre, and in the ring plane outward from N0 (pyridine) or",
        "C0 (benzene; its H lies on this line at 1.09 Å from C0, so 0.59 to 1.59 Å is masked), by",
        "distance d in Å from the ring centre or from that atom.",
        "",
        "| d (Å) | "
        + " | ".join(f"{m} {mol} {p}" for m in MODELS for mol in MOLECULES for p in ("above", "out"))
        + " |",
        "|---" * (1 + 4 * len(MODELS)) + "|",
    ]
    for k, d in enumerate(PROFILE):
        row = [
            _fmt(result["models"][m]["molecules"][mol]["profiles"][p][k])
            for m in MODELS
            for mol in MOLECULES
            for p in ("above_centre", "outward")
        ]
        lines.append(f"| {d:.2f} | " + " | ".join(row) + " |")
    lines += ["", "## Extremes of the maps (kcal/mol)", ""]
    lines += ["| model | molecule | map | min | where | max | where |", "|---|---|---|---|---|---|---|"]
    for m, e in result["models"].items():
        for mol, rec in e["molecules"].items():
            for key in ("in_plane", "above"):
                r = rec[key]
                lines.append(
                    f"| {m} | {mol} | {labels[key]} | {r['min']:.2f} | {r['min_where']} | {r['max']:.2f} "
                    f"| {r['max_where']} |"
                )
            for o, r in rec["surface"].items():
                lines.append(
                    f"| {m} | {mol} | surface vdW + {o} Å | {r['min']:.2f} | {r['min_where']} | {r['max']:.2f} "
                    f"| {r['max_where']} |"
                )
    lines += [
        "",
        "## Surfaces: Omega_H by the element of the atom each surface point belongs to (kcal/mol)",
        "",
        "`zero`: share of surface points that no atom reaches within the model's cutoff (Omega = 0).",
        "",
        "| model | molecule | offset (Å) | element | points | mean | min | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, e in result["models"].items():
        for mol, rec in e["molecules"].items():
            for o, r in rec["surface"].items():
                for el, s in r.items():
                    if isinstance(s, dict) and el != "all":
                        lines.append(
                            f"| {m} | {mol} | {o} | {el} | {s['n']} | {s['mean']:.2f} | {s['min']:.2f} "
                            f"| {s['max']:.2f} |"
                        )
                a = r["all"]
                lines.append(
                    f"| {m} | {mol} | {o} | all | {a['n']} | {a['mean']:.2f} | zero: {a['zero']:.0%} | |"
                )
    load = ", ".join(f"{x:.1f}" for x in result["load_average_at_start"])
    lines += [
        "",
        "## Timings (vectorized evaluation, float64, one torch thread)",
        "",
        f"Load average at start: {load} on a 2-core machine shared with a training run and other jobs.",
        "",
        "| model | molecule | set | points | seconds | points/s |",
        "|---|---|---|---|---|---|",
    ]
    for m, e in result["models"].items():
        for mol, rec in e["molecules"].items():
            for key, t in rec["timings"].items():
                rate = t["points"] / t["seconds"]
                lines.append(f"| {m} | {mol} | {key} | {t['points']} | {t['seconds']:.2f} | {rate:.0f} |")
    lines += ["", OBSERVATIONS, *report.run_lines(result)]
    return lines


OBSERVATIONS = """## What the maps show

Written from the figures and tables above for the shipped qm7-dtnn (test MAE 1.64 kcal/mol) and
qm7-schnet (1.02 kcal/mol); rerun and reread if the models change.

- **Benzene.** Both models' maps have benzene's six-fold symmetry; for a symmetric geometry this
  follows from rotation invariance and checks the geometry handling, it is not something learned.
  *SchNet*: in the ring plane an H is strongly destabilized inside the ring (+11 kcal/mol at the
  centre) and most of all in the wedges between neighbouring C-H bonds (up to +22, 2.0-2.4 Å
  from the centre, about 1.2 Å from both C of a C-C bond); 1 Å above the plane Omega is mildly
  negative over each C (-1.9) and positive over the ring centre (+3.6) and over the C-C bonds,
  slightly outside the ring (up to +8). Farther out the map is a set of concentric
  bands of alternating sign, 1-3 kcal/mol, that fade only at the 5 Å cutoff.
  *DTNN*: Omega is negative almost everywhere within 3 Å of an atom (mostly -2 to -10) and 0
  beyond; its texture is speckled, and jumps by 1-2 kcal/mol wherever an atom enters or leaves
  the hard 3 Å cutoff (on the vdW + 1 Å surface, points that see two C atoms average -5.4, those
  that see one -3.9). Along the normal above the ring centre it is -4.9 at 1 Å, -10.5 at 2 Å and
  exactly 0 from 2.75 Å, where every C is beyond 3 Å.
- **Pyridine.** Replacing one CH by N changes both maps beyond the N itself. SchNet's ring-centre
  repulsion nearly doubles (+20.5 in plane, +7.1 at 1 Å above), and the region 1 Å above N is
  slightly positive (+0.6) where benzene's C is negative; on the vdW + 1 Å surface the points
  around N average +0.5 against -0.5 around C and -0.1 around H. The in-plane lone-pair direction
  is *not* singled out as a favourable H site: -2.3 at 1.0 Å from N (about an N-H bond length),
  +2.2 at 1.5 Å, about 0 at 2 Å, similar in size to the -1.7 / -1.4 / 0.0 outward from the para H.
  DTNN gives -5.8 at 1.0 Å and -9.7 at 1.25 Å from N, but values of that size occur all around
  the molecule (-9.5 at 2.25 Å from N, map minimum -11.5), and its surface averages around N and
  around C are the same (-4.1). Positive patches (up to +3) appear 1.3-1.6 Å from the H atoms
  next to N; benzene's DTNN maps stay below +0.9.
- **Against the DTNN paper.** The paper draws its potentials on an isosurface, where they look
  smooth, and benzene's is symmetric over the ring. Ours are symmetric too but not smooth: DTNN's texture is
  set by its fine Gaussian basis and hard 3 Å cutoff, SchNet's by radial oscillations. In
  pyridine the N region does differ from the rest of the ring in SchNet (mildly less favourable
  for H), but neither model shows a distinct attractive lone-pair region; the shipped models,
  trained on 5,159 single neutral QM7 molecules (no intermolecular complexes, no protonated
  species), have had no data to learn one.
"""


def build_parser() -> argparse.ArgumentParser:
    return report.make_parser(__doc__)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "chemical_potentials", argv)


if __name__ == "__main__":
    main()
