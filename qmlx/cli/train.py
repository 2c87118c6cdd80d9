"""``qmlx train krr|schnet|dtnn``: one set of data and split options for every model.

Every run records the data, target, split, seed and domain of applicability in the saved model;
every option is checked before any data is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qmlx.cli.common import (
    REPRESENTATION_NAMES,
    add_data_options,
    add_device,
    add_progress,
    add_threads,
    check_writable,
    command_line,
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from qmlx.errors import ConfigError


# ---------------------------------------------------------------------------------------------- krr
def train_krr_command(args: argparse.Namespace) -> None:
    """Train KRR on the training part (hyperparameters by inner CV unless given), print the test
    MAE in kcal/mol and save the model (HDF5)."""
    from threadpoolctl import threadpool_limits

    from qmlx.data import load_dataset
    from qmlx.data.splits import split
    from qmlx.kernels import save_krr
    from qmlx.kernels.training import default_kernel, train_krr
    from qmlx.train.run import choose_target, data_label

    check_writable(args.out, "--out")
    mols = load_dataset(args.data)
    target = choose_target(mols, args.target)
    sp = split(mols, args.split, args.fold, args.folds, args.seed, n_train=args.n_train, n_val=0)
    kernel = args.kernel or default_kernel(args.representation)
    params = (
        {"n_samples": args.n_samples, "random_state": args.seed} if args.representation == "random-cm" else {}
    )
    print(
        f"dataset         {mols.name}: {len(sp.fit)} training / {len(sp.test)} test molecules ({sp.describe()})"
    )
    solver = f", Nyström with {args.centers} centres" if args.solver == "nystrom" else ""
    print(f"model           {args.representation} + {kernel} kernel{solver}; {mols.describe(target)}")
    with threadpool_limits(args.threads):
        model, info = train_krr(
            mols, sp.fit, sp.test, args.representation, kernel, args.sigma, args.lam, target, params,
            progress=not args.no_progress, baseline=args.baseline, solver=args.solver, n_centers=args.centers,
            seed=args.seed,
            metadata={"data": data_label(args.data), "split": sp.record, "command": command_line()},
        )  # fmt: skip
    how = "inner CV on the training part" if "inner_cv" in info else "given"
    print(f"hyperparameters sigma = {info['sigma']:g}, lambda = {info['lam']:g} ({how})")
    if info.get("test_mae_kcal_mol") is not None:
        print(
            f"test MAE        {info['test_mae_kcal_mol']:.3f} kcal/mol  "
            f"(RMSE {info['test_rmse_kcal_mol']:.3f} kcal/mol)"
        )
        if info.get("n_test_refused"):
            print(
                f"refused         {info['n_test_refused']} test molecules the model cannot answer "
                "(not in the MAE; see qmlx predict)"
            )
    else:
        print("test MAE        none (--split none: every molecule was used for training)")
    fold = f"-fold{sp.fold}" if sp.fold is not None else ""
    stem = Path(mols.name).stem if args.data not in ("qm7", "qm9") else args.data
    out = Path(args.out or f"krr-{stem}-{args.representation}-{kernel}{fold}.h5")
    save_krr(model, out)
    print(f"saved           {out}  ({info['wall_time_s']:.1f} s)")


def add_krr(models: argparse._SubParsersAction) -> None:
    p = models.add_parser(
        "krr",
        help="kernel ridge regression on Coulomb-matrix / Bag-of-Bonds representations",
        description="Train kernel ridge regression, print the test MAE (kcal/mol) and save the model (HDF5).",
    )
    add_data_options(p)
    p.add_argument("--representation", default="sorted-cm", choices=REPRESENTATION_NAMES)
    p.add_argument(
        "--kernel", choices=["laplacian", "gaussian"], default=None,
        help="default: gaussian for eigenspectrum, laplacian otherwise",
    )  # fmt: skip
    p.add_argument("--sigma", type=positive_float, default=None, help="kernel width; default: inner CV")
    p.add_argument(
        "--lam", type=nonnegative_float, default=None, help="ridge regularization; default: inner CV"
    )
    p.add_argument(
        "--solver", choices=["exact", "nystrom"], default="exact",
        help="exact: Cholesky on all training molecules; nystrom: Nyström/FALKON on --centers centres "
        "(for large training sets; hyperparameters from inner CV on at most 4,000 training molecules)",
    )  # fmt: skip
    p.add_argument(
        "--centers", type=positive_int, default=1000, help="with --solver nystrom: Nyström centres M"
    )
    p.add_argument("--n-samples", type=positive_int, default=10, help="random Coulomb matrices per molecule")
    p.add_argument(
        "--baseline", choices=["none", "elements"], default="none",
        help="elements: fit per-element reference energies on the training part and regress the rest "
        "(use it for total energies)",
    )  # fmt: skip
    p.add_argument("--n-train", type=positive_int, default=None, help="training molecules (default: all)")
    add_threads(p, None, "BLAS threads (default: all)")
    p.add_argument("--out", default=None, help="model file to write (default krr-DATA-REP-KERNEL-foldK.h5)")
    add_progress(p)
    p.set_defaults(func=train_krr_command)


# ----------------------------------------------------------------------------------------- networks
def train_network_command(args: argparse.Namespace) -> None:
    """Run ``qmlx train schnet|dtnn`` and print the result as JSON."""
    from qmlx._io import json_dumps
    from qmlx.train.config import SplitSpec, TrainConfig
    from qmlx.train.ensemble import train_ensemble
    from qmlx.train.run import check_new_run, train_network

    if args.reset_lr is not None and not args.resume:
        raise ConfigError("--reset-lr starts a second phase of a resumed run; give --resume as well")
    for option, value in (("--factors", args.factors), ("--rbf-stop", args.rbf_stop)):
        if value is not None and args.network != "dtnn":
            raise ConfigError(f"{option} applies to dtnn only")
    check_writable(args.out, "--out", is_dir=True)
    check_new_run(args.out, args.resume)  # before the data is read
    from qmlx.nn.batch import resolve_device

    device = resolve_device(args.device)  # a CUDA request without CUDA fails here, before any work
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_factor=args.lr_factor,
        lr_patience=args.lr_patience, min_lr=args.min_lr, schedule=args.schedule,
        weight_decay=args.weight_decay, loss=args.loss, early_stop_patience=args.patience, ema_decay=args.ema,
        seed=args.seed, max_minutes=args.max_minutes, threads=args.threads,
        device=str(device), precision=args.precision, compile=args.compile, tables=not args.no_tables,
    )  # fmt: skip
    names = {
        "features": "n_features", "interactions": "n_interactions", "factors": "n_factors",
        "rbf_stop": "rbf_stop", "cutoff": "cutoff",
    }  # fmt: skip
    model_config = {key: getattr(args, opt) for opt, key in names.items() if getattr(args, opt) is not None}
    command = command_line()
    spec = SplitSpec(
        method=args.split, fold=args.fold, n_folds=args.folds, n_train=args.n_train, n_val=args.n_val,
        n_test=args.n_test, seed=args.seed,
    )  # fmt: skip
    common = dict(
        target=args.target, model_config=model_config, out=args.out, resume=args.resume,
        progress=not args.no_progress, command=command,
    )  # fmt: skip
    try:
        if args.ensemble:
            if args.reset_lr is not None:
                raise ConfigError("--reset-lr applies to single runs, not to --ensemble")
            summary = train_ensemble(args.ensemble, args.network, args.data, spec, config, **common)
        else:
            summary = train_network(args.network, args.data, spec, config, reset_lr=args.reset_lr, **common)
    except KeyboardInterrupt:
        again = command if "--resume" in command else f"{command} --resume"
        print(
            "qmlx: interrupted; the last finished epoch is in the run's checkpoint.pt. "
            f"Continue with: {again}",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    if summary:  # under torchrun only rank 0 reports
        print(json_dumps(summary))


def _network_options(p: argparse.ArgumentParser) -> None:
    add_data_options(p)
    p.add_argument("--n-train", type=positive_int, default=None, help="training molecules (default: all)")
    p.add_argument(
        "--n-val", type=positive_int, default=None, help="validation molecules (default 10%%, ≤ 1000)"
    )
    p.add_argument(
        "--n-test", type=positive_int, default=None,
        help="random hold-out test set of this size instead of K-fold (QM9: 10000)",
    )  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=1000, help="maximum epochs (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="initial Adam learning rate")
    p.add_argument(
        "--lr-patience", type=nonnegative_int, default=25, help="epochs without improvement before lr decay"
    )
    p.add_argument("--lr-factor", type=fraction, default=0.5)
    p.add_argument("--min-lr", type=nonnegative_float, default=1e-5)
    p.add_argument(
        "--schedule", choices=["plateau", "cosine"], default="plateau",
        help="learning rate: plateau decay by --lr-factor, or a cosine from --lr to --min-lr over --epochs",
    )  # fmt: skip
    p.add_argument(
        "--weight-decay", type=nonnegative_float, default=0.0,
        help="decoupled weight decay (AdamW); each step scales the weights by 1 - lr * weight_decay",
    )  # fmt: skip
    p.add_argument(
        "--loss", choices=["mse", "mae"], default="mse",
        help="training loss on the energies: mean squared (default) or mean absolute error",
    )  # fmt: skip
    p.add_argument("--patience", type=positive_int, default=100, help="early-stopping patience in epochs")
    p.add_argument("--ema", type=unit_interval, default=None, help="EMA decay of the weights, e.g. 0.999")
    add_threads(p, 1, "torch CPU threads (default 1)")
    p.add_argument(
        "--max-minutes", type=nonnegative_float, default=None, help="wall-clock budget; stops gracefully"
    )
    p.add_argument("--features", type=positive_int, default=None, help="atom feature size")
    p.add_argument("--interactions", type=positive_int, default=None, help="number of interaction blocks")
    p.add_argument(
        "--factors", type=positive_int, default=None, help="DTNN: size of the factorized tensor layer"
    )
    p.add_argument("--rbf-stop", type=positive_float, default=None, help="DTNN: last Gaussian centre in Å")
    p.add_argument(
        "--cutoff",
        type=positive_float,
        default=None,
        help="interaction cutoff in Å (SchNet 5; DTNN 50: all pairs)",
    )
    add_device(p)
    p.add_argument(
        "--precision", choices=["32", "bf16"], default="32",
        help="32: float32; bf16: bfloat16 autocast in the forward pass (explanations stay float64)",
    )  # fmt: skip
    p.add_argument(
        "--compile", action="store_true",
        help="fuse the training step with torch.compile (about a minute to compile, then faster steps; "
        "needs a C++ compiler)",
    )  # fmt: skip
    p.add_argument(
        "--no-tables", action="store_true",
        help="compute the filters (DTNN: distance factors) at every pair in every step instead of "
        "interpolating them from a grid of distances computed in every step (the default for batches "
        "of many pairs: faster; the energies agree within 2e-3 kcal/mol on QM7)",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="run directory (default runs/<data>-<model>-fold<K>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument(
        "--ensemble", type=positive_int, default=None, metavar="N",
        help="train N members (seeds S..S+N-1, one split) into one ensemble file with uncertainties",
    )  # fmt: skip
    p.add_argument(
        "--reset-lr",
        type=positive_float,
        default=None,
        help="with --resume: set this learning rate (a second phase)",
    )
    add_progress(p)


def add(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model (krr, schnet, dtnn)")
    models = train.add_subparsers(dest="model", required=True)
    add_krr(models)
    for name, text in (("schnet", "SchNet (Schütt et al. 2018)"), ("dtnn", "DTNN (Schütt et al. 2017)")):
        p = models.add_parser(name, help=f"train a {text} on an energy target")
        _network_options(p)
        p.set_defaults(func=train_network_command, network=name)
