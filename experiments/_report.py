"""The report layer shared by the experiment scripts: standard flags, one run record, and writers
for JSON (without NaN), Markdown tables, intervals and figures.

Every script is two functions run by `main`:

- ``compute(args) -> dict``: does the work and returns the result, plain JSON types (numpy values
  are converted when written). Keys that start with ``_`` (at any depth) hold data for the
  figures only (predictions, per-ring energies) and are not written to the JSON;
- ``render(result, out_dir) -> None``: writes the Markdown and the figures from that dict alone,
  so ``--report-only`` can redraw them from the saved JSON. A figure whose data the JSON does not
  hold (a ``_`` key) is left as it is.

Standard flags (`add_standard_arguments`): ``--out-dir`` (default: the repository's
``results/``), ``--quick``, ``--threads``, ``--seed`` and ``--report-only``. The run record
(`run_record`), stored under ``"run"`` in every JSON written by a computing run, holds the
command line, the qmlx version, the git commit, the environment and the wall time in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from qmlx._io import json_dumps, savefig_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

Compute = Callable[[argparse.Namespace], dict]
Render = Callable[[dict, Path], None]


# --------------------------------------------------------------------------------------------
# flags


def add_standard_arguments(
    parser: argparse.ArgumentParser,
    *,
    quick: str | None = None,
    threads: int = 1,
    seed: int = 0,
    seed_help: str | None = None,
) -> argparse.ArgumentParser:
    """Add ``--out-dir``, ``--quick``, ``--threads``, ``--seed`` and ``--report-only`` to ``parser``.

    ``quick`` describes the script's quick mode; without it ``--quick`` is refused by `main`
    (the script has none). ``threads`` and ``seed`` are the defaults; ``seed_help`` says what
    the seed controls (default: the global numpy and torch generators, seeded by `main`).
    """
    parser.add_argument(
        "--out-dir", type=Path, default=RESULTS, help=f"output folder (default {RESULTS.relative_to(ROOT)}/)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=quick or "not available: this script has no quick mode"
    )
    parser.add_argument(
        "--threads", type=int, default=threads, help=f"BLAS and torch threads (default {threads})"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=seed,
        help=(seed_help or "seed of the global numpy and torch generators") + f" (default {seed})",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: rewrite the Markdown and figures from the JSON in --out-dir",
    )
    parser.set_defaults(_has_quick=quick is not None)
    return parser


def make_parser(
    doc: str | None,
    *,
    quick: str | None = None,
    threads: int = 1,
    seed: int = 0,
    seed_help: str | None = None,
) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc`` (a module docstring), with the
    standard flags (`add_standard_arguments`)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0].strip())
    return add_standard_arguments(parser, quick=quick, threads=threads, seed=seed, seed_help=seed_help)


# --------------------------------------------------------------------------------------------
# run record


def git_commit(root: Path = ROOT) -> str | None:
    """The commit checked out in ``root`` (40 hex digits), or ``None`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def qmlx_version() -> str:
    """The installed qmlx version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qmlx")
    except PackageNotFoundError:
        import qmlx

        return qmlx.__version__


def environment(threads: int | None = None) -> dict:
    """Versions and machine: python, numpy, torch (``None`` if not installed), platform, CPU count,
    and the BLAS/torch threads the run used."""
    import numpy as np

    try:
        import torch

        torch_version: str | None = str(torch.__version__)
    except ImportError:
        torch_version = None
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def command_line(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """``python experiments/NAME.py ARGS`` with ``argv`` (default ``sys.argv[1:]``)."""
    script = Path(script).resolve()
    try:
        shown = script.relative_to(ROOT)
    except ValueError:
        shown = script
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", str(shown), *args])


def command(args: argparse.Namespace) -> str:
    """The command line of the run that parsed ``args`` (`main` records it; otherwise
    ``sys.argv``)."""
    return getattr(args, "_command", None) or command_line(sys.argv[0])


def run_record(
    script: str | Path, argv: Sequence[str] | None, threads: int | None, wall_time_s: float
) -> dict:
    """The record of one computing run: command line, qmlx version, git commit (or ``None``),
    environment (`environment`) and wall time in seconds."""
    return {
        "command": command_line(script, argv),
        "qmlx_version": qmlx_version(),
        "git_commit": git_commit(),
        "environment": environment(threads),
        "wall_time_s": float(wall_time_s),
    }


def run_lines(result: dict) -> list[str]:
    """Markdown lines describing ``result["run"]`` (empty if the result has no run record)."""
    run = result.get("run")
    if not run:
        return []
    env = run.get("environment", {})
    commit = run.get("git_commit")
    parts = [f"qmlx {run.get('qmlx_version')}" + (f" at commit {commit[:10]}" if commit else "")]
    parts.append(f"Python {env.get('python')}, numpy {env.get('numpy')}, torch {env.get('torch')}")
    parts.append(f"{env.get('cpu_count')} CPUs, {env.get('threads')} thread(s)")
    parts.append(f"{run.get('wall_time_s', 0.0):.0f} s")
    return ["", f"Run: `{run.get('command')}` ({'; '.join(parts)})."]


def note_lines(result: dict) -> list[str]:
    """Markdown lines of ``result["notes"]``: remarks written about one finished run (what was
    compared, where the files came from), kept in its JSON so that the report can be redrawn
    with them; a new run starts without notes. Empty if there are none."""
    notes = result.get("notes") or []
    return ["", *notes] if notes else []


# --------------------------------------------------------------------------------------------
# writers


def public(obj: Any) -> Any:
    """``obj`` without the dictionary keys that start with ``_``, at any depth."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(obj, (list, tuple)):
        return [public(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, result: dict, indent: int = 2) -> Path:
    """Write ``result`` (without its ``_`` keys) atomically as JSON; NaN and infinities become
    ``null`` (`qmlx._io.json_dumps`), so the file is plain JSON."""
    return write_text_atomic(path, json_dumps(public(result), indent=indent) + "\n")


def _reject_constant(name: str) -> None:
    raise ValueError(f"not plain JSON: {name}")


def read_json(path: str | os.PathLike) -> dict:
    """Parse the JSON file ``path``; NaN and infinities are refused (`ValueError`)."""
    return json.loads(Path(path).read_text(), parse_constant=_reject_constant)


def write_markdown(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write Markdown ``lines`` atomically: each followed by a newline."""
    return write_text_atomic(path, "\n".join(lines) + "\n")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Markdown table lines: ``| h1 | h2 |``, ``|---|---|`` and one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return lines


def escape(text: str) -> str:
    """``text`` with ``|`` escaped, for a Markdown table cell."""
    return text.replace("|", "\\|")


def is_number(v: Any) -> bool:
    """Whether ``v`` is a finite number (``None`` and NaN, which the JSON stores as ``null``, are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def format_number(v: Any, spec: str = ".3f", missing: str = "–") -> str:
    """``format(v, spec)``, or ``missing`` if ``v`` is undefined (``None``, NaN)."""
    return format(v, spec) if is_number(v) else missing


def format_interval(v: Any, digits: int = 3, missing: str = "–") -> str:
    """``0.842 [0.707, 0.937]`` from an interval: a dict or object with ``value``, ``low`` and
    ``high``. ``missing`` if it or its value is undefined (``None``, NaN); a trailing ``*`` if
    some resamples were undefined (``n_undefined`` > 0), an undefined bound is written ``–``."""
    if v is None:
        return missing
    get = v.get if isinstance(v, dict) else lambda k, d=None: getattr(v, k, d)
    value = get("value")
    if not is_number(value):
        return missing

    def number(x: Any) -> str:
        return f"{x:.{digits}f}" if is_number(x) else "–"

    text = f"{number(value)} [{number(get('low'))}, {number(get('high'))}]"
    return text + ("*" if get("n_undefined") else "")


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120, **kwargs) -> Path:
    """Save ``fig`` atomically (`qmlx._io.savefig_atomic`) and close it."""
    out = savefig_atomic(fig, path, dpi=dpi, **kwargs)
    pyplot().close(fig)
    return out


# --------------------------------------------------------------------------------------------
# the runner


def checkpoint(args: argparse.Namespace, result: dict) -> None:
    """Write a partial ``result`` (JSON, Markdown, figures) during a long computation, so an
    interrupted run leaves its finished parts; does nothing when ``compute`` runs outside `main`."""
    save = getattr(args, "_checkpoint", None)
    if save is not None:
        save(result)


def main(
    compute: Compute,
    render: Render,
    parser: argparse.ArgumentParser,
    stem: str | Callable[[argparse.Namespace], str],
    argv: Sequence[str] | None = None,
    script: str | Path | None = None,
) -> dict:
    """Parse ``argv``, run ``compute`` (or, with ``--report-only``, read the saved JSON), write
    ``OUT_DIR/STEM.json`` with the run record and ``render`` it into ``OUT_DIR``.

    ``stem`` names the outputs, or computes the name from the parsed arguments (``_quick`` for
    quick runs, for example). ``script`` is the file shown in the run record (default: the
    module of ``compute``). Returns the result (read from the JSON with ``--report-only``).
    """
    args = parser.parse_args(argv)
    if args.quick and not getattr(args, "_has_quick", True):
        parser.error("--quick: this script has no quick mode")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    name = stem(args) if callable(stem) else stem
    out_dir = Path(args.out_dir)
    path = out_dir / f"{name}.json"
    if args.report_only:
        if not path.exists():
            parser.error(f"--report-only: {path} does not exist")
        result = read_json(path)
        render(result, out_dir)
        print(f"rendered {out_dir / name}.* from {path}")
        return result

    if script is None:
        script = sys.modules[compute.__module__].__file__ or compute.__module__
    start = time.perf_counter()

    def save(result: dict) -> None:
        result["run"] = run_record(script, argv, args.threads, time.perf_counter() - start)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        render(result, out_dir)

    args._checkpoint = save
    args._command = command_line(script, argv)
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        result = compute(args)
    save(result)
    print(f"wrote {out_dir / name}.json and its report")
    return result
