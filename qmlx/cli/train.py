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
    if args.overwrite and args.resume:
        raise ConfigError("--overwrite starts the run again; --resume continues it: give one")
    check_new_run(
        args.out, args.resume or args.overwrite
    )  # before the data is read; the run deletes on overwrite
    from qmlx.nn.batch import resolve_device

    device = resolve_device(args.device)  # a CUDA request without CUDA fails here, before any work
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_factor=args.lr_factor,
        lr_patience=args.lr_patience, min_lr=args.min_lr, schedule=args.schedule,
        weight_decay=args.weight_decay, loss=args.loss, early_stop_patience=args.patience, ema_decay=args.ema,
        seed=args.seed, max_minutes=args.max_minutes, threads=args.threads,
        device=str(device), precision=args.precision, compile=args.compile, tables=not args.no_tables,
        **args.config_train,
    )  # fmt: skip
    names = {
        "features": "n_features", "interactions": "n_interactions", "factors": "n_factors",
        "rbf_stop": "rbf_stop", "cutoff": "cutoff",
    }  # fmt: skip
    model_config = dict(args.config_model)  # from --config; the options below override it
    model_config |= {key: getattr(args, opt) for opt, key in names.items() if getattr(args, opt) is not None}
    command = command_line()
    spec = SplitSpec(
        method=args.split, fold=args.fold, n_folds=args.folds, n_train=args.n_train, n_val=args.n_val,
        n_test=args.n_test, seed=args.seed,
    )  # fmt: skip
    common = dict(
        target=args.target, model_config=model_config, out=args.out, resume=args.resume, overwrite=args.overwrite,
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
        "--overwrite", action="store_true",
        help="start again in a run directory that holds a run: its files (checkpoint, model, logs) are deleted",
    )  # fmt: skip
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


#: the network parsers by name, for `apply_config`
_NETWORK_PARSERS: dict[str, argparse.ArgumentParser] = {}
#: config-file keys (as `qmlx.train.run.train_network` records them in a run's ``config.json``)
#: -> the option they set; ``[model]`` takes the network's constructor arguments instead
CONFIG_OPTIONS = {
    "": {"network": "network", "data": "data", "target": "target"},
    "split": {"method": "split", "fold": "fold", "n_folds": "folds", "n_train": "n_train", "n_val": "n_val",
              "n_test": "n_test", "seed": "seed"},
    "train": {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "lr_factor": "lr_factor",
              "lr_patience": "lr_patience", "min_lr": "min_lr", "schedule": "schedule",
              "weight_decay": "weight_decay", "loss": "loss", "early_stop_patience": "patience",
              "ema_decay": "ema", "seed": "seed", "max_minutes": "max_minutes", "threads": "threads",
              "device": "device", "precision": "precision", "compile": "compile", "tables": "no_tables",
              "eval_batch_size": None},
}  # fmt: skip


def apply_config(argv: list[str]) -> None:
    """``qmlx train schnet|dtnn --config FILE``: the file's settings become the defaults of the
    command's options, so that options on the command line override them.

    FILE is TOML (``.toml``) or JSON (a run's ``config.json``): top-level ``network``, ``data``,
    ``target``; sections ``[split]`` (`qmlx.train.config.SplitSpec` fields), ``[train]``
    (`qmlx.train.config.TrainConfig` fields) and ``[model]`` (the network's constructor arguments,
    e.g. ``n_features``). Every value is checked as its option checks it; an unknown key is an
    error naming the file, with the closest known key.
    """
    import difflib

    if len(argv) < 2 or argv[0] != "train" or argv[1] not in _NETWORK_PARSERS:
        return
    path = next((argv[k + 1] for k, a in enumerate(argv[:-1]) if a == "--config"), None)
    path = path or next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None:
        return
    parser, network = _NETWORK_PARSERS[argv[1]], argv[1]
    config = _read_config(Path(path))
    actions = {a.dest: a for a in parser._actions}
    defaults: dict = {}

    def unknown(key: str, known) -> ConfigError:
        close = difflib.get_close_matches(key, list(known), n=1)
        return ConfigError(
            f"{path}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        )

    def put(dest: str, value, key: str) -> None:
        if dest in defaults and defaults[dest] != value:
            raise ConfigError(
                f"{path}: {key} = {value!r} contradicts {defaults[dest]!r} set elsewhere in the file"
            )
        defaults[dest] = value

    for key, value in config.items():
        if isinstance(value, dict):
            if key == "model":
                continue
            if key not in CONFIG_OPTIONS:
                raise unknown(key, [*CONFIG_OPTIONS, "model"])
            section = value
        else:
            section, key, value = {key: value}, "", None
        options = CONFIG_OPTIONS[key]
        for name, v in section.items():
            if name not in options:
                raise unknown(f"{key}.{name}" if key else name, [f"{key}.{n}" if key else n for n in options])
            if v is None:
                continue
            where = f"{key}.{name}" if key else name
            dest = options[name]
            if dest is None:  # a setting without an option
                defaults.setdefault("config_train", {})[name] = v
            elif name == "network":
                if str(v).lower() != network:
                    raise ConfigError(f"{path}: network = {v!r}, but the command trains {network}")
            elif name == "tables":
                put("no_tables", not _flag(v, path, where), where)
            elif isinstance(actions[dest], argparse._StoreTrueAction):
                put(dest, _flag(v, path, where), where)
            else:
                put(dest, _checked(actions[dest], v, path, where), where)
    model = config.get("model") or {}
    if model:
        import inspect

        from qmlx.nn.models import MODEL_CLASSES

        cls = {k.lower(): c for k, c in MODEL_CLASSES.items()}[network]
        known = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        for name in model:
            if name not in known:
                raise unknown(f"model.{name}", [f"model.{n}" for n in known])
        defaults["config_model"] = dict(model)
    parser.set_defaults(**defaults)


def _read_config(path: Path) -> dict:
    import json

    import tomllib

    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read ({err.strerror or err})") from None
    try:
        config = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({err})"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a table of settings")
    return config


def _flag(value, path, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
    return value


def _checked(action: argparse.Action, value, path, key: str):
    """``value`` as the option ``action`` would take it from the command line."""
    try:
        out = action.type(str(value)) if action.type is not None else value
    except (argparse.ArgumentTypeError, ValueError) as err:
        raise ConfigError(f"{path}: {key} {err}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{path}: {key} = {value!r}; expected one of {', '.join(map(str, action.choices))}")
    return out


def add(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model (krr, schnet, dtnn)")
    models = train.add_subparsers(dest="model", required=True)
    add_krr(models)
    for name, text in (("schnet", "SchNet (Schütt et al. 2018)"), ("dtnn", "DTNN (Schütt et al. 2017)")):
        p = models.add_parser(name, help=f"train a {text} on an energy target")
        _network_options(p)
        p.add_argument(
            "--config", default=None, metavar="FILE",
            help="settings from a TOML file (or a run's config.json); options given here override them. "
            "Sections [split], [train], [model]; see docs/networks.md",
        )  # fmt: skip
        p.set_defaults(func=train_network_command, network=name, config_model={}, config_train={})
        _NETWORK_PARSERS[name] = p
