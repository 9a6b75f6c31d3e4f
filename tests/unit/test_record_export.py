"""``gradtui export``: CSV from real recordings, read back with the csv module."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from gradtui.cli import main
from gradtui.protocol import Hello, LayerInfo, Step
from gradtui.storage import RunRecorder

NAMES = ("fc0", 'odd,"name"\nwith newline')


def make(path: Path, run: str = "r1", n: int = 3) -> None:
    layers = tuple(LayerInfo(name=x, kind="Linear", role="param") for x in NAMES)
    rec = RunRecorder(path)
    rec(Hello(run=run, seq=0, t=0.0, name=f"name-{run}", layers=layers, columns=("g", "w")))
    for i in range(n):
        stats = np.array([[0.1 * i, math.nan], [math.inf, i]], dtype=np.float32)
        rec(Step(run=run, seq=i + 1, t=float(i), step=i * 10, loss=1.5, stats=stats, lr=0.1))
    assert rec.close(10)


def export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_long_format_round_trips_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every cell is one row run,step,layer,column,value; values parse back to the float32."""
    make(tmp_path / "a.sqlite")
    code, out, _ = export(capsys, str(tmp_path / "a.sqlite"), "--csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["run", "step", "layer", "column", "value"]
    assert len(rows) == 1 + 3 * 2 * 2
    assert rows[1:5] == [
        ["r1", "0", "fc0", "g", "0.0"],
        ["r1", "0", "fc0", "w", "nan"],
        ["r1", "0", NAMES[1], "g", "inf"],
        ["r1", "0", NAMES[1], "w", "0.0"],
    ]
    cell = next(r for r in rows if r[1] == "20" and r[2] == "fc0" and r[3] == "g")
    assert np.float32(cell[4]) == np.float32(0.1) * np.float32(2) and cell[4] == "0.2"


def test_scalars_run_filter_and_output_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--scalars writes one row per step; --run picks one run of a directory; -o writes a file."""
    make(tmp_path / "a.sqlite", "r1", 2)
    make(tmp_path / "b.sqlite", "r2", 4)
    target = tmp_path / "out.csv"
    code, out, _ = export(capsys, str(tmp_path), "--scalars", "--run", "name-r2", "-o", str(target))
    assert code == 0 and out == ""
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["r2"] * 4
    assert [r["step"] for r in rows] == ["0", "10", "20", "30"]
    assert rows[0]["lr"] == "0.1" and rows[0]["acc"] == "nan" and rows[0]["clipped"] == "False"


def test_all_runs_of_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --run every run of every file is exported."""
    make(tmp_path / "a.sqlite", "r1", 1)
    make(tmp_path / "b.sqlite", "r2", 1)
    _, out, _ = export(capsys, str(tmp_path))
    assert {r[0] for r in list(csv.reader(io.StringIO(out)))[1:]} == {"r1", "r2"}


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Missing file and unknown run exit 2 with a single line on stderr."""
    code, _, err = export(capsys, str(tmp_path / "nope.sqlite"))
    assert code == 2 and err.count("\n") == 1 and "no such recording" in err
    make(tmp_path / "a.sqlite")
    code, _, err = export(capsys, str(tmp_path / "a.sqlite"), "--run", "zzz")
    assert code == 2 and err.count("\n") == 1 and "no run matching 'zzz'" in err
