"""Process plumbing for the fault-matrix tests: short runtime dirs, CLI processes, process trees."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ["--depth", "8", "--width", "64"]


def free_tcp() -> str:
    """A loopback endpoint on a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def child_env(runtime: Path, **extra: str) -> dict[str, str]:
    """The environment of every spawned process: private registry, one torch thread."""
    env = {
        **os.environ,
        "GRADTUI_RUNTIME_DIR": str(runtime),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("TMUX", None)
    return env


def gradtui(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradtui", *args]


def trainer(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *TRAINER, *args]


def spawn(argv: Sequence[str], env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    """A child in its own session, so a terminal-style signal can reach its whole group."""
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        list(argv),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=kw.pop("stdout", subprocess.PIPE),
        stderr=kw.pop("stderr", subprocess.PIPE),
        start_new_session=True,
        **kw,
    )


def read_line(proc: subprocess.Popen[bytes], timeout: float, pattern: str = "") -> str:
    """The first stdout line matching ``pattern`` within ``timeout`` s ("" if none came)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return ""
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if re.search(pattern, line):
                return line
    return ""


def drain(proc: subprocess.Popen[bytes]) -> None:
    """Read whatever is buffered on stdout so a chatty child never blocks on a full pipe."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 65536):
            return


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies count as gone: they hold no resources)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> float:
    """Seconds until none of ``procs`` runs; raises AssertionError after ``timeout``."""
    t0 = time.monotonic()
    while alive(procs):
        if time.monotonic() - t0 > timeout:
            left = [(p.pid, p.name()) for p in alive(procs)]
            raise AssertionError(f"still running after {timeout} s: {left}")
        time.sleep(0.02)
    return time.monotonic() - t0


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; seconds taken. Raises AssertionError naming ``what``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def kill_tree(procs: Sequence[psutil.Process]) -> None:
    """Test cleanup: SIGKILL whatever of ``procs`` is left (only processes the test started)."""
    for p in alive(procs):
        try:
            p.send_signal(signal.SIGCONT)
            p.kill()
        except psutil.NoSuchProcess:
            pass
