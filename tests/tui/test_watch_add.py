"""A recorded run opened beside live ones (`gradtui watch --add`), through the real app."""

from __future__ import annotations

from pathlib import Path

from tui_helpers import wait_until

from gradtui.protocol import End, Hello, Step
from gradtui.record import RunRecorder
from gradtui.replay_source import ReplaySource
from gradtui.state import Fleet
from gradtui.synthetic import SyntheticRun, synthetic_layers
from gradtui.tui.app import GradApp
from gradtui.tui.widgets.run_list import RunList


def _record(path: Path, steps: int) -> Path:
    layers = synthetic_layers(3)
    syn = SyntheticRun(layers, mode="vanishing")
    rec = RunRecorder(path)
    rec(Hello(run="old", inc="i", seq=0, t=1.0, name="old-run", layers=layers))
    for s in range(steps):
        rec(
            Step(
                run="old",
                inc="i",
                seq=s + 1,
                t=2.0 + s,
                step=s,
                loss=syn.loss(s),
                stats=syn.stats(s),
            )
        )
    rec(End(run="old", inc="i", seq=steps + 1, t=3.0 + steps, status="finished", step=steps - 1))
    assert rec.close(30)
    return path


async def test_recording_shows_next_to_live_runs(tmp_path: Path) -> None:
    """Guards --add: the replay source plugs into the receive loop; the run shows as finished."""
    path = _record(tmp_path / "old.sqlite", steps=50)
    fleet = Fleet()
    app = GradApp(fleet, [ReplaySource([path], fleet, key_suffix="~rec")])
    async with app.run_test(size=(120, 40)) as pilot:
        runs = app.screen.query_one("#runs", RunList)
        await wait_until(pilot, lambda: bool(runs.rows) and runs.rows[0].step == 49)
        row = runs.rows[0]
        assert row.run.endswith("~rec") and row.name == "old-run"
        assert row.status == "finished"
        assert app.paint_errors == 0
