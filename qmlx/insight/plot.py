"""Pictures of group energies (`qmlx.insight.groups`)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from qmlx._io import savefig_atomic, write_text_atomic


def group_energy_figure(report: dict, min_occurrences: int = 1) -> Figure:
    """Each group's energy per heavy atom (kcal/mol) with its 95 % interval, one marker per
    contribution method, sorted by the first; beside it, with an additivity fit in ``report``, the
    groups' energies against their fitted increments. ``report`` is what ``qmlx insight groups
    --format json`` prints (`qmlx.insight.groups.group_report`)."""
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
    return fig


def plot_group_energies(report: dict, path: str | os.PathLike, min_occurrences: int = 1) -> Path:
    """`group_energy_figure` written to ``path`` (PNG, PDF or SVG by its suffix), atomically."""
    return savefig_atomic(group_energy_figure(report, min_occurrences), path, dpi=130)


def write_group_report_html(report: dict, path: str | os.PathLike) -> Path:
    """A self-contained HTML page of a group report: what was analysed, the figure (inline SVG) and
    the table with intervals, additivity increments and perception failures; written atomically."""
    from qmlx.explain.plot import inline_svg

    esc = html.escape
    methods = report["methods"]
    inc = (report.get("additivity") or {}).get("increments") or {}
    rows = sorted(
        (r for r in report["groups"] if r["occurrences"]), key=lambda r: r[f"{methods[0]}_per_heavy_atom"]
    )

    def cell(r: dict, key: str) -> str:
        return f"{r[key]:.2f} [{r[key + '_low']:.2f}, {r[key + '_high']:.2f}]"

    titles = [
        "group",
        "SMARTS",
        "n",
        "molecules",
        *methods,
        "per heavy atom",
        "beyond composition",
        "additivity",
    ]
    head = "".join(f"<th>{esc(h)}</th>" for h in titles)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in [
            r["group"], r["smarts"], r["occurrences"], r["molecules"], *[cell(r, m) for m in methods],
            f"{r[methods[0] + '_per_heavy_atom']:.2f}", cell(r, "residual"),
            "" if inc.get(r["group"]) is None else f"{inc[r['group']]:.2f}"]) + "</tr>"
        for r in rows
    )  # fmt: skip
    add = report.get("additivity") or {}
    summary = (
        f"<p>Group additivity on the analysed molecules: MAE {add['test_mae']:.2f} kcal/mol (element references "
        f"alone {add['element_only_test_mae']:.2f}); Spearman with the {esc(methods[0])} group energies "
        f"{add['spearman']:.2f} over {len(add['groups'])} groups.</p>"
        if add.get("spearman") is not None
        else ""
    )
    model, data = esc(str(report.get("model", ""))), esc(str(report.get("data", "")))
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>qmlx insight groups: {model}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:90em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 6px;font-size:90%}th{background:#eee}"
        "svg{max-width:100%;height:auto}</style></head><body>",
        f"<h1>Group energies: {model} on {data}</h1>",
        f"<p>{esc(str(report.get('molecules', '')))}; kcal/mol, relative to element references; 95 % bootstrap "
        f"intervals over molecules. Bonds not perceived: {report['perception_failures']} molecule(s).</p>",
        summary, inline_svg(group_energy_figure(report), "groups"),
        f"<table><tr>{head}</tr>{body}</table>", "</body></html>",
    ])  # fmt: skip
    return write_text_atomic(path, page + "\n")
