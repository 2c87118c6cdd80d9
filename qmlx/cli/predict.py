"""``qmlx predict MODEL FILES``: energies of the user's molecules, with domain checks.

Every output format (table, csv, json) carries per molecule ``in_domain`` and ``domain_notes``
and says what the number is (the model's target description and unit).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qmlx.cli.common import add_device
from qmlx.data.domain import DomainReport
from qmlx.data.molecules import Molecules
from qmlx.errors import DataFormatError, QmlxError


@dataclass
class LoadedModel:
    """A network or KRR model behind one interface.

    predict : ``mols -> (energies (n_mol,), atom energies (n_atoms_total,) or None)``, kcal/mol.
    check : ``mols -> DomainReport``; raises `DomainError` for input the model cannot answer.
    """

    name: str
    kind: str
    model: object
    metadata: dict
    predict: Callable[[Molecules], tuple[np.ndarray, np.ndarray | None]]
    check: Callable[[Molecules], DomainReport]

    @property
    def quantity(self) -> str:
        """What the model predicts, e.g. ``PBE0 atomization energy``."""
        meta = self.metadata
        return meta.get("target_description") or str(meta.get("target", "energy")).replace("_", " ")


def load_model(spec: str, device: str = "cpu") -> LoadedModel:
    """A shipped model name, a network file (.pt, loaded onto ``device``) or a KRR model file (.h5,
    which runs on the CPU)."""
    from pathlib import Path

    from qmlx.kernels import is_krr_file, load_krr
    from qmlx.models import SHIPPED
    from qmlx.nn.io import check_network_domain, is_network_file, load_network, predict_network

    if is_network_file(spec):
        net = load_network(spec, device)
        return LoadedModel(
            spec, "network", net, net.metadata,
            predict=lambda m: predict_network(net, m), check=lambda m: check_network_domain(net, m),
        )  # fmt: skip
    if is_krr_file(spec):
        krr = load_krr(spec)
        return LoadedModel(
            spec, "krr", krr, krr.metadata,
            predict=lambda m: (krr.predict_molecules(m), None), check=krr.check_domain,
        )  # fmt: skip
    if not Path(spec).exists():
        raise DataFormatError(f"{spec}: no such file (and not a shipped model: {', '.join(SHIPPED)})")
    raise DataFormatError(
        f"{spec}: not a qmlx model (expected a shipped name such as qm7-schnet, a network .pt file "
        "or a KRR .h5 file)"
    )


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


def predict(args: argparse.Namespace) -> None:
    from ase.data import chemical_symbols

    from qmlx.data.paths import json_dumps
    from qmlx.units import convert_energy

    model = load_model(args.model, args.device)
    if args.atoms and model.kind != "network":
        raise QmlxError(f"{args.model}: per-atom energies need a network model (schnet or dtnn)")
    inputs = read_inputs(args.files)
    reports = [(path, model.check(mols)) for path, mols in zip(args.files, inputs)]
    rows = []
    for path, mols, (_, report) in zip(args.files, inputs, reports):
        energies, atom_energies = model.predict(mols)
        energies = convert_energy(energies, "kcal/mol", args.unit)
        for i, atoms in enumerate(mols):
            row = {
                "file": path,
                "molecule": i,
                "formula": atoms.get_chemical_formula(),
                "energy": float(energies[i]),
                "in_domain": bool(report.in_domain[i]),
                "domain_notes": report.notes[i],
            }
            if args.atoms:
                lo, hi = mols.offsets[i], mols.offsets[i + 1]
                ae = convert_energy(atom_energies[lo:hi], "kcal/mol", args.unit)
                row["atoms"] = [
                    {"atom": j, "element": chemical_symbols[z], "energy": float(e)}
                    for j, (z, e) in enumerate(zip(mols.Z[lo:hi], ae))
                ]
            rows.append(row)
    warn_domain(reports)
    unit, quantity = args.unit, model.quantity
    if args.format == "json":
        doc = {"model": args.model, "quantity": quantity, "unit": unit, "molecules": rows}
        print(json_dumps(doc))
    elif args.format == "csv":
        _write_csv(rows, quantity, unit, args.atoms)
    else:
        _write_table(rows, quantity, unit)


def _write_csv(rows: list[dict], quantity: str, unit: str, atoms: bool) -> None:
    writer = csv.writer(sys.stdout)
    head = ["file", "molecule", "formula"]
    tail = [f"{quantity} [{unit}]", "in_domain", "domain_notes"]
    writer.writerow(head + (["atom", "element", f"atom energy [{unit}]"] if atoms else []) + tail)
    for r in rows:
        common = [r["file"], r["molecule"], r["formula"]]
        end = [f"{r['energy']:.6f}", str(r["in_domain"]).lower(), "; ".join(r["domain_notes"])]
        if atoms:
            for a in r["atoms"]:
                writer.writerow(common + [a["atom"], a["element"], f"{a['energy']:.6f}"] + end)
        else:
            writer.writerow(common + end)


def _write_table(rows: list[dict], quantity: str, unit: str) -> None:
    width = max(len("file"), *(len(r["file"]) for r in rows))
    print(f"{quantity} ({unit})")
    print(f"{'file':<{width}}  {'mol':>4}  {'formula':<12} {'energy':>14}")
    for r in rows:
        flag = "" if r["in_domain"] else "  [outside training domain: " + "; ".join(r["domain_notes"]) + "]"
        print(f"{r['file']:<{width}}  {r['molecule']:>4}  {r['formula']:<12} {r['energy']:>14.4f}{flag}")
        for a in r.get("atoms", []):
            print(f"{'':<{width}}  {'':>4}    atom {a['atom']:>3} {a['element']:<2} {a['energy']:>12.4f}")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict energies of the molecules in files")
    p.add_argument(
        "model", help="shipped model name (qm7-schnet, qm7-dtnn, qm9-schnet), network .pt or KRR .h5 file"
    )
    p.add_argument(
        "files", nargs="+", help="molecule files in any ASE format (positions in Å) or a qmlx .h5 store"
    )
    p.add_argument("--atoms", action="store_true", help="also print per-atom energies (networks)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--unit", choices=["kcal/mol", "eV", "Hartree"], default="kcal/mol")
    add_device(p)
    p.set_defaults(func=predict)
