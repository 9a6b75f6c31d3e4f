"""`gradtui watch` as a real process on a real pseudo-terminal: starts, paints, quits on q."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from gradtui.publish import Publisher
from gradtui.synthetic import SyntheticRun, synthetic_layers


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


@pytest.mark.skipif(sys.platform != "linux", reason="pty handling is Linux-specific here")
def test_watch_paints_and_quits_on_q(private_registry: Path) -> None:
    """Guards the real command: it paints the live run, and q ends the process with status 0."""
    layers = synthetic_layers(3)
    pub = Publisher(
        name="pty-run",
        layers=layers,
        endpoint="tcp://127.0.0.1:*",
        register=False,
        hello_interval=0.2,
        heartbeat_interval=0.2,
    )
    syn = SyntheticRun(layers, mode="healthy")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    env = dict(os.environ, GRADTUI_RUNTIME_DIR=str(private_registry), TERM="xterm-256color")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradtui", "watch", pub.endpoint],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    try:
        for s in range(40):
            pub.publish_step(step=s, loss=syn.loss(s), stats=syn.stats(s))
        out = _read_until(master, b"runs", timeout=30)
        assert b"runs" in out, out[-500:]
        step = 40
        deadline = time.monotonic() + 20
        while b"pty-run" not in out and time.monotonic() < deadline:
            pub.publish_step(step=step, loss=syn.loss(step), stats=syn.stats(step))
            step += 1
            out += _read_until(master, b"pty-run", timeout=0.2)
        assert b"pty-run" in out
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
        pub.close()
