"""Training engine for the interaction networks.

Adam, learning-rate decay on a validation plateau, early stopping, optional EMA of the weights,
a per-epoch CSV log and atomic, resumable checkpoints. Everything random (initialization, the
validation split, batch order) derives from one seed, and the batch-order generator is saved in
the checkpoint, so a run that is killed and resumed ends with the same weights as one that was
not (on the same machine and thread count).

Training steps run the model's tabulated path (``model(batch, tabulated=True)``, unless
``config.tables`` is off): each step computes the interactions' distance factors on a grid of
distances and interpolates them to the pairs, which for batches of many pairs is faster than
computing them per pair (see `qmlx.nn.models`); small batches take the exact path. Validation and
testing read the fine inference tables that ``qmlx predict`` reads.

Devices and precision: the model and the pair caches live on ``config.device`` (moved once);
``config.precision="bf16"`` runs the forward pass under ``torch.autocast`` in bfloat16 (weights,
optimizer and loss stay float32).

Distributed data parallel (``torch.distributed``, launched by ``torchrun``): when a process group
is initialized, every rank draws the same seeded permutation each epoch and takes its share of
each global batch of ``batch_size`` molecules (a distributed sampler without padding); the model
is wrapped in ``DistributedDataParallel`` and each rank's loss is scaled so that the averaged
gradient equals the single-process gradient of the same global batch. Rank 0 alone validates,
writes logs, checkpoints and models; it broadcasts the validation MAE and the time-budget stop, so
that every rank takes the same learning-rate and early-stopping decisions.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from qmlx._io import atomic_torch_save, safe_torch_load, write_text_atomic
from qmlx.errors import ConfigError, DataFormatError, TrainingError
from qmlx.metrics import metrics
from qmlx.nn.batch import PairCache
from qmlx.nn.io import CHECKPOINT_FORMAT, network_record, plain, torch_state
from qmlx.nn.models import InteractionNetwork, NetworkOutput
from qmlx.train.config import TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "model.pt"
LOG_NAME = "log.csv"
#: the folder of TensorBoard event files in a run directory (written when TensorBoard is installed)
TENSORBOARD_DIR = "tensorboard"


def _distributed() -> tuple[int, int]:
    """``(rank, world size)`` of the initialized process group, or ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate(
    model: InteractionNetwork, cache: PairCache, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and reference energies (kcal/mol) of every molecule in ``cache``, in order."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(cache), batch_size):
        b = cache.batch(np.arange(start, min(start + batch_size, len(cache))))
        preds.append(model(b, tabulated=True).energy.detach())
    model.train(was_training)
    ref = cache.energy.double().cpu().numpy() if cache.energy is not None else np.full(len(cache), np.nan)
    return (torch.cat(preds).double().cpu().numpy() if preds else np.zeros(0)), ref


def tensorboard_writer(out_dir: Path, epoch: int = 0):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``out_dir/tensorboard`` when TensorBoard is
    installed (``pip install qmlx[tensorboard]``), else None. Resuming at ``epoch`` drops events
    logged after it by an interrupted run (``purge_step``), so the curves match ``log.csv``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(Path(out_dir) / TENSORBOARD_DIR), purge_step=epoch + 1 if epoch else None)


class Trainer:
    """Train ``model`` on ``train`` with early stopping on ``val``; files go to ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (resumable state, rewritten atomically every epoch),
    ``model.pt`` (the best-validation weights as a network file) and ``log.csv`` (one row per
    epoch), and with TensorBoard installed the same curves as event files in ``tensorboard/``.
    """

    def __init__(
        self,
        model: InteractionNetwork,
        train: PairCache,
        val: PairCache,
        config: TrainConfig,
        out_dir: str | os.PathLike,
        metadata: dict | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.train_cache = train
        self.val_cache = val
        self.config = config
        self.out_dir = Path(out_dir)
        self.metadata = dict(metadata or {})
        self.progress = progress
        self.rank, self.world = _distributed()
        self.net: torch.nn.Module = model  # what the training step calls: the model, or its DDP wrapper
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            self.net = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if config.compile:
            self.net = torch.compile(self.net, dynamic=True)
        # fused: one kernel for all parameters instead of a Python loop over them (on one CPU
        # thread, 0.25 instead of 1.6 ms per step for the 68k parameters of the shipped SchNets)
        if config.weight_decay > 0:
            self.optimizer = torch.optim.AdamW(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
            )
        else:
            self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
        if config.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=config.epochs, eta_min=config.min_lr
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience,
                min_lr=config.min_lr,
            )  # fmt: skip
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.ema: dict[str, torch.Tensor] | None = None
        if config.ema_decay is not None:
            self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._ema_step = torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay)
        self.epoch = 0
        self.best_val = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.stop_reason = ""

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_name": type(self.model).__name__,
            "model_config": dict(self.model.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "elapsed": self.elapsed,
            "history": self.history,
            "config": asdict(self.config),
            "metadata": plain(self.metadata),
        }

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, scheduler, EMA, RNG states, epoch and history from a checkpoint."""
        ck = safe_torch_load(path, "checkpoint")
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise DataFormatError(f"{path}: not a qmlx training checkpoint")
        if ck.get("model_name") != type(self.model).__name__:
            raise DataFormatError(
                f"{path}: checkpoint of a {ck.get('model_name')}, not a {type(self.model).__name__}"
            )
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            device = next(self.model.parameters()).device
            self.ema = None if ck["ema"] is None else {k: v.to(device) for k, v in ck["ema"].items()}
            self.generator.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            self.epoch = int(ck["epoch"])
            self.best_val = float(ck["best_val"])
            self.best_epoch = int(ck["best_epoch"])
            self.best_state = ck["best_state"]
            self.bad_epochs = int(ck["bad_epochs"])
            self.elapsed = float(ck["elapsed"])
            self.history = list(ck["history"])
            old = ck.get("metadata") or {}
            if "lr_resets" in old:
                self.metadata["lr_resets"] = old["lr_resets"]
            if old.get("command") and old["command"] != self.metadata.get("command"):
                resumed = list(old.get("resume_commands", []))
                if self.metadata.get("command"):
                    resumed.append(self.metadata["command"])
                self.metadata["command"], self.metadata["resume_commands"] = old["command"], resumed
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise DataFormatError(f"{path}: checkpoint does not match this model ({err})") from None

    def save_checkpoint(self) -> None:
        if self.rank == 0:
            atomic_torch_save(self.state(), self.out_dir / CHECKPOINT_NAME)

    def write_log(self) -> None:
        if not self.history or self.rank != 0:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.history[0]))
        writer.writeheader()
        writer.writerows(self.history)
        write_text_atomic(self.out_dir / LOG_NAME, buf.getvalue())

    def save_best(self) -> None:
        if self.rank != 0:
            return
        meta = dict(
            self.metadata, best_epoch=self.best_epoch, val_mae_kcal_mol=self.best_val, epochs_run=self.epoch
        )
        record = network_record(self.model, self.best_state, meta)
        novelty = getattr(self.model, "novelty_state", None)
        if novelty is not None:
            record["novelty"] = torch_state(novelty)
        atomic_torch_save(record, self.out_dir / BEST_NAME)

    # ---------------------------------------------------------------- training
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        current = self.model.state_dict()
        floats = [k for k, v in current.items() if v.dtype.is_floating_point]
        # ema <- decay * ema + (1 - decay) * weights, for all floating tensors in one foreach call
        self._ema_step([self.ema[k] for k in floats], [current[k] for k in floats], None)
        with torch.no_grad():
            for k, v in current.items():
                if not v.dtype.is_floating_point:
                    self.ema[k].copy_(v)

    def _eval_state(self) -> dict[str, torch.Tensor]:
        return self.ema if self.ema is not None else self.model.state_dict()

    def _synchronized(self, val_mae: float, time_up: bool) -> tuple[float, bool]:
        """Rank 0's validation MAE and time-budget decision, sent to every rank."""
        if self.world == 1:
            return val_mae, time_up
        device = next(self.model.parameters()).device
        msg = torch.tensor([val_mae, float(time_up)], dtype=torch.float64, device=device)
        torch.distributed.broadcast(msg, src=0)
        return float(msg[0]), bool(msg[1])

    def validate(self) -> float:
        """Validation MAE (kcal/mol) of the current (or EMA) weights."""
        if self.ema is None:
            pred, ref = evaluate(self.model, self.val_cache, self.config.eval_batch_size)
        else:
            backup = copy.deepcopy(self.model.state_dict())
            self.model.load_state_dict(self.ema)
            pred, ref = evaluate(self.model, self.val_cache, self.config.eval_batch_size)
            self.model.load_state_dict(backup)
        return metrics(pred, ref)["mae"]

    def _forward(self, batch) -> NetworkOutput:
        """The training forward pass; a failing ``torch.compile`` (no compiler, say) is one line."""
        try:
            return self.net(batch, tabulated=self.config.tables)
        except Exception as err:  # inductor raises several types; all mean "cannot compile here"
            module = type(err).__module__
            if not self.config.compile or ("dynamo" not in module and "inductor" not in module):
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrainingError(f"--compile failed ({reason}); train without --compile") from None

    def train_epoch(self) -> float:
        """One pass over the training set in a seeded random order; returns the train MAE.

        Under DDP each rank takes its share of every global batch (see the module docstring); the
        training MAE is summed over ranks at the end of the epoch.
        """
        self.net.train()
        n = len(self.train_cache)
        perm = torch.randperm(n, generator=self.generator).numpy()
        bs = self.config.batch_size
        device = self.train_cache.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")
        abs_err = torch.zeros((), device=device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            if self.world > 1 and len(idx) >= self.world:
                mine, scale = np.array_split(idx, self.world)[self.rank], self.world / len(idx)
            else:  # one process, or a last batch smaller than the number of ranks: all ranks take it
                mine, scale = idx, 1.0 / len(idx)
            b = self.train_cache.batch(mine)
            with autocast:
                out = self._forward(b)
            diff = out.energy.float() - b.energy
            loss = (diff.abs() if self.config.loss == "mae" else diff * diff).sum() * scale
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._update_ema()
            if self.world == 1 or len(idx) >= self.world or self.rank == 0:
                abs_err += diff.detach().abs().sum()
        if self.world > 1:
            torch.distributed.all_reduce(abs_err)
        return float(abs_err) / n

    def fit(
        self, resume: bool = False, stop_after: int | None = None, reset_lr: float | None = None
    ) -> list[dict]:
        """Train until ``epochs``, early stopping or the time budget; returns the history.

        ``resume`` continues from ``out_dir/checkpoint.pt`` if it exists. ``stop_after`` ends
        this call after that many epochs in total (to simulate an interruption in tests).
        ``reset_lr`` sets the learning rate after resuming and restarts the plateau counter (an
        explicit second phase, recorded in the metadata; without it a resumed run continues
        exactly as an uninterrupted one).
        """
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ck = self.out_dir / CHECKPOINT_NAME
        if resume and ck.exists():
            self.load_state(ck)
            if reset_lr is not None and cfg.schedule == "cosine":
                raise ConfigError("--reset-lr applies to the plateau schedule, not to --schedule cosine")
            if reset_lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = float(reset_lr)
                self.scheduler.num_bad_epochs = 0
                self.scheduler._last_lr = [float(reset_lr)] * len(self.optimizer.param_groups)
                resets = list(self.metadata.get("lr_resets", []))
                self.metadata["lr_resets"] = resets + [{"epoch": self.epoch, "lr": float(reset_lr)}]
        start_time = time.perf_counter() - self.elapsed
        events = tensorboard_writer(self.out_dir, self.epoch) if self.rank == 0 else None
        bar = tqdm(
            total=cfg.epochs, initial=self.epoch, desc=type(self.model).__name__,
            disable=not self.progress or self.rank != 0,
            mininterval=1.0 if os.isatty(2) else 60.0, unit="epoch",
        )  # fmt: skip
        try:
            while self.epoch < cfg.epochs:
                if stop_after is not None and self.epoch >= stop_after:
                    self.stop_reason = "interrupted"
                    break
                t0 = time.perf_counter()
                train_mae = self.train_epoch()
                val_mae = self.validate() if self.rank == 0 else math.nan
                elapsed = time.perf_counter() - start_time
                time_up = cfg.max_minutes is not None and elapsed > 60.0 * cfg.max_minutes
                val_mae, time_up = self._synchronized(val_mae, time_up)
                if cfg.schedule == "cosine":
                    self.scheduler.step()
                else:
                    self.scheduler.step(val_mae)
                self.epoch += 1
                if val_mae < self.best_val:
                    self.best_val, self.best_epoch, self.bad_epochs = val_mae, self.epoch, 0
                    self.best_state = {k: v.detach().clone() for k, v in self._eval_state().items()}
                else:
                    self.bad_epochs += 1
                self.elapsed = time.perf_counter() - start_time
                self.history.append(
                    {
                        "epoch": self.epoch,
                        "train_mae": round(train_mae, 6),
                        "val_mae": round(val_mae, 6),
                        "best_val_mae": round(self.best_val, 6),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "epoch_s": round(time.perf_counter() - t0, 3),
                        "elapsed_s": round(self.elapsed, 1),
                    }
                )
                self.save_checkpoint()
                if self.best_epoch == self.epoch:
                    self.save_best()
                self.write_log()
                if events is not None:
                    for key in ("train_mae", "val_mae", "best_val_mae", "lr", "epoch_s"):
                        events.add_scalar(key, self.history[-1][key], self.epoch)
                    events.flush()
                bar.update(1)
                bar.set_postfix(
                    train_mae=f"{train_mae:.3f}", val_mae=f"{val_mae:.3f}", best=f"{self.best_val:.3f}"
                )
                if self.bad_epochs >= cfg.early_stop_patience:
                    self.stop_reason = "early stopping"
                    break
                if (
                    cfg.schedule == "plateau"
                    and self.optimizer.param_groups[0]["lr"] <= cfg.min_lr * 1.0001
                    and self.bad_epochs >= cfg.lr_patience
                ):
                    self.stop_reason = "learning rate at its minimum"
                    break
                if time_up:
                    self.stop_reason = "time budget"
                    break
            else:
                self.stop_reason = "epochs"
        finally:
            bar.close()
            if events is not None:
                events.close()
        return self.history

    def load_best(self) -> None:
        """Put the best-validation weights into the model."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
