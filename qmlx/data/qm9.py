"""QM9 / GDB-9 (Ramakrishnan et al., Sci. Data 1, 140022, 2014).

Two sources are read:

- the PyPI package ``qm9pack`` (``pip install qmlx[qm9]``), which ships the 130,831
  characterized molecules as CSV files with positions in Å and energies in Hartree;
- the official ``dsgdb9nsd.xyz`` format: a folder of ``dsgdb9nsd_NNNNNN.xyz`` files or the
  ``dsgdb9nsd.xyz.tar.bz2`` archive (read as a stream, never unpacked to disk). If a file
  ``uncharacterized.txt`` lies beside it, or is passed, the molecules it lists are dropped.

Targets and units (Table 3 of the paper): rotational constants ``A``, ``B``, ``C`` (GHz), dipole
``mu`` (Debye), polarizability ``alpha`` (Bohr^3), ``homo``, ``lumo``, ``gap``, ``zpve``, ``U0``,
``U``, ``H``, ``G`` (Hartree), ``r2`` (Bohr^2), ``Cv`` (cal/(mol K)), and
``atomization_energy`` = U0 - sum of free-atom U0 (B3LYP/6-31G(2df,p)), in kcal/mol.

The first load of a source is cached as HDF5 in the qmlx cache directory.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import io
import logging
import lzma
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers
from tqdm.auto import tqdm

from qmlx.data.molecules import Molecules
from qmlx.data.paths import cache_dir
from qmlx.data.store import load_molecules, save_molecules
from qmlx.errors import DataFormatError, DataNotFoundError
from qmlx.units import HARTREE_TO_KCAL_MOL

logger = logging.getLogger(__name__)

# Free-atom U0 in Hartree, B3LYP/6-31G(2df,p), from the QM9 atomref table.
FREE_ATOM_U0_HARTREE = {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730}

# (name, unit) of the 15 scalar properties, in the order of line 2 of an official xyz file
PROPERTIES = [
    ("A", "GHz"), ("B", "GHz"), ("C", "GHz"), ("mu", "Debye"), ("alpha", "Bohr^3"),
    ("homo", "Hartree"), ("lumo", "Hartree"), ("gap", "Hartree"), ("r2", "Bohr^2"),
    ("zpve", "Hartree"), ("U0", "Hartree"), ("U", "Hartree"), ("H", "Hartree"), ("G", "Hartree"),
    ("Cv", "cal/(mol K)"),
]  # fmt: skip
UNITS = dict(PROPERTIES) | {"atomization_energy": "kcal/mol"}
_THEORY = "B3LYP/6-31G(2df,p)"
#: what each target is; every QM9 molecule is a neutral singlet at the B3LYP/6-31G(2df,p) minimum
DESCRIPTIONS = {
    "A": f"{_THEORY} rotational constant A",
    "B": f"{_THEORY} rotational constant B",
    "C": f"{_THEORY} rotational constant C",
    "mu": f"{_THEORY} dipole moment",
    "alpha": f"{_THEORY} isotropic polarizability",
    "homo": f"{_THEORY} HOMO energy",
    "lumo": f"{_THEORY} LUMO energy",
    "gap": f"{_THEORY} HOMO-LUMO gap",
    "r2": f"{_THEORY} electronic spatial extent",
    "zpve": f"{_THEORY} zero-point vibrational energy",
    "U0": f"{_THEORY} internal energy at 0 K",
    "U": f"{_THEORY} internal energy at 298.15 K",
    "H": f"{_THEORY} enthalpy at 298.15 K",
    "G": f"{_THEORY} free energy at 298.15 K",
    "Cv": f"{_THEORY} heat capacity at 298.15 K",
    "atomization_energy": f"{_THEORY} U0 atomization energy",
}

_CSV_COLUMNS = [
    "RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye", "Polarizability_bohr3", "HOMO_au",
    "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au", "InternalEnergy_0K_au",
    "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
]  # fmt: skip
_CSV_FILES = ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]


def atomization_energy_kcal_mol(Z: np.ndarray, n_atoms: np.ndarray, U0_hartree: np.ndarray) -> np.ndarray:
    """(n_mol,) U0 minus the free-atom U0 of the molecule's atoms, in kcal/mol."""
    ref = np.zeros(max(FREE_ATOM_U0_HARTREE) + 1)
    ref[list(FREE_ATOM_U0_HARTREE)] = list(FREE_ATOM_U0_HARTREE.values())
    if not np.isin(Z, list(FREE_ATOM_U0_HARTREE)).all():
        raise DataFormatError("QM9 atomization energies need H, C, N, O and F only")
    mol = np.repeat(np.arange(len(n_atoms)), n_atoms)
    atom_sum = np.bincount(mol, weights=ref[Z], minlength=len(n_atoms))
    return (U0_hartree - atom_sum) * HARTREE_TO_KCAL_MOL


def _molecules(Z, R, n_atoms, props: np.ndarray, ids, name: str) -> Molecules:
    targets = {key: props[:, j] for j, (key, _) in enumerate(PROPERTIES)}
    targets["atomization_energy"] = atomization_energy_kcal_mol(Z, n_atoms, targets["U0"])
    return _annotate(Molecules(Z=Z, R=R, n_atoms=n_atoms, targets=targets, units=UNITS, ids=ids, name=name))


def _annotate(mols: Molecules) -> Molecules:
    """Set QM9's descriptions, charge 0 and multiplicity 1 (also on sets cached by older qmlx)."""
    mols.descriptions = {k: v for k, v in DESCRIPTIONS.items() if k in mols.targets}
    mols.charge = np.zeros(len(mols))
    mols.multiplicity = np.ones(len(mols))
    return mols


# ---------------------------------------------------------------------------- qm9pack CSVs
def qm9pack_files() -> list[Path]:
    """Paths of the CSV files installed by ``qm9pack`` (found without importing it)."""
    try:
        files = importlib.metadata.files("qm9pack") or []
    except importlib.metadata.PackageNotFoundError:
        raise DataNotFoundError(
            "QM9 needs the package qm9pack: pip install 'qmlx[qm9]' (or pass the official dsgdb9nsd.xyz)"
        ) from None
    found = {f.name: Path(f.locate()) for f in files if f.name in _CSV_FILES}
    missing = [n for n in _CSV_FILES if n not in found or not found[n].exists()]
    if missing:
        raise DataNotFoundError(f"qm9pack is installed but lacks {missing}; reinstall it")
    return [found[n] for n in _CSV_FILES]


def _parse_bracketed_numbers(column: Iterable[str], what: str) -> np.ndarray:
    """Parse ``"[[x,y,z],...]"`` strings of all molecules at once into one flat float array."""
    text = ",".join(column)
    return np.array(re.sub(r"[\[\]]", " ", text).replace(",", " ").split(), dtype=np.float64)


def read_qm9pack_csv(paths: list[Path] | None = None) -> Molecules:
    """Read QM9 from the qm9pack CSV files (positions in Å, energies in Hartree)."""
    import pandas as pd

    paths = qm9pack_files() if paths is None else paths
    columns = ["Index", "N_atoms", "Elements", "XYZ_Ang", *_CSV_COLUMNS]
    frames = []
    for p in tqdm(paths, desc="reading qm9pack CSV", unit="file"):
        try:
            frames.append(pd.read_csv(p, usecols=columns))
        except Exception as err:
            raise DataFormatError(f"{p}: not a qm9pack CSV file ({err})") from None
    df = pd.concat(frames, ignore_index=True)
    n_atoms = df["N_atoms"].to_numpy(np.int64)
    symbols = re.sub(r"[\[\]' ]", "", ",".join(df["Elements"])).split(",")
    try:
        Z = np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)
    except KeyError as err:
        raise DataFormatError(f"{paths[0].parent}: unknown element symbol {err.args[0]!r}") from None
    R = _parse_bracketed_numbers(df["XYZ_Ang"], "XYZ_Ang")
    if len(Z) != n_atoms.sum() or len(R) != 3 * len(Z):
        raise DataFormatError(f"{paths[0].parent}: element and position counts disagree with N_atoms")
    props = df[_CSV_COLUMNS].to_numpy(np.float64)
    ids = df["Index"].to_numpy(np.int64)
    return _molecules(Z, R.reshape(-1, 3), n_atoms, props, ids, name="qm9")


# ---------------------------------------------------------------------------- official xyz
def _float(token: str) -> float:
    return float(token.replace("*^", "e"))


def parse_qm9_xyz(text: str, source: str) -> tuple[int, list[int], list[list[float]], list[float]]:
    """Parse one official QM9 xyz record: (index, Z list, positions in Å, 15 properties).

    Numbers may use Mathematica's ``*^`` exponent notation (e.g. ``1.5*^-6``).
    """
    lines = text.splitlines()
    try:
        n = int(lines[0])
        header = lines[1].split()
        if header[0] != "gdb" or len(header) < 17:
            raise ValueError("line 2 must be 'gdb INDEX' followed by 15 properties")
        index = int(header[1])
        props = [_float(t) for t in header[2:17]]
        if len(lines) < n + 2:
            raise ValueError(f"expected {n} atom lines, found {len(lines) - 2}")
        Z, R = [], []
        for line in lines[2 : 2 + n]:
            sym, x, y, z = line.split()[:4]
            if sym not in atomic_numbers:
                raise ValueError(f"unknown element symbol {sym!r}")
            Z.append(atomic_numbers[sym])
            R.append([_float(x), _float(y), _float(z)])
    except (ValueError, IndexError) as err:
        raise DataFormatError(f"{source}: not an official QM9 xyz record ({err})") from None
    return index, Z, R, props


_DECOMPRESSORS = {b"BZh": bz2.BZ2File, b"\x1f\x8b": gzip.GzipFile, b"\xfd7zXZ": lzma.LZMAFile}


def _iter_records(path: Path) -> Iterator[tuple[str, str]]:
    """(name, text) of every ``*.xyz`` member of a folder or a (compressed) tar archive."""
    if path.is_dir():
        for file in sorted(path.glob("*.xyz")):
            yield str(file), file.read_text()
    elif tarfile.is_tarfile(path):
        with path.open("rb") as f:
            magic = f.read(6)
        opener = next((op for m, op in _DECOMPRESSORS.items() if magic.startswith(m)), open)
        # a stream through a large buffer: nothing is unpacked to disk, and tarfile's many small
        # reads do not each hit the decompressor (3x faster than tarfile's own "r|*")
        with (
            opener(path, "rb") as raw,
            tarfile.open(fileobj=io.BufferedReader(raw, 1 << 22), mode="r|") as tar,
        ):
            for member in tar:
                if member.isfile() and member.name.endswith(".xyz"):
                    yield f"{path}:{member.name}", tar.extractfile(member).read().decode()
    else:
        yield str(path), path.read_text()


def _uncharacterized(path: Path, explicit: str | os.PathLike | None) -> set[int]:
    file = Path(explicit) if explicit else (path if path.is_dir() else path.parent) / "uncharacterized.txt"
    if not file.exists():
        if explicit:
            raise DataNotFoundError(f"{file}: no such file")
        return set()
    # data lines start with the integer index of the molecule
    return {int(line.split()[0]) for line in file.read_text().splitlines() if line.strip()[:1].isdigit()}


def read_qm9_xyz(path: str | os.PathLike, uncharacterized: str | os.PathLike | None = None) -> Molecules:
    """Read the official ``dsgdb9nsd.xyz`` data: a folder, a tar(.bz2) archive or one file."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file or folder")
    skip = _uncharacterized(path, uncharacterized)
    Zs, Rs, n_atoms, props, ids = [], [], [], [], []
    for name, text in tqdm(_iter_records(path), desc=f"reading {path.name}", unit="mol"):
        index, Z, R, p = parse_qm9_xyz(text, name)
        if index in skip:
            continue
        Zs += Z
        Rs += R
        n_atoms.append(len(Z))
        props.append(p)
        ids.append(index)
    if not ids:
        raise DataFormatError(f"{path}: holds no QM9 xyz records")
    order = np.argsort(ids, kind="stable")
    mols = _molecules(np.array(Zs), np.array(Rs), np.array(n_atoms), np.array(props), np.array(ids), "qm9")
    return mols if (np.diff(order) > 0).all() else mols.subset(order)


# ---------------------------------------------------------------------------- entry point
def _cache_key(source: Path | None, uncharacterized: str | os.PathLike | None) -> str:
    if source is None:
        return f"qm9pack-{importlib.metadata.version('qm9pack')}"
    stat = source.stat()
    skip = len(_uncharacterized(source, uncharacterized))
    return f"{source.name}-{stat.st_size}-{int(stat.st_mtime)}-skip{skip}"


def load_qm9(
    path: str | os.PathLike | None = None,
    uncharacterized: str | os.PathLike | None = None,
    cache: bool = True,
) -> Molecules:
    """Load QM9 as `Molecules` (positions in Å; see the module docstring for targets), with a
    description of every target (`DESCRIPTIONS`), charge 0 and multiplicity 1.

    ``path=None`` reads the installed qm9pack CSV files; otherwise ``path`` is the official
    ``dsgdb9nsd.xyz`` folder or archive. With ``cache=True`` the parsed set is stored as HDF5 in
    the qmlx cache and read from there next time.
    """
    source = None if path is None else Path(path)
    if source is None:
        qm9pack_files()  # a clear error if qm9pack is missing, before anything else
    elif not source.exists():
        raise DataNotFoundError(f"{source}: no such file or folder")
    cached = cache_dir() / f"qm9-{_cache_key(source, uncharacterized)}.h5"
    if cache and cached.exists():
        return _annotate(load_molecules(cached))
    mols = read_qm9pack_csv() if source is None else read_qm9_xyz(source, uncharacterized)
    if cache:
        save_molecules(cached, mols)
        logger.info("cached QM9 (%d molecules) in %s; later loads read it from there", len(mols), cached)
    return mols
