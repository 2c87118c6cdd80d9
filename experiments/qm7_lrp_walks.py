"""Relevant walks (GNN-LRP, Schnake et al., IEEE TPAMI 2022) on the QM7 test fold.

For each shipped network and every molecule of the test fold (float64, epsilon = 1e-9):

- conservation: ``|walks_total + bias_total - L| / |L|`` with ``L`` the first-order LRP total of
  ``explain(model, mols, "lrp")`` (atom relevance + bias relevance), and ``|walks_total - sum R_i|``
  against its atom relevances alone;
- the marginals on a subset: walks summed over all but ``(i_0, i_T)`` against ``lrp-pairs`` and over
  all but ``i_0`` against ``lrp``;
- wall time of `lrp_walks` per molecule (one thread), and how the walk relevance splits over walks
  that stay on one atom, visit two atoms, or three and more;

and draws the benzene walks of qm7-schnet.

    python experiments/qm7_lrp_walks.py --models qm7-schnet qm7-dtnn --fold 0 --subset 200

Writes ``qm7_lrp_walks.json``, ``.md`` and ``qm7_lrp_walks_benzene.png`` to ``--out-dir`` (default
``results/``).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import numpy as np
from ase.build import molecule

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report


def _distinct_share(tensor: np.ndarray) -> np.ndarray:
    """(3,) shares of sum |R| on walks visiting 1, 2, >= 3 distinct atoms."""
    n, order = tensor.shape[0], tensor.ndim
    grids = np.meshgrid(*[np.arange(n)] * order, indexing="ij")
    stacked = np.sort(np.stack([g.ravel() for g in grids], axis=1), axis=1)
    distinct = 1 + (np.diff(stacked, axis=1) != 0).sum(1)
    weight = np.abs(tensor.ravel())
    shares = np.array([weight[distinct == 1].sum(), weight[distinct == 2].sum(), weight[distinct >= 3].sum()])
    return shares / weight.sum()


def check(model_name: str, mols, subset: np.ndarray, top: int) -> dict:
    """One table column: conservation, marginals, timings and walk shares of ``model_name``."""
    from qmlx.explain import explain
    from qmlx.explain.walks import lrp_walks
    from qmlx.nn import load_network

    model = load_network(model_name)
    T = len(model.interactions)
    first = explain(model, mols, "lrp")
    lrp_total = np.bincount(mols.mol_index, weights=first.relevance + first.bias, minlength=len(mols))
    atom_total = np.bincount(mols.mol_index, weights=first.relevance, minlength=len(mols))
    rel_err, walk_err, cons_err, seconds, n_walks = [], [], [], [], []
    for k in range(len(mols)):
        start = time.perf_counter()
        (w,) = lrp_walks(model, mols[[k]], top=top)
        seconds.append(time.perf_counter() - start)
        rel_err.append(abs(w.walks_total + w.bias_total - lrp_total[k]) / abs(lrp_total[k]))
        walk_err.append(abs(w.walks_total - atom_total[k]))
        cons_err.append(abs(w.conservation_error()) / abs(w.prediction - w.reference))
        n_walks.append(w.n_walks)
    sub = mols[subset]
    pairs = explain(model, sub, "lrp-pairs")
    sub_first = explain(model, sub, "lrp")
    pair_dev, atom_dev, pair_scale, shares = 0.0, 0.0, 0.0, []
    for k, w in enumerate(lrp_walks(model, sub, full=True, top=0)):
        P = w.tensor.sum(axis=tuple(range(1, T)))
        pair_dev = max(pair_dev, float(np.abs(P - pairs.pairs[k]).max()))
        pair_scale = max(pair_scale, float(np.abs(pairs.pairs[k]).max()))
        atom_dev = max(
            atom_dev, float(np.abs(w.tensor.reshape(len(P), -1).sum(1) - sub_first.molecule(k)).max())
        )
        shares.append(_distinct_share(w.tensor))
    seconds, n_atoms = np.array(seconds), mols.n_atoms
    shares = np.mean(shares, axis=0)
    return {
        "model": model_name,
        "interactions T": T,
        "cutoff (Å)": float(model.cutoff),
        "max relative |walks + bias - LRP total| / |LRP total|": float(np.max(rel_err)),
        "median relative |walks + bias - LRP total| / |LRP total|": float(np.median(rel_err)),
        "max |walks_total - sum_i R_i| (kcal/mol)": float(np.max(walk_err)),
        "max relative |walks + bias - (E - sum ref)| / |E - sum ref|": float(np.max(cons_err)),
        "marginal subset size": int(len(subset)),
        "max |sum walks over i_1..i_{T-1} - lrp-pairs P| (kcal/mol)": pair_dev,
        "max |P| on the subset (kcal/mol)": pair_scale,
        "max |sum walks over i_1..i_T - lrp R_i0| (kcal/mol)": atom_dev,
        "median walks per molecule (within cutoff)": float(np.median(n_walks)),
        "max walks per molecule (within cutoff)": int(np.max(n_walks)),
        "median seconds per molecule": float(np.median(seconds)),
        "mean seconds per molecule": float(np.mean(seconds)),
        "max seconds per molecule": float(np.max(seconds)),
        "seconds per molecule of 23 atoms (median)": float(np.median(seconds[n_atoms == n_atoms.max()])),
        "total seconds": float(seconds.sum()),
        "share of sum |R| on walks within one atom (subset mean)": float(shares[0]),
        "share of sum |R| on walks visiting two atoms (subset mean)": float(shares[1]),
        "share of sum |R| on walks visiting three or more atoms (subset mean)": float(shares[2]),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the molecules drawn for the marginal check")
    parser.add_argument("--models", nargs="+", default=["qm7-schnet", "qm7-dtnn"])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--subset", type=int, default=200, help="molecules for the marginal check")
    parser.add_argument("--top", type=int, default=20, help="walks kept per molecule in the timing run")
    parser.add_argument("--limit", type=int, default=None, help="first N test molecules only (a quick run)")
    return parser


def compute(args: argparse.Namespace) -> dict:
    """Check every model on the test part of fold ``args.fold``, and list benzene's walks."""
    from qmlx.data import load_qm7
    from qmlx.explain.walks import lrp_walks
    from qmlx.nn import load_network

    load_before = os.getloadavg()
    qm7 = load_qm7()
    test = qm7.folds[args.fold][1]
    mols = qm7.subset(test if args.limit is None else test[: args.limit])
    subset = np.random.default_rng(args.seed).choice(len(mols), min(args.subset, len(mols)), replace=False)
    rows = [check(m, mols, np.sort(subset), args.top) for m in args.models]

    benzene = molecule("C6H6")
    (walks,) = lrp_walks(load_network("qm7-schnet"), benzene, top=24)
    bz = {
        "prediction (kcal/mol)": walks.prediction,
        "E - sum ref (kcal/mol)": walks.prediction - walks.reference,
        "walks_total (kcal/mol)": walks.walks_total,
        "bias_total (kcal/mol)": walks.bias_total,
        "n_walks": walks.n_walks,
        "top walks": [
            {"walk": [f"{benzene[int(i)].symbol}{int(i)}" for i in row], "relevance (kcal/mol)": float(r)}
            for row, r in zip(walks.walks, walks.relevance)
        ],
    }
    load_after = os.getloadavg()
    return {
        "fold": args.fold,
        "n_molecules": len(mols),
        "rule": "epsilon, eps = 1e-9, float64",
        "torch threads": args.threads,
        "top": args.top,
        "seed": args.seed,
        "load average (1 min) before / after": [load_before[0], load_after[0]],
        "cpu count": os.cpu_count(),
        "rows": rows,
        "benzene (qm7-schnet)": bz,
    }


def benzene_walks(bz: dict):
    """The `WalkResult` of benzene rebuilt from its JSON entry (atoms named element + index)."""
    from qmlx.explain.walks import WalkResult

    index = [[int(re.sub("[A-Za-z]", "", a)) for a in w["walk"]] for w in bz["top walks"]]
    prediction = bz["prediction (kcal/mol)"]
    return WalkResult(
        walks=np.array(index, dtype=np.int64),
        relevance=np.array([w["relevance (kcal/mol)"] for w in bz["top walks"]]),
        walks_total=bz["walks_total (kcal/mol)"],
        bias_total=bz["bias_total (kcal/mol)"],
        prediction=prediction,
        reference=prediction - bz["E - sum ref (kcal/mol)"],
        n_walks=bz["n_walks"],
    )


def render(result: dict, out_dir: Path) -> None:
    """``qm7_lrp_walks.md`` and ``qm7_lrp_walks_benzene.png``."""
    from qmlx.explain.plot import plot_walks

    rows, bz = result["rows"], result["benzene (qm7-schnet)"]
    walks = benzene_walks(bz)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_walks(
        molecule("C6H6"), walks, out_dir / "qm7_lrp_walks_benzene.png", top=24, title="benzene, qm7-schnet"
    )
    load_before, load_after = result["load average (1 min) before / after"]
    keys = [k for k in rows[0] if k != "model"]
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [
        f"# Relevant walks (GNN-LRP) on QM7 fold {result['fold']} ({result['n_molecules']} test molecules)",
        "",
        "`experiments/qm7_lrp_walks.py`: `qmlx.explain.walks.lrp_walks` with the epsilon rule "
        "(eps = 1e-9) on a float64 copy of each shipped network. A walk (i_0, ..., i_T) runs from atom "
        "i_0's embedding through the T interaction blocks to atom i_T's energy; walks are listed along "
        "the model's pair list (atoms within its cutoff), where every other walk is exactly 0. The "
        "LRP total is `explain(model, mols, 'lrp')` atom relevance + bias relevance per molecule; bias "
        "relevance is not attributed to walks and is reported as `bias_total`. Energies in kcal/mol.",
        "",
        f"Timings: wall clock of one `lrp_walks(model, [molecule], top={result.get('top', 20)})` call per "
        "molecule (Jacobians, dense walk tensor, the first-order LRP pass, listing and sorting), torch with "
        f"{result['torch threads']} thread on a {result['cpu count']}-core machine shared with a network "
        f"training run and other jobs (1-minute load average {load_before:.1f} before, {load_after:.1f} "
        f"after). The marginal check uses {rows[0]['marginal subset size']} randomly chosen test molecules "
        f"(seed {result.get('seed', 0)}).",
        "",
        *report.table(
            ["quantity", *(r["model"] for r in rows)],
            [[report.escape(k), *(fmt(r[k]) for r in rows)] for k in keys],
        ),
        "",
        "## Benzene (qm7-schnet), `results/qm7_lrp_walks_benzene.png`",
        "",
        f"E - sum ref = {bz['E - sum ref (kcal/mol)']:.2f} kcal/mol = walks {walks.walks_total:.2f} + bias "
        f"{walks.bias_total:.2f}; {walks.n_walks:,} walks. Strongest walks:",
        "",
        *report.table(
            ["walk", "relevance (kcal/mol)"],
            [[" → ".join(w["walk"]), f"{w['relevance (kcal/mol)']:.3f}"] for w in bz["top walks"]],
        ),
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "qm7_lrp_walks.md", lines)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "qm7_lrp_walks", argv)


if __name__ == "__main__":
    main()
