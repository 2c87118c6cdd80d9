"""``qmlx train krr``: train kernel ridge regression on a data set, report the test MAE, save the model.

The lead's ``qmlx/cli.py`` calls `add_train_krr` with the sub-parsers of ``qmlx train``. The
prediction side (``qmlx predict MODEL FILE...``) uses `is_krr_file` and `load_krr`, re-exported
here::

    model = load_krr(path)              # KRRModel; DataFormatError if the file is wrong or corrupt
    energies = model.predict_molecules(Molecules.read(xyz))   # (n,) kcal/mol
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qmlx.kernels.model import KRRModel, is_krr_file, load_krr, save_krr
from qmlx.kernels.training import TrainingError, default_kernel, train_krr
from qmlx.represent import REPRESENTATIONS

__all__ = ["add_train_krr", "is_krr_file", "load_krr", "save_krr", "train_krr_command", "KRRModel"]


def _load(spec: str):
    from qmlx.cli import load_dataset

    return load_dataset(spec)


def _split(mols, fold: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if mols.folds:
        k = 0 if fold is None else fold
        if not 0 <= k < len(mols.folds):
            raise TrainingError(f"{mols.name} has folds 0..{len(mols.folds) - 1}, not {k}")
        train, test = mols.folds[k]
        return np.asarray(train), np.asarray(test), f"fold {k} of {len(mols.folds)}"
    if fold is not None:
        raise TrainingError(f"{mols.name} defines no cross-validation folds; leave out --fold")
    perm = np.random.default_rng(seed).permutation(len(mols))
    n_test = max(1, len(mols) // 5)
    if len(mols) - n_test < 2:
        raise TrainingError(f"{mols.name} has {len(mols)} molecules; KRR needs at least 3")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test]), f"random 80/20 split (seed {seed})"


def train_krr_command(args: argparse.Namespace) -> None:
    """Handler of ``qmlx train krr``: train, print the test MAE in kcal/mol, save the model."""
    from threadpoolctl import threadpool_limits

    mols = _load(args.dataset)
    target = args.target or ("atomization_energy" if "atomization_energy" in mols.targets else None)
    if target is None:
        if len(mols.targets) != 1:
            raise TrainingError(
                f"{mols.name}: choose a target with --target from {sorted(mols.targets) or 'none'}"
            )
        target = next(iter(mols.targets))
    train, test, split = _split(mols, args.fold, args.seed)
    kernel = args.kernel or default_kernel(args.representation)
    params = {}
    if args.representation == "random-cm":
        params = {"n_samples": args.n_samples, "random_state": args.seed}
    print(f"dataset         {mols.name}: {len(train)} training / {len(test)} test molecules ({split})")
    print(f"model           {args.representation} + {kernel} kernel, target {target} [kcal/mol]")
    with threadpool_limits(args.threads):
        model, info = train_krr(
            mols,
            train,
            test,
            args.representation,
            kernel,
            args.sigma,
            args.lam,
            target,
            params,
            progress=not args.quiet,
            metadata={"split": split, "fold": args.fold},
        )
    how = "inner CV on the training part" if "inner_cv" in info else "given"
    print(f"hyperparameters sigma = {info['sigma']:g}, lambda = {info['lam']:g} ({how})")
    print(f"test MAE        {info['test_mae']:.3f} kcal/mol  (RMSE {info['test_rmse']:.3f} kcal/mol)")
    out = (
        Path(args.out)
        if args.out
        else Path(
            f"krr-{Path(mols.name).stem}-{args.representation}-{kernel}"
            + (f"-fold{args.fold if args.fold is not None else 0}" if mols.folds else "")
            + ".h5"
        )
    )
    save_krr(model, out)
    print(f"saved           {out}  ({info['wall_time_s']:.1f} s)")


def add_train_krr(train_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``krr`` under ``qmlx train``; returns its parser (``func`` = `train_krr_command`)."""
    p = train_subparsers.add_parser(
        "krr",
        help="kernel ridge regression on Coulomb-matrix / Bag-of-Bonds representations",
        description="Train kernel ridge regression, print the test MAE (kcal/mol) and save the model (HDF5).",
    )
    p.add_argument("--dataset", default="qm7", help="qm7 (default), qm9, or a molecule file with a target")
    p.add_argument("--representation", default="sorted-cm", choices=list(REPRESENTATIONS))
    p.add_argument(
        "--kernel",
        choices=["laplacian", "gaussian"],
        default=None,
        help="default: gaussian for eigenspectrum, laplacian otherwise",
    )
    p.add_argument("--fold", type=int, default=None, help="test fold of the data set's CV folds (default 0)")
    p.add_argument("--target", default=None, help="target name (default atomization_energy)")
    p.add_argument("--sigma", type=float, default=None, help="kernel width; default: inner CV")
    p.add_argument("--lam", type=float, default=None, help="ridge regularization; default: inner CV")
    p.add_argument(
        "--n-samples", type=int, default=10, help="random Coulomb matrices per molecule (random-cm)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random splits and random Coulomb matrices")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all)")
    p.add_argument(
        "--out", default=None, help="model file to write (default krr-DATASET-REP-KERNEL-foldK.h5)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=train_krr_command)
    return p
