"""Command-line training of networks: ``qmlx train schnet|dtnn``.

`add_train_network` registers the sub-commands on the ``train`` sub-parsers of ``qmlx``; the
module also runs on its own: ``python -m qmlx.train.cli schnet --dataset qm7 --fold 0``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from qmlx.errors import QmlxError


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="qm7", choices=["qm7", "qm9"], help="training data (default qm7)")
    p.add_argument("--fold", type=int, default=0, help="QM7 official fold 0-4 (default 0)")
    p.add_argument("--n-train", type=int, default=None, help="training molecules (default: all available)")
    p.add_argument(
        "--n-val", type=int, default=None, help="validation molecules carved from the training part"
    )
    p.add_argument("--n-test", type=int, default=None, help="QM9 held-out test molecules (default 10000)")
    p.add_argument("--epochs", type=int, default=1000, help="maximum epochs (default 1000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--lr-patience", type=int, default=25, help="epochs without improvement before lr decay")
    p.add_argument("--lr-factor", type=float, default=0.5)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--patience", type=int, default=100, help="early-stopping patience in epochs")
    p.add_argument(
        "--ema", type=float, default=None, help="EMA decay of the weights, e.g. 0.999 (default off)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops gracefully")
    p.add_argument("--features", type=int, default=None, help="atom feature size")
    p.add_argument("--interactions", type=int, default=None, help="number of interaction blocks")
    p.add_argument("--factors", type=int, default=None, help="DTNN: size of the factorized tensor layer")
    p.add_argument(
        "--rbf-stop", type=float, default=None, help="DTNN: last Gaussian centre in Å (10 for QM7)"
    )
    p.add_argument(
        "--cutoff",
        type=float,
        default=None,
        help="interaction cutoff in Å (SchNet 5; DTNN default 50: all pairs)",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<model>-fold<K>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument(
        "--reset-lr", type=float, default=None, help="with --resume: set this learning rate (a second phase)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command_line() -> str:
    """The command as the user typed it, for the metadata of the trained model."""
    prog = "python -m qmlx.train.cli" if sys.argv[0].endswith("cli.py") else "qmlx"
    return " ".join([prog, *sys.argv[1:]])


def train_handler(args: argparse.Namespace) -> None:
    """Run ``qmlx train schnet|dtnn`` from parsed arguments and print the result as JSON."""
    from qmlx.train.engine import TrainConfig
    from qmlx.train.run import train_network

    if args.epochs < 1:
        raise QmlxError("--epochs must be at least 1")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_factor=args.lr_factor,
        lr_patience=args.lr_patience, min_lr=args.min_lr, early_stop_patience=args.patience,
        ema_decay=args.ema, seed=args.seed, max_minutes=args.max_minutes, threads=args.threads,
    )  # fmt: skip
    model_config = {}
    if args.features:
        model_config["n_features"] = args.features
    if args.interactions:
        model_config["n_interactions"] = args.interactions
    if args.factors is not None:
        if args.network != "dtnn":
            raise QmlxError("--factors applies to dtnn only")
        model_config["n_factors"] = args.factors
    if args.rbf_stop is not None:
        if args.network != "dtnn":
            raise QmlxError("--rbf-stop applies to dtnn only")
        model_config["rbf_stop"] = args.rbf_stop
    if args.cutoff is not None:
        if not args.cutoff > 0:
            raise QmlxError(f"--cutoff must be positive, got {args.cutoff}")
        model_config["cutoff"] = args.cutoff
    summary = train_network(
        args.network, dataset=args.dataset, fold=args.fold, n_train=args.n_train, n_val=args.n_val,
        n_test=args.n_test, out=args.out, resume=args.resume, config=config, model_config=model_config,
        progress=not args.no_progress, command=_command_line(), reset_lr=args.reset_lr,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))


def add_train_network(train_subparsers: argparse._SubParsersAction) -> None:
    """Register ``schnet`` and ``dtnn`` on the ``qmlx train`` sub-parsers."""
    for name, text in (("schnet", "SchNet (Schütt et al. 2018)"), ("dtnn", "DTNN (Schütt et al. 2017)")):
        p = train_subparsers.add_parser(name, help=f"train a {text} on atomization energies")
        _add_options(p)
        p.set_defaults(func=train_handler, network=name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qmlx-train", description="train an interaction network")
    sub = parser.add_subparsers(dest="network_command", required=True)
    add_train_network(sub)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except QmlxError as err:
        print(f"qmlx: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
