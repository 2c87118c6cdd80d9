"""Pictures of group energies (`qmlx.insight.groups`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from qmlx._io import savefig_atomic


def plot_group_energies(report: dict, path: str | os.PathLike, min_occurrences: int = 1) -> Path:
    """Each group's energy per heavy atom (kcal/mol) with its 95 % interval, one marker per
    contribution method, sorted by the first; beside it, with an additivity fit in ``report``, the
    groups' energies against their fitted increments. ``report`` is what ``qmlx insight groups
    --format json`` prints."""
    methods = report["methods"]
    rows = [r for r in report["groups"] if r["occurrences"] >= min_occurrences and r[methods[0]] is not None]
    rows.sort(key=lambda r: r[f"{methods[0]}_per_heavy_atom"])
    inc = (report.get("additivity") or {}).get("increments") or {}
    fig = Figure(figsize=(11 if inc else 6.5, 0.28 * len(rows) + 1.6), layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[3, 2]) if inc else [fig.add_subplot()]
    ax = axes[0]
    y = np.arange(len(rows))
    for k, m in enumerate(methods):
        v = np.array([r[f"{m}_per_heavy_atom"] for r in rows])
        lo = np.array([r[f"{m}_per_heavy_atom_low"] for r in rows])
        hi = np.array([r[f"{m}_per_heavy_atom_high"] for r in rows])
        ax.errorbar(v, y + 0.18 * (k - (len(methods) - 1) / 2), xerr=[v - lo, hi - v], fmt="o", ms=4, capsize=2,
                    label=m)  # fmt: skip
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_yticks(y, [f"{r['group']} ({r['occurrences']})" for r in rows], fontsize=8)
    ax.set_xlabel("energy per heavy atom (kcal/mol), relative to element references")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{report['model']}: group energies, 95 % intervals", fontsize=10)
    if inc:
        ax2 = axes[1]
        pts = [(r[methods[0]], inc[r["group"]], r["group"]) for r in rows if inc.get(r["group"]) is not None]
        if pts:
            a, b, names = zip(*pts)
            ax2.scatter(b, a, s=14)
            for x, yv, n in zip(b, a, names):
                ax2.annotate(n, (x, yv), fontsize=6, xytext=(2, 2), textcoords="offset points")
        rho = report["additivity"].get("spearman")
        ax2.set_xlabel("group-additivity increment (kcal/mol per occurrence)")
        ax2.set_ylabel(f"{methods[0]} group energy (kcal/mol)")
        ax2.set_title(
            f"against group additivity (Spearman {rho:.2f})"
            if rho is not None
            else "against group additivity",
            fontsize=10,
        )
    return savefig_atomic(fig, path, dpi=130)
