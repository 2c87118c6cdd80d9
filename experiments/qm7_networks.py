"""DTNN and SchNet on QM7's official folds: test MAE, learning curves and parity plots.

    python experiments/qm7_networks.py                 # fold 0, both models, train then evaluate
    python experiments/qm7_networks.py --folds 0 1 2 3 4 --threads 2
    python experiments/qm7_networks.py --evaluate-only # use finished runs in runs/, no training

Training uses `qmlx.train.train_network` with the network sizes of the shipped ``qm7-<model>``
(its ``qmlx/pretrained/*.json``) and the protocol given here: by default a cosine learning rate from
1e-3 to 1e-6 over 300 epochs with an EMA of the weights, no early stopping; ``--schedule plateau``
takes the shipped models' plateau decay and early stopping instead. Each run lives in
``runs/qm7-<model>-fold<K>/`` and is resumable. Writes ``qm7_networks.json``, ``qm7_networks.md``,
``qm7_networks_learning_curve.png`` and ``qm7_networks_parity.png`` to ``--out-dir`` (default
``results/``); ``--report-only`` rewrites the Markdown only (the JSON holds no predictions).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

ROOT = report.ROOT
PAPER_MAE = {"dtnn": 1.0, "schnet": None}  # DTNN: Schütt et al., Nat. Commun. 2017 (QM7, ~1.0 kcal/mol)


def run_dir(runs: Path, model: str, fold: int) -> Path:
    return runs / f"qm7-{model}-fold{fold}"


def train(model: str, fold: int, args) -> None:
    """Train ``model`` on ``fold`` with the network of the shipped ``qm7-<model>``. For the DTNN
    that is a 3 Å neighbourhood: with all pairs it overfit QM7 (validation 2.4 kcal/mol at
    training 0.2)."""
    from qmlx.pretrained import available_models
    from qmlx.train import SplitSpec, TrainConfig, train_network

    shipped = available_models()[f"qm7-{model}"]
    tc = shipped["train_config"]
    cosine = args.schedule == "cosine"
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size or tc["batch_size"], lr=tc["lr"],
        lr_patience=tc["lr_patience"], min_lr=1e-6 if cosine else tc["min_lr"], schedule=args.schedule,
        weight_decay=args.weight_decay, loss=args.loss,
        early_stop_patience=args.epochs if cosine else tc["early_stop_patience"], ema_decay=tc["ema_decay"],
        seed=args.seed, max_minutes=args.max_minutes, threads=args.threads,
    )  # fmt: skip
    out = run_dir(args.runs, model, fold)
    train_network(
        model, "qm7", SplitSpec(fold=fold), config, model_config=shipped["model_config"], out=out,
        resume=(out / "checkpoint.pt").exists(), command="python " + " ".join(sys.argv),
    )  # fmt: skip


def evaluate(model: str, fold: int, args, qm7) -> dict:
    from qmlx.nn import load_network, predict_network

    rd = run_dir(args.runs, model, fold)
    source = rd / "model.pt"
    if not source.exists() and fold == 0:
        source = f"qm7-{model}"  # the shipped model was trained on fold 0's training part
    net = load_network(source)
    _, test = qm7.folds[fold]
    mols = qm7.subset(test)
    pred, _ = predict_network(net, mols)
    ref = mols.target("atomization_energy")
    err = pred - ref
    log = []
    if (rd / "log.csv").exists():
        with open(rd / "log.csv") as fh:
            log = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    meta = net.metadata
    tc = meta.get("train_config") or {}
    return {
        "model": model,
        "fold": fold,
        "source": str(source),
        "n_test": int(len(test)),
        "n_train": meta.get("n_train"),
        "n_val": meta.get("n_val"),
        "mae_kcal_mol": float(np.mean(np.abs(err))),
        "rmse_kcal_mol": float(np.sqrt(np.mean(err**2))),
        "max_abs_error_kcal_mol": float(np.max(np.abs(err))),
        "epochs_run": meta.get("epochs_run"),
        "best_epoch": meta.get("best_epoch"),
        "train_minutes": meta.get("train_minutes"),
        "stop_reason": meta.get("stop_reason"),
        "model_config": dict(net.config),
        "train_config": tc,
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "paper_mae_kcal_mol": PAPER_MAE.get(model),
        "_pred": pred.tolist(),
        "_ref": ref.tolist(),
        "_log": log,
    }


def plots(rows: list[dict], out_dir: Path) -> None:
    """Learning curves (from ``_log``) and parity plots (``_pred``, ``_ref``) of ``rows``."""
    plt = report.pyplot()

    models = sorted({r["model"] for r in rows})
    colors = {fold: f"C{fold}" for fold in sorted({r["fold"] for r in rows})}

    # one panel per model; colour = fold, thin = training, thick = validation
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        for r in (r for r in rows if r["model"] == model and r["_log"]):
            ep = [h["epoch"] for h in r["_log"]]
            c = colors[r["fold"]]
            ax.plot(ep, [h["train_mae"] for h in r["_log"]], lw=0.6, alpha=0.6, color=c)
            ax.plot(ep, [h["val_mae"] for h in r["_log"]], lw=1.4, color=c, label=f"fold {r['fold']}")
        ax.set_yscale("log")
        ax.axhline(1.0, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(f"{model}: validation (thick, EMA weights) and training (thin)", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("MAE (kcal/mol)")
    fig.tight_layout()
    report.save_figure(fig, out_dir / "qm7_networks_learning_curve.png")

    # one parity panel per model, all folds' test molecules together
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for r in mine:
            ref, pred = np.asarray(r["_ref"]), np.asarray(r["_pred"])
            ax.scatter(ref, pred, s=3, alpha=0.5, color=colors[r["fold"]], label=f"fold {r['fold']}")
        lo = min(np.min(r["_ref"]) for r in mine)
        hi = max(np.max(r["_ref"]) for r in mine)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("PBE0 atomization energy (kcal/mol)")
        ax.set_ylabel("predicted (kcal/mol)")
        mean = np.mean([r["mae_kcal_mol"] for r in mine])
        ax.set_title(f"{model}: test MAE {mean:.2f} kcal/mol ({len(mine)} fold(s))", fontsize=9)
        ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    report.save_figure(fig, out_dir / "qm7_networks_parity.png")


def _protocol(tc: dict) -> str:
    """A short description of a run's training settings, e.g. ``cosine, batch 16, MSE``."""
    if not tc:
        return "–"
    parts = [tc.get("schedule", "plateau"), f"batch {tc.get('batch_size')}", tc.get("loss", "mse").upper()]
    if tc.get("weight_decay"):
        parts.append(f"weight decay {tc['weight_decay']:g}")
    return ", ".join(parts)


def ensemble_summary(path: Path) -> dict | None:
    """Test MAE (kcal/mol) and Spearman correlation of the ensemble in ``path``
    (``qm7_ensemble.json``, written by experiments/qm7_ensemble.py), if it exists."""
    if not path.exists():
        return None
    e = report.read_json(path)
    return {"test_mae_kcal_mol": e["test_mae_kcal_mol"], "spearman": e["uncertainty"]["spearman"]}


def summarize(rows: list[dict], out_dir: Path) -> dict:
    """The result: ``rows`` (one per model and fold), mean MAE per model, and the ensemble's
    summary from ``out_dir``."""
    summary = {}
    for model in sorted({r["model"] for r in rows}):
        maes = [r["mae_kcal_mol"] for r in rows if r["model"] == model]
        summary[model] = {"folds": len(maes), "mean_mae_kcal_mol": float(np.mean(maes))}
    return {
        "dataset": "qm7",
        "target": "atomization_energy",
        "unit": "kcal/mol",
        "runs": rows,
        "summary": summary,
        "ensemble": ensemble_summary(out_dir / "qm7_ensemble.json"),
    }


def render(result: dict, out_dir: Path) -> None:
    """``qm7_networks.md`` and, when the rows hold predictions and logs (not after
    ``--report-only``), the learning-curve and parity figures."""
    public, summary = result["runs"], result["summary"]
    lines = [
        "# QM7: DTNN and SchNet (official folds)",
        "",
        "Test MAE on the fold's official test part (1,433 molecules); the validation set is carved from the",
        "training part. Energies: PBE0 atomization energies in kcal/mol. Minutes: wall-clock training time",
        "with the run's CPU threads (`train_config.threads` in the JSON).",
        "",
        "| model | fold | train / val | training | epochs (best) | minutes | params | test MAE | test RMSE | paper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in public:
        paper = f"{r['paper_mae_kcal_mol']:.1f}" if r["paper_mae_kcal_mol"] else "–"
        lines.append(
            f"| {r['model']} | {r['fold']} | {r['n_train']} / {r['n_val']} | {_protocol(r['train_config'])} "
            f"| {r['epochs_run']} ({r['best_epoch']}) "
            f"| {r['train_minutes']} | {r['n_parameters']} | {r['mae_kcal_mol']:.3f} | {r['rmse_kcal_mol']:.3f} "
            f"| {paper} |"
        )
    lines += ["", "Mean over folds: " + ", ".join(f"{m} {s['mean_mae_kcal_mol']:.3f} kcal/mol ({s['folds']} folds)"
                                              for m, s in summary.items()), ""]  # fmt: skip
    e = result.get("ensemble") or ensemble_summary(out_dir / "qm7_ensemble.json")
    if e:
        lines += [
            f"An ensemble of five SchNets trained like the fold-0 SchNet above (seeds 0-4, member 0 is that run) "
            f"reaches {e['test_mae_kcal_mol']:.3f} kcal/mol on fold 0, with an uncertainty per molecule whose "
            f"Spearman correlation with the absolute error is {e['spearman']:.2f}; its calibration "
            "(coverage of ±1 and ±2 uncertainties, calibration plot) is in `qm7_ensemble.md`.",
            "",
        ]
    lines += [
        "![learning curves](qm7_networks_learning_curve.png)",
        "",
        "![parity](qm7_networks_parity.png)",
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "qm7_networks.md", lines)
    if any("_pred" in r for r in public):
        plots(public, out_dir)


def build_parser() -> argparse.ArgumentParser:
    ap = report.make_parser(__doc__, seed_help="seed of the network initialization and shuffling")
    ap.add_argument("--folds", type=int, nargs="+", default=[0])
    ap.add_argument("--models", nargs="+", default=["schnet", "dtnn"], choices=["schnet", "dtnn"])
    ap.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine")
    ap.add_argument("--epochs", type=int, default=None, help="cosine length (300) or plateau maximum (3000)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the shipped model's (32)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--loss", choices=["mse", "mae"], default="mse")
    ap.add_argument("--max-minutes", type=float, default=95.0, help="wall-clock budget per run")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    ap.add_argument("--evaluate-only", action="store_true", help="no training; evaluate finished runs")
    return ap


def compute(args: argparse.Namespace) -> dict:
    """Train (unless ``--evaluate-only``) and evaluate every model on every fold."""
    if args.epochs is None:
        args.epochs = 300 if args.schedule == "cosine" else 3000
    from qmlx.data import load_qm7

    qm7 = load_qm7()
    rows = []
    for fold in args.folds:
        for model in args.models:
            if not args.evaluate_only:
                train(model, fold, args)
            elif fold != 0 and not (run_dir(args.runs, model, fold) / "model.pt").exists():
                print(f"no finished {model} run for fold {fold} in {args.runs}; left out", file=sys.stderr)
                continue
            rows.append(evaluate(model, fold, args, qm7))
    return summarize(rows, Path(args.out_dir))


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "qm7_networks", argv)


if __name__ == "__main__":
    main()
