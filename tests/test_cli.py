"""The ``qmlx`` command line: output of ``data info`` and one-line errors with non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qmlx.cli import main


def test_data_info_qm7_prints_counts(qm7_path, capsys, monkeypatch):
    monkeypatch.setenv("QMLX_DATA_DIR", str(qm7_path.parent))
    assert main(["data", "info", "qm7"]) == 0
    out = capsys.readouterr().out
    assert "molecules    7165" in out
    assert "5 folds, test size 1433" in out
    assert "H 61959 / C 35761 / N 6655 / O 5978 / S 297" in out
    assert "4-23" in out


def test_data_info_on_an_xyz_file(tmp_path, capsys):
    (tmp_path / "w.xyz").write_text("3\nwater\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    assert main(["data", "info", str(tmp_path / "w.xyz")]) == 0
    assert "composition  H 2 / O 1" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["", "3\ncomment\nO 0 0 0\n", "1\nc\nQq 0 0 0\n"])
def test_data_info_on_bad_file_exits_nonzero_with_one_line(tmp_path, content):
    bad = tmp_path / "bad.xyz"
    bad.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "qmlx.cli", "data", "info", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qmlx: error: ") and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_file_exits_nonzero(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope.xyz")]) == 1
    assert "nope.xyz: no such file" in capsys.readouterr().err
