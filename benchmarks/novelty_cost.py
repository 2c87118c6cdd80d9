"""What novelty costs in prediction: ``qm7-schnet`` on the 1,433 QM7 fold-0 test molecules, with
its novelty model and without it, in the same run.

Both go through the model protocol (``qmlx.load_model(...).predict``): the same network and
tabulated inference, the domain rules, and the novelty model (`qmlx.novelty`: atom environments,
soft minimum over the centres) switched off for the reference. The two alternate over
``--rounds`` rounds after a warm-up; reported are the median and the best time of each and their
ratios. Also timed: novelty's two parts alone (the atom-environment descriptors, the scores
against the centres). One thread.

Prediction allocates and frees tens of MB per call, and how often the kernel then has to map
fresh pages varies from machine to machine (here it made single calls up to 40 % slower). The
measurement is therefore made twice, each in its own process: with glibc's defaults, and with
glibc keeping freed memory (``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set to
4 GiB), where the minor page faults per call drop to about zero. The machine's load is recorded
at the start and the end.

    python benchmarks/novelty_cost.py

Writes ``benchmarks/novelty_cost.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from qmlx._io import json_dumps, write_text_atomic

HERE = Path(__file__).resolve().parent
#: the environment of the measurement with freed memory kept by glibc
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def measure(rounds: int) -> dict:
    """Times in seconds (medians and minima over ``rounds``) of prediction with and without
    novelty, and of novelty's parts, in this process."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from qmlx.data import load_qm7
    from qmlx.errors import DomainWarning
    from qmlx.models import load_model
    from qmlx.represent.environments import environment_blocks
    from qmlx.train.config import recorded_split

    warnings.simplefilter("ignore", DomainWarning)
    torch.set_num_threads(1)
    qm7 = load_qm7(download_if_missing=False)
    with_novelty, without = load_model("qm7-schnet"), load_model("qm7-schnet")
    without.novelty = None
    test = qm7.subset(recorded_split(qm7, with_novelty.metadata).test)
    novelty = with_novelty.novelty
    calls = {
        "without": lambda: without.predict(test),
        "with": lambda: with_novelty.predict(test),
        "descriptor": lambda: [None for _ in environment_blocks(test, novelty.descriptor)],
        "novelty": lambda: novelty.atom_scores(test),
    }
    times: dict[str, list[float]] = {key: [] for key in calls}
    faults: dict[str, list[int]] = {key: [] for key in calls}
    with threadpool_limits(1):
        for call in calls.values():
            call()  # warm-up
        for _ in range(rounds):
            for key, call in calls.items():
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
                faults[key].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    out = {f"{key}_median_s": float(np.median(t)) for key, t in times.items()}
    out |= {f"{key}_best_s": float(np.min(t)) for key, t in times.items()}
    out |= {f"{key}_page_faults": int(np.median(f)) for key, f in faults.items()}
    out["scores_median_s"] = out["novelty_median_s"] - out["descriptor_median_s"]
    out |= {
        "ratio_median": out["without_median_s"] / out["with_median_s"],
        "ratio_best": out["without_best_s"] / out["with_best_s"],
        "molecules": len(test),
        "atoms": len(test.Z),
        "descriptor_features": novelty.descriptor.n_features,
        "centres": {str(z): len(d.coordinates) for z, d in novelty.elements.items()},
        "components": {str(z): len(d.basis) for z, d in novelty.elements.items()},
    }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json_dumps(measure(args.rounds)).replace("\n", " "))
        return {}

    import torch

    load_start = os.getloadavg()[0]
    runs = {}
    for name, extra in (("glibc defaults", {}), ("freed memory kept", KEEP_MEMORY)):
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--rounds", str(args.rounds)],
            env=os.environ | extra, capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs[name] = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "model": "qm7-schnet",
        "threads": 1,
        "rounds": args.rounds,
        "runs": runs,
        "load_average": [load_start, os.getloadavg()[0]],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out_dir / "novelty_cost.json", json_dumps(result) + "\n")
    first = next(iter(runs.values()))
    n = first["molecules"]
    rows = []
    for name, r in runs.items():
        rows.append(
            f"| {name} | {n / r['without_median_s']:,.0f} ({r['without_page_faults']:,}) | "
            f"{n / r['with_median_s']:,.0f} ({r['with_page_faults']:,}) | {100 * r['ratio_median']:.0f} % | "
            f"{100 * r['ratio_best']:.0f} % |"
        )
    kept = runs["freed memory kept"]
    lines = [
        "# What novelty costs in prediction",
        "",
        f"`qm7-schnet` on the {n:,} QM7 fold-0 test molecules ({first['atoms']:,} atoms), one thread, "
        f"{args.rounds} alternating rounds after a warm-up, on {result['machine']} (load average "
        f"{load_start:.2f} at the start, {result['load_average'][1]:.2f} at the end).",
        "",
        "| memory | without novelty: molecules/s (page faults per call) | with novelty | share, medians | "
        "share, best times |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Share: prediction throughput with novelty over that without it. Molecules/s from the median "
        "time; page faults: the median number of minor page faults per call.",
        "",
        f"Novelty's parts alone (freed memory kept, medians): the atom-environment descriptors "
        f"({kept['descriptor_features']} features per atom) {1000 * kept['descriptor_median_s']:.1f} ms, the "
        f"scores against the centres ({', '.join(f'Z={z}: {c}' for z, c in kept['centres'].items())}, in "
        f"{max(kept['components'].values())} principal directions) {1000 * kept['scores_median_s']:.1f} ms; "
        f"prediction without novelty {1000 * kept['without_median_s']:.0f} ms.",
        "",
        "Run: `python benchmarks/novelty_cost.py`.",
    ]
    write_text_atomic(args.out_dir / "novelty_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
