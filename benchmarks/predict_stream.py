"""Screening throughput: ``qmlx predict`` on one large multi-frame file, streamed in chunks.

Builds an extxyz file of N frames (QM7 molecules, cycled, positions in Å) in a temporary folder
(never kept), then times two whole commands in the same run, each as its own process:

- ``qmlx predict MODEL big.extxyz --format csv`` (chunks of 10,000 molecules, rows written as they
  go);
- the reference: the same prediction with the file read in one piece (``--chunk-size N``), which
  is what reading a file whole with ASE and predicting it costs.

For each: wall time, molecules per second and peak resident memory (``ru_maxrss`` of the child),
and the ratio of the two. Torch uses the machine's threads (2 here).

    python benchmarks/predict_stream.py --frames 200000

Writes ``benchmarks/predict_stream.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from qmlx._io import json_dumps, write_text_atomic

HERE = Path(__file__).resolve().parent


def make_file(path: Path, n_frames: int) -> None:
    import ase.io

    from qmlx.data import load_dataset

    qm7 = load_dataset("qm7")
    frames = [qm7[i % len(qm7)] for i in range(min(n_frames, len(qm7)))]
    with open(path, "w") as fh:  # cycle the molecules without holding N frames in memory
        written = 0
        while written < n_frames:
            chunk = frames[: n_frames - written]
            for atoms in chunk:
                atoms.info.clear()
            ase.io.write(fh, chunk, format="extxyz")
            written += len(chunk)


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``; wall time (s) and its peak RSS (MB), read from the child's rusage."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: run the command with stdout discarded
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--model", default="qm7-schnet")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--no-reference", action="store_true", help="skip the read-whole-file run")
    args = parser.parse_args()
    qmlx = [sys.executable, "-m", "qmlx", "predict", args.model]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.extxyz"
        t0 = time.perf_counter()
        make_file(big, args.frames)
        size_mb = big.stat().st_size / 1e6
        print(
            f"wrote {args.frames} frames ({size_mb:.0f} MB) in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        common = [str(big), "--format", "csv", "--no-progress"]
        runs = {"streamed": timed(qmlx + common + ["--chunk-size", str(args.chunk_size)])}
        if not args.no_reference:
            runs["whole file"] = timed(qmlx + common + ["--chunk-size", str(args.frames)])
    for r in runs.values():
        r["molecules_per_s"] = args.frames / r["wall_s"]
    report = {
        "frames": args.frames,
        "file_mb": size_mb,
        "model": args.model,
        "chunk_size": args.chunk_size,
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "python": platform.python_version(),
            "max_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    }
    write_text_atomic(HERE / "predict_stream.json", json_dumps(report) + "\n")
    lines = [
        "# Streaming prediction of a large file",
        "",
        f"`qmlx predict {args.model} big.extxyz --format csv` on {args.frames:,} frames ({size_mb:.0f} MB of "
        f"extxyz; QM7 molecules, 4-23 atoms), one process each, 2 torch threads, written by "
        "`benchmarks/predict_stream.py`.",
        "",
        "| run | wall time (s) | molecules/s | peak RSS (MB) |",
        "|---|---|---|---|",
        *[
            f"| {name} | {r['wall_s']:.1f} | {r['molecules_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |"
            for name, r in runs.items()
        ],
        "",
    ]
    if "whole file" in runs:
        s, w = runs["streamed"], runs["whole file"]
        lines += [
            f"Streaming in chunks of {args.chunk_size:,} uses {w['peak_rss_mb'] / s['peak_rss_mb']:.1f}x less "
            f"memory than reading the file whole, at {s['molecules_per_s'] / w['molecules_per_s']:.2f}x its speed.",
            "",
        ]
    lines += [
        f"Load average (1, 5, 15 min) before the runs: {', '.join(f'{x:.2f}' for x in load_before)}.",
        "",
    ]
    write_text_atomic(HERE / "predict_stream.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
