"""The ring-stability result of ``experiments/ring_stability.py`` from the insight engine
(`qmlx.insight.rings`; the same as ``qmlx insight rings qm9-schnet-50k --data qm9``), side by side
with the committed ``ring_stability_qm9.json``.

    python experiments/insight_rings.py

Writes ``insight_rings.json`` and ``.md`` to ``--out-dir`` (default ``results/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

try:
    from experiments import _report as report
except ImportError:  # run as a script: experiments/ is on sys.path
    import _report as report

MODEL = "qm9-schnet-50k"


def build_parser() -> argparse.ArgumentParser:
    parser = report.make_parser(__doc__, seed_help="seed of the bootstrap")
    parser.add_argument("--resamples", type=int, default=1000)
    return parser


def compute(args: argparse.Namespace) -> dict:
    from qmlx.data import load_dataset
    from qmlx.insight.groups import held_out_molecules
    from qmlx.insight.rings import ranked_ring_types, ring_report
    from qmlx.models import load_model

    model = load_model(MODEL)
    analysed, _, chosen = held_out_molecules(model, load_dataset("qm9"))
    out = ring_report(model, analysed, n_resamples=args.resamples, seed=args.seed)
    earlier = json.loads((report.RESULTS / "ring_stability_qm9.json").read_text())["parts"][0][MODEL][
        "ring_sets"
    ]
    out["ring_stability"] = {
        name: {m: earlier[name][f"pairs_{m}"] for m in ("decomposition", "lrp")}
        | {"pairs": earlier[name]["n_pairs"]}
        for name in out["ring_sets"]
    }
    qm9 = load_dataset("qm9")
    unseen, _, unseen_chosen = held_out_molecules(model, qm9, unseen=True)
    ranked = ranked_ring_types(model, qm9, unseen, min_count=30, n_resamples=args.resamples, seed=args.seed)
    earlier_types = json.loads((report.RESULTS / "ring_types.json").read_text())["sources"]["qm9-unseen"]
    out["ranked_types"] = {"molecules": unseen_chosen, "n_types": len(ranked["types"]),
                           "spearman_with_parents": ranked.get("spearman_with_parents"),
                           "ring_types_spearman": earlier_types["spearman_with_parents"],
                           "ring_types_n_types": len(earlier_types["types"])}  # fmt: skip
    out.update(model=MODEL, molecules=chosen)
    return out


def render(result: dict, out_dir: Path) -> None:
    def iv(d: dict) -> str:
        return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    rows = []
    for name, old in result["ring_stability"].items():
        row = result["ring_sets"][name]
        for m in result["methods"]:
            rows.append([name, m, row["n_pairs"], iv(row[f"pairs_{m}"]), old["pairs"], iv(old[m])])
    first = "decomposition"
    lines = [
        f"# Ring stability from the insight engine: {result['model']} on QM9",
        "",
        f"`qmlx insight rings {result['model']} --data qm9`, on {result['molecules']}: "
        f"{result['perception']['n_rings']:,} five- and six-membered rings ({result['perception']['failed']} molecules "
        f"without perceived bonds left out, {result['perception']['rdkit_retry']} perceived on a second try). The fraction of composition-matched (aromatic, "
        "non-aromatic) ring pairs in which the aromatic ring has the lower energy, with 95 % bootstrap intervals "
        "over molecules, next to what `experiments/ring_stability.py` reported ([ring_stability_qm9.md]"
        "(ring_stability_qm9.md)).",
        "",
        *report.table(
            [
                "rings",
                "contributions",
                "pairs",
                "qmlx insight rings",
                "pairs (ring_stability)",
                "ring_stability",
            ],
            rows,
        ),  # fmt: skip
        "",
        *_ranked_lines(result.get("ranked_types"), iv),
        f"The {len(result['types'])} ring types found, most common first ({first} ring energy, kcal/mol per ring):",
        "",
        *report.table(
            ["ring type", "rings", "aromatic", f"{first} energy"],
            [
                [t["type"], t["rings"], "yes" if t["aromatic"] else "no", iv(t[first])]
                for t in result["types"][:25]
            ],
        ),  # fmt: skip
        "",
        *report.run_lines(result),
    ]
    report.write_markdown(out_dir / "insight_rings.md", lines)


def _ranked_lines(ranked: dict | None, iv) -> list[str]:
    if not ranked or not ranked.get("spearman_with_parents"):
        return []
    rho, old = ranked["spearman_with_parents"], ranked["ring_types_spearman"]
    return [
        f"`qmlx insight rings {MODEL} --data qm9 --unseen --types`, on {ranked['molecules']}: {ranked['n_types']} named "
        f"ring types with at least 30 rings ranked by energy per ring atom; Spearman with their parent molecules' "
        f"B3LYP energies {iv(rho)} over {rho['n_types']} types with a parent, against {iv(old)} over "
        f"{old['n_types']} types ({ranked['ring_types_n_types']} named types) in [ring_types.md](ring_types.md).",
        "",
    ]


def main(argv: list[str] | None = None) -> dict:
    return report.main(compute, render, build_parser(), "insight_rings", argv)


if __name__ == "__main__":
    main()
