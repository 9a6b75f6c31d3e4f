"""``gradtui record`` as a real subprocess against real publishers over loopback TCP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gradtui.publish import Publisher
from gradtui.storage import RecordingError, open_recording
from gradtui.synthetic import synthetic_layers

ROOT = Path(__file__).parents[2]
LAYERS = synthetic_layers(3)
SHAPE = (len(LAYERS), 11)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private registry directory shared by this process and the recorder subprocess."""
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(d))
    return d


def start_record(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "gradtui", "record", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def publisher(name: str, register: bool = False) -> Publisher:
    return Publisher(
        name=name,
        layers=LAYERS,
        endpoint="tcp://127.0.0.1:*",
        register=register,
        hello_interval=0.2,
    )


def steps_in(path: Path) -> int:
    """Steps committed so far in a live recording (0 if the file is not there yet)."""
    try:
        with open_recording(path) as rec:
            return sum(run.steps for run in rec.runs)
    except RecordingError:
        return 0


def publish_until(pub: Publisher, path: Path, start: int = 0, timeout: float = 30) -> int:
    """Publish steps until the recorder has committed one (slow joiner: no fixed sleeps)."""
    step = start
    deadline = time.monotonic() + timeout
    while steps_in(path) == 0:
        assert time.monotonic() < deadline, "recorder never committed a step"
        pub.publish_step(step=step, loss=1.0, stats=np.full(SHAPE, step, np.float32))
        step += 1
        time.sleep(0.02)
    return step


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def test_records_endpoint_until_end(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """record ENDPOINT -o FILE --until-end records hello, the steps and the end, exits 0."""
    out = tmp_path / "rec.sqlite"
    with publisher("endtest") as pub:
        proc = start_record(pub.endpoint, "-o", str(out), "--until-end")
        procs.append(proc)
        step = publish_until(pub, out)
        for i in range(step, step + 20):
            pub.publish_step(step=i, loss=0.5, stats=np.full(SHAPE, i, np.float32))
        last = step + 19
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "recorded" in stderr and "ended: finished" in stderr
    with open_recording(out) as rec:
        (run,) = rec.runs
        assert run.run == pub.run and run.hello is not None and run.hello.name == "endtest"
        assert run.end is not None and run.end.status == "finished"
        steps, stack = run.stats()
        assert steps[-1] == last and steps[-20:].tolist() == list(range(last - 19, last + 1))
        assert np.all(stack[-1] == last)


def test_sigterm_flushes_and_exits_zero(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """SIGTERM must flush what was received and exit 0, like Ctrl-C."""
    out = tmp_path / "rec.sqlite"
    with publisher("termtest") as pub:
        proc = start_record(pub.endpoint, "-o", str(out))
        procs.append(proc)
        step = publish_until(pub, out)
        for i in range(step, step + 10):
            pub.publish_step(step=i, loss=0.5, stats=np.full(SHAPE, i, np.float32))
        time.sleep(0.3)  # let the 10 steps reach the recorder (not a correctness wait)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "recorded" in stderr and "Traceback" not in stderr
    assert steps_in(out) >= 1


def test_no_args_follows_registry_and_names_files(
    tmp_path: Path, runtime: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """With no targets: wait for runs, pick up a run that starts later, one file per run
    named <stamp>-<name>-<run>.sqlite in the output directory."""
    out = tmp_path / "runs"
    proc = start_record("-o", str(out), "--until-end")
    procs.append(proc)
    with publisher("late starter", register=True) as pub:
        deadline = time.monotonic() + 30
        step = 0
        while not list(out.glob("*.sqlite")) or steps_in(out) == 0:
            assert time.monotonic() < deadline, "recorder never picked up the run"
            pub.publish_step(step=step, loss=1.0, stats=np.zeros(SHAPE, np.float32))
            step += 1
            time.sleep(0.02)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    (path,) = out.glob("*.sqlite")
    assert path.name.endswith(f"-late_starter-{pub.run}.sqlite")


def test_unknown_run_is_a_one_line_error(tmp_path: Path, runtime: Path) -> None:
    """A run name that matches no live run exits 2 with one line, no traceback."""
    proc = start_record("no-such-run", "-o", str(tmp_path / "x.sqlite"))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert stderr.strip().count("\n") == 0 and "no live run 'no-such-run'" in stderr
    assert not (tmp_path / "x.sqlite").exists()


def test_unwritable_output_exits_one(tmp_path: Path) -> None:
    """An output path that cannot be created ends the command with exit 1 and one reason."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = start_record("tcp://127.0.0.1:1", "-o", str(blocker / "x.sqlite"), "-q")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr
    assert "recording stopped" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("command", ["record", "export"])
def test_help_is_cheap(command: str) -> None:
    """`gradtui record/export --help` must not import torch, zmq, numpy or sqlite3."""
    code = (
        "import sys\nfrom gradtui.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert not {"torch", "zmq", "numpy", "sqlite3"} & set(out)
