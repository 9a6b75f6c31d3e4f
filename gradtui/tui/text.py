"""Turning untrusted strings and numbers from the wire into safe, plain ``rich.text.Text``.

Run and layer names come from any process that can reach a socket: a ``[bold`` in a name raised
``MarkupError`` and ended the app, and ESC sequences survived rendering (DESIGN §8). Everything
shown from the wire goes through ``clean`` and is rendered as ``Text``, never as markup.
"""

from __future__ import annotations

import math
import re
from typing import Final

from rich.text import Text

# C0/C1 controls, DEL, and the bidi overrides that can visually reorder a line.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Whole ANSI/VT sequences first, so their parameters do not survive as visible junk.
_ESCAPE_SEQ: Final = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")

NONFINITE_STYLE: Final = "bold magenta"
"""One distinct colour for NaN/Inf everywhere, so they are never mistaken for a small number."""


def clean(text: str, limit: int = 120) -> str:
    """A printable single line: escape sequences and control characters removed, length capped."""
    text = _ESCAPE_SEQ.sub("", text)
    text = _CONTROL.sub("", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def plain(text: str, style: str = "", limit: int = 120) -> Text:
    """Untrusted text as a ``Text`` that no markup parser will ever see."""
    return Text(clean(text, limit), style=style, no_wrap=True, overflow="ellipsis")


def fmt_num(value: float, width: int = 8) -> str:
    """Compact number for a cell: ``nan``/``inf`` spelled out, tiny and huge in e-notation."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    mag = abs(value)
    if mag != 0.0 and (mag < 1e-2 or mag >= 1e5):
        return f"{value:.2e}"
    text = f"{value:.4g}"
    return text if len(text) <= width else f"{value:.2e}"


def num(value: float, style: str = "") -> Text:
    """A number as ``Text``; non-finite values get the non-finite style whatever ``style`` says."""
    if not math.isfinite(value):
        return Text(fmt_num(value), style=NONFINITE_STYLE)
    return Text(fmt_num(value), style=style)


def fmt_rate(value: float) -> str:
    """Messages or steps per second, short."""
    if not math.isfinite(value):
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
