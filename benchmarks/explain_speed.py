"""Explanations per second: LRP against 50-step integrated gradients, same model and molecules.

Both run in the same process on the same QM7 test molecules (float64, as `qmlx.explain.explain`
runs them); the ratio is what matters, since absolute rates depend on the machine and its load.

    python benchmarks/explain_speed.py --model qm7-schnet --n-molecules 500

Writes ``benchmarks/explain_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from qmlx._io import json_dumps, write_text_atomic
from qmlx.data import load_qm7
from qmlx.explain import explain
from qmlx.nn import load_network

HERE = Path(__file__).resolve().parent


def rate(model, mols, method: str, repeats: int, **kw) -> float:
    """Best-of-``repeats`` molecules explained per second."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        explain(model, mols, method, **kw)
        best = min(best, time.perf_counter() - start)
    return len(mols) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qm7-schnet")
    parser.add_argument("--n-molecules", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_network(args.model)
    qm7 = load_qm7()
    mols = qm7.subset(qm7.folds[0][1][: args.n_molecules])
    lrp = rate(model, mols, "lrp", args.repeats)
    ig = rate(model, mols, "integrated-gradients", args.repeats, steps=50)
    result = {
        "model": args.model,
        "molecules": len(mols),
        "threads": args.threads,
        "batch_size": 64,
        "lrp_per_s": lrp,
        "integrated_gradients_50_per_s": ig,
        "speedup": lrp / ig,
    }
    write_text_atomic(HERE / "explain_speed.json", json_dumps(result, indent=2))
    md = (
        "# Explanation speed (QM7 test molecules, float64)\n\n"
        f"model {args.model}, {len(mols)} molecules, batch 64, {args.threads} threads, best of {args.repeats}\n\n"
        "| method | molecules/s |\n|---|---|\n"
        f"| LRP (epsilon) | {lrp:.1f} |\n| integrated gradients, 50 steps | {ig:.1f} |\n\n"
        f"LRP is {lrp / ig:.1f}x faster.\n"
    )
    write_text_atomic(HERE / "explain_speed.md", md)
    print(md)


if __name__ == "__main__":
    main()
