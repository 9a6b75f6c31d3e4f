"""Replay: recorded runs fed into the fleet up to a movable step cursor, and ``gradtui replay``.

Recordings are real SQLite files written by ``RunRecorder`` from ``SyntheticRun`` messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradtui.cli import main as cli_main
from gradtui.protocol import End, Hello, Step
from gradtui.replay_source import FIRST_TAIL, ReplaySource, Timeline
from gradtui.state import Fleet, Liveness
from gradtui.storage.writer import RunRecorder
from gradtui.synthetic import Mode, SyntheticRun, synthetic_layers
from gradtui.tui.screens.compare import CompareScreen
from gradtui.tui.widgets.compare_timeline import CompareApp, ReplayBar, bar_text


def record(
    path: Path,
    run: str,
    *,
    steps: int,
    mode: Mode = "vanishing",
    act: str = "sigmoid",
    every: int = 1,
    end: bool = True,
) -> Path:
    layers = synthetic_layers(4, act)
    syn = SyntheticRun(layers, mode=mode, seed=1)
    rec = RunRecorder(path)
    rec(Hello(run=run, inc="i", seq=0, t=1.0, name=f"{run}-name", layers=layers))
    for k in range(steps):
        s = k * every
        rec(
            Step(
                run=run, inc="i", seq=k + 1, t=2.0 + k, step=s, loss=syn.loss(s), stats=syn.stats(s)
            )
        )
    if end:
        rec(End(run=run, inc="i", seq=steps + 1, t=3.0 + steps, status="finished", step=s))
    assert rec.close(30) and rec.dropped == 0
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    record(tmp_path / "a.sqlite", "alpha", steps=3000)
    record(tmp_path / "b.sqlite", "beta", steps=500, mode="healthy", act="relu", every=2, end=False)
    return tmp_path


def _open(paths: list[Path], start: int | None = None) -> tuple[Fleet, ReplaySource]:
    fleet = Fleet()
    src = ReplaySource(paths, fleet, start=start)
    src.open()
    src.poll(0.0)  # the full history follows the quick first pass
    return fleet, src


def test_open_feeds_each_run_to_its_end_with_bounded_history(two_runs: Path) -> None:
    """Guards the fast open: each run ends at its last step, history is tail + overview only,
    the decimated past does not count as wire gaps, and ended/died runs say so."""
    fleet, src = _open([two_runs])
    try:
        assert src.timeline == Timeline(0, 2999, 2999, 2, False, src.timeline.build_s)
        a, b = fleet.runs["alpha"], fleet.runs["beta"]
        assert a.latest is not None and a.latest.step == 2999
        assert b.latest is not None and b.latest.step == 998
        assert a.stats is not None and len(a.stats) <= 2048 + 1024
        steps, _ = a.series("grad_rms")
        assert steps[0] == 0 and np.all(np.diff(steps) > 0)
        assert a.counters.gaps == 0 and a.name == "alpha-name"
        assert a.liveness(1e9) is Liveness.ENDED  # an end was recorded
        assert b.liveness(1e9) is Liveness.STALE  # no end: it died
    finally:
        src.close()


def test_seek_rebuilds_state_up_to_the_cursor(two_runs: Path) -> None:
    """Guards the step cursor: after a seek every run holds exactly the steps <= cursor, no
    end message before the end, and moves are clamped to the recorded range."""
    fleet, src = _open([two_runs])
    try:
        src.seek(1234)
        src.poll(0.0)
        a, b = fleet.runs["alpha"], fleet.runs["beta"]
        assert src.timeline.cursor == 1234
        assert a.latest is not None and a.latest.step == 1234 and a.end is None
        assert b.latest is not None and b.latest.step == 998  # shorter run: its own end
        steps, _ = a.series("grad_rms")
        assert steps.max() == 1234
        assert a.liveness(1e9) is Liveness.LIVE  # mid-way through a replay it is "playing"
        src.move(-10_000)
        src.poll(0.0)
        assert src.timeline.cursor == 0
        src.seek(10**9)
        src.poll(0.0)
        assert src.timeline.cursor == 2999 and fleet.runs["alpha"].end is not None
    finally:
        src.close()


def test_open_is_progressive(two_runs: Path) -> None:
    """Guards the fast first frame: open() feeds only the last FIRST_TAIL steps, and the next
    poll replaces them with the full history at the same cursor."""
    fleet = Fleet()
    src = ReplaySource([two_runs], fleet)
    src.open()
    try:
        a = fleet.runs["alpha"]
        assert a.stats is not None and len(a.stats) == FIRST_TAIL
        assert a.latest is not None and a.latest.step == 2999 and src.timeline.loading
        src.poll(0.0)
        a = fleet.runs["alpha"]
        assert a.stats is not None and len(a.stats) > FIRST_TAIL and not src.timeline.loading
        assert a.latest is not None and a.latest.step == 2999
    finally:
        src.close()


def test_same_run_id_in_two_files_keeps_both(tmp_path: Path) -> None:
    """Guards comparing a run with a later re-run of the same id: both must appear."""
    record(tmp_path / "one.sqlite", "same", steps=20)
    record(tmp_path / "two.sqlite", "same", steps=30, mode="healthy", act="relu")
    fleet, src = _open([tmp_path / "one.sqlite", tmp_path / "two.sqlite"])
    try:
        assert sorted(fleet.runs) == ["same", "same~2"]
    finally:
        src.close()


def test_bar_text_shows_position() -> None:
    """Guards the timeline bar: step, total and a proportional fill."""
    text = bar_text(Timeline(0, 100, 50, 1, False), 80).plain
    assert "step 50 / 100" in text
    bar = text[text.index("[") + 1 : text.index("]")]
    assert abs(bar.count("█") - bar.count("░")) <= 1


async def test_replay_app_step_keys_move_the_cursor(two_runs: Path) -> None:
    """Guards replay navigation in the app: home/end/[/]/{/} move the cursor, the fleet follows,
    and the compare view works on recorded runs."""
    fleet = Fleet()
    src = ReplaySource([two_runs], fleet)
    app = CompareApp(fleet, [src], replay=src)

    async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
        for _ in range(100):
            await pilot.pause(0.05)
            if src.idle():
                return

    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert app.screen.query(ReplayBar)
        await pilot.press("home")
        await settle(pilot)
        assert src.timeline.cursor == 0
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert src.timeline.cursor == 30  # 1% of 0..2999
        await pilot.press("right_curly_bracket")
        await settle(pilot)
        assert src.timeline.cursor == 330
        with fleet.lock:
            latest = fleet.runs["alpha"].latest
        assert latest is not None and latest.step == 330
        await pilot.press("end")
        await settle(pilot)
        assert src.timeline.cursor == 2999
        await pilot.press("c")
        for _ in range(50):
            await pilot.pause(0.05)
            if isinstance(app.screen, CompareScreen) and app.screen.frames:
                break
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert sorted(f.run for f in screen.frames) == ["alpha", "beta"]
        await pilot.pause(0.2)
        assert screen.query(ReplayBar)


def test_replay_cli_missing_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Guards `gradtui replay` on a missing or foreign file: one line, exit 2, no traceback."""
    assert cli_main(["replay", str(tmp_path / "nope.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.sqlite" in err
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    assert cli_main(["replay", str(junk)]) == 2
    assert "not a gradtui recording" in capsys.readouterr().err
