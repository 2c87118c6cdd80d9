"""One training run of a network: data, split, model, reference fit, training, test evaluation;
and the checks that a resumed run continues the same run.

Every run directory holds ``config.json`` (the resolved settings, which ``qmlx train ... --config``
reads back), ``checkpoint.pt``, ``model.pt`` (best validation weights with metadata), ``log.csv``,
``result.json`` and ``test_predictions.npz``. The metadata says what the model
predicts (target, its description and unit), which data and split it was trained on
(`qmlx.data.splits.Split.record`), and its domain of applicability (`qmlx.data.domain.Domain`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from qmlx._io import json_dumps, safe_torch_load, write_text_atomic
from qmlx.data.domain import Domain
from qmlx.data.io import load_dataset
from qmlx.data.molecules import Molecules
from qmlx.data.splits import Split
from qmlx.errors import ConfigError
from qmlx.metrics import metrics
from qmlx.nn.batch import PairCache, resolve_device
from qmlx.nn.models import build_model
from qmlx.train.config import SplitSpec, TrainConfig
from qmlx.train.engine import BEST_NAME, CHECKPOINT_NAME, LOG_NAME, TENSORBOARD_DIR, Trainer, evaluate

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


#: the resolved settings of a run, in its folder
CONFIG_NAME = "config.json"
#: what a run writes into its folder (``--overwrite`` deletes these, and ensemble members' folders)
RUN_FILES = (
    CONFIG_NAME,
    CHECKPOINT_NAME,
    BEST_NAME,
    LOG_NAME,
    TENSORBOARD_DIR,
    "result.json",
    "test_predictions.npz",
)


def check_new_run(out: str | os.PathLike | None, resume: bool, overwrite: bool = False) -> None:
    """Refuse to start a new run (``resume`` False) in a folder that holds one already (its
    ``checkpoint.pt`` or ``model.pt``, or an ensemble member's checkpoint), which it would
    overwrite; with ``overwrite``, delete that run's files instead (and nothing else in the folder)."""
    if out is None or resume:
        return
    out = Path(out)
    held = [p.name for p in (out / CHECKPOINT_NAME, out / BEST_NAME) if p.exists()]
    held += [f"{p.parent.name}/{p.name}" for p in sorted(out.glob(f"member-*/{CHECKPOINT_NAME}"))]
    if not held:
        return
    if not overwrite:
        raise ConfigError(
            f"{out}: already holds a run ({', '.join(held[:3])}); continue it with --resume, or start "
            "again with --overwrite (resume=True / overwrite=True), or give another --out"
        )
    import shutil

    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for member in out.glob("member-*"):
        if member.is_dir():
            shutil.rmtree(member, ignore_errors=True)


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
    model: str,
    data: str | os.PathLike | Molecules = "qm7",
    split: SplitSpec | None = None,
    config: TrainConfig | None = None,
    *,
    target: str | None = None,
    model_config: dict | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    reset_lr: float | None = None,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Train ``model`` (schnet or dtnn) on ``data`` and return a summary (energies kcal/mol).

    ``data`` is ``qm7``, ``qm9``, a qmlx ``.h5`` store, any ASE-readable file, or `Molecules`.
    ``split`` says how it is split (`SplitSpec`; default: official folds where the data set has
    them, else seeded random K-fold, seeded by ``config.seed`` unless ``split.seed`` is given);
    ``config`` how to train (`TrainConfig`). ``target`` defaults to ``atomization_energy`` or the
    only target; it is converted to kcal/mol, and total energies are fine (the output head fits
    per-element reference energies on the training part). ``model_config`` overrides the network's
    sizes (`qmlx.nn.models.build_model`).

    Writes ``checkpoint.pt``, ``model.pt``, ``log.csv``, ``result.json`` and
    ``test_predictions.npz`` into ``out`` (default ``runs/<data>-<model>-fold<K>``). With
    ``resume`` the checkpoint must exist and match the data, target, split and settings; a folder
    that holds a run already is refused unless resuming or ``overwrite`` (which deletes that run);
    ``reset_lr`` then starts a second phase at that learning rate (`Trainer.fit`). ``command`` is
    recorded in the metadata (default: this process's command line).

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the run is distributed data
    parallel: gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``); rank 0 alone writes
    files and evaluates the test set, and the other ranks return an empty dict.
    """
    from qmlx import __version__

    spec = split or SplitSpec()
    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    with _process_group(device):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        mols = data if isinstance(data, Molecules) else load_dataset(data)
        target = choose_target(mols, target)
        sp = spec.split(mols, default_seed=config.seed)
        if len(sp.val) == 0:
            raise ConfigError("networks need a validation set for early stopping; --n-val must be at least 1")
        torch.manual_seed(config.seed)
        net = build_model(model, **dict(model_config or {}))
        label = data_label(data)
        stem = Path(label).stem if label not in ("qm7", "qm9") else label
        out = Path(out or f"runs/{stem}-{model.lower()}-fold{sp.fold if sp.fold is not None else 0}")
        if rank == 0:
            check_new_run(
                out, resume, overwrite
            )  # the resolved settings, readable by ``qmlx train ... --config out/config.json``
            resolved = {
                "network": model.lower(), "data": label, "target": target, "split": asdict(spec),
                "model": dict(net.config), "train": {k: v for k, v in asdict(config).items() if k != "extra"},
            }  # fmt: skip
            write_text_atomic(out / CONFIG_NAME, json_dumps(resolved) + "\n")
        train_m = mols.subset(sp.train)
        metadata = {
            "data": label,
            "dataset": mols.name,
            "model": type(net).__name__,
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
            "qmlx_version": __version__,
            "processes": world,
            "torch_version": str(torch.__version__),
            "train_config": {k: v for k, v in asdict(config).items() if k != "extra"},
        }
        if resume:
            check_resume(out / CHECKPOINT_NAME, metadata, type(net).__name__, dict(net.config))
        net.fit_reference(train_m.Z, train_m.n_atoms, train_m.target(target, ENERGY_UNIT))
        net.to(device)
        train_cache, val_cache = (
            _cache(mols, idx, net.cutoff, target).to(device) for idx in (sp.train, sp.val)
        )
        trainer = Trainer(net, train_cache, val_cache, config, out, metadata=metadata, progress=progress)
        trainer.fit(resume=resume, reset_lr=reset_lr)
        if rank != 0:
            return {}
        return _finish(trainer, mols, sp, target, out)


@contextmanager
def _process_group(device: torch.device) -> Iterator[None]:
    """Inside: the process group ``torchrun`` describes (environment variables), joined here and
    left on exit; without ``torchrun`` (or with a group already joined) nothing happens."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _finish(trainer: Trainer, mols: Molecules, sp: Split, target: str, out: Path) -> dict:
    """Best weights, test errors, the novelty model of the training domain (`qmlx.novelty`, centres
    from the training molecules, calibrated on the validation molecules) and the run's files after
    training (rank 0); returns the summary."""
    from qmlx.novelty import fit_domain_model

    net = trainer.model
    test = sp.test
    trainer.load_best()
    net.novelty_state = fit_domain_model(mols, sp.train, sp.val).to_state()
    metadata = dict(trainer.metadata)  # the trainer keeps the original command on resume
    metadata.update(
        epochs_run=trainer.epoch, best_epoch=trainer.best_epoch, val_mae_kcal_mol=trainer.best_val,
        stop_reason=trainer.stop_reason, train_minutes=round(trainer.elapsed / 60.0, 2),
    )  # fmt: skip
    errors = {"test_mae_kcal_mol": None, "test_rmse_kcal_mol": None}
    if len(test):
        device = next(net.parameters()).device
        cache = _cache(mols, test, net.cutoff, target).to(device)
        pred, ref = evaluate(net, cache, trainer.config.eval_batch_size)
        errors = summary_metrics(pred, ref)
        np.savez(out / "test_predictions.npz", index=test, pred=pred, ref=ref)
    metadata.update(errors)
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


def summary_metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    """``test_mae_kcal_mol`` and ``test_rmse_kcal_mol`` of predictions (n,) against references (n,),
    both in kcal/mol: the test errors a run's ``result.json`` and a model's metadata hold."""
    m = metrics(pred, ref)
    return {"test_mae_kcal_mol": m["mae"], "test_rmse_kcal_mol": m["rmse"]}


def write_result(path: str | os.PathLike, summary: dict) -> Path:
    """Write a run's ``result.json`` atomically; NaN becomes ``null`` (valid JSON)."""
    from qmlx._io import json_dumps

    return write_text_atomic(path, json_dumps(summary) + "\n")
