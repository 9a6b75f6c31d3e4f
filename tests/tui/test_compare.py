"""The compare view: pure data helpers, run cards, and the real app driven by Pilot.

The fleet is filled directly with protocol messages from ``SyntheticRun`` (no sockets): these
tests are about what the view shows, including NaN/Inf and hostile run names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from textual_plotext.plot import Plot

from gradtui.protocol import Hello, LayerInfo, Step
from gradtui.state import Fleet
from gradtui.synthetic import Mode, SyntheticRun, synthetic_layers
from gradtui.tui.screens.compare import CompareScreen
from gradtui.tui.widgets.compare_cards import RunCard, render_card
from gradtui.tui.widgets.compare_data import (
    compare_runs,
    config_differences,
    depth_rows,
    geometric_window_mean,
    shared_scale,
)
from gradtui.tui.widgets.compare_heatmaps import CompareHeatmap, rescale_levels
from gradtui.tui.widgets.compare_plots import DepthProfile, LossOverlay, decade_ticks
from gradtui.tui.widgets.compare_timeline import CompareApp
from gradtui.tui.widgets.heatmap import EMPTY, NONFINITE

HOSTILE = "[bold]evil[/\x1b[31m\x1b]0;title\x07"


def fill(
    fleet: Fleet,
    run: str,
    *,
    name: str | None = None,
    mode: Mode = "healthy",
    act: str = "relu",
    steps: int = 60,
    depth: int = 6,
    config: Mapping[str, object] | None = None,
    layers: tuple[LayerInfo, ...] | None = None,
) -> None:
    rows = layers or synthetic_layers(depth, act)
    syn = SyntheticRun(rows, mode=mode, seed=2, nan_after=30)
    cfg = dict(config) if config is not None else {"act": act, "depth": depth}
    fleet.apply(Hello(run=run, seq=0, name=name or run, layers=rows, config=cfg), 100.0)  # type: ignore[arg-type]
    for s in range(steps):
        stats = syn.stats(s)
        fleet.apply(
            Step(run=run, seq=s + 1, step=s, loss=syn.loss(s), stats=stats, t=float(s)), 100.0
        )


# ------------------------------------------------------------------------------ pure helpers


def test_config_differences_lists_only_differing_flags() -> None:
    """Guards the highlighted flags: differing or missing keys only, identity keys left out."""
    a = {"act": "sigmoid", "depth": 20, "bn": False, "name": "a", "lr": 0.05}
    b = {"act": "relu", "depth": 20, "bn": True, "name": "b", "lr": 0.05}
    c = {"act": "relu", "depth": 20, "name": "c", "lr": 0.05}
    assert config_differences([a, b]) == ["act", "bn"]
    assert config_differences([a, b, c]) == ["act", "bn"]
    assert config_differences([a]) == []


def test_shared_scale_ignores_nonfinite_and_outliers() -> None:
    """Guards one colour scale for all heatmaps: NaN/Inf/zeros ignored, one spike clipped."""
    small = np.full((50, 10), 1e-6, np.float32)
    big = np.full((50, 10), 1e-2, np.float32)
    big[0, 0] = np.inf
    big[1, 1] = np.nan
    big[2, 2] = 0.0
    lo, hi = shared_scale([small, big])
    assert lo == pytest.approx(-6.0) and hi == pytest.approx(-2.0)
    assert shared_scale([np.full((3, 3), np.nan)]) == (-8.0, 0.0)
    lo2, hi2 = shared_scale([np.full((4, 4), 1e-3)])
    assert lo2 < -3 < hi2


def test_rescale_levels_puts_equal_values_on_equal_colours() -> None:
    """Guards the shared scale: the same value maps to the same level whatever a map's range."""
    own_a, own_b = (-6.0, -2.0), (-4.0, -3.0)
    shared = (-6.0, -2.0)
    # value 1e-4 (log -4): level 11.5 of 23 on a, level 0 on b
    a = rescale_levels(np.array([[12]], np.int16), own_a, shared)
    b = rescale_levels(np.array([[0]], np.int16), own_b, shared)
    assert abs(int(a[0, 0]) - int(b[0, 0])) <= 1
    special = np.array([[EMPTY, NONFINITE]], np.int16)
    assert rescale_levels(special, own_a, shared).tolist() == special.tolist()


def test_geometric_window_mean_skips_nonfinite() -> None:
    """Guards the window average: NaN/Inf/zero ignored, all-bad layers stay NaN."""
    hist = np.array([[1e-2, np.nan, 0.0], [1e-4, np.inf, 1.0]], np.float32)
    out = geometric_window_mean(hist)
    assert out[0] == pytest.approx(1e-3, rel=1e-4)
    assert math.isnan(out[1])
    assert out[2] == pytest.approx(1.0)


def test_depth_rows_skip_batchnorm() -> None:
    """Guards comparable depth: BatchNorm rows do not count as layers (a --bn run would
    otherwise have twice the layer index of a plain one)."""
    fleet = Fleet()
    layers = (
        LayerInfo("b0.fc", "Linear", "param", (4, 4), 20),
        LayerInfo("b0.bn", "BatchNorm1d", "param", (4,), 8),
        LayerInfo("b0.act", "ReLU", "act"),
        LayerInfo("head", "Linear", "param", (2, 4), 10),
    )
    fill(fleet, "r", layers=layers, steps=3)
    assert depth_rows(fleet.runs["r"]) == [0, 3]


def test_decade_ticks_cover_range() -> None:
    """Guards the hand-made log axis (plotext's own re-applies log on every build)."""
    ticks, labels = decade_ticks(-7.4, -1.2)
    assert ticks[0] <= -7.4 and ticks[-1] >= -1.2
    assert labels[0] == f"1e{int(ticks[0])}"
    assert len(ticks) <= 9


def test_plotext_builds_twice_without_error() -> None:
    """Guards the plotext log-scale bug: a second build of the same data must not raise."""
    fleet = Fleet()
    fill(fleet, "v", mode="vanishing", act="sigmoid")
    frames = compare_runs(fleet, ["v"], 100.0)
    plot = DepthProfile()
    plot._plot = Plot()
    plot.show(frames, [0])
    plot.plt.plotsize(60, 15)
    first = plot.plt.build()
    assert plot.plt.build() == first


def test_render_card_is_plain_and_highlights_differences() -> None:
    """Guards run cards: hostile names stay plain text, differing flags and NaN are shown."""
    fleet = Fleet()
    fill(fleet, "n", name=HOSTILE, mode="nan", config={"act": "relu", "bn": True})
    frame = compare_runs(fleet, ["n"], 100.0)[0]
    text = render_card(frame, 0, ["bn"])
    assert "\x1b" not in text.plain and "\x07" not in text.plain
    assert "[bold]evil" in text.plain  # shown literally, never parsed as markup
    assert "bn: on" in text.plain
    assert "loss nan" in text.plain
    assert "non-finite grads" in text.plain


# ------------------------------------------------------------------------------ the app


def _fleet() -> Fleet:
    fleet = Fleet()
    fill(fleet, "sig", name="sigmoid", mode="vanishing", act="sigmoid")
    fill(fleet, "relu", name="relu", mode="healthy", act="relu")
    fill(fleet, "boom", name=HOSTILE, mode="nan", act="relu", config={"act": "relu", "bn": 1})
    fill(fleet, "exp", name="exploding", mode="exploding", act="tanh", steps=40)
    fill(fleet, "five", name="fifth", mode="healthy", act="gelu", steps=5)
    return fleet


def _app(fleet: Fleet, runs: tuple[str, ...] = ("sig", "relu", "boom")) -> CompareApp:
    return CompareApp(fleet, open_compare=True, compare_runs=runs, clock=lambda: 100.0)


async def _compare(pilot, app: CompareApp) -> CompareScreen:  # type: ignore[no-untyped-def]
    for _ in range(50):
        await pilot.pause(0.05)
        if isinstance(app.screen, CompareScreen) and app.screen.frames:
            return app.screen
    raise AssertionError("compare screen never painted")


async def test_compare_shows_runs_side_by_side_with_nan_and_hostile_names() -> None:
    """Guards the compare view: one heatmap and card per run, one shared scale, NaN runs and
    markup/ESC names neither crash nor leak."""
    app = _app(_fleet())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _compare(pilot, app)
        assert [f.run for f in screen.frames] == ["sig", "relu", "boom"]
        assert [h.run for h in screen.query(CompareHeatmap)] == ["sig", "relu", "boom"]
        assert [c.run for c in screen.query(RunCard)] == ["sig", "relu", "boom"]
        assert "act" in screen.diff_keys and "bn" in screen.diff_keys
        assert not screen.query_one(DepthProfile).empty
        assert not screen.query_one(LossOverlay).empty
        heat = {h.run: h for h in screen.query(CompareHeatmap)}
        for _ in range(100):  # heatmaps redraw at most 5 Hz: wait (bounded) for the first one
            if all(h.levels.size for h in heat.values()):
                break
            await pilot.pause(0.05)
        assert heat["sig"].scale == heat["relu"].scale == screen.scale
        # The vanishing run's input layers are darker than the healthy run's on that scale.
        assert heat["sig"].levels[0].mean() < heat["relu"].levels[0].mean()
        assert (heat["boom"].levels == NONFINITE).any()
        await pilot.resize_terminal(100, 30)  # re-render plots (the plotext log bug)
        await pilot.pause(0.3)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)
        svg = app.export_screenshot()
        assert "\x1b" not in svg


async def test_remove_with_key_and_add_with_picker() -> None:
    """Guards keyboard add/remove: x on a focused card removes, the picker adds, a fifth run
    is refused."""
    app = _app(_fleet())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _compare(pilot, app)
        screen.query(RunCard).first().focus()
        await pilot.press("x")
        await pilot.pause(0.3)
        assert screen.chosen == ["relu", "boom"]
        assert [h.run for h in screen.query(CompareHeatmap)] == ["relu", "boom"]
        for run in ("sig", "exp", "five"):
            assert screen.add_run(run) is (run != "five")
        await pilot.pause(0.3)
        assert screen.chosen == ["relu", "boom", "sig", "exp"]
        assert len(screen.frames) == 4


async def test_mouse_click_on_picker_toggles_a_run() -> None:
    """Guards mouse use: clicking a run in the picker adds it, clicking again removes it."""
    app = _app(_fleet(), runs=("sig",))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _compare(pilot, app)
        picker = screen.query_one("#cmp-picker")
        # Options in fleet order: sig, relu, boom, exp, five; the list has a border line.
        await pilot.click(picker, offset=(4, 2))
        await pilot.pause(0.3)
        assert screen.chosen == ["sig", "relu"]
        await pilot.click(picker, offset=(4, 2))
        await pilot.pause(0.3)
        assert screen.chosen == ["sig"]


async def test_mode_toggle_and_log_key_repaint() -> None:
    """Guards m (latest/window) and the app's l (log loss) on the compare view."""
    app = _app(_fleet())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _compare(pilot, app)
        depth = screen.query_one(DepthProfile)
        await pilot.press("m")
        await pilot.pause(0.2)
        assert depth.mode == "window" and not depth.empty
        loss = screen.query_one(LossOverlay)
        before = loss.log_y
        await pilot.press("l")
        await pilot.pause(0.2)
        assert loss.log_y is (not before)


async def test_c_opens_compare_from_main_and_escape_returns() -> None:
    """Guards the way in and out: c from the main screen, escape back."""
    app = CompareApp(_fleet(), clock=lambda: 100.0)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.2)
        assert not isinstance(app.screen, CompareScreen)
        await pilot.press("c")
        screen = await _compare(pilot, app)
        assert len(screen.chosen) == 4  # first four runs of the fleet
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, CompareScreen)


async def test_home_end_reach_widgets_when_not_replaying() -> None:
    """Guards the replay keys' priority: without a replay, home/end still move list cursors."""
    app = _app(_fleet())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _compare(pilot, app)
        picker = screen.query_one("#cmp-picker")
        picker.focus()
        await pilot.press("end")
        await pilot.pause(0.1)
        assert getattr(picker, "highlighted", None) == 4
        await pilot.press("home")
        await pilot.pause(0.1)
        assert getattr(picker, "highlighted", None) == 0
