"""The experiment scripts' report layer (experiments/_report.py) and the committed results.

Every script under experiments/ is ``compute(args) -> dict`` plus ``render(result, out_dir)``;
these tests re-render each one from a copy of its committed JSON with ``--report-only`` (nothing
is computed, no data set is needed), check that every committed JSON is plain JSON (no NaN), and
run the shared runner on a toy computation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shutil
from pathlib import Path

import pytest

from experiments import _report as report

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_"))
#: script -> (extra arguments of --report-only, the committed JSON files it reads)
REPORT_ARGS = {"ring_stability": ["--dataset", "qm7"]}
JSON_OF = {"ring_stability": "ring_stability_qm7"}
#: scripts whose render also reads a sibling result when its own JSON lacks it
SIBLINGS = {"qm7_networks": ["qm7_ensemble"]}


def _reject(constant: str):
    raise ValueError(f"{constant} is not plain JSON")


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "results").glob("*.json")) + sorted((ROOT / "benchmarks").glob("*.json")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_committed_json_is_plain_json(path):
    doc = json.loads(path.read_text(), parse_constant=_reject)
    assert isinstance(doc, dict) and doc


def test_every_script_is_listed():
    assert (
        len(SCRIPTS) == 21
        and "qm7_kernels" in SCRIPTS
        and "domain_holdout" in SCRIPTS
        and "_report" not in SCRIPTS
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_renders_its_committed_json_with_report_only(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    assert callable(module.compute) and callable(module.render)
    parser = module.build_parser()
    options = {a.dest: a for a in parser._actions}
    for flag in ("out_dir", "quick", "threads", "seed", "report_only"):
        assert flag in options, f"{name}: no --{flag.replace('_', '-')}"
    assert options["out_dir"].default == ROOT / "results"

    stem = JSON_OF.get(name, name)
    for other in [stem, *SIBLINGS.get(name, [])]:
        shutil.copy(ROOT / "results" / f"{other}.json", tmp_path / f"{other}.json")
    before = (tmp_path / f"{stem}.json").read_bytes()
    result = module.main(["--report-only", "--out-dir", str(tmp_path), *REPORT_ARGS.get(name, [])])
    assert isinstance(result, dict) and result
    md = (tmp_path / f"{stem}.md").read_text()
    assert md.startswith("# ") and md.endswith("\n") and "|---|" in md
    assert (tmp_path / f"{stem}.json").read_bytes() == before  # --report-only computes and writes no JSON


def test_report_only_reproduces_the_committed_markdown(tmp_path):
    from experiments import qm7_bob_diagnostics, qm7_kernels

    for module, stem in ((qm7_kernels, "qm7_kernels"), (qm7_bob_diagnostics, "qm7_bob_diagnostics")):
        shutil.copy(ROOT / "results" / f"{stem}.json", tmp_path / f"{stem}.json")
        module.main(["--report-only", "--out-dir", str(tmp_path)])
        assert (tmp_path / f"{stem}.md").read_text() == (ROOT / "results" / f"{stem}.md").read_text()


def test_report_only_without_json_is_an_error(tmp_path, capsys):
    from experiments import qm7_lrp_conservation

    with pytest.raises(SystemExit):
        qm7_lrp_conservation.main(["--report-only", "--out-dir", str(tmp_path)])
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the report layer


def test_write_json_turns_nan_into_null_and_leaves_out_private_keys(tmp_path):
    import numpy as np

    path = report.write_json(
        tmp_path / "r.json",
        {
            "a": float("nan"),
            "b": [1.0, float("inf")],
            "c": np.float64(2.5),
            "_figure": [1, 2],
            "d": {"_x": 1},
        },
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert report.read_json(path) == {"a": None, "b": [1.0, None], "c": 2.5, "d": {}}
    path.write_text('{"a": NaN}')
    with pytest.raises(ValueError, match="NaN"):
        report.read_json(path)


def test_format_interval():
    v = {"value": 0.8421, "low": 0.7071, "high": 0.9372, "n_undefined": 0}
    assert report.format_interval(v) == "0.842 [0.707, 0.937]"
    assert report.format_interval(v, 2) == "0.84 [0.71, 0.94]"
    assert report.format_interval({**v, "n_undefined": 3}) == "0.842 [0.707, 0.937]*"
    assert report.format_interval({"value": None, "low": None, "high": None}) == "–"
    assert report.format_interval({"value": math.nan, "low": 0.1, "high": 0.2}) == "–"
    assert report.format_interval(None) == "–"

    class Interval:  # any object with value, low and high
        value, low, high = 1.0, 0.5, 1.5

    assert report.format_interval(Interval(), 1) == "1.0 [0.5, 1.5]"
    assert report.format_number(None) == "–" and report.format_number(1.23456, ".2f") == "1.23"


def test_table_lines():
    assert report.table(["a", "b"], [[1, "x"], [2.5, "y"]]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | x |",
        "| 2.5 | y |",
    ]
    assert report.escape("|x| / |y|") == "\\|x\\| / \\|y\\|"


def _toy(tmp_path):
    calls = []

    def compute(args: argparse.Namespace) -> dict:
        calls.append(args.seed)
        report.checkpoint(args, {"value": float("nan"), "partial": True})
        assert (tmp_path / "toy.json").exists()  # the checkpoint wrote it
        return {"value": 2.0 * args.seed, "quick": args.quick, "_only_for_figures": [1, 2, 3]}

    rendered = []

    def render(result: dict, out_dir: Path) -> None:
        rendered.append(result)
        report.write_markdown(
            out_dir / "toy.md", ["# toy", "", f"value {result['value']}", *report.run_lines(result)]
        )

    parser = report.make_parser("A toy experiment.\n\nMore text.", quick="a smaller toy")
    return compute, render, parser, calls, rendered


def test_main_writes_json_with_the_run_record_then_report_only_rerenders(tmp_path):
    compute, render, parser, calls, rendered = _toy(tmp_path)
    argv = ["--out-dir", str(tmp_path), "--seed", "3", "--threads", "1"]
    result = report.main(compute, render, parser, "toy", argv, script=ROOT / "experiments" / "toy.py")
    assert calls == [3] and result["value"] == 6.0
    saved = report.read_json(tmp_path / "toy.json")
    assert "_only_for_figures" not in saved and rendered[-1]["_only_for_figures"] == [1, 2, 3]
    run = saved["run"]
    assert run["command"] == "python experiments/toy.py " + " ".join(argv)
    assert run["qmlx_version"] and run["wall_time_s"] >= 0
    assert run["git_commit"] is None or len(run["git_commit"]) == 40
    env = run["environment"]
    assert env["threads"] == 1 and env["cpu_count"] >= 1
    assert {"python", "numpy", "torch", "platform"} <= set(env)
    md = (tmp_path / "toy.md").read_text()
    assert "value 6.0" in md and "Run: `python experiments/toy.py" in md

    (tmp_path / "toy.md").unlink()
    again = report.main(compute, render, parser, "toy", ["--out-dir", str(tmp_path), "--report-only"])
    assert calls == [3]  # nothing computed
    assert again == saved and (tmp_path / "toy.md").read_text() == md


def test_main_refuses_quick_without_a_quick_mode(tmp_path, capsys):
    compute, render, _, calls, _ = _toy(tmp_path)
    parser = report.make_parser("A toy experiment.")
    with pytest.raises(SystemExit):
        report.main(compute, render, parser, "toy", ["--out-dir", str(tmp_path), "--quick"])
    assert "no quick mode" in capsys.readouterr().err and calls == []


def test_benchmarks_write_json_through_the_nan_free_writer():
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if ".json" in text and "write_text" in text:
            assert "json.dumps" not in text, f"{path.name}: JSON written without qmlx._io.json_dumps"
            assert "json_dumps" in text, path.name
