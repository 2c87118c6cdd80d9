"""Start-up time of the ``qmlx`` command: ``qmlx --version`` and ``qmlx --help``.

Each command runs ``--runs`` times as its own process (stdout discarded), the commands taking
turns so that a change in machine load touches all of them alike. Reported per command: median,
min and max wall time. In the same run, as reference points: the bare interpreter
(``python -c pass``) and ``python -c "import torch"``. With ``--before DIR`` (a source tree of an
earlier qmlx, e.g. from ``git archive``), also that tree's ``--version`` and ``--help``, run as
``python -m qmlx`` in DIR with ``PYTHONPATH=DIR``. The load average (1, 5, 15 min) is read at the start
and at the end.

    python benchmarks/startup.py --runs 20 [--before /tmp/qmlx-before]

Writes ``benchmarks/startup.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from qmlx._io import json_dumps, write_text_atomic

HERE = Path(__file__).resolve().parent


def commands(before: Path | None) -> dict[str, tuple[list[str], Path | None]]:
    """Name -> (argv, source tree to run it from, or ``None`` for the installed qmlx)."""
    qmlx = shutil.which("qmlx", path=str(Path(sys.executable).parent)) or shutil.which("qmlx")
    if qmlx is None:
        sys.exit("benchmarks/startup.py: the qmlx command is not installed (pip install -e .)")
    out = {
        "qmlx --version": ([qmlx, "--version"], None),
        "qmlx --help": ([qmlx, "--help"], None),
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        'python -c "import torch"': ([sys.executable, "-c", "import torch"], None),
    }
    if before is not None:
        out["before: qmlx --version"] = ([sys.executable, "-m", "qmlx", "--version"], before)
        out["before: qmlx --help"] = ([sys.executable, "-m", "qmlx", "--help"], before)
    return out


def wall_time(argv: list[str], tree: Path | None) -> float:
    """Seconds from start to exit of one process; a failing command is an error. With ``tree``,
    the process runs in that folder with ``PYTHONPATH`` set to it, so it imports that qmlx."""
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree is not None else None
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, env=env, cwd=tree)
    return time.perf_counter() - start


def main() -> None:
    """Time every command ``--runs`` times, taking turns, and write the JSON and Markdown reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--before", type=Path, default=None, help="source tree of an earlier qmlx")
    parser.add_argument("--before-label", default=None, help="what --before is, e.g. a commit")
    parser.add_argument("--out", type=Path, default=HERE / "startup", help="output stem (.json, .md)")
    args = parser.parse_args()

    todo = commands(args.before)
    load_start = os.getloadavg()
    for argv, tree in todo.values():  # one untimed run each: files in the page cache, .pyc written
        wall_time(argv, tree)
    times: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(args.runs):
        for name, (argv, tree) in todo.items():
            times[name].append(wall_time(argv, tree))
    load_end = os.getloadavg()

    rows = {
        name: {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "max_s": max(t),
            "runs": len(t),
        }
        for name, t in times.items()
    }
    record = {
        "benchmark": "start-up time of the qmlx command",
        "runs": args.runs,
        "before": args.before_label or (str(args.before) if args.before else None),
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "qmlx": version("qmlx"),
        "torch": version("torch"),
        "commands": rows,
        "times_s": times,
    }
    write_text_atomic(args.out.with_suffix(".json"), json_dumps(record) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(record))
    print(markdown(record))


def markdown(record: dict) -> str:
    """The Markdown report of a ``record`` written by `main`."""
    lines = [
        "# Start-up time of the qmlx command",
        "",
        f"Each command run {record['runs']} times as its own process, the commands taking turns, "
        f"on {record['cpu_count']} cores (Python {record['python']}, torch {record['torch']}); "
        "written by `benchmarks/startup.py`.",
        "",
        "| command | median (s) | min (s) | max (s) |",
        "|---|---|---|---|",
    ]
    for name, row in record["commands"].items():
        lines.append(f"| `{name}` | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['max_s']:.3f} |")
    load = ", ".join(f"{x:.2f}" for x in record["load_average_start"])
    load_end = ", ".join(f"{x:.2f}" for x in record["load_average_end"])
    lines += ["", f"Load average (1, 5, 15 min): {load} at the start, {load_end} at the end."]
    if record["before"]:
        lines.append(
            f"Rows marked `before` ran the source tree of {record['before']} (`python -m qmlx` with "
            "PYTHONPATH set to it)."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
