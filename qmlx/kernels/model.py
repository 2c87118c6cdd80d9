"""A trained KRR model (representation + `KernelRidge` or `NystromKernelRidge`), its training recipe
and its HDF5 file.

File layout (schema ``qmlx.krr``, version `SCHEMA_VERSION`), written atomically (temporary file
in the same folder, then ``os.replace``):

- root attributes: ``schema``, ``schema_version``, ``qmlx_version``, ``representation`` (name),
  ``representation_params`` (JSON), ``regressor`` (class name: ``KernelRidge``, the default
  for files without it, or ``NystromKernelRidge``), ``regressor_params`` (JSON, all
  hyperparameters), ``kernel``, ``sigma``, ``lam``, ``y_mean``, ``target``,
  ``unit`` (of predictions, ``kcal/mol``), ``representation_unit`` (``atomic units (Bohr)``),
  ``metadata`` (JSON: data set, fold, sizes, test metrics, ...)
- ``representation/``: the representation's fitted state, one dataset per array of its
  ``fitted_state()`` (``n_max`` for the Coulomb-matrix family; ``bags`` for Bag of Bonds, rows
  ``(Z_a, Z_b, size)``, ``Z_b = 0`` for element bags)
- ``X_fit``: the rows the kernel expansion runs over: training representations, (n, d) or
  (n, L, d) for random Coulomb matrix sets, or the M Nyström centres, (M, d) or (M, L, d)
- ``alpha``: (n,) or (M,) regression weights; predictions are ``y_mean + k(x, X_fit) @ alpha``
  for both regressors
- optional ``baseline``: (k, 2) rows ``(Z, reference energy in kcal/mol)`` added to predictions
- optional ``novelty/``: the one-class model of the training domain (`qmlx.novelty`), its settings
  as the JSON attribute ``settings`` and one dataset per array
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import ase
import h5py
import numpy as np

from qmlx._io import atomic_path
from qmlx.data.domain import Domain, DomainReport, check_domain, warn_if_flagged
from qmlx.data.molecules import Molecules, as_molecules
from qmlx.errors import DataFormatError, DomainError
from qmlx.kernels.krr import KernelRidge
from qmlx.kernels.nystrom import NystromKernelRidge
from qmlx.represent import RepresentationError, make_representation

SCHEMA = "qmlx.krr"
SCHEMA_VERSION = 1
#: regressors a file may name in its ``regressor`` attribute
REGRESSORS = {"KernelRidge": KernelRidge, "NystromKernelRidge": NystromKernelRidge}
ENERGY_UNIT = "kcal/mol"


class KRRModel:
    """A fitted representation plus a fitted `KernelRidge`; predicts energies in kcal/mol.

    Parameters
    ----------
    representation_name : key of `qmlx.represent.REPRESENTATIONS` (``"sorted-cm"``, ...).
    representation : the fitted transformer.
    regressor : the fitted `KernelRidge` or `NystromKernelRidge`.
    target : name of the target the model was trained on.
    metadata : free-form JSON-serializable facts (data set, fold, test MAE, ...).
    baseline : per-element reference energies ``{Z: kcal/mol}`` subtracted before the regression
        and added back to its predictions (``None``: none). The energy is then
        ``sum_atoms ref[Z] + KRR(x)``, which suits total energies.
    """

    def __init__(
        self,
        representation_name: str,
        representation,
        regressor: KernelRidge,
        target: str = "atomization_energy",
        metadata: dict | None = None,
        baseline: dict[int, float] | None = None,
    ):
        self.representation_name = representation_name
        self.representation = representation
        self.regressor = regressor
        self.target = target
        self.unit = ENERGY_UNIT
        self.metadata = dict(metadata or {})
        self.baseline = None if baseline is None else {int(z): float(e) for z, e in baseline.items()}
        self.novelty_state: dict | None = None  # the training domain's one-class model (`qmlx.novelty`)

    def baseline_energies(self, mols: Molecules) -> np.ndarray:
        """(n_atoms_total,) each atom's reference energy in kcal/mol (zeros without a baseline)."""
        if self.baseline is None:
            return np.zeros(len(mols.Z))
        lookup = np.zeros(int(max(max(self.baseline), mols.Z.max())) + 1)
        lookup[list(self.baseline)] = list(self.baseline.values())
        return lookup[mols.Z]

    @property
    def domain(self) -> Domain | None:
        """The training domain recorded in the metadata (``None`` for older files)."""
        return Domain.from_dict(self.metadata["domain"]) if "domain" in self.metadata else None

    def check_domain(self, mols: Molecules) -> DomainReport:
        """Check ``mols`` against the training domain and the fitted representation.

        Raises `DomainError` for what the model cannot answer: an element it never saw, atoms
        closer than 0.5 Å, a periodic cell, another charge or spin, or a molecule larger than
        the fitted Coulomb matrices (``n_max``). Returns the soft flags per molecule (see
        `qmlx.data.domain.check_domain`).
        """
        mols = as_molecules(mols)
        report = check_domain(self.domain, mols, elements=self.representation.known_elements())
        try:
            self.representation.check_fits(mols)
        except RepresentationError as err:
            raise DomainError(str(err)) from None
        return report

    def energies(self, mols: Molecules) -> np.ndarray:
        """(n_molecules,) predicted energies in kcal/mol of ``mols``, with no domain check (see
        `predict_molecules`)."""
        X = self.representation.transform(mols)
        base = np.bincount(mols.mol_index, weights=self.baseline_energies(mols), minlength=len(mols))
        return self.regressor.predict(X) + base

    def predict_molecules(self, mols: Molecules | Sequence[ase.Atoms]) -> np.ndarray:
        """(n_molecules,) predicted energies in kcal/mol for `Molecules` (positions in Å) or ase.Atoms.

        Input outside the training domain raises `DomainError` (see `check_domain`); molecules
        with soft flags are predicted, with one warning. `qmlx.load_model` gives the same numbers
        through the model protocol, refusing molecules one by one.
        """
        mols = as_molecules(mols)
        warn_if_flagged(self.check_domain(mols), mols, stacklevel=3)
        return self.energies(mols)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (HDF5, atomically); see the module docstring."""
        return save_krr(self, path)

    @property
    def support(self) -> np.ndarray:
        """The rows the kernel expansion runs over: the training features (exact) or the Nyström
        centres, (n, d) or (n, L, d); predictions are ``y_mean + k(x, support) @ alpha``."""
        reg = self.regressor
        return reg.centers_ if isinstance(reg, NystromKernelRidge) else reg.X_fit_

    @classmethod
    def from_pipeline(cls, pipeline, target: str = "energy", metadata: dict | None = None) -> KRRModel:
        """A model from a fitted scikit-learn ``Pipeline([(name, representation), (name, regressor)])``
        of a qmlx representation and a `KernelRidge` or `NystromKernelRidge` trained on kcal/mol."""
        from qmlx.represent import REPRESENTATIONS

        steps = [step for _, step in pipeline.steps]
        names = {cls_: name for name, cls_ in REPRESENTATIONS.items()}
        if len(steps) != 2 or type(steps[0]) not in names or type(steps[1]) not in REGRESSORS.values():
            raise DataFormatError(
                "a saveable pipeline is a qmlx representation followed by KernelRidge or NystromKernelRidge"
            )
        return cls(names[type(steps[0])], steps[0], steps[1], target, metadata)

    def __repr__(self) -> str:
        r = self.regressor
        size = (
            f"{len(r.alpha_)} Nyström centres"
            if isinstance(r, NystromKernelRidge)
            else f"{len(r.alpha_)} training molecules"
        )
        return (
            f"KRRModel({self.representation_name}, {r.kernel} kernel, sigma={r.sigma:g}, lam={r.lam:g}, "
            f"{size}, {self.target} [{self.unit}])"
        )


def save_krr(model, path: str | os.PathLike) -> Path:
    """Write ``model`` (a `KRRModel`, or a fitted scikit-learn pipeline of a representation and a
    kernel ridge regressor, see `KRRModel.from_pipeline`) to ``path`` (HDF5, schema ``qmlx.krr``)
    through a temporary file and ``os.replace``."""
    from qmlx import __version__

    if not isinstance(model, KRRModel):
        model = KRRModel.from_pipeline(model)
    path = Path(path)
    rep, reg = model.representation, model.regressor
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            schema=SCHEMA,
            schema_version=SCHEMA_VERSION,
            qmlx_version=__version__,
            representation=model.representation_name,
            representation_params=json.dumps(_jsonable(rep.get_params())),
            representation_unit="atomic units (Bohr, e^2/Bohr)",
            regressor=type(reg).__name__,
            regressor_params=json.dumps(_jsonable(_regressor_params(reg))),
            kernel=reg.kernel,
            sigma=float(reg.sigma),
            lam=float(reg.lam),
            y_mean=float(reg.y_mean_),
            target=model.target,
            unit=model.unit,
            metadata=json.dumps(_jsonable(model.metadata)),
        )
        group = f.create_group("representation")
        for key, value in rep.fitted_state().items():
            group.create_dataset(key, data=value)
        f.create_dataset("X_fit", data=model.support, compression="gzip", compression_opts=1)
        f.create_dataset("alpha", data=reg.alpha_)
        if model.baseline is not None:
            rows = np.array([[z, e] for z, e in sorted(model.baseline.items())], dtype=np.float64)
            f.create_dataset("baseline", data=rows).attrs["unit"] = ENERGY_UNIT
        novelty = getattr(model, "novelty_state", None)
        if novelty is not None:
            group = f.create_group("novelty")
            group.attrs["settings"] = json.dumps(novelty["settings"])
            for key, value in novelty["arrays"].items():
                group.create_dataset(key, data=value, compression="gzip", compression_opts=1)
    return path


def is_krr_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is an HDF5 file whose root attribute ``schema`` is ``"qmlx.krr"``."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return _str(f.attrs.get("schema")) == SCHEMA
    except (OSError, TypeError, ValueError):
        return False


def load_krr(path: str | os.PathLike) -> KRRModel:
    """Read a model written by `save_krr`; a wrong, newer or corrupt file raises `DataFormatError`."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    try:
        if not h5py.is_hdf5(path):
            raise DataFormatError(f"{path}: not an HDF5 file, so not a qmlx KRR model")
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            schema = _str(attrs.get("schema"))
            if schema != SCHEMA:
                raise DataFormatError(
                    f"{path}: not a qmlx KRR model (schema {schema!r}, expected {SCHEMA!r})"
                )
            version = int(attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise DataFormatError(
                    f"{path}: KRR model schema version {version}, but this qmlx reads version {SCHEMA_VERSION}"
                )
            rep_name = _str(attrs["representation"])
            params = json.loads(_str(attrs["representation_params"]))
            state = {key: data[()] for key, data in f["representation"].items()}
            rep = type(make_representation(rep_name)).from_fitted_state(params, state)
            reg_name = _str(attrs.get("regressor", "KernelRidge"))
            if reg_name not in REGRESSORS:
                raise DataFormatError(
                    f"{path}: unknown regressor {reg_name!r}; this qmlx reads {', '.join(REGRESSORS)}"
                )
            known = REGRESSORS[reg_name]().get_params()
            params = {
                k: v for k, v in json.loads(_str(attrs.get("regressor_params", "{}"))).items() if k in known
            }
            params.update(kernel=_str(attrs["kernel"]), sigma=float(attrs["sigma"]), lam=float(attrs["lam"]))
            reg = REGRESSORS[reg_name](**params)
            support = f["X_fit"][()].astype(np.float64)
            reg.alpha_ = f["alpha"][()].astype(np.float64)
            reg.y_mean_ = float(attrs["y_mean"])
            reg.jitter_ = 0.0
            reg.n_features_in_ = support.shape[-1]
            if isinstance(reg, NystromKernelRidge):
                reg.centers_ = support
                reg.n_centers_ = len(support)
            else:
                reg.X_fit_ = support
            unit = _str(attrs["unit"])
            if unit != ENERGY_UNIT:
                raise DataFormatError(f"{path}: predictions are in {unit!r}, expected {ENERGY_UNIT!r}")
            if reg.alpha_.shape != (len(support),):
                raise DataFormatError(f"{path}: {len(reg.alpha_)} weights for {len(support)} kernel rows")
            baseline = None
            if "baseline" in f:
                rows = f["baseline"][()]
                baseline = {int(z): float(e) for z, e in rows}
            model = KRRModel(
                rep_name,
                rep,
                reg,
                _str(attrs["target"]),
                json.loads(_str(attrs.get("metadata", "{}"))),
                baseline,
            )
            if "novelty" in f:
                group = f["novelty"]
                model.novelty_state = {
                    "settings": json.loads(_str(group.attrs["settings"])),
                    "arrays": {key: data[()] for key, data in group.items()},
                }
    except DataFormatError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError/ValueError on truncated or tampered files
        raise DataFormatError(
            f"{path}: corrupt or incomplete qmlx KRR model ({type(err).__name__}: {err})"
        ) from None
    return model


def _regressor_params(reg) -> dict:
    """The regressor's hyperparameters worth keeping: all but the thread count (a property of the
    machine) and a random generator (not serializable; the drawn centres are saved instead)."""
    params = reg.get_params()
    params.pop("n_jobs", None)
    seed = params.get("random_state")
    if seed is not None and not isinstance(seed, Integral):
        params["random_state"] = None
    return params


def _str(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.random.Generator, np.random.RandomState)):
        raise ValueError("a representation with a Generator as random_state cannot be saved; use an int seed")
    return obj
