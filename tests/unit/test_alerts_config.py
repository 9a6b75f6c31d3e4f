"""The alert config: TOML loading, validation messages, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradtui.alerts import AlertConfig, load_config
from gradtui.errors import GradtuiError

EXAMPLE = """
consecutive = 4
clear_after = 20
disabled = ["dead"]

[vanishing]
ratio = 1e-4
floor = 0

[exploding]
factor = 20
ceiling = 5e3
consecutive = 2

[saturated]
fraction = 0.8
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_example_config(tmp_path: Path) -> None:
    """Guards the documented file format: general keys plus one table per rule."""
    cfg = load_config(_write(tmp_path, EXAMPLE))
    assert cfg.consecutive == 4 and cfg.clear_after == 20
    assert cfg.disabled == ("dead",)
    assert cfg.vanishing_ratio == 1e-4 and cfg.vanishing_floor == 0
    assert cfg.exploding_factor == 20 and cfg.exploding_ceiling == 5e3
    assert cfg.exploding_consecutive == 2
    assert cfg.saturated_fraction == 0.8
    assert not cfg.enabled("dead") and cfg.enabled("vanishing")
    assert cfg.dead_fraction == AlertConfig().dead_fraction, "unset keys keep their defaults"


def test_documented_example_in_docs_loads(tmp_path: Path) -> None:
    """Guards docs/diagnosis.md: its example TOML must stay a valid config."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "diagnosis.md"
    if not doc.exists():
        pytest.skip("docs/diagnosis.md not written yet")
    text = doc.read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    load_config(_write(tmp_path, block))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("consecutiv = 3", "alerts.toml: consecutiv: unknown alert setting"),
        ("[vanishing]\nratoi = 1e-3", "vanishing.ratoi: unknown key"),
        ("[vanish]\nratio = 1e-3", "unknown table [vanish]"),
        ('consecutive = "3"', "consecutive: expected an integer, got str"),
        ("consecutive = 2.5", "consecutive: expected an integer, got float"),
        ("consecutive = true", "consecutive: expected an integer, got bool"),
        ("consecutive = 0", "consecutive: 0 is out of range [1, 10000]"),
        ("[vanishing]\nratio = 1.5", "vanishing.ratio: 1.5 is out of range (0, 1]"),
        ("[vanishing]\nratio = nan", "vanishing.ratio: nan is out of range"),
        ("[dead]\nfraction = 0", "dead.fraction: 0 is out of range (0, 1]"),
        ('disabled = ["vanishng"]', "unknown rule 'vanishng'"),
        ("disabled = 3", "disabled: expected a list of rule names"),
        ("[large_updates]\nabove = 1e-7", "must be greater than stalled_updates.below"),
        ("consecutive = ", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_error_naming_the_key(
    tmp_path: Path, text: str, needle: str
) -> None:
    """Guards user-facing errors: a typo or bad value names the key, in one line, exit code 2."""
    with pytest.raises(GradtuiError) as info:
        load_config(_write(tmp_path, text))
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert info.value.code == 2


def test_missing_file_is_a_gradtui_error(tmp_path: Path) -> None:
    """Guards a missing --config file: a one-line error, not a traceback."""
    with pytest.raises(GradtuiError, match="cannot read alert config"):
        load_config(tmp_path / "nope.toml")


def test_with_overrides_validates_and_ignores_none() -> None:
    """Guards CLI flags layered over a config: None means 'flag not given'."""
    cfg = AlertConfig().with_overrides(consecutive=7, vanishing_ratio=None, disabled=["dead"])
    assert cfg.consecutive == 7
    assert cfg.vanishing_ratio == AlertConfig().vanishing_ratio
    assert cfg.disabled == ("dead",)
    with pytest.raises(GradtuiError, match="bogus: unknown alert setting"):
        AlertConfig().with_overrides(bogus=1)
    with pytest.raises(GradtuiError, match="hysteresis"):
        AlertConfig().with_overrides(hysteresis=0.5)
