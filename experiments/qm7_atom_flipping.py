"""Faithfulness of explanations on the QM7 test fold: atom flipping and AOPC.

For each method, atoms of every test molecule are removed most-relevant-first (MoRF) and
least-relevant-first (LeRF) and the network predicts again (see `qmlx.explain.flipping`). The
function explained and re-predicted is the energy relative to the model's per-element reference
energies, E(x) - sum_i ref(Z_i), in kcal/mol; the decomposition's atom energies are taken
relative to the same references. A random order is the baseline.

Writes ``results/qm7_atom_flipping.json``, ``.md`` and ``.png``.

    python experiments/qm7_atom_flipping.py --model qm7-schnet --fold 0
    python experiments/qm7_atom_flipping.py --quick      # 100 molecules, a few seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qmlx.data import load_qm7
from qmlx.data.paths import savefig_atomic, write_text_atomic
from qmlx.explain import explain
from qmlx.explain.flipping import atom_scores, flipping_curve, relative_energy
from qmlx.nn import load_network

METHODS = ["decomposition", "lrp", "gradient", "gradient-x-input", "integrated-gradients"]
RESULTS = Path(__file__).resolve().parent.parent / "results"


def run(model_name: str, fold: int, n_molecules: int | None, seed: int = 0) -> dict:
    model = load_network(model_name)
    qm7 = load_qm7()
    _, test_idx = qm7.folds[fold]
    test = qm7.subset(test_idx[:n_molecules] if n_molecules else test_idx)
    predict = relative_energy(model)
    reference = model.head.reference.detach().double().numpy()
    curves, rows = {}, []
    for method in METHODS:
        start = time.perf_counter()
        e = explain(model, test, method)
        seconds = time.perf_counter() - start
        relevance = e.relevance - reference[test.Z] if method == "decomposition" else e.relevance
        scores = atom_scores(relevance, signed=method != "gradient")
        morf, lerf = flipping_curve(predict, test, scores), flipping_curve(predict, test, -scores)
        curves[method] = (morf, lerf)
        rows.append(
            {"method": method, "aopc_morf": morf.aopc, "aopc_lerf": lerf.aopc,
             "gap": morf.aopc - lerf.aopc, "explain_seconds": seconds}
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    randoms = [flipping_curve(predict, test, rng.random(len(test.Z))) for _ in range(3)]
    random_aopc = float(np.mean([c.aopc for c in randoms]))
    rows.append({"method": "random", "aopc_morf": random_aopc, "aopc_lerf": random_aopc, "gap": 0.0})
    curves["random"] = (randoms[0], randoms[0])
    return {
        "model": model_name,
        "model_metadata": getattr(model, "metadata", {}),
        "fold": fold,
        "n_molecules": len(test),
        "removal": "atoms deleted from the molecule; fraction q removes ceil(q n) atoms",
        "explained_function": "E(x) - sum_i ref(Z_i) [kcal/mol], ref = the model's per-element references",
        "unit": "kcal/mol",
        "fractions": curves["lrp"][0].fractions.tolist(),
        "rows": rows,
        "curves": {
            m: {"morf": c[0].mean_change.tolist(), "lerf": c[1].mean_change.tolist()}
            for m, c in curves.items()
        },
    }


def write(result: dict, stem: str, out: Path = RESULTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{stem}.json", json.dumps(result, indent=2, default=float))
    lines = [
        f"# Atom flipping on QM7 fold {result['fold']} ({result['n_molecules']} test molecules, model {result['model']})",
        "",
        f"Explained and re-predicted: {result['explained_function']}. Removal: {result['removal']}.",
        "AOPC = mean over fractions and molecules of E(x_q) - E(x) in kcal/mol: higher is better for",
        "MoRF (most relevant first), lower for LeRF; the gap MoRF - LeRF summarizes both.",
        "",
        "| method | AOPC MoRF | AOPC LeRF | gap | explain time (s) |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        t = f"{r['explain_seconds']:.1f}" if "explain_seconds" in r else "-"
        lines.append(
            f"| {r['method']} | {r['aopc_morf']:.2f} | {r['aopc_lerf']:.2f} | {r['gap']:.2f} | {t} |"
        )
    write_text_atomic(out / f"{stem}.md", "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    q = np.array(result["fractions"])
    for method, c in result["curves"].items():
        style = {"color": "0.5", "ls": "--"} if method == "random" else {}
        axes[0].plot(q, c["morf"], label=method, **style)
        axes[1].plot(q, c["lerf"], label=method, **style)
    for ax, title in zip(axes, ["most relevant first", "least relevant first"]):
        ax.set_title(title)
        ax.set_xlabel("fraction of atoms removed")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean E(x_q) - E(x) [kcal/mol]")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    savefig_atomic(fig, out / f"{stem}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qm7-schnet", help="shipped model name or network file")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-molecules", type=int, default=None, help="first N test molecules (default all)")
    parser.add_argument("--quick", action="store_true", help="100 molecules, written as *_quick.*")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (default results/)")
    args = parser.parse_args()
    n = 100 if args.quick else args.n_molecules
    result = run(args.model, args.fold, n)
    stem = "qm7_atom_flipping_quick" if args.quick else "qm7_atom_flipping"
    write(result, stem, args.out)
    print((args.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
