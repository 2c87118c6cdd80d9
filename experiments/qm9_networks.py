"""SchNet (or DTNN) on QM9 U0 atomization energies: a learning curve on one held-out test set.

    python experiments/qm9_networks.py --n-train 1000 --epochs 300
    python experiments/qm9_networks.py --n-train 10000 --epochs 130
    python experiments/qm9_networks.py --from-run runs/qm9-schnet-110k --ship qm9-schnet
    python experiments/qm9_networks.py --report-only                     # tables and figure only

Split: a seeded permutation (``--seed``, default 0) holds out the test set first, by default
everything that 110,000 training and 10,000 validation molecules leave of QM9 (10,831 of
130,831), so every training-set size is scored on the same test molecules. Validation
(``--n-val``: 10,000 from 100,000 training molecules on, else 1,000) is drawn from the rest, then
``--n-train`` training molecules.

Protocol: SchNet with the shipped settings (64 features, 3 interactions, cutoff 5 Å, 51 Gaussians),
batches of 32, Adam with a cosine learning rate from 1e-3 to 1e-6 over ``--epochs``, EMA 0.999 of
the weights (validated and saved), the best validation epoch kept. Runs live in
``runs/qm9-<model>-n<N>/`` and resume. Results go to ``qm9_networks.json`` (one entry per model
and size: ``n_train``, ``epochs``, ``test_mae_kcal_mol`` and the full run record),
``qm9_networks.md`` and ``qm9_networks.png`` in ``--out-dir`` (default ``results/``).

Published U0 test MAEs (kcal/mol), drawn in the figure: SchNet 0.59 at 50k and 0.31 at 110k
(Schütt et al., NeurIPS 2017 and JCP 2018); DTNN 0.94 at 50k and 0.84 at 100k (as reported in
Schütt et al., NeurIPS 2017).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

ROOT = report.ROOT
PAPER = {"schnet": {50000: 0.59, 110000: 0.31}, "dtnn": {50000: 0.94, 100000: 0.84}}
QM9_SIZE = 130831  # molecules in the qm9pack release that `load_dataset("qm9")` reads
DEFAULT_N_TEST = QM9_SIZE - 110000 - 10000


def build_parser() -> argparse.ArgumentParser:
    ap = report.make_parser(__doc__, threads=2, seed_help="seed of the split and of the training")
    ap.add_argument("--model", default="schnet", choices=["schnet", "dtnn"])
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument(
        "--n-val", type=int, default=None, help="default 10,000 from 100k training molecules, else 1,000"
    )
    ap.add_argument("--n-test", type=int, default=DEFAULT_N_TEST)
    ap.add_argument("--epochs", type=int, default=130, help="length of the cosine schedule")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    ap.add_argument(
        "--from-run", type=Path, default=None, help="no training: add a finished run's result.json"
    )
    ap.add_argument(
        "--ship", default=None, metavar="NAME", help="with --from-run: ship the run as qmlx/pretrained/NAME"
    )
    ap.add_argument("--report", dest="report_only", action="store_true", help="the same as --report-only")
    return ap


def compute(args: argparse.Namespace) -> dict:
    """Train one model and size (or take ``--from-run``'s result) and put it into the runs of the
    JSON in ``args.out_dir``; returns all runs."""
    path = Path(args.out_dir) / "qm9_networks.json"
    if args.from_run is not None:
        summary = report.read_json(args.from_run / "result.json")
        doc = add_run(path, summary.get("model", args.model).lower(), summary)
        if args.ship:
            from qmlx.train.export import export_shipped

            meta = export_shipped(args.from_run, args.ship)
            print(
                f"shipped {args.ship}: test MAE {meta['test_mae_kcal_mol']:.3f} kcal/mol from the shipped file"
            )
        return doc
    return add_run(path, args.model, train(args))


def train(args) -> dict:
    from qmlx.train import SplitSpec, TrainConfig, train_network

    n_val = args.n_val if args.n_val is not None else (10000 if args.n_train >= 100000 else 1000)
    config = TrainConfig(
        epochs=args.epochs, batch_size=32, lr=1e-3, min_lr=1e-6, schedule="cosine", early_stop_patience=10**6,
        ema_decay=0.999, seed=args.seed, max_minutes=args.max_minutes, threads=args.threads,
    )  # fmt: skip
    out = args.runs / f"qm9-{args.model}-n{args.n_train}"
    spec = SplitSpec("random", n_train=args.n_train, n_val=n_val, n_test=args.n_test)
    return train_network(
        args.model, "qm9", spec, config, out=out, resume=(out / "checkpoint.pt").exists(),
        command="python " + " ".join(sys.argv),
    )  # fmt: skip


def add_run(path: Path, model: str, summary: dict) -> dict:
    """The runs of the JSON file ``path`` with ``summary`` put in, replacing the entry of the same
    model and size."""
    runs = report.read_json(path)["runs"] if path.exists() else []
    runs = [r for r in runs if (r["model"], r["n_train"]) != (model, summary["n_train"])]
    config = summary.get("train_config")
    if config is None and (Path(summary["out"]) / "model.pt").exists():  # result.json of older runs
        from qmlx.nn import load_network

        config = load_network(Path(summary["out"]) / "model.pt").metadata.get("train_config")
    schedule = (config or {}).get("schedule", "plateau")
    runs.append({**summary, "model": model, "epochs": summary["epochs_run"], "schedule": schedule,
                 "paper_mae_kcal_mol": PAPER[model].get(summary["n_train"])})  # fmt: skip
    runs.sort(key=lambda r: (r["model"], r["n_train"]))
    return {
        "dataset": "qm9",
        "target": "U0 atomization energy, B3LYP/6-31G(2df,p)",
        "unit": "kcal/mol",
        "runs": runs,
    }


def render(result: dict, out_dir: Path) -> None:
    """``qm9_networks.md`` and the learning-curve figure ``qm9_networks.png``."""
    runs = result["runs"]
    lines = [
        "# QM9: interaction networks on U0 atomization energies",
        "",
        "Target: U0 atomization energy at B3LYP/6-31G(2df,p), kcal/mol. Test MAE on held-out molecules",
        "that no run trained or validated on; `epochs` is how many were run, `best` the epoch whose",
        "(EMA) weights were kept. Produced by `experiments/qm9_networks.py`.",
        "",
        "| model | n_train | n_val | n_test | schedule | epochs (best) | minutes | test MAE | test RMSE | published |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        paper = r.get("paper_mae_kcal_mol")
        lines.append(
            f"| {r['model']} | {r['n_train']} | {r['n_val']} | {r['n_test']} | {r['schedule']} "
            f"| {r['epochs']} ({r['best_epoch']}) | {r['train_minutes']:.0f} | {r['test_mae_kcal_mol']:.3f} "
            f"| {r['test_rmse_kcal_mol']:.3f} | {paper if paper is not None else '–'} |"
        )
    others = sorted({r["n_test"] for r in runs} - {DEFAULT_N_TEST})
    if others:
        lines += [
            "",
            f"Rows with n_test other than {DEFAULT_N_TEST} were scored on another seeded hold-out set.",
        ]
    lines += [
        "",
        "Published: SchNet 0.59 (50k) and 0.31 (110k), Schütt et al., NeurIPS 2017 and J. Chem. Phys. 148,",
        "241722 (2018); DTNN 0.94 (50k) and 0.84 (100k) as reported there. The runs here were trained on",
        "two CPU cores; epochs and minutes are in the table.",
        "",
        "![learning curve](qm9_networks.png)",
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "qm9_networks.md", lines)
    plot(runs, out_dir / "qm9_networks.png")


def plot(runs: list[dict], path: Path) -> None:
    """Test MAE against training-set size, ours and published."""
    plt = report.pyplot()

    fig, ax = plt.subplots(figsize=(5.4, 4.0))
    for k, model in enumerate(sorted(PAPER)):
        color = f"C{k}"
        mine = [r for r in runs if r["model"] == model]
        for schedule, marker in (("cosine", "o-"), ("plateau", "s")):
            sel = [r for r in mine if r["schedule"] == schedule]
            if sel:
                label = f"{model}, qmlx" + ("" if schedule == "cosine" else " (plateau, shorter run)")
                ax.plot([r["n_train"] for r in sel], [r["test_mae_kcal_mol"] for r in sel], marker, color=color,
                        label=label, mfc="none" if schedule == "plateau" else color)  # fmt: skip
        n, mae = zip(*sorted(PAPER[model].items()))
        ax.plot(n, mae, "x--", color=color, label=f"{model}, published")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="training molecules", ylabel="test MAE, U0 (kcal/mol)")
    ax.set_title("QM9 learning curve (one held-out test set)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "qm9_networks", argv)


if __name__ == "__main__":
    main()
