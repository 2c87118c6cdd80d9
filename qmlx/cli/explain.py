"""``qmlx explain MODEL FILES``: per-atom relevances, with the same domain checks as predict."""

from __future__ import annotations

import argparse
import sys

from qmlx.cli.common import (
    EXPLAIN_METHODS,
    add_device,
    check_writable,
    nonnegative_float,
    positive_float,
    positive_int,
)
from qmlx.errors import QmlxError


def _labels(files: list[str], positions: list[list[int]], sizes: list[int]) -> tuple[list[str], list[int]]:
    """Per molecule: a label for pictures and tables (the file name, plus ``#k`` for the k-th
    molecule of a multi-molecule file) and its index within its file; ``positions`` are the
    indices of the molecules explained in each file of ``sizes`` molecules."""
    from pathlib import Path

    labels, index = [], []
    for path, kept, size in zip(files, positions, sizes):
        for k in kept:
            labels.append(Path(path).name if size == 1 else f"{Path(path).name} #{k}")
            index.append(k)
    return labels, index


def _items(
    result, mols, sources: list[str], index: list[int], in_domain: list[bool], notes: list
) -> list[dict]:
    """One JSON-ready record per molecule of an `Explanation`."""
    from ase.data import chemical_symbols

    out = []
    for i, atoms in enumerate(mols):
        lo, hi = mols.offsets[i], mols.offsets[i + 1]
        item = {
            "file": sources[i],
            "molecule": index[i],
            "formula": atoms.get_chemical_formula(),
            "prediction": result.prediction[i],
            "reference": result.reference[i],
            "relevance": result.relevance[lo:hi],
            "elements": [chemical_symbols[z] for z in mols.Z[lo:hi]],
            "in_domain": in_domain[i],
            "domain_notes": notes[i],
        }
        if result.bias is not None:
            item["bias_relevance"] = result.bias[lo:hi]
        if result.method == "novelty":
            item["novelty"] = result.prediction[i]  # = sum(relevance) + remainder
        if result.padding is not None:
            item["remainder"] = result.padding[i]
        if result.pairs is not None:
            item["pair_relevance"] = result.pairs[i]
        if result.spread is not None:
            item["relevance_spread"] = result.spread[lo:hi]
        if result.walks is not None:
            w = result.walks[i]
            item["walks"] = [
                {
                    "atoms": walk,
                    "elements": [chemical_symbols[z] for z in mols.Z[lo:hi][walk]],
                    "relevance": r,
                }
                for walk, r in zip(w.walks.tolist(), w.relevance)
            ]
            item |= {"walks_total": w.walks_total, "bias_total": w.bias_total, "n_walks": w.n_walks}
        out.append(item)
    return out


def _print_table(result, mols, labels: list[str], in_domain: list[bool], notes: list) -> None:
    from ase.data import chemical_symbols

    remainder = result.bias
    for i, atoms in enumerate(mols):
        lo, hi = mols.offsets[i], mols.offsets[i + 1]
        flag = "" if in_domain[i] else "  [outside training domain: " + "; ".join(notes[i]) + "]"
        extra = f"  remainder = {result.padding[i]:.4f}" if result.padding is not None else ""
        name = "novelty" if result.method == "novelty" else "E"
        print(
            f"{labels[i]}  {atoms.get_chemical_formula()}  {name} = {result.prediction[i]:.4f}  "
            f"reference = {result.reference[i]:.4f}{extra}{flag}"
        )
        header = f"  {'atom':>4} {'el':<2} {'relevance':>12}"
        header += f" {'bias':>12}" if remainder is not None else ""
        print(header + (f" {'members σ':>12}" if result.spread is not None else ""))
        for k in range(lo, hi):
            line = f"  {k - lo:>4} {chemical_symbols[mols.Z[k]]:<2} {result.relevance[k]:>12.4f}"
            line += f" {remainder[k]:>12.4f}" if remainder is not None else ""
            print(line + (f" {result.spread[k]:>12.4f}" if result.spread is not None else ""))
        if result.walks is not None:
            w = result.walks[i]
            print(
                f"  {len(w.walks)} strongest of {w.n_walks} walks (all walks {w.walks_total:.4f} + biases "
                f"{w.bias_total:.4f} = E - reference)"
            )
            for walk, r in zip(w.walks, w.relevance):
                path = " -> ".join(f"{chemical_symbols[mols.Z[lo + a]]}{a}" for a in walk)
                print(f"    {r:>12.4f}  {path}")


def _what(model, method: str, unit: str | None) -> tuple[str, str]:
    """(the explained quantity, the relevances' unit in words) for the output headers."""
    if method == "novelty":
        return (
            "novelty of the molecule to the model's training domain (unitless)",
            "share of the novelty, unitless",
        )
    return f"{model.quantity} (kcal/mol)", "gradient norm, unsigned, no unit" if unit is None else unit


def _stream(args: argparse.Namespace, model, method: str, rule, unit: str | None) -> int:
    """Explain file after file, chunk by chunk (`qmlx.data.io.iter_molecules`), printing as it
    goes: memory stays flat in the number of molecules. The first chunk of every file is read and
    checked against the model's domain before anything is printed. A molecule the model cannot
    answer is refused alone (one stderr line, a record with its ``error``); returns 1 if any was."""
    from pathlib import Path

    from qmlx._io import json_dumps
    from qmlx.data.domain import screen
    from qmlx.data.io import iter_molecules
    from qmlx.explain import explain

    chunks = [iter_molecules(path, args.chunk_size) for path in args.files]
    first = [next(it) for it in chunks]  # every file opens and parses before any output
    checked = {id(c): screen(model.check_domain, c) for c in first}
    if args.format == "json":
        quantity = "novelty" if method == "novelty" else model.quantity
        head = json_dumps({"method": method, "quantity": quantity, "unit": unit}, indent=None)
        sys.stdout.write(head[:-1] + ', "molecules": [\n')
    elif args.format == "table":
        quantity, what = _what(model, method, unit)
        print(f"{quantity}, explained by {method}; relevance: {what}")
    flagged = total = refused = 0
    written = False

    def emit(items: list[dict]) -> None:
        nonlocal written
        for item in items:
            text = json_dumps(item, indent=None)
            if args.format == "jsonl":
                sys.stdout.write(text + "\n")
            else:
                sys.stdout.write(("" if not written else ",\n") + text)
            written = True

    for path, head_chunk, rest in zip(args.files, first, chunks):
        offset = 0
        for mols in _chain(head_chunk, rest):
            report, errors = checked.pop(id(mols), None) or screen(model.check_domain, mols)
            n = len(mols)
            name = Path(path).name
            labels = [name] if n == 1 and offset == 0 else [f"{name} #{k}" for k in range(offset, offset + n)]
            ok = [i for i, e in enumerate(errors) if e is None]
            for i, error in enumerate(errors):
                if error is not None:
                    print(f"qmlx: error: {error}", file=sys.stderr)
                    if args.format == "table":
                        print(f"{labels[i]}  refused: {error}")
                    else:
                        emit([{"file": path, "molecule": offset + i, "error": error}])
            if ok:
                sub = mols.subset(ok)
                result = explain(model, sub, method, rule=rule, steps=args.steps, top=args.top)
                index = [offset + i for i in ok]
                in_domain, notes = [bool(report.in_domain[i]) for i in ok], [report.notes[i] for i in ok]
                if args.format == "table":
                    _print_table(result, sub, [labels[i] for i in ok], in_domain, notes)
                else:
                    emit(_items(result, sub, [path] * len(ok), index, in_domain, notes))
            offset += n
            refused += n - len(ok)
            flagged, total = flagged + sum(not report.in_domain[i] for i in ok), total + n
    if args.format == "json":
        sys.stdout.write("\n]}\n")
    if flagged:
        print(
            f"qmlx: warning: {flagged} of {total} molecules lie outside the model's training domain "
            "(see domain_notes); their explanations are less reliable",
            file=sys.stderr,
        )
    return 1 if refused else 0


def _chain(head, rest):
    yield head
    yield from rest


def explain_command(args: argparse.Namespace) -> int:
    from qmlx._io import json_dumps
    from qmlx.cli.predict import read_inputs, warn_domain
    from qmlx.data.molecules import Molecules
    from qmlx.explain import DEFAULT_METHOD, Epsilon, Gamma, explain, methods_for
    from qmlx.models import load_model

    check_writable(args.png, "--png")
    check_writable(args.html, "--html")
    check_writable(args.out, "--out")
    if args.out:
        from qmlx.data.export import check_export_path

        check_export_path(args.out)
    if args.method == "potential" and not args.png:
        raise QmlxError("--method potential draws a map: give --png FILE")
    model = load_model(args.model, args.device)
    method = args.method or DEFAULT_METHOD.get(model.kind)
    method = "lrp-pairs" if args.pairs and method == "lrp" else method
    if method == "potential" and model.kind != "network":
        raise QmlxError(f"{args.model}: --method potential maps a single network (schnet or dtnn)")
    if method != "potential" and method not in methods_for(model.kind):
        usable = ", ".join(methods_for(model.kind)) or "none"
        raise QmlxError(
            f"{args.model}: --method {method} does not explain {model.kind} models (use: {usable})"
        )
    rule = Gamma(args.gamma) if args.gamma > 0 else Epsilon(args.epsilon)
    # the gradient norm is an unsigned sensitivity; novelty has no unit
    unit = None if method in ("gradient", "novelty") else "kcal/mol"
    if method != "potential" and not args.png and not args.html and not args.out:
        return _stream(args, model, method, rule, unit)
    read = read_inputs(args.files)
    inputs, reports, positions, refused = _answerable(model, read, args.files)
    if not any(len(m) for m in inputs):
        return 1
    if method == "potential":
        potential_maps(model, args, inputs)
        warn_domain(reports)
        return 1 if refused else 0
    sources = [path for path, mols in zip(args.files, inputs) for _ in range(len(mols))]
    labels, index = _labels(args.files, positions, [len(m) for m in read])
    mols = Molecules.concatenate(inputs, name=", ".join(args.files))
    in_domain = [bool(v) for _, r in reports for v in r.in_domain]
    notes = [n for _, r in reports for n in r.notes]
    result = explain(model, mols, method, rule=rule, steps=args.steps, top=args.top)
    warn_domain(reports)
    if args.format == "table":
        quantity, what = _what(model, method, unit)
        print(f"{quantity}, explained by {method}; relevance: {what}")
        _print_table(result, mols, labels, in_domain, notes)
    else:
        items = _items(result, mols, sources, index, in_domain, notes)
        if args.format == "jsonl":
            sys.stdout.write("".join(json_dumps(item, indent=None) + "\n" for item in items))
        else:
            print(
                json_dumps(
                    {
                        "method": method,
                        "quantity": "novelty" if method == "novelty" else model.quantity,
                        "unit": unit,
                        "molecules": items,
                    }
                )
            )
    if args.png and result.walks is not None:
        from qmlx.explain.plot import page_paths, plot_walks

        for i, (atoms, out) in enumerate(zip(mols, page_paths(args.png, len(mols)))):
            plot_walks(
                atoms,
                result.walks[i],
                out,
                top=args.top,
                title=f"{labels[i]}: {atoms.get_chemical_formula()}",
            )
            print(f"wrote {out}", file=sys.stderr)
    elif args.png:
        from qmlx.explain.plot import plot_explanation

        pages = plot_explanation(
            result, args.png, labels, pairs=result.pairs is not None, depiction=args.depiction
        )
        for written in pages:
            print(f"wrote {written}", file=sys.stderr)
    if args.out:
        _write_frames(args, model, method, unit, result, mols, sources, in_domain, notes)
    if args.html:
        from qmlx.explain.plot import write_html_report

        meta = {"model": args.model, "quantity": model.quantity, "method": method} | {
            k: v for k, v in model.metadata.items() if k in ("target", "split", "test_mae_kcal_mol", "data")
        }
        write_html_report(
            result, args.html, labels, meta, pairs=result.pairs is not None, depiction=args.depiction
        )
        print(f"wrote {args.html}", file=sys.stderr)
    return 1 if refused else 0


def _answerable(model, inputs: list, files: list[str]) -> tuple[list, list, list[list[int]], int]:
    """``(inputs, reports, positions, n_refused)``: each file's molecules without those the model
    refuses (each named on one stderr line), their domain reports and their indices in the file."""
    from qmlx.data.domain import DomainReport, screen

    kept, reports, positions, refused = [], [], [], 0
    for path, mols in zip(files, inputs):
        report, errors = screen(model.check_domain, mols)
        ok = [i for i, e in enumerate(errors) if e is None]
        for error in filter(None, errors):
            print(f"qmlx: error: {error}", file=sys.stderr)
        refused += len(mols) - len(ok)
        kept.append(mols.subset(ok))
        positions.append(ok)
        reports.append((path, DomainReport(report.in_domain[ok], [report.notes[i] for i in ok])))
    return kept, reports, positions, refused


def _write_frames(
    args, model, method: str, unit: str | None, result, mols, sources, in_domain, notes
) -> None:
    """``--out``: the molecules with their relevances per atom (`qmlx.data.export`): in kcal/mol
    (``relevance_kcal_mol``, and ``relevance`` in eV) for energy explanations, unitless
    (``novelty_relevance``) for novelty, with the predicted energy (or novelty) per molecule."""
    from qmlx.data.export import result_frames, write_frames

    n = len(mols)
    info = {
        "source": sources,
        "model": [args.model] * n,
        "method": [method] * n,
        "in_domain": in_domain,
        "domain_notes": ["; ".join(x) for x in notes],
    }
    if method == "novelty":
        info["novelty"] = [float(v) for v in result.prediction]
        frames = result_frames(mols, None, {"novelty_relevance": result.relevance}, info)
        units = {"novelty": "1"}
    else:
        info["quantity"] = [model.quantity] * n
        name = "relevance_kcal_mol" if unit == "kcal/mol" else "relevance"
        frames = result_frames(mols, result.prediction, {name: result.relevance}, info)
        units = {"energy": "eV", "energy_kcal_mol": "kcal/mol"}
    write_frames(args.out, frames, units)
    print(f"wrote {args.out}", file=sys.stderr)


def potential_maps(model, args: argparse.Namespace, inputs) -> None:
    """``--method potential``: the local chemical potential of a probe atom around each molecule,
    on the plane 1 Å above the molecule's best-fit plane and on the surface 1 Å outside the van der
    Waals surface; one PNG per molecule (``map.png``, ``map-2.png``, ...)."""
    from pathlib import Path

    import numpy as np

    from qmlx.explain.plot import page_paths
    from qmlx.explain.potential import plot_potential, potential_plane, potential_surface

    molecules = [(path, atoms) for path, mols in zip(args.files, inputs) for atoms in mols]
    for (path, atoms), out in zip(molecules, page_paths(args.png, len(molecules))):
        plane = potential_plane(model.estimator, atoms, probe=args.probe, spacing=0.1, margin=2.0, offset=1.0)
        surface = potential_surface(model.estimator, atoms, probe=args.probe, offset=1.0, density=10.0)
        plot_potential(
            atoms, [plane, surface], out, probe=args.probe,
            titles=["plane 1 Å above the best-fit plane", "surface vdW + 1.0 Å, seen from above"],
            suptitle=f"{Path(path).name}: {atoms.get_chemical_formula()}, {args.model}",
        )  # fmt: skip
        finite = plane.values[np.isfinite(plane.values)]
        print(
            f"{path}  {atoms.get_chemical_formula()}  Omega_{args.probe} on the plane 1 Å above: "
            f"min {finite.min():.2f}, max {finite.max():.2f} kcal/mol (relative to an isolated {args.probe})"
        )
        print(f"wrote {out}", file=sys.stderr)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="per-atom relevances of a model's energy predictions")
    p.add_argument("model", help="shipped model name (qm7-schnet, qm7-dtnn), network .pt or KRR .h5 file")
    p.add_argument("files", nargs="+", help="molecule files in any ASE format (positions in Å)")
    p.add_argument(
        "--method", choices=[*EXPLAIN_METHODS, "potential"], default=None,
        help="an explanation method (default: lrp for networks, neuralized for kernel models), or "
        "potential: the local chemical potential map of a probe atom",
    )  # fmt: skip
    p.add_argument("--probe", default="H", help="with --method potential: the probe element (default H)")
    p.add_argument(
        "--pairs", action="store_true", help="with lrp: also atom-pair relevances (drawn on bonds)"
    )
    p.add_argument("--epsilon", type=positive_float, default=1e-9, help="LRP epsilon rule stabilizer (> 0)")
    p.add_argument(
        "--gamma", type=nonnegative_float, default=0.0, help="LRP gamma rule for linear layers (0: epsilon)"
    )
    p.add_argument("--steps", type=positive_int, default=50, help="integrated-gradients steps")
    p.add_argument(
        "--top", type=positive_int, default=12, help="lrp-walks: the strongest walks to list and draw"
    )
    p.add_argument(
        "--png",
        help="draw the molecules coloured by relevance; 12 a page: out.png, out-2.png, ... (a .pdf gets one page each)",
    )
    p.add_argument(
        "--depiction", choices=["auto", "2d", "3d"], default="auto",
        help="--png layout: RDKit 2-D drawing where bonds can be perceived (auto), or the 3-D geometry projected",
    )  # fmt: skip
    p.add_argument(
        "--html", help="also write a self-contained HTML report (pictures, tables, model metadata)"
    )
    p.add_argument(
        "--format", choices=["table", "json", "jsonl"], default="table",
        help="jsonl: one JSON object per molecule and line",
    )  # fmt: skip
    p.add_argument(
        "--out", default=None, metavar="FILE",
        help="also write the molecules with each atom's relevance to FILE.extxyz or FILE.db (relevance in eV "
        "and relevance_kcal_mol per atom; the energy in eV in the calculator)",
    )  # fmt: skip
    p.add_argument(
        "--chunk-size", type=positive_int, default=1000,
        help="without --png/--html: molecules read and explained at a time (memory stays flat)",
    )  # fmt: skip
    add_device(p)
    p.set_defaults(func=explain_command)
