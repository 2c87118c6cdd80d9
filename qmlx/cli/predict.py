"""``qmlx predict MODEL FILES``: energies of the user's molecules, with domain checks.

Every output format (table, csv, json) carries per molecule ``in_domain`` and ``domain_notes``
and says what the number is (the model's target description and unit). Models with a novelty model
(`qmlx.novelty`) add ``novelty`` (the molecule's most unusual atom's one-class score over the 99th
percentile of its element's calibration atoms) and ``novelty_p`` (the fraction of calibration
molecules at least as novel), and with ``--atoms`` each atom's ``novelty``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import TYPE_CHECKING

from qmlx._io import json_dumps
from qmlx.cli.common import add_device, add_progress, positive_int
from qmlx.errors import QmlxError

if TYPE_CHECKING:  # annotations only: the parser is built without NumPy
    from qmlx.data.domain import DomainReport
    from qmlx.data.molecules import Molecules


def read_inputs(files: list[str]) -> list[Molecules]:
    """Read every input file before any computing, so that a bad file fails first."""
    from qmlx.data import load_dataset

    return [load_dataset(path) for path in files]


def warn_domain(reports: list[tuple[str, DomainReport]]) -> None:
    """One warning on stderr for all molecules flagged outside the training domain."""
    flagged = sum(r.n_flagged for _, r in reports)
    if flagged:
        total = sum(len(r.in_domain) for _, r in reports)
        print(
            f"qmlx: warning: {flagged} of {total} molecules lie outside the model's training domain "
            "(see domain_notes); their predictions are less reliable",
            file=sys.stderr,
        )


def _rows(path: str, mols: Molecules, pred, offset: int, args) -> list:
    """Output rows of one chunk from its `qmlx.models.Prediction`; a refused molecule's row has
    ``energy`` ``None`` and an ``error``."""
    from ase.data import chemical_symbols

    from qmlx.units import convert_energy

    energies = convert_energy(pred.energy, "kcal/mol", args.unit)
    std = None if pred.uncertainty is None else convert_energy(pred.uncertainty, "kcal/mol", args.unit)
    rows = []
    for i in range(len(mols)):
        lo, hi = mols.offsets[i], mols.offsets[i + 1]
        refused = pred.errors[i] is not None
        row = {
            "file": path,
            "molecule": offset + i,
            "formula": _formula(mols.Z[lo:hi]),
            "energy": None if refused else float(energies[i]),
            **({} if std is None else {"uncertainty": None if refused else float(std[i])}),
            **(
                {}
                if pred.novelty is None
                else {
                    "novelty": None if refused else float(pred.novelty[i]),
                    "novelty_p": None if refused else float(pred.novelty_p[i]),
                }
            ),
            "in_domain": bool(pred.in_domain[i]),
            "domain_notes": pred.notes[i],
            **({"error": pred.errors[i]} if refused else {}),
        }
        if args.atoms and not refused:
            none = [None] * (hi - lo)
            ae = (
                none
                if pred.atom_energies is None
                else convert_energy(pred.atom_energies[lo:hi], "kcal/mol", args.unit)
            )
            nov = none if pred.atom_novelty is None else pred.atom_novelty[lo:hi]
            row["atoms"] = [
                {"atom": j, "element": chemical_symbols[z]}
                | ({} if e is None else {"energy": float(e)})
                | ({} if n is None else {"novelty": float(n)})
                for j, (z, e, n) in enumerate(zip(mols.Z[lo:hi], ae, nov))
            ]
        rows.append(row)
    return rows


def _formula(numbers) -> str:
    """The molecule's formula as ASE writes it (``atoms.get_chemical_formula()``), e.g. ``CH4``."""
    from ase.formula import Formula
    from ase.symbols import Symbols

    return Formula(str(Symbols(numbers))).format("hill")


class _Writer:
    """Writes prediction rows to stdout as they come: a table, CSV, one JSON document (streamed
    row by row, still valid JSON) or JSON lines."""

    def __init__(
        self, fmt: str, model_name: str, quantity: str, unit: str, atoms: bool, spread: bool, novelty: bool
    ) -> None:
        self.fmt, self.quantity, self.unit, self.atoms, self.spread = fmt, quantity, unit, atoms, spread
        self.novelty = novelty
        self.first = True
        self.csv = csv.writer(sys.stdout) if fmt == "csv" else None
        if fmt == "json":
            head = json_dumps({"model": model_name, "quantity": quantity, "unit": unit}, indent=None)
            sys.stdout.write(head[:-1] + ', "molecules": [\n')
        elif fmt == "csv":
            tail = [
                f"{quantity} [{unit}]",
                *([f"uncertainty [{unit}]"] if spread else []),
                *(["novelty", "novelty p"] if novelty else []),
                "in_domain",
                "domain_notes",
            ]
            extra = (
                ["atom", "element", f"atom energy [{unit}]", *(["atom novelty"] if novelty else [])]
                if atoms
                else []
            )
            self.csv.writerow(["file", "molecule", "formula", *extra, *tail])
        elif fmt == "table":
            print(f"{quantity} ({unit})")
        self.width = None

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "json":
            for r in rows:
                sys.stdout.write(("" if self.first else ",\n") + json_dumps(r, indent=None))
                self.first = False
        elif self.fmt == "jsonl":
            sys.stdout.write("".join(json_dumps(r, indent=None) + "\n" for r in rows))
        elif self.fmt == "csv":
            for r in rows:
                common = [r["file"], r["molecule"], r["formula"]]
                unc = [_number(r["uncertainty"])] if self.spread else []
                nov = [_number(r["novelty"]), _number(r["novelty_p"])] if self.novelty else []
                end = [
                    _number(r["energy"]),
                    *unc,
                    *nov,
                    str(r["in_domain"]).lower(),
                    "; ".join(r["domain_notes"]),
                ]
                if self.atoms and "atoms" in r:
                    for a in r["atoms"]:
                        atom_nov = [_number(a.get("novelty"))] if self.novelty else []
                        energy = _number(a.get("energy"))
                        self.csv.writerow(common + [a["atom"], a["element"], energy, *atom_nov] + end)
                else:
                    self.csv.writerow(common + end)
        else:
            if self.width is None:
                self.width = max(len("file"), *(len(r["file"]) for r in rows))
                unc = f" {'± (1σ)':>10}" if self.spread else ""
                nov = f" {'novelty':>8}" if self.novelty else ""
                print(f"{'file':<{self.width}}  {'mol':>4}  {'formula':<12} {'energy':>14}{unc}{nov}")
            w = self.width
            for r in rows:
                head = f"{r['file']:<{w}}  {r['molecule']:>4}  {r['formula']:<12}"
                if "error" in r:
                    print(f"{head} {'refused':>14}  [{r['error']}]")
                    continue
                flag = (
                    ""
                    if r["in_domain"]
                    else "  [outside training domain: " + "; ".join(r["domain_notes"]) + "]"
                )
                unc = f" {r['uncertainty']:>10.4f}" if self.spread else ""
                nov = f" {r['novelty']:>8.2f}" if self.novelty else ""
                print(f"{head} {r['energy']:>14.4f}{unc}{nov}{flag}")
                for a in r.get("atoms", []):
                    energy = f"{a['energy']:>12.4f}" if "energy" in a else " " * 12
                    atom_nov = f" novelty {a['novelty']:.2f}" if "novelty" in a else ""
                    print(f"{'':<{w}}  {'':>4}    atom {a['atom']:>3} {a['element']:<2} {energy}{atom_nov}")

    def close(self) -> None:
        if self.fmt == "json":
            sys.stdout.write("\n]}\n")
        sys.stdout.flush()


def predict(args: argparse.Namespace) -> int:
    """Predict every molecule of every file, chunk by chunk (`qmlx.data.io.iter_molecules`), writing
    rows as they come; memory stays flat in the number of molecules. Every file is opened and
    parsed before anything is predicted.

    A molecule the model cannot answer is refused alone: its row carries an ``error``, one line on
    stderr names it, the other molecules are predicted, and the exit status is 1. ``--on-novel``
    says what happens to molecules outside the training domain: ``flag`` (marked in the output),
    ``refuse`` (treated as refused) or ``skip`` (left out, counted on stderr). ``--out`` also writes
    the molecules with their results (`qmlx.data.export`), atomically, as the rows are written."""
    from tqdm.auto import tqdm

    from qmlx.data.io import iter_molecules
    from qmlx.models import load_model

    if args.out:
        from qmlx.cli.common import check_writable
        from qmlx.data.export import check_export_path

        check_writable(args.out, "--out")
        check_export_path(args.out)
    model = load_model(args.model, args.device)
    if args.atoms and "atom_energies" not in model.properties and model.novelty is None:
        raise QmlxError(f"{args.model}: this model gives neither atom energies nor atom novelty")
    chunks = [iter_molecules(path, args.chunk_size) for path in args.files]
    first = [(path, next(it)) for path, it in zip(args.files, chunks)]  # every file opens and parses
    spread = "uncertainty" in model.properties
    writer = _Writer(
        args.format, args.model, model.quantity, args.unit, args.atoms, spread, model.novelty is not None
    )
    bar = tqdm(desc="predicting", unit="mol", disable=args.no_progress or None, mininterval=1.0)
    counts = dict.fromkeys(("flagged", "refused", "skipped", "total"), 0)
    with _frame_writer(args.out, model) as frames_out:
        _predict_all(args, model, first, chunks, writer, bar, frames_out, counts)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    flagged, refused, skipped, total = (counts[k] for k in ("flagged", "refused", "skipped", "total"))
    if flagged:
        print(
            f"qmlx: warning: {flagged} of {total} molecules lie outside the model's training domain "
            "(see domain_notes); their predictions are less reliable",
            file=sys.stderr,
        )
    if skipped:
        print(
            f"qmlx: {skipped} of {total} molecules outside the training domain left out (--on-novel skip)",
            file=sys.stderr,
        )
    return 1 if refused else 0


def _predict_all(args, model, first, chunks, writer, bar, frames_out, counts: dict) -> None:
    """The loop of `predict`: every chunk of every file predicted, written as rows (and frames to
    ``frames_out``), ``counts`` updated."""
    import warnings

    import numpy as np

    from qmlx.errors import DomainWarning

    try:
        for (path, head), rest in zip(first, chunks):
            offset = 0
            for mols in _chain(head, rest):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DomainWarning)  # reported once, below
                    pred = model.predict(mols)
                outside = ~pred.in_domain & ~pred.refused
                if args.on_novel == "refuse":  # outside the domain: an error record, like a refusal
                    for i in np.flatnonzero(outside):
                        label = f"{path}: molecule {offset + i}" if len(mols) > 1 or offset else path
                        pred.errors[i] = f"{label}: outside the training domain ({'; '.join(pred.notes[i])})"
                rows = _rows(path, mols, pred, offset, args)
                for error in pred.errors:
                    if error is not None:
                        print(f"qmlx: error: {error}", file=sys.stderr)
                keep = ~outside if args.on_novel == "skip" else np.ones(len(mols), dtype=bool)
                if args.on_novel == "skip":
                    rows = [r for r, out in zip(rows, outside) if not out]
                    counts["skipped"] += int(outside.sum())
                writer.write(rows)
                if frames_out is not None:
                    frames_out.write([f for f, k in zip(_result_frames(mols, pred, model, path), keep) if k])
                offset += len(mols)
                counts["refused"] += sum(e is not None for e in pred.errors)
                counts["total"] += len(mols)
                counts["flagged"] += int(outside.sum()) if args.on_novel == "flag" else 0
                bar.update(len(mols))
    finally:
        bar.close()
        writer.close()


def _frame_writer(path: str | None, model):
    """A `qmlx.data.export.FrameWriter` for ``--out`` (a context yielding None without it)."""
    from contextlib import nullcontext

    if not path:
        return nullcontext(None)
    from qmlx.data.export import FrameWriter

    units = {"energy": "eV", "energy_kcal_mol": "kcal/mol"}
    if "uncertainty" in model.properties:
        units["uncertainty_kcal_mol"] = "kcal/mol"
    return FrameWriter(path, units)


def _result_frames(mols: Molecules, pred, model, path: str) -> list:
    """The molecules of one chunk as ``ase.Atoms`` with the prediction (`qmlx.data.export.result_frames`)."""
    from qmlx.data.export import result_frames

    n = len(mols)
    info = {
        "source": [path] * n,
        "model": [str(model.name)] * n,
        "quantity": [model.quantity] * n,
        "in_domain": [bool(v) for v in pred.in_domain],
        "domain_notes": ["; ".join(notes) for notes in pred.notes],
        "error": list(pred.errors),
    }
    if pred.uncertainty is not None:
        info["uncertainty_kcal_mol"] = [
            None if e else float(u) for u, e in zip(pred.uncertainty, pred.errors)
        ]
    if pred.novelty is not None:
        info["novelty"] = [None if e else float(v) for v, e in zip(pred.novelty, pred.errors)]
        info["novelty_p"] = [None if e else float(v) for v, e in zip(pred.novelty_p, pred.errors)]
    atom_values = {}
    if pred.atom_energies is not None:
        atom_values["atom_energy_kcal_mol"] = pred.atom_energies
    if pred.atom_novelty is not None:
        atom_values["atom_novelty"] = pred.atom_novelty
    return result_frames(mols, pred.energy, atom_values, info)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _chain(head: Molecules, rest):
    yield head
    yield from rest


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict energies of the molecules in files")
    p.add_argument(
        "model", help="shipped model name (qm7-schnet, qm7-dtnn, qm9-schnet), network .pt or KRR .h5 file"
    )
    p.add_argument(
        "files", nargs="+", help="molecule files in any ASE format (positions in Å) or a qmlx .h5 store"
    )
    p.add_argument(
        "--atoms", action="store_true",
        help="also print per-atom energies (networks) and novelty (models with a novelty model)",
    )  # fmt: skip
    p.add_argument(
        "--format", choices=["table", "json", "jsonl", "csv"], default="table",
        help="jsonl: one JSON object per molecule and line",
    )  # fmt: skip
    p.add_argument("--unit", choices=["kcal/mol", "eV", "Hartree"], default="kcal/mol")
    p.add_argument(
        "--on-novel", choices=["flag", "refuse", "skip"], default="flag",
        help="molecules outside the training domain (rules or novelty): flag them in the output (default), "
        "refuse them (an error record and exit status 1), or leave them out",
    )  # fmt: skip
    p.add_argument(
        "--out", default=None, metavar="FILE",
        help="also write the molecules with their results to FILE.extxyz or FILE.db (ASE's conventions: "
        "energy in eV in the calculator, energy_kcal_mol beside it; atom energies and novelty per atom)",
    )  # fmt: skip
    p.add_argument(
        "--chunk-size", type=positive_int, default=10_000,
        help="molecules read and predicted at a time (memory stays flat in the file size)",
    )  # fmt: skip
    add_device(p)
    add_progress(p)
    p.set_defaults(func=predict)
