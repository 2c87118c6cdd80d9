"""Train a schnetpack SchNet and give its energies, for ``experiments/schnetpack_parity.py``.

Run with the python of an environment that has schnetpack (``../shared/tools/peer-env.sh``); it does
not import qmlx. Reads ``DATA.npz`` (written by the parity script: the training and test molecules,
positions in Å, training energies in eV), builds every molecule's neighbour list with schnetpack's
own transform (``ASENeighborList``), and trains ``NeuralNetworkPotential(PairwiseDistances ->
SchNet -> Atomwise, post-processors CastTo64 and AddOffsets with the training mean per atom)`` with
Adam on the mean squared error for ``--minutes``. Then, with the model in eval mode and float32
inputs, it computes schnetpack's energy (eV) of every test molecule, and writes into ``OUT/``:
``model_state.pt`` (``torch.save(model.state_dict())``), ``best_model`` (``torch.save(model)``,
as spktrain pickles it) and ``energies.npz`` (``energy``, float64 from schnetpack's float64
post-processing of float32 network outputs). Prints one JSON line with what it did.

    PEER_PY experiments/_schnetpack_parity_peer.py DATA.npz OUT --minutes 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def inputs(Z, R, n_atoms, cutoff):
    """One schnetpack input dict per molecule, with its neighbour list (float32 positions)."""
    from schnetpack import properties
    from schnetpack.transform import ASENeighborList

    nbl = ASENeighborList(cutoff=cutoff)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    out = []
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
        out.append(nbl(d))
    return out


def main() -> None:
    import schnetpack as spk
    from schnetpack.data.loader import _atoms_collate_fn as atoms_collate_fn

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--n-rbf", type=int, default=20)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = np.load(args.data)
    train = inputs(d["train_Z"], d["train_R"], d["train_n_atoms"], args.cutoff)
    test = inputs(d["test_Z"], d["test_R"], d["test_n_atoms"], args.cutoff)
    energy = torch.as_tensor(d["train_energy"], dtype=torch.float64)
    mean = float((energy / torch.as_tensor(d["train_n_atoms"])).mean())

    rep = spk.representation.SchNet(
        n_atom_basis=args.features,
        n_interactions=args.interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=args.n_rbf, cutoff=args.cutoff),
        cutoff_fn=spk.nn.CosineCutoff(args.cutoff),
    )
    model = spk.model.NeuralNetworkPotential(
        representation=rep,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=args.features, output_key="energy")],
        postprocessors=[
            spk.transform.CastTo64(),
            spk.transform.AddOffsets("energy", add_mean=True, property_mean=torch.tensor([mean])),
        ],
    )
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    start, epochs, steps = time.perf_counter(), 0, 0
    while time.perf_counter() - start < 60 * args.minutes:
        order = rng.permutation(len(train))
        for lo in range(0, len(order), args.batch_size):
            idx = order[lo : lo + args.batch_size]
            batch = atoms_collate_fn([train[i] for i in idx])
            out = model(batch)["energy"]
            loss = ((out - energy[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - start > 60 * args.minutes:
                break
        epochs += 1
    model.eval()
    predicted = []
    with torch.no_grad():
        for lo in range(0, len(test), 100):
            predicted.append(model(atoms_collate_fn(test[lo : lo + 100]))["energy"].double().numpy())
    predicted = np.concatenate(predicted)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model_state.pt")
    torch.save(model, out_dir / "best_model")
    np.savez(out_dir / "energies.npz", energy=predicted)
    print(json.dumps({
        "schnetpack": getattr(spk, "__version__", "2.1.1"), "torch": torch.__version__, "epochs": epochs,
        "steps": steps, "minutes": (time.perf_counter() - start) / 60, "mean_per_atom_eV": mean,
        "final_batch_mse_eV2": float(loss), "features": args.features, "interactions": args.interactions,
        "n_rbf": args.n_rbf, "cutoff": args.cutoff, "batch_size": args.batch_size,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
