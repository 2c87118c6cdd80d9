"""``qmlx model import schnetpack``: bring models trained elsewhere into qmlx."""

from __future__ import annotations

import argparse
import sys

from qmlx.cli.common import check_writable

TRUST_PICKLE_HELP = (
    "read a pickled best_model: unpickling runs code stored in the file, so only for files from a "
    "source you trust (a state dict, torch.save(model.state_dict(), PATH), needs no such trust)"
)


def import_schnetpack_command(args: argparse.Namespace) -> None:
    from qmlx.nn.schnetpack import import_schnetpack

    check_writable(args.out, "--out")
    out, meta = import_schnetpack(
        args.path,
        args.out,
        trust_pickle=args.trust_pickle,
        unit=args.unit,
        head_activation=args.head_activation,
        description=args.describe,
        data=args.data,
        split=args.split,
    )
    info = meta["imported_from"]
    domain = (
        f"; domain and novelty from {meta['n_train']} molecules of {meta['data']}" if "domain" in meta else ""
    )
    print(
        f"wrote {out}: SchNet, {meta['n_parameters']} parameters; energies in {info['unit']} "
        f"(from {info['unit_from']}), converted to kcal/mol; head activation {info['head_activation']}{domain}",
        file=sys.stderr,
    )


def add(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="import models trained with other packages")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    imp = model_sub.add_parser("import", help="convert a model into a qmlx network file")
    imp_sub = imp.add_subparsers(dest="import_format", required=True)
    p = imp_sub.add_parser(
        "schnetpack",
        help="a schnetpack 2.x SchNet potential",
        description="Convert a schnetpack 2.x SchNet potential into a qmlx SchNet with the same energies, "
        "which then predicts, explains (lrp, lrp-pairs, lrp-walks, potential, novelty with --data) and runs "
        "in the ASE calculator like a qmlx model. PATH is a state dict, a pickled best_model, or a spktrain "
        "training folder (config.yaml and best_model). Other architectures (PaiNN, SO3net, ...) are refused.",
    )
    p.add_argument("path", help="state dict (.pt), best_model, or training folder")
    p.add_argument("--out", required=True, help="qmlx network file to write (.pt)")
    p.add_argument(
        "--unit", default=None,
        help="energy unit of the model's outputs where the files do not say (schnetpack's default: eV)",
    )  # fmt: skip
    p.add_argument(
        "--head-activation", choices=["silu", "ssp"], default=None,
        help="activation of the Atomwise head where the file does not say (schnetpack 2.x default: silu)",
    )  # fmt: skip
    p.add_argument(
        "--describe", default=None, metavar="TEXT",
        help="what the energy is, with its level of theory, e.g. 'PBE0 total energy'",
    )  # fmt: skip
    p.add_argument(
        "--data", default=None,
        help="the training molecules (e.g. the schnetpack database), to record the model's training domain "
        "and a novelty model",
    )  # fmt: skip
    p.add_argument(
        "--split", default=None,
        help="schnetpack split.npz (train_idx, val_idx) of --data; default: the training folder's",
    )  # fmt: skip
    p.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    p.set_defaults(func=import_schnetpack_command)
