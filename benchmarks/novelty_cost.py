"""What novelty costs in prediction: ``qm7-schnet`` on the 1,433 QM7 fold-0 test molecules, with
its novelty model and without it, in the same run.

Both go through the model protocol (``qmlx.load_model(...).predict``): the same network and
tabulated inference, the novelty model (`qmlx.novelty`: atom environments, soft minimum over
the training centres) switched off for the reference. Also timed: the two parts of novelty alone
(the atom-environment descriptor, the scores against the centres). One thread; best of
``--repeats``; the machine's load is recorded at the start and the end.

    python benchmarks/novelty_cost.py

Writes ``benchmarks/novelty_cost.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

from qmlx._io import json_dumps, write_text_atomic

HERE = Path(__file__).resolve().parent


def best(fn, repeats: int) -> float:
    """The shortest of ``repeats`` wall times of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from qmlx.data import load_qm7
    from qmlx.errors import DomainWarning
    from qmlx.models import load_model
    from qmlx.train.config import recorded_split

    warnings.simplefilter("ignore", DomainWarning)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    qm7 = load_qm7(download_if_missing=False)
    with_novelty, without = load_model("qm7-schnet"), load_model("qm7-schnet")
    without.novelty = None
    test = qm7.subset(recorded_split(qm7, with_novelty.metadata).test)
    novelty = with_novelty.novelty
    with threadpool_limits(1):
        t_without = best(lambda: without.predict(test), args.repeats)
        t_with = best(lambda: with_novelty.predict(test), args.repeats)
        t_descriptor = best(lambda: novelty.descriptor.transform(test), args.repeats)
        X = novelty.descriptor.transform(test)
        t_scores = best(lambda: novelty.atom_scores(test, X), args.repeats)
    n = len(test)
    result = {
        "model": "qm7-schnet",
        "molecules": n,
        "atoms": len(test.Z),
        "threads": 1,
        "repeats": args.repeats,
        "without_novelty_mol_s": n / t_without,
        "with_novelty_mol_s": n / t_with,
        "ratio": t_without / t_with,
        "descriptor_s": t_descriptor,
        "scores_s": t_scores,
        "prediction_s": t_without,
        "descriptor_features": novelty.descriptor.n_features,
        "centres": {str(z): len(u) for z, u in novelty.centres.items()},
        "load_average": [load_start, os.getloadavg()[0]],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out_dir / "novelty_cost.json", json_dumps(result) + "\n")
    lines = [
        "# What novelty costs in prediction",
        "",
        f"`qm7-schnet` on the {n:,} QM7 fold-0 test molecules ({len(test.Z):,} atoms), one thread, best of "
        f"{args.repeats}, in one run on {result['machine']} (load average {load_start:.2f} at the start, "
        f"{result['load_average'][1]:.2f} at the end).",
        "",
        "| | molecules/s | share of prediction without novelty |",
        "|---|---|---|",
        f"| prediction without novelty | {result['without_novelty_mol_s']:,.0f} | 100 % |",
        f"| prediction with novelty | {result['with_novelty_mol_s']:,.0f} | {100 * result['ratio']:.0f} % |",
        "",
        f"Novelty's two parts alone: the atom-environment descriptor ({result['descriptor_features']} "
        f"features per atom) {result['descriptor_s']:.3f} s, the scores against the centres "
        f"({', '.join(f'Z={z}: {c}' for z, c in result['centres'].items())}) {result['scores_s']:.3f} s; the "
        f"network's prediction {result['prediction_s']:.3f} s.",
        "",
        "Run: `python benchmarks/novelty_cost.py`.",
    ]
    write_text_atomic(args.out_dir / "novelty_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
