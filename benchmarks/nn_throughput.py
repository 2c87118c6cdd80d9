"""Training and inference throughput of SchNet on CPU, in molecules per second.

Measures a 64-feature, 3-interaction SchNet (cosine cutoff 5 Å, 51 or 21 Gaussians) on random
QM7 batches and on packed 20-atom molecules (every pair within the cutoff): a training step is
forward + backward + Adam update (qmlx: the fused Adam and the tabulated forward pass that
`qmlx train` uses, filters computed on a grid of distances and interpolated to the pairs; also
timed with every filter computed per pair); inference is a forward pass under ``torch.no_grad``,
for qmlx the one `qmlx.nn.predict_network` runs (``tabulated=True``: filters read from a fine
table over distance). Batch size and thread count are printed with every number.

With ``--peer-python PATH`` (the python of an environment with schnetpack, e.g. from
``../shared/tools/peer-env.sh``), schnetpack's SchNet of the same size is timed in the same run,
right after qmlx, on the same molecules, batches and thread counts, in a subprocess of that python
(``benchmarks/_schnetpack_peer.py``); the molecules travel in a temporary ``.npz`` file. The peer
builds its pair lists with its own neighbour list transform, and the run stops unless its pair
and atom counts equal qmlx's and its energies are finite. The table then gives both rates and
their ratio.

With ``--compile`` it also times qmlx's training step with the forward pass under
``torch.compile`` (what ``qmlx train --compile`` does), next to the eager numbers.

Optionally (``--qm9-memory``) measures the peak resident memory of a QM9 training run with 100k
training molecules (data, pair lists, model and some hundred training steps).

    python benchmarks/nn_throughput.py [--threads 1 2] [--batch-size 100] [--seconds 10]
        [--peer-python PATH] [--compile] [--qm9-memory] [--out-dir DIR]

Writes ``nn_throughput.json`` and ``nn_throughput.md`` into ``--out-dir`` (default ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qmlx._io import json_dumps, write_text_atomic
from qmlx.data import Molecules, load_qm7
from qmlx.nn import PairCache, SchNet

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "_schnetpack_peer.py"


def _rate(model: SchNet, batches, train: bool, seconds: float, forward=None, tabulated: bool = True) -> float:
    """Molecules per second of training steps (``forward``: the training forward pass, by default
    ``model`` itself, e.g. ``torch.compile(model)``, called with ``tabulated`` as `qmlx train`
    calls it) or of tabulated inference."""
    forward = model if forward is None else forward
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as `qmlx train` (Trainer) runs it
    n_mol, k = 0, 0
    # warm-up (and compilation, for a compiled forward)
    for b in batches[:3]:
        out = forward(b, tabulated=tabulated)
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
            out = forward(b, tabulated=tabulated)
            loss = ((out.energy - b.energy) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(b, tabulated=True)  # the inference path of predict_network
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


def _write_peer_data(path: Path, mols: Molecules, cache: PairCache, batch_idx: list[np.ndarray]) -> None:
    """The molecules that the batches use, their half pair counts, targets and the batches (as
    indices into those molecules) as an ``.npz`` file for the peer script."""
    used = np.unique(np.concatenate(batch_idx))
    sub = mols.subset(used)
    energy = np.zeros(len(used)) if cache.energy is None else cache.energy.numpy()[used]
    np.savez(
        path, Z=sub.Z, R=sub.R.astype(np.float32), n_atoms=sub.n_atoms, half_pair_counts=cache.pair_counts[used],
        energy=energy, batches=np.stack([np.searchsorted(used, idx) for idx in batch_idx]),
    )  # fmt: skip


def _peer_rates(
    peer_python: str, data: Path, threads: int, seconds: float, n_rbf: int, cutoff: float
) -> dict:
    """schnetpack's rates from `PEER_SCRIPT` run by ``peer_python`` (one JSON line on stdout)."""
    cmd = [peer_python, str(PEER_SCRIPT), str(data), "--threads", str(threads), "--seconds", str(seconds),
           "--n-rbf", str(n_rbf), "--cutoff", str(cutoff), "--n-features", "64", "--n-interactions", "3"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"peer run failed ({' '.join(cmd)}):\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(
    threads: list[int],
    batch_size: int,
    seconds: float,
    peer_python: str | None = None,
    compiled: bool = False,
) -> tuple[list[dict], dict]:
    """qmlx rows (and schnetpack's rates next to them when ``peer_python`` is given) and the peer's
    versions. ``compiled`` adds qmlx's training rate under ``torch.compile`` (``qmlx train
    --compile``), compiled once per model before the timing."""
    qm7 = load_qm7()
    rng = np.random.default_rng(0)
    rows, peer_info = [], {}
    sets = {
        "qm7 (cutoff 5 Å)": (qm7, 5.0),
        "100 x 20 atoms, all pairs": (_twenty_atom_set(), 5.0),
    }
    with tempfile.TemporaryDirectory(prefix="qmlx-nn-throughput-") as tmp:
        for s, (label, (mols, cutoff)) in enumerate(sets.items()):
            cache = PairCache(mols, cutoff)
            batch_idx = [rng.choice(len(mols), batch_size, replace=False) for _ in range(20)]
            batches = [cache.batch(idx) for idx in batch_idx]
            pairs = float(np.mean([2 * len(b.idx_i) for b in batches]))  # directed pairs
            atoms = float(np.mean([len(b.Z) for b in batches]))
            peer_data = Path(tmp) / f"set{s}.npz"
            if peer_python:
                _write_peer_data(peer_data, mols, cache, batch_idx)
            for spacing in (0.1, 0.25):
                model = _model(spacing)
                with torch.no_grad():
                    if not all(bool(torch.isfinite(model(b).energy).all()) for b in batches):
                        raise SystemExit(f"qmlx SchNet gave non-finite energies on {label}")
                for th in threads:
                    torch.set_num_threads(th)
                    with torch.no_grad():  # the tables the training steps read (None: per pair)
                        tables = model.training_tables(min(len(b.idx_i) for b in batches))
                    row = {
                        "data": label,
                        "n_rbf": model.rbf.n_rbf,
                        "batch_size": batch_size,
                        "threads": th,
                        "atoms_per_batch": atoms,
                        "directed_pairs_per_batch": round(pairs),
                        "train_table_intervals": None if tables is None else tables.n_intervals,
                        "train_mol_s": round(_rate(model, batches, True, seconds), 1),
                        "train_per_pair_mol_s": round(
                            _rate(model, batches, True, seconds, tabulated=False), 1
                        ),
                        "infer_mol_s": round(_rate(model, batches, False, seconds), 1),
                    }
                    if compiled:
                        fused = torch.compile(model, dynamic=True)
                        row["train_compiled_mol_s"] = round(_rate(model, batches, True, seconds, fused), 1)
                    msg = (
                        f"{label:28s} n_rbf {row['n_rbf']:3d}  batch {batch_size}  threads {th}:  "
                        f"qmlx train {row['train_mol_s']:8.1f} mol/s   per-pair filters "
                        f"{row['train_per_pair_mol_s']:8.1f} mol/s   inference {row['infer_mol_s']:8.1f} mol/s"
                    )
                    if compiled:
                        msg += f"   train compiled {row['train_compiled_mol_s']:8.1f} mol/s"
                    if peer_python:
                        peer = _peer_rates(peer_python, peer_data, th, seconds, model.rbf.n_rbf, cutoff)
                        if (peer["directed_pairs_per_batch"], peer["atoms_per_batch"]) != (pairs, atoms):
                            raise SystemExit(
                                f"schnetpack computed {peer['directed_pairs_per_batch']} directed pairs and "
                                f"{peer['atoms_per_batch']} atoms per batch, qmlx {pairs} and {atoms}"
                            )
                        peer_info = {k: peer[k] for k in ("schnetpack", "torch", "neighbour_list")}
                        row.update(
                            schnetpack_train_mol_s=peer["train_mol_s"],
                            schnetpack_infer_mol_s=peer["infer_mol_s"],
                            schnetpack_n_parameters=peer["n_parameters"],
                            schnetpack_rbf_subnormal_fraction=peer["rbf_subnormal_fraction"],
                            train_ratio=round(row["train_mol_s"] / peer["train_mol_s"], 2),
                            train_per_pair_ratio=round(row["train_per_pair_mol_s"] / peer["train_mol_s"], 2),
                            **(
                                {
                                    "train_compiled_ratio": round(
                                        row["train_compiled_mol_s"] / peer["train_mol_s"], 2
                                    )
                                }
                                if compiled
                                else {}
                            ),
                            infer_ratio=round(row["infer_mol_s"] / peer["infer_mol_s"], 2),
                        )
                        msg += (
                            f"\n{'':28s} schnetpack train {peer['train_mol_s']:8.1f} mol/s   inference "
                            f"{peer['infer_mol_s']:8.1f} mol/s   ratio train {row['train_ratio']:.2f}x  "
                            f"inference {row['infer_ratio']:.2f}x"
                        )
                    row["n_parameters"] = sum(p.numel() for p in model.parameters())
                    rows.append(row)
                    print(msg, flush=True)
    return rows, peer_info


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
    ap.add_argument("--compile", action="store_true", help="also time training under torch.compile")
    ap.add_argument("--qm9-memory", action="store_true", help="also measure a QM9 100k training run's memory")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. machine load)")
    ap.add_argument(
        "--peer-python",
        default=None,
        help="python of an environment with schnetpack: time it in the same run",
    )
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where nn_throughput.json/.md are written")
    args = ap.parse_args()
    result = {
        # the peer environment's python is named as peer-env.sh gives it, not by this machine's path
        "command": "python benchmarks/nn_throughput.py "
        + shlex.join(sys.argv[1:]).replace(
            str(args.peer_python or "\0"), "$(bash ../shared/tools/peer-env.sh)"
        ),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "note": args.note,
    }
    result["throughput"], peer = throughput(
        args.threads, args.batch_size, args.seconds, args.peer_python, args.compile
    )
    if peer:
        result["peer"] = peer
    result["load_average_at_end"] = os.getloadavg()
    if args.qm9_memory:
        result["qm9_memory"] = qm9_memory()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out_dir / "nn_throughput.json", json_dumps(result, indent=2) + "\n")
    load = lambda k: ", ".join(f"{x:.2f}" for x in result[k])  # noqa: E731
    lines = [
        "# SchNet throughput (64 features, 3 interactions, cutoff 5 Å)",
        "",
        f"torch {result['torch']}, {result['cpu_count']} CPUs, load average at start {load('load_average_at_start')}, "
        f"at the end of the throughput runs {load('load_average_at_end')}. {args.note}",
        "",
    ]
    if peer:
        lines += [
            f"qmlx and schnetpack {peer['schnetpack']} (torch {peer['torch']}) measured in the same run, one "
            "after the other for each row, on the same molecules, batches and thread counts, with the same "
            "timing loop (Adam, lr 1e-4, MSE loss; inference under `torch.no_grad`, qmlx with the tabulated "
            "filters that `qmlx predict` uses). qmlx's training step is the one `qmlx train` runs: every step "
            "computes the filters on a grid of distances (90 points per Gaussian width, the intervals are in "
            "`nn_throughput.json`) and interpolates them linearly to the pairs, with gradients through the grid "
            "values; the column 'per-pair filters' times the same step computing every filter at every pair, "
            "as schnetpack does. Both give the same energies within the interpolation error (with the shipped "
            "`qm7-schnet`, 3.4e-4 kcal/mol on average and 1.5e-3 at most over QM7, see docs/networks.md). "
            "Adam runs as each package trains: qmlx's fused implementation "
            "(what `qmlx train` uses), torch's default one for schnetpack. schnetpack runs "
            "`NeuralNetworkPotential(PairwiseDistances, SchNet, Atomwise)` with `GaussianRBF(n_rbf, 5 Å)` and "
            f"`CosineCutoff(5 Å)` on pair lists from `{peer['neighbour_list']}`; its directed pairs and atoms "
            "per batch equal qmlx's (checked) and its energies are finite. Ratio = qmlx / schnetpack.",
            "",
            "| data | n_rbf | batch | threads | directed pairs/batch | train mol/s qmlx | schnetpack | ratio "
            "| qmlx per-pair filters | ratio "
            + ("| qmlx --compile | ratio " if args.compile else "")
            + "| inference mol/s qmlx | schnetpack | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|"
            + ("---|---|" if args.compile else "")
            + "---|---|---|",
        ]
        for r in result["throughput"]:
            fused = (
                f"| {r['train_compiled_mol_s']:.0f} | {r['train_compiled_ratio']:.2f}x "
                if args.compile
                else ""
            )
            lines.append(
                f"| {r['data']} | {r['n_rbf']} | {r['batch_size']} | {r['threads']} | {r['directed_pairs_per_batch']} "
                f"| {r['train_mol_s']:.0f} | {r['schnetpack_train_mol_s']:.0f} | {r['train_ratio']:.2f}x "
                f"| {r['train_per_pair_mol_s']:.0f} | {r['train_per_pair_ratio']:.2f}x {fused}"
                f"| {r['infer_mol_s']:.0f} | {r['schnetpack_infer_mol_s']:.0f} | {r['infer_ratio']:.2f}x |"
            )
        if args.compile:
            lines += [
                "",
                "`qmlx --compile`: the same qmlx training step with the forward pass under "
                "`torch.compile(model, dynamic=True)` (what `qmlx train --compile` runs), compiled before the "
                "timing; schnetpack runs eagerly as it ships.",
            ]
    else:
        lines += [
            "| data | n_rbf | batch | threads | directed pairs/batch | train mol/s | per-pair filters | inference mol/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["throughput"]:
            lines.append(
                f"| {r['data']} | {r['n_rbf']} | {r['batch_size']} | {r['threads']} | {r['directed_pairs_per_batch']} "
                f"| {r['train_mol_s']:.0f} | {r['train_per_pair_mol_s']:.0f} | {r['infer_mol_s']:.0f} |"
            )
    if "qm9_memory" in result:
        m = result["qm9_memory"]
        lines += ["", f"QM9 training run with {m['n_train']} training molecules: peak RSS {m['peak_rss_mb']:.0f} MB "
                  f"({m['steps']} steps of {m['batch_size']}, {m['threads']} thread)."]  # fmt: skip
    lines += ["", f"Command: `{result['command']}`"]
    write_text_atomic(args.out_dir / "nn_throughput.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
