"""`gradtui tail` and `gradtui ls` as real subprocesses against real publishers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradtui.commands.tail import _Follower, clean, json_float, message_json, step_line
from gradtui.protocol import AnyMessage, End, Heartbeat, Hello, Step
from gradtui.publish import Publisher
from gradtui.subscribe import Received
from gradtui.synthetic import SyntheticRun, synthetic_layers

LAYERS = synthetic_layers(3)
FAKE = SyntheticRun(LAYERS, mode="vanishing")
TIMEOUT_S = 60  # a hung subprocess fails the test instead of the whole suite


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A private runtime dir shared by this process (publishers) and the CLI subprocess."""
    with tempfile.TemporaryDirectory(prefix="gt-") as tmp:
        monkeypatch.setenv("GRADTUI_RUNTIME_DIR", tmp)
        yield {**os.environ, "GRADTUI_RUNTIME_DIR": tmp}


def _gradtui(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradtui", *args]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _gradtui(*args), env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


class _Pump:
    """Publishes synthetic steps from a background thread until stopped."""

    def __init__(self, pub: Publisher, rate_s: float = 0.01) -> None:
        self.pub = pub
        self.rate_s = rate_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(self.rate_s):
            self.pub.publish_step(
                step=step, loss=FAKE.loss(step), stats=FAKE.stats(step), grad_norm=1.5
            )
            step += 1

    def __enter__(self) -> _Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _pub(name: str = "demo", **kw: Any) -> Publisher:
    return Publisher(name=name, layers=LAYERS, hello_interval=0.2, **kw)


def test_ls_with_no_runs(env: dict[str, str]) -> None:
    """Guards: `ls` on a fresh machine is not an error; --json is a valid empty array."""
    plain = _run(env, "ls")
    assert (plain.returncode, plain.stdout, plain.stderr.strip()) == (0, "", "no live runs")
    as_json = _run(env, "ls", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []


def test_ls_lists_live_runs(env: dict[str, str]) -> None:
    """Guards: a live publisher shows up with its endpoint, pid and name."""
    with _pub("alpha") as a, _pub("beta", endpoint="tcp://127.0.0.1:*") as b:
        out = _run(env, "ls", "--json")
        assert out.returncode == 0, out.stderr
        rows = {r["run"]: r for r in json.loads(out.stdout)}
        assert set(rows) == {a.run, b.run}
        assert rows[b.run]["endpoint"] == b.endpoint and rows[a.run]["pid"] == os.getpid()
        table = _run(env, "ls")
        assert table.returncode == 0
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["NAME", "RUN", "ENDPOINT", "PID", "STEP", "STARTED"]
        assert any(a.run in line and "alpha" in line for line in lines[1:])


def test_tail_json_counts_steps_with_named_layers(env: dict[str, str]) -> None:
    """Guards: --json steps carry per-layer named values, NaN as a string, and --count exits."""
    with _pub() as pub, _Pump(pub):
        out = _run(env, "tail", pub.run, "--json", "--count", "3", "--timeout", "20")
    assert out.returncode == 0, out.stderr
    objs = [json.loads(line) for line in out.stdout.splitlines()]
    steps = [o for o in objs if o["kind"] == "step"]
    assert len(steps) == 3
    first = steps[0]
    assert first["run"] == pub.run and first["grad_norm"] == 1.5 and first["lr"] == "NaN"
    assert list(first["layers"]) == [li.name for li in LAYERS]
    lin = first["layers"]["layers.0.linear"]
    assert isinstance(lin["grad_rms"], float) and lin["act_mean"] == "NaN"
    assert any(o["kind"] == "hello" for o in objs)  # steps waited for the schema


def test_tail_human_lines_and_end(env: dict[str, str]) -> None:
    """Guards: readable step lines, the hello line, and exit 0 when the run ends."""
    pub = _pub("human")
    proc = subprocess.Popen(
        _gradtui("tail", pub.endpoint, "--timeout", "20"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with _Pump(pub):
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]  # hello + steps arrive
        pub.close("crashed", "loss is NaN")
        rest, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
        pub.close()
    text = "".join(lines) + rest
    assert proc.returncode == 0, err
    assert f"{pub.run} hello name='human'" in text
    step_lines = [ln for ln in text.splitlines() if " step " in ln]
    assert step_lines and "loss " in step_lines[0] and "(layers.0.linear)" in step_lines[0]
    assert text.rstrip().endswith("reason='loss is NaN'")
    assert "end status=crashed" in text


def test_tail_all_live_runs_by_default(env: dict[str, str]) -> None:
    """Guards: `tail` with no argument follows every registered run."""
    with _pub("one") as a, _pub("two") as b, _Pump(a), _Pump(b):
        out = _run(env, "tail", "--json", "--count", "40", "--timeout", "20")
    assert out.returncode == 0, out.stderr
    runs = {json.loads(line)["run"] for line in out.stdout.splitlines()}
    assert runs == {a.run, b.run}


def test_tail_without_arguments_picks_up_new_runs(env: dict[str, str]) -> None:
    """Guards: `gradtui tail` keeps following runs that start after it did."""
    with _pub("first") as a, _Pump(a):
        proc = subprocess.Popen(
            _gradtui("tail", "--json", "--timeout", "20"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with proc:
            try:
                assert proc.stdout is not None
                assert json.loads(proc.stdout.readline())["run"] == a.run
                with _pub("second") as b, _Pump(b):
                    runs = set()
                    while b.run not in runs:  # bounded by tail's own --timeout
                        line = proc.stdout.readline()
                        assert line, proc.stderr.read() if proc.stderr else ""
                        runs.add(json.loads(line)["run"])
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=TIMEOUT_S)
            finally:
                proc.kill()
    assert proc.returncode == 0


def test_tail_unknown_run_lists_live_ones(env: dict[str, str]) -> None:
    """Guards: a typo gives one clear line naming the live runs, exit 2, no traceback."""
    with _pub("real") as pub:
        out = _run(env, "tail", "nosuchrun")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "nosuchrun" in out.stderr and pub.run in out.stderr


def test_tail_without_runs_is_an_error(env: dict[str, str]) -> None:
    """Guards: nothing to follow is reported, not waited on forever."""
    out = _run(env, "tail")
    assert out.returncode == 1 and "no live runs" in out.stderr


def test_tail_timeout_when_nothing_arrives(env: dict[str, str]) -> None:
    """Guards: --timeout exits 1 with a message when the endpoint is silent."""
    with tempfile.TemporaryDirectory(prefix="gt-") as tmp:
        out = _run(env, "tail", f"ipc://{tmp}/nobody.sock", "--timeout", "0.5")
    assert out.returncode == 1 and "no messages for 0.5 s" in out.stderr


def test_tail_ctrl_c_exits_quietly(env: dict[str, str]) -> None:
    """Guards: Ctrl-C is the normal way to stop tail: exit 0, no traceback."""
    with _pub() as pub, _Pump(pub):
        proc = subprocess.Popen(
            _gradtui("tail", pub.run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # it is running and printing
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0 and b"Traceback" not in err


def test_tail_survives_a_closed_pipe(env: dict[str, str]) -> None:
    """Guards: `gradtui tail | head -1` ends quietly instead of a BrokenPipeError trace."""
    with _pub() as pub, _Pump(pub):
        proc = subprocess.Popen(
            _gradtui("tail", pub.run, "--timeout", "20"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()
        _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0 and b"Traceback" not in err, err


def test_tail_strips_control_characters(env: dict[str, str]) -> None:
    """Guards: an ESC sequence in a run name cannot reach the terminal."""
    with _pub("evil\x1b[2Jname") as pub, _Pump(pub):
        out = _run(env, "tail", pub.endpoint, "--count", "1", "--timeout", "20")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "evil?[2Jname" in out.stdout


def test_synthetic_publisher_example(env: dict[str, str]) -> None:
    """Guards: the torch-free example publishes a finite run that tail can follow to its end."""
    example = Path(__file__).parents[2] / "examples" / "synthetic_publisher.py"
    proc = subprocess.Popen(
        [sys.executable, str(example), "--name", "ex", "--depth", "2", "--mode", "exploding",
         "--rate", "50", "--steps", "100", "--run", "ex-run"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    with proc:
        try:
            assert proc.stdout is not None
            assert "run ex-run publishing on ipc://" in proc.stdout.readline()
            out = _run(env, "tail", "ex-run", "--json", "--timeout", "20")
            proc.communicate(timeout=TIMEOUT_S)
        finally:
            proc.kill()
    assert out.returncode == 0, out.stderr
    objs = [json.loads(line) for line in out.stdout.splitlines()]
    assert objs[-1]["kind"] == "end" and objs[-1]["status"] == "finished"
    assert proc.returncode == 0


# --------------------------------------------------------------------------- in-process helpers


def _rec(msg: AnyMessage, endpoint: str = "ep") -> Received:
    return Received(endpoint, msg, 0.0)


def test_json_float_and_clean() -> None:
    """Guards: strict JSON output (no bare NaN) and control-character stripping."""
    assert [json_float(x) for x in (1.5, math.nan, math.inf, -math.inf)] == [
        1.5,
        "NaN",
        "Infinity",
        "-Infinity",
    ]
    assert clean("a\x1b[31mb\r\n") == "a?[31mb??"


def test_step_json_names_layers_only_with_a_matching_hello() -> None:
    """Guards: layer names come from the hello; a mismatched or missing schema is not guessed."""
    hello = Hello(run="r", name="n", layers=LAYERS)
    step = Step(run="r", seq=4, step=2, loss=math.nan, stats=FAKE.stats(2))
    named = message_json(step, hello, "ep", lost=3)
    assert named["lost_before"] == 3 and named["loss"] == "NaN"
    assert named["layers"]["layers.2.act"]["grad_rms"] == "NaN"
    json.dumps(named, allow_nan=False)  # strict JSON
    raw = message_json(step, None, "ep", lost=0)
    assert "layers" not in raw and "lost_before" not in raw and len(raw["stats"]) == len(LAYERS)
    other = Hello(run="r", name="n", layers=LAYERS[:2])
    assert "stats" in message_json(step, other, "ep", lost=0)


def test_step_line_reports_spread_and_nonfinite() -> None:
    """Guards: the human line names the weakest/strongest layers and flags NaN gradients."""
    hello = Hello(run="r", name="n", layers=LAYERS)
    line = step_line(Step(run="r", step=5, loss=2.0, stats=FAKE.stats(5)), hello)
    assert "min" in line and "(layers.0.linear)" in line and "(layers.2.linear)" in line
    broken = SyntheticRun(LAYERS, mode="nan", nan_after=0).stats(0)
    line = step_line(Step(run="r", step=5, loss=math.nan, stats=broken), None)
    assert "NONFINITE" in line and "loss nan" in line


def test_follower_counts_gaps_per_incarnation_and_ends() -> None:
    """Guards: seq gaps are per (run, inc); tail exits only when every endpoint has ended."""
    f = _Follower(["a", "b"])
    assert f.observe(_rec(Heartbeat(run="r", inc="1", seq=0), "a")) == 0
    assert f.observe(_rec(Heartbeat(run="r", inc="1", seq=4), "a")) == 3
    assert f.observe(_rec(Heartbeat(run="r", inc="2", seq=0), "a")) == 0  # restart: no gap
    assert f.observe(_rec(Heartbeat(run="r", inc="1", seq=2), "a")) == 0  # late duplicate
    f.observe(_rec(End(run="r", inc="1", seq=5, status="finished"), "a"))
    f.observe(_rec(End(run="r", inc="2", seq=1, status="finished"), "a"))
    assert not f.all_ended()  # b has said nothing yet
    f.observe(_rec(End(run="s", seq=9, status="crashed"), "b"))
    assert f.all_ended()
