"""The ``qmlx`` command: ``data info|import``, ``train krr|schnet|dtnn``, ``predict``, ``explain``,
``model import schnetpack``, ``insight groups|compare``.

Each sub-command lives in its own module with an ``add(sub)`` function that registers its parser.
Errors qmlx raises on purpose (`qmlx.errors.QmlxError`) and bad options print one line on stderr
and exit non-zero (1 for errors, 2 for bad options), never a traceback. Results go to stdout;
what the library logs at level INFO or above (``logging.getLogger("qmlx...")``) goes to stderr.

Importing this package and building the parser load nothing heavy: each command imports NumPy,
PyTorch and the rest when it runs, so ``qmlx --help`` and ``qmlx --version`` answer at once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from qmlx.cli import data, explain, insight, model, predict, train
from qmlx.cli.common import Parser
from qmlx.errors import DomainWarning, QmlxError


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when a record comes (which tests replace)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """While a command runs: the ``qmlx`` loggers' INFO messages (and above) go to stderr, one
    line each, unless the caller configured a handler for them already."""
    logger = logging.getLogger("qmlx")
    if logger.handlers:
        yield
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def build_parser() -> Parser:
    """The parser of the ``qmlx`` command and all its sub-commands."""
    from qmlx import __version__

    parser = Parser(prog="qmlx", description="machine learning for quantum chemistry")
    parser.add_argument("--version", action="version", version=f"qmlx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (data, train, predict, explain, model, insight):
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``qmlx`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        train.apply_config(argv)  # ``qmlx train schnet --config FILE``: the file's settings as defaults
    except QmlxError as err:
        print(f"qmlx: error: {err}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    import numpy as np

    np.set_printoptions(precision=4, suppress=True)
    try:
        with warnings.catch_warnings(), _log_to_stderr():
            # the command line reports domain flags itself (once, on stderr, and in the output)
            warnings.simplefilter("ignore", DomainWarning)
            status = args.func(args) or 0  # a command returns 1 when it refused some molecules
    except QmlxError as err:
        print(f"qmlx: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qmlx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qmlx predict ... | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
