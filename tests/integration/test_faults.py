"""The fault matrix (docs/reliability.md): real processes killed, stopped, hung up and fuzzed.

Each test names the fault it injects. Cases already guarded elsewhere are referenced from
docs/reliability.md rather than repeated here.
"""

from __future__ import annotations

import json
import os
import pty
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import psutil
import pytest
import zmq
from faults_helpers import (
    ROOT,
    alive,
    child_env,
    drain,
    free_tcp,
    gradtui,
    kill_tree,
    read_line,
    spawn,
    trainer,
    tree,
    wait_for,
    wait_gone,
)

from gradtui.protocol import (
    COLUMNS,
    End,
    Heartbeat,
    Hello,
    LayerInfo,
    ProtocolError,
    Step,
    decode,
    encode,
)
from gradtui.publish import Publisher
from gradtui.state import Fleet, Liveness
from gradtui.subscribe import Subscriber
from gradtui.synthetic import SyntheticRun, synthetic_layers

EXIT_BOUND_S = 2.0  # the promise: every command ends this fast on Ctrl-C / hang-up
STARTUP_S = 60.0  # generous: a loaded 2-core CI box imports torch slowly


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A private runtime dir with a short path (ipc socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="gt", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; whatever is left of their trees is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        kill_tree(tree(proc.pid))
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr, proc.stdin):
            if pipe is not None:
                pipe.close()


class Pump:
    """Publishes synthetic steps from a thread every ``period`` s until stopped."""

    def __init__(self, pub: Publisher, period: float = 0.01) -> None:
        self.pub, self.period = pub, period
        self.syn = SyntheticRun(synthetic_layers(3), mode="healthy")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(self.period):
            self.pub.publish_step(step=step, loss=self.syn.loss(step), stats=self.syn.stats(step))
            step += 1

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _publisher(**kw: object) -> Publisher:
    defaults: dict[str, object] = {
        "name": "faults",
        "layers": synthetic_layers(3),
        "endpoint": "tcp://127.0.0.1:*",
        "hello_interval": 0.3,
        "heartbeat_interval": 0.2,
        "register": False,  # the test process's own registry is the user's: stay out of it
    }
    return Publisher(**{**defaults, **kw})  # type: ignore[arg-type]


@dataclass
class Seen:
    """What a direct subscriber saw of a trainer."""

    hello: Hello | None = None
    steps: list[int] = field(default_factory=list)
    end: End | None = None

    def take(self, sub: Subscriber, timeout: float = 0.1) -> Seen:
        """Fold in what one poll brings; returns self so waits read as one expression."""
        for got in sub.poll(timeout):
            msg = got.message
            if isinstance(msg, Hello):
                self.hello = msg
            elif isinstance(msg, Step):
                self.steps.append(msg.step)
            elif isinstance(msg, End):
                self.end = msg
        return self


# --------------------------------------------------------------------------- 1. stalled viewer


def _timed_steps(pub: Publisher, stats: np.ndarray, steps: int, first: int) -> list[float]:
    """Per-step wall time of a loop doing ~1 ms of matmul "training" then ``publish_step``."""
    a = np.full((160, 160), 0.01, np.float32)
    times = []
    for i in range(first, first + steps):
        t0 = time.perf_counter()
        for _ in range(8):
            a = np.tanh(a @ a)
        pub.publish_step(step=i, loss=1.0, stats=stats)
        times.append(time.perf_counter() - t0)
    return times


@pytest.mark.slow
def test_stopped_viewer_process_does_not_slow_publishing(
    runtime: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Guards DESIGN §2 against a real viewer frozen by SIGSTOP: publish_step must stay
    non-blocking once that viewer's socket buffers are full, and the viewer recovers."""
    layers = synthetic_layers(500)  # ~44 KB per step: fills a stopped reader's buffers fast
    stats = SyntheticRun(layers, mode="healthy").stats(0)
    with (
        _publisher(layers=layers) as alone,
        _publisher(layers=layers) as pub,
    ):
        viewer = spawn(gradtui("tail", pub.endpoint), child_env(runtime))  # one line a step
        reaper.append(viewer)
        step = 0
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:  # pump until the viewer prints its first step
            pub.publish_step(step=step, loss=1.0, stats=stats)
            step += 1
            if read_line(viewer, 0.05, " step "):
                break
        else:
            pytest.fail("the viewer never printed a step")
        os.killpg(viewer.pid, signal.SIGSTOP)
        wait_for(lambda: psutil.Process(viewer.pid).status() == psutil.STATUS_STOPPED, 5, "SIGSTOP")
        _timed_steps(pub, stats, 1200, step)  # ~53 MB > SNDHWM: every buffer on the way is full
        step += 1200
        base: list[float] = []
        stalled: list[float] = []
        for _ in range(10):  # interleaved, so load from other processes hits both alike
            base += _timed_steps(alone, stats, 30, step)
            stalled += _timed_steps(pub, stats, 30, step)
            step += 30
        ratio = statistics.median(stalled) / statistics.median(base)
        print(f"median step {statistics.median(base) * 1e3:.3f} ms -> x{ratio:.3f} stalled")
        assert ratio < 1.5, ratio
        drain(viewer)  # what it printed before the stop
        os.killpg(viewer.pid, signal.SIGCONT)
        assert read_line(viewer, 20, " step "), "the viewer did not resume after SIGCONT"
    os.killpg(viewer.pid, signal.SIGINT)
    assert viewer.wait(10) == 0


def _rates(lines: list[tuple[float, str]], start: float, stop: float) -> list[float]:
    """The trainer's own steps/s figures printed between ``start`` and ``stop``."""
    out = []
    for t, line in lines:
        m = re.match(r"step \d+(?:/\d+)? .* ([\d.]+) steps/s", line)
        if m and start <= t <= stop:
            out.append(float(m.group(1)))
    return out


def _train_collecting(
    argv: list[str], env: dict[str, str], reaper: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], list[tuple[float, str]], threading.Thread]:
    """A trainer whose stdout lines are collected, with their arrival time, by a thread."""
    proc = spawn(argv, env)
    reaper.append(proc)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.extend(
            (time.monotonic(), raw.decode(errors="replace").strip()) for raw in proc.stdout
        )

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return proc, lines, thread


@pytest.mark.slow
def test_trainer_speed_with_a_stopped_viewer(
    runtime: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Guards the headline promise: a frozen (SIGSTOP) `gradtui tail` viewer leaves the real
    trainer's steps/s where a twin trainer with no viewer is (loosely here; the doc has the
    ratio). The twins run side by side, so load from other processes hits both alike."""
    env = child_env(runtime)
    flags = ["--steps", "0", "--log-every", "50", "--no-record"]
    ep = free_tcp()
    viewer = spawn(gradtui("tail", ep, "--json"), env)  # waits, reconnecting, for the bind
    reaper.append(viewer)
    watched = _train_collecting(trainer(*flags, "--endpoint", ep), env, reaper)
    alone = _train_collecting(trainer(*flags, "--endpoint", free_tcp()), env, reaper)
    assert read_line(viewer, STARTUP_S, r'"step"'), "the viewer never printed a step"
    os.killpg(viewer.pid, signal.SIGSTOP)
    start = time.monotonic() + 1.0  # past the progress interval that saw the viewer reading
    wait_for(lambda: bool(_rates(alone[1], start, time.monotonic())), STARTUP_S, "the twin")
    time.sleep(5.0)  # the measurement window: both train, one of them past a frozen viewer
    stop = time.monotonic()
    for proc, _, reader in (watched, alone):
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0
        reader.join(5)
    with_stalled, without = _rates(watched[1], start, stop), _rates(alone[1], start, stop)
    assert len(with_stalled) >= 3 and len(without) >= 3, (watched[1], alone[1])
    ratio = statistics.median(without) / statistics.median(with_stalled)
    print(
        f"steps/s: no viewer {statistics.median(without):.1f}, stalled viewer "
        f"{statistics.median(with_stalled):.1f}: step time x{ratio:.3f}"
    )
    assert ratio < 1.5, (without, with_stalled)


# --------------------------------------------------------------------------- 2. kill -9 of peers


@pytest.mark.slow
def test_kill_9_of_viewer_recorder_and_relay_never_reaches_the_trainer(
    runtime: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Guards the publisher's isolation: SIGKILL of a viewer, a recorder and the relay the
    trainer pushes to leaves it training (steps keep arriving) and exiting 0 on Ctrl-C."""
    env = child_env(runtime)
    relay = spawn(gradtui("relay", "--frontend", free_tcp(), "--backend", free_tcp()), env)
    reaper.append(relay)
    words = read_line(relay, STARTUP_S, "frontend").split()
    frontend, backend = words[words.index("frontend") + 1], words[-1]
    ep = free_tcp()
    train = spawn(
        trainer("--steps", "0", "--quiet", "--no-record", "--endpoint", ep, "--relay", frontend),
        env,
    )
    reaper.append(train)
    viewer = spawn(gradtui("tail", ep, "--json"), env)
    recorder = spawn(gradtui("record", ep, "-o", str(runtime / "rec.sqlite"), "--quiet"), env)
    reaper += [viewer, recorder]
    with Subscriber([ep]) as direct, Subscriber([backend]) as via_relay:
        seen, relayed = Seen(), Seen()
        wait_for(lambda: bool(read_line(viewer, 0.1, r'"step"')), STARTUP_S, "the viewer")
        wait_for(lambda: bool(relayed.take(via_relay).steps), 20, "relayed steps")
        wait_for(lambda: (runtime / "rec.sqlite").exists(), 20, "the recording")
        peers = [p for proc in (viewer, recorder, relay) for p in tree(proc.pid)]
        for proc in (viewer, recorder, relay):
            os.killpg(proc.pid, signal.SIGKILL)
        wait_gone(peers, 5)
        for proc in (viewer, recorder, relay):
            assert proc.wait(5) == -signal.SIGKILL
        seen.take(direct)
        seen.steps.clear()
        wait_for(lambda: len(seen.take(direct).steps) >= 200, 30, "200 more steps")
        assert train.poll() is None
        assert seen.steps == list(range(seen.steps[0], seen.steps[0] + len(seen.steps)))
        t0 = time.monotonic()
        os.killpg(train.pid, signal.SIGINT)
        rc = train.wait(10)
        took = time.monotonic() - t0
        wait_for(lambda: seen.take(direct).end is not None, 5, "the end message")
    _, err = train.communicate(timeout=5)
    print(f"trainer exit after Ctrl-C: {took:.2f} s")
    assert rc == 0 and b"Traceback" not in err, err
    assert seen.end is not None and seen.end.status == "interrupted"
    assert took < EXIT_BOUND_S * 2  # generous: it finishes the step and flushes the end


# --------------------------------------------------------------------------- 3. kill -9 trainer


def _ls(env: dict[str, str]) -> list[dict[str, object]]:
    out = subprocess.run(
        gradtui("ls", "--json"), cwd=ROOT, env=env, capture_output=True, timeout=30, check=True
    )
    runs: list[dict[str, object]] = json.loads(out.stdout)
    return runs


@pytest.mark.slow
def test_killed_trainer_turns_stale_and_is_pruned(
    runtime: Path, reaper: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards liveness after SIGKILL (no end message): the viewer's state says STALE within
    seconds, and the registry (`gradtui ls`) forgets the dead run and its socket."""
    from gradtui.tui.live_source import LiveSource

    env = child_env(runtime)
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(runtime))
    train = spawn(trainer("--steps", "0", "--quiet", "--no-record", "--name", "doomed"), env)
    reaper.append(train)
    runs: list[dict[str, object]] = []

    def listed() -> bool:
        runs[:] = _ls(env)
        return bool(runs)

    wait_for(listed, STARTUP_S, "`gradtui ls` to list it")
    (entry,) = runs
    assert entry["pid"] == train.pid and str(entry["endpoint"]).startswith("ipc://")
    run = str(entry["run"])
    source, fleet = LiveSource(names=[run], rescan_s=0.2), Fleet()
    source.open()
    try:

        def liveness() -> Liveness | None:
            fleet.apply_many(source.poll(0.05))
            state = fleet.runs.get(run)
            return None if state is None else state.liveness(time.time())

        wait_for(lambda: liveness() is Liveness.LIVE, 30, "the run to look live")
        os.killpg(train.pid, signal.SIGKILL)
        killed = time.time()
        assert train.wait(5) == -signal.SIGKILL
        wait_for(lambda: liveness() is Liveness.STALE, 15, "the run to turn stale")
        stale_after = time.time() - killed
        state = fleet.runs[run]
        assert state.end is None and state.counters.steps > 0
        wait_for(lambda: not source.health().endpoints, 5, "the dead endpoint to be dropped")
    finally:
        source.close()
    print(f"stale {stale_after:.2f} s after kill -9")
    assert stale_after < 4.0 + 3.0  # stale_after policy (4 s) plus poll slack
    assert _ls(env) == []
    assert not list(runtime.glob("*.json")) and not list(runtime.glob("*.sock"))


# --------------------------------------------------------------------------- 4. socket in use


@pytest.mark.slow
def test_ipc_path_in_use_is_one_line_and_exit_2(runtime: Path) -> None:
    """Guards a taken ipc --endpoint (a live publisher owns it): the trainer must refuse with
    one line and exit 2, not silently steal the socket from the live run."""
    with _publisher(endpoint=f"ipc://{runtime}/busy.sock") as pub:
        out = subprocess.run(
            trainer("--steps", "1", "--quiet", "--no-record", "--endpoint", pub.endpoint),
            cwd=ROOT,
            env=child_env(runtime),
            capture_output=True,
            text=True,
            timeout=STARTUP_S,
        )
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "in use" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- 5. forked workers

FORKED_LOOP = """
import os, sys, torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from gradtui.probe import Monitor

class Tagged(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(512, 8, generator=g), torch.randint(0, 2, (512,), generator=g)
    def __len__(self):
        return 512
    def __getitem__(self, i):
        return self.x[i], self.y[i], os.getpid()

model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
workers = set()
with Monitor(model, name="forked", optimizer=opt, endpoint=sys.argv[1]) as mon:
    print("ready", flush=True)
    sys.stdin.readline()
    for epoch in range(2):  # each epoch forks fresh workers from a process that publishes
        loader = DataLoader(Tagged(), batch_size=16, num_workers=2, multiprocessing_context="fork")
        for x, y, pid in loader:
            workers.update(pid.tolist())
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            mon.step(loss)
            opt.step()
    faults = mon.faults
print("workers", *sorted(workers), "faults", faults, flush=True)
"""


@pytest.mark.slow
def test_dataloader_with_forked_workers(
    runtime: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Guards fork safety: DataLoader workers forked from a publishing process must neither
    crash nor publish (one pid, one incarnation, contiguous seq, one end)."""
    ep = free_tcp()
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKED_LOOP, ep],
        cwd=ROOT,
        env=child_env(runtime),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reaper.append(proc)
    fleet = Fleet()
    with Subscriber([ep]) as sub:
        seen: list[object] = []

        def take() -> list[object]:
            for got in sub.poll(0.1):
                seen.append(got.message)
                fleet.apply(got.message, got.received, got.endpoint)
            return seen

        wait_for(lambda: any(isinstance(m, Hello) for m in take()), STARTUP_S, "hello")
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        proc.stdin = None
        out, err = proc.communicate(timeout=STARTUP_S)
        wait_for(lambda: any(isinstance(m, End) for m in take()), 5, "the end message")
        take()
    assert proc.returncode == 0 and b"Traceback" not in err, err
    words = out.decode().split()
    workers = {int(w) for w in words[words.index("workers") + 1 : words.index("faults")]}
    assert len(workers) >= 2 and proc.pid not in workers  # the loader really forked
    assert words[-1] == "0"  # no probe faults
    hellos = [m for m in seen if isinstance(m, Hello)]
    assert {h.pid for h in hellos} == {proc.pid}
    assert len({m.inc for m in seen if isinstance(m, Hello | Step | Heartbeat | End)}) == 1
    (state,) = fleet.runs.values()
    assert state.counters.steps == 64 and state.latest is not None and state.latest.step == 63
    assert state.counters.gaps == state.counters.duplicates == state.counters.restarts == 0
    assert [m.status for m in seen if isinstance(m, End)] == ["finished"]


# --------------------------------------------------------------------------- 6. SIGHUP


def _tmux(sock: Path, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        ["tmux", "-S", str(sock), *args], env=env, capture_output=True, text=True, timeout=10
    )
    return out.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_closed_terminal_ends_the_viewer(runtime: Path) -> None:
    """Guards SIGHUP: killing the tmux session that hosts `gradtui watch` ends it within 2 s
    and leaves no process behind (no receive thread keeping it alive, no orphaned child)."""
    env = child_env(runtime, TERM="xterm-256color")
    sock = runtime / "tmux.sock"
    with _publisher() as pub, Pump(pub):
        command = " ".join([sys.executable, "-m", "gradtui", "watch", pub.endpoint])
        _tmux(sock, env, "new-session", "-d", "-s", "gt", "-x", "120", "-y", "40", command)
        try:
            pane = int(_tmux(sock, env, "display", "-p", "-t", "gt", "#{pane_pid}").strip())
            painted = lambda: "faults" in _tmux(sock, env, "capture-pane", "-p", "-t", "gt")  # noqa: E731
            wait_for(painted, STARTUP_S, "the dashboard to paint the run")
            procs = tree(pane)
            assert any("watch" in " ".join(p.cmdline()) for p in procs)
            t0 = time.monotonic()
            _tmux(sock, env, "kill-session", "-t", "gt")
            wait_gone(procs, 10)
            took = time.monotonic() - t0  # includes the tmux client's own run
        finally:
            _tmux(sock, env, "kill-server")
    print(f"watch gone {took:.3f} s after its terminal closed")
    assert took < EXIT_BOUND_S, took


# --------------------------------------------------------------------------- 7. Ctrl-C


def _ctrl_c_bound(proc: subprocess.Popen[bytes]) -> float:
    """Send Ctrl-C (SIGINT to the process group, as a terminal does) and time the tree's exit."""
    procs = tree(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    took = wait_gone(procs, 10)
    assert proc.wait(5) == 0
    return took


@pytest.mark.parametrize("command", ["tail", "record", "relay"])
def test_ctrl_c_ends_each_command_promptly(
    command: str, runtime: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Guards Ctrl-C on the long-running commands: exit 0 within 2 s, no process left."""
    env = child_env(runtime)
    with _publisher() as pub, Pump(pub):
        if command == "tail":
            proc = spawn(gradtui("tail", pub.endpoint, "--json"), env)
            reaper.append(proc)
            wait_for(lambda: bool(read_line(proc, 0.1, '"step"')), STARTUP_S, "tail")
        elif command == "record":
            out = runtime / "rec.sqlite"
            proc = spawn(gradtui("record", pub.endpoint, "-o", str(out), "--quiet"), env)
            reaper.append(proc)
            wait_for(out.exists, STARTUP_S, "the recording")
            time.sleep(0.3)  # let a few steps be in flight: Ctrl-C must still be prompt
        else:
            proc = spawn(gradtui("relay", "--frontend", free_tcp(), "--backend", free_tcp()), env)
            reaper.append(proc)
            wait_for(lambda: bool(read_line(proc, 0.1, "frontend")), STARTUP_S, "relay")
        took = _ctrl_c_bound(proc)
        _, err = proc.communicate(timeout=5)
    print(f"{command} gone {took:.2f} s after Ctrl-C")
    assert took < EXIT_BOUND_S and b"Traceback" not in err, (took, err)


def _pty_watch(endpoint: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        gradtui("watch", endpoint),
        cwd=ROOT,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    return proc, master


def _read_pty_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(fd, 65536) if select.select([fd], [], [], 0.1)[0] else b""
        except OSError:
            break
    return seen


@pytest.mark.parametrize(
    "how",
    [
        "ctrl+c",
        "ctrl+q",
        "sigint",
    ],
)
def test_ctrl_c_ends_watch_promptly(
    how: str, runtime: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Guards Ctrl-C in the dashboard: the ^C key in its terminal, or SIGINT from outside,
    ends `gradtui watch` within 2 s with no process left behind."""
    env = child_env(runtime, TERM="xterm-256color")
    with _publisher() as pub, Pump(pub):
        proc, master = _pty_watch(pub.endpoint, env)
        reaper.append(proc)
        try:
            assert b"faults" in _read_pty_until(master, b"faults", STARTUP_S)
            procs = tree(proc.pid)
            t0 = time.monotonic()
            if how.startswith("ctrl+"):
                os.write(master, b"\x03" if how == "ctrl+c" else b"\x11")
            else:
                os.killpg(proc.pid, signal.SIGINT)
            while alive(procs) and time.monotonic() - t0 < 2 * EXIT_BOUND_S:
                _read_pty_until(master, b"\x00", 0.05)  # keep the terminal drained
            took = time.monotonic() - t0
            assert not alive(procs), f"watch still running {took:.1f} s after Ctrl-C ({how})"
            assert proc.wait(5) in (0, 130)
        finally:
            os.close(master)
    print(f"watch gone {took:.2f} s after Ctrl-C ({how})")
    assert took < EXIT_BOUND_S, took


# --------------------------------------------------------------------------- 8. fuzz

FUZZ_TOTAL = 100_000
BATCH = 500  # well under the subscriber's RCVHWM (10,000) and the PUB's SNDHWM (set high)
FUZZ_LAYERS = (
    LayerInfo("fc0", "Linear", "param", (4, 4), 20),
    LayerInfo("act0", "Tanh", "act"),
    LayerInfo("fc1", "Linear", "param", (2, 4), 10),
)
_KEYS = ("v", "kind", "run", "inc", "seq", "t", "step", "loss", "rows", "cols", "status", "name")
_VALUES: tuple[object, ...] = (1, 0, -1, 2**64 - 1, 3.5, float("nan"), "", "step", "x" * 300)
_VALUES += ("hello", "end", "fuzz", "finished", True, None, [], {}, b"\x00", [1, [2]])


def _random_map(rng: random.Random) -> dict[str, object]:
    head: dict[str, object] = {
        k: rng.choice(_VALUES) for k in rng.sample(_KEYS, rng.randint(0, 12))
    }
    if rng.random() < 0.5:  # often plausible enough to reach the deeper checks
        head.update(v=1, kind=rng.choice(("step", "hello", "heartbeat", "end")), run="fuzz")
    return head


def _mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    """One random corruption of a valid message's frames."""
    frames = list(frames)
    op = rng.randrange(7)
    i = rng.randrange(len(frames))
    if op == 0 and frames[i]:  # bit flips
        buf = bytearray(frames[i])
        for _ in range(rng.randint(1, 4)):
            j = rng.randrange(len(buf))
            buf[j] ^= 1 << rng.randrange(8)
        frames[i] = bytes(buf)
    elif op == 1:  # truncation
        frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)]
    elif op == 2:  # a frame too many or too few
        if rng.random() < 0.5:
            frames.insert(rng.randrange(len(frames) + 1), rng.randbytes(rng.randrange(16)))
        elif len(frames) > 1:
            del frames[i]
    elif op == 3:  # a random msgpack map as header
        frames[1] = msgpack.packb(_random_map(rng), use_bin_type=True)
    elif op == 4:  # random bytes
        frames[i] = rng.randbytes(rng.randrange(64))
    elif op == 5:  # a header with one field replaced by a random value
        head = msgpack.unpackb(frames[1])
        head[rng.choice(_KEYS)] = rng.choice(_VALUES)
        frames[1] = msgpack.packb(head, use_bin_type=True)
    else:  # payload resized
        if len(frames) == 3:
            frames[2] = frames[2] + rng.randbytes(rng.choice((1, 4, 44)))
        else:
            frames.append(rng.randbytes(44))
    return frames


def _valid(run: str, seq: int, rng: random.Random) -> list[bytes]:
    t = 1.7e9 + seq
    if seq % 50 == 0:
        return encode(Hello(run=run, inc="a1", seq=seq, t=t, name=run, layers=FUZZ_LAYERS))
    stats = np.asarray(rng.random() * np.ones((3, len(COLUMNS))), np.float32)
    return encode(Step(run=run, inc="a1", seq=seq, t=t, step=seq, loss=1.0, stats=stats))


def _classify(frames: list[bytes]) -> str:
    """What the subscriber must do with ``frames``: filtered by topic, decoded, or rejected."""
    if not frames[0].startswith(b"gt1/"):
        return "filtered"  # the SUB's prefix subscription never lets it through
    try:
        msg = decode(frames)
    except ProtocolError:
        return "malformed"
    return "clean-collision" if msg.run == "clean" else "valid"


@pytest.mark.slow
def test_fuzzed_stream_is_counted_never_crashes() -> None:
    """Guards the decoder and state under hostile input: of 100,000 messages (valid ones
    interleaved with random mutations of valid frames), every decodable one is applied,
    every rejected one is counted as malformed, and the clean run loses nothing."""
    rng = random.Random(20261204)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)  # never drop here: pacing below keeps memory small
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    fleet = Fleet()
    expect = {"valid": 0, "malformed": 0, "filtered": 0}
    clean_seq = fuzz_seq = 0
    try:
        with Subscriber([endpoint], watchdog_s=3600) as sub:
            probe = encode(Heartbeat(run="probe", inc="p", seq=0, t=0.0))

            def connected() -> bool:
                pub.send_multipart(probe)
                return bool(sub.poll(0.05))

            wait_for(connected, 10, "the connection")
            base = sub.stats[endpoint].received + sub.stats[endpoint].malformed
            applied = 0
            sent = 0
            while sent < FUZZ_TOTAL:
                for _ in range(BATCH):
                    if rng.random() < 0.3:
                        frames = _valid("clean", clean_seq, rng)
                        clean_seq += 1
                        kind = "valid"
                    else:
                        frames = _mutate(rng, _valid("fuzz", fuzz_seq, rng))
                        fuzz_seq += 1
                        kind = _classify(frames)
                        if kind == "clean-collision":  # would corrupt the clean run's seq
                            continue
                    expect[kind] += 1
                    pub.send_multipart(frames)
                    sent += 1
                want = base + expect["valid"] + expect["malformed"]
                stats = sub.stats[endpoint]
                deadline = time.monotonic() + 10
                while stats.received + stats.malformed < want and time.monotonic() < deadline:
                    got = sub.poll(0.1)
                    applied += fleet.apply_many((r.message, r.received, r.endpoint) for r in got)
                assert stats.received + stats.malformed == want, (sent, expect, stats)
            stats = sub.stats[endpoint]
            assert stats.received - 1 == expect["valid"] == applied  # minus the probe
            assert stats.malformed == expect["malformed"]
            assert stats.rebuilds == 0
    finally:
        pub.close(0)
        ctx.term()
    clean = fleet.runs["clean"]
    n_hello = (clean_seq + 49) // 50
    assert clean.counters.steps == clean_seq - n_hello
    assert clean.counters.gaps == clean.counters.duplicates == clean.counters.mismatched == 0
    assert clean.latest is not None and clean.latest.step == max(
        s for s in range(clean_seq) if s % 50
    )
    print(f"fuzz: {expect}, clean messages {clean_seq}, clean steps {clean.counters.steps}")
    assert min(expect.values()) > 1000  # the mix really exercised every path
