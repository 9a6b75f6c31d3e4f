"""The viewer side must run on a laptop without torch; the probe must not drag in the UI."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "module",
    ["gradtui.cli", "gradtui.protocol", "gradtui.state", "gradtui.alerts", "gradtui.tui.app"],
)
def test_viewer_modules_do_not_import_torch(module: str) -> None:
    """Guards the no-torch viewer: a sideways import of torch would make it 2 s slower and GBs."""
    try:
        __import__(module)
    except ModuleNotFoundError:
        pytest.skip(f"{module} not built")
    mods = _modules_after(f"import {module}")
    assert "torch" not in mods


@pytest.mark.parametrize(
    "argv",
    [
        ["watch", "--help"],
        ["tail", "--help"],
        ["ls", "--help"],
        ["report", "--help"],
        ["demo", "--help"],
        ["replay", "--help"],
        ["record", "--help"],
        ["export", "--help"],
    ],
)
def test_cli_help_does_not_import_torch(argv: list[str]) -> None:
    """Running a viewer command's --help must not import torch (or textual for non-UI commands)."""
    code = (
        "import sys\nfrom gradtui.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    )
    mods = _modules_after(code)
    assert "torch" not in mods


def test_probe_does_not_import_textual() -> None:
    """The training side stays lean: importing the probe must not load the UI stack."""
    mods = _modules_after("import gradtui.probe")
    assert "textual" not in mods
    assert "torch" in mods
