"""The trainer's progress display: TTY line, periodic lines, quiet."""

from __future__ import annotations

import io

from trainer.console import Progress


def test_non_tty_prints_a_line_every_n_steps() -> None:
    """Guards log files and pipes: whole lines, every --log-every steps, no carriage returns."""
    out = io.StringIO()
    p = Progress(log_every=10, total=30, stream=out, tty=False)
    p.banner("mlp-d20-sigmoid", "tcp://127.0.0.1:5555", "run1")
    due = [s for s in range(1, 31) if p.due(s)]
    assert due == [10, 20, 30]
    for s in due:
        p.update(s, 2.3, 0.1)
    p.finish("finished", 30)
    lines = out.getvalue().splitlines()
    assert "tcp://127.0.0.1:5555" in lines[0]
    assert lines[1] == "trainer: watch it with: gradtui watch tcp://127.0.0.1:5555"
    assert lines[2].startswith("step 10/30  loss 2.3000  acc  10.0%")
    assert lines[-1] == "trainer: finished after 30 steps"
    assert "\r" not in out.getvalue() and len(lines) == 6


def test_tty_rewrites_one_line() -> None:
    """Guards the interactive display: updates overwrite one line; the end starts a new one."""
    out = io.StringIO()
    p = Progress(stream=out, tty=True)
    p.update(1, 2.0, 0.5)
    p.update(2, 1.0, 0.75)
    p.finish("interrupted", 2, "Ctrl-C")
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 2
    assert text.endswith("\ntrainer: interrupted after 2 steps (Ctrl-C)\n")


def test_quiet_prints_nothing() -> None:
    """Guards --quiet: no banner, progress or summary (errors go to stderr elsewhere)."""
    out = io.StringIO()
    p = Progress(quiet=True, log_every=1, stream=out, tty=False)
    p.banner("n", "tcp://x:1", "r")
    assert not p.due(1)
    p.update(1, 1.0, 1.0)
    p.finish("finished", 1)
    assert out.getvalue() == ""
