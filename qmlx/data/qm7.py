"""QM7 (Rupp et al., PRL 108, 058301, 2012; Montavon et al., NJP 15, 095003, 2013).

7,165 GDB-13 molecules with up to 23 atoms (H, C, N, O, S) and PBE0 atomization energies in
kcal/mol. The official ``qm7.mat`` stores positions in **Bohr**; this loader converts them to Å.
The Coulomb matrices stored under ``X`` are ignored: qmlx computes representations itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from qmlx.data.molecules import Molecules
from qmlx.data.paths import cache_dir, download, find_data_file
from qmlx.errors import DataFormatError, DataNotFoundError
from qmlx.units import BOHR_TO_ANGSTROM

QM7_URL = "http://quantum-machine.org/data/qm7.mat"
QM7_FILENAME = "qm7.mat"
QM7_CHARGES = {0, 1, 6, 7, 8, 16}
#: what the target is (Rupp et al. 2012: PBE0 atomization energies of neutral closed-shell molecules)
QM7_DESCRIPTIONS = {"atomization_energy": "PBE0 atomization energy"}
# key -> number of dimensions; the molecule count is taken from Z, not hard-coded
_EXPECTED = {"Z": 2, "R": 3, "T": 2, "P": 2}


def locate_qm7(path: str | os.PathLike | None = None, download_if_missing: bool = True) -> Path:
    """Path of ``qm7.mat``: explicit ``path``, ``$QMLX_DATA_DIR``, the cache, or a download."""
    found = find_data_file(QM7_FILENAME, path)
    if found is not None:
        return found
    target = cache_dir() / QM7_FILENAME
    if not download_if_missing:
        raise DataNotFoundError(
            f"{QM7_FILENAME} not found in $QMLX_DATA_DIR or {target.parent}; set QMLX_DATA_DIR"
        )
    return download(QM7_URL, target)


def _read_mat(path: Path) -> dict:
    try:
        return scipy.io.loadmat(path, variable_names=list(_EXPECTED))
    except Exception as err:
        raise DataFormatError(f"{path}: not a readable MATLAB file ({err})") from None


def _validate(path: Path, mat: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [k for k in _EXPECTED if k not in mat]
    if missing:
        raise DataFormatError(
            f"{path}: missing key(s) {missing}; expected the official QM7 layout Z, R, T, P"
        )
    Z, R, T, P = (np.asarray(mat[k]) for k in ("Z", "R", "T", "P"))
    for key, arr in zip("ZRTP", (Z, R, T, P)):
        if arr.ndim != _EXPECTED[key]:
            raise DataFormatError(f"{path}: {key} has {arr.ndim} dimensions, expected {_EXPECTED[key]}")
    n_mol, n_max = Z.shape
    if R.shape != (n_mol, n_max, 3):
        raise DataFormatError(f"{path}: R has shape {R.shape}, expected {(n_mol, n_max, 3)} to match Z")
    if T.shape != (1, n_mol):
        raise DataFormatError(f"{path}: T has shape {T.shape}, expected {(1, n_mol)}")
    for key, arr in zip("ZRT", (Z, R, T)):
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise DataFormatError(f"{path}: {key} has dtype {arr.dtype}, expected numbers")
    if not np.issubdtype(P.dtype, np.integer) and not np.issubdtype(P.dtype, np.floating):
        raise DataFormatError(f"{path}: P has dtype {P.dtype}, expected integer indices")
    if not np.array_equal(Z, np.round(Z)):
        raise DataFormatError(f"{path}: Z holds non-integer nuclear charges")
    charges = {int(z) for z in np.unique(Z)}
    if not charges <= QM7_CHARGES:
        raise DataFormatError(f"{path}: unexpected nuclear charges {sorted(charges - QM7_CHARGES)}")
    if P.size and (P.min() < 0 or P.max() >= n_mol):
        raise DataFormatError(f"{path}: fold indices in P fall outside 0..{n_mol - 1}")
    if not np.isfinite(R).all() or not np.isfinite(T).all():
        raise DataFormatError(f"{path}: R or T holds NaN or infinite values")
    return Z.astype(np.int64), R.astype(np.float64), T.astype(np.float64).reshape(-1), P.astype(np.int64)


def load_qm7(path: str | os.PathLike | None = None, download_if_missing: bool = True) -> Molecules:
    """Load QM7 as `Molecules`.

    Returns positions in Å (converted from the file's Bohr), the target
    ``"atomization_energy"`` in kcal/mol (described as "PBE0 atomization energy"), ids 0..7164
    (rows of the file), charge 0 and multiplicity 1 for every molecule (all are neutral singlets),
    and ``folds``: the five official cross-validation splits as ``(train_idx, test_idx)`` pairs,
    where fold ``k`` tests on row ``k`` of ``P`` and trains on the other four.
    """
    file = locate_qm7(path, download_if_missing)
    Z, R_bohr, T, P = _validate(file, _read_mat(file))
    mask = Z > 0
    n_atoms = mask.sum(axis=1)
    # atoms are zero-padded at the end of each row; check it so the flat order is right
    if not (np.cumsum(~mask, axis=1)[mask] == 0).all():
        raise DataFormatError(f"{file}: Z has zeros between atoms; expected padding at the end of each row")
    folds = []
    for k in range(len(P)):
        test = np.sort(P[k])
        train = np.sort(np.concatenate([P[j] for j in range(len(P)) if j != k]))
        folds.append((train, test))
    return Molecules(
        Z=Z[mask],
        R=R_bohr[mask] * BOHR_TO_ANGSTROM,
        n_atoms=n_atoms,
        targets={"atomization_energy": T},
        units={"atomization_energy": "kcal/mol"},
        ids=np.arange(len(Z)),
        folds=folds,
        name="qm7",
        charge=np.zeros(len(Z)),
        multiplicity=np.ones(len(Z)),
        descriptions=QM7_DESCRIPTIONS,
    )
