"""What a training run learns from and how: the split options (`SplitSpec`) and the training
settings (`TrainConfig`), and the split a saved model records (`recorded_split`).

Both are plain data: a run stores ``SplitSpec``'s outcome as `qmlx.data.splits.Split.record` and
``TrainConfig`` as ``train_config`` in its metadata, so that it can be resumed and checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qmlx.data.molecules import Molecules
from qmlx.data.splits import Split, split, split_from_record
from qmlx.errors import ConfigError


@dataclass(frozen=True)
class SplitSpec:
    """How to split a data set into training, validation and test molecules (`qmlx.data.splits`).

    method : ``"auto"`` (official folds where the data set has them, else random), ``"official"``,
        ``"random"`` or ``"none"`` (no test set).
    fold : the test fold (default 0); ``None`` for a hold-out split (``n_test``) or ``"none"``.
    n_folds : folds of a random K-fold split.
    n_train : training molecules to keep (default: all that remain).
    n_val : validation molecules carved from the training part (default 10 %, at most 1,000).
    n_test : a random hold-out test set of this size instead of K-fold (QM9: 10,000).
    seed : seed of the split; ``None`` takes the run's training seed (`TrainConfig.seed`), so
        that ``--seed S`` seeds both.
    """

    method: str = "auto"
    fold: int | None = None
    n_folds: int = 5
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int | None = None

    def split(self, mols: Molecules, default_seed: int = 0) -> Split:
        """The `Split` of ``mols`` these options describe (``default_seed`` where ``seed`` is None).

        Raises `ConfigError` naming the data set for every impossible request.
        """
        return split(
            mols, self.method, self.fold, self.n_folds, self.seed if self.seed is not None else default_seed,
            self.n_train, self.n_val, self.n_test,
        )  # fmt: skip


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


@dataclass
class TrainConfig:
    """Hyperparameters of a training run (energies in kcal/mol).

    epochs : maximum number of epochs.
    batch_size : molecules per gradient step.
    lr, lr_factor, lr_patience, min_lr : Adam learning rate. With ``schedule="plateau"`` it is
        multiplied by ``lr_factor`` when the validation MAE has not improved for ``lr_patience``
        epochs, down to ``min_lr``.
    schedule : ``"plateau"`` (above) or ``"cosine"``: the learning rate follows half a cosine
        from ``lr`` at the first epoch to ``min_lr`` after ``epochs`` epochs, whatever the
        validation MAE does (a schedule for a fixed budget; a resumed run keeps it).
    weight_decay : decoupled weight decay per step (AdamW, Loshchilov & Hutter, ICLR 2019): every
        step multiplies the weights by ``1 - lr * weight_decay`` besides the Adam update; 0 is
        plain Adam.
    loss : ``"mse"`` (mean squared error of the molecules' energies, the default) or ``"mae"``
        (mean absolute error: weighs the many small errors more and the few large ones less; see
        docs/networks.md for its effect on QM7).
    early_stop_patience : stop after this many epochs without a better validation MAE.
    ema_decay : decay of the exponential moving average of the weights, or ``None`` for no EMA;
        with EMA, validation and the saved best model use the averaged weights.
    seed : seed of initialization, splits and batch order.
    max_minutes : wall-clock budget; the run stops after the epoch that exceeds it.
    threads : torch CPU threads.
    eval_batch_size : molecules per batch for validation and testing.
    device : ``cpu``, ``cuda`` or ``cuda:N`` (see `qmlx.nn.batch.resolve_device`).
    precision : ``"32"`` (float32) or ``"bf16"`` (bfloat16 autocast in the forward pass).
    compile : run the training step's forward and backward through ``torch.compile`` (inductor,
        dynamic shapes), which fuses the elementwise pair operations: the same model and the same
        numbers to float32 rounding, faster steps after a one-off compilation of about a minute.
        Needs a C++ compiler on CPU (Triton on CUDA). Validation and testing stay eager.
    tables : let training steps read the distance factors from a table built from the weights in
        every step (for batches with at least two pairs per grid point; see `qmlx.nn.models`);
        ``False`` computes them at every pair in every step.
    """

    epochs: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 25
    min_lr: float = 1e-5
    schedule: str = "plateau"
    weight_decay: float = 0.0
    loss: str = "mse"
    early_stop_patience: int = 100
    ema_decay: float | None = None
    seed: int = 0
    max_minutes: float | None = None
    threads: int = 1
    eval_batch_size: int = 512
    device: str = "cpu"
    precision: str = "32"
    compile: bool = False
    tables: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "lr_factor": 0 < self.lr_factor < 1, "lr_patience": self.lr_patience >= 0, "min_lr": self.min_lr >= 0,
            "early_stop_patience": self.early_stop_patience >= 1, "threads": self.threads >= 1,
            "ema_decay": self.ema_decay is None or 0 <= self.ema_decay < 1,
            "max_minutes": self.max_minutes is None or self.max_minutes >= 0,
            "eval_batch_size": self.eval_batch_size >= 1, "precision": self.precision in PRECISIONS,
            "schedule": self.schedule in SCHEDULES, "weight_decay": self.weight_decay >= 0,
            "loss": self.loss in LOSSES,
        }  # fmt: skip
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"invalid training settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )


PRECISIONS = ("32", "bf16")
SCHEDULES = ("plateau", "cosine")
LOSSES = ("mse", "mae")
