"""Which rings does the network find stable? Ring energies from atom-wise contributions.

For every 5- and 6-membered ring (bonds and aromaticity from RDKit, see `qmlx.explain.rings`),
the ring energy is the sum over the ring's atoms and their hydrogens of each atom's contribution
relative to its element's reference energy (kcal/mol), from two explanations:

- ``decomposition``: the network's own atom energies, E_i - ref(Z_i);
- ``lrp``: LRP relevance plus bias relevance of each atom (which explains E - sum_i ref(Z_i)).

It reports how well the ring energy separates aromatic from non-aromatic 6-rings (ROC AUC of
-E_ring, so AUC > 0.5 means aromatic rings come out more stable), histograms per ring class, and
a ranked table of ring types (elements, aromaticity) by mean ring energy with example molecules.

    python experiments/ring_stability.py --model qm7-schnet --dataset qm7
    python experiments/ring_stability.py --model runs/qm9-schnet/model.pt --dataset qm9 --n-molecules 20000

Writes ``results/ring_stability_<dataset>.json``, ``.md``, ``_hist.png`` and ``_examples.png``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from qmlx.data import load_qm7, load_qm9
from qmlx.data.paths import savefig_atomic, write_text_atomic
from qmlx.explain import explain
from qmlx.explain.plot import plot_explanation
from qmlx.explain.rings import find_rings
from qmlx.nn import load_network

RESULTS = Path(__file__).resolve().parent.parent / "results"


def ring_table(model, mols) -> tuple[list, dict[str, np.ndarray]]:
    """All rings of ``mols`` and per-atom contributions (relative to element references)."""
    reference = model.head.reference.detach().double().numpy()[mols.Z]
    contributions = {}
    dec = explain(model, mols, "decomposition")
    contributions["decomposition"] = dec.relevance - reference
    lrp = explain(model, mols, "lrp")
    contributions["lrp"] = lrp.relevance + lrp.bias
    rings = []
    for i, atoms in enumerate(tqdm(mols, total=len(mols), desc="perceiving rings", unit="mol")):
        rings += find_rings(atoms, i)
    return rings, contributions


def analyse(rings, contributions, mols) -> dict:
    o = mols.offsets
    energies = {
        m: np.array([r.energy(v[o[r.molecule] : o[r.molecule + 1]]) for r in rings])
        for m, v in contributions.items()
    }
    six = np.array([r.size == 6 for r in rings])
    carbon = np.array([r.carbon_only for r in rings])
    aromatic = np.array([r.aromatic for r in rings])
    out: dict = {"n_rings": len(rings), "n_aromatic": int(aromatic.sum()), "auc": {}, "types": {}}
    for name, mask in (("6-rings", six), ("carbon 6-rings", six & carbon), ("5-rings", ~six)):
        for m, e in energies.items():
            y = aromatic[mask]
            auc = roc_auc_score(y, -e[mask]) if 0 < y.sum() < len(y) else float("nan")
            out["auc"][f"{m}, {name}"] = {"auc": auc, "n": int(mask.sum()), "n_aromatic": int(y.sum())}
    groups = defaultdict(list)
    for k, r in enumerate(rings):
        groups[(r.elements, r.aromatic)].append(k)
    for (elements, arom), idx in groups.items():
        e = energies["decomposition"][idx]
        out["types"][f"{elements}{' aromatic' if arom else ''}"] = {
            "count": len(idx),
            "mean_decomposition": float(e.mean()),
            "mean_lrp": float(energies["lrp"][idx].mean()),
            "example_molecule": int(mols.ids[rings[idx[int(np.argmin(e))]].molecule]),
        }
    out["energies"] = {m: e.tolist() for m, e in energies.items()}
    out["ring_aromatic"] = aromatic.tolist()
    out["ring_size"] = [r.size for r in rings]
    out["ring_carbon_only"] = carbon.tolist()
    return out


def write(result: dict, model, mols, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    types = sorted(result["types"].items(), key=lambda kv: kv[1]["mean_decomposition"])
    common = [(k, v) for k, v in types if v["count"] >= 5]
    lines = [
        f"# Ring stability ({result['dataset']}, model {result['model']}, {result['n_molecules']} molecules)",
        "",
        f"{result['n_rings']} five- and six-membered rings, {result['n_aromatic']} aromatic (RDKit).",
        "Ring energy: sum over ring atoms and their hydrogens of the atom contribution relative to its",
        "element reference, kcal/mol. AUC: how well -E_ring ranks aromatic above non-aromatic rings.",
        "",
        "| rings | explanation | ROC AUC | rings | aromatic |",
        "|---|---|---|---|---|",
    ]
    for key, v in result["auc"].items():
        method, rings = key.split(", ")
        lines.append(f"| {rings} | {method} | {v['auc']:.3f} | {v['n']} | {v['n_aromatic']} |")
    lines += [
        "",
        "Ring types with at least 5 rings, most stable (lowest mean ring energy) first:",
        "",
        "| ring type | count | mean E_ring decomposition | mean E_ring LRP | example molecule id |",
        "|---|---|---|---|---|",
    ]
    for k, v in common:
        lines.append(
            f"| {k} | {v['count']} | {v['mean_decomposition']:.2f} | {v['mean_lrp']:.2f} | {v['example_molecule']} |"
        )
    slim = {k: v for k, v in result.items() if k not in ("energies",)}
    write_text_atomic(RESULTS / f"{stem}.json", json.dumps(slim, indent=2, default=float))
    write_text_atomic(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")

    energies = {m: np.array(e) for m, e in result["energies"].items()}
    aromatic = np.array(result["ring_aromatic"])
    six = np.array(result["ring_size"]) == 6
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (m, e) in zip(axes, energies.items()):
        bins = np.linspace(np.percentile(e, 0.5), np.percentile(e, 99.5), 50)
        for label, mask in (
            ("6-ring, aromatic", six & aromatic),
            ("6-ring, not aromatic", six & ~aromatic),
            ("5-ring, aromatic", ~six & aromatic),
            ("5-ring, not aromatic", ~six & ~aromatic),
        ):
            if mask.any():
                ax.hist(e[mask], bins=bins, alpha=0.5, density=True, label=f"{label} ({mask.sum()})")
        ax.set_xlabel(f"ring energy, {m} [kcal/mol]")
        ax.set_title(m)
    axes[0].set_ylabel("density")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    savefig_atomic(fig, RESULTS / f"{stem}_hist.png", dpi=120)
    plt.close(fig)

    examples = [v["example_molecule"] for _, v in common[:4] + common[-4:]]
    pos = {int(i): k for k, i in enumerate(mols.ids)}
    chosen = mols.subset([pos[i] for i in dict.fromkeys(examples)])
    plot_explanation(explain(model, chosen, "lrp"), RESULTS / f"{stem}_examples.png", max_molecules=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qm7-schnet")
    parser.add_argument("--dataset", choices=["qm7", "qm9"], default="qm7")
    parser.add_argument("--n-molecules", type=int, default=None, help="a random subset of this size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_network(args.model)
    mols = load_qm7() if args.dataset == "qm7" else load_qm9()
    if args.dataset == "qm9":  # only elements the model was trained on
        known = set(np.flatnonzero(model.head.reference.numpy()).tolist())
        ok = np.isin(mols.Z, list(known))
        mols = mols.subset(np.bincount(mols.mol_index, weights=~ok, minlength=len(mols)) == 0)
    if args.n_molecules and args.n_molecules < len(mols):
        idx = np.sort(np.random.default_rng(args.seed).choice(len(mols), args.n_molecules, replace=False))
        mols = mols.subset(idx)
    rings, contributions = ring_table(model, mols)
    result = analyse(rings, contributions, mols)
    result.update(dataset=args.dataset, model=args.model, n_molecules=len(mols))
    stem = f"ring_stability_{args.dataset}"
    write(result, model, mols, stem)
    print((RESULTS / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
