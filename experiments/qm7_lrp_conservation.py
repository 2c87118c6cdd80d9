"""LRP conservation on every QM7 test molecule, for the shipped SchNet and DTNN.

For each molecule of the test fold: the relative conservation error of first-order LRP
(epsilon = 1e-9, float64), ``|sum R + sum bias - (E - sum ref)| / |E - sum ref|``, and the largest
deviation of the pair relevances (``lrp-pairs``) summed over sinks from the first-order ones.

    python experiments/qm7_lrp_conservation.py --models qm7-schnet qm7-dtnn --fold 0

Writes ``qm7_lrp_conservation.json`` and ``.md`` to ``--out-dir`` (default ``results/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report


def check(model_name: str, mols) -> dict:
    """One table column: conservation errors (relative) and bias shares of ``model_name`` on
    ``mols``, and the pair relevances' largest deviation in kcal/mol."""
    from qmlx.explain import Gamma, explain
    from qmlx.nn import load_network

    model = load_network(model_name)
    out = {"model": model_name}
    for label, rule in (("epsilon", None), ("gamma=0.25", Gamma(0.25))):
        e = explain(model, mols, "lrp", rule=rule)
        rel = np.abs(e.conservation_error()) / np.abs(e.prediction - e.reference)
        out[f"{label} max relative error"] = float(rel.max())
        out[f"{label} median relative error"] = float(np.median(rel))
        out[f"{label} bias share (median |bias| / |E - ref|)"] = float(
            np.median(
                np.abs(np.bincount(mols.mol_index, weights=e.bias)) / np.abs(e.prediction - e.reference)
            )
        )
        if label == "epsilon":
            pairs = explain(model, mols, "lrp-pairs")
            dev = max(float(np.abs(P.sum(1) - e.molecule(i)).max()) for i, P in enumerate(pairs.pairs))
            out["pairs max |sum_j P_ij - R_i| (kcal/mol)"] = dev
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["qm7-schnet", "qm7-dtnn"])
    parser.add_argument("--fold", type=int, default=0)
    return parser


def compute(args: argparse.Namespace) -> dict:
    """Check every model of ``args.models`` on the test part of QM7 fold ``args.fold``."""
    from qmlx.data import load_qm7

    qm7 = load_qm7()
    mols = qm7.subset(qm7.folds[args.fold][1])
    rows = [check(m, mols) for m in args.models]
    return {"fold": args.fold, "n_molecules": len(mols), "rows": rows}


def render(result: dict, out_dir: Path) -> None:
    rows = result["rows"]
    keys = [k for k in rows[0] if k != "model"]
    lines = [
        f"# LRP conservation on QM7 fold {result['fold']} ({result['n_molecules']} test molecules, "
        "float64, eps = 1e-9)",
        "",
        *report.table(
            ["quantity", *(r["model"] for r in rows)],
            [[report.escape(k), *(f"{r[k]:.2e}" for r in rows)] for k in keys],
        ),
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "qm7_lrp_conservation.md", lines)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "qm7_lrp_conservation", argv)


if __name__ == "__main__":
    main()
