"""A schnetpack SchNet converted into qmlx gives schnetpack's own energies, and qmlx explains it.

schnetpack 2.1.1 (the peer environment, ``../shared/tools/peer-env.sh``) trains a SchNet on the QM7
molecules outside the official test fold 0 (PBE0 atomization energies converted to eV) for
``--minutes`` and computes the energies of the 1,433 fold-0 test molecules in float32
(`_schnetpack_parity_peer.py`). qmlx converts the model (``qmlx model import schnetpack``, from the
state dict and from the pickled ``best_model``), predicts the same molecules with its float32
network, and explains them with ``lrp`` (every test molecule) and ``lrp-walks`` (the first
``--walks``).

    python experiments/schnetpack_parity.py --peer-python "$(bash ../shared/tools/peer-env.sh)"

Writes ``schnetpack_parity.json`` and ``.md`` to ``--out-dir`` (default ``results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

PEER_SCRIPT = Path(__file__).resolve().parent / "_schnetpack_parity_peer.py"


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, threads=2)
    parser.add_argument("--peer-python", default=os.environ.get("PEER_PY"),
                        help="python of the peer environment (default: $PEER_PY)")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=4.0, help="schnetpack's training time")
    parser.add_argument("--walks", type=int, default=50, help="test molecules explained with lrp-walks")
    return parser


def compute(args: argparse.Namespace) -> dict:
    from qmlx.data import load_qm7
    from qmlx.data.splits import split
    from qmlx.explain import explain
    from qmlx.models import load_model
    from qmlx.nn.schnetpack import import_schnetpack
    from qmlx.units import EV_TO_KCAL_MOL

    if not args.peer_python:
        raise SystemExit("schnetpack_parity: give --peer-python (bash ../shared/tools/peer-env.sh prints it)")
    qm7 = load_qm7(download_if_missing=False)
    sp = split(qm7, "official", fold=0)
    train_idx = np.sort(np.concatenate([sp.train, sp.val]))
    train, test = qm7.subset(train_idx), qm7.subset(sp.test)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(
            tmp / "data.npz",
            train_Z=train.Z, train_R=train.R, train_n_atoms=train.n_atoms,
            train_energy=train.target("atomization_energy", "eV"),
            test_Z=test.Z, test_R=test.R, test_n_atoms=test.n_atoms,
        )  # fmt: skip
        peer_cmd = [args.peer_python, str(PEER_SCRIPT), str(tmp / "data.npz"), str(tmp / "spk"),
                    "--minutes", str(args.minutes), "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(peer_cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"schnetpack_parity: the peer script failed:\n{done.stderr[-2000:]}")
        peer = json.loads(done.stdout.strip().splitlines()[-1])
        theirs = np.load(tmp / "spk" / "energies.npz")["energy"]
        routes = {}
        for route, path, trust in (("state dict", tmp / "spk" / "model_state.pt", False),
                                   ("pickled best_model", tmp / "spk" / "best_model", True)):  # fmt: skip
            out, meta = import_schnetpack(path, tmp / f"{len(routes)}.pt", trust_pickle=trust,
                                          description="PBE0 atomization energy (QM7), eV in schnetpack")  # fmt: skip
            model = load_model(out)
            ours = model.predict(test).energy / EV_TO_KCAL_MOL  # kcal/mol -> eV
            diff = np.abs(ours - theirs)
            routes[route] = {"max_abs_diff_eV": float(diff.max()), "mean_abs_diff_eV": float(diff.mean()),
                             "head_activation": meta["imported_from"]["head_activation"],
                             "head_activation_from": meta["imported_from"].get("head_activation_from", "the file")}  # fmt: skip
        reference = test.target("atomization_energy", "eV")
        lrp = explain(model, test, method="lrp")
        rel = np.abs(lrp.conservation_error()) / np.abs(lrp.prediction - lrp.reference)
        first = test.subset(np.arange(min(args.walks, len(test))))
        walks = explain(model, first, method="lrp-walks")
        walk_gap = [abs(w.conservation_error()) / abs(w.prediction - w.reference) for w in walks.walks]
    return {
        "peer": peer,
        "peer_command": "PEER_PY experiments/_schnetpack_parity_peer.py DATA.npz OUT "
        + " ".join(peer_cmd[4:]),
        "qmlx_commands": [
            "qmlx model import schnetpack OUT/model_state.pt --out model.pt",
            "qmlx model import schnetpack OUT/best_model --trust-pickle --out model.pt",
        ],  # fmt: skip
        "test_molecules": len(test),
        "schnetpack_test_mae_eV": float(np.abs(theirs - reference).mean()),
        "schnetpack_test_mae_kcal_mol": float(np.abs(theirs - reference).mean() * EV_TO_KCAL_MOL),
        "routes": routes,
        "lrp_max_relative_conservation_error": float(rel.max()),
        "lrp_median_relative_conservation_error": float(np.median(rel)),
        "walks_molecules": len(first),
        "walks_max_relative_gap": float(max(walk_gap)),
    }


def render(result: dict, out_dir: Path) -> None:
    p = result["peer"]
    lines = [
        "# schnetpack SchNet in qmlx: same energies, explained",
        "",
        f"schnetpack {p['schnetpack']} (torch {p['torch']}) trained a SchNet ({p['features']} features, "
        f"{p['interactions']} interactions, {p['n_rbf']} Gaussians, cutoff {p['cutoff']} Å, SiLU head, mean per "
        f"atom added by AddOffsets) on the QM7 molecules outside the official test fold 0, PBE0 atomization "
        f"energies in eV, for {p['minutes']:.1f} min ({p['epochs']} epochs, batch {p['batch_size']}). Its test "
        f"MAE: {result['schnetpack_test_mae_eV']:.3f} eV ({result['schnetpack_test_mae_kcal_mol']:.1f} kcal/mol; a "
        "short run, enough for real weights). Both sides compute the network in float32, on the "
        f"{result['test_molecules']:,} fold-0 test molecules.",
        "",
        *report.table(
            [
                "converted from",
                "largest difference qmlx − schnetpack (eV)",
                "mean absolute difference (eV)",
                "head activation",
            ],
            [
                [
                    route,
                    f"{r['max_abs_diff_eV']:.2e}",
                    f"{r['mean_abs_diff_eV']:.2e}",
                    f"{r['head_activation']} ({r['head_activation_from']})",
                ]
                for route, r in result["routes"].items()
            ],
        ),  # fmt: skip
        "",
        f"LRP (ε = 1e-9) on the converted model conserves every test molecule's energy: largest relative "
        f"error {result['lrp_max_relative_conservation_error']:.1e} (median "
        f"{result['lrp_median_relative_conservation_error']:.1e}) of |E − Σ references|. Relevant walks on the "
        f"first {result['walks_molecules']} test molecules, with the bias relevance, sum to E − Σ references "
        f"within {result['walks_max_relative_gap']:.1e} relative.",
        "",
        f"Commands: `{result['peer_command']}`; then "
        + "; ".join(f"`{c}`" for c in result["qmlx_commands"])
        + ".",
        "",
        *report.run_lines(_peer_named(result)),
    ]
    report.write_markdown(out_dir / "schnetpack_parity.md", lines)


def _peer_named(result: dict) -> dict:
    """``result`` with the peer environment's python named as ``peer-env.sh`` gives it, not by this
    machine's path, in the recorded command."""
    import re

    run = dict(result.get("run") or {})
    if "command" in run:
        run["command"] = re.sub(
            r"--peer-python \S+", '--peer-python "$(bash ../shared/tools/peer-env.sh)"', run["command"]
        )
    return {**result, "run": run}


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "schnetpack_parity", argv)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
