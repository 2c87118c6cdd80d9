"""The package surface: version, names imported on first use, a light command-line start-up, the
`DomainWarning` category and log messages of the command line."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest

import qmlx
import qmlx.cli
from qmlx.cli import common
from qmlx.errors import DomainWarning

HEAVY = ("numpy", "torch", "scipy", "matplotlib", "sklearn", "ase", "h5py", "rdkit", "pandas", "tqdm")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    check = f"{code}\nimport sys\nprint('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[-1].split()[1:]


def test_version_is_the_installed_distributions():
    assert qmlx.__version__ == importlib.metadata.version("qmlx")


@pytest.mark.parametrize(
    "code",
    [
        "import qmlx",
        "import qmlx.cli; qmlx.cli.build_parser()",
        "from qmlx.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass",
    ],
)
def test_start_up_loads_nothing_heavy(code):
    assert _loaded_after(code) == []


def test_parser_choices_match_the_modules():
    from qmlx.data.splits import METHODS as SPLIT_METHODS
    from qmlx.explain import METHODS as EXPLAIN_METHODS
    from qmlx.represent import REPRESENTATIONS

    assert common.SPLIT_METHODS == tuple(SPLIT_METHODS)
    assert common.REPRESENTATION_NAMES == tuple(REPRESENTATIONS)
    assert common.EXPLAIN_METHODS == tuple(EXPLAIN_METHODS)


def test_lazy_names_are_the_real_objects():
    from qmlx.data import io, molecules, qm7, qm9

    assert qmlx.Molecules is molecules.Molecules
    assert qmlx.load_dataset is io.load_dataset and qmlx.read_molecules is io.read_molecules
    assert qmlx.load_qm7 is qm7.load_qm7 and qmlx.load_qm9 is qm9.load_qm9
    assert set(qmlx.__all__) <= set(dir(qmlx))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        qmlx.nothing  # noqa: B018
    if importlib.util.find_spec("qmlx.models") is not None:
        from qmlx.models import load_model

        assert qmlx.load_model is load_model


def test_domain_flags_warn_with_their_own_category(small_molecules):
    from qmlx.data.domain import DomainReport, warn_if_flagged

    report = DomainReport(in_domain=np.array([True, False, True]), notes=[[], ["a single atom"], []])
    with pytest.warns(DomainWarning, match="1 of 3 molecules lie outside the training domain"):
        warn_if_flagged(report, small_molecules)
    assert issubclass(DomainWarning, UserWarning)


def test_command_line_drops_domain_warnings_and_shows_log_messages(monkeypatch, capsys):
    """A command's domain warnings are left to the command; the library's INFO messages reach
    stderr while it runs, and the handler is gone afterwards."""

    def command(args):
        warnings.warn("outside", DomainWarning, stacklevel=1)
        warnings.warn("kept", UserWarning, stacklevel=1)
        logging.getLogger("qmlx.data.paths").info("downloaded something")
        logging.getLogger("qmlx.data.paths").debug("not shown")
        print("result")

    parser = qmlx.cli.build_parser()
    args = parser.parse_args(["data", "info", "x"])
    args.func = command
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    monkeypatch.setattr(qmlx.cli, "build_parser", lambda: parser)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert qmlx.cli.main([]) == 0
    out, err = capsys.readouterr()
    assert out == "result\n"
    assert "downloaded something" in err and "not shown" not in err
    assert [str(w.message) for w in caught] == ["kept"]
    assert not logging.getLogger("qmlx").handlers
