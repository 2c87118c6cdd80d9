"""Novelty on QM7: does the one-class model of the training domain see displaced atoms, and does
setting the most novel molecules aside lower the error?

Protocol. The shipped QM7 models were trained on the official fold 0 (``qm7-schnet``: 5,159
training and 573 validation molecules; the ensemble's members share that split). Their novelty
model (`qmlx.novelty`) takes its centres from the training molecules and is calibrated on the
validation molecules; ``--ship`` writes it, and the training domain with the statistics of the
structure rules (`qmlx.data.domain`), into the shipped model files (no retraining; the QM9 models
from their own recorded splits). The
1,433 fold-0 test molecules are then used twice:

- **displaced atoms**: in each test molecule one atom, drawn at random, is moved by 0.1, 0.2 or
  0.4 Å in a random direction (seed ``--seed``). Reported per distance: the AUROC of the
  molecule novelty against the untouched test molecules; *pointing*, how often the most novel
  atom is the moved atom or an atom bonded to it (bonds of the untouched molecule, `qmlx.chem`);
  the fraction flagged outside the domain; and the same AUROC for the ensemble's uncertainty
  (``qm7-schnet-ensemble``) and the flags of the rules alone (`qmlx.data.domain`);
- **selective prediction** on the untouched test molecules: the ensemble's MAE as the most novel
  1, 5 and 10 % are set aside, by novelty and by the ensemble's uncertainty, and the Spearman
  correlation of each with the absolute error;
(what novelty costs in prediction is measured in ``benchmarks/novelty_cost.py``).

Energies are PBE0 atomization energies in kcal/mol.

Usage::

    QMLX_DATA_DIR=... python experiments/domain.py [--ship]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

SHIFTS = (0.1, 0.2, 0.4)
FRACTIONS = (0.01, 0.05, 0.10)
QM7_MODELS = ("qm7-schnet", "qm7-dtnn", "qm7-schnet-ensemble")
QM9_MODELS = ("qm9-schnet", "qm9-schnet-50k")


def ship(name: str, novelty, domain: dict) -> None:
    """Write ``novelty`` (a `NoveltyModel`) and the training ``domain`` into shipped model ``name``
    (its weights file and its JSON sidecar), atomically; the weights are left as they are."""
    from qmlx._io import atomic_torch_save, json_dumps, safe_torch_load, write_text_atomic
    from qmlx.nn.io import torch_state
    from qmlx.pretrained import shipped_model_path

    path = shipped_model_path(name)
    record = safe_torch_load(path, "network file")
    record["novelty"] = torch_state(novelty.to_state())
    record["metadata"]["domain"] = domain
    atomic_torch_save(record, path)
    sidecar = path.with_suffix(".json")
    write_text_atomic(sidecar, json_dumps(json.loads(sidecar.read_text()) | {"domain": domain}) + "\n")
    print(f"shipped the novelty model and domain in {path} ({path.stat().st_size / 1e6:.2f} MB)")


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the displaced atoms and their directions")
    parser.add_argument(
        "--ship", action="store_true", help="write the novelty models into the shipped QM7 model files"
    )
    return parser


def displaced(mols, shift: float, seed: int):
    """``(molecules, moved)``: each molecule of ``mols`` with one random atom moved by ``shift`` Å in a
    random direction, and the flat index of the moved atom of each molecule."""
    from qmlx.data import Molecules

    rng = np.random.default_rng(seed)
    moved = mols.offsets[:-1] + rng.integers(0, mols.n_atoms)
    direction = rng.normal(size=(len(mols), 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    R = mols.R.copy()
    R[moved] += shift * direction
    return Molecules(Z=mols.Z, R=R, n_atoms=mols.n_atoms, targets={}, name=f"{mols.name} displaced"), moved


def pointing(mols, atom_novelty: np.ndarray, moved: np.ndarray) -> float:
    """Fraction of molecules whose most novel atom is the moved atom or one bonded to it (bonds of
    the untouched molecules ``mols``)."""
    from qmlx.chem.bonds import bonds

    hits = 0
    for m in range(len(mols)):
        lo, hi = mols.offsets[m], mols.offsets[m + 1]
        top = lo + int(np.argmax(atom_novelty[lo:hi]))
        near = {int(moved[m])}
        for i, j in bonds(mols[m]) + lo:
            if moved[m] in (i, j):
                near |= {int(i), int(j)}
        hits += top in near
    return hits / len(mols)


def risk_coverage(score: np.ndarray, error: np.ndarray) -> list[dict]:
    """MAE of the molecules kept when the highest-``score`` fractions `FRACTIONS` are set aside."""
    order = np.argsort(-score, kind="stable")
    rows = [{"set_aside": 0.0, "mae": float(error.mean())}]
    for f in FRACTIONS:
        keep = order[int(round(f * len(order))) :]
        rows.append({"set_aside": f, "mae": float(error[keep].mean())})
    return rows


def compute(args: argparse.Namespace) -> dict:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from qmlx.data import load_qm7
    from qmlx.data.domain import Domain
    from qmlx.errors import DomainWarning
    from qmlx.models import load_model
    from qmlx.novelty import fit_domain_model
    from qmlx.train.config import recorded_split

    warnings.simplefilter("ignore", DomainWarning)
    qm7 = load_qm7(download_if_missing=False)
    net, ens = load_model("qm7-schnet"), load_model("qm7-schnet-ensemble")
    sp = recorded_split(qm7, net.metadata)
    t0 = time.perf_counter()
    novelty = fit_domain_model(qm7, sp.train, sp.val, seed=0)
    fit_s = time.perf_counter() - t0
    net.novelty = ens.novelty = novelty
    domain = Domain.from_molecules(qm7.subset(sp.train)).to_dict()  # with the structure rules' statistics
    if args.ship:
        for name in QM7_MODELS:
            ship(name, novelty, domain)
        from qmlx.data import load_qm9
        from qmlx.pretrained import available_models

        qm9 = load_qm9()
        for name in QM9_MODELS:
            split9 = recorded_split(qm9, available_models()[name])
            ship(
                name,
                fit_domain_model(qm9, split9.train, split9.val, seed=0),
                Domain.from_molecules(qm9.subset(split9.train)).to_dict(),
            )
    for model in (net, ens):
        model.metadata["domain"] = domain

    test = qm7.subset(sp.test)
    y = test.target("atomization_energy", "kcal/mol")
    base = ens.predict(test)
    rules0 = ~ens.check_domain(test).in_domain
    result: dict = {
        "model": "qm7-schnet-ensemble (novelty model shared with qm7-schnet and qm7-dtnn)",
        "split": net.metadata["split"],
        "novelty_model": {
            "centres": {str(z): len(d.coordinates) for z, d in novelty.elements.items()},
            "components": {str(z): len(d.basis) for z, d in novelty.elements.items()},
            "calibration_molecules": len(novelty.calibration),
            "level": novelty.level,
            "fit_s": fit_s,
            "descriptor": novelty.descriptor.to_dict(),
        },
        "untouched": {
            "n": len(test),
            "flagged_novelty": float(novelty.outside(base.novelty_p).mean()),
            "flagged_rules": float(rules0.mean()),
            "median_novelty": float(np.median(base.novelty)),
        },
        "displaced": [],
    }
    labels = np.r_[np.zeros(len(test)), np.ones(len(test))]
    for shift in SHIFTS:
        moved_mols, moved = displaced(test, shift, args.seed)
        pred = ens.predict(moved_mols)
        rules = ~ens.check_domain(moved_mols).in_domain
        result["displaced"].append(
            {
                "shift_angstrom": shift,
                "auroc_novelty": float(roc_auc_score(labels, np.r_[base.novelty, pred.novelty])),
                "auroc_uncertainty": float(roc_auc_score(labels, np.r_[base.uncertainty, pred.uncertainty])),
                "pointing": pointing(test, pred.atom_novelty, moved),
                "flagged_novelty": float(novelty.outside(pred.novelty_p).mean()),
                "flagged_rules": float(rules.mean()),
                "median_novelty": float(np.median(pred.novelty)),
            }
        )
        print(result["displaced"][-1], flush=True)

    error = np.abs(base.energy - y)
    result["selective"] = {
        "novelty": risk_coverage(base.novelty, error),
        "uncertainty": risk_coverage(base.uncertainty, error),
        "spearman_novelty": float(spearmanr(base.novelty, error).statistic),
        "spearman_uncertainty": float(spearmanr(base.uncertainty, error).statistic),
    }

    return result


def render(result: dict, out_dir: Path) -> None:
    n = result["novelty_model"]
    u = result["untouched"]
    lines = [
        "# Novelty on QM7: displaced atoms and selective prediction",
        "",
        f"Model: {result['model']}; official fold 0. Novelty model: centres per element "
        f"{', '.join(f'Z={z}: {c}' for z, c in n['centres'].items())} (k-means centroids of the training "
        f"environments in their {max(n['components'].values())} principal directions); calibrated on "
        f"{n['calibration_molecules']} validation molecules; outside the domain at p <= {n['level']} "
        f"(fitted in {n['fit_s']:.1f} s).",
        "",
        f"Untouched test molecules ({u['n']}): flagged by novelty {100 * u['flagged_novelty']:.1f} %, by the "
        f"rules {100 * u['flagged_rules']:.1f} %; median novelty {u['median_novelty']:.2f}.",
        "",
        "## One atom displaced",
        "",
        *report.table(
            [
                "shift (Å)",
                "AUROC novelty",
                "pointing",
                "flagged (novelty)",
                "AUROC ensemble σ",
                "flagged (rules alone)",
                "median novelty",
            ],
            [
                [
                    f"{d['shift_angstrom']:.1f}",
                    f"{d['auroc_novelty']:.3f}",
                    f"{d['pointing']:.3f}",
                    f"{100 * d['flagged_novelty']:.1f} %",
                    f"{d['auroc_uncertainty']:.3f}",
                    f"{100 * d['flagged_rules']:.1f} %",
                    f"{d['median_novelty']:.2f}",
                ]
                for d in result["displaced"]
            ],
        ),
        "",
        "Pointing: the most novel atom is the moved atom or bonded to it. AUROC: displaced against "
        "untouched test molecules (0.5 is chance).",
        "",
        "## Selective prediction (untouched test molecules, ensemble MAE in kcal/mol)",
        "",
        *report.table(
            ["set aside", "by novelty", "by ensemble σ"],
            [
                [f"{100 * a['set_aside']:.0f} %", f"{a['mae']:.3f}", f"{b['mae']:.3f}"]
                for a, b in zip(result["selective"]["novelty"], result["selective"]["uncertainty"])
            ],
        ),
        "",
        f"Spearman correlation with |error|: novelty {result['selective']['spearman_novelty']:.3f}, ensemble σ "
        f"{result['selective']['spearman_uncertainty']:.3f}.",
        "",
        "What novelty costs in prediction: `benchmarks/novelty_cost.md`.",
        "",
        *report.run_lines(result),
    ]
    report.write_markdown(Path(out_dir) / "domain.md", lines)


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "domain", argv)


if __name__ == "__main__":
    main()
