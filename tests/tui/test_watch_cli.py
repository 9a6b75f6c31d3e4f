"""`gradtui watch` argument handling as a real subprocess (the user-facing failures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _watch(*args: str, runtime: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRADTUI_RUNTIME_DIR=str(runtime))
    return subprocess.run(
        [sys.executable, "-m", "gradtui", "watch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_unknown_run_name_is_a_one_line_error(private_registry: Path) -> None:
    """Guards `watch NAME` for a run that is not registered: exit 2, one line, no traceback."""
    proc = _watch("no-such-run", runtime=private_registry)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-run" in lines[0] and "--wait" in lines[0]


def test_bad_alert_config_is_a_one_line_error(private_registry: Path, tmp_path: Path) -> None:
    """Guards --config: an unknown key is reported in one line with exit 2 before any UI."""
    cfg = tmp_path / "alerts.toml"
    cfg.write_text("no_such_threshold = 3\n")
    proc = _watch("--config", str(cfg), "tcp://127.0.0.1:1", runtime=private_registry)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_fps_is_rejected(private_registry: Path) -> None:
    """Guards --fps validation: zero would divide by zero in the frame timer."""
    proc = _watch("--fps", "0", "tcp://127.0.0.1:1", runtime=private_registry)
    assert proc.returncode == 2


def test_add_missing_recording_is_a_one_line_error(private_registry: Path, tmp_path: Path) -> None:
    """Guards --add: a path that does not exist fails fast (exit 2) instead of an empty view."""
    proc = _watch("--add", str(tmp_path / "nope.db"), "tcp://127.0.0.1:1", runtime=private_registry)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.db" in lines[0]
