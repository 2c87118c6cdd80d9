"""``qmlx data info`` and ``qmlx data import``."""

from __future__ import annotations

import argparse
import sys

from qmlx.cli.common import add_progress, check_writable
from qmlx.errors import ConfigError


def info(args: argparse.Namespace) -> None:
    """Counts, composition, sizes, folds and target statistics of a data set."""
    from qmlx.data import load_dataset

    mols = load_dataset(args.data, target=args.target)
    print(f"dataset      {mols.name}")
    print(f"molecules    {len(mols)}")
    print(f"atoms        {len(mols.Z)}")
    n = mols.n_atoms
    print(f"atoms/mol    {int(n.min())}-{int(n.max())} (mean {n.mean():.1f})")
    print("composition  " + " / ".join(f"{el} {k}" for el, k in mols.composition().items()))
    if mols.folds:
        sizes = sorted({len(test) for _, test in mols.folds})
        print(f"folds        {len(mols.folds)} official folds, test size {' / '.join(map(str, sizes))}")
    else:
        print("folds        none (use --split random for seeded K-fold)")
    keys = [args.target] if args.target else list(mols.targets)
    for key in keys:
        v = mols.targets[key]
        print(
            f"target       {key}: {mols.describe(key)}; mean {v.mean():.4f}, std {v.std():.4f}, "
            f"min {v.min():.4f}, max {v.max():.4f}"
        )
    if getattr(mols, "forces", None) is not None:
        print(f"forces       per atom, in {mols.force_unit}")


def _describe(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key or not text:
            raise ConfigError(
                f"--describe {item!r}: expected KEY=TEXT, e.g. energy='PBE0 atomization energy'"
            )
        out[key] = text
    return out


def import_command(args: argparse.Namespace) -> None:
    """Read every source, validate everything, then write one HDF5 store atomically."""
    from qmlx.data import import_molecules, save_molecules

    check_writable(args.out, "--out")
    columns = args.columns.split(",") if args.columns else None
    if columns is not None and args.table is None:
        raise ConfigError(
            "--columns describes the columns of --table; to read properties from the molecule files, "
            "name them with --target KEY[UNIT]"
        )
    if args.target and args.table is not None:
        raise ConfigError("--target reads properties from the molecule files; with --table give --columns")
    if args.target:
        columns = list(args.target)
    forces_key, force_unit = "forces", args.force_unit
    if args.forces:
        forces_key, _, rest = args.forces.partition("[")
        if rest:
            if not rest.endswith("]") or args.force_unit:
                raise ConfigError(
                    f"--forces {args.forces!r}: write KEY or KEY[UNIT] (and no --force-unit then)"
                )
            force_unit = rest[:-1]
    mols = import_molecules(
        args.sources,
        table=args.table,
        columns=columns,
        unit=args.unit,
        force_unit=force_unit,
        forces_key=forces_key,
        descriptions=_describe(args.describe),
        name=args.name,
        progress=not args.no_progress,
    )
    save_molecules(args.out, mols)
    targets = ", ".join(mols.describe(k) for k in mols.targets) or "no targets"
    print(f"wrote {args.out}: {len(mols)} molecules, {len(mols.Z)} atoms; {targets}", file=sys.stderr)


def export_command(args: argparse.Namespace) -> None:
    """Write a data set to an extxyz file or ASE database that reads back to the same numbers."""
    from qmlx.data import load_dataset
    from qmlx.data.export import check_export_path, export_molecules

    check_writable(args.out, "--out")
    check_export_path(args.out)
    mols = load_dataset(args.data)
    export_molecules(mols, args.out)
    targets = ", ".join(mols.describe(k) for k in mols.targets) or "no targets"
    print(f"wrote {args.out}: {len(mols)} molecules; {targets}", file=sys.stderr)


def add(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect and import data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("info", help="counts, composition, sizes and target statistics")
    p.add_argument("data", help="qm7, qm9, a qmlx .h5 store or a molecule file (xyz, extxyz, sdf, ASE db)")
    p.add_argument("--target", default=None, help="show only this target")
    p.set_defaults(func=info)

    p = data_sub.add_parser(
        "import",
        help="read molecule files (and a property table) into one qmlx HDF5 store",
        description="Import molecules and their properties into a qmlx HDF5 store. SOURCE is an extxyz "
        "file or ASE db (energies and forces from atoms.info/arrays or the calculator), any other "
        "ASE-readable file, or a folder of xyz files together with --table. Nothing is written unless "
        "every file and table line is valid.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="molecule file(s) or folder(s) of xyz files")
    p.add_argument("--table", default=None, help="property table: one line per molecule, file name first")
    p.add_argument(
        "--target", action="append", metavar="KEY[UNIT]",
        help="a property to read from the molecule files (atoms.info, an ASE database's key-value pairs or "
        "data, or the calculator), with its unit, e.g. --target U0[Hartree]; repeat for several "
        "(default: energy, or every property a schnetpack database records units for)",
    )  # fmt: skip
    p.add_argument(
        "--columns",
        default=None,
        help="names of the table's columns in order, comma-separated; 'name' is the file name, "
        "'-' skips a column (e.g. name,energy,-)",
    )
    p.add_argument(
        "--unit", choices=["kcal/mol", "eV", "Hartree"], default=None, help="energy unit of the targets"
    )
    p.add_argument("--force-unit", default=None, help="unit of forces (default: the energy unit per Å)")
    p.add_argument(
        "--forces", default=None, metavar="KEY[UNIT]",
        help="the per-atom array holding the forces, with its unit, e.g. --forces dft_forces[eV/Å] "
        "(default: 'forces' or the calculator's)",
    )  # fmt: skip
    p.add_argument(
        "--describe",
        action="append",
        metavar="KEY=TEXT",
        help="what a target is, with its level of theory, e.g. energy='PBE0/def2-TZVP atomization energy'",
    )
    p.add_argument("--name", default=None, help="name of the data set (default: the first source)")
    p.add_argument("--out", required=True, help="HDF5 file to write (.h5)")
    add_progress(p)
    p.set_defaults(func=import_command)

    p = data_sub.add_parser(
        "export",
        help="write a data set to an extxyz file or ASE database (eV, eV/Å; other units recorded)",
        description="Write molecules with their targets, forces, charge and multiplicity in files ASE and "
        "schnetpack read: an energy target in the calculator in eV (ASE's convention), other targets in "
        "their own unit with <key>_unit beside them, forces in eV/Å; an ASE database also records the "
        "units in its metadata. qmlx data import reads the file back to the same numbers and units.",
    )
    p.add_argument("data", help="qm7, qm9, a qmlx .h5 store or a molecule file")
    p.add_argument("--out", required=True, help="file to write (.extxyz or .db)")
    p.set_defaults(func=export_command)
