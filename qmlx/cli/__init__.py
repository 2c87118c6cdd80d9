"""The ``qmlx`` command: ``data info|import``, ``train krr|schnet|dtnn``, ``predict``, ``explain``.

Each sub-command lives in its own module with an ``add(sub)`` function that registers its parser.
Errors qmlx raises on purpose (`qmlx.errors.QmlxError`) and bad options print one line on stderr
and exit non-zero (1 for errors, 2 for bad options), never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from qmlx.cli import data, explain, predict, train
from qmlx.cli.common import Parser
from qmlx.errors import QmlxError


def build_parser() -> Parser:
    from qmlx import __version__

    parser = Parser(prog="qmlx", description="machine learning for quantum chemistry")
    parser.add_argument("--version", action="version", version=f"qmlx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (data, train, predict, explain):
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    import numpy as np

    args = build_parser().parse_args(argv)
    np.set_printoptions(precision=4, suppress=True)
    try:
        with warnings.catch_warnings():
            # the command line reports domain flags itself (once, on stderr, and in the output)
            warnings.filterwarnings("ignore", message=".*outside the training domain.*")
            args.func(args)
    except QmlxError as err:
        print(f"qmlx: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qmlx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qmlx predict ... | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
