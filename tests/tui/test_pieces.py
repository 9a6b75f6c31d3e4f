"""Pure pieces of the dashboard: sanitising, number formatting, sparklines, heatmap levels."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gradtui.tui.health import BAD, GOOD, WARN, Thresholds, grad_style, update_style
from gradtui.tui.text import NONFINITE_STYLE, clean, fmt_num, num, plain
from gradtui.tui.widgets.heatmap import EMPTY, LEVELS, NONFINITE, quantize
from gradtui.tui.widgets.plots import finite_points
from gradtui.tui.widgets.sparkline import sparkline


def test_clean_strips_escape_sequences_and_controls() -> None:
    """Guards DESIGN §8: CSI/OSC sequences and control chars never reach the screen."""
    raw = "a\x1b[31mb\x1b]0;title\x07c\x00d\x7fe\u202ef\nnew"
    assert clean(raw) == "abcdefnew"


def test_plain_never_parses_markup() -> None:
    """Guards against MarkupError: a name like '[bold' or '[/' is literal text."""
    for name in ("[bold", "[/]", "[/bold red]x", "[link=http://x]y"):
        assert plain(name).plain == name
        assert plain(name).spans == []


def test_clean_caps_length() -> None:
    """Guards the layout against megabyte names: text is capped with an ellipsis."""
    assert len(clean("x" * 10_000, limit=50)) == 50


@given(st.text())
def test_clean_output_is_printable(s: str) -> None:
    """Guards the sanitiser on arbitrary input: no control characters survive."""
    out = clean(s)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_fmt_num_spells_non_finite_and_styles_it() -> None:
    """Guards NaN/Inf display: spelled out, in the distinct non-finite colour."""
    assert fmt_num(math.nan) == "nan"
    assert fmt_num(math.inf) == "inf"
    assert fmt_num(-math.inf) == "-inf"
    assert fmt_num(2.5e-9) == "2.50e-09"
    assert fmt_num(0.5) == "0.5"
    assert num(math.nan, style="green").style == NONFINITE_STYLE


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40))
def test_sparkline_accepts_anything(values: list[float]) -> None:
    """Guards the Sparkline hazard: NaN/Inf/negatives never raise and keep the width."""
    out = sparkline(values, 12)
    assert out.cell_len == 12
    assert ("!" in out.plain) == any(not math.isfinite(v) for v in values[-12:])


def test_quantize_bins_layers_and_marks_non_finite() -> None:
    """Guards the heatmap: log scale from dark (small) to bright (large), NaN as its own level."""
    hist = np.array([[1e-9, 1e-5, 1e-1], [1e-9, np.nan, 1e-1]], np.float32)
    levels, lo, hi = quantize(hist, 8)
    assert levels.shape == (3, 2)
    assert levels[0, 0] == 0 and levels[2, 0] == LEVELS - 1
    assert levels[1, 1] == NONFINITE
    assert math.isclose(lo, -9, abs_tol=1e-3) and math.isclose(hi, -1, abs_tol=1e-3)


def test_quantize_groups_many_layers() -> None:
    """Guards 1,000-layer models: layers are grouped so the heatmap fits its height."""
    hist = np.full((5, 1000), 1e-3, np.float32)
    levels, _, _ = quantize(hist, 40)
    assert levels.shape == (40, 5)
    assert quantize(np.zeros((0, 3), np.float32), 10)[0].shape[0] == 0
    assert (quantize(np.full((2, 2), np.nan, np.float32), 4)[0] == NONFINITE).all()
    assert EMPTY not in quantize(np.ones((2, 2), np.float32), 4)[0]


def test_health_colours() -> None:
    """Guards cell colours: vanishing relative to the largest layer is red, borderline yellow."""
    th = Thresholds()
    assert grad_style(1e-2, 1e-2, th) == GOOD
    assert grad_style(5e-5, 1e-2, th) == WARN
    assert grad_style(1e-7, 1e-2, th) == BAD
    assert grad_style(math.nan, 1e-2, th) == NONFINITE_STYLE
    assert update_style(1e-3, th) == GOOD
    assert update_style(1.0, th) == BAD


def test_finite_points_drop_what_plotext_cannot_draw() -> None:
    """Guards the plots: NaN/Inf (and non-positive on log) are dropped, not handed to plotext."""
    xs, ys = finite_points([0, 1, 2, 3], [1.0, math.nan, math.inf, 100.0], log=True)
    assert xs == [0.0, 3.0] and ys == [0.0, 2.0]
    xs, _ = finite_points([0, 1], [-1.0, 0.0], log=True)
    assert xs == []
