"""Training and inference throughput of SchNet on CPU, in molecules per second.

Measures a 64-feature, 3-interaction SchNet (cutoff 5 Å) on random QM7 batches, and on the
setting quoted for schnetpack 2.1.1 (100 molecules of 20 atoms, all pairs): a training step is
forward + backward + Adam update; inference is a forward pass under ``torch.no_grad``. Batch
size and thread count are printed with every number. Optionally (``--qm9-memory``) measures the
peak resident memory of a QM9 training run with 100k training molecules (data, pair lists,
model and some hundred training steps).

    python benchmarks/nn_throughput.py [--threads 1 2] [--batch-size 100] [--seconds 10] [--qm9-memory]

Writes ``benchmarks/nn_throughput.json`` and ``benchmarks/nn_throughput.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from qmlx.data import Molecules, load_qm7
from qmlx.data.paths import write_text_atomic
from qmlx.nn import PairCache, SchNet

HERE = Path(__file__).resolve().parent
SCHNETPACK_TRAIN_MOL_S = 1200.0  # schnetpack 2.1.1, same size, 100 x 20 atoms, all pairs, 2 threads


def _rate(model: SchNet, batches, train: bool, seconds: float) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n_mol, k = 0, 0
    # warm-up
    for b in batches[:2]:
        out = model(b)
        if train:
            loss = ((out.energy - b.energy) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = batches[k % len(batches)]
        k += 1
        if train:
            out = model(b)
            loss = ((out.energy - b.energy) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(b)
        n_mol += b.n_mol
    return n_mol / (time.perf_counter() - t0)


def _model(rbf_spacing: float) -> SchNet:
    torch.manual_seed(0)
    return SchNet(n_features=64, n_interactions=3, cutoff=5.0, rbf_spacing=rbf_spacing)


def _twenty_atom_set(n_mol: int = 1000) -> Molecules:
    """Random 20-atom molecules packed within 5 Å so every pair is inside the cutoff."""
    rng = np.random.default_rng(0)
    R = rng.uniform(-1.4, 1.4, size=(n_mol * 20, 3))
    Z = rng.choice([1, 6, 7, 8], n_mol * 20)
    return Molecules(Z=Z, R=R, n_atoms=np.full(n_mol, 20), targets={"atomization_energy": np.zeros(n_mol)},
                     units={"atomization_energy": "kcal/mol"})  # fmt: skip


def throughput(threads: list[int], batch_size: int, seconds: float) -> list[dict]:
    qm7 = load_qm7()
    rng = np.random.default_rng(0)
    rows = []
    sets = {
        "qm7 (cutoff 5 Å)": (qm7, 5.0),
        "100 x 20 atoms, all pairs": (_twenty_atom_set(), 5.0),
    }
    for label, (mols, cutoff) in sets.items():
        cache = PairCache(mols, cutoff)
        batches = [cache.batch(rng.choice(len(mols), batch_size, replace=False)) for _ in range(20)]
        pairs = float(np.mean([2 * len(b.idx_i) for b in batches]))  # directed pairs
        for spacing in (0.1, 0.25):
            model = _model(spacing)
            for th in threads:
                torch.set_num_threads(th)
                row = {
                    "data": label,
                    "n_rbf": model.rbf.n_rbf,
                    "batch_size": batch_size,
                    "threads": th,
                    "directed_pairs_per_batch": round(pairs),
                    "train_mol_s": round(_rate(model, batches, True, seconds), 1),
                    "infer_mol_s": round(_rate(model, batches, False, seconds), 1),
                }
                rows.append(row)
                print(
                    f"{label:28s} n_rbf {row['n_rbf']:3d}  batch {batch_size}  threads {th}:  "
                    f"train {row['train_mol_s']:8.1f} mol/s   inference {row['infer_mol_s']:8.1f} mol/s",
                    flush=True,
                )
    return rows


def qm9_memory(n_train: int = 100_000, steps: int = 300, batch_size: int = 100) -> dict:
    """Peak RSS (MB) of loading QM9, building 100k-molecule pair lists and training steps."""
    from qmlx.data import load_dataset
    from qmlx.data.splits import split

    torch.set_num_threads(1)
    mols = load_dataset("qm9")
    sp = split(mols, n_train=n_train, n_test=10_000, seed=0)
    train_idx, val_idx, test_idx = sp.train, sp.val, sp.test
    model = _model(0.1)
    train = mols.subset(train_idx)
    model.fit_reference(train.Z, train.n_atoms, train.target("atomization_energy"))
    caches = [PairCache(mols.subset(i), 5.0) for i in (train_idx, val_idx, test_idx)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        b = caches[0].batch(rng.choice(len(train_idx), batch_size, replace=False))
        loss = ((model(b).energy - b.energy) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rate = steps * batch_size / (time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "n_train": int(len(train_idx)),
        "pairs_in_training_cache": int(len(caches[0].local_i)),
        "steps": steps,
        "batch_size": batch_size,
        "threads": 1,
        "train_mol_s": round(rate, 1),
        "peak_rss_mb": round(peak_mb, 1),
    }
    print(f"QM9 {n_train} training molecules: peak RSS {peak_mb:.0f} MB ({steps} steps, {rate:.0f} mol/s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per number")
    ap.add_argument("--qm9-memory", action="store_true", help="also measure a QM9 100k training run's memory")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. machine load)")
    args = ap.parse_args()
    result = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "note": args.note,
        "schnetpack_2.1.1_train_mol_s_reference": SCHNETPACK_TRAIN_MOL_S,
        "throughput": throughput(args.threads, args.batch_size, args.seconds),
    }
    if args.qm9_memory:
        result["qm9_memory"] = qm9_memory()
    write_text_atomic(HERE / "nn_throughput.json", json.dumps(result, indent=2) + "\n")
    lines = [
        "# SchNet throughput (64 features, 3 interactions, cutoff 5 Å)",
        "",
        f"torch {result['torch']}, {result['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in result['load_average_at_start'])}. {args.note}",
        "",
        "| data | n_rbf | batch | threads | directed pairs/batch | train mol/s | inference mol/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['data']} | {r['n_rbf']} | {r['batch_size']} | {r['threads']} | {r['directed_pairs_per_batch']} "
            f"| {r['train_mol_s']:.0f} | {r['infer_mol_s']:.0f} |"
        )
    lines += ["", f"schnetpack 2.1.1 reference (same size, 100 x 20 atoms, all pairs, 2 threads): "
              f"about {SCHNETPACK_TRAIN_MOL_S:.0f} training mol/s; target 2x = {2 * SCHNETPACK_TRAIN_MOL_S:.0f}."]  # fmt: skip
    if "qm9_memory" in result:
        m = result["qm9_memory"]
        lines += ["", f"QM9 training run with {m['n_train']} training molecules: peak RSS {m['peak_rss_mb']:.0f} MB "
                  f"({m['steps']} steps of {m['batch_size']}, {m['threads']} thread)."]  # fmt: skip
    write_text_atomic(HERE / "nn_throughput.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
