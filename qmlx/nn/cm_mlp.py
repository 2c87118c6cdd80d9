"""Multilayer network on random Coulomb matrices (Montavon et al., NIPS 25, 2012).

The network sees one randomly sorted Coulomb matrix at a time: for every training step the rows
of each molecule's matrix are re-sorted by their norms plus Gaussian noise (sigma = 1, atomic
units), so the net learns an energy that is (approximately) invariant to the ordering. At test
time the prediction is the average over ``test_samples`` random matrices.

Input encoding. The lower triangle (``n_max (n_max + 1) / 2`` entries, atomic units) is either
expanded, as in Montavon et al., into a smooth binarization: every entry ``x`` becomes
``tanh((x - t) / step)`` for the thresholds ``t = 0, step, 2 step, ...`` up to that entry's
largest training value (``expansion_step``, default 1 atomic unit as in the paper, which gives
about 1,800 inputs on QM7), and the expanded vector is centred per input and divided by one overall
standard deviation. With ``expansion_step = 0`` the entries are only standardized; on QM7 that
is far worse (fold-0 validation MAE after 400 epochs: 5.4 kcal/mol against 3.2 with step 1).

Target normalization (``composition_baseline=True``, the default; not in the original paper):
a least-squares energy per element ("dressed atoms", fitted on the training molecules, a
function of the matrix diagonal) is subtracted, and the network learns the standardized rest.
The network then only has to learn the part of the energy that depends on the geometry.

Shapes: matrices (n, n_max, n_max) float; a batch of encoded inputs (B, n_in); energies (B,) in
kcal/mol.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from qmlx._io import atomic_torch_save
from qmlx.chem import element_counts
from qmlx.data.domain import Domain, DomainReport, check_domain, warn_if_flagged
from qmlx.data.molecules import Molecules
from qmlx.errors import DataFormatError, DomainError
from qmlx.novelty import fit_domain_model
from qmlx.represent import coulomb_matrices


@dataclass
class CMMLPConfig:
    """Hyperparameters of `CMMLP` and its training (`train_cm_mlp`)."""

    hidden: tuple[int, ...] = (400, 100)
    expansion_step: float = 1.0
    noise: float = 1.0
    epochs: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    lr_final: float = 1e-5
    weight_decay: float = 0.0
    loss: str = "mse"
    composition_baseline: bool = True
    test_samples: int = 10
    seed: int = 0
    time_limit_s: float | None = None
    history_every: int = 10
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class RandomCoulombSampler:
    """Draws randomly sorted Coulomb matrices (lower triangles) in torch.

    Parameters
    ----------
    matrices : (n, n_max, n_max) padded Coulomb matrices in atomic units.
    noise : standard deviation of the noise on the row norms (Montavon et al. 2012: 1).
    """

    def __init__(self, matrices: np.ndarray, noise: float = 1.0):
        self.M = torch.as_tensor(matrices, dtype=torch.float32)
        self.norms = self.M.norm(dim=-1)
        self.pad = self.norms == 0
        self.noise = float(noise)
        n_max = self.M.shape[-1]
        self.rows, self.cols = (torch.as_tensor(a) for a in np.tril_indices(n_max))

    def __len__(self) -> int:
        return len(self.M)

    def sample(self, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(len(index), n_max (n_max + 1) / 2) lower triangles of one random sorting per molecule."""
        M, norms, pad = self.M[index], self.norms[index], self.pad[index]
        noisy = norms + self.noise * torch.randn(norms.shape, generator=generator) if self.noise else norms
        order = torch.argsort(noisy.masked_fill(pad, -math.inf), dim=1, descending=True, stable=True)
        n = M.shape[-1]
        M = torch.gather(M, 1, order[:, :, None].expand(-1, -1, n))
        M = torch.gather(M, 2, order[:, None, :].expand(-1, n, -1))
        return M[:, self.rows, self.cols]


class InputEncoder(nn.Module):
    """Standardize, or expand with tanh thresholds (Montavon et al. 2012); (B, d) -> (B, n_out).

    ``samples`` (S, d) are training inputs (random lower triangles, atomic units) that set the
    thresholds and the normalization; see the module docstring for ``step``.
    """

    def __init__(self, samples: torch.Tensor, step: float = 0.0):
        super().__init__()
        samples = samples.float()
        self.step = float(step)
        if self.step > 0:
            top = samples.max(0).values.clamp_min(0.0)
            n_thr = (top / self.step).floor().long() + 1
            self.register_buffer("feature", torch.repeat_interleave(torch.arange(len(top)), n_thr))
            thresholds = torch.cat([torch.arange(int(n)) * self.step for n in n_thr])
            self.register_buffer("thresholds", thresholds.float())
            expanded = self.expand(samples)
            self.register_buffer("mean", expanded.mean(0))
            self.register_buffer("std", expanded.std().clamp_min(1e-6))  # one scale for all inputs
        else:
            self.register_buffer("mean", samples.mean(0))
            self.register_buffer("std", samples.std(0).clamp_min(1e-3))

    @classmethod
    def from_state(cls, step: float, state: dict) -> InputEncoder:
        """An encoder with the buffers of a saved state dict (keys ``encoder.*``), to load into."""
        enc = cls.__new__(cls)
        nn.Module.__init__(enc)
        enc.step = float(step)
        for name in ("feature", "thresholds", "mean", "std"):
            key = f"encoder.{name}"
            if key in state:
                enc.register_buffer(name, torch.empty_like(state[key]))
        return enc

    @property
    def n_out(self) -> int:
        return len(self.mean)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, n_thresholds) ``tanh((x_i - t) / step)``."""
        return torch.tanh((x[:, self.feature] - self.thresholds) / self.step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.expand(x) if self.step > 0 else x
        return (z - self.mean) / self.std


class CMMLP(nn.Module):
    """Encoder + fully connected layers (tanh) + linear output, predicting standardized energies.

    ``forward(x)`` takes (B, d) raw lower triangles (atomic units) and returns (B,) energies in
    kcal/mol (the target mean and scale are buffers).
    """

    def __init__(
        self,
        encoder: InputEncoder,
        hidden: tuple[int, ...],
        y_mean: float,
        y_std: float,
        elements: tuple[int, ...] = (),
        baseline: np.ndarray | None = None,
    ):
        super().__init__()
        self.elements = tuple(int(z) for z in elements)
        coef = np.zeros(len(self.elements)) if baseline is None else np.asarray(baseline, dtype=np.float64)
        self.register_buffer("baseline", torch.as_tensor(coef, dtype=torch.float32))
        self.encoder = encoder
        layers: list[nn.Module] = []
        n_in = encoder.n_out
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.Tanh()]
            n_in = h
        layers.append(nn.Linear(n_in, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) output before un-standardizing (what the loss sees)."""
        return self.net(self.encoder(x)).squeeze(-1)

    def forward(self, x: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) energies in kcal/mol; ``counts`` (B, n_elements) atoms per element for the baseline."""
        out = self.standardized(x) * self.y_std + self.y_mean
        if counts is not None and len(self.elements):
            out = out + counts @ self.baseline
        return out


class CMMLPRegressor:
    """A trained `CMMLP` with its sampler settings; predicts energies of `Molecules` in kcal/mol.

    ``metadata`` records the target, its description and unit, and the training domain
    (``metadata["domain"]``, see `qmlx.data.domain.Domain`), as every saved qmlx model does.
    """

    def __init__(self, model: CMMLP, n_max: int, config: CMMLPConfig, metadata: dict | None = None):
        self.model = model
        self.n_max = n_max
        self.config = config
        self.metadata = dict(metadata or {})
        self.novelty_state: dict | None = None  # the training domain's one-class model (`qmlx.novelty`)

    def check_domain(self, mols: Molecules) -> DomainReport:
        """Soft domain flags of ``mols``; raises `DomainError` for an element the composition baseline
        never saw, a molecule larger than the Coulomb matrices (``n_max`` atoms) and the other hard
        cases of `qmlx.data.domain.check_domain`."""
        domain = Domain.from_dict(self.metadata["domain"]) if "domain" in self.metadata else None
        report = check_domain(domain, mols, elements=list(self.model.elements) or None)
        if mols.max_atoms > self.n_max:
            i = int(np.argmax(mols.n_atoms > self.n_max))
            where = f"{mols.name}: molecule {i}" if len(mols) > 1 else mols.name
            raise DomainError(
                f"{where}: {int(mols.n_atoms[i])} atoms, but this network's Coulomb matrices hold at "
                f"most {self.n_max}"
            )
        return report

    @torch.no_grad()
    def energies(self, mols: Molecules, samples: int | None = None, seed: int = 12345) -> np.ndarray:
        """(n,) energies in kcal/mol, averaged over ``samples`` random Coulomb matrices per molecule
        (default ``config.test_samples``), with no domain check."""
        samples = samples or self.config.test_samples
        sampler = RandomCoulombSampler(coulomb_matrices(mols, self.n_max), self.config.noise)
        counts = torch.as_tensor(
            element_counts(mols.Z, mols.n_atoms, self.model.elements), dtype=torch.float32
        )
        return predict_average(self.model, sampler, torch.arange(len(sampler)), samples, seed, counts)

    def predict_molecules(self, mols: Molecules, samples: int | None = None, seed: int = 12345) -> np.ndarray:
        """`energies` after the domain check (hard cases raise `DomainError`, soft ones warn)."""
        warn_if_flagged(self.check_domain(mols), mols)
        return self.energies(mols, samples, seed)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the network to ``path`` (`save_cm_network`)."""
        return save_cm_network(self, path)


def save_cm_network(regressor: CMMLPRegressor, path: str | os.PathLike) -> Path:
    """Write ``regressor`` to ``path`` atomically: a ``torch.save``'d dictionary of plain data
    (format ``qmlx-cm-network``: the training config, ``n_max``, the layer sizes, elements of the
    composition baseline, the state dict and the metadata), read back by `qmlx.load_model`."""
    from qmlx.nn.io import CM_NETWORK_FORMAT, plain, torch_state

    model = regressor.model
    record = {
        "format": CM_NETWORK_FORMAT,
        "format_version": 1,
        "n_max": int(regressor.n_max),
        "config": plain(regressor.config.to_dict()),
        "elements": list(model.elements),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": plain(regressor.metadata),
    }
    if regressor.novelty_state is not None:
        record["novelty"] = torch_state(regressor.novelty_state)
    path = Path(path)
    atomic_torch_save(record, path)
    return path


def cm_network_from_record(record: dict, path: str | os.PathLike) -> CMMLPRegressor:
    """The `CMMLPRegressor` a ``qmlx-cm-network`` record holds (see `save_cm_network`); a record that
    does not fit raises `DataFormatError` naming ``path``."""
    from qmlx.nn.io import numpy_state

    try:
        config = CMMLPConfig(**record["config"])
        config.hidden = tuple(config.hidden)
        state = record["state_dict"]
        encoder = InputEncoder.from_state(config.expansion_step, state)
        model = CMMLP(encoder, config.hidden, 0.0, 1.0, tuple(record["elements"]))
        model.load_state_dict(state)
        regressor = CMMLPRegressor(model.eval(), int(record["n_max"]), config, record.get("metadata") or {})
        regressor.novelty_state = numpy_state(record.get("novelty"))
        return regressor
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise DataFormatError(
            f"{path}: not a readable Coulomb-matrix network ({type(err).__name__}: {err})"
        ) from None


@torch.no_grad()
def predict_average(
    model: CMMLP,
    sampler: RandomCoulombSampler,
    index: torch.Tensor,
    samples: int,
    seed: int = 12345,
    counts: torch.Tensor | None = None,
) -> np.ndarray:
    """Mean prediction over ``samples`` random matrices for the molecules ``index``; (len(index),).

    ``counts`` (n_sampler_molecules, n_elements) feeds the composition baseline.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(index), dtype=torch.float64)
    for _ in range(samples):
        for lo in range(0, len(index), 4096):
            part = index[lo : lo + 4096]
            c = None if counts is None else counts[part]
            total[lo : lo + len(part)] += model(sampler.sample(part, gen), c).double()
    return (total / samples).numpy()


def train_cm_mlp(
    mols: Molecules,
    train: np.ndarray,
    y: np.ndarray,
    config: CMMLPConfig,
    monitor: Callable[[CMMLPRegressor], dict] | None = None,
    progress: bool = False,
    metadata: dict | None = None,
) -> tuple[CMMLPRegressor, list[dict]]:
    """Train on ``mols[train]`` with targets ``y`` (len(train),) in kcal/mol.

    The Coulomb matrices are sized for the largest molecule of ``mols`` (not only of the training
    part), so every molecule of the data set can be predicted. ``metadata`` (target, description,
    data set, ...) is saved with the model, together with the training domain and its novelty model
    (`qmlx.novelty.fit_domain_model`).

    Every epoch draws fresh random Coulomb matrices for all training molecules (the augmentation
    of Montavon et al.). Adam with a cosine learning-rate decay from ``lr`` to ``lr_final``.
    ``monitor(regressor)`` is called every ``history_every`` epochs (e.g. to record a test MAE
    for a plot; it must not be used to choose the model). Returns the regressor and the history.
    """
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    sub = mols.subset(train)
    n_max = mols.max_atoms
    sampler = RandomCoulombSampler(coulomb_matrices(sub, n_max), config.noise)
    # input statistics over a few random sortings of the training molecules
    with torch.no_grad():
        stats = torch.cat([sampler.sample(torch.arange(len(sampler)), gen) for _ in range(4)])
        encoder = InputEncoder(stats, config.expansion_step)
    y = np.asarray(y, dtype=np.float64)
    elements: tuple[int, ...] = ()
    coef = None
    residual = y
    if config.composition_baseline:
        # least-squares energy per element ("dressed atoms"); the net learns what is left
        elements = tuple(int(z) for z in np.unique(sub.Z))
        counts_np = element_counts(sub.Z, sub.n_atoms, elements)
        coef = np.linalg.lstsq(counts_np, y, rcond=None)[0]
        residual = y - counts_np @ coef
    y_t = torch.as_tensor(residual, dtype=torch.float32)
    y_mean, y_std = float(y_t.mean()), float(y_t.std())
    model = CMMLP(encoder, tuple(config.hidden), y_mean, y_std, elements, coef)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (
                config.lr_final
                + 0.5
                * (config.lr - config.lr_final)
                * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
            )
            / config.lr
        ),
    )
    loss_fn = nn.MSELoss() if config.loss == "mse" else nn.L1Loss()
    target = (y_t - y_mean) / y_std
    meta = {"energy_unit": "kcal/mol", **(metadata or {}), "domain": Domain.from_molecules(sub).to_dict()}
    regressor = CMMLPRegressor(model, n_max, config, meta)
    regressor.novelty_state = fit_domain_model(mols, np.asarray(train), seed=config.seed).to_state()
    history: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="CM-MLP", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(sampler), generator=gen)
        running = 0.0
        for lo in range(0, len(perm), config.batch_size):
            idx = perm[lo : lo + config.batch_size]
            x = sampler.sample(idx, gen)
            loss = loss_fn(model.standardized(x), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
        entry = {"epoch": epoch + 1, "train_loss": running / len(perm), "time_s": time.perf_counter() - t0}
        last = epoch + 1 == config.epochs
        out_of_time = config.time_limit_s is not None and entry["time_s"] > config.time_limit_s
        if monitor is not None and ((epoch + 1) % config.history_every == 0 or last or out_of_time):
            entry.update(monitor(regressor))
        history.append(entry)
        bar.set_postfix(loss=f"{entry['train_loss']:.4f}")
        if out_of_time:
            entry["stopped"] = "time limit"
            break
    return regressor, history
