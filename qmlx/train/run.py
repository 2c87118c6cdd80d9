"""A complete training run: data split, model, reference fit, training, test evaluation."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from qmlx.data.molecules import Molecules
from qmlx.data.paths import write_text_atomic
from qmlx.errors import QmlxError
from qmlx.nn.batch import PairCache
from qmlx.nn.models import build_model
from qmlx.train.engine import BEST_NAME, TrainConfig, Trainer, evaluate

TARGET = "atomization_energy"


def load_named_dataset(name: str) -> Molecules:
    """``qm7`` or ``qm9`` as `Molecules` (target ``atomization_energy`` in kcal/mol)."""
    from qmlx.data import load_qm7, load_qm9

    if name.lower() == "qm7":
        return load_qm7()
    if name.lower() == "qm9":
        return load_qm9()
    raise QmlxError(f"unknown dataset {name!r}; expected qm7 or qm9")


def split(
    mols: Molecules,
    fold: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(train, val, test)``; the validation set is carved from the training part.

    With official folds (QM7), fold ``fold`` gives the training part and the test set. Without
    folds (QM9), a seeded permutation holds out ``n_test`` molecules (default 10,000) as the test
    set and the rest is the training part. ``n_val`` defaults to 10% of the training part, at
    most 1,000; ``n_train`` (default: all the rest) is drawn from what remains.
    """
    rng = np.random.default_rng(seed)
    if mols.folds:
        if not 0 <= fold < len(mols.folds):
            raise QmlxError(f"{mols.name} has folds 0..{len(mols.folds) - 1}, not {fold}")
        pool, test = mols.folds[fold]
    else:
        perm = rng.permutation(len(mols))
        n_test = 10_000 if n_test is None else n_test
        test, pool = np.sort(perm[:n_test]), perm[n_test:]
    pool = rng.permutation(pool)
    n_val = min(int(round(0.1 * len(pool))), 1000) if n_val is None else n_val
    val, rest = pool[:n_val], pool[n_val:]
    if n_train is not None:
        if n_train > len(rest):
            raise QmlxError(f"--n-train {n_train} is more than the {len(rest)} training molecules available")
        rest = rest[:n_train]
    return np.sort(rest), np.sort(val), np.asarray(test)


def train_network(
    model_name: str,
    dataset: str = "qm7",
    fold: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    config: TrainConfig | None = None,
    model_config: dict | None = None,
    progress: bool = True,
    command: str | None = None,
    reset_lr: float | None = None,
) -> dict:
    """Train ``model_name`` (schnet or dtnn) and return a summary with the test MAE (kcal/mol).

    Writes ``checkpoint.pt``, ``model.pt`` (best validation weights, with metadata), ``log.csv``
    and ``result.json`` into ``out`` (default ``runs/<dataset>-<model>-fold<K>``).
    """
    from qmlx import __version__

    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    mols = load_named_dataset(dataset)
    train_idx, val_idx, test_idx = split(mols, fold, n_train, n_val, n_test, seed=config.seed)
    torch.manual_seed(config.seed)
    model = build_model(model_name, **(model_config or {}))
    train_m = mols.subset(train_idx)
    model.fit_reference(train_m.Z, train_m.n_atoms, train_m.target(TARGET, "kcal/mol"))
    cut = model.cutoff
    caches = [PairCache(mols.subset(i), cut, TARGET) for i in (train_idx, val_idx, test_idx)]
    out = Path(out or f"runs/{dataset}-{model_name.lower()}-fold{fold}")
    metadata = {
        "dataset": dataset,
        "model": type(model).__name__,
        "fold": fold if mols.folds else None,
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_idx)),
        "seed": config.seed,
        "energy_unit": "kcal/mol",
        "length_unit": "Angstrom",
        "target": TARGET,
        "command": command or " ".join(sys.argv),
        "qmlx_version": __version__,
        "torch_version": str(torch.__version__),
        "train_config": {k: v for k, v in asdict(config).items() if k != "extra"},
    }
    trainer = Trainer(model, caches[0], caches[1], config, out, metadata=metadata, progress=progress)
    trainer.fit(resume=resume, reset_lr=reset_lr)
    trainer.load_best()
    pred, ref = evaluate(model, caches[2], config.eval_batch_size)
    test_mae = float(np.mean(np.abs(pred - ref)))
    test_rmse = float(np.sqrt(np.mean((pred - ref) ** 2)))
    metadata = {**metadata, **trainer.metadata}  # the trainer keeps the original command on resume
    metadata.update(
        test_mae_kcal_mol=test_mae, test_rmse_kcal_mol=test_rmse, epochs_run=trainer.epoch,
        best_epoch=trainer.best_epoch, val_mae_kcal_mol=trainer.best_val, stop_reason=trainer.stop_reason,
        train_minutes=round(trainer.elapsed / 60.0, 2),
    )  # fmt: skip
    trainer.metadata = metadata
    trainer.save_best()
    summary = {k: v for k, v in metadata.items() if k != "train_config"} | {"out": str(out)}
    write_text_atomic(out / "result.json", json.dumps(summary, indent=2) + "\n")
    np.savez(out / "test_predictions.npz", index=test_idx, pred=pred, ref=ref)
    return summary


def model_file(run_dir: str | os.PathLike) -> Path:
    """The best-weights network file of a run directory."""
    return Path(run_dir) / BEST_NAME


def export_shipped(
    run_dir: str | os.PathLike, name: str, models_dir: str | os.PathLike | None = None
) -> dict:
    """Copy a run's best weights into ``qmlx/models/NAME.pt`` with ``NAME.json`` metadata.

    The test MAE is measured again on the run's test set (QM7: the fold's official test part)
    from the exported file itself, so the metadata always matches the shipped weights.
    """
    from qmlx.models import MODELS_DIR
    from qmlx.nn.io import load_network, predict_network, save_network

    run_dir = Path(run_dir)
    models_dir = Path(models_dir or MODELS_DIR)
    model = load_network(model_file(run_dir))
    meta = dict(model.metadata)
    dest = models_dir / f"{name}.pt"
    save_network(model, dest, metadata=meta)
    shipped = load_network(dest)
    mols = load_named_dataset(meta["dataset"])
    fold = meta.get("fold") or 0
    _, _, test_idx = split(mols, fold, None, meta["n_val"], meta["n_test"], seed=meta["seed"])
    test = mols.subset(test_idx)
    pred, _ = predict_network(shipped, test)
    err = pred - test.target(TARGET, "kcal/mol")
    meta.update(
        cli_command=str(meta.get("command", "")).replace("python -m qmlx.train.cli", "qmlx train"),
        name=name,
        model=type(shipped).__name__,
        model_config=dict(shipped.config),
        test_mae_kcal_mol=float(np.mean(np.abs(err))),
        test_rmse_kcal_mol=float(np.sqrt(np.mean(err**2))),
        n_parameters=int(sum(p.numel() for p in shipped.parameters())),
    )
    save_network(shipped, dest, metadata=meta)
    meta["file_bytes"] = dest.stat().st_size
    write_text_atomic(models_dir / f"{name}.json", json.dumps(meta, indent=2) + "\n")
    return meta
