"""Models compared by their explanations on QM7's official test fold 0 (`qmlx.insight.compare`;
the same as ``qmlx insight compare qm7-schnet qm7-dtnn KRR.h5 --data qm7``).

The kernel model is the README's main job, trained here: kernel ridge regression on sorted
Coulomb matrices with a Laplacian kernel, fold 0 (``qmlx train krr --data qm7 --representation
sorted-cm --kernel laplacian --fold 0``), explained by its neuralized atom relevances.

    python experiments/insight_compare.py

Writes ``insight_compare.json`` and ``.md`` to ``--out-dir`` (default ``results/``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the bootstrap")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--top", type=int, default=10)
    return parser


def compute(args: argparse.Namespace) -> dict:
    import contextlib
    import io

    from qmlx.cli import main as qmlx
    from qmlx.data import load_qm7
    from qmlx.insight.compare import compare_models
    from qmlx.insight.groups import held_out_molecules
    from qmlx.models import load_model

    with tempfile.TemporaryDirectory() as tmp:
        krr_file = Path(tmp) / "krr-qm7-sorted-cm-laplacian-fold0.h5"
        with contextlib.redirect_stdout(io.StringIO()):
            status = qmlx(["train", "krr", "--data", "qm7", "--representation", "sorted-cm", "--kernel", "laplacian",
                           "--fold", "0", "--out", str(krr_file)])  # fmt: skip
        if status:
            raise SystemExit("insight_compare: training the kernel model failed")
        names = ["qm7-schnet", "qm7-dtnn", "krr (sorted-cm, laplacian)"]
        models = [load_model("qm7-schnet"), load_model("qm7-dtnn"), load_model(krr_file)]
        qm7 = load_qm7(download_if_missing=False)
        test, _, chosen = held_out_molecules(models[0], qm7)
        result = compare_models(models, test, names, n_resamples=args.resamples, seed=args.seed, top=args.top)
        errors = {
            n: float(abs(m.predict(test).energy - test.target("atomization_energy")).mean())
            for n, m in zip(names, models)
        }
    result.update(molecules=chosen, test_mae_kcal_mol=errors)
    return result


def render(result: dict, out_dir: Path) -> None:
    names, methods, mae = result["models"], result["methods"], result["test_mae_kcal_mol"]
    rows = [r for r in result["groups"] if r["occurrences"] >= 10]
    lines = [
        "# Models compared by their explanations (QM7, fold 0)",
        "",
        ", ".join(f"{n} ({m}; test MAE {mae[n]:.2f} kcal/mol)" for n, m in zip(names, methods))
        + f", on {result['molecules']}. Group energies: the sum of each model's atom contributions over the group's atoms "
        "and hydrogens, mean per occurrence (kcal/mol); groups with at least 10 occurrences.",
        "",
        *report.table(
            ["group", "n", *names],
            [
                [r["group"], r["occurrences"], *[report.format_number(v, ".2f") for v in r["energies"]]]
                for r in rows
            ],
        ),
        "",
        *report.table(
            [
                "models",
                "group energies (Spearman)",
                "atom contributions (Pearson)",
                "mean disagreement (kcal/mol per atom)",
                "disagreement vs error difference (Spearman)",
            ],
            [
                [
                    f"{p['a']} / {p['b']}",
                    f"{p['group_spearman']:.2f}",
                    f"{p['atom_pearson']:.2f}",
                    f"{p['mean_disagreement']:.2f}",
                    report.format_number(p["disagreement_error_spearman"], ".2f"),
                ]
                for p in result["pairs"]
            ],
        ),  # fmt: skip
        "",
        "Molecules whose explanations disagree most (mean absolute difference of atom contributions over the "
        "model pairs, kcal/mol per atom), with each model's absolute error (kcal/mol):",
        "",
        *report.table(
            ["molecule", "formula", "disagreement", *[f"abs. error {n}" for n in names]],
            [
                [m["id"], m["formula"], f"{m['disagreement']:.2f}", *[f"{e:.2f}" for e in m["abs_errors"]]]
                for m in result["most_disagreeing"]
            ],
        ),  # fmt: skip
        "",
        f"Bonds not perceived by RDKit: {result['perception_failures']} molecules (left out of the group energies).",
        "",
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "insight_compare.md", lines)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "insight_compare", argv)


if __name__ == "__main__":
    main()
