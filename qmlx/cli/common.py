"""What every ``qmlx`` sub-command shares: the parser class, checked option types, the data and
split options, output-path checks and the command line recorded in metadata.

Every check here runs while the arguments are parsed, so a bad option fails with one line and a
non-zero exit before any data is read or any model is trained. Building the parser imports
nothing heavy (no NumPy, PyTorch or SciPy), so ``qmlx --help`` and ``qmlx --version`` start fast:
the choices it offers are the plain name lists below (tests check them against the modules that
implement the names).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from qmlx.errors import ConfigError

#: split methods (`qmlx.data.splits.METHODS`)
SPLIT_METHODS = ("auto", "official", "random", "none")
#: representations of kernel models (the keys of `qmlx.represent.REPRESENTATIONS`)
REPRESENTATION_NAMES = ("cm", "sorted-cm", "eigenspectrum", "random-cm", "bob")
#: explanation methods (the keys of `qmlx.explain.METHODS`)
EXPLAIN_METHODS = (
    "decomposition", "lrp", "lrp-pairs", "lrp-walks", "gradient", "gradient-x-input", "integrated-gradients",
    "neuralized", "novelty",
)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``qmlx train schnet: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, text: str, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "a non-negative integer")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0 and v < float("inf"), "a positive number")


def nonnegative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0 and v < float("inf"), "a non-negative number")


def unit_interval(text: str) -> float:
    """A number in [0, 1) (e.g. an EMA decay)."""
    return _number(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def fraction(text: str) -> float:
    """A number in (0, 1) (e.g. a learning-rate decay factor)."""
    return _number(float, text, lambda v: 0 < v < 1, "a number between 0 and 1")


def add_data_options(p: argparse.ArgumentParser, default: str | None = "qm7", split: bool = True) -> None:
    """``--data`` (alias ``--dataset``) and ``--target``; with ``split``, also ``--split``,
    ``--fold``, ``--folds`` and ``--seed``."""
    p.add_argument(
        "--data",
        "--dataset",
        dest="data",
        default=default,
        metavar="DATA",
        help="qm7, qm9, a qmlx .h5 store (qmlx data import) or any ASE-readable file"
        + (f" (default {default})" if default else ""),
    )
    p.add_argument(
        "--target", default=None, help="target to train on (default atomization_energy, or the only one)"
    )
    if split:
        p.add_argument(
            "--split",
            choices=SPLIT_METHODS,
            default="auto",
            help="official folds (QM7), seeded random K-fold, or none (train on everything); "
            "auto: official where the data set has folds, else random",
        )
        p.add_argument("--fold", type=nonnegative_int, default=None, help="test fold (default 0)")
        p.add_argument("--folds", type=positive_int, default=5, help="folds of a random split (default 5)")
        p.add_argument(
            "--seed", type=nonnegative_int, default=0, help="seed of splits and training (default 0)"
        )


def add_threads(p: argparse.ArgumentParser, default: int | None, what: str) -> None:
    p.add_argument("--threads", type=positive_int, default=default, help=what)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default auto)",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars"
    )


def check_writable(path: str | os.PathLike | None, option: str, is_dir: bool = False) -> None:
    """Refuse an output path whose folder is missing or not writable, before any work starts.

    For a run directory (``is_dir``) that already exists, the directory itself must be writable;
    otherwise its parent must exist and be writable.
    """
    if path is None:
        return
    p = Path(path)
    if is_dir and p.is_dir():
        folder = p
    else:
        if p.is_dir():
            raise ConfigError(f"{option} {p}: is a folder, expected a file name")
        folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{option} {p}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {p}: folder {folder} is not writable")


def command_line() -> str:
    """The command as the user typed it, for the metadata of a trained model."""
    prog = Path(sys.argv[0]).name
    prog = "qmlx" if prog in ("qmlx", "__main__.py") or not prog.endswith(".py") else prog
    return " ".join([prog, *sys.argv[1:]])
