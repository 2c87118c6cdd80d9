"""The ``qmlx`` command.

Sub-commands are registered by small ``add_*`` functions, each of which adds its parser and sets
``func``; later sub-commands (train, predict, explain) slot in the same way. Errors that qmlx
raises on purpose are printed as one line on stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from qmlx.errors import QmlxError


def load_dataset(spec: str):
    """``qm7``, ``qm9`` or a path to any molecule file ASE (or the qmlx HDF5 store) reads."""
    from qmlx.data import Molecules, load_qm7, load_qm9

    if spec.lower() == "qm7":
        return load_qm7()
    if spec.lower() == "qm9":
        return load_qm9()
    return Molecules.read(spec)


def data_info(args: argparse.Namespace) -> None:
    mols = load_dataset(args.dataset)
    print(f"dataset      {mols.name}")
    print(f"molecules    {len(mols)}")
    print(f"atoms        {len(mols.Z)}")
    print(
        f"atoms/mol    {int(mols.n_atoms.min())}-{int(mols.n_atoms.max())} (mean {mols.n_atoms.mean():.1f})"
    )
    print("composition  " + " / ".join(f"{el} {n}" for el, n in mols.composition().items()))
    if mols.folds:
        sizes = sorted({len(test) for _, test in mols.folds})
        print(f"folds        {len(mols.folds)} folds, test size {' / '.join(map(str, sizes))}")
    for key, values in mols.targets.items():
        print(
            f"target       {key} [{mols.units[key]}]: mean {values.mean():.4f}, std {values.std():.4f}, "
            f"min {values.min():.4f}, max {values.max():.4f}"
        )


def add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect data sets and molecule files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="counts, composition, sizes and target statistics")
    info.add_argument("dataset", help="qm7, qm9, or a molecule file (xyz, extxyz, sdf, ASE db, qmlx .h5)")
    info.set_defaults(func=data_info)


def build_parser() -> argparse.ArgumentParser:
    from qmlx import __version__

    parser = argparse.ArgumentParser(prog="qmlx", description="machine learning for quantum chemistry")
    parser.add_argument("--version", action="version", version=f"qmlx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    np.set_printoptions(precision=4, suppress=True)
    try:
        args.func(args)
    except QmlxError as err:
        print(f"qmlx: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qmlx: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
