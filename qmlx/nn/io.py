"""Saving, loading and running trained networks: the prediction API behind ``qmlx predict``.

A network file is a ``torch.save``'d dictionary of plain data (class name, constructor config,
state dict, metadata), read back with ``torch.load(..., weights_only=True)`` only. Shipped models
are found by name in `qmlx.pretrained` (e.g. ``"qm7-schnet"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import ase
import numpy as np
import torch

from qmlx._io import atomic_torch_save, safe_torch_load
from qmlx.data.domain import Domain, DomainReport, check_domain, warn_if_flagged
from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import DataFormatError, QmlxError
from qmlx.nn.batch import Batch, PairCache, resolve_device
from qmlx.nn.ensemble import Ensemble
from qmlx.nn.models import MODEL_CLASSES, InteractionNetwork

NETWORK_FORMAT = "qmlx-network"
#: the format tag of an ensemble file: several network records in one file
ENSEMBLE_FORMAT = "qmlx-ensemble"
#: the format tag of training checkpoints (`qmlx.train.engine`), which `load_network` also reads
CHECKPOINT_FORMAT = "qmlx-checkpoint"
#: the format tag of a network on random Coulomb matrices (`qmlx.nn.cm_mlp`), read by `qmlx.load_model`
CM_NETWORK_FORMAT = "qmlx-cm-network"


def network_record(model: InteractionNetwork, state_dict=None, metadata: dict | None = None) -> dict:
    """The dictionary a network file holds: class name, constructor config, weights, metadata."""
    sd = model.state_dict() if state_dict is None else state_dict
    return {
        "format": NETWORK_FORMAT,
        "format_version": 1,
        "model": type(model).__name__,
        "config": dict(model.config),
        "state_dict": {k: v.detach().clone() for k, v in sd.items()},
        "metadata": plain(metadata or {}),
    }


def plain(data: dict) -> dict:
    """``data`` reduced to JSON types (str, numbers, lists, dicts), safe for ``weights_only`` loading."""
    return json.loads(json.dumps(data, default=str))


def _resolve(name_or_path: str | os.PathLike) -> Path | None:
    """A shipped model's file for a name, else the path itself if it exists, else ``None``."""
    from qmlx.pretrained import shipped_model_path

    shipped = shipped_model_path(str(name_or_path))
    if shipped is not None:
        return shipped
    p = Path(name_or_path)
    return p if p.is_file() else None


def is_network_file(path_or_name: str | os.PathLike) -> bool:
    """True for a shipped model name, or a file that holds a qmlx network or training checkpoint.

    Cheap: only the first bytes are looked at (a torch zip archive); no weights are loaded.
    """
    from qmlx.pretrained import shipped_model_path

    if shipped_model_path(str(path_or_name)) is not None:
        return True
    p = Path(path_or_name)
    if not p.is_file() or p.suffix.lower() not in {".pt", ".pth", ".ckpt"}:
        return False
    with open(p, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def save_network(
    model: InteractionNetwork | Ensemble, path: str | os.PathLike, metadata: dict | None = None
) -> Path:
    """Write ``model`` (class, config, weights, ``metadata``) to ``path`` atomically; an `Ensemble`
    is one file holding every member's record (format ``qmlx-ensemble``)."""
    path = Path(path)
    if isinstance(model, Ensemble):
        record = {
            "format": ENSEMBLE_FORMAT,
            "format_version": 1,
            "members": [network_record(m, metadata=getattr(m, "metadata", None)) for m in model.members],
            "metadata": plain(metadata or {}),
        }
    else:
        record = network_record(model, metadata=metadata)
    novelty = getattr(model, "novelty_state", None)
    if novelty is not None:
        record["novelty"] = torch_state(novelty)
    atomic_torch_save(record, path)
    return path


def torch_state(state: dict) -> dict:
    """A `qmlx.novelty.NoveltyModel` state (``settings`` and numpy ``arrays``) as a model file
    stores it: plain settings, arrays as tensors (readable with ``weights_only=True``)."""
    return {
        "settings": plain(state["settings"]),
        "arrays": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state["arrays"].items()},
    }


def numpy_state(record: dict | None) -> dict | None:
    """The inverse of `torch_state` (``None`` for a file without a novelty model)."""
    if not record:
        return None
    return {
        "settings": dict(record["settings"]),
        "arrays": {k: v.numpy() for k, v in record["arrays"].items()},
    }


def read_network_file(name_or_path: str | os.PathLike) -> tuple[dict, Path]:
    """``(record, path)`` of a shipped name or a network file: the plain dictionary it holds, read
    with ``weights_only=True``. Raises `QmlxError` for an unknown name and `DataFormatError` naming
    the file if it cannot be read."""
    path = _resolve(name_or_path)
    if path is None:
        from qmlx.pretrained import SHIPPED

        raise QmlxError(
            f"{name_or_path}: neither a shipped model ({', '.join(sorted(SHIPPED))}) nor an existing file"
        )
    return safe_torch_load(path, "network file"), path


def load_network(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu", record: dict | None = None
) -> InteractionNetwork | Ensemble:
    """A trained network in eval mode, from a shipped name (``"qm7-schnet"``), a network file
    (``model.pt``), an ensemble file or a training checkpoint (``checkpoint.pt``: its
    best-validation weights), on ``device`` (``cpu``, ``cuda[:N]`` or ``auto``; predictions run
    where the model is). ``record``: the file's contents if already read (`read_network_file`).

    The model's metadata is attached as ``model.metadata``. Raises `DataFormatError` naming the
    file if it cannot be read, and `QmlxError` for an unknown name.
    """
    rec, path = read_network_file(name_or_path) if record is None else (record, _resolve(name_or_path))
    if rec.get("format") == CM_NETWORK_FORMAT:
        raise DataFormatError(f"{path}: a Coulomb-matrix network; load it with qmlx.load_model")
    if rec.get("format") == ENSEMBLE_FORMAT:
        members = rec.get("members")
        if not isinstance(members, list) or not members:
            raise DataFormatError(f"{path}: ensemble file without members")
        try:
            model = Ensemble(_network_from_record(m, path) for m in members)
        except ValueError as err:
            raise DataFormatError(f"{path}: {err}") from None
        model.metadata = dict(rec.get("metadata") or {})
    else:
        model = _network_from_record(rec, path)
    model.source = str(path)
    model.novelty_state = numpy_state(rec.get("novelty"))
    return model.to(resolve_device(device)).eval()


def _network_from_record(rec: dict, path: Path) -> InteractionNetwork:
    """One network (weights, config, metadata) from a network-file or checkpoint record."""
    fmt = rec.get("format")
    if fmt == CHECKPOINT_FORMAT:
        name, config = rec.get("model_name"), rec.get("model_config")
        state = rec.get("best_state") or rec.get("model")
        metadata = dict(rec.get("metadata") or {})
    elif fmt == NETWORK_FORMAT:
        name, config, state = rec.get("model"), rec.get("config"), rec.get("state_dict")
        metadata = dict(rec.get("metadata") or {})
    else:
        raise DataFormatError(f"{path}: not a qmlx network file (format {fmt!r})")
    if name not in MODEL_CLASSES or not isinstance(config, dict) or not isinstance(state, dict):
        raise DataFormatError(f"{path}: network file without a known model class, config or weights")
    try:
        model = MODEL_CLASSES[name](**config)
        model.load_state_dict(state)
    except (TypeError, RuntimeError, KeyError) as err:
        raise DataFormatError(f"{path}: weights do not fit a {name} with config {config}: {err}") from None
    model.metadata = metadata
    return model


def _batches(model: InteractionNetwork, mols: Molecules, batch_size: int, dtype=torch.float32):
    """Batches of ``mols`` on the model's device."""
    cache = PairCache(mols, model.cutoff, target=None, dtype=dtype).to(next(model.parameters()).device)
    for start in range(0, len(mols), batch_size):
        yield cache.batch(np.arange(start, min(start + batch_size, len(mols))))


def network_domain(model: InteractionNetwork) -> Domain | None:
    """The training domain recorded in a network's metadata, or ``None`` for older files."""
    meta = getattr(model, "metadata", None) or {}
    return Domain.from_dict(meta["domain"]) if "domain" in meta else None


def check_network_domain(model: InteractionNetwork, mols: Molecules) -> DomainReport:
    """Check ``mols`` against the network's training domain (`qmlx.data.domain.check_domain`).

    Raises `DomainError` for elements the model never saw (read from the output head's element
    references when the file records no domain), atoms closer than 0.5 Å, periodic cells, or a
    charge or spin that differs from the training data; returns the soft flags.
    """
    known = torch.nonzero(model.head.reference != 0).flatten().tolist() or None
    return check_domain(network_domain(model), mols, elements=known)


@torch.no_grad()
def network_energies(
    model: InteractionNetwork, mols: Molecules, batch_size: int = 256, tabulated: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(energies (n_mol,), atom_energies (n_atoms_total,))`` in kcal/mol of ``mols``, with no
    domain check (`predict_network` and `qmlx.models.NetworkModel` check first).

    ``tabulated`` (default) reads the interactions' distance factors from tables over distance
    (`InteractionNetwork.inference_tables`), two to three times as fast for SchNet on one CPU thread
    and equal to the exact forward pass to float32 rounding; ``False`` runs the exact pass.
    """
    model.eval()
    e, ae = [], []
    for b in _batches(model, mols, batch_size):
        out = model(b, tabulated=tabulated)
        e.append(out.energy.double().cpu().numpy())
        ae.append(out.atom_energies.double().cpu().numpy())
    return np.concatenate(e), np.concatenate(ae)


def predict_network(
    model: InteractionNetwork,
    mols: Molecules | Sequence[ase.Atoms],
    batch_size: int = 256,
    tabulated: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Energies of ``mols``: ``(energies (n_mol,), atom_energies (n_atoms_total,))`` in kcal/mol.

    ``mols`` is `Molecules` or a list of ``ase.Atoms`` (positions in Å). Atom energies follow
    the flat atom order; per molecule they sum to its energy. Input outside the training domain
    raises `DomainError` (hard cases) or warns (soft cases, see `check_network_domain`);
    ``tabulated``: see `network_energies`. `qmlx.load_model` gives the same numbers through the
    model protocol, refusing molecules one by one.
    """
    mols = as_molecules(mols)
    warn_if_flagged(check_network_domain(model, mols), mols)
    return network_energies(model, mols, batch_size, tabulated)


def predict_ensemble(
    model: Ensemble,
    mols: Molecules | Sequence[ase.Atoms],
    batch_size: int = 256,
    tabulated: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean energies (n_mol,), uncertainty (n_mol,), mean atom energies (n_atoms_total,))`` in
    kcal/mol, with the same domain checks and ``tabulated`` switch as `predict_network`.

    The uncertainty is the members' standard deviation (``ddof=0``: their spread, not an estimate
    of it) times `Ensemble.uncertainty_scale`, the factor fitted on validation molecules so that
    about 68% of errors fall within ±1 uncertainty (1 for ensembles assembled without one)."""
    mols = as_molecules(mols)
    warn_if_flagged(check_network_domain(model, mols), mols)
    return ensemble_energies(model, mols, batch_size, tabulated)


def ensemble_energies(
    model: Ensemble, mols: Molecules, batch_size: int = 256, tabulated: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`predict_ensemble` with no domain check: ``(mean energies (n_mol,), uncertainty (n_mol,),
    mean atom energies (n_atoms_total,))`` in kcal/mol."""
    runs = [network_energies(m, mols, batch_size, tabulated) for m in model.members]
    energies = np.array([e for e, _ in runs])
    return energies.mean(0), energies.std(0) * model.uncertainty_scale, np.mean([ae for _, ae in runs], 0)


def energy_and_forces(
    model: InteractionNetwork, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(energy (n_mol,) kcal/mol, forces (n_atoms, 3) kcal/mol/Å, atom energies (n_atoms,)
    kcal/mol)`` from one forward and one backward pass; F = -dE/dR by autograd."""
    R = batch.R.detach().clone().requires_grad_(True)
    b = Batch(batch.Z, R, batch.mol_index, batch.idx_i, batch.idx_j, batch.n_mol)
    out = model(b)
    (grad,) = torch.autograd.grad(out.energy.sum(), R)
    return out.energy.detach(), -grad, out.atom_energies.detach()


def network_forces(
    model: InteractionNetwork, mols: Molecules, batch_size: int = 256, dtype: torch.dtype = torch.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(energies (n_mol,) kcal/mol, forces (n_atoms_total, 3) kcal/mol/Å, atom energies
    (n_atoms_total,) kcal/mol)`` of ``mols``, all from one pass per batch, with no domain check.

    ``dtype=torch.float64`` runs the model in double precision (on a copy), e.g. for finite
    difference checks.
    """
    import copy

    net = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    net.eval()
    e, f, ae = [], [], []
    for b in _batches(net, mols, batch_size, dtype):
        energy, forces, atom_energies = energy_and_forces(net, b)
        e.append(energy.double().cpu().numpy())
        f.append(forces.double().cpu().numpy())
        ae.append(atom_energies.double().cpu().numpy())
    return np.concatenate(e), np.concatenate(f), np.concatenate(ae)


def predict_forces(
    model: InteractionNetwork,
    mols: Molecules | Sequence[ase.Atoms],
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`network_forces` of ``mols`` after the domain checks of `predict_network`."""
    mols = as_molecules(mols)
    warn_if_flagged(check_network_domain(model, mols), mols)
    return network_forces(model, mols, batch_size, dtype)
