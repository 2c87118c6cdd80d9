"""QM9 kernel ridge regression at scale: learning curves with Nyström/FALKON KRR (sorted CM, Bag of Bonds).

Protocol
--------
- QM9 (130,831 molecules), target: U0 atomization energies in kcal/mol.
- Test set: 10,000 molecules held out by a seeded permutation (``--seed``); the other 120,831
  form the training pool. A training set of size n is the first n molecules of one seeded
  permutation of the pool, so the sets are nested.
- Representations: sorted Coulomb matrix (Rupp et al., PRL 108, 058301, 2012) and Bag of Bonds
  (Hansen et al., JPCL 6, 2326, 2015), Laplacian kernel. Their layouts (padding size, bag sizes)
  are fitted on all molecules: sizes only, no targets.
- Hyperparameters: ``sigma`` and ``lam`` per representation by 3-fold cross-validation of the
  exact `KernelRidge` on the first ``--inner-n`` (5,000) molecules of the training pool, over the
  grid in `GRIDS`; the same values are used at every n.
- Regressor: `NystromKernelRidge` (FALKON: Rudi et al., NeurIPS 2017; Meanti et al., NeurIPS
  2020) with ``M = min(n, --max-centers)`` uniformly drawn centres and the whole ``K_nM`` held in
  memory. With ``M = n`` this is exact KRR. M is lowered in steps of 500 if the memory estimate
  (`memory_estimate`) exceeds ``--memory-gb``.
- Each point runs in a fresh process: its wall time includes loading QM9 and computing the
  representations, and its peak memory is that process's peak resident set size
  (``getrusage``). The load average of the machine is recorded before and after.
- Agreement: on the first ``--agreement-n`` (10,000) molecules of the pool, the exact
  `KernelRidge` and `NystromKernelRidge` (all molecules as centres, and fewer) at the same
  hyperparameters, compared on the test set.

Published KRR on QM9 U0 (Faber et al., J. Chem. Theory Comput. 13, 5255, 2017; about 117k
training molecules): Bag of Bonds about 1.5 kcal/mol, Coulomb matrix about 3 kcal/mol.

Results are resumable: points, hyperparameters and agreement rows already in the JSON are kept
and not recomputed (``--redo`` recomputes the requested points and agreement rows; the
hyperparameters are chosen once per representation and JSON file).

Usage::

    QMLX_DATA_DIR=... python experiments/qm9_krr.py --sizes 1000 5000 10000      # small points
    QMLX_DATA_DIR=... python experiments/qm9_krr.py --threads 2                  # all, up to 100k

Writes ``qm9_krr.json``, ``qm9_krr.md`` and ``qm9_krr.png`` in ``--out-dir`` (default ``results/``)
after every point; ``--report-only`` rewrites the Markdown and PNG from the JSON.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

try:
    from experiments import _report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report

TARGET = "atomization_energy"
N_TEST = 10_000
#: sigma grid (atomic units of the representation) and lambda grid per representation
GRIDS: dict[str, tuple[list[float], list[float]]] = {
    "sorted-cm": ([800.0, 1600.0, 3200.0, 6400.0, 12800.0], [1e-10, 1e-7, 1e-4, 1e-2]),
    "bob": ([1600.0, 3200.0, 6400.0, 12800.0, 25600.0], [1e-10, 1e-7, 1e-4, 1e-2]),
}
LABELS = {"sorted-cm": "sorted Coulomb matrix", "bob": "Bag of Bonds"}
#: Faber et al., JCTC 13, 5255 (2017): KRR on QM9 U0 with about 117k training molecules
PUBLISHED = {
    "sorted-cm": {"mae": 3.0, "n_train": 117_000, "note": "Coulomb matrix, about 3 kcal/mol"},
    "bob": {"mae": 1.5, "n_train": 117_000, "note": "Bag of Bonds, about 1.5 kcal/mol"},
}
SOURCE = "Faber et al., J. Chem. Theory Comput. 13, 5255 (2017)"


# --------------------------------------------------------------------------------------------
# work done in a fresh process per point


def _split(n_molecules: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test indices (n_test,), training pool in its seeded order (n_molecules - n_test,))."""
    perm = np.random.default_rng(seed).permutation(n_molecules)
    return np.sort(perm[:n_test]), perm[n_test:]


def _load(spec: dict):
    """QM9, targets in kcal/mol, the split and the representation fitted on all molecules."""
    from qmlx.data import load_dataset
    from qmlx.represent import make_representation

    mols = load_dataset("qm9")
    y = mols.target(TARGET, "kcal/mol")
    test, pool = _split(len(mols), spec["n_test"], spec["seed"])
    rep = make_representation(spec["representation"]).fit(mols)
    return mols, y, test, pool, rep


def _peak_rss_gb() -> float:
    """Peak resident set size of this process in GB (10^9 bytes); Linux reports KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _errors(pred: np.ndarray, y: np.ndarray) -> dict:
    err = pred - y
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "max_abs_error": float(np.abs(err).max()),
    }


def run_hyperparameters(spec: dict) -> dict:
    """3-fold CV of the exact KRR on the first ``inner_n`` pool molecules over `GRIDS`."""
    from threadpoolctl import threadpool_limits

    from qmlx.kernels import KernelProvider, select_hyperparameters

    t0 = time.perf_counter()
    with threadpool_limits(spec["threads"]):
        mols, y, _, pool, rep = _load(spec)
        inner = pool[: spec["inner_n"]]
        X = rep.transform(mols.subset(inner))
        sigmas, lams = GRIDS[spec["representation"]]
        provider = KernelProvider(X, "laplacian", sigmas, n_jobs=spec["threads"])
        grid = select_hyperparameters(provider, y[inner], sigmas, lams, n_splits=3, random_state=spec["seed"])
    return {
        **grid.to_dict(),
        "best_inner_cv_mae": grid.best_mae,
        "on_grid_edge": grid.on_edge(),
        "inner_n": spec["inner_n"],
        "wall_time_s": time.perf_counter() - t0,
    }


def _nystrom(spec: dict, n_centers: int, n_train: int):
    """The Laplacian `NystromKernelRidge` of ``spec`` with ``n_centers`` centres, caching all of
    K_nM (``n_train`` x ``n_centers`` float64)."""
    from qmlx.kernels import NystromKernelRidge

    return NystromKernelRidge(
        "laplacian", sigma=spec["sigma"], lam=spec["lam"], n_centers=n_centers, tol=spec["tol"],
        max_iter=spec["max_iter"], cache_size=8.0 * n_train * n_centers / 2**20 + 1.0,
        n_jobs=spec["threads"], random_state=spec["seed"],
    )  # fmt: skip


def run_point(spec: dict) -> dict:
    """Train `NystromKernelRidge` on the first ``n_train`` pool molecules and test it."""
    from threadpoolctl import threadpool_limits

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with threadpool_limits(spec["threads"]):
        mols, y, test, pool, rep = _load(spec)
        train = pool[: spec["n_train"]]
        X = rep.transform(mols.subset(train))
        t_rep = time.perf_counter() - t0
        est = _nystrom(spec, spec["n_centers"], len(X))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = time.perf_counter()
            est.fit(X, y[train])
            t_fit = time.perf_counter() - t
        del X
        t = time.perf_counter()
        Xt = rep.transform(mols.subset(test))
        pred = est.predict(Xt)
        t_pred = time.perf_counter() - t
    return {
        "representation": spec["representation"],
        "n_train": int(spec["n_train"]),
        "n_centers": int(est.n_centers_),
        "n_test": len(test),
        "sigma": spec["sigma"],
        "lam": spec["lam"],
        **_errors(pred, y[test]),
        "cg_iterations": int(est.n_iter_),
        "cg_converged": bool(est.converged_),
        "cg_relative_residual": float(est.residuals_[-1]),
        "cg_tol": spec["tol"],
        "cached_rows": int(est.cached_rows_),
        "representation_s": t_rep,
        "fit_s": t_fit,
        "fit_breakdown_s": est.timings_,
        "predict_s": t_pred,
        "wall_time_s": time.perf_counter() - t0,
        "peak_rss_gb": _peak_rss_gb(),
        "memory_estimate_gb": spec["memory_estimate_gb"],
        "threads": spec["threads"],
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "warnings": [str(w.message) for w in caught],
    }


def run_agreement(spec: dict) -> list[dict]:
    """Exact KRR against Nyström KRR with ``spec["centers"]`` centres on ``agreement_n`` molecules."""
    from threadpoolctl import threadpool_limits

    from qmlx.kernels import KernelRidge

    rows = []
    with threadpool_limits(spec["threads"]):
        mols, y, test, pool, rep = _load(spec)
        train = pool[: spec["agreement_n"]]
        X, Xt = rep.transform(mols.subset(train)), rep.transform(mols.subset(test))
        t = time.perf_counter()
        exact = KernelRidge("laplacian", spec["sigma"], spec["lam"], n_jobs=spec["threads"]).fit(X, y[train])
        exact_pred = exact.predict(Xt)
        t_exact = time.perf_counter() - t
        del exact
        exact_err = _errors(exact_pred, y[test])
        for M in spec["centers"]:
            t = time.perf_counter()
            est = _nystrom(spec, M, len(X)).fit(X, y[train])
            pred = est.predict(Xt)
            diff = pred - exact_pred
            err = _errors(pred, y[test])
            rows.append(
                {
                    "representation": spec["representation"],
                    "n_train": len(train),
                    "n_centers": int(est.n_centers_),
                    "n_test": len(test),
                    "sigma": spec["sigma"],
                    "lam": spec["lam"],
                    "exact_mae": exact_err["mae"],
                    "nystrom_mae": err["mae"],
                    "mae_difference": err["mae"] - exact_err["mae"],
                    "max_abs_prediction_difference": float(np.abs(diff).max()),
                    "mean_abs_prediction_difference": float(np.abs(diff).mean()),
                    "cg_iterations": int(est.n_iter_),
                    "cg_relative_residual": float(est.residuals_[-1]),
                    "exact_s": t_exact,
                    "nystrom_s": time.perf_counter() - t,
                    "threads": spec["threads"],
                }
            )
    return rows


def in_fresh_process(fn, spec: dict):
    """``fn(spec)`` in a new (spawned) Python process, so that its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, spec).result()


# --------------------------------------------------------------------------------------------
# planning, reporting


def memory_estimate(n: int, M: int, d: int, n_test: int = N_TEST, block: int = 1024) -> float:
    """Peak memory of a point in GB (10^9 bytes), the larger of fitting and predicting.

    Fitting holds ``K_nM`` (n, M), the two (M, M) factors, the training features (n, d) and one
    kernel chunk (block, M) with its distances; predicting holds the test features (n_test, d)
    and a (4 block, M) kernel chunk with its distances. All float64, plus about 0.6 GB for Python,
    QM9 and the libraries.
    """
    fit = n * M + 2 * M * M + n * d + 2 * block * M
    predict = n_test * d + 8 * block * M
    return 8 * max(fit, predict) / 1e9 + 0.6


def n_features(representation: str) -> int:
    """Length of the representation vectors on QM9: 435 (sorted CM, 29 atoms) or 713 (BoB)."""
    return {"sorted-cm": 435, "bob": 713}[representation]


def choose_centers(n: int, representation: str, max_centers: int, memory_gb: float) -> int:
    """``min(n, max_centers)``, lowered in steps of 500 until `memory_estimate` fits ``memory_gb``."""
    M = min(n, max_centers)
    while M > 500 and memory_estimate(n, M, n_features(representation)) > memory_gb:
        M -= 500
    return M


def environment(threads: int) -> dict:
    """`_report.environment` and the machine's memory in GB (10^9 bytes)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return {**_report.environment(threads), "memory_gb": round(memory, 1)}


def _cpu_count(result: dict) -> int:
    env = result["environment"]
    return env.get("cpu_count", env.get("processor_count"))  # files written before the run record


def render(result: dict, out_dir: Path) -> None:
    """``qm9_krr.md`` and ``qm9_krr.png``."""
    write_markdown(out_dir / "qm9_krr.md", result)
    plot(out_dir / "qm9_krr.png", result)


def write_markdown(path: Path, report: dict) -> None:
    lines = [
        "# QM9: kernel ridge regression with Nyström centres (FALKON)",
        "",
        "U0 atomization energies (kcal/mol). Test set: "
        f"{report['n_test']:,} molecules held out at random (seed {report['seed']}); training sets "
        "are nested subsets of the other 120,831. Laplacian kernel; `NystromKernelRidge` with M "
        "uniformly drawn centres (M = n: exact KRR), solved by conjugate gradients with the FALKON "
        "preconditioner (Rudi et al., NeurIPS 2017; Meanti et al., NeurIPS 2020) with the whole n x M "
        "kernel held in memory (float64). sigma and lambda per representation from 3-fold CV of the "
        f"exact KRR on {report['inner_n']:,} training molecules, the same at every n.",
        "",
        "## Hyperparameters",
        "",
        "| representation | sigma | lambda | inner CV MAE | on grid edge |",
        "|---|---|---|---|---|",
    ]
    for rep, h in report["hyperparameters"].items():
        lines.append(
            f"| {LABELS[rep]} | {h['best_sigma']:g} | {h['best_lam']:.0e} | {h['best_inner_cv_mae']:.2f} | "
            f"{'yes' if h['on_grid_edge'] else 'no'} |"
        )
    lines += [
        "",
        "## Learning curve",
        "",
        "| representation | n_train | M | test MAE | test RMSE | CG iterations | fit (centres + kernel + CG) | "
        "wall time | peak RSS | threads | load average (before / after) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(GRIDS)
    for p in sorted(report["points"], key=lambda p: (order.index(p["representation"]), p["n_train"])):
        parts = " + ".join(f"{p['fit_breakdown_s'][k]:.0f}" for k in ("centers_s", "kernel_s", "solve_s"))
        lines.append(
            f"| {LABELS[p['representation']]} | {p['n_train']:,} | {p['n_centers']:,} | {p['mae']:.2f} | "
            f"{p['rmse']:.2f} | {p['cg_iterations']} | {p['fit_s']:.0f} s ({parts}) | {p['wall_time_s']:.0f} s | "
            f"{p['peak_rss_gb']:.2f} GB | {p['threads']} | {p['load_average_before'][0]:.1f} / "
            f"{p['load_average_after'][0]:.1f} |"
        )
    lines += [
        "",
        "MAE and RMSE in kcal/mol on the test set. Wall time per point includes loading QM9 and computing "
        "the representations; peak RSS is that of the process which ran the point (GB = 10^9 bytes). "
        f"Threads: BLAS and distance threads, on a machine with {_cpu_count(report)} "
        "cores shared with other jobs (load average: the 1-minute value).",
        "",
        f"Published KRR on QM9 U0 ({SOURCE}; about 117k training molecules): Bag of Bonds about "
        "1.5 kcal/mol, Coulomb matrix about 3 kcal/mol.",
    ]
    if report.get("agreement"):
        lines += [
            "",
            "## Agreement with exact KRR",
            "",
            "Exact `KernelRidge` (Cholesky) and `NystromKernelRidge` trained on the same molecules with the "
            "same hyperparameters, compared on the test set (kcal/mol).",
            "",
            "| representation | n_train | M | exact MAE | Nyström MAE | MAE difference | max abs prediction "
            "difference | mean abs prediction difference | CG iterations |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in report["agreement"]:
            lines.append(
                f"| {LABELS[a['representation']]} | {a['n_train']:,} | {a['n_centers']:,} | {a['exact_mae']:.4f} | "
                f"{a['nystrom_mae']:.4f} | {a['mae_difference']:+.2e} | "
                f"{a['max_abs_prediction_difference']:.2e} | {a['mean_abs_prediction_difference']:.2e} | "
                f"{a['cg_iterations']} |"
            )
    lines += ["", "Generated by:", "", *[f"    {c}" for c in report["commands"]]]
    _report.write_markdown(path, lines)


def plot(path: Path, report: dict) -> None:
    plt = _report.pyplot()
    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(11, 4.5))
    for rep, color in (("sorted-cm", "tab:blue"), ("bob", "tab:orange")):
        pts = sorted((p for p in report["points"] if p["representation"] == rep), key=lambda p: p["n_train"])
        ref = PUBLISHED[rep]
        ax.plot(
            [ref["n_train"]],
            [ref["mae"]],
            marker="*",
            ms=13,
            ls="none",
            color=color,
            label=f"{LABELS[rep]}: exact KRR, about 117k (Faber et al. 2017)",
        )
        if not pts:
            continue
        n = [p["n_train"] for p in pts]
        top = max(p["n_centers"] for p in pts)
        ax.plot(
            n, [p["mae"] for p in pts], marker="o", color=color, label=f"{LABELS[rep]}: M = min(n, {top:,})"
        )
        for p in pts:
            if p["n_centers"] < p["n_train"]:
                ax.annotate(
                    f"M={p['n_centers']:,}",
                    (p["n_train"], p["mae"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        ax_cost.plot(
            n,
            [p["wall_time_s"] / 60 for p in pts],
            marker="o",
            color=color,
            label=f"{LABELS[rep]}: wall time",
        )
        ax_cost.plot(
            n,
            [p["peak_rss_gb"] for p in pts],
            marker="s",
            ls="--",
            color=color,
            label=f"{LABELS[rep]}: peak RSS",
        )
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.text(1e3, 1.03, "1 kcal/mol", color="gray", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training molecules n")
    ax.set_ylabel("test MAE (kcal/mol)")
    ax.set_title("QM9 U0, Laplacian KRR (Nyström/FALKON)")
    ax.legend(fontsize=7)
    ax_cost.set_xscale("log")
    ax_cost.set_yscale("log")
    ax_cost.axhline(30, color="gray", lw=0.8, ls=":")
    ax_cost.text(1e3, 31, "30 min", color="gray", fontsize=8)
    ax_cost.axhline(12, color="gray", lw=0.8, ls="-.")
    ax_cost.text(1e3, 12.4, "12 GB", color="gray", fontsize=8)
    ax_cost.set_xlabel("training molecules n")
    ax_cost.set_ylabel("wall time (min), peak RSS (GB)")
    threads = sorted({p["threads"] for p in report["points"]})
    cores = _cpu_count(report)
    used = "/".join(map(str, threads))
    ax_cost.set_title(f"cost per point (threads: {used}; shared {cores}-core machine)")
    for a in (ax, ax_cost):
        a.set_xlim(7e2, 1.6e5)
    if report["points"]:
        ax_cost.legend(fontsize=7)
    fig.tight_layout()
    _report.save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    parser = _report.make_parser(
        __doc__, seed_help="seed of the test set, the training order and the centres"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 10000, 50000, 100000])
    parser.add_argument("--representations", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument("--max-centers", type=int, default=10000, help="largest number of Nyström centres M")
    parser.add_argument(
        "--memory-gb", type=float, default=11.5, help="lower M until the memory estimate (GB) fits"
    )
    parser.add_argument("--inner-n", type=int, default=5000, help="molecules for choosing sigma and lambda")
    parser.add_argument(
        "--agreement-n", type=int, default=10000, help="0: skip the comparison with exact KRR"
    )
    parser.add_argument("--agreement-centers", nargs="+", type=int, default=[10000, 5000, 2000])
    parser.add_argument("--tol", type=float, default=1e-7, help="relative CG residual")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument(
        "--redo",
        action="store_true",
        help="recompute requested points and agreement rows already in the JSON (not the hyperparameters)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and memory estimates only")
    return parser


def compute(args: argparse.Namespace) -> dict:
    """Hyperparameters, agreement rows and learning-curve points missing from the JSON in
    ``args.out_dir`` (all requested ones with ``--redo``), each in a fresh process; the result
    is checkpointed after each."""
    command = _report.command(args)
    path = Path(args.out_dir) / "qm9_krr.json"
    report = _report.read_json(path) if path.exists() else {}
    if report and (report.get("seed"), report.get("n_test"), report.get("inner_n")) != (
        args.seed,
        N_TEST,
        args.inner_n,
    ):
        raise SystemExit(
            f"{path} was made with another seed, test size or inner n; move it away or use --out-dir"
        )
    report.update(
        dataset="QM9",
        target=f"{TARGET} (U0) [kcal/mol]",
        seed=args.seed,
        n_test=N_TEST,
        inner_n=args.inner_n,
        environment=environment(args.threads),
        published={"source": SOURCE, **PUBLISHED},
    )
    report.setdefault("hyperparameters", {})
    report.setdefault("points", [])
    report.setdefault("agreement", [])
    report["commands"] = [*(c for c in report.get("commands", []) if c != command), command]
    base = {"seed": args.seed, "n_test": N_TEST, "inner_n": args.inner_n, "threads": args.threads}
    plan = [
        (rep, n, choose_centers(n, rep, args.max_centers, args.memory_gb))
        for rep in args.representations
        for n in args.sizes
    ]
    for rep, n, M in plan:
        print(
            f"{rep} n={n} M={M}: memory estimate {memory_estimate(n, M, n_features(rep)):.1f} GB", flush=True
        )
    if args.dry_run:
        raise SystemExit(0)

    for rep in args.representations:
        if rep not in report["hyperparameters"]:
            print(f"{rep}: choosing sigma and lambda on {args.inner_n} molecules ...", flush=True)
            report["hyperparameters"][rep] = in_fresh_process(
                run_hyperparameters, {**base, "representation": rep}
            )
            _report.checkpoint(args, report)
        h = report["hyperparameters"][rep]
        print(
            f"{rep}: sigma {h['best_sigma']:g}, lambda {h['best_lam']:g} (inner CV MAE {h['best_inner_cv_mae']:.2f})",
            flush=True,
        )

    def hyper(rep: str) -> dict:
        h = report["hyperparameters"][rep]
        return {"sigma": h["best_sigma"], "lam": h["best_lam"]}

    if args.agreement_n:
        for rep in args.representations:
            done = {(a["representation"], a["n_train"], a["n_centers"]) for a in report["agreement"]}
            centers = [min(M, args.agreement_n) for M in args.agreement_centers]
            todo = [M for M in centers if args.redo or (rep, args.agreement_n, M) not in done]
            if not todo:
                continue
            print(f"{rep}: exact vs Nyström KRR on {args.agreement_n} molecules, M = {todo} ...", flush=True)
            spec = {
                **base,
                **hyper(rep),
                "representation": rep,
                "agreement_n": args.agreement_n,
                "centers": todo,
                "tol": args.tol,
                "max_iter": args.max_iter,
            }
            rows = in_fresh_process(run_agreement, spec)
            report["agreement"] = [
                a
                for a in report["agreement"]
                if (a["representation"], a["n_train"], a["n_centers"])
                not in {(r["representation"], r["n_train"], r["n_centers"]) for r in rows}
            ] + rows
            for r in rows:
                print(
                    f"  M={r['n_centers']}: exact MAE {r['exact_mae']:.4f}, Nyström MAE {r['nystrom_mae']:.4f}, max |dpred| "
                    f"{r['max_abs_prediction_difference']:.2e} kcal/mol ({r['cg_iterations']} CG iterations)",
                    flush=True,
                )
            _report.checkpoint(args, report)

    for rep, n, M in plan:
        key = (rep, n, M)
        if not args.redo and any(
            (p["representation"], p["n_train"], p["n_centers"]) == key for p in report["points"]
        ):
            print(f"{rep} n={n} M={M}: in {path.name}, skipped", flush=True)
            continue
        spec = {
            **base,
            **hyper(rep),
            "representation": rep,
            "n_train": n,
            "n_centers": M,
            "tol": args.tol,
            "max_iter": args.max_iter,
            "memory_estimate_gb": memory_estimate(n, M, n_features(rep)),
        }
        print(f"{rep} n={n} M={M} ...", flush=True)
        point = in_fresh_process(run_point, spec)
        report["points"] = [
            p for p in report["points"] if (p["representation"], p["n_train"], p["n_centers"]) != key
        ] + [point]
        print(
            f"  test MAE {point['mae']:.3f} kcal/mol, {point['cg_iterations']} CG iterations, fit {point['fit_s']:.0f} s, "
            f"wall {point['wall_time_s']:.0f} s, peak RSS {point['peak_rss_gb']:.2f} GB, load {point['load_average_before'][0]:.1f}",
            flush=True,
        )
        _report.checkpoint(args, report)
    return report


def main(argv: list[str] | None = None) -> dict:
    return _report.main(compute, render, build_parser(), "qm9_krr", argv)


if __name__ == "__main__":
    main()
