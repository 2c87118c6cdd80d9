"""Novelty on QM9 chemical classes held out of training: does the one-class model see a functional
group or ring type it never saw, and does it point at it?

Protocol. Two classes of QM9 molecules, found from the geometry (heavy atoms closer than 1.2
times the sum of their covalent radii are bonded):

- **nitriles**: a carbon and a nitrogen closer than 1.20 Å, the nitrogen bonded to nothing else
  (C≡N is about 1.16 Å; C=N about 1.28 Å);
- **three-membered rings**: three heavy atoms bonded to each other (cyclopropanes, epoxides,
  aziridines).

For each class, a Bag-of-Bonds Laplacian KRR (hyperparameters by inner 3-fold CV) is trained on
``--n-train`` molecules drawn from the molecules *without* the class, and its novelty model
(`qmlx.novelty`) takes its centres from them and is calibrated on ``--n-val`` other molecules
without the class. Tested on ``--n-test`` held-out molecules without the class and as many with
it (or all of them, if fewer). Reported: AUROC of molecule novelty (class against the rest), and of
the kernel's own density of the KRR features around its training features (alone and averaged in
rank with novelty: does the kernel's metric add to it?),
fractions flagged outside the domain in and out of the class, *pointing* (the most novel atom
lies in the class substructure: the nitrile's C or N, an atom of the three-membered ring), the
Spearman correlation of novelty with the KRR's absolute error, and the KRR's MAE as the most novel
1, 5 and 10 % of all test molecules are set aside. Energies: QM9 U0 atomization energies (B3LYP),
kcal/mol.

Usage::

    python experiments/domain_holdout.py [--n-train 5000]
    python experiments/domain_holdout.py --threads 2 --schnet-minutes 12       # and a SchNet per class
    python experiments/domain_holdout.py --threads 2 --ensemble-members 3      # and ensembles of them
    python experiments/domain_holdout.py --threads 2 --refit-novelty  # the runs' novelty models again
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

try:
    from experiments import _report as report
    from experiments.domain import risk_coverage
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report
    from domain import risk_coverage

CLASSES = ("nitrile", "three-membered ring")


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(
        __doc__,
        quick="1,000 training, 300 validation and 300 test molecules per part",
        seed_help="seed of the molecules drawn",
    )
    parser.add_argument("--n-train", type=int, default=5000, help="training molecules (without the class)")
    parser.add_argument("--n-val", type=int, default=1000, help="calibration molecules (without the class)")
    parser.add_argument("--n-test", type=int, default=2000, help="test molecules per part")
    parser.add_argument(
        "--schnet-minutes", type=float, default=0.0,
        help="also train a SchNet per class for this many minutes (0: KRR only)",
    )  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path("runs/domain_holdout"), help="SchNet run folders")
    parser.add_argument(
        "--ensemble-members", type=int, default=0,
        help="with a trained SchNet per class in --runs: add members (other seeds, same molecules) up to "
        "this many and compare novelty with the ensemble's spread",
    )  # fmt: skip
    parser.add_argument(
        "--member-minutes", type=float, default=6.0, help="training budget of each added member"
    )
    parser.add_argument(
        "--refit-novelty", action="store_true",
        help="refit the novelty models of the SchNets (and ensemble members) in --runs from their recorded "
        "splits, without retraining, and measure them again",
    )  # fmt: skip
    return parser


def class_atoms(mols, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Per class, (n_atoms_total,) bool: the atoms of each molecule that make the class (a nitrile's C
    and N, the atoms of a three-membered ring of heavy atoms)."""
    from ase.data import covalent_radii

    out = {name: np.zeros(len(mols.Z), dtype=bool) for name in CLASSES}
    for lo in range(0, len(mols), chunk):
        idx = np.arange(lo, min(lo + chunk, len(mols)))
        sub = mols.subset(idx)
        Z, R, mask = sub.padded()
        d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
        heavy = mask & (Z > 1)
        r = covalent_radii[Z]
        bonded = heavy[:, :, None] & heavy[:, None, :] & (d < 1.2 * (r[:, :, None] + r[:, None, :]))
        bonded &= ~np.eye(Z.shape[1], dtype=bool)
        triple = bonded & (Z[:, :, None] == 6) & (Z[:, None, :] == 7) & (d < 1.20)
        lone_n = bonded.sum(1) == 1  # a nitrogen with one heavy neighbour
        nitrile_c = (triple & lone_n[:, None, :]).any(2)
        nitrile_n = (triple & lone_n[:, None, :]).any(1)
        A = bonded.astype(np.int64)
        in_ring = ((A @ A) * A).sum(2) > 0  # atom i has neighbours j, k bonded to each other
        slot = np.arange(len(mols.Z))[mols.offsets[idx[0]] : mols.offsets[idx[-1] + 1]]
        flat = mask.reshape(-1)
        out["nitrile"][slot] = (nitrile_c | nitrile_n).reshape(-1)[flat]
        out["three-membered ring"][slot] = in_ring.reshape(-1)[flat]
    return out


def compute(args: argparse.Namespace) -> dict:
    from scipy.stats import rankdata, spearmanr
    from sklearn.metrics import roc_auc_score

    from qmlx.data import load_qm9
    from qmlx.errors import DomainWarning
    from qmlx.kernels import kernel_matrix
    from qmlx.kernels.training import train_krr
    from qmlx.models import KernelModel

    warnings.simplefilter("ignore", DomainWarning)
    if args.quick:
        args.n_train, args.n_val, args.n_test = 1000, 300, 300
    qm9 = load_qm9()
    atoms_of = class_atoms(qm9)
    y_all = qm9.target("atomization_energy", "kcal/mol")
    result: dict = {
        "dataset": "QM9 (130,831 molecules), U0 atomization energy [kcal/mol]",
        "quick": bool(args.quick),
        "n_train": args.n_train,
        "n_val": args.n_val,
        "n_test": args.n_test,
        "classes": {},
    }
    rng = np.random.default_rng(args.seed)
    previous = Path(args.out_dir) / f"{stem(args)}.json"
    kept = {}  # without --schnet-minutes, an earlier run's SchNet results on the same molecules
    # (with --refit-novelty, measured again on the same runs)
    kept_ensembles = {}
    if args.schnet_minutes <= 0 and previous.exists():
        old = report.read_json(previous)
        if (old.get("n_train"), old.get("n_val"), old.get("n_test")) == (
            args.n_train,
            args.n_val,
            args.n_test,
        ):
            kept = {n: c["schnet"] for n, c in old["classes"].items() if "schnet" in c}
            kept_ensembles = {n: c["ensemble"] for n, c in old["classes"].items() if "ensemble" in c}
    for name in CLASSES:
        t0 = time.perf_counter()
        member = np.bincount(qm9.mol_index, weights=atoms_of[name], minlength=len(qm9)) > 0
        rest = rng.permutation(np.flatnonzero(~member))
        inside = rng.permutation(np.flatnonzero(member))
        train = np.sort(rest[: args.n_train])
        val = np.sort(rest[args.n_train : args.n_train + args.n_val])
        test_in = np.sort(rest[args.n_train + args.n_val : args.n_train + args.n_val + args.n_test])
        test_out = np.sort(inside[: args.n_test])
        # the novelty model calibrated on validation molecules the KRR never trained on
        krr, info = train_krr(
            qm9, train, None, "bob", "laplacian", target="atomization_energy", seed=args.seed, calibration=val
        )
        model = KernelModel(krr)
        test = np.concatenate([test_in, test_out])
        mols = qm9.subset(test)
        pred = model.predict(mols)
        out = np.r_[np.zeros(len(test_in), dtype=bool), np.ones(len(test_out), dtype=bool)]
        error = np.abs(pred.energy - y_all[test])
        flagged = model.novelty.outside(pred.novelty_p)
        # the kernel's own view: a kernel density of the test features around the training features
        reg = krr.regressor
        K = kernel_matrix(krr.representation.transform(mols), reg.X_fit_, reg.kernel, reg.sigma)
        density = -np.log(np.maximum(K.mean(1), 1e-300))
        ranks = (rankdata(pred.novelty) + rankdata(density)) / 2
        result["classes"][name] = {
            "auroc_kernel_density": float(roc_auc_score(out, density)),
            "auroc_novelty_and_kernel": float(roc_auc_score(out, ranks)),
            "molecules_with_class": int(member.sum()),
            "n_test_in": len(test_in),
            "n_test_out": len(test_out),
            "auroc": float(roc_auc_score(out, pred.novelty)),
            "flagged_in": float(flagged[~out].mean()),
            "flagged_out": float(flagged[out].mean()),
            "pointing": pointing(qm9, test, out, pred.atom_novelty, atoms_of[name]),
            "mae_in": float(error[~out].mean()),
            "mae_out": float(error[out].mean()),
            "spearman_novelty_error": float(spearmanr(pred.novelty, error).statistic),
            "risk_coverage": risk_coverage(pred.novelty, error),
            "krr": {"sigma": info["sigma"], "lam": info["lam"]},
            "wall_time_s": time.perf_counter() - t0,
        }
        if args.schnet_minutes > 0 or args.refit_novelty:
            result["classes"][name]["schnet"] = _schnet(
                args, qm9, name, train, val, test, out, y_all, atoms_of[name]
            )
        elif name in kept:
            result["classes"][name]["schnet"] = kept[name]
        if args.ensemble_members > 1 or (args.refit_novelty and name in kept_ensembles):
            result["classes"][name]["ensemble"] = _ensemble(
                args, qm9, name, train, val, test, out, y_all, kept_ensembles.get(name)
            )
        elif name in kept_ensembles:
            result["classes"][name]["ensemble"] = kept_ensembles[name]
        print(name, result["classes"][name], flush=True)
        report.checkpoint(args, result)
    return result


def pointing(
    qm9, test: np.ndarray, out: np.ndarray, atom_novelty: np.ndarray, class_atom: np.ndarray
) -> float:
    """The fraction of the test molecules with the class (``out``) whose most novel atom makes the
    class (``class_atom``, per QM9 atom); ``atom_novelty`` over the atoms of ``qm9[test]``."""
    offsets = np.concatenate([[0], np.cumsum(qm9.n_atoms[test])])
    hits = [
        bool(class_atom[qm9.offsets[test[m]] + int(np.argmax(atom_novelty[offsets[m] : offsets[m + 1]]))])
        for m in np.flatnonzero(out)
    ]
    return float(np.mean(hits))


def _schnet(args, qm9, name: str, train, val, test, out, y_all, class_atom) -> dict:
    """A SchNet trained for ``args.schnet_minutes`` on the class's training and validation molecules
    (its own split of them: the run's novelty model is calibrated on its validation part), tested
    like the KRR."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from qmlx.models import load_model
    from qmlx.train import SplitSpec, TrainConfig
    from qmlx.train.run import train_network

    folder = args.runs / name.replace(" ", "-")
    data = qm9.subset(np.r_[train, val])
    if args.schnet_minutes > 0:
        config = TrainConfig(
            epochs=10_000, max_minutes=args.schnet_minutes, threads=args.threads, seed=args.seed
        )
        spec = SplitSpec(method="none", n_val=len(val), seed=args.seed)
        train_network(
            "schnet", data, spec, config, target="atomization_energy", out=folder, progress=False,
            command=report.command(args),
        )  # fmt: skip
    else:  # --refit-novelty: the trained run, its novelty model fitted again
        refit_novelty(folder / "model.pt", data)
    model = load_model(folder / "model.pt")
    summary = model.metadata
    pred = model.predict(qm9.subset(test))
    error = np.abs(pred.energy - y_all[test])
    return {
        "command": summary.get("command", report.command(args)),
        "novelty_command": report.command(args),
        "epochs": summary["epochs_run"],
        "val_mae": summary["val_mae_kcal_mol"],
        "mae_in": float(error[~out].mean()),
        "mae_out": float(error[out].mean()),
        "auroc": float(roc_auc_score(out, pred.novelty)),
        "flagged_in": float(model.novelty.outside(pred.novelty_p)[~out].mean()),
        "flagged_out": float(model.novelty.outside(pred.novelty_p)[out].mean()),
        "pointing": pointing(qm9, test, out, pred.atom_novelty, class_atom),
        "spearman_novelty_error": float(spearmanr(pred.novelty, error).statistic),
        "risk_coverage": risk_coverage(pred.novelty, error),
    }


def refit_novelty(path: Path, data) -> None:
    """Fit the novelty model of the network file ``path`` again from its recorded split of ``data``
    (the molecules it was trained on) and write it back atomically; the weights are left as they
    are."""
    from qmlx._io import atomic_torch_save, safe_torch_load
    from qmlx.nn.io import torch_state
    from qmlx.novelty import fit_domain_model
    from qmlx.train.config import recorded_split

    record = safe_torch_load(path, "network file")
    split = recorded_split(data, record["metadata"])
    record["novelty"] = torch_state(fit_domain_model(data, split.train, split.val).to_state())
    atomic_torch_save(record, path)


def _ensemble(args, qm9, name: str, train, val, test, out, y_all, previous: dict | None = None) -> dict:
    """The class's SchNet (``--runs``) plus members trained for ``args.member_minutes`` each with
    other seeds on the same molecules and split: how novelty and the ensemble's spread follow the
    ensemble's error."""
    from dataclasses import replace

    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from qmlx.models import NetworkModel, load_model
    from qmlx.nn.ensemble import Ensemble
    from qmlx.train import SplitSpec, TrainConfig
    from qmlx.train.run import train_network

    folder = args.runs / name.replace(" ", "-")
    first = load_model(folder / "model.pt")
    config = TrainConfig(epochs=10_000, max_minutes=args.member_minutes, threads=args.threads)
    spec = SplitSpec(method="none", n_val=len(val), seed=args.seed)
    members = [first.estimator]
    n_members = args.ensemble_members if args.ensemble_members > 1 else previous["members"]
    for k in range(1, n_members):
        out_k = folder / f"member-{k}"
        if not (out_k / "model.pt").exists():
            train_network(
                "schnet", qm9.subset(np.r_[train, val]), spec, replace(config, seed=args.seed + k),
                target="atomization_energy", out=out_k, progress=False, command=report.command(args),
            )  # fmt: skip
        members.append(load_model(out_k / "model.pt").estimator)
    ensemble = Ensemble(members)
    ensemble.metadata = dict(first.metadata)
    ensemble.novelty_state = first.estimator.novelty_state
    pred = NetworkModel(ensemble).predict(qm9.subset(test))
    error = np.abs(pred.energy - y_all[test])
    trained = args.ensemble_members > 1
    return {
        "command": report.command(args) if trained else previous["command"],
        "novelty_command": report.command(args),
        "members": len(members),
        "member_minutes": [None, *([args.member_minutes] * (len(members) - 1))]
        if trained
        else previous["member_minutes"],
        "mae_in": float(error[~out].mean()),
        "mae_out": float(error[out].mean()),
        "auroc_novelty": float(roc_auc_score(out, pred.novelty)),
        "auroc_spread": float(roc_auc_score(out, pred.uncertainty)),
        "spearman_novelty_error": float(spearmanr(pred.novelty, error).statistic),
        "spearman_spread_error": float(spearmanr(pred.uncertainty, error).statistic),
        "risk_coverage_novelty": risk_coverage(pred.novelty, error),
        "risk_coverage_spread": risk_coverage(pred.uncertainty, error),
    }


def render(result: dict, out_dir: Path) -> None:
    rows = []
    for name, c in result["classes"].items():
        rc = {r["set_aside"]: r["mae"] for r in c["risk_coverage"]}
        rows.append(
            [
                name,
                f"{c['molecules_with_class']:,}",
                f"{c['auroc']:.3f}",
                f"{100 * c['flagged_in']:.1f} %",
                f"{100 * c['flagged_out']:.1f} %",
                f"{c['pointing']:.3f}",
                f"{c['mae_in']:.2f} / {c['mae_out']:.2f}",
                f"{c['spearman_novelty_error']:.3f}",
                " / ".join(f"{rc[f]:.2f}" for f in (0.0, 0.01, 0.05, 0.1)),
            ]
        )
    lines = [
        "# Novelty on QM9 classes held out of training",
        "",
        f"{result['dataset']}. Per class: Bag-of-Bonds Laplacian KRR and its novelty model trained on "
        f"{result['n_train']:,} molecules without the class, calibrated on {result['n_val']:,} others without it, "
        f"tested on {result['n_test']:,} held-out molecules without the class and up to as many with it.",
        "",
        *report.table(
            [
                "held-out class",
                "QM9 molecules with it",
                "AUROC",
                "flagged (without)",
                "flagged (with)",
                "pointing",
                "KRR MAE without / with",
                "Spearman(novelty, abs. error)",
                "MAE, 0 / 1 / 5 / 10 % most novel set aside",
            ],
            rows,
        ),
        "",
        "The kernel's own view (does it add to novelty?): AUROC of the kernel density of the KRR "
        "features around its training features, "
        + ", ".join(
            f"{n} {c['auroc_kernel_density']:.3f} (with novelty, mean rank: {c['auroc_novelty_and_kernel']:.3f})"
            for n, c in result["classes"].items()
            if "auroc_kernel_density" in c
        )
        + ".",
        "",
        "AUROC: molecule novelty, molecules with the class against those without. Pointing: the most "
        "novel atom of a molecule with the class makes the class. MAE in kcal/mol over all test molecules "
        "(with and without the class).",
        "",
        *_schnet_lines(result),
        *_ensemble_lines(result),
        *report.run_lines(result),
    ]
    report.write_markdown(
        Path(out_dir) / f"domain_holdout{'_quick' if result.get('quick') else ''}.md", lines
    )


def _schnet_lines(result: dict) -> list[str]:
    rows = []
    for name, c in result["classes"].items():
        if "schnet" not in c:
            continue
        sc = c["schnet"]
        rc = {r["set_aside"]: r["mae"] for r in sc["risk_coverage"]}
        rows.append(
            [
                name,
                f"{sc['epochs']}",
                f"{sc['mae_in']:.2f} / {sc['mae_out']:.2f}",
                f"{sc['auroc']:.3f}",
                f"{100 * sc['flagged_in']:.1f} %",
                f"{100 * sc['flagged_out']:.1f} %" if "flagged_out" in sc else "",
                f"{sc['pointing']:.3f}" if "pointing" in sc else "",
                f"{sc['spearman_novelty_error']:.3f}",
                " / ".join(f"{rc[f]:.2f}" for f in (0.0, 0.01, 0.05, 0.1)),
            ]
        )
    if not rows:
        return []
    return [
        "## SchNet",
        "",
        "A SchNet per class on the same molecules (its own validation part, which calibrates its own "
        "novelty model), trained for a fixed wall-clock budget"
        + "".join(
            sorted(
                {
                    f" by `{c['schnet']['command']}`"
                    for c in result["classes"].values()
                    if "schnet" in c and "command" in c["schnet"]
                }
            )
        )
        + "".join(
            sorted(
                {
                    f"; its novelty model fitted again, without retraining, by `{c['schnet']['novelty_command']}`"
                    for c in result["classes"].values()
                    if c.get("schnet", {}).get("novelty_command", c.get("schnet", {}).get("command"))
                    != c.get("schnet", {}).get("command")
                }
            )
        )
        + ".",
        "",
        *report.table(
            [
                "held-out class",
                "epochs",
                "MAE without / with",
                "AUROC",
                "flagged (without)",
                "flagged (with)",
                "pointing",
                "Spearman(novelty, abs. error)",
                "MAE, 0 / 1 / 5 / 10 % most novel set aside",
            ],
            rows,
        ),
        "",
    ]


def _ensemble_lines(result: dict) -> list[str]:
    rows = []
    for name, c in result["classes"].items():
        if "ensemble" not in c:
            continue
        e = c["ensemble"]
        by_n = {r["set_aside"]: r["mae"] for r in e["risk_coverage_novelty"]}
        by_s = {r["set_aside"]: r["mae"] for r in e["risk_coverage_spread"]}
        rows.append(
            [
                name,
                f"{e['members']}",
                f"{e['mae_in']:.2f} / {e['mae_out']:.2f}",
                f"{e['auroc_novelty']:.3f} / {e['auroc_spread']:.3f}",
                f"{e['spearman_novelty_error']:.3f} / {e['spearman_spread_error']:.3f}",
                " / ".join(f"{by_n[f]:.2f}" for f in (0.0, 0.01, 0.05, 0.1)),
                " / ".join(f"{by_s[f]:.2f}" for f in (0.0, 0.01, 0.05, 0.1)),
            ]
        )
    if not rows:
        return []
    commands = sorted({c["ensemble"]["command"] for c in result["classes"].values() if "ensemble" in c})
    return [
        "## SchNet ensembles: novelty beside the ensemble's spread",
        "",
        "The class's SchNet above plus members trained with other seeds on the same molecules (a shorter "
        f"budget each) by {', '.join(f'`{c}`' for c in commands)}; the ensemble's spread is the members' "
        "standard deviation (not calibrated).",
        "",
        *report.table(
            [
                "held-out class",
                "members",
                "MAE without / with",
                "AUROC novelty / spread",
                "Spearman with abs. error, novelty / spread",
                "MAE, 0 / 1 / 5 / 10 % set aside by novelty",
                "by spread",
            ],
            rows,
        ),
        "",
    ]


def stem(args: argparse.Namespace) -> str:
    return "domain_holdout_quick" if args.quick else "domain_holdout"


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), stem, argv)


if __name__ == "__main__":
    main()
