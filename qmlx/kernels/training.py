"""Train a KRR model on a `Molecules` set: representation, inner-CV hyperparameters, test metrics."""

from __future__ import annotations

import time

import numpy as np

from qmlx.chem import element_counts, fit_element_energies
from qmlx.data.domain import Domain, screen
from qmlx.data.molecules import Molecules
from qmlx.errors import TrainingError
from qmlx.kernels.krr import KernelRidge
from qmlx.kernels.model import KRRModel
from qmlx.kernels.nystrom import NystromKernelRidge
from qmlx.kernels.search import KernelProvider, select_hyperparameters
from qmlx.metrics import metrics
from qmlx.novelty import fit_domain_model
from qmlx.represent import make_representation

#: (sigma grid, lambda grid) per (representation, kernel); sigma in atomic units of the features
DEFAULT_GRIDS: dict[tuple[str, str], tuple[list[float], list[float]]] = {
    # factors of sqrt(2) where the QM7 optimum lies (sigma 20-40); lambda by decades
    ("eigenspectrum", "gaussian"): (
        [10.0, 14.0, 20.0, 28.0, 40.0, 57.0, 80.0, 113.0, 160.0, 320.0, 640.0],
        [1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3],
    ),
    ("eigenspectrum", "laplacian"): ([40.0, 80.0, 160.0, 320.0], [1e-10, 1e-7, 1e-4]),
    ("sorted-cm", "laplacian"): ([400.0, 800.0, 1600.0, 3200.0], [1e-10, 1e-7, 1e-4]),
    ("sorted-cm", "gaussian"): ([25.0, 50.0, 100.0, 200.0], [1e-10, 1e-8, 1e-6, 1e-4]),
    ("random-cm", "laplacian"): ([200.0, 400.0, 800.0, 1600.0], [1e-8, 1e-6, 1e-4, 1e-2]),
    ("random-cm", "gaussian"): ([50.0, 100.0, 200.0], [1e-10, 1e-8, 1e-6, 1e-4]),
    ("cm", "laplacian"): ([400.0, 800.0, 1600.0, 3200.0], [1e-10, 1e-7, 1e-4]),
    ("cm", "gaussian"): ([25.0, 50.0, 100.0, 200.0], [1e-10, 1e-8, 1e-6, 1e-4]),
    ("bob", "laplacian"): ([800.0, 1600.0, 3200.0, 6400.0], [1e-8, 1e-6, 1e-4, 1e-2]),
    ("bob", "gaussian"): ([20.0, 40.0, 80.0, 160.0], [1e-10, 1e-8, 1e-6, 1e-4]),
}
DEFAULT_KERNEL = {"eigenspectrum": "gaussian"}
#: ``none``: regress the target itself (minus its mean); ``elements``: regress what is left after
#: per-element reference energies fitted on the training part (`qmlx.chem`), for total energies
BASELINES = ("none", "elements")
#: kernel ridge solvers: exact (Cholesky) or Nyström (`NystromKernelRidge`)
SOLVERS = ("exact", "nystrom")
#: most training molecules the inner CV of a Nyström model runs on (exact kernels, n^2 memory)
NYSTROM_CV_MOLECULES = 4000


def default_kernel(representation: str) -> str:
    """The kernel the literature pairs with a representation (Gaussian for eigenspectra, else Laplacian)."""
    return DEFAULT_KERNEL.get(representation, "laplacian")


def train_krr(
    mols: Molecules,
    train: np.ndarray,
    test: np.ndarray | None = None,
    representation: str = "sorted-cm",
    kernel: str | None = None,
    sigma: float | None = None,
    lam: float | None = None,
    target: str = "atomization_energy",
    representation_params: dict | None = None,
    inner_splits: int = 3,
    progress: bool = False,
    metadata: dict | None = None,
    baseline: str = "none",
    solver: str = "exact",
    n_centers: int = 1000,
    seed: int = 0,
    calibration: np.ndarray | None = None,
) -> tuple[KRRModel, dict]:
    """Fit a representation and a kernel ridge regressor on ``mols[train]``; evaluate on ``mols[test]``.

    ``solver="exact"`` fits `KernelRidge` (Cholesky, all training molecules); ``"nystrom"`` fits
    `NystromKernelRidge` on ``n_centers`` centres drawn with ``seed`` (at most the training size),
    whose hyperparameters, when not given, come from the exact inner CV on at most
    `NYSTROM_CV_MOLECULES` training molecules (also drawn with ``seed``).

    The representation is sized for every molecule of ``mols`` (the largest molecule for
    Coulomb matrices, the largest bags for Bag of Bonds), not only for the training part: sizes
    depend on the compositions only, never on targets. A test molecule the model still cannot
    answer is refused alone; ``n_test_refused`` counts them and the test metrics cover the rest.

    The model carries a novelty model of its training domain (`qmlx.novelty.fit_domain_model`),
    calibrated on ``mols[calibration]`` (molecules it never trained on) or, without them, on 10 % of
    the training molecules drawn with ``seed`` and kept out of its centres.

    Targets are converted to kcal/mol. With ``baseline="elements"`` the regression learns what is
    left after per-element reference energies fitted on the training part (for total energies;
    the references are saved with the model). When ``sigma`` or ``lam`` is ``None`` it is chosen by
    ``inner_splits``-fold CV on the training molecules only, over `DEFAULT_GRIDS` (a given value
    is held fixed). Returns the model and a dict with ``sigma``, ``lam``, ``n_train``, ``n_test``,
    ``test_mae_kcal_mol``/``test_rmse_kcal_mol`` (when ``test`` is given) and ``wall_time_s``.
    """
    t0 = time.perf_counter()
    if baseline not in BASELINES:
        raise TrainingError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    kernel = kernel or default_kernel(representation)
    if target not in mols.targets:
        raise TrainingError(f"{mols.name} has no target {target!r}; it has {sorted(mols.targets) or 'none'}")
    y = mols.target(target, "kcal/mol")
    train = np.asarray(train)
    params = dict(representation_params or {})
    if representation == "random-cm":
        params.setdefault("random_state", 0)  # saved models must transform new molecules reproducibly
    if solver not in SOLVERS:
        raise TrainingError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    rep = make_representation(representation, **params)
    train_mols = mols.subset(train)
    rep.fit(mols)
    X = rep.transform(train_mols)
    refs = None
    y_fit = y[train]
    if baseline == "elements":
        refs = fit_element_energies(train_mols.Z, train_mols.n_atoms, y_fit)
        y_fit = y_fit - element_counts(train_mols.Z, train_mols.n_atoms, list(refs)) @ np.array(
            list(refs.values())
        )
    info: dict = {"representation": representation, "kernel": kernel, "n_train": len(train)}
    if sigma is None or lam is None:
        sigmas, lams = DEFAULT_GRIDS.get(
            (representation, kernel), ([100.0, 400.0, 1600.0], [1e-10, 1e-6, 1e-3])
        )
        sigmas = sigmas if sigma is None else [float(sigma)]
        lams = lams if lam is None else [float(lam)]
        cv = np.arange(len(X))
        if solver == "nystrom" and len(cv) > NYSTROM_CV_MOLECULES:
            cv = np.sort(np.random.default_rng(seed).choice(len(X), NYSTROM_CV_MOLECULES, replace=False))
            info["inner_cv_molecules"] = NYSTROM_CV_MOLECULES
        grid = select_hyperparameters(
            KernelProvider(X[cv], kernel, sigmas, progress=progress),
            y_fit[cv],
            sigmas,
            lams,
            inner_splits,
            progress=progress,
        )
        sigma, lam = grid.best_sigma, grid.best_lam
        info["inner_cv"] = grid.to_dict()
    if solver == "nystrom":
        M = min(int(n_centers), len(X))
        reg = NystromKernelRidge(kernel, sigma=float(sigma), lam=float(lam), n_centers=M, random_state=seed)
        info["n_centers"] = M
    else:
        reg = KernelRidge(kernel=kernel, sigma=float(sigma), lam=float(lam))
    reg.fit(X, y_fit)
    info.update(sigma=float(sigma), lam=float(lam), solver=solver)
    meta = {
        **(metadata or {}),
        "dataset": mols.name,
        "target": target,
        "target_description": (getattr(mols, "descriptions", None) or {}).get(target) or target,
        "energy_unit": "kcal/mol",
        "domain": Domain.from_molecules(train_mols).to_dict(),
        "baseline": baseline,
    }
    model = KRRModel(representation, rep, reg, target, meta, baseline=refs)
    model.novelty_state = fit_domain_model(mols, train, calibration, seed=seed).to_state()
    if test is not None and len(test):
        test = np.asarray(test)
        _, errors = screen(model.check_domain, mols.subset(test))
        kept = test[[e is None for e in errors]]  # a molecule the model cannot answer is left out
        m = metrics(model.energies(mols.subset(kept)), y[kept])
        info.update(
            n_test=len(test), n_test_refused=len(test) - len(kept),
            test_mae_kcal_mol=m["mae"], test_rmse_kcal_mol=m["rmse"],
        )  # fmt: skip
    info["wall_time_s"] = time.perf_counter() - t0
    model.metadata.update({k: v for k, v in info.items() if k != "inner_cv"})
    return model, info
