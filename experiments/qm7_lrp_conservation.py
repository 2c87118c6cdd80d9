"""LRP conservation on every QM7 test molecule, for the shipped SchNet and DTNN.

For each molecule of the test fold: the relative conservation error of first-order LRP
(epsilon = 1e-9, float64), ``|sum R + sum bias - (E - sum ref)| / |E - sum ref|``, and the largest
deviation of the pair relevances (``lrp-pairs``) summed over sinks from the first-order ones.

    python experiments/qm7_lrp_conservation.py --models qm7-schnet qm7-dtnn --fold 0

Writes ``results/qm7_lrp_conservation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from qmlx._io import write_text_atomic
from qmlx.data import load_qm7
from qmlx.explain import Gamma, explain
from qmlx.nn import load_network

RESULTS = Path(__file__).resolve().parent.parent / "results"


def check(model_name: str, mols) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qm7-schnet", "qm7-dtnn"])
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()
    qm7 = load_qm7()
    mols = qm7.subset(qm7.folds[args.fold][1])
    rows = [check(m, mols) for m in args.models]
    result = {"fold": args.fold, "n_molecules": len(mols), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(RESULTS / "qm7_lrp_conservation.json", json.dumps(result, indent=2))
    keys = [k for k in rows[0] if k != "model"]
    lines = [
        f"# LRP conservation on QM7 fold {args.fold} ({len(mols)} test molecules, float64, eps = 1e-9)",
        "",
        "| quantity | " + " | ".join(r["model"] for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    lines += [f"| {k} | " + " | ".join(f"{r[k]:.2e}" for r in rows) + " |" for k in keys]
    write_text_atomic(RESULTS / "qm7_lrp_conservation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
