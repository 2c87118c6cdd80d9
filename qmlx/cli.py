"""The ``qmlx`` command.

Sub-commands are registered by small ``add_*`` functions, each of which adds its parser and sets
``func``; later sub-commands (train, predict, explain) slot in the same way. Errors that qmlx
raises on purpose are printed as one line on stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from qmlx.data import Molecules
from qmlx.errors import QmlxError


def load_dataset(spec: str):
    """``qm7``, ``qm9`` or a path to any molecule file ASE (or the qmlx HDF5 store) reads."""
    from qmlx.data import load_qm7, load_qm9

    if spec.lower() == "qm7":
        return load_qm7()
    if spec.lower() == "qm9":
        return load_qm9()
    return Molecules.read(spec)


def data_info(args: argparse.Namespace) -> None:
    mols = load_dataset(args.dataset)
    print(f"dataset      {mols.name}")
    print(f"molecules    {len(mols)}")
    print(f"atoms        {len(mols.Z)}")
    print(
        f"atoms/mol    {int(mols.n_atoms.min())}-{int(mols.n_atoms.max())} (mean {mols.n_atoms.mean():.1f})"
    )
    print("composition  " + " / ".join(f"{el} {n}" for el, n in mols.composition().items()))
    if mols.folds:
        sizes = sorted({len(test) for _, test in mols.folds})
        print(f"folds        {len(mols.folds)} folds, test size {' / '.join(map(str, sizes))}")
    for key, values in mols.targets.items():
        print(
            f"target       {key} [{mols.units[key]}]: mean {values.mean():.4f}, std {values.std():.4f}, "
            f"min {values.min():.4f}, max {values.max():.4f}"
        )


def add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect data sets and molecule files")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="counts, composition, sizes and target statistics")
    info.add_argument("dataset", help="qm7, qm9, or a molecule file (xyz, extxyz, sdf, ASE db, qmlx .h5)")
    info.set_defaults(func=data_info)


def add_train(sub: argparse._SubParsersAction) -> None:
    from qmlx.kernels.cli import add_train_krr
    from qmlx.train.cli import add_train_network

    train = sub.add_parser("train", help="train a model (krr, schnet, dtnn)")
    models = train.add_subparsers(dest="model", required=True)
    add_train_krr(models)
    add_train_network(models)


def load_predictor(spec: str) -> Callable[[Molecules], tuple[np.ndarray, np.ndarray | None]]:
    """A function ``mols -> (energies (n_mol,), atom energies (n_atoms_total,) or None)`` in kcal/mol
    for a shipped model name, a network file (.pt) or a KRR model file (.h5)."""
    from qmlx.kernels.cli import is_krr_file, load_krr
    from qmlx.nn.io import is_network_file, load_network, predict_network

    if is_network_file(spec):
        network = load_network(spec)
        return lambda mols: predict_network(network, mols)
    if is_krr_file(spec):
        krr = load_krr(spec)
        return lambda mols: (krr.predict_molecules(mols), None)
    raise QmlxError(
        f"{spec}: not a qmlx model (expected a shipped name such as qm7-schnet, a network .pt file "
        "or a KRR .h5 file)"
    )


def predict(args: argparse.Namespace) -> None:
    from ase.data import chemical_symbols

    from qmlx.data import Molecules
    from qmlx.units import convert_energy

    predictor = load_predictor(args.model)
    rows = []
    for path in args.files:
        mols = Molecules.read(path)
        energies, atom_energies = predictor(mols)
        if args.atoms and atom_energies is None:
            raise QmlxError(f"{args.model}: per-atom energies need a network model (schnet or dtnn)")
        energies = convert_energy(energies, "kcal/mol", args.unit)
        for i, atoms in enumerate(mols):
            row = {
                "file": path,
                "molecule": i,
                "formula": atoms.get_chemical_formula(),
                "energy": energies[i],
            }
            if args.atoms:
                lo, hi = mols.offsets[i], mols.offsets[i + 1]
                row["atoms"] = [
                    {"atom": j, "element": chemical_symbols[z], "energy": e}
                    for j, (z, e) in enumerate(
                        zip(mols.Z[lo:hi], convert_energy(atom_energies[lo:hi], "kcal/mol", args.unit))
                    )
                ]
            rows.append(row)
    unit = args.unit
    if args.format == "json":
        print(json.dumps({"model": args.model, "unit": unit, "molecules": rows}, indent=2, default=float))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        if args.atoms:
            writer.writerow(
                [
                    "file",
                    "molecule",
                    "formula",
                    "atom",
                    "element",
                    f"atom_energy [{unit}]",
                    f"energy [{unit}]",
                ]
            )
            for r in rows:
                for a in r["atoms"]:
                    writer.writerow(
                        [
                            r["file"],
                            r["molecule"],
                            r["formula"],
                            a["atom"],
                            a["element"],
                            f"{a['energy']:.6f}",
                            f"{r['energy']:.6f}",
                        ]
                    )
        else:
            writer.writerow(["file", "molecule", "formula", f"energy [{unit}]"])
            for r in rows:
                writer.writerow([r["file"], r["molecule"], r["formula"], f"{r['energy']:.6f}"])
    else:
        width = max(len("file"), *(len(r["file"]) for r in rows))
        print(f"{'file':<{width}}  {'mol':>4}  {'formula':<12} {'energy [' + unit + ']':>20}")
        for r in rows:
            print(f"{r['file']:<{width}}  {r['molecule']:>4}  {r['formula']:<12} {r['energy']:>20.4f}")
            for a in r.get("atoms", []):
                print(f"{'':<{width}}  {'':>4}    atom {a['atom']:>3} {a['element']:<2} {a['energy']:>18.4f}")


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict energies of the molecules in files")
    p.add_argument("model", help="shipped model name (qm7-schnet, qm7-dtnn), network .pt or KRR .h5 file")
    p.add_argument("files", nargs="+", help="molecule files any ASE format (positions in Å)")
    p.add_argument("--atoms", action="store_true", help="also print per-atom energies (networks)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--unit", choices=["kcal/mol", "eV", "Hartree"], default="kcal/mol")
    p.set_defaults(func=predict)


def explain_command(args: argparse.Namespace) -> None:
    from ase.data import chemical_symbols

    from qmlx.explain import Epsilon, Gamma, explain
    from qmlx.nn.io import is_network_file, load_network

    if not is_network_file(args.model):
        raise QmlxError(f"{args.model}: explanations need a network model (a shipped name or a .pt file)")
    model = load_network(args.model)
    mols = Molecules.concatenate([Molecules.read(path) for path in args.files], name=", ".join(args.files))
    rule = Gamma(args.gamma) if args.gamma > 0 else Epsilon(args.epsilon)
    method = "lrp-pairs" if args.pairs and args.method == "lrp" else args.method
    result = explain(model, mols, method, rule=rule, steps=args.steps)
    if args.format == "json":
        out = []
        for i, atoms in enumerate(mols):
            lo, hi = mols.offsets[i], mols.offsets[i + 1]
            item = {
                "formula": atoms.get_chemical_formula(),
                "prediction": result.prediction[i],
                "reference": result.reference[i],
                "relevance": result.relevance[lo:hi].tolist(),
                "elements": [chemical_symbols[z] for z in mols.Z[lo:hi]],
            }
            if result.bias is not None:
                item["bias_relevance"] = result.bias[lo:hi].tolist()
            if result.pairs is not None:
                item["pair_relevance"] = result.pairs[i].tolist()
            out.append(item)
        print(json.dumps({"method": method, "unit": "kcal/mol", "molecules": out}, indent=2, default=float))
    else:
        for i, atoms in enumerate(mols):
            lo, hi = mols.offsets[i], mols.offsets[i + 1]
            print(
                f"molecule {i}  {atoms.get_chemical_formula()}  E = {result.prediction[i]:.4f} kcal/mol  "
                f"reference = {result.reference[i]:.4f} kcal/mol  method = {method}"
            )
            header = f"  {'atom':>4} {'el':<2} {'relevance':>12}"
            print(header + (f" {'bias':>12}" if result.bias is not None else ""))
            for k in range(lo, hi):
                line = f"  {k - lo:>4} {chemical_symbols[mols.Z[k]]:<2} {result.relevance[k]:>12.4f}"
                print(line + (f" {result.bias[k]:>12.4f}" if result.bias is not None else ""))
    if args.png:
        from qmlx.explain.plot import plot_explanation

        plot_explanation(result, args.png, pairs=result.pairs is not None)
        print(f"wrote {args.png}", file=sys.stderr)


def add_explain(sub: argparse._SubParsersAction) -> None:
    from qmlx.explain import METHODS

    p = sub.add_parser("explain", help="per-atom relevances of a network's energy predictions")
    p.add_argument("model", help="shipped model name (qm7-schnet, qm7-dtnn) or network .pt file")
    p.add_argument("files", nargs="+", help="molecule files in any ASE format (positions in Å)")
    p.add_argument("--method", choices=METHODS, default="lrp")
    p.add_argument(
        "--pairs", action="store_true", help="with lrp: also atom-pair relevances (drawn on bonds)"
    )
    p.add_argument("--epsilon", type=float, default=1e-9, help="LRP epsilon rule stabilizer")
    p.add_argument("--gamma", type=float, default=0.0, help="LRP gamma rule for linear layers (0: epsilon)")
    p.add_argument("--steps", type=int, default=50, help="integrated-gradients steps")
    p.add_argument("--png", help="draw the molecules coloured by relevance into this PNG")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=explain_command)


def build_parser() -> argparse.ArgumentParser:
    from qmlx import __version__

    parser = argparse.ArgumentParser(prog="qmlx", description="machine learning for quantum chemistry")
    parser.add_argument("--version", action="version", version=f"qmlx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data(sub)
    add_train(sub)
    add_predict(sub)
    add_explain(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    np.set_printoptions(precision=4, suppress=True)
    try:
        args.func(args)
    except QmlxError as err:
        print(f"qmlx: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qmlx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qmlx predict ... | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
