"""User data sets: `import_molecules` reads molecule files and property tables; `load_dataset` is
the one loader every command uses.

Sources of `import_molecules`
-----------------------------
- an extxyz file or an ASE database (``.db``): every frame (row) is a molecule. Targets come from
  ``atoms.info`` or the calculator (``atoms.calc.results``); forces from ``atoms.arrays["forces"]``
  or the calculator. Key-value pairs of a database row, and the numbers in its ``data`` (where
  schnetpack keeps properties), are read like ``atoms.info`` (per-atom arrays like ``arrays``).
  ``columns`` names the targets to read (``["U0[Hartree]"]``); without it, ``energy``, or every
  property a schnetpack database records a unit for. A named property that no molecule has is an
  error listing those they have; so are molecules without ``energy`` that carry other numbers.
- a schnetpack database (``ASEAtomsData``) also records units (``_property_unit_dict``) and atom
  references (``atomrefs``) in its metadata: its units are used (and a contradicting ``unit`` is an
  error), and a target with atom references gets a second one, ``<key>_atomization``, the value
  minus its atoms' references.
- mol/sdf files (every ``$$$$``-separated molecule), Tripos mol2 files (every molecule), and any
  other file ASE can read, several frames allowed.
- a folder of xyz files (``*.xyz``, ``*.extxyz``), which needs a property table.

Molecule ids are the file name without its extension (``"0001"`` for ``0001.xyz``) for files named
by a table, ``"<file name>:<frame>"`` (frame counted from 0) for frames of files given as sources,
and ``"<file name>:<row id>"`` for rows of an ASE database.

Property tables
---------------
One line per molecule, fields separated by whitespace or commas; ``#`` starts a comment and blank
lines are skipped. A first row that names the columns (``file,energy[kcal/mol]``) is a header:
without ``columns`` it gives them (the file-name column headed ``name``, ``file`` or
``filename``), with ``columns`` it is skipped. ``columns`` names the fields in order:

- ``name``: the file the line describes, relative to the source folder(s) (``0001.xyz``; the name
  without its extension also works when it is unambiguous). Exactly one column is ``name``.
- ``-``: a column to skip (it is not read at all).
- ``charge``, ``multiplicity``: the net charge and spin multiplicity 2S+1 of the molecule; they
  take precedence over what the file says.
- any other name (letters, digits, ``_``): a target, in ``unit``; ``energy[eV]`` gives a column its
  own unit (an energy unit or one of `qmlx.data.molecules.OTHER_UNITS`, e.g. ``mu[Debye]``; an
  unknown one is an error that suggests the closest).

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

from qmlx.data.molecules import (
    Molecules,
    collect_frames,
    energy_unit,
    normalize_force_unit,
    stated_unit,
    unit_name,
)
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
                frames.append(_row_atoms(row))
                row_ids.append(row.id)
        elif format is None and suffix in (".sdf", ".mol", ".mdl"):
            frames = [ase.io.read(io.StringIO(block), format="sdf") for block in _sdf_blocks(path)]
        elif format is None and suffix == ".mol2":
            frames = _read_mol2(path)
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


def _row_atoms(row) -> ase.Atoms:
    """One ASE database row as ``ase.Atoms``: its key-value pairs and its ``data`` in ``info``
    (scalars) and ``arrays`` (one value or vector per atom, such as schnetpack's ``forces``)."""
    atoms = row.toatoms()
    atoms.info.update(row.key_value_pairs)
    for key, value in (row.get("data") or {}).items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            continue
        if arr.size == 1:
            atoms.info.setdefault(key, float(arr.reshape(-1)[0]))
        elif arr.ndim >= 1 and arr.shape[0] == len(atoms) and key not in atoms.arrays:
            atoms.arrays[key] = arr.astype(np.float64)
    _state_charges([atoms], [])
    return atoms


def database_metadata(path: str | os.PathLike) -> dict:
    """The metadata of an ASE database (where schnetpack keeps ``_property_unit_dict``,
    ``_distance_unit`` and ``atomrefs``); empty for any other file. `DataFormatError` naming the
    file if the database cannot be read."""
    path = Path(path)
    if path.suffix.lower() not in DB_SUFFIXES or not path.is_file():
        return {}
    import ase.db

    try:
        return dict(ase.db.connect(path).metadata)
    except Exception as err:  # noqa: BLE001 - ASE raises many kinds for a broken database
        raise DataFormatError(f"{path}: cannot read the database's metadata ({_one_line(err)})") from None


def file_units(path: str | os.PathLike) -> dict[str, str]:
    """The units a file records for its properties: a schnetpack database's metadata
    (``_property_unit_dict``, e.g. ``{"energy": "eV", "forces": "eV/Ang"}``); empty otherwise."""
    units = database_metadata(path).get("_property_unit_dict") or {}
    return {str(k): str(v) for k, v in units.items() if v not in (None, "")}


def file_atomrefs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per property, the atom reference energies a schnetpack database records (``atomrefs`` in its
    metadata, indexed by nuclear charge, in the property's unit); only properties with a non-zero
    reference."""
    refs = database_metadata(path).get("atomrefs") or {}
    out = {}
    for key, values in refs.items():
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if np.any(arr != 0):
            out[str(key)] = arr
    return out


def _sdf_blocks(path: Path) -> list[str]:
    """The molecule blocks of a mol or sdf file (separated by ``$$$$`` lines), each ending in
    ``M  END``; ASE's sdf reader reads one block only."""
    parts = re.split(r"^\$\$\$\$[^\n]*$", path.read_text(), flags=re.M)
    # each part after a separator starts with that line's newline; a molecule's title line may be blank
    parts = parts[:1] + [p[1:] if p.startswith("\n") else p for p in parts[1:]]
    return [p for p in parts if p.strip()]


def _read_mol2(path: Path) -> list[ase.Atoms]:
    """Every molecule of a Tripos mol2 file (``@<TRIPOS>MOLECULE`` records): elements from the SYBYL
    atom types (``C.3`` is carbon), positions in Å; the formal charge is not in a mol2 file."""
    from ase.data import atomic_numbers

    frames: list[ase.Atoms] = []
    for k, record in enumerate(re.split(r"^@<TRIPOS>MOLECULE[^\n]*$", path.read_text(), flags=re.M)[1:]):
        atoms = re.search(r"^@<TRIPOS>ATOM[^\n]*\n(.*?)(?=^@<TRIPOS>|\Z)", record, flags=re.M | re.S)
        if atoms is None:
            raise DataFormatError(f"{path}, molecule {k}: no @<TRIPOS>ATOM section")
        numbers, positions = [], []
        for line in atoms.group(1).splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 6:
                raise DataFormatError(f"{path}, molecule {k}: atom line {line.strip()!r} has too few fields")
            symbol = fields[5].split(".")[0]
            symbol = symbol[:1].upper() + symbol[1:].lower()
            if symbol not in atomic_numbers:
                raise DataFormatError(f"{path}, molecule {k}: unknown atom type {fields[5]!r}")
            numbers.append(atomic_numbers[symbol])
            positions.append([float(x) for x in fields[2:5]])
        frames.append(ase.Atoms(numbers=numbers, positions=positions))
    return frames


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
            key_unit = stated_unit(key_unit, f"{where}: {spec}") if key_unit is not None else unit
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
                f"{where}: column {no_unit[0]!r} has no unit; pass --unit (unit= in Python: kcal/mol, eV or Hartree) "
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
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = _FIELD_SEP.split(body)
        if not rows and not header_seen and _is_header(fields, specs):
            header_seen = True
            continue
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
                hint = (
                    f" (a header row names the columns, e.g. '{' '.join(k for _, k, _ in specs)}')"
                    if not rows and not header_seen
                    else ""
                )
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


#: header names of the column that names the files
_NAME_HEADERS = {"name", "file", "filename", "file_name"}


def _is_header(fields: list[str], specs: list[tuple[str, str, str | None]]) -> bool:
    """True for a table's first line that names its columns: no number where numbers go, and
    a file-name column headed ``name``/``file``/``filename`` or number columns headed by their
    keys (``energy`` or ``energy[eV]`` over ``energy``)."""
    if len(fields) != len(specs):
        return False
    numeric = [(f, key) for f, (kind, key, _) in zip(fields, specs) if kind not in ("name", "skip")]
    if not numeric or any(_is_number(f) for f, _ in numeric):
        return False
    names = [f for f, (kind, _, _) in zip(fields, specs) if kind == "name"]
    return any(f.lower() in _NAME_HEADERS for f in names) or all(
        f.split("[", 1)[0].lower() == key.lower() for f, key in numeric
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_columns(table: Path) -> list[str]:
    """The columns a table's header row names: ``name`` (or ``file``, ``filename``) for the file
    names, targets as ``energy`` or ``energy[kcal/mol]``; `DataFormatError` without a header."""
    try:
        lines = [ln.split("#", 1)[0].strip() for ln in table.read_text().splitlines()]
    except FileNotFoundError:
        raise DataFormatError(f"{table}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{table}: cannot read the table ({_one_line(err)})") from None
    first = next((ln for ln in lines if ln), "")
    fields = _FIELD_SEP.split(first) if first else []
    if not fields or any(_is_number(f) for f in fields):
        raise DataFormatError(
            f"{table}: no header row; give the table's columns, e.g. --columns name,energy "
            "(columns=['name', 'energy'] in Python)"
        )
    columns = ["name" if f.lower() in _NAME_HEADERS else f for f in fields]
    if "name" not in columns:
        raise DataFormatError(
            f"{table}: the header {first!r} has no file-name column (name, file or filename); "
            "or give --columns"
        )
    return columns


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
    forces_key: str = "forces",
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
    forces_key : the per-atom array that holds the forces (``atoms.arrays``; an ASE database's
        ``data``); ``"forces"`` also reads the calculator's. A key no molecule has is an error.
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
    descriptions = dict(descriptions or {})
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
        specs = _parse_columns(columns, "targets", False, None) if columns is not None else None
        frames, labels, ids = [], [], []
        for file in tqdm(files, desc=f"reading {name}", unit="file", disable=not progress):
            f, lab, i = read_frames(file)
            frames += f
            labels += lab
            ids += i
        stated_force_unit = force_unit
        recorded = _recorded_units(files)
        for key, value in frames[0].info.items():  # "homo_unit": "Hartree" beside "homo" (qmlx's export)
            if key.endswith("_unit") and isinstance(value, str) and key[: -len("_unit")] in frames[0].info:
                recorded.setdefault(key[: -len("_unit")], (value, files[0]))
        if force_unit is None and "forces" in recorded:
            force_unit = normalize_force_unit(recorded["forces"][0])
        if specs is None:
            # what a file records units for (a schnetpack database, qmlx's export) is read, and the energy
            first = frames[0]
            scalars = [
                k for k in recorded if k != "forces" and (_numeric(first.info.get(k)) or _calc_has(first, k))
            ]
            if (
                scalars
                and "energy" not in scalars
                and (_numeric(first.info.get("energy")) or _calc_has(first, "energy"))
            ):
                scalars.insert(0, "energy")
            targets = {k: None for k in scalars} if scalars else None
        else:
            targets = {key: key_unit for _, key, key_unit in specs}
        if targets is not None:
            targets = {k: _target_unit(k, u, unit, recorded) for k, u in targets.items()}
        _check_present(frames, labels, targets)
        if forces_key != "forces" and not any(forces_key in a.arrays for a in frames):
            have = sorted(set(frames[0].arrays) - {"numbers", "positions"})
            raise DataFormatError(
                f"{labels[0].split(', ')[0]}: no molecule has per-atom {forces_key!r}; its molecules have: "
                f"{', '.join(have) or 'none'}"
            )
        fields = collect_frames(frames, labels, targets, unit, force_unit, strict=True, forces_key=forces_key)
        if not fields["targets"]:
            _check_nothing_left_out(frames, labels)
        if unit is None and (specs is None or not any(k == "energy" and u for _, k, u in specs)):
            _restore_units(fields, frames[0].info, force_unit_given=stated_force_unit is not None)
        _add_atomization(fields, files, descriptions)
    else:
        table = Path(table)
        if columns is None:
            columns = _header_columns(table)
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
    unknown = sorted(set(descriptions) - set(fields["targets"]))
    if unknown:
        raise DataFormatError(
            f"{name}: description(s) for unknown target(s) {unknown}; targets are {sorted(fields['targets'])}"
        )
    return Molecules(**fields, ids=np.asarray(ids), name=name, descriptions=descriptions)


def _recorded_units(files: Sequence[Path]) -> dict[str, tuple[str, Path]]:
    """Property -> (unit, file) over the files that record units (`file_units`); files that
    disagree on a property's unit are an error."""
    out: dict[str, tuple[str, Path]] = {}
    for file in files:
        for key, key_unit in file_units(file).items():
            if key in out and unit_name(out[key][0]) != unit_name(key_unit):
                raise DataFormatError(
                    f"{file}: records {key} in {key_unit}, but {out[key][1]} records it in {out[key][0]}"
                )
            out.setdefault(key, (key_unit, file))
    return out


def _target_unit(key: str, stated: str | None, unit: str | None, recorded: dict) -> str | None:
    """A target's unit: as stated for it (``U0[Hartree]``), else as its file records it, else the
    common ``unit``; a stated unit that contradicts the file's is an error naming the file."""
    if key not in recorded:
        return stated
    file_unit, file = recorded[key]
    given = stated if stated is not None else unit
    if given is not None and unit_name(given) != unit_name(file_unit):
        raise DataFormatError(f"{file}: records {key} in {file_unit}, not {given}")
    return unit_name(file_unit)


def _check_present(frames: list[ase.Atoms], labels: list[str], targets: dict | None) -> None:
    """A target the caller named that no molecule has is an error naming the file and the
    properties its molecules do have."""
    for key in targets or {}:
        if any(_numeric(a.info.get(key)) or _calc_has(a, key) for a in frames):
            continue  # some have it: collect_frames names the first that does not
        first = frames[0]
        have = sorted(
            {k for k, v in first.info.items() if _numeric(v)}
            | set((getattr(first.calc, "results", None) or {}) if first.calc is not None else {})
            | (set(first.arrays) - {"numbers", "positions"})
        )
        source = labels[0].split(", ")[0]
        raise DataFormatError(
            f"{source}: no molecule has a property {key!r}; its molecules have: {', '.join(have) or 'none'}"
        )


def _restore_units(fields: dict, info: dict, force_unit_given: bool) -> None:
    """Energies and forces that qmlx's export wrote in ASE's units (eV, eV/Å) back in the units the
    exported set kept them in (``qmlx_energy_unit``, ``qmlx_force_unit``)."""
    from qmlx.data.molecules import convert_force
    from qmlx.units import ENERGY_UNITS, convert_energy

    keep = info.get("qmlx_energy_unit")
    if keep in ENERGY_UNITS and fields["units"].get("energy") == "eV":
        fields["targets"]["energy"] = convert_energy(fields["targets"]["energy"], "eV", keep)
        fields["units"]["energy"] = keep
    keep = info.get("qmlx_force_unit")
    if isinstance(keep, str) and fields.get("forces") is not None and not force_unit_given:
        fields["forces"] = convert_force(fields["forces"], fields["force_unit"], keep)
        fields["force_unit"] = normalize_force_unit(keep)


def _check_nothing_left_out(frames: list[ase.Atoms], labels: list[str]) -> None:
    """Without an ``energy``, molecules that carry other numeric properties are an error that
    names them: the caller most likely meant one of them as the target."""
    keys = sorted(
        {k for a in frames for k, v in a.info.items() if _numeric(v)} - {"charge", "multiplicity", "spin"}
    )
    if keys:
        source = labels[0].split(", ")[0]
        raise DataFormatError(
            f"{source}: no 'energy', but the molecules have {', '.join(keys)}; name the target and its "
            f"unit, e.g. --target {keys[0]}[eV] (columns=['{keys[0]}[eV]'] in Python)"
        )


def _calc_has(atoms: ase.Atoms, key: str) -> bool:
    return atoms.calc is not None and key in (getattr(atoms.calc, "results", None) or {})


def _add_atomization(fields: dict, files: Sequence[Path], descriptions: dict[str, str]) -> None:
    """For each target a schnetpack database has atom references for (`file_atomrefs`), a second
    target ``<key>_atomization``: the value minus the sum of its atoms' references, in the same
    unit (the atomization energy, where the references are the free atoms' energies)."""
    refs: dict[str, np.ndarray] = {}
    for file in files:
        for key, values in file_atomrefs(file).items():
            refs.setdefault(key, values)
    n_mol = len(fields["n_atoms"])
    mol_index = np.repeat(np.arange(n_mol), fields["n_atoms"])
    for key in [k for k in fields["targets"] if k in refs]:
        ref = refs[key]
        if fields["Z"].max() >= len(ref) or np.any(ref[fields["Z"]] == 0):
            continue  # an element without a reference: no atomization energy
        per_mol = np.bincount(mol_index, weights=ref[fields["Z"]], minlength=n_mol)
        new = f"{key}_atomization"
        fields["targets"][new] = fields["targets"][key] - per_mol
        fields["units"][new] = fields["units"][key]
        descriptions.setdefault(new, f"{descriptions.get(key, key)} minus the database's atom references")


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
    if targets is None and format is None and file_units(path):  # a schnetpack database
        return import_molecules([path], unit=unit, force_unit=force_unit, name=path)
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

        frames = (_row_atoms(row) for row in ase.db.connect(path).select())
    elif suffix in (*MOL_SUFFIXES, ".mol2"):  # small files: read whole, with the charges they state
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
