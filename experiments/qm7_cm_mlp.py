"""QM7: multilayer network on random Coulomb matrices (Montavon et al., NIPS 25, 2012; 3.5 kcal/mol).

Protocol: the five official QM7 folds. For each fold the network (`qmlx.nn.cm_mlp`) is trained
on the four training folds with fresh random Coulomb matrices every epoch, for a fixed number of
epochs (no early stopping, no model selection on the test fold), and evaluated on the test fold
by averaging the predictions over ``test_samples`` random matrices per molecule. The test MAE
recorded every few epochs is only for the training-curve figure.

Usage::

    QMLX_DATA_DIR=... python experiments/qm7_cm_mlp.py --jobs 2   # full run, two folds at a time
    QMLX_DATA_DIR=... python experiments/qm7_cm_mlp.py --quick    # one fold, subset, < 1 min

Outputs ``qm7_cm_mlp.json``, ``qm7_cm_mlp.md`` and ``qm7_cm_mlp_training_curve.png`` in
``--out-dir``, default ``results/`` (``--quick`` writes ``qm7_cm_mlp_quick.*``), after every fold.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from qmlx.nn.cm_mlp import CMMLPConfig, train_cm_mlp

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

REFERENCE = {"mae": 3.5, "source": "Montavon et al. NIPS 2012 (3.51 kcal/mol)"}


def metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    err = pred - y
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}


def run_fold(
    k: int, mols, y: np.ndarray, train, test, config: CMMLPConfig, threads: int, progress: bool
) -> dict:
    """Train on ``mols[train]``, evaluate on ``mols[test]``; the result row of one fold."""
    torch.set_num_threads(threads)
    t_fold = time.perf_counter()
    test_mols = mols.subset(test)

    def monitor(reg):
        mae = metrics(reg.predict_molecules(test_mols, samples=4), y[test])["mae"]
        print(f"  fold {k}: test MAE {mae:.3f} kcal/mol (4 random matrices)", flush=True)
        return {"test_mae": mae}

    reg, history = train_cm_mlp(mols, train, y[train], config, monitor=monitor, progress=progress)
    m = metrics(reg.predict_molecules(test_mols), y[test])
    single = metrics(reg.predict_molecules(test_mols, samples=1), y[test])
    row = {
        "fold": k,
        "n_train": len(train),
        "n_test": len(test),
        **m,
        "mae_single_random_matrix": single["mae"],
        "epochs_run": history[-1]["epoch"],
        "history": history,
        "wall_time_s": time.perf_counter() - t_fold,
    }
    print(
        f"fold {k}: MAE {m['mae']:.3f} RMSE {m['rmse']:.3f} kcal/mol (one matrix: {single['mae']:.3f}; "
        f"{row['wall_time_s']:.0f} s)",
        flush=True,
    )
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(
        __doc__, quick="one fold on a subset, a few epochs (< 1 min)", seed_help="seed of the --quick subset"
    )
    parser.add_argument("--folds", nargs="+", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--expansion-step", type=float, default=None, help="tanh threshold step, atomic units (0: none)"
    )
    parser.add_argument("--loss", choices=["mse", "l1"], default=None)
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at once, in separate processes")
    parser.add_argument("--progress", action="store_true")
    return parser


def stem(args: argparse.Namespace) -> str:
    return "qm7_cm_mlp_quick" if args.quick else "qm7_cm_mlp"


def compute(args: argparse.Namespace) -> dict:
    """Train and test one network per fold (``args.threads`` torch threads each, ``args.jobs``
    folds at once); the result is checkpointed after every fold."""
    from qmlx.data import load_qm7

    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    mols = load_qm7(download_if_missing=False)
    y = mols.target("atomization_energy", "kcal/mol")
    config = CMMLPConfig()
    if args.quick:
        rng = np.random.default_rng(args.seed)
        train, test = mols.folds[0]
        train, test = (
            np.sort(rng.choice(train, 1500, replace=False)),
            np.sort(rng.choice(test, 300, replace=False)),
        )
        keep = np.concatenate([train, test])
        mols, y = mols.subset(keep), y[keep]
        folds = [(0, (np.arange(len(train)), np.arange(len(train), len(keep))))]
        config.epochs, config.history_every, config.test_samples = 15, 5, 4
    else:
        ks = args.folds if args.folds is not None else range(len(mols.folds))
        folds = [(k, mols.folds[k]) for k in ks]
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.expansion_step is not None:
        config.expansion_step = args.expansion_step
    if args.loss is not None:
        config.loss = args.loss

    t0 = time.perf_counter()
    rows: list[dict] = []
    jobs = [(k, mols, y, train, test, config, args.threads, args.progress) for k, (train, test) in folds]
    if args.jobs == 1:
        for job in jobs:
            rows.append(run_fold(*job))
            result = summarize(rows, args, config, t0, len(folds))
            report.checkpoint(args, result)
    else:
        # spawn: fresh interpreters, so torch's thread pools are not inherited through fork
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_fold, *job) for job in jobs]
            for future in futures:
                rows.append(future.result())
                result = summarize(rows, args, config, t0, len(folds))
                report.checkpoint(args, result)
    print(f"mean MAE {result['mae_mean']:.3f} kcal/mol")
    return result


def summarize(
    rows: list[dict], args: argparse.Namespace, config: CMMLPConfig, t0: float, n_folds: int
) -> dict:
    """The result of the folds in ``rows`` (MAE and RMSE in kcal/mol, wall time in s since ``t0``)."""
    maes = np.array([r["mae"] for r in rows])
    return {
        "dataset": "QM7",
        "folds_done": f"{len(rows)} of {n_folds}",
        "protocol": (
            "QUICK: fold 0, 1500 training / 300 test molecules."
            if args.quick
            else "QM7 official 5-fold CV: train on four folds (5732 molecules), test on the fifth (1433)."
        ),
        "model": "MLP on random Coulomb matrices (lower triangle, "
        + (
            f"each entry expanded into tanh thresholds {config.expansion_step:g} a.u. apart"
            if config.expansion_step
            else "standardized"
        )
        + f"), hidden {list(config.hidden)}, tanh; test-time average over {config.test_samples} random matrices",
        "config": config.to_dict(),
        "jobs": args.jobs,
        "mae_mean": float(maes.mean()),
        "mae_std": float(maes.std(ddof=1)) if len(maes) > 1 else 0.0,
        "rmse_mean": float(np.mean([r["rmse"] for r in rows])),
        "folds": rows,
        "reference": REFERENCE,
        "wall_time_s": time.perf_counter() - t0,
    }


def render(result: dict, out_dir: Path) -> None:
    """``STEM.md`` and ``STEM_training_curve.png`` (STEM: ``qm7_cm_mlp`` or ``qm7_cm_mlp_quick``)."""
    stem = "qm7_cm_mlp_quick" if result["protocol"].startswith("QUICK") else "qm7_cm_mlp"
    rows, ref = result["folds"], result["reference"]
    if "run" in result:
        command, env = result["run"]["command"], result["run"]["environment"]
        jobs, cores = result["jobs"], env["cpu_count"]
    else:  # written before the run record
        command, env = result["command"], result["environment"]
        jobs, cores = env["jobs"], env["cpus"]
    lines = [
        "# QM7: multilayer network on random Coulomb matrices",
        "",
        result["protocol"],
        "",
        *report.table(
            ["model", "MAE mean ± sd", "MAE per fold", "RMSE mean", "epochs", "wall time", "published"],
            [
                [
                    "CM-MLP",
                    f"{result['mae_mean']:.2f} ± {result['mae_std']:.2f}",
                    " / ".join(f"{r['mae']:.2f}" for r in rows),
                    f"{result['rmse_mean']:.2f}",
                    rows[0]["epochs_run"],
                    f"{result['wall_time_s']:.0f} s",
                    f"{ref['mae']} ({ref['source']})",
                ]
            ],
        ),
        "",
        f"Model: {result['model']}. MAE/RMSE in kcal/mol. With a single random matrix instead of the "
        "average, the MAE per fold is "
        + " / ".join(f"{r['mae_single_random_matrix']:.2f}" for r in rows)
        + ".",
        "",
        f"Command: `{command}` ({jobs} fold(s) at a time, {env['threads']} thread(s) each, {cores} cores).",
        *report.note_lines(result),
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / f"{stem}.md", lines)

    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        pts = [(h["epoch"], h["test_mae"]) for h in r["history"] if "test_mae" in h]
        ax.plot(*zip(*pts), marker=".", label=f"fold {r['fold']}")
    ax.axhline(ref["mae"], color="k", ls=":", lw=1, label="Montavon 2012")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test MAE (kcal/mol), 4 random matrices")
    ax.set_title("QM7 CM-MLP training curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, out_dir / f"{stem}_training_curve.png")


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), stem, argv)


if __name__ == "__main__":
    main()
