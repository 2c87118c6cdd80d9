"""schnetpack 2.x SchNet potentials as qmlx `SchNet` networks, with the same energies.

schnetpack's ``NeuralNetworkPotential`` with a ``SchNet`` representation computes, for atoms with
features ``x_i`` after the interactions (Schütt et al., JCP 148, 241722, 2018; schnetpack 2.x,
Schütt et al., JCP 158, 144801, 2023),

    E = sum_i [ outnet(x_i) + mean + atomref[Z_i] ],

with ``outnet`` the ``Atomwise`` head (two dense layers, SiLU in between by default; the activation
is not stored in a state dict), ``mean`` the training energy per atom and ``atomref`` per-element
references, both buffers of the ``AddOffsets`` post-processor (zero unless it adds them). Its
interactions are qmlx's `SchNetInteraction` written with a full instead of a half pair list, so the
conversion is a renaming of weights:

==========================================================  ===========================================
schnetpack                                                  qmlx `SchNet`
==========================================================  ===========================================
``representation.embedding.weight (max_z, F)``              ``embedding.weight`` (``max_z = rows - 1``)
``representation.radial_basis.offsets, widths``             ``rbf.centers``, ``rbf_width`` (one width)
``representation.cutoff_fn.cutoff``                         ``cutoff``
``representation.interactions.t.in2f``                      ``interactions.t.in2f``
``...filter_network.0``, ``.1``                             ``...filter1``, ``filter2``
``...f2out.0``, ``.1``                                      ``...f2out``, ``dense``
``output_modules.k.outnet.0``, ``.1``                       ``head.mlp.0``, ``head.mlp.1``
``postprocessors.k.mean``, ``atomref`` (energy unit)        ``head.reference`` (kcal/mol)
==========================================================  ===========================================

qmlx networks give kcal/mol: the head's ``scale`` holds the unit's factor to kcal/mol (23.06 for eV,
schnetpack's default) and ``reference[Z]`` the factor times ``mean + atomref[Z]``.

What a model is read from (`read_schnetpack`):

- a state dict (``torch.save(model.state_dict(), path)``), read with ``weights_only=True``;
- a training folder of ``spktrain`` (``config.yaml`` and ``best_model``), or a ``best_model`` file:
  a pickled module, which runs code when unpickled by torch. It is read only with
  ``trust_pickle=True``, and then without schnetpack: classes outside torch become inert records of
  their attributes, from which the weights and settings (head activation, aggregation, offsets,
  property) are taken. ``config.yaml`` gives the settings where there is no pickle, and the energy
  unit (``data.property_units``, else the database's own metadata).

Other architectures (PaiNN, SO3net, FieldSchNet), other radial bases or cutoffs, charge and spin
embeddings, averaged (intensive) outputs and positions not in Å are refused, naming what is
supported (`SUPPORTED`).
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qmlx.data.molecules import energy_unit
from qmlx.errors import DataFormatError
from qmlx.nn.models import HEAD_ACTIVATIONS, SchNet
from qmlx.units import convert_energy

#: what `convert_schnetpack` converts
SUPPORTED = (
    "schnetpack 2.x SchNet potentials (representation SchNet with GaussianRBF and CosineCutoff, shifted "
    "softplus interactions, one Atomwise energy head of two layers summed over atoms, optional "
    "AddOffsets)"
)
_LENGTH_NAMES = {"ang", "angstrom", "å", "a"}
#: activation functions by the name a pickle or config gives them
_ACTIVATIONS = {"silu": "silu", "shifted_softplus": "ssp", "ssp": "ssp"}
#: modules the reader of pickled models imports for real; every other class becomes a record
_REAL_MODULES = ("torch", "collections", "copyreg", "numpy")
#: built-in types a pickled module holds (sets of names, and so on); other built-ins are records
_REAL_BUILTINS = {
    "set",
    "frozenset",
    "dict",
    "list",
    "tuple",
    "bool",
    "int",
    "float",
    "str",
    "complex",
    "slice",
}


@dataclass
class SchnetpackSource:
    """A schnetpack model as read from disk.

    state_dict : the module's weights and buffers by schnetpack's key names.
    source : the file or folder read.
    settings : what the pickle or ``config.yaml`` said of the model (``representation``,
        ``head_activation``, ``aggregation``, ``add_mean``, ``add_atomrefs``, ``is_extensive``,
        ``property``, ``unit``, ``unit_from``, ``distance_unit``, ``interaction_activation``); absent keys take
        schnetpack's defaults.
    """

    state_dict: dict[str, torch.Tensor]
    source: Path
    settings: dict = field(default_factory=dict)


# -- reading ------------------------------------------------------------------------------------
def read_schnetpack(path: str | os.PathLike, trust_pickle: bool = False) -> SchnetpackSource:
    """A schnetpack model from a state dict, a pickled ``best_model`` (``trust_pickle`` only) or a
    training folder holding ``best_model`` and ``config.yaml``. Raises `DataFormatError` naming the
    file for anything it cannot read."""
    path = Path(path)
    settings: dict = {}
    if path.is_dir():
        config = path / "config.yaml"
        if config.is_file():
            settings.update(_config_settings(config))
        path = path / "best_model"
        if not path.is_file():
            raise DataFormatError(
                f"{path.parent}: no best_model in this folder; give the model's state dict instead "
                "(torch.save(model.state_dict(), 'model_state.pt') in schnetpack's environment)"
            )
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file or folder")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise DataFormatError(
                f"{path}: a pickled model; unpickling runs code from the file, so qmlx reads it only "
                "with --trust-pickle (trust_pickle=True), for files from a source you trust"
            ) from None
        obj = _load_pickled(path)
        state, found = _module_state(obj)
        settings.update(found)  # what the module itself says wins over the config
        return SchnetpackSource(state, path, settings)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is not its own
        raise DataFormatError(f"{path}: not a torch file ({type(err).__name__}: {err})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a Lightning checkpoint
        obj = {k.removeprefix("model."): v for k, v in obj["state_dict"].items()}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataFormatError(f"{path}: not a state dict (a mapping of names to tensors)")
    return SchnetpackSource(dict(obj), path, settings)


def _config_settings(path: Path) -> dict:
    """Settings from a ``config.yaml`` that ``spktrain`` wrote (interpolations resolved)."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataFormatError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    config = _resolve(config, config) if isinstance(config, dict) else {}
    model, data = config.get("model") or {}, config.get("data") or {}
    settings: dict = {}
    representation = model.get("representation") or {}
    if "_target_" in representation:
        settings["representation"] = str(representation["_target_"]).rsplit(".", 1)[-1]
    if "activation" in representation:
        settings["interaction_activation"] = _activation_name(representation["activation"])
    heads = [m for m in model.get("output_modules") or [] if str(m.get("_target_", "")).endswith("Atomwise")]
    if len(heads) == 1:
        head = heads[0]
        settings["property"] = head.get("output_key", "y")
        settings["aggregation"] = head.get("aggregation_mode", "sum")
        if "activation" in head:
            settings["head_activation"] = _activation_name(head["activation"])
    for post in model.get("postprocessors") or []:
        if str(post.get("_target_", "")).endswith("AddOffsets"):
            settings["add_mean"] = bool(post.get("add_mean", False))
            settings["add_atomrefs"] = bool(post.get("add_atomrefs", False))
            settings["is_extensive"] = bool(post.get("is_extensive", True))
    units = data.get("property_units") or {}
    if settings.get("property") in units:
        settings["unit"], settings["unit_from"] = (
            units[settings["property"]],
            f"{path.name} (data.property_units)",
        )
    elif data.get("datapath"):
        settings.update(_database_units(Path(str(data["datapath"])), settings.get("property")))
    if data.get("distance_unit"):
        settings["distance_unit"] = data["distance_unit"]
    return settings


def _database_units(db: Path, prop: str | None) -> dict:
    """The energy and distance units a schnetpack database records in its metadata (if it is here
    and readable; `qmlx.data.io.database_metadata`)."""
    from qmlx.data.io import database_metadata

    if prop is None:
        return {}
    try:
        meta = database_metadata(db)
    except DataFormatError:  # a database that cannot be read says nothing of units
        return {}
    out = {}
    if prop in (meta.get("_property_unit_dict") or {}):
        out["unit"], out["unit_from"] = meta["_property_unit_dict"][prop], f"the metadata of {db}"
    if meta.get("_distance_unit"):
        out["distance_unit"] = meta["_distance_unit"]
    return out


def _resolve(node, root):
    """``node`` with OmegaConf-style ``${a.b}`` references to other entries of ``root`` resolved
    (others, such as ``${hydra:...}``, are left as they are)."""
    if isinstance(node, dict):
        return {k: _resolve(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root) for v in node]
    if not isinstance(node, str):
        return node

    def lookup(ref: str):
        value = root
        for part in ref.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return _resolve(value, root)

    whole = re.fullmatch(r"\$\{([\w.]+)\}", node)
    if whole:
        value = lookup(whole.group(1))
        return node if value is None else value
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(lookup(m.group(1)) or m.group(0)), node)


def _activation_name(value) -> str:
    """An activation's name as `SchNet` records it, from a config entry or a pickled function."""
    text = (
        value.get("_target_", "")
        if isinstance(value, dict)
        else getattr(value, "_qualname", None)
        or (f"{getattr(value, '__module__', '')}.{getattr(value, '__name__', value)}")
    )
    name = str(text).rsplit(".", 1)[-1].lower()
    return _ACTIVATIONS.get(name, name)


class _Record:
    """An object of a class outside torch, as the pickle reader builds it: its attributes only."""

    _qualname = "?"

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _RecordUnpickler(pickle.Unpickler):
    """Unpickles torch objects for real and every other class or function as a `_Record`."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] in _REAL_MODULES or (
            module in ("builtins", "__builtin__") and name in _REAL_BUILTINS
        ):
            return super().find_class(module, name)
        return type(name, (_Record,), {"_qualname": f"{module}.{name}"})


class _RecordPickle:
    """The ``pickle_module`` handed to ``torch.load`` for pickled models."""

    Unpickler = _RecordUnpickler
    load = staticmethod(lambda f, **kw: _RecordUnpickler(f, **kw).load())
    __name__ = "qmlx_record_pickle"


def _load_pickled(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RecordPickle)
    except Exception as err:  # noqa: BLE001 - any failure of a foreign pickle is a format error
        raise DataFormatError(
            f"{path}: cannot read the pickled model ({type(err).__name__}: {err})"
        ) from None


def _module_state(obj) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, settings)`` of an unpickled module tree: parameters and persistent buffers by
    their dotted names, and the settings its modules' attributes give."""
    state: dict[str, torch.Tensor] = {}
    settings: dict = {}

    def walk(module, prefix: str) -> None:
        attrs = vars(module)
        for name, value in list((attrs.get("_parameters") or {}).items()) + list(
            (attrs.get("_buffers") or {}).items()
        ):
            if value is not None and name not in (attrs.get("_non_persistent_buffers_set") or set()):
                state[prefix + name] = value.detach()
        qualname = getattr(type(module), "_qualname", type(module).__qualname__)
        kind = qualname.rsplit(".", 1)[-1]
        if prefix == "representation.":
            settings["representation"] = kind
        if kind == "Atomwise" and prefix.startswith("output_modules."):
            settings.setdefault("atomwise", []).append(
                {"property": attrs.get("output_key"), "aggregation": attrs.get("aggregation_mode", "sum")}
            )
        if kind == "AddOffsets":
            settings.update(
                add_mean=bool(attrs.get("add_mean")),
                add_atomrefs=bool(attrs.get("add_atomrefs")),
                is_extensive=bool(attrs.get("is_extensive", True)),
            )
        if prefix.startswith("output_modules.") and prefix.endswith("outnet.0.") and attrs.get("activation"):
            settings["head_activation"] = _activation_name(attrs["activation"])
        if prefix.startswith("representation.interactions.0.filter_network.0.") and attrs.get("activation"):
            settings["interaction_activation"] = _activation_name(attrs["activation"])
        for name, child in (attrs.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(obj, "")
    heads = settings.pop("atomwise", [])
    if len(heads) == 1:
        settings["property"] = heads[0]["property"]
        settings["aggregation"] = heads[0]["aggregation"]
    return state, settings


# -- converting ---------------------------------------------------------------------------------
def convert_schnetpack(
    source: SchnetpackSource, unit: str | None = None, head_activation: str | None = None
) -> tuple[SchNet, dict]:
    """``(model, info)``: the qmlx `SchNet` with the same energies (in kcal/mol) as ``source``, and
    what the conversion assumed (``unit``, ``unit_from``, ``head_activation``, ``property``).

    ``unit``: the energy unit schnetpack's model gives, where neither the pickle nor the config
    says it (schnetpack's default, eV, otherwise); stating one that contradicts them is an error.
    ``head_activation``: ``"silu"`` (schnetpack's default) or ``"ssp"``, where the file does not say.
    Raises `DataFormatError` naming the file for a model it cannot convert.
    """
    sd, where, s = source.state_dict, source.source, source.settings

    def refuse(why: str) -> DataFormatError:
        return DataFormatError(f"{where}: {why}; qmlx converts {SUPPORTED}")

    arch = s.get("representation") or _architecture(sd)
    if arch != "SchNet":
        return_type = "an unknown" if arch is None else f"a {arch}"
        raise refuse(f"{return_type} model")
    if any(k.startswith("representation.electronic_embeddings.") for k in sd):
        raise refuse("charge or spin embeddings")
    if "representation.embedding.weight" not in sd:
        raise refuse("a nuclear embedding other than one weight per element")
    if s.get("interaction_activation", "ssp") != "ssp":
        raise refuse(f"interactions with activation {s['interaction_activation']}")
    if s.get("aggregation", "sum") != "sum":
        raise refuse(f"atom outputs aggregated by {s['aggregation']!r}, not summed")
    if str(s.get("distance_unit", "Ang")).lower() not in _LENGTH_NAMES:
        raise refuse(f"positions in {s['distance_unit']}, not Å")
    heads = sorted({k.split(".")[1] for k in sd if k.startswith("output_modules.") and ".outnet." in k})
    if len(heads) != 1:
        raise refuse(f"{len(heads)} Atomwise output heads")
    head = f"output_modules.{heads[0]}.outnet."
    layers = sorted({k[len(head) :].split(".")[0] for k in sd if k.startswith(head)})
    if layers != ["0", "1"]:
        raise refuse(f"an Atomwise head of {len(layers)} layers")

    unit, unit_from = _energy_unit(s.get("unit"), unit, where)
    unit_from = s.get("unit_from", unit_from)
    activation = s.get("head_activation") or head_activation or "silu"
    if head_activation and s.get("head_activation") and head_activation != s["head_activation"]:
        raise DataFormatError(
            f"{where}: the file's head activation is {s['head_activation']}, not {head_activation}"
        )
    if activation not in HEAD_ACTIVATIONS:
        raise refuse(f"a head with activation {activation}")

    embedding = sd["representation.embedding.weight"]
    offsets = sd["representation.radial_basis.offsets"].double()
    widths = sd["representation.radial_basis.widths"].double()
    if len(offsets) < 2 or not torch.allclose(widths, widths[0].expand_as(widths), rtol=1e-6, atol=0):
        raise refuse("a radial basis without one common Gaussian width")
    cutoff = float(sd["representation.cutoff_fn.cutoff"].reshape(-1)[0])
    n_interactions = len({k.split(".")[2] for k in sd if k.startswith("representation.interactions.")})
    filter0 = sd["representation.interactions.0.filter_network.0.weight"]
    config = dict(
        n_features=int(embedding.shape[1]),
        n_interactions=n_interactions,
        cutoff=cutoff,
        rbf_spacing=float(offsets[-1] - offsets[0]) / (len(offsets) - 1),
        rbf_width=float(widths[0]),
        n_filters=int(filter0.shape[0]),
        max_z=int(embedding.shape[0]) - 1,
        rbf_start=float(offsets[0]),
        head_activation=activation,
    )
    model = SchNet(**config)
    if model.rbf.n_rbf != len(offsets) or abs(float(offsets[-1]) - cutoff) > 1e-6 * max(cutoff, 1.0):
        raise refuse("a radial basis that does not end at the cutoff")
    if int(sd[head + "0.weight"].shape[0]) != model.head.mlp[0].out_features:
        raise refuse(
            f"an Atomwise head with {sd[head + '0.weight'].shape[0]} hidden units, not n_features // 2"
        )

    new = {"embedding.weight": embedding, "rbf.centers": offsets.float()}
    renames = {"in2f": "in2f", "filter_network.0": "filter1", "filter_network.1": "filter2",
               "f2out.0": "f2out", "f2out.1": "dense"}  # fmt: skip
    for t in range(n_interactions):
        for theirs, ours in renames.items():
            for p in ("weight", "bias"):
                key = f"representation.interactions.{t}.{theirs}.{p}"
                if key in sd:
                    new[f"interactions.{t}.{ours}.{p}"] = sd[key]
    for i in (0, 1):
        for p in ("weight", "bias"):
            new[f"head.mlp.{i}.{p}"] = sd[f"{head}{i}.{p}"]
    factor = convert_energy(1.0, unit, "kcal/mol")
    offsets_energy = _offsets(sd, s, len(model.head.reference), where)
    new["head.scale"] = torch.full_like(model.head.scale, factor)
    new["head.reference"] = (offsets_energy * factor).to(model.head.reference.dtype)
    try:
        model.load_state_dict(new)
    except RuntimeError as err:
        raise refuse(f"weights that do not fit ({str(err).splitlines()[0]})") from None
    info = {"unit": unit, "unit_from": unit_from, "head_activation": activation,
            "property": s.get("property", "energy")}  # fmt: skip
    if "head_activation" not in s:
        info["head_activation_from"] = "option" if head_activation else "schnetpack default (not in the file)"
    return model.eval(), info


def _architecture(sd: dict) -> str | None:
    """The representation a state dict's keys belong to."""
    keys = [k for k in sd if k.startswith("representation.")]
    if any(".filter_network." in k for k in keys) and any(".in2f." in k for k in keys):
        return "SchNet"
    if any("interatomic_context_net" in k or k.startswith("representation.filter_net") for k in keys):
        return "PaiNN"
    if any("so3" in k.lower() for k in keys):
        return "SO3net"
    return None


def _energy_unit(found: str | None, stated: str | None, where: Path) -> tuple[str, str]:
    """``(unit, where it came from)``: the file's unit, else the stated one, else eV."""

    def name(text: str) -> str:
        try:
            return energy_unit(text)
        except DataFormatError as err:
            raise DataFormatError(f"{where}: {err}") from None

    if found is not None:
        if stated is not None and name(stated) != name(found):
            raise DataFormatError(f"{where}: the model's energies are in {found}, not {stated}")
        return name(found), "the file"
    if stated is not None:
        return name(stated), "option"
    return "eV", "schnetpack default (not in the file)"


def _offsets(sd: dict, settings: dict, size: int, where: Path) -> torch.Tensor:
    """Per element, ``mean + atomref[Z]`` in the model's unit (float64, ``(size,)``)."""
    out = torch.zeros(size, dtype=torch.float64)
    prefixes = {
        k.rsplit(".", 1)[0]
        for k in sd
        if k.startswith("postprocessors.") and k.endswith((".mean", ".atomref"))
    }
    if len(prefixes) > 1:
        raise DataFormatError(f"{where}: {len(prefixes)} offset post-processors; qmlx converts one")
    for prefix in prefixes:
        if settings.get("is_extensive", True) is False:
            raise DataFormatError(
                f"{where}: offsets of an intensive property; qmlx converts extensive energies"
            )
        if settings.get("add_atomrefs", True) and prefix + ".atomref" in sd:
            ref = sd[prefix + ".atomref"].double().reshape(-1)
            out[: min(size, len(ref))] += ref[:size]
        if settings.get("add_mean", True) and prefix + ".mean" in sd:
            out += sd[prefix + ".mean"].double().reshape(-1)[0]
    return out


# -- importing ----------------------------------------------------------------------------------
def import_schnetpack(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    unit: str | None = None,
    head_activation: str | None = None,
    description: str | None = None,
    data: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
) -> tuple[Path, dict]:
    """Convert the schnetpack model at ``path`` (`read_schnetpack`, `convert_schnetpack`) and save
    it as a qmlx network file at ``out``; returns ``(out, metadata)``.

    ``description``: what the energy is (quantity, level of theory), recorded as the target's
    description. ``data``: the training molecules (anything `qmlx.data.load_dataset` reads, e.g.
    the schnetpack database), from which the file records the training domain and a novelty model
    (`qmlx.novelty`): with ``split`` (a schnetpack ``split.npz``; by default the one in a training
    folder), its ``train_idx`` molecules are the domain and its ``val_idx`` calibrate novelty;
    without a split, every molecule is the domain. Without ``data`` the file records no domain, and
    predictions are checked only for elements the model's atom references know.
    """
    import numpy as np

    import qmlx
    from qmlx.data import load_dataset
    from qmlx.data.domain import Domain
    from qmlx.nn.io import save_network
    from qmlx.novelty import fit_domain_model

    source = read_schnetpack(path, trust_pickle=trust_pickle)
    model, info = convert_schnetpack(source, unit=unit, head_activation=head_activation)
    prop = info["property"]
    metadata = {
        "name": Path(out).stem,
        "model": "SchNet",
        "model_config": dict(model.config),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "energy_unit": "kcal/mol",
        "length_unit": "Angstrom",
        "target": prop,
        "target_description": description or f"{prop} of a schnetpack model",
        "imported_from": {"format": "schnetpack", "path": str(path), **info},
        "qmlx_version": qmlx.__version__,
        "torch_version": torch.__version__,
    }
    if data is not None:
        mols = load_dataset(data)
        split_file = Path(split) if split else (Path(path) / "split.npz" if Path(path).is_dir() else None)
        train, calibration = np.arange(len(mols)), None
        if split_file is not None and split_file.is_file():
            with np.load(split_file) as f:
                if "train_idx" not in f:
                    raise DataFormatError(f"{split_file}: no train_idx (not a schnetpack split file)")
                train = np.asarray(f["train_idx"], dtype=int)
                calibration = np.asarray(f["val_idx"], dtype=int) if "val_idx" in f else None
            metadata["split_file"] = str(split_file)
        elif split is not None:
            raise DataFormatError(f"{split}: no such split file")
        if len(train) == 0 or train.min() < 0 or train.max() >= len(mols):
            raise DataFormatError(f"{split_file}: indices outside the {len(mols)} molecules of {data}")
        metadata["data"] = str(data)
        metadata["n_train"] = int(len(train))
        metadata["domain"] = Domain.from_molecules(mols.subset(train)).to_dict()
        model.novelty_state = fit_domain_model(mols, train, calibration).to_state()
    save_network(model, out, metadata=metadata)
    return Path(out), metadata
