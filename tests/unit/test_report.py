"""``gradtui report`` over real SQLite recordings written by the real ``RunRecorder``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradtui.cli import main
from gradtui.protocol import End, Hello, Step
from gradtui.report import summarize
from gradtui.storage import RunRecorder, open_recording
from gradtui.synthetic import SyntheticRun, synthetic_layers


def _record(
    path: Path, mode: str, act: str, steps: int, *, run: str, name: str = "", nan_after: int = 60
) -> Path:
    layers = synthetic_layers(8, act)
    fake = SyntheticRun(layers, mode=mode, seed=2, nan_after=nan_after)  # type: ignore[arg-type]
    mats = [fake.stats(i) for i in range(min(steps, 64))]
    status = "finished"
    with RunRecorder(path, batch_messages=4096, max_queue=1_000_000) as rec:
        rec(
            Hello(
                run=run,
                inc="i",
                seq=0,
                name=name or f"{mode}-{act}",
                layers=layers,
                config={"act": act, "depth": 8},
            )
        )
        seq = 1
        for i in range(steps):
            loss, norm = fake.loss(i), fake.grad_norm(i)
            stats = fake.stats(i) if mode == "nan" and i >= nan_after else mats[i % len(mats)]
            rec(
                Step(
                    run=run,
                    inc="i",
                    seq=seq,
                    t=float(i),
                    step=i,
                    loss=loss,
                    acc=0.5,
                    grad_norm=norm,
                    stats=stats,
                )
            )
            seq += 1
            if not math.isfinite(loss):
                status = "crashed"
                break
        rec(End(run=run, inc="i", seq=seq, status=status, reason="", step=i))  # type: ignore[arg-type]
    assert rec.dropped == 0
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recs")
    return {
        "vanishing": _record(root / "van.sqlite", "vanishing", "sigmoid", 200, run="v"),
        "healthy": _record(root / "ok.sqlite", "healthy", "relu", 200, run="h"),
        "nan": _record(root / "nan.sqlite", "nan", "relu", 200, run="n"),
        "long_nan": _record(
            root / "long" / "long.sqlite", "nan", "relu", 5000, run="L", nan_after=4990
        ),
    }


def _report(path: Path, **kw: object):  # type: ignore[no-untyped-def]
    with open_recording(path) as rec:
        (run,) = rec.runs
        return summarize(run, **kw)  # type: ignore[arg-type]


def test_vanishing_run_verdict_and_ratio(recordings: dict[str, Path]) -> None:
    """Guards the headline diagnosis: a sigmoid run is called vanishing, with its ratio."""
    rep = _report(recordings["vanishing"])
    assert rep.rules[0] == "vanishing" and "saturated" in rep.rules
    assert rep.verdict.startswith("VANISHING GRADIENTS from step 0")
    assert rep.rms_ratio_end < 1e-3 and rep.rms_ratio_start < 1e-3
    assert (rep.first_layer, rep.last_layer) == ("layers.0.linear", "layers.7.linear")
    assert rep.replayed == rep.steps == 200 and not rep.decimated
    assert rep.status == "finished" and rep.config["act"] == "sigmoid"


def test_healthy_run_is_healthy(recordings: dict[str, Path]) -> None:
    """Guards against report false alarms."""
    rep = _report(recordings["healthy"])
    assert rep.alerts == [] and rep.verdict.startswith("HEALTHY: no alerts in 200 steps")
    assert 0.1 < rep.rms_ratio_end < 10


def test_blown_up_run(recordings: dict[str, Path]) -> None:
    """Guards the crash summary: nonfinite first, final loss NaN, last finite loss kept."""
    rep = _report(recordings["nan"])
    assert rep.rules[0] == "nonfinite" and rep.alerts[0].first_step == 60
    assert rep.verdict.startswith("BLEW UP: non-finite values from step 60")
    assert math.isnan(rep.final_loss) and math.isfinite(rep.last_finite_loss)
    assert rep.status == "crashed"


def test_decimated_replay_still_catches_the_late_blow_up(recordings: dict[str, Path]) -> None:
    """Guards the decimated replay: a NaN 10 steps before the end of a long run is not missed."""
    rep = _report(recordings["long_nan"], max_replay=200)
    assert rep.decimated and rep.replayed < 300
    assert rep.alerts[0].rule == "nonfinite" and rep.alerts[0].first_step == 4990
    full = _report(recordings["long_nan"], max_replay=None)
    assert full.replayed == full.steps == 4991
    assert full.rules == rep.rules


def test_cli_text_markdown_json(
    recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the three output formats over a directory and a file argument."""
    paths = [str(recordings["vanishing"]), str(recordings["healthy"])]
    assert main(["report", *paths]) == 0
    text = capsys.readouterr().out
    assert "verdict:  VANISHING" in text and "verdict:  HEALTHY" in text
    assert "fix: use a non-saturating activation (--act relu)" in text
    assert main(["report", "--format", "markdown", *paths]) == 0
    md = capsys.readouterr().out
    assert "| vanishing | warning | 0-199 (active) |" in md
    assert "**Verdict:** HEALTHY" in md
    assert main(["report", "--format", "json", str(recordings["nan"])]) == 0
    doc = json.loads(capsys.readouterr().out)
    (run,) = doc["runs"]
    assert run["final_loss"] is None and run["alerts"][0]["rule"] == "nonfinite"
    assert doc["failed_on"] == []


def test_fail_on_exit_codes(
    recordings: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards the CI gate: exit 3 only when a named rule fired; unknown rule is exit 2."""
    van, ok = str(recordings["vanishing"]), str(recordings["healthy"])
    assert main(["report", van, "--fail-on", "vanishing"]) == 3
    assert "--fail-on: vanishing fired (exit 3)" in capsys.readouterr().out
    assert main(["report", ok, "--fail-on", "vanishing,nonfinite", "--fail-on", "any"]) == 0
    assert main(["report", van, "--fail-on", "exploding"]) == 0
    capsys.readouterr()
    assert main(["report", van, "--fail-on", "vanishng"]) == 2
    err = capsys.readouterr().err
    assert "unknown rule 'vanishng'" in err and err.count("\n") == 1


def test_config_file_changes_the_verdict(
    recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards --config: the same AlertConfig file the viewer uses changes report's rules."""
    cfg = tmp_path / "alerts.toml"
    cfg.write_text('disabled = ["vanishing", "stalled_updates"]\n', encoding="utf-8")
    assert main(["report", str(recordings["vanishing"]), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "vanishing steps" not in out and "WARNINGS: saturated" in out
    cfg.write_text("[vanishing]\nratio = 7\n", encoding="utf-8")
    assert main(["report", str(recordings["vanishing"]), "--config", str(cfg)]) == 2
    assert "vanishing.ratio: 7 is out of range" in capsys.readouterr().err


def test_unreadable_path_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards user errors: a missing file or a non-recording is exit 2 without a traceback."""
    assert main(["report", str(tmp_path / "missing.sqlite")]) == 2
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite")
    assert main(["report", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 2


def test_untrusted_names_are_rendered_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards terminal/markdown injection: ESC sequences and pipes in a run name are defused."""
    path = _record(tmp_path / "evil.sqlite", "healthy", "relu", 5, run="e", name="x\x1b[31m|y")
    assert main(["report", "--format", "markdown", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "## x[31m\\|y" in out


@pytest.mark.slow
def test_subprocess_exit_code_three(recordings: dict[str, Path]) -> None:
    """Guards the documented CI contract end to end: the real entry point exits 3."""
    proc = subprocess.run(
        [sys.executable, "-m", "gradtui", "report", str(recordings["nan"]), "--fail-on", "any"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "BLEW UP" in proc.stdout


def test_engine_and_report_agree_on_first_steps(recordings: dict[str, Path]) -> None:
    """Guards 'same AlertEngine': report's alerts equal a live Fleet fed the same messages."""
    from gradtui.alerts import AlertEngine
    from gradtui.state import Fleet

    with open_recording(recordings["vanishing"]) as rec:
        (run,) = rec.runs
        fleet = Fleet(observer_factory=AlertEngine)
        for msg in run.messages():
            fleet.apply(msg, now=0.0)
        engine = fleet.runs["v"].observer
        assert isinstance(engine, AlertEngine)
        live = [(a.rule, a.first_step, a.last_step) for a in engine.history]
    rep = _report(recordings["vanishing"])
    assert [(a.rule, a.first_step, a.last_step) for a in rep.alerts] == live
    assert np.isfinite(rep.rms_ratio_end)


def test_steps_recorded_before_a_late_hello_are_all_replayed(tmp_path: Path) -> None:
    """Guards late joiners: a hello re-send (later seq) must not turn earlier steps into replays."""
    layers = synthetic_layers(4, "sigmoid")
    fake = SyntheticRun(layers, mode="vanishing", seed=1)
    path = tmp_path / "late.sqlite"
    with RunRecorder(path) as rec:
        seq = 1
        for i in range(10):
            rec(Step(run="z", inc="i", seq=seq, step=i, loss=2.3, stats=fake.stats(i)))
            seq += 1
            if i == 6:  # the first hello this recorder saw: a re-send, seq 8
                rec(Hello(run="z", inc="i", seq=seq, name="late", layers=layers))
                seq += 1
    rep = _report(path)
    assert rep.steps == rep.replayed == 10
    assert rep.alerts and rep.alerts[0].first_step == 0, "judged from the first step"


def test_cli_rule_list_matches_the_engine() -> None:
    """Guards drift: --fail-on's list (kept import-free for --help) must equal the real rules."""
    from gradtui.alerts import RULES
    from gradtui.commands import report

    assert report._RULE_NAMES == RULES
