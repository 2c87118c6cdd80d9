"""A complete training run: data, split, model, reference fit, training, test evaluation.

Every run directory holds ``checkpoint.pt``, ``model.pt`` (best validation weights with metadata),
``log.csv``, ``result.json`` and ``test_predictions.npz``. The metadata says what the model
predicts (target, its description and unit), which data and split it was trained on
(`qmlx.data.splits.Split.record`), and its domain of applicability (`qmlx.data.domain.Domain`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from qmlx._io import safe_torch_load, write_text_atomic
from qmlx.data.domain import Domain
from qmlx.data.io import load_dataset
from qmlx.data.molecules import Molecules
from qmlx.data.splits import Split, split, split_from_record
from qmlx.errors import ConfigError
from qmlx.nn.batch import PairCache, resolve_device
from qmlx.nn.models import build_model
from qmlx.train.engine import BEST_NAME, CHECKPOINT_NAME, TrainConfig, Trainer, evaluate

ENERGY_UNIT = "kcal/mol"
#: training settings that may change when a run is resumed (everything else must match)
RESUMABLE_CHANGES = {
    "epochs", "max_minutes", "threads", "eval_batch_size", "device", "compile", "tables", "extra",
}  # fmt: skip


def choose_target(mols: Molecules, target: str | None) -> str:
    """``target``, or the data set's only target, or ``atomization_energy`` where present.

    Raises `ConfigError` naming the data set and its targets when there is no clear choice; only
    energy targets (a unit that converts to kcal/mol) can be trained on.
    """
    from qmlx.units import ENERGY_UNITS

    if target is None:
        if "atomization_energy" in mols.targets:
            target = "atomization_energy"
        elif len(mols.targets) == 1:
            target = next(iter(mols.targets))
        else:
            have = ", ".join(sorted(mols.targets)) or "none"
            raise ConfigError(f"{mols.name}: choose a target with --target (it has: {have})")
    if target not in mols.targets:
        have = ", ".join(sorted(mols.targets)) or "none"
        raise ConfigError(f"{mols.name} has no target {target!r} (it has: {have})")
    if mols.units[target] not in ENERGY_UNITS:
        raise ConfigError(
            f"{mols.name}: target {target!r} is in {mols.units[target]!r}, not an energy unit "
            f"({', '.join(ENERGY_UNITS)})"
        )
    return target


def describe_target(mols: Molecules, target: str) -> str:
    """What the numbers are, e.g. ``PBE0 atomization energy`` (falls back to the target name)."""
    return (getattr(mols, "descriptions", None) or {}).get(target) or target.replace("_", " ")


def data_label(data: str | os.PathLike | Molecules) -> str:
    """How a data set is named in metadata: ``qm7``/``qm9``, a file path, or the set's name."""
    return data.name if isinstance(data, Molecules) else str(data)


def _compare(old: dict, new: dict, keys, prefix: str = "") -> list[str]:
    diffs = []
    for key in keys:
        if key in old and key in new and old[key] != new[key]:
            diffs.append(f"{prefix}{key} {old[key]!r} -> {new[key]!r}")
    return diffs


def check_resume(checkpoint: Path, metadata: dict, model_name: str, model_config: dict) -> None:
    """Refuse to resume ``checkpoint`` with different data, target, split or settings.

    Raises `ConfigError` listing every difference (e.g. ``split.fold 0 -> 3``); only the
    `RESUMABLE_CHANGES` settings (epochs, time budget, threads) may differ; under the cosine
    schedule the number of epochs is part of the schedule and may not.
    """
    if not checkpoint.exists():
        raise ConfigError(f"{checkpoint}: no checkpoint to resume; leave out --resume to start a new run")
    ck = safe_torch_load(checkpoint, "checkpoint")
    old = ck.get("metadata") or {}
    diffs = _compare(old, metadata, ["data", "dataset", "target"])
    if "split" in old:
        diffs += _compare(old["split"], metadata["split"], list(metadata["split"]), "split.")
    else:  # runs saved before splits were recorded
        diffs += _compare(old, metadata, ["fold", "seed", "n_train", "n_val", "n_test"])
    if ck.get("model_name") != model_name:
        diffs.append(f"model {ck.get('model_name')} -> {model_name}")
    diffs += _compare(dict(ck.get("model_config") or {}), model_config, list(model_config), "model.")
    old_cfg, new_cfg = dict(ck.get("config") or {}), metadata.get("train_config", {})
    free = RESUMABLE_CHANGES - ({"epochs"} if new_cfg.get("schedule") == "cosine" else set())
    diffs += _compare(old_cfg, new_cfg, [k for k in new_cfg if k not in free], "")
    if diffs:
        raise ConfigError(
            f"{checkpoint}: cannot resume, the settings differ from the checkpoint's: {'; '.join(diffs)}"
        )


def train_network(
    model_name: str,
    data: str | os.PathLike | Molecules = "qm7",
    target: str | None = None,
    split_method: str = "auto",
    fold: int | None = None,
    n_folds: int = 5,
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
    split_seed: int | None = None,
) -> dict:
    """Train ``model_name`` (schnet or dtnn) on ``data`` and return a summary (energies kcal/mol).

    ``data`` is ``qm7``, ``qm9``, a qmlx ``.h5`` store, any ASE-readable file, or `Molecules`.
    ``target`` defaults to ``atomization_energy`` or the only target; it is converted to kcal/mol,
    and total energies are fine (the output head fits per-element reference energies on the
    training part). The split comes from `qmlx.data.splits.split` (official folds where the data
    set has them, else seeded random K-fold; ``"none"``: no test set).

    Writes ``checkpoint.pt``, ``model.pt``, ``log.csv``, ``result.json`` and
    ``test_predictions.npz`` into ``out`` (default ``runs/<data>-<model>-fold<K>``). With
    ``resume`` the checkpoint must exist and match the data, target, split and settings.
    ``split_seed`` seeds the split when it should differ from ``config.seed`` (ensemble members
    share one split and differ in initialization and batch order).

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the run is distributed data
    parallel: gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``); rank 0 alone writes
    files and evaluates the test set, and the other ranks return an empty dict.
    """
    from qmlx import __version__

    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    started_group = _init_distributed(device)
    try:
        return _train(
            model_name, data, target, split_method, fold, n_folds, n_train, n_val, n_test, out, resume,
            config, model_config, progress, command, reset_lr, device, __version__,
            config.seed if split_seed is None else split_seed,
        )  # fmt: skip
    finally:
        if started_group:
            torch.distributed.destroy_process_group()


def _init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (environment variables); ``True`` if it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def _train(
    model_name, data, target, split_method, fold, n_folds, n_train, n_val, n_test, out, resume, config,
    model_config, progress, command, reset_lr, device, version, split_seed,
) -> dict:  # fmt: skip
    """`train_network` after the device and process group are set up."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    mols = data if isinstance(data, Molecules) else load_dataset(data)
    target = choose_target(mols, target)
    sp = split(mols, split_method, fold, n_folds, split_seed, n_train, n_val, n_test)
    if len(sp.val) == 0:
        raise ConfigError("networks need a validation set for early stopping; --n-val must be at least 1")
    model_config = dict(model_config or {})
    torch.manual_seed(config.seed)
    model = build_model(model_name, **model_config)
    label = data_label(data)
    stem = Path(label).stem if label not in ("qm7", "qm9") else label
    out = Path(out or f"runs/{stem}-{model_name.lower()}-fold{sp.fold if sp.fold is not None else 0}")
    train_m = mols.subset(sp.train)
    metadata = {
        "data": label,
        "dataset": mols.name,
        "model": type(model).__name__,
        "target": target,
        "target_description": describe_target(mols, target),
        "energy_unit": ENERGY_UNIT,
        "length_unit": "Angstrom",
        "split": sp.record,
        "fold": sp.fold,
        "n_train": int(len(sp.train)),
        "n_val": int(len(sp.val)),
        "n_test": int(len(sp.test)),
        "seed": config.seed,
        "domain": Domain.from_molecules(train_m).to_dict(),
        "command": command or " ".join(sys.argv),
        "qmlx_version": version,
        "processes": world,
        "torch_version": str(torch.__version__),
        "train_config": {k: v for k, v in asdict(config).items() if k != "extra"},
    }
    if resume:
        check_resume(out / CHECKPOINT_NAME, metadata, type(model).__name__, dict(model.config))
    model.fit_reference(train_m.Z, train_m.n_atoms, train_m.target(target, ENERGY_UNIT))
    model.to(device)
    train_cache, val_cache = (
        _cache(mols, idx, model.cutoff, target).to(device) for idx in (sp.train, sp.val)
    )
    trainer = Trainer(model, train_cache, val_cache, config, out, metadata=metadata, progress=progress)
    trainer.fit(resume=resume, reset_lr=reset_lr)
    if rank != 0:
        return {}
    trainer.load_best()
    metadata = {**metadata, **trainer.metadata}  # the trainer keeps the original command on resume
    metadata.update(
        epochs_run=trainer.epoch, best_epoch=trainer.best_epoch, val_mae_kcal_mol=trainer.best_val,
        stop_reason=trainer.stop_reason, train_minutes=round(trainer.elapsed / 60.0, 2),
    )  # fmt: skip
    metrics = {"test_mae_kcal_mol": None, "test_rmse_kcal_mol": None}
    if len(sp.test):
        pred, ref = evaluate(
            model, _cache(mols, sp.test, model.cutoff, target).to(device), config.eval_batch_size
        )
        metrics = test_metrics(pred, ref)
        np.savez(out / "test_predictions.npz", index=sp.test, pred=pred, ref=ref)
    metadata.update(metrics)
    trainer.metadata = metadata
    trainer.save_best()
    summary = {k: v for k, v in metadata.items() if k != "domain"} | {"out": str(out)}
    write_result(out / "result.json", summary)
    return summary


def _cache(mols: Molecules, idx: np.ndarray, cutoff: float, target: str) -> PairCache:
    sub = mols.subset(idx)
    if sub.units.get(target) != ENERGY_UNIT:  # PairCache carries the target as it is stored
        sub.targets[target] = sub.target(target, ENERGY_UNIT)
        sub.units[target] = ENERGY_UNIT
    return PairCache(sub, cutoff, target)


def train_ensemble(
    n_members: int,
    model_name: str,
    data: str | os.PathLike | Molecules = "qm7",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    config: TrainConfig | None = None,
    **kwargs,
) -> dict:
    """Train ``n_members`` networks on one split (seeded by ``config.seed``) with initialization and
    batch-order seeds ``config.seed + k``, each in ``out/member-k/`` (resumable), and save them as
    one ensemble file ``out/model.pt`` (`qmlx.nn.models.Ensemble`).

    The reported uncertainty is s·σ, the members' spread σ times one factor s fitted on the
    validation molecules (`uncertainty_calibration`'s ``scale_for_1sigma``; stored as
    ``uncertainty_scale``, 1 without validation molecules). The summary holds the ensemble's test
    MAE/RMSE (mean prediction), each member's test MAE, and the calibration on the test set of s·σ
    (``uncertainty``) and of the raw σ (``uncertainty_raw``).
    ``kwargs`` go to `train_network` (target, split, sizes, model_config, progress, command).
    """
    from dataclasses import replace

    from qmlx.nn.io import load_network, predict_ensemble, save_network
    from qmlx.nn.models import Ensemble

    if n_members < 2:
        raise ConfigError(f"--ensemble needs at least 2 members, got {n_members}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("ensembles are trained one member at a time; launch them without torchrun")
    config = config or TrainConfig()
    mols = data if isinstance(data, Molecules) else load_dataset(data)
    label = data_label(data)
    out = Path(
        out or f"runs/{Path(label).stem if label not in ('qm7', 'qm9') else label}-{model_name}-ensemble"
    )
    summaries = []
    for k in range(n_members):
        member_out = out / f"member-{k}"
        if resume and (member_out / "result.json").exists():  # finished in an earlier call
            summaries.append(json.loads((member_out / "result.json").read_text()))
            continue
        member_resume = resume and (member_out / CHECKPOINT_NAME).exists()
        summaries.append(
            train_network(
                model_name,
                mols,
                out=member_out,
                resume=member_resume,
                config=replace(config, seed=config.seed + k),
                split_seed=config.seed,
                **kwargs,
            )  # fmt: skip
        )
    members = [load_network(out / f"member-{k}" / BEST_NAME) for k in range(n_members)]
    ensemble = Ensemble(members)
    meta = {k: v for k, v in members[0].metadata.items() if k not in MEMBER_KEYS}
    meta.update(
        data=label, members=n_members, member_seeds=[config.seed + k for k in range(n_members)],
        member_test_mae_kcal_mol=[s.get("test_mae_kcal_mol") for s in summaries],
    )  # fmt: skip
    ensemble.metadata = meta
    target = meta["target"]
    sp = recorded_split(mols, meta)
    if len(sp.val):  # the members' validation molecules (seen only for early stopping)
        val = mols.subset(sp.val)
        mean, std, _ = predict_ensemble(ensemble, val)
        scale = uncertainty_calibration(mean - val.target(target, ENERGY_UNIT), std)["scale_for_1sigma"]
        meta.update(uncertainty_scale=scale, uncertainty_scale_n_val=len(sp.val))
    if len(sp.test):
        test = mols.subset(sp.test)
        mean, std, _ = predict_ensemble(ensemble, test)
        ref = test.target(target, ENERGY_UNIT)
        meta.update(test_metrics(mean, ref))
        meta["uncertainty"] = uncertainty_calibration(mean - ref, std)
        meta["uncertainty_raw"] = uncertainty_calibration(mean - ref, std / ensemble.uncertainty_scale)
        np.savez(out / "test_predictions.npz", index=sp.test, pred=mean, std=std, ref=ref)
    save_network(ensemble, out / BEST_NAME, metadata=meta)
    summary = {k: v for k, v in meta.items() if k not in ("train_config", "domain")} | {"out": str(out)}
    write_result(out / "result.json", summary)
    return summary


#: metadata of one member that does not describe the ensemble
MEMBER_KEYS = {
    "seed", "test_mae_kcal_mol", "test_rmse_kcal_mol", "val_mae_kcal_mol", "epochs_run", "best_epoch",
    "stop_reason", "train_minutes", "resume_commands", "lr_resets",
}  # fmt: skip


def uncertainty_calibration(err: np.ndarray, std: np.ndarray) -> dict:
    """How well a predicted spread ``std`` (n,) tracks the actual errors ``err`` (n,), kcal/mol.

    ``spearman``: rank correlation of ``|err|`` with ``std``; ``coverage_1sigma`` and
    ``coverage_2sigma``: fractions with ``|err| <= k std`` (0.683 and 0.954 for calibrated
    Gaussian errors); ``scale_for_1sigma``: the factor that would make the ±1σ coverage 0.683.
    """
    from scipy.stats import spearmanr

    err, std = np.abs(np.asarray(err, dtype=np.float64)), np.asarray(std, dtype=np.float64)
    ratio = err / np.maximum(std, 1e-12)
    return {
        "spearman": float(spearmanr(err, std).statistic),
        "coverage_1sigma": float(np.mean(err <= std)),
        "coverage_2sigma": float(np.mean(err <= 2 * std)),
        "scale_for_1sigma": float(np.quantile(ratio, 0.6827)),
        "mean_std_kcal_mol": float(std.mean()),
    }


def test_metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    """``test_mae_kcal_mol`` and ``test_rmse_kcal_mol`` of predictions against references."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    return {
        "test_mae_kcal_mol": float(np.mean(np.abs(err))),
        "test_rmse_kcal_mol": float(np.sqrt(np.mean(err**2))),
    }


def write_result(path: str | os.PathLike, summary: dict) -> Path:
    """Write a run's ``result.json`` atomically; NaN becomes ``null`` (valid JSON)."""
    from qmlx._io import json_dumps

    return write_text_atomic(path, json_dumps(summary) + "\n")


def model_file(run_dir: str | os.PathLike) -> Path:
    """The best-weights network file of a run directory."""
    return Path(run_dir) / BEST_NAME


def recorded_split(mols: Molecules, meta: dict) -> Split:
    """The split a model's metadata records (``split``; older files: fold, seed and sizes)."""
    if "split" in meta:
        return split_from_record(mols, meta["split"])
    method = "official" if mols.folds else "random"
    n_test = None if mols.folds else meta.get("n_test")
    fold = meta.get("fold") if mols.folds else None
    return split(
        mols, method, fold, seed=meta["seed"], n_train=meta.get("n_train"), n_val=meta["n_val"], n_test=n_test
    )


def export_shipped(
    run_dir: str | os.PathLike, name: str, models_dir: str | os.PathLike | None = None
) -> dict:
    """Copy a run's best weights into ``qmlx/pretrained/NAME.pt`` with ``NAME.json`` metadata.

    The test MAE is measured again on the run's test set (QM7: the fold's official test part)
    from the exported file itself, so the metadata always matches the shipped weights.
    """
    from qmlx.pretrained import MODELS_DIR
    from qmlx.nn.io import load_network, predict_network, save_network

    run_dir = Path(run_dir)
    models_dir = Path(models_dir or MODELS_DIR)
    model = load_network(model_file(run_dir))
    meta = dict(model.metadata)
    dest = models_dir / f"{name}.pt"
    save_network(model, dest, metadata=meta)
    shipped = load_network(dest)
    mols = load_dataset(meta.get("data") or meta["dataset"])
    target = meta.get("target", "atomization_energy")
    sp = recorded_split(mols, meta)
    test = mols.subset(sp.test)
    pred, _ = predict_network(shipped, test)
    err = pred - test.target(target, ENERGY_UNIT)
    meta.setdefault("target_description", describe_target(mols, target))
    meta.setdefault("domain", Domain.from_molecules(mols.subset(sp.train)).to_dict())
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
    write_result(models_dir / f"{name}.json", meta)
    return meta
