"""The trained-model protocol: one interface for every model qmlx trains, saves and explains.

``load_model(name_or_path)`` returns a `TrainedModel` for a shipped name (``qm7-schnet``,
``qm7-schnet-ensemble``, ...), a network file (``.pt``: SchNet, DTNN or an ensemble of them), a
Coulomb-matrix network file (``.pt``, Montavon et al. 2012) or a kernel ridge file (``.h5``, exact
or Nyström). Every one of them offers

- ``predict(molecules) -> Prediction``: energies (n_mol,) in kcal/mol and, where the model has
  them, atom energies (n_atoms_total,), an uncertainty (n_mol,) and forces (n_atoms_total, 3) in
  kcal/mol/Å; with each molecule's domain verdict and, for a model file with a novelty model
  (`qmlx.novelty`, every training command fits one), its novelty and p-value;
- ``check_domain(molecules) -> DomainReport``: raises `DomainError` for input the model cannot
  answer, returns soft flags otherwise (`qmlx.data.domain`);
- ``metadata``: target, description, unit, split and training domain, as recorded at training;
- ``save(path)``: the model's own file format, written atomically.

A molecule the model cannot answer (an unknown element, atoms closer than 0.5 Å, a representation
it does not fit, ...) is refused alone: its energy is NaN and ``Prediction.errors`` says why, and
every other molecule of the batch is predicted.

The wrapped objects stay reachable as ``model.estimator`` (an `InteractionNetwork`, an
`Ensemble`, a `KRRModel` or a `CMMLPRegressor`) for the explanation code and for training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmlx.data.domain import DomainReport, screen, warn_if_flagged
from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import DataFormatError, QmlxError
from qmlx.novelty import NoveltyModel

ENERGY_UNIT = "kcal/mol"

__all__ = [
    "CoulombNetworkModel",
    "KernelModel",
    "NetworkModel",
    "Prediction",
    "TrainedModel",
    "as_trained_model",
    "load_model",
]


@dataclass
class Prediction:
    """What a model predicts for a batch of molecules (energies in kcal/mol).

    energy : (n_mol,) predicted energies; NaN for refused molecules.
    in_domain : (n_mol,) False where a molecule carries a domain flag or was refused.
    notes : per molecule, the domain notes (empty when nothing was flagged).
    errors : per molecule, why it was refused (``DomainError`` text), or ``None``.
    atom_energies : (n_atoms_total,) atom energies summing per molecule to ``energy`` (networks),
        NaN on the atoms of refused molecules; ``None`` for models without them.
    uncertainty : (n_mol,) the ensemble's calibrated spread (see `qmlx.nn.io.predict_ensemble`),
        or ``None``.
    forces : (n_atoms_total, 3) ``-dE/dR`` in kcal/mol/Å when asked for, else ``None``.
    novelty : (n_mol,) how unfamiliar each molecule is to the model (`qmlx.novelty`: its most
        unusual atom's one-class score over the 99th percentile of its element's calibration
        atoms; around 1 and above is unusual), or ``None`` for a model file without a novelty
        model; NaN for refused molecules.
    novelty_p : (n_mol,) the fraction of calibration molecules at least as novel; below the
        model's level (default 0.01) a molecule is outside the domain.
    atom_novelty : (n_atoms_total,) each atom's novelty, or ``None``.
    """

    energy: np.ndarray
    in_domain: np.ndarray
    notes: list[list[str]]
    errors: list[str | None]
    atom_energies: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    forces: np.ndarray | None = None
    novelty: np.ndarray | None = None
    novelty_p: np.ndarray | None = None
    atom_novelty: np.ndarray | None = None
    unit: str = ENERGY_UNIT

    @property
    def refused(self) -> np.ndarray:
        """(n_mol,) True for the molecules that were refused."""
        return np.array([e is not None for e in self.errors], dtype=bool)

    @property
    def domain(self) -> DomainReport:
        """The domain verdict as a `DomainReport`."""
        return DomainReport(self.in_domain, self.notes)


class TrainedModel:
    """Base of every trained model: `predict` (with refusal one molecule at a time) on top of
    `check_domain`, `_predict` and `save`.

    kind : ``network``, ``ensemble``, ``krr`` or ``cm-network``.
    estimator : the wrapped object.
    source : the file it was loaded from, or ``None``.
    """

    kind: str = ""
    #: what `predict` can give besides the energy
    properties: tuple[str, ...] = ("energy",)

    def __init__(self, estimator, source: str | None = None) -> None:
        self.estimator = estimator
        self.source = source

    # -- what was recorded at training ------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """Target, description, unit, split, training domain and test metrics, as recorded."""
        return self.estimator.metadata

    @property
    def unit(self) -> str:
        return ENERGY_UNIT

    @property
    def quantity(self) -> str:
        """What the model predicts, e.g. ``PBE0 atomization energy``."""
        meta = self.metadata
        return meta.get("target_description") or str(meta.get("target", "energy")).replace("_", " ")

    @property
    def name(self) -> str:
        return self.source or type(self.estimator).__name__

    @property
    def novelty(self) -> NoveltyModel | None:
        """The one-class model of the training domain (`qmlx.novelty`), or ``None`` for a file
        saved without one."""
        state = getattr(self.estimator, "novelty_state", None)
        if state is None:
            return None
        if getattr(self, "_novelty_from", None) is not state:
            self._novelty, self._novelty_from = NoveltyModel.from_state(state), state
        return self._novelty

    @novelty.setter
    def novelty(self, model: NoveltyModel | None) -> None:
        self.estimator.novelty_state = None if model is None else model.to_state()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.quantity} [{self.unit}])"

    # -- the protocol -----------------------------------------------------------------------------
    # By default a model hands these to its estimator, which then has ``check_domain(mols)``,
    # ``energies(mols)`` and ``save(path)`` (`KRRModel`, `CMMLPRegressor`); `NetworkModel` overrides them.
    def check_domain(self, molecules: Molecules | Sequence) -> DomainReport:
        """Soft domain flags of ``molecules``; raises `DomainError` for input the model cannot answer."""
        return self.estimator.check_domain(as_molecules(molecules))

    def _predict(self, mols: Molecules, forces: bool) -> dict[str, np.ndarray]:
        """``energy`` (n_mol,) and whichever of ``atom_energies``, ``uncertainty``, ``forces`` the
        model gives, for molecules that passed `check_domain`."""
        return {"energy": self.estimator.energies(mols)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` atomically in its own format."""
        return self.estimator.save(path)

    def predict(self, molecules: Molecules | Sequence, forces: bool = False) -> Prediction:
        """Energies of ``molecules`` (`Molecules` or ``ase.Atoms``, positions in Å) in kcal/mol.

        Each molecule is checked against the training domain first. Refused molecules get NaN and
        an entry in ``errors``; flagged ones (by the rules of `qmlx.data.domain`, or by a novelty
        p-value below the novelty model's level) are predicted, marked in ``in_domain`` and
        ``notes`` and announced by one `DomainWarning`. ``forces=True`` adds ``-dE/dR`` (networks
        only).
        """
        if forces and "forces" not in self.properties:
            raise QmlxError(f"{self.name}: a {self.kind} model gives no forces")
        mols = as_molecules(molecules)
        report, errors = screen(self.check_domain, mols)
        ok = np.array([e is None for e in errors], dtype=bool)
        atom_ok = ok[mols.mol_index]
        # every output the model gives, NaN where a molecule was refused
        shapes = {"energy": (len(mols),), "atom_energies": (len(mols.Z),), "uncertainty": (len(mols),)}
        if forces:
            shapes["forces"] = (len(mols.Z), 3)
        out = {key: np.full(shape, np.nan) for key, shape in shapes.items() if key in self.properties}
        novelty = self.novelty
        if novelty is not None:
            out.update(
                novelty=np.full(len(mols), np.nan),
                novelty_p=np.full(len(mols), np.nan),
                atom_novelty=np.full(len(mols.Z), np.nan),
            )
        if ok.any():
            kept = np.flatnonzero(ok)
            part = mols if ok.all() else mols.subset(kept)
            for key, values in self._predict(part, forces).items():
                out[key][atom_ok if key in ("atom_energies", "forces") else ok] = values
            if novelty is not None:
                result = novelty.evaluate(part)
                out["novelty"][ok], out["novelty_p"][ok] = result.novelty, result.p_value
                out["atom_novelty"][atom_ok] = result.atom_novelty
                for i, note in zip(kept, novelty.notes(part, result)):
                    if note:
                        report.in_domain[i] = False
                        report.notes[i] = [*report.notes[i], *note]
            warn_if_flagged(DomainReport(report.in_domain[kept], [report.notes[i] for i in kept]), part)
        energy = out.pop("energy")
        return Prediction(energy, report.in_domain, report.notes, errors, **out)


class NetworkModel(TrainedModel):
    """A SchNet or DTNN (`qmlx.nn`), or an `Ensemble` of them (kind ``ensemble``, with an
    uncertainty and per-atom energies averaged over the members)."""

    properties = ("energy", "atom_energies", "forces")

    def __init__(self, network, source: str | None = None) -> None:
        from qmlx.nn.ensemble import Ensemble

        super().__init__(network, source or getattr(network, "source", None))
        self.kind = "ensemble" if isinstance(network, Ensemble) else "network"
        if self.kind == "ensemble":
            self.properties = (*self.properties, "uncertainty")

    @property
    def metadata(self) -> dict:
        return getattr(self.estimator, "metadata", None) or {}

    def check_domain(self, molecules) -> DomainReport:
        from qmlx.nn.io import check_network_domain

        return check_network_domain(self.estimator, as_molecules(molecules))

    def _predict(self, mols: Molecules, forces: bool) -> dict[str, np.ndarray]:
        from qmlx.nn.io import ensemble_energies, network_energies, network_forces

        ensemble = self.kind == "ensemble"
        if forces:  # one pass per member gives energies, forces and atom energies together
            members = self.estimator.members if ensemble else [self.estimator]
            energy, force, atom = (np.array(r) for r in zip(*(network_forces(m, mols) for m in members)))
            out = {"energy": energy.mean(0), "forces": force.mean(0), "atom_energies": atom.mean(0)}
            if ensemble:
                out["uncertainty"] = energy.std(0) * self.estimator.uncertainty_scale
            return out
        if ensemble:
            energy, uncertainty, atom_energies = ensemble_energies(self.estimator, mols)
            return {"energy": energy, "atom_energies": atom_energies, "uncertainty": uncertainty}
        energy, atom_energies = network_energies(self.estimator, mols)
        return {"energy": energy, "atom_energies": atom_energies}

    def save(self, path: str | os.PathLike) -> Path:
        from qmlx.nn.io import save_network

        return save_network(self.estimator, path, metadata=self.metadata)


class KernelModel(TrainedModel):
    """A kernel ridge model (`qmlx.kernels.KRRModel`, exact or Nyström) on any representation."""

    kind = "krr"


class CoulombNetworkModel(TrainedModel):
    """The network on random Coulomb matrices (Montavon et al. 2012, `qmlx.nn.cm_mlp.CMMLPRegressor`)."""

    kind = "cm-network"


def as_trained_model(model) -> TrainedModel:
    """``model`` as a `TrainedModel`: returned as it is if it already is one, else wrapped (a network,
    an ensemble, a `KRRModel` or a `CMMLPRegressor`)."""
    if isinstance(model, TrainedModel):
        return model
    from qmlx.kernels.model import KRRModel
    from qmlx.nn.cm_mlp import CMMLPRegressor
    from qmlx.nn.ensemble import Ensemble
    from qmlx.nn.models import InteractionNetwork

    if isinstance(model, (InteractionNetwork, Ensemble)):
        return NetworkModel(model)
    if isinstance(model, KRRModel):
        return KernelModel(model)
    if isinstance(model, CMMLPRegressor):
        return CoulombNetworkModel(model)
    raise QmlxError(f"not a trained qmlx model: {type(model).__name__}")


def load_model(name_or_path: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """A trained model from a shipped name (``qm7-schnet``, ``qm7-schnet-ensemble``, ...), a network
    or Coulomb-matrix network file (``.pt``, loaded onto ``device``: ``cpu``, ``cuda[:N]`` or
    ``auto``) or a kernel ridge file (``.h5``, on the CPU).

    A missing file, an unknown name or a file of another kind raises `DataFormatError` naming it.
    """
    from qmlx.kernels.model import is_krr_file, load_krr
    from qmlx.nn.io import CM_NETWORK_FORMAT, is_network_file, load_network, read_network_file
    from qmlx.pretrained import SHIPPED

    spec = str(name_or_path)
    if is_network_file(spec):
        record, path = read_network_file(spec)
        if record.get("format") == CM_NETWORK_FORMAT:
            from qmlx.nn.cm_mlp import cm_network_from_record

            return CoulombNetworkModel(cm_network_from_record(record, path), str(path))
        return NetworkModel(load_network(spec, device, record=record), str(path))
    if is_krr_file(spec):
        return KernelModel(load_krr(spec), spec)
    if not Path(spec).exists():
        raise DataFormatError(f"{spec}: no such file (and not a shipped model: {', '.join(SHIPPED)})")
    raise DataFormatError(
        f"{spec}: not a qmlx model (expected a shipped name such as qm7-schnet, a network .pt file "
        "or a KRR .h5 file)"
    )
