"""Faithfulness of explanations on the QM7 test fold: atom flipping and AOPC, networks and KRR.

For each method, atoms of every test molecule are removed most-relevant-first (MoRF) and
least-relevant-first (LeRF) and the model predicts again (see `qmlx.explain.flipping`). The
function explained and re-predicted is the energy relative to per-element reference energies,
E(x) - sum_i ref(Z_i), in kcal/mol; atom energies and KRR relevances are taken relative to the
same references. A random order is the baseline, per model.

- **Network** (``--model``, default ``qm7-schnet``): ref = the network's own per-element
  references. For LRP the table also gives the *bias share*: per molecule, the fraction of the
  total absolute relevance, sum_i |R_i| + sum_i |b_i|, that the bias relevances b_i absorb; mean
  and maximum over the test molecules.
- **KRR** (sorted Coulomb matrix and Bag of Bonds, Laplacian kernel, fixed sigma and lambda,
  trained on the fold's whole training part): explained with `qmlx.explain.kernel` against the
  empty molecule. ref = the dressed-atom energies fitted by least squares on the training part
  (`qmlx.chem.fit_element_energies`), either subtracted before the regression (``+ element
  refs``, the model's own baseline) or not (the plain model). A fragment left by atom removal is
  predicted as a molecule of its own (the representation of the remaining atoms; it is always
  within the fitted padding size and bag sizes). The bias-share column holds the share of the
  explanation's remainder (the relevance of zero-padded features), which is zero by construction.

Writes ``qm7_atom_flipping.json``, ``.md`` and ``.png`` to ``--out-dir`` (default ``results/``).

    python experiments/qm7_atom_flipping.py --model qm7-schnet --fold 0
    python experiments/qm7_atom_flipping.py --quick      # 100 molecules, about a minute
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qmlx.chem import fit_element_energies
from qmlx.data import Molecules, load_qm7
from qmlx.explain import Explanation, Gamma, explain
from qmlx.explain.flipping import FlippingCurve, atom_scores, flipping_curve, relative_energy
from qmlx.nn import load_network

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

METHODS = ["decomposition", "lrp", "gradient", "gradient-x-input", "integrated-gradients"]
#: extra LRP rule reported for its bias share: (row name, rule)
LRP_GAMMA = ("lrp (gamma 0.25)", Gamma(0.25))
#: KRR representations with (sigma, lambda) of the Laplacian kernel: what inner 3-fold CV over
#: `qmlx.kernels.training.DEFAULT_GRIDS` selects on QM7 fold 0's training part
KRR = {"sorted-cm": (1600.0, 1e-10), "bob": (3200.0, 1e-4)}
KRR_BASELINES = ("none", "elements")


def bias_share(e: Explanation) -> np.ndarray | None:
    """(n_mol,) share of total |relevance| absorbed by biases (LRP) or the remainder (kernels).

    ``sum_i |b_i| / (sum_i |R_i| + sum_i |b_i|)`` per molecule, with per-atom bias relevances
    ``b_i``; for kernel explanations ``|remainder| / (sum_i |R_i| + |remainder|)``. ``None`` for
    methods without either.
    """
    mols = e.molecules
    atoms = np.bincount(mols.mol_index, weights=np.abs(e.relevance), minlength=len(mols))
    if e.bias is not None:
        absorbed = np.bincount(mols.mol_index, weights=np.abs(e.bias), minlength=len(mols))
    elif e.padding is not None:
        absorbed = np.abs(e.padding)
    else:
        return None
    total = atoms + absorbed
    return np.divide(absorbed, total, out=np.zeros_like(total), where=total > 0)


def _row(model: str, method: str, morf: FlippingCurve, lerf: FlippingCurve, seconds: float, e=None) -> dict:
    row = {
        "model": model,
        "method": method,
        "aopc_morf": morf.aopc,
        "aopc_lerf": lerf.aopc,
        "gap": morf.aopc - lerf.aopc,
        "explain_seconds": seconds,
    }
    share = None if e is None else bias_share(e)
    if share is not None:
        row.update(bias_share_mean=float(share.mean()), bias_share_max=float(share.max()))
    return row


def _random_rows(model: str, predict, test: Molecules, seed: int) -> tuple[dict, FlippingCurve]:
    rng = np.random.default_rng(seed)
    randoms = [flipping_curve(predict, test, rng.random(len(test.Z))) for _ in range(3)]
    aopc = float(np.mean([c.aopc for c in randoms]))
    return {"model": model, "method": "random", "aopc_morf": aopc, "aopc_lerf": aopc, "gap": 0.0}, randoms[0]


def run_network(model_name: str, test: Molecules, seed: int = 0) -> tuple[dict, list[dict], dict]:
    """Network rows: every method of `METHODS`, LRP with the gamma rule, and a random order."""
    model = load_network(model_name)
    predict = relative_energy(model)
    reference = model.head.reference.detach().double().numpy()
    curves, rows = {}, []
    variants = [(m, m, None) for m in METHODS]
    variants.insert(2, (LRP_GAMMA[0], "lrp", LRP_GAMMA[1]))
    for name, method, rule in variants:
        start = time.perf_counter()
        e = explain(model, test, method, rule=rule)
        seconds = time.perf_counter() - start
        relevance = e.relevance - reference[test.Z] if method == "decomposition" else e.relevance
        scores = atom_scores(relevance, signed=method != "gradient")
        morf, lerf = flipping_curve(predict, test, scores), flipping_curve(predict, test, -scores)
        curves[name] = (morf, lerf)
        rows.append(_row(model_name, name, morf, lerf, seconds, e))
    row, curve = _random_rows(model_name, predict, test, seed)
    rows.append(row)
    curves["random"] = (curve, curve)
    return getattr(model, "metadata", {}), rows, curves


def krr_relative_energy(model, refs: dict[int, float]) -> Callable[[Molecules], np.ndarray]:
    """``mols -> (n_mol,)`` KRR energies minus ``sum_i refs[Z_i]`` in kcal/mol.

    Fragments are represented as molecules of their own; the domain check of
    `KRRModel.predict_molecules` is skipped (a fragment is never larger than its molecule).
    """
    lookup = np.zeros(max(refs) + 1)
    lookup[list(refs)] = list(refs.values())

    def predict(mols: Molecules) -> np.ndarray:
        X = model.representation.transform(mols)
        own = model.baseline_energies(mols) - lookup[mols.Z]
        return model.regressor.predict(X) + np.bincount(mols.mol_index, weights=own, minlength=len(mols))

    return predict


def run_krr(qm7: Molecules, train: np.ndarray, test_idx: np.ndarray, seed: int = 0):
    """KRR rows: for each representation and baseline, the kernel explanation and a random order."""
    from qmlx.kernels.training import train_krr

    test = qm7.subset(test_idx)
    train_mols = qm7.subset(train)
    refs = fit_element_energies(
        train_mols.Z, train_mols.n_atoms, train_mols.target("atomization_energy", "kcal/mol")
    )
    lookup = np.zeros(max(refs) + 1)
    lookup[list(refs)] = list(refs.values())
    infos, rows, curves = [], [], {}
    for rep, (sigma, lam) in KRR.items():
        for baseline in KRR_BASELINES:
            name = f"krr {rep}" + (" + element refs" if baseline == "elements" else "")
            params = {"n_max": int(qm7.max_atoms)} if rep == "sorted-cm" else None
            start = time.perf_counter()
            with warnings.catch_warnings():  # the largest test molecule has more atoms than any in training
                warnings.simplefilter("ignore", UserWarning)
                model, info = train_krr(
                    qm7,
                    train,
                    test_idx,
                    representation=rep,
                    kernel="laplacian",
                    sigma=sigma,
                    lam=lam,
                    representation_params=params,
                    baseline=baseline,
                )
                fit_seconds = time.perf_counter() - start
                start = time.perf_counter()
                e = explain(model, test, "neuralized")
                seconds = time.perf_counter() - start
            predict = krr_relative_energy(model, refs)
            scores = atom_scores(e.relevance - lookup[test.Z])
            morf, lerf = flipping_curve(predict, test, scores), flipping_curve(predict, test, -scores)
            rows.append(_row(name, "neuralized", morf, lerf, seconds, e))
            row, curve = _random_rows(name, predict, test, seed)
            rows.append(row)
            curves[name] = {"neuralized": (morf, lerf), "random": (curve, curve)}
            infos.append(
                {
                    "name": name,
                    "representation": rep,
                    "kernel": "laplacian",
                    "sigma": sigma,
                    "lam": lam,
                    "baseline": baseline,
                    "n_train": int(info["n_train"]),
                    "test_mae_kcal_mol": float(info["test_mae_kcal_mol"]),
                    "reference_kcal_mol": float(e.reference[0]),
                    "max_abs_conservation_error_kcal_mol": float(np.abs(e.conservation_error()).max()),
                    "fit_seconds": fit_seconds,
                }
            )
    return {"element_refs_kcal_mol": {str(z): r for z, r in refs.items()}, "models": infos}, rows, curves


def run(model_name: str, fold: int, n_molecules: int | None, seed: int = 0, krr: bool = True) -> dict:
    qm7 = load_qm7()
    train, test_idx = qm7.folds[fold]
    test_idx = test_idx[:n_molecules] if n_molecules else test_idx
    test = qm7.subset(test_idx)
    metadata, rows, curves = run_network(model_name, test, seed)
    result = {
        "model": model_name,
        "model_metadata": metadata,
        "fold": fold,
        "n_molecules": len(test),
        "removal": "atoms deleted from the molecule; fraction q removes ceil(q n) atoms",
        "explained_function": "E(x) - sum_i ref(Z_i) [kcal/mol], ref = the model's per-element references",
        "unit": "kcal/mol",
        "bias_share": "per molecule sum_i |b_i| / (sum_i |R_i| + sum_i |b_i|), b = bias relevance (LRP) "
        "or the remainder (KRR); mean and max over the test molecules",
        "fractions": curves["lrp"][0].fractions.tolist(),
        "rows": rows,
        "curves": {
            m: {"morf": c[0].mean_change.tolist(), "lerf": c[1].mean_change.tolist()}
            for m, c in curves.items()
        },
    }
    if krr:
        info, krr_rows, krr_curves = run_krr(qm7, train, test_idx, seed)
        result["krr"] = {
            **info,
            "explained_function": "E(x) - sum_i ref(Z_i) [kcal/mol], ref = dressed-atom energies fitted on "
            "the training part",
            "fragments": "predicted as molecules of their own (the representation of the remaining atoms)",
            "curves": {
                name: {
                    m: {"morf": c[0].mean_change.tolist(), "lerf": c[1].mean_change.tolist()}
                    for m, c in d.items()
                }
                for name, d in krr_curves.items()
            },
        }
        result["rows"] = rows + krr_rows
    return result


def _fmt(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-"


def render(result: dict, out_dir: Path) -> None:
    """``STEM.md`` and ``STEM.png`` (STEM: ``qm7_atom_flipping`` or ``qm7_atom_flipping_quick``)."""
    stem = result.get("stem", "qm7_atom_flipping")
    lines = [
        f"# Atom flipping on QM7 fold {result['fold']} ({result['n_molecules']} test molecules, model {result['model']})",
        "",
        f"Explained and re-predicted: {result['explained_function']}. Removal: {result['removal']}.",
        "AOPC = mean over fractions and molecules of E(x_q) - E(x) in kcal/mol: higher is better for",
        "MoRF (most relevant first), lower for LeRF; the gap MoRF - LeRF summarizes both.",
        "Bias share: per molecule, the fraction of sum_i |R_i| + sum_i |b_i| that the bias relevances b_i",
        "absorb (LRP), mean and max over the test molecules; for KRR the share of the remainder.",
    ]
    krr = result.get("krr")
    if krr:
        refs = ", ".join(f"{z}: {r:.1f}" for z, r in krr["element_refs_kcal_mol"].items())
        lines += [
            "",
            "KRR rows: Laplacian kernel, trained on the fold's training part, explained per atom against",
            "the empty molecule (`qmlx.explain.kernel`). Re-predicted: E(x) - sum_i ref(Z_i) with",
            "dressed-atom references fitted on the training part (kcal/mol by Z:",
            f"{refs}); scores are relevance minus ref(Z_i).",
            f"Fragments are {krr['fragments']}.",
            "'+ element refs': the same references subtracted before the regression (the model's",
            "baseline). Without them, KRR predicts fragments of a few atoms near its value for the",
            "empty molecule, f(0), far from sum_i ref(Z_i), and these extrapolations dominate its curves.",
            "",
            "| KRR model | sigma | lambda | test MAE (kcal/mol) | reference f(0) (kcal/mol) | max conservation error |",
            "|---|---|---|---|---|---|",
        ]
        for m in krr["models"]:
            lines.append(
                f"| {m['name']} | {m['sigma']:g} | {m['lam']:g} | {m['test_mae_kcal_mol']:.2f} | "
                f"{m['reference_kcal_mol']:.1f} | {m['max_abs_conservation_error_kcal_mol']:.1e} |"
            )
    lines += [
        "",
        "| model | method | AOPC MoRF | AOPC LeRF | gap | bias share mean | bias share max | explain time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r.get('model', result['model'])} | {r['method']} | {r['aopc_morf']:.2f} | {r['aopc_lerf']:.2f} | "
            f"{r['gap']:.2f} | {_fmt(r, 'bias_share_mean', '.3f')} | {_fmt(r, 'bias_share_max', '.3f')} | "
            f"{_fmt(r, 'explain_seconds', '.1f')} |"
        )
    lines += report.run_lines(result)
    report.write_markdown(out_dir / f"{stem}.md", lines)
    plt = report.pyplot()
    groups = {}  # KRR curves by baseline, each on its own row: their scales differ
    for m in krr["models"] if krr else []:
        groups.setdefault(m["baseline"], []).append(m["name"])
    fig, axes = plt.subplots(1 + len(groups), 2, figsize=(10, 4 * (1 + len(groups))), squeeze=False)
    q = np.array(result["fractions"])
    for method, c in result["curves"].items():
        style = {"color": "0.5", "ls": "--"} if method == "random" else {}
        axes[0, 0].plot(q, c["morf"], label=method, **style)
        axes[0, 1].plot(q, c["lerf"], label=method, **style)
    panels = [(axes[0], result["model"])]
    for row, (baseline, names) in enumerate(groups.items(), start=1):
        for k, name in enumerate(names):
            for method, c in krr["curves"][name].items():
                style = {"ls": "--", "lw": 1} if method == "random" else {}
                for ax, key in zip(axes[row], ["morf", "lerf"]):
                    ax.plot(q, c[key], color=f"C{k}", label=f"{name}: {method}", **style)
        panels.append((axes[row], "KRR + element refs" if baseline == "elements" else "KRR"))
    for row_axes, model in panels:
        for ax, title in zip(row_axes, ["most relevant first", "least relevant first"]):
            ax.set_title(f"{model}: {title}")
            ax.set_xlabel("fraction of atoms removed")
            ax.grid(alpha=0.3)
        row_axes[1].sharey(row_axes[0])
        row_axes[0].set_ylabel("mean E(x_q) - E(x) [kcal/mol]")
        row_axes[1].legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, out_dir / f"{stem}.png")


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(
        __doc__, quick="100 molecules, written as *_quick.*", seed_help="seed of the random-order baseline"
    )
    parser.add_argument("--model", default="qm7-schnet", help="shipped model name or network file")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-molecules", type=int, default=None, help="first N test molecules (default all)")
    parser.add_argument("--no-krr", action="store_true", help="network rows only")
    return parser


def stem(args: argparse.Namespace) -> str:
    return "qm7_atom_flipping_quick" if args.quick else "qm7_atom_flipping"


def compute(args: argparse.Namespace) -> dict:
    """Flipping curves and AOPC of every method on the first test molecules of ``args.fold``."""
    start = time.perf_counter()
    n = 100 if args.quick else args.n_molecules
    result = run(args.model, args.fold, n, seed=args.seed, krr=not args.no_krr)
    result["wall_seconds"] = time.perf_counter() - start
    result["stem"] = stem(args)
    return result


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), stem, argv)


if __name__ == "__main__":
    main()
