"""DTNN and SchNet: atom-wise energies from interaction networks.

Both models run ``embed -> interactions -> head`` on a flat `Batch`:

- ``embed(Z)``: element embeddings, x^0 ``(n_atoms, F)``;
- ``pair_features(batch)``: distances ``(n_pairs,)`` in Å, their radial basis
  ``(n_pairs, n_rbf)`` and cutoff ``(n_pairs,)``, over the half pair list ``i < j``;
- ``interactions[t]``: residual updates x^{t+1} = x^t + v^t;
- ``head``: atom energies E_i ``(n_atoms,)`` in kcal/mol; the molecular energy is their sum.

`forward` returns a `NetworkOutput` with the energies and the features after each step, so
that explanation code can reach every intermediate tensor without the models knowing about it.

``forward(batch, tabulated=True)`` is the faster path of inference and of training steps: the
distance-only factor of each interaction (SchNet's filter ``W(d)``, DTNN's ``df(rbf(d))``) is read
by linear interpolation from a table over distance (`qmlx.nn.tables`) instead of being computed
per pair.

- Without gradients (inference) the table is fine (``TABLE_POINTS_PER_WIDTH`` points per Gaussian
  width), built in float64 from the current weights and rebuilt when they change; it agrees with
  the exact path to float32 rounding.
- With gradients (a training step) the table is built in every call, on a coarser grid
  (``TRAIN_TABLE_POINTS_PER_WIDTH``), from the layers themselves, so the gradient reaches the
  weights through the grid values. Its interpolation error is at most ``step^2 / 8 * max|f''|``;
  with the shipped QM7 SchNet the energies of all 7,165 QM7 molecules differ from the exact path
  (in float64) by 3.4e-4 kcal/mol on average and 1.5e-3 at most, against 0.9e-4 and 0.5e-3 for
  the exact path in float32 (docs/networks.md). A batch with fewer than
  ``TRAIN_TABLE_MIN_PAIRS_PER_POINT`` pairs per grid point gains nothing from a table and takes
  the exact path. Gradients with respect to positions (forces) are refused: they need the exact
  path.

The default path (``tabulated=False``), which forces and explanations use, computes every factor
per pair. Ensembles of these networks are in `qmlx.nn.ensemble`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from qmlx.nn import tables
from qmlx.nn.batch import Batch
from qmlx.nn.layers import (
    AtomwiseHead,
    CosineCutoff,
    DTNNInteraction,
    ElementEmbedding,
    GaussianRBF,
    SchNetInteraction,
    shifted_softplus,
)
from qmlx.nn.ops import segment_sum
from qmlx.nn.tables import RadialTables

#: the output head's hidden activations `SchNet` offers, by the name its config records
HEAD_ACTIVATIONS = {"ssp": shifted_softplus, "silu": nn.functional.silu}


@dataclass
class NetworkOutput:
    """What a network returns for a batch.

    energy : (n_mol,) molecular energies in kcal/mol.
    atom_energies : (n_atoms,) atom-wise energies in kcal/mol; summed per molecule give ``energy``.
    features : atom features ``(n_atoms, F)`` after the embedding and after each interaction.
    """

    energy: torch.Tensor
    atom_energies: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


class InteractionNetwork(nn.Module):
    """Common forward pass of `SchNet` and `DTNN`; subclasses build the layers."""

    cutoff: float
    config: dict

    def embed(self, Z: torch.Tensor) -> torch.Tensor:
        """``Z (n_atoms,)`` -> initial features ``(n_atoms, F)``."""
        return self.embedding(Z)

    def distances(self, batch: Batch) -> torch.Tensor:
        """Distances ``(n_pairs,)`` in Å over the half pair list."""
        vec = batch.R[batch.idx_j] - batch.R[batch.idx_i]
        return torch.sqrt((vec * vec).sum(-1))

    def pair_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distances ``(n_pairs,)`` Å, radial basis ``(n_pairs, n_rbf)``, cutoff ``(n_pairs,)``."""
        d = self.distances(batch)
        return d, self.rbf(d), self.cutoff_fn(d)

    def interact(self, t: int, x: torch.Tensor, rbf, fcut, batch: Batch) -> torch.Tensor:
        """The update v^t ``(n_atoms, F)`` of interaction ``t``."""
        raise NotImplementedError

    def radial_functions(self, d: torch.Tensor) -> list[torch.Tensor]:
        """The distance-only factor ``(n, F_t)`` of each interaction ``t`` at distances ``d (n,)`` Å,
        computed by the layers in their dtype (differentiable with respect to the weights)."""
        raise NotImplementedError

    # -- tables over distance ------------------------------------------------------------
    def radial_stop(self) -> float:
        """The distance in Å from which on every radial factor is constant (where the tables end)."""
        raise NotImplementedError

    def _table_sources(self) -> list[torch.Tensor]:
        """The parameters and buffers that `radial_functions` reads."""
        raise NotImplementedError

    def _table_key(self) -> tuple:
        """The settings besides `_table_sources` that the tables depend on."""
        return (self.rbf.coeff, self.rbf.width, float(self.cutoff))

    def inference_tables(self) -> RadialTables:
        """The tables of the tabulated inference path for the current weights, cached beside the
        model and rebuilt when the weights change (`qmlx.nn.tables.inference_tables`)."""
        return tables.inference_tables(self)

    def training_tables(self, n_pairs: int) -> RadialTables | None:
        """Tables a training step reads, with gradients to the weights, or ``None`` for a batch of
        ``n_pairs`` half pairs too small to gain from them (`qmlx.nn.tables.training_tables`)."""
        return tables.training_tables(self, n_pairs)

    def radial(self, d: torch.Tensor, tabulated: bool = False) -> list[torch.Tensor]:
        """The distance factor ``(n_pairs, F_t)`` of each interaction at the pair distances
        ``d (n_pairs,)`` Å: computed per pair, or with ``tabulated`` read from `inference_tables`
        (without gradients) or `training_tables` (with gradients; see the module docstring)."""
        if not tabulated:
            return self.radial_functions(d)
        if not torch.is_grad_enabled():
            tables = self.inference_tables()
        elif d.requires_grad:
            raise RuntimeError(
                "the tabulated forward pass carries no gradient to the positions: take the exact "
                "path (tabulated=False) for forces"
            )
        else:
            tables = self.training_tables(len(d))
            if tables is None:
                return self.radial_functions(d)
        return tables.interpolate(tables.locate(d))

    def forward(self, batch: Batch, tabulated: bool = False) -> NetworkOutput:
        """Energies of ``batch``; ``tabulated=True`` takes the faster table path of inference and
        training steps (see `forward_from`)."""
        return self.forward_from(self.embed(batch.Z), batch, tabulated=tabulated)

    def forward_from(self, x: torch.Tensor, batch: Batch, tabulated: bool = False) -> NetworkOutput:
        """The forward pass from given initial atom features ``x (n_atoms, F)`` instead of the
        embeddings (what gradient-based explanations differentiate with respect to).

        ``tabulated=True`` reads each interaction's distance factor from a table over distance (see
        `radial` and the module docstring); it refuses gradients with respect to the positions.
        """
        radial = self.radial(self.distances(batch), tabulated)
        features = [x]
        for t, block in enumerate(self.interactions):
            x = x + block.propagate(x, radial[t], batch.idx_i, batch.idx_j)
            features.append(x)
        atom_e = self.head(x, batch.Z)
        energy = segment_sum(atom_e, batch.mol_index, batch.n_mol)
        return NetworkOutput(energy=energy, atom_energies=atom_e, features=features)

    def fit_reference(self, Z, n_atoms, energies) -> dict[int, float]:
        """Fit the head's per-element reference energies and scale (see `AtomwiseHead`)."""
        return self.head.fit_reference(Z, n_atoms, energies)


class SchNet(InteractionNetwork):
    """SchNet (Schütt et al., JCP 148, 241722, 2018) with continuous-filter convolutions.

    Parameters
    ----------
    n_features : atom feature size (64 in the papers' QM9 runs; 128 is also common).
    n_interactions : number of interaction blocks (3 to 6 in the papers).
    cutoff : cosine cutoff radius in Å (5 Å).
    rbf_spacing : spacing of the Gaussian centres from 0 to ``cutoff`` in Å.
    rbf_width : Gaussian width in Å; 0.2236 Å is gamma = 10 / Å^2 of the paper.
    n_filters : filter size, default ``n_features``.
    max_z : largest nuclear charge supported.
    rbf_start : first Gaussian centre in Å (0; the centres run from here to ``cutoff``).
    head_activation : the output head's hidden activation, a name in `HEAD_ACTIVATIONS`
        (``"ssp"``, the shifted softplus of the papers; schnetpack 2.x heads use ``"silu"``).
    """

    def __init__(
        self,
        n_features: int = 64,
        n_interactions: int = 3,
        cutoff: float = 5.0,
        rbf_spacing: float = 0.1,
        rbf_width: float = 0.2236,
        n_filters: int | None = None,
        max_z: int = 100,
        rbf_start: float = 0.0,
        head_activation: str = "ssp",
    ) -> None:
        super().__init__()
        if head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(
                f"head_activation {head_activation!r}: expected one of {sorted(HEAD_ACTIVATIONS)}"
            )
        self.config = dict(
            n_features=n_features, n_interactions=n_interactions, cutoff=cutoff, rbf_spacing=rbf_spacing,
            rbf_width=rbf_width, n_filters=n_filters, max_z=max_z,
        )  # fmt: skip
        if (
            rbf_start != 0.0
        ):  # recorded only where not the default: configs of existing files stay as they were
            self.config["rbf_start"] = rbf_start
        if head_activation != "ssp":
            self.config["head_activation"] = head_activation
        self.cutoff = float(cutoff)
        self.embedding = ElementEmbedding(n_features, max_z)
        self.rbf = GaussianRBF(rbf_start, cutoff, rbf_spacing, rbf_width)
        self.cutoff_fn = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(
            SchNetInteraction(n_features, self.rbf.n_rbf, n_filters) for _ in range(n_interactions)
        )
        self.head = AtomwiseHead(n_features, activation=HEAD_ACTIVATIONS[head_activation], max_z=max_z)

    def interact(self, t: int, x: torch.Tensor, rbf, fcut, batch: Batch) -> torch.Tensor:
        return self.interactions[t](x, rbf, fcut, batch.idx_i, batch.idx_j)

    def radial_functions(self, d: torch.Tensor) -> list[torch.Tensor]:
        """The filters ``W_t(d) = filter_t(rbf(d), cutoff(d))`` ``(n, n_filters)``."""
        rbf, fcut = self.rbf(d), self.cutoff_fn(d)
        return [b.filter(rbf, fcut) for b in self.interactions]

    def radial_stop(self) -> float:
        """The cutoff: the filters are 0 from there on."""
        return self.cutoff

    def _table_sources(self) -> list[torch.Tensor]:
        layers = [t for b in self.interactions for t in (b.filter1, b.filter2)]
        return [self.rbf.centers] + [p for layer in layers for p in layer.parameters()]


class DTNN(InteractionNetwork):
    """Deep tensor neural network (Schütt et al., Nat. Commun. 8, 13890, 2017).

    Parameters
    ----------
    n_features : size of the atom coefficient vectors (30).
    n_factors : size of the factorized tensor layer (60).
    n_interactions : number of interaction passes T (2 or 3).
    rbf_start, rbf_stop, rbf_spacing, rbf_width : Gaussian centres from ``rbf_start`` to
        ``rbf_stop`` (Å) with spacing and width 0.2 Å; the paper starts at -1 Å and stops at 10 Å for
        GDB-7/QM7 and 20 Å for GDB-9/QM9.
    cutoff : pairs farther apart than this (Å) are left out of the pair list; the default 50 Å
        keeps every pair of QM7 and QM9, as in the paper (beyond ``rbf_stop`` a pair still
        contributes through the biases).
    max_z : largest nuclear charge supported.
    """

    def __init__(
        self,
        n_features: int = 30,
        n_factors: int = 60,
        n_interactions: int = 3,
        rbf_start: float = -1.0,
        rbf_stop: float = 20.0,
        rbf_spacing: float = 0.2,
        rbf_width: float = 0.2,
        cutoff: float = 50.0,
        max_z: int = 100,
    ) -> None:
        super().__init__()
        self.config = dict(
            n_features=n_features, n_factors=n_factors, n_interactions=n_interactions, rbf_start=rbf_start,
            rbf_stop=rbf_stop, rbf_spacing=rbf_spacing, rbf_width=rbf_width, cutoff=cutoff, max_z=max_z,
        )  # fmt: skip
        self.cutoff = float(cutoff)
        self.embedding = ElementEmbedding(n_features, max_z)
        self.rbf = GaussianRBF(rbf_start, rbf_stop, rbf_spacing, rbf_width)
        self.cutoff_fn = _HardCutoff(cutoff)
        self.interactions = nn.ModuleList(
            DTNNInteraction(n_features, self.rbf.n_rbf, n_factors) for _ in range(n_interactions)
        )
        self.head = AtomwiseHead(n_features, activation=torch.tanh, max_z=max_z)

    def interact(self, t: int, x: torch.Tensor, rbf, fcut, batch: Batch) -> torch.Tensor:
        return self.interactions[t](x, rbf, batch.idx_i, batch.idx_j)

    def radial_functions(self, d: torch.Tensor) -> list[torch.Tensor]:
        """The factors ``df_t(rbf(d))`` ``(n, n_factors)``."""
        rbf = self.rbf(d)
        return [b.df(rbf) for b in self.interactions]

    def radial_stop(self) -> float:
        """The distance past which every Gaussian is 0 (the factors equal the bias), or the cutoff if
        that comes first."""
        return min(self.cutoff, self.rbf.zero_beyond)

    def _table_sources(self) -> list[torch.Tensor]:
        return [self.rbf.centers] + [p for b in self.interactions for p in b.df.parameters()]


class _HardCutoff(nn.Module):
    """Ones; the pair list already excludes pairs beyond the cutoff."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(d)


MODEL_CLASSES: dict[str, type[InteractionNetwork]] = {"SchNet": SchNet, "DTNN": DTNN}


def build_model(name: str, **config) -> InteractionNetwork:
    """A model by class name (``"SchNet"``/``"schnet"``, ``"DTNN"``/``"dtnn"``) and its constructor args."""
    for key, cls in MODEL_CLASSES.items():
        if key.lower() == name.lower():
            return cls(**config)
    raise ValueError(f"unknown network {name!r}; expected one of {sorted(MODEL_CLASSES)}")
