"""Training and inference throughput of schnetpack's SchNet on given molecules and batches.

Run by ``benchmarks/nn_throughput.py --peer-python PATH`` with the python of an environment that
has schnetpack (``../shared/tools/peer-env.sh``); it does not import qmlx. Reads the molecules and
the batches from an ``.npz`` file written by that script, builds every molecule's neighbour list
with schnetpack's own transform (``MatScipyNeighborList``, as in schnetpack's QM9 configuration),
collates the batches with schnetpack's collate function and times

- a training step: forward + MSE loss + backward + Adam update (lr 1e-4);
- inference: a forward pass under ``torch.no_grad``;

of ``NeuralNetworkPotential(PairwiseDistances -> SchNet -> Atomwise)`` with the given feature
size, interactions, Gaussians and cosine cutoff. Before timing, it checks that every molecule's
directed pair count equals twice the half pair count given in the ``.npz`` file and that the
energies of every batch are finite. Prints one JSON object on stdout.

    PEER_PY benchmarks/_schnetpack_peer.py DATA.npz --threads 2 --seconds 10 --n-rbf 21
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def _neighbour_lists(Z, R, n_atoms, cutoff):
    """One schnetpack input dict per molecule, with its neighbour list (float32 positions)."""
    from schnetpack import properties
    from schnetpack.transform import MatScipyNeighborList

    nbl = MatScipyNeighborList(cutoff=cutoff)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    mols = []
    for m in range(len(n_atoms)):
        a, b = offsets[m], offsets[m + 1]
        d = {
            properties.idx: torch.tensor([m]),
            properties.Z: torch.as_tensor(Z[a:b], dtype=torch.long),
            properties.R: torch.as_tensor(R[a:b], dtype=torch.float32),
            properties.cell: torch.zeros(1, 3, 3),
            properties.pbc: torch.zeros(1, 3, dtype=torch.bool),
            properties.n_atoms: torch.tensor([b - a]),
        }
        mols.append(nbl(d))
    return mols


def _model(n_features, n_interactions, n_rbf, cutoff):
    import schnetpack as spk

    torch.manual_seed(0)
    rep = spk.representation.SchNet(
        n_atom_basis=n_features,
        n_interactions=n_interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff),
    )
    return spk.model.NeuralNetworkPotential(
        representation=rep,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=n_features, output_key="energy")],
    )


def _rate(model, batches, targets, train: bool, seconds: float) -> float:
    """Molecules per second; the same loop as qmlx's (two warm-up steps, then ``seconds``)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n_mol, k = 0, 0
    for b, y in list(zip(batches, targets))[:2]:
        out = model(dict(b))
        if train:
            loss = ((out["energy"] - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b, y = batches[k % len(batches)], targets[k % len(batches)]
        k += 1
        if train:
            out = model(dict(b))
            loss = ((out["energy"] - y) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(dict(b))
        n_mol += len(y)
    return n_mol / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help=".npz with Z, R, n_atoms, half_pair_counts, batches, energy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--n-rbf", type=int, default=21)
    ap.add_argument("--n-features", type=int, default=64)
    ap.add_argument("--n-interactions", type=int, default=3)
    ap.add_argument("--cutoff", type=float, default=5.0)
    args = ap.parse_args()

    import schnetpack as spk
    from schnetpack import properties
    from schnetpack.data.loader import _atoms_collate_fn

    torch.set_num_threads(args.threads)
    data = np.load(args.data)
    n_atoms = data["n_atoms"].astype(np.int64)
    mols = _neighbour_lists(data["Z"], data["R"], n_atoms, args.cutoff)

    # the same problem as qmlx's: every molecule has twice qmlx's half pairs as directed pairs
    directed = np.array([len(m[properties.idx_i]) for m in mols])
    expected = 2 * data["half_pair_counts"].astype(np.int64)
    bad = np.flatnonzero(directed != expected)
    if len(bad):
        m = int(bad[0])
        sys.exit(
            f"schnetpack's neighbour list of molecule {m} has {directed[m]} directed pairs, expected {expected[m]}"
        )

    batches = [_atoms_collate_fn([mols[i] for i in idx]) for idx in data["batches"]]
    targets = [torch.as_tensor(data["energy"][idx], dtype=torch.float32) for idx in data["batches"]]
    model = _model(args.n_features, args.n_interactions, args.n_rbf, args.cutoff)
    with torch.no_grad():
        energies = [model(dict(b))["energy"] for b in batches]
        b0 = batches[0]
        d0 = torch.norm(
            b0[properties.R][b0[properties.idx_j]] - b0[properties.R][b0[properties.idx_i]], dim=1
        )
        rbf = model.representation.radial_basis(d0)
    if not all(bool(torch.isfinite(e).all()) and len(e) == len(y) for e, y in zip(energies, targets)):
        sys.exit("schnetpack's SchNet gave non-finite energies (or the wrong number of them)")
    tiny = torch.finfo(torch.float32).tiny
    result = {
        "schnetpack": spk.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "n_rbf": model.representation.radial_basis.n_rbf,
        "neighbour_list": "schnetpack.transform.MatScipyNeighborList",
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "atoms_per_batch": float(np.mean([len(b[properties.Z]) for b in batches])),
        "directed_pairs_per_batch": float(np.mean([len(b[properties.idx_i]) for b in batches])),
        "energies_finite": True,
        # schnetpack's Gaussians are not clipped; subnormal float32 values slow matrix products on CPUs
        "rbf_subnormal_fraction": float(((rbf > 0) & (rbf < tiny)).float().mean()),
        "train_mol_s": round(_rate(model, batches, targets, True, args.seconds), 1),
        "infer_mol_s": round(_rate(model, batches, targets, False, args.seconds), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
