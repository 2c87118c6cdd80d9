"""User data sets: `import_molecules` reads molecule files and property tables; `load_dataset` is
the one loader every command uses.

Sources of `import_molecules`
-----------------------------
- an extxyz file or an ASE database (``.db``): every frame (row) is a molecule. Targets come from
  ``atoms.info`` or the calculator (``atoms.calc.results``); forces from ``atoms.arrays["forces"]``
  or the calculator. Key-value pairs of a database row are read like ``atoms.info``.
- any other file ASE can read (sdf, ...), several frames allowed.
- a folder of xyz files (``*.xyz``, ``*.extxyz``), which needs a property table.

Molecule ids are the file name without its extension (``"0001"`` for ``0001.xyz``) for files named
by a table, ``"<file name>:<frame>"`` (frame counted from 0) for frames of files given as sources,
and ``"<file name>:<row id>"`` for rows of an ASE database.

Property tables
---------------
One line per molecule, fields separated by whitespace or commas; ``#`` starts a comment and blank
lines are skipped. ``columns`` names the fields in order:

- ``name``: the file the line describes, relative to the source folder(s) (``0001.xyz``; the name
  without its extension also works when it is unambiguous). Exactly one column is ``name``.
- ``-``: a column to skip (it is not read at all).
- ``charge``, ``multiplicity``: the net charge and spin multiplicity 2S+1 of the molecule; they
  take precedence over what the file says.
- any other name (letters, digits, ``_``): a target, in ``unit``; ``energy[eV]`` gives a column its
  own unit (also one that is not an energy, e.g. ``mu[Debye]``).

Every file of a source folder needs a line, every line needs a file, a name appears once, and
each named file holds one molecule. Targets from a table replace any the files carry.

Units
-----
``unit`` (``kcal/mol``, ``eV`` or ``Hartree``) is the unit of every target without its own; a
target read from the files (``atoms.info`` or the calculator) defaults to eV, ASE's convention,
while a table column needs a stated unit. Forces are in ``force_unit``, by default ``unit`` per Å
(eV/Å without ``unit``). Charge and multiplicity are read from the files as `qmlx.data.molecules`
describes; for xyz files a comment line such as ``charge = 0`` or ``charge: -1`` also states the
charge when ASE's extxyz parser does not turn it into ``info["charge"]``.

Every problem raises `DataFormatError` with one line that names the file (and for a table the line
number); all files are read and checked before anything is returned.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import ase
import numpy as np
from tqdm.auto import tqdm

from qmlx.data.molecules import Molecules, collect_frames, energy_unit, normalize_force_unit, unit_name
from qmlx.errors import DataFormatError

XYZ_SUFFIXES = (".xyz", ".extxyz")
DB_SUFFIXES = (".db",)
#: MDL molfile suffixes; their ``M  CHG`` lines state charges
MOL_SUFFIXES = (".mol", ".sdf", ".mdl")
#: the data sets `load_dataset` knows by name
DATASETS = ("qm7", "qm9")

_TARGET_SPEC = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\[\]]+)\])?$")
_RESERVED = {"name", "charge", "multiplicity"}
_FIELD_SEP = re.compile(r"\s*,\s*|\s+")
_COMMENT_VALUE = r"\s*[=:]\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_COMMENT_KEYS = {
    "charge": re.compile(r"\bcharge" + _COMMENT_VALUE, re.IGNORECASE),
    "multiplicity": re.compile(r"\bmultiplicity" + _COMMENT_VALUE, re.IGNORECASE),
}


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# ---------------------------------------------------------------------------- reading files
def _xyz_comment_lines(text: str) -> list[str]:
    """The comment line (line 2) of every frame of an xyz text, as far as it can be followed."""
    lines = text.splitlines()
    comments, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            break
        comments.append(lines[i + 1] if i + 1 < len(lines) else "")
        i += n + 2
    return comments


def _numeric(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def read_frames(
    path: str | os.PathLike, format: str | None = None
) -> tuple[list[ase.Atoms], list[str], list[str]]:
    """Every molecule in one file: ``(frames, labels, ids)``.

    ``labels[i]`` names frame ``i`` in messages (the path, plus ``frame i`` or ``row ID`` when the
    file holds several); ``ids[i]`` is ``"<file name>:<frame>"`` (``"<file name>:<row id>"`` for an
    ASE database). xyz files are read with ASE's extxyz reader; a ``charge = ...`` or
    ``multiplicity = ...`` in a comment line that ASE left out of ``atoms.info`` is put there.
    """
    import ase.io

    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, not a molecule file")
    suffix = path.suffix.lower()
    comments: list[str] = []
    row_ids: list[int] | None = None
    try:
        if format is None and suffix in DB_SUFFIXES:
            import ase.db

            frames, row_ids = [], []
            for row in ase.db.connect(path).select():
                atoms = row.toatoms()
                atoms.info.update(row.key_value_pairs)
                frames.append(atoms)
                row_ids.append(row.id)
        elif format is None and suffix in XYZ_SUFFIXES:
            text = path.read_text()
            frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
            comments = _xyz_comment_lines(text)
        else:
            frames = ase.io.read(path, index=":", format=format)
    except KeyError as err:  # ASE's lookup of a chemical symbol
        raise DataFormatError(f"{path}: unknown element symbol or field {err}") from None
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not a text file (cannot be decoded as UTF-8)") from None
    except Exception as err:  # ASE raises many kinds of errors on malformed input
        raise DataFormatError(f"{path}: cannot read molecules: {_one_line(err)}") from None
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    if not frames or any(len(a) == 0 for a in frames):
        raise DataFormatError(f"{path}: contains no molecules (empty file or an empty frame)")
    if len(comments) == len(frames):
        for atoms, comment in zip(frames, comments):
            for key, pattern in _COMMENT_KEYS.items():
                if not _numeric(atoms.info.get(key)) and (match := pattern.search(comment)):
                    atoms.info[key] = float(match.group(1))
    _state_charges(frames, _mol_charges(path) if format is None and suffix in MOL_SUFFIXES else [])
    many = len(frames) > 1
    if row_ids is not None:
        labels = [f"{path}, row {r}" if many else str(path) for r in row_ids]
        ids = [f"{path.name}:{r}" for r in row_ids]
    else:
        labels = [f"{path}, frame {i}" if many else str(path) for i in range(len(frames))]
        ids = [f"{path.name}:{i}" for i in range(len(frames))]
    return frames, labels, ids


def _state_charges(frames: list[ase.Atoms], stated: list[int | None]) -> None:
    """Put each frame's net charge into ``atoms.info["charge"]`` where the file states one that
    ASE left elsewhere: ``stated[k]`` (a mol/sdf file's ``M  CHG`` lines, `_mol_charges`), else the
    sum of per-atom ``initial_charges`` (extxyz, ASE databases) when any is non-zero."""
    for k, atoms in enumerate(frames):
        if _numeric(atoms.info.get("charge")):
            continue
        if k < len(stated) and stated[k] is not None:
            atoms.info["charge"] = float(stated[k])
        elif atoms.has("initial_charges") and np.any(atoms.get_initial_charges()):
            atoms.info["charge"] = float(np.rint(atoms.get_initial_charges().sum()))


def _with_charge(atoms: ase.Atoms, info: dict) -> ase.Atoms:
    """``atoms`` with ``info`` merged into ``atoms.info`` and its stated charge found (`_state_charges`)."""
    atoms.info.update(info)
    _state_charges([atoms], [])
    return atoms


def _mol_charges(path: Path) -> list[int | None]:
    """Per molecule of a mol/sdf file, the net charge its ``M  CHG`` lines state (``None`` where it
    has none; such a file may still state charges in the atom block, which this does not read)."""
    charges: list[int | None] = []
    for block in path.read_text(errors="replace").split("$$$$"):
        if not block.strip():
            continue
        total = None
        for line in block.splitlines():
            if line.startswith("M  CHG"):
                fields = line.split()[3:]
                total = (total or 0) + sum(int(q) for q in fields[1::2])
        charges.append(total)
    return charges


# ---------------------------------------------------------------------------- columns and tables
def _parse_columns(
    columns: Sequence[str] | str, where: str, with_table: bool, unit: str | None
) -> list[tuple[str, str, str | None]]:
    """``columns`` as ``(kind, key, unit)`` with kind ``name``, ``skip``, ``charge``,
    ``multiplicity`` or ``target``."""
    if isinstance(columns, str):
        columns = [c for c in _FIELD_SEP.split(columns.strip()) if c]
    specs: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for spec in columns:
        spec = str(spec).strip()
        if spec == "-":
            kind, key, key_unit = "skip", "-", None
        elif spec in _RESERVED:
            kind, key, key_unit = spec, spec, None
        else:
            match = _TARGET_SPEC.match(spec)
            if not match or match.group(1) in _RESERVED:
                raise DataFormatError(
                    f"{where}: unknown column spec {spec!r}; use 'name', '-', 'charge', 'multiplicity' "
                    "or a target name such as 'energy' or 'energy[eV]'"
                )
            kind, key, key_unit = "target", match.group(1), match.group(2)
            key_unit = unit_name(key_unit) if key_unit is not None else unit
        if key != "-" and key in seen:
            raise DataFormatError(f"{where}: column {key!r} is given twice in {list(columns)}")
        seen.add(key)
        specs.append((kind, key, key_unit))
    kinds = [k for k, _, _ in specs]
    if with_table:
        if kinds.count("name") != 1:
            raise DataFormatError(
                f"{where}: columns {list(columns)} need exactly one 'name' column (the file name)"
            )
        no_unit = [key for kind, key, u in specs if kind == "target" and u is None]
        if no_unit:
            raise DataFormatError(
                f"{where}: column {no_unit[0]!r} has no unit; pass unit= (kcal/mol, eV or Hartree) "
                f"or write e.g. '{no_unit[0]}[kcal/mol]'"
            )
    elif any(k != "target" for k in kinds):
        raise DataFormatError(
            "columns without a table name the targets to read from each molecule's info; "
            f"'name', '-', 'charge' and 'multiplicity' need a table (got {list(columns)})"
        )
    return specs


def _parse_table(table: Path, specs: list[tuple[str, str, str | None]]) -> list[tuple[int, str, dict]]:
    """Rows of a property table as ``(line number, file name, {key: value})``."""
    try:
        text = table.read_text()
    except FileNotFoundError:
        raise DataFormatError(f"{table}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{table}: cannot read the table ({_one_line(err)})") from None
    expected = " ".join(key for _, key, _ in specs)
    rows: list[tuple[int, str, dict]] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = _FIELD_SEP.split(body)
        if len(fields) != len(specs):
            raise DataFormatError(
                f"{table}, line {lineno}: {len(fields)} columns, expected {len(specs)} ({expected})"
            )
        name, values = "", {}
        for j, ((kind, key, _), text_value) in enumerate(zip(specs, fields), start=1):
            if kind == "skip":
                continue
            if kind == "name":
                name = text_value
                continue
            try:
                value = float(text_value)
            except ValueError:
                hint = " (a header line? start it with #)" if not rows else ""
                raise DataFormatError(
                    f"{table}, line {lineno}: column {j} ({key}) is {text_value!r}, not a number{hint}"
                ) from None
            if math.isnan(value):
                raise DataFormatError(f"{table}, line {lineno}: column {j} ({key}) is NaN")
            if math.isinf(value):
                raise DataFormatError(f"{table}, line {lineno}: column {j} ({key}) is infinite")
            if kind == "multiplicity" and (value < 1 or value != round(value)):
                raise DataFormatError(
                    f"{table}, line {lineno}: column {j} (multiplicity) is {text_value}; "
                    "expected a spin multiplicity 2S+1 = 1, 2, 3, ..."
                )
            values[key] = value
        if name in first_line:
            raise DataFormatError(
                f"{table}, line {lineno}: {name!r} is listed again (first on line {first_line[name]})"
            )
        first_line[name] = lineno
        rows.append((lineno, name, values))
    if not rows:
        raise DataFormatError(f"{table}: the table has no rows")
    return rows


class _Folder:
    """The files of one source folder, listed once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, Path] = {}
        with os.scandir(path) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file():
                    self.files[entry.name] = Path(entry.path)
        self.xyz = sorted(n for n in self.files if n.lower().endswith(XYZ_SUFFIXES))
        self.stems: dict[str, list[str]] = {}
        for n in self.xyz:
            self.stems.setdefault(Path(n).stem, []).append(n)

    def find(self, name: str) -> Path | None:
        if name in self.files:
            return self.files[name]
        if "/" in name or os.sep in name:
            candidate = self.path / name
            return candidate if candidate.is_file() else None
        stems = self.stems.get(name, [])
        return self.files[stems[0]] if len(stems) == 1 else None


def _resolve(
    rows: list[tuple[int, str, dict]], table: Path, folders: list[_Folder], files: list[Path]
) -> list[Path]:
    """The file each table row names; every file of the sources must be named exactly once."""
    where = ", ".join(str(s) for s in [*(f.path for f in folders), *files][:3])
    paths: list[Path] = []
    line_of: dict[str, int] = {}
    for lineno, name, _ in rows:
        hits = [p for p in (f.find(name) for f in folders) if p is not None]
        hits += [f for f in files if name in (f.name, f.stem, str(f))]
        unique = list(dict.fromkeys(os.path.normpath(p) for p in hits))
        if not unique:
            raise DataFormatError(f"{table}, line {lineno}: file {name!r} not found in {where}")
        if len(unique) > 1:
            raise DataFormatError(
                f"{table}, line {lineno}: {name!r} matches both {unique[0]} and {unique[1]}"
            )
        if unique[0] in line_of:
            raise DataFormatError(
                f"{table}, line {lineno}: {name!r} names the same file as line {line_of[unique[0]]}"
            )
        line_of[unique[0]] = lineno
        paths.append(Path(unique[0]))
    for folder in folders:
        extra = [n for n in folder.xyz if os.path.normpath(folder.files[n]) not in line_of]
        if extra:
            raise DataFormatError(
                f"{folder.path}: {len(extra)} xyz file(s) have no row in {table} (first: {extra[0]})"
            )
    for file in files:
        if os.path.normpath(file) not in line_of:
            raise DataFormatError(f"{file}: has no row in {table}")
    return paths


# ---------------------------------------------------------------------------- import
def import_molecules(
    sources: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    table: str | os.PathLike | None = None,
    columns: Sequence[str] | str | None = None,
    unit: str | None = None,
    force_unit: str | None = None,
    descriptions: Mapping[str, str] | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Molecules:
    """Read molecule files, folders and an optional property table into one `Molecules`.

    Parameters
    ----------
    sources : molecule files (extxyz, ASE db, anything ASE reads) and folders of xyz files; see the
        module docstring. Positions are in Å.
    table : a property table naming the files of the sources, one line per molecule.
    columns : the table's columns in order, e.g. ``["name", "energy", "-"]``. Without a table,
        the names of targets to read from ``atoms.info`` (or the calculator), e.g.
        ``["energy", "homo[Hartree]"]``; by default ``energy`` when the files have energies.
    unit : energy unit (``kcal/mol``, ``eV``, ``Hartree``) of every target without its own unit.
    force_unit : unit of forces, e.g. ``"kcal/mol/Å"``; default ``unit`` per Å (else eV/Å).
    descriptions : target name -> what it is, e.g. ``{"energy": "PBE0 atomization energy"}``.
    name : name of the set (default: the first source's name).
    progress : show a progress bar over the files.

    Returns `Molecules` with targets (n_molecules,), optional forces (n_atoms_total, 3), charge,
    multiplicity and periodic flags, after every file and table line was validated. Raises
    `DataFormatError` (one line naming the file, and the line for a table) on any problem.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [Path(s) for s in sources]
    if not sources:
        raise DataFormatError("import: no sources given")
    unit = energy_unit(unit) if unit is not None else None
    force_unit = normalize_force_unit(force_unit) if force_unit is not None else None
    for source in sources:
        if not source.exists():
            raise DataFormatError(f"{source}: no such file or folder")
    folders = [_Folder(s) for s in sources if s.is_dir()]
    files = [s for s in sources if not s.is_dir()]
    for folder in folders:
        if not folder.xyz:
            raise DataFormatError(f"{folder.path}: no xyz files in this folder")
    name = name or (sources[0].name if sources[0].is_dir() else sources[0].stem)

    if table is None:
        if folders:
            raise DataFormatError(
                f"{folders[0].path}: a folder of xyz files needs a property table naming its files "
                "(table=..., columns=[...]); or give the files themselves"
            )
        specs = _parse_columns(columns, "columns", False, unit) if columns is not None else None
        frames, labels, ids = [], [], []
        for file in tqdm(files, desc=f"reading {name}", unit="file", disable=not progress):
            f, lab, i = read_frames(file)
            frames += f
            labels += lab
            ids += i
        targets = None if specs is None else {key: key_unit for _, key, key_unit in specs}
        fields = collect_frames(frames, labels, targets, unit, force_unit, strict=True)
    else:
        table = Path(table)
        if columns is None:
            raise DataFormatError(f"{table}: give the table's columns, e.g. ['name', 'energy']")
        specs = _parse_columns(columns, str(table), True, unit)
        rows = _parse_table(table, specs)
        paths = _resolve(rows, table, folders, files)
        frames, labels = [], []
        for (lineno, _, _), path in tqdm(
            list(zip(rows, paths)), desc=f"reading {name}", unit="file", disable=not progress
        ):
            f, lab, _ = read_frames(path)
            if len(f) != 1:
                raise DataFormatError(
                    f"{path}: holds {len(f)} molecules, but a table row describes one ({table}, line {lineno})"
                )
            frames += f
            labels += lab
        ids = [p.stem for p in paths]
        fields = collect_frames(frames, labels, {}, unit, force_unit, strict=True)
        fields["targets"] = {
            key: np.array([values[key] for _, _, values in rows])
            for kind, key, _ in specs
            if kind == "target"
        }
        fields["units"] = {key: key_unit for kind, key, key_unit in specs if kind == "target"}
        for key in ("charge", "multiplicity"):
            if any(kind == key for kind, _, _ in specs):
                fields[key] = np.array([values[key] for _, _, values in rows])
    descriptions = dict(descriptions or {})
    unknown = sorted(set(descriptions) - set(fields["targets"]))
    if unknown:
        raise DataFormatError(
            f"{name}: description(s) for unknown target(s) {unknown}; targets are {sorted(fields['targets'])}"
        )
    return Molecules(**fields, ids=np.asarray(ids), name=name, descriptions=descriptions)


# ---------------------------------------------------------------------------- one file
def read_molecules(
    path: str | os.PathLike,
    format: str | None = None,
    targets: Mapping[str, str | None] | None = None,
    *,
    unit: str | None = None,
    force_unit: str | None = None,
) -> Molecules:
    """Every molecule in a file that ASE can read (xyz, extxyz, sdf, ASE db, ...), or a qmlx
    HDF5 store.

    Positions are taken in Å, ASE's unit; targets, forces, charge and multiplicity as in
    `Molecules.from_atoms`. Any problem raises `DataFormatError` naming the file.
    """
    from qmlx.data.store import is_qmlx_hdf5, load_molecules

    path = str(path)
    if is_qmlx_hdf5(path) or path.lower().endswith((".h5", ".hdf5")):
        return load_molecules(path)
    frames, _, _ = read_frames(path, format=format)
    return Molecules.from_atoms(frames, targets=targets, name=path, unit=unit, force_unit=force_unit)


# ---------------------------------------------------------------------------- streaming
def iter_molecules(path: str | os.PathLike, chunk_size: int = 10_000) -> Iterator[Molecules]:
    """The molecules of one file in chunks of at most ``chunk_size``, read lazily, so that memory
    stays flat in the number of molecules (multi-frame xyz/extxyz files and ASE databases are
    read frame by frame; a qmlx HDF5 store is loaded and sliced).

    A file that fits in one chunk comes back as one `Molecules` named by its path, exactly as
    `load_dataset` reads it; later chunks are named ``"<path>, frames A-B"``. A frame that cannot
    be read raises `DataFormatError` naming the file and the frame.
    """
    import ase.io

    from qmlx.data.store import is_qmlx_hdf5, load_molecules

    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, not a molecule file")
    if is_qmlx_hdf5(path):
        mols = load_molecules(path)
        for lo in range(0, len(mols), chunk_size):
            yield mols.subset(np.arange(lo, min(lo + chunk_size, len(mols))))
        return
    suffix = path.suffix.lower()
    if suffix in DB_SUFFIXES:
        import ase.db

        frames = (_with_charge(row.toatoms(), row.key_value_pairs) for row in ase.db.connect(path).select())
    elif suffix in MOL_SUFFIXES:  # small files: read whole, with the charges they state
        frames = iter(read_frames(path)[0])
    else:
        frames = (
            _with_charge(atoms, {})
            for atoms in ase.io.iread(path, index=":", format="extxyz" if suffix in XYZ_SUFFIXES else None)
        )
    chunk: list[ase.Atoms] = []
    lo = 0

    def emit(last: bool) -> Molecules:
        hi = lo + len(chunk)
        name = str(path) if lo == 0 and last else f"{path}, frames {lo}-{hi - 1}"
        if any(len(a) == 0 for a in chunk):
            raise DataFormatError(f"{name}: contains an empty frame")
        return Molecules.from_atoms(chunk, targets={}, name=name, ids=np.arange(lo, hi))

    try:
        for atoms in frames:
            chunk.append(atoms)
            if len(chunk) == chunk_size:
                yield emit(last=False)
                lo, chunk = lo + chunk_size, []
    except DataFormatError:
        raise
    except KeyError as err:
        raise DataFormatError(
            f"{path}, frame {lo + len(chunk)}: unknown element symbol or field {err}"
        ) from None
    except Exception as err:  # ASE raises many kinds of errors on malformed input
        raise DataFormatError(
            f"{path}: cannot read molecules after frame {lo + len(chunk)}: {_one_line(err)}"
        ) from None
    if chunk:
        yield emit(last=True)
    elif lo == 0:
        raise DataFormatError(f"{path}: contains no molecules (empty file)")


# ---------------------------------------------------------------------------- the one loader
def load_dataset(spec: str | os.PathLike, target: str | None = None) -> Molecules:
    """Load a data set by name or path.

    ``"qm7"`` and ``"qm9"`` (any case) load the built-in sets (`load_qm7`, `load_qm9`); a qmlx
    HDF5 store is read with `load_molecules`; any other existing file with `read_molecules` (ASE).
    With ``target``, the set must have that target, else `DataFormatError` lists those it has.
    """
    from qmlx.data.store import is_qmlx_hdf5, load_molecules

    text = str(spec)
    if text.lower() == "qm7":
        from qmlx.data.qm7 import load_qm7

        mols = load_qm7()
    elif text.lower() == "qm9":
        from qmlx.data.qm9 import load_qm9

        mols = load_qm9()
    else:
        path = Path(text)
        if not path.exists():
            raise DataFormatError(f"{text}: no such file (nor a data set name: {', '.join(DATASETS)})")
        if path.is_dir():
            raise DataFormatError(
                f"{text}: is a folder; import it with a property table first (import_molecules)"
            )
        mols = load_molecules(path) if is_qmlx_hdf5(path) else read_molecules(path)
    if target is not None and target not in mols.targets:
        have = ", ".join(mols.targets) or "none"
        raise DataFormatError(f"{mols.name}: no target {target!r}; available targets: {have}")
    return mols
