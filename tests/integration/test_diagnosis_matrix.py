"""The diagnosis matrix: real trainer subprocesses, read over real ZeroMQ, judged by the engine.

Three runs start at once (torch's import dominates; overlapping it keeps the matrix short) and
one ``Subscriber`` reads all three endpoints. Steps that arrive before the run's ``hello``
(slow joiner, DESIGN §8) are kept and applied after it, in sequence order, so every received
step is judged with the real layer names. Measured results: ``docs/diagnosis.md``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gradtui.alerts import Alert, AlertEngine
from gradtui.cli import main
from gradtui.protocol import End, Hello, Step
from gradtui.report import summarize
from gradtui.state import Fleet
from gradtui.storage import RunRecorder, open_recording
from gradtui.subscribe import Subscriber

# Three trainers on a 2-core box: ~60 s when the box is busy; the default 120 s is too tight.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--width", "32", "--batch-size", "32", "--seed", "1", "--quiet", "--no-record"]
MATRIX: dict[str, list[str]] = {
    "sigmoid": ["--depth", "20", "--act", "sigmoid", "--steps", "300"],
    "fixed": ["--depth", "20", "--act", "relu", "--bn", "--residual", "--steps", "500"],
    # Residual + BN at --lr 2: the norm grows ~10x per 10 steps, passes 1e3 near step 24 and
    # the loss turns NaN near step 107 (seed 1): a slow blow-up the viewer can watch.
    "blowup": [
        "--depth",
        "20",
        "--act",
        "relu",
        "--bn",
        "--residual",
        "--lr",
        "2",
        "--steps",
        "300",
    ],
}
DEADLINE_S = 240.0


@dataclass
class Outcome:
    """One trainer run as the viewer saw it, replayed through a fresh engine."""

    returncode: int = -1
    stderr: str = ""
    hello: Hello | None = None
    steps: dict[int, Step] = field(default_factory=dict)
    """Received steps by seq (duplicates collapse)."""
    end: End | None = None
    alerts: list[Alert] = field(default_factory=list)
    fired_at: dict[str, int] = field(default_factory=dict)
    """Rule -> index (0-based) among the received steps at which it first became active."""
    recordings: Path | None = None
    """Directory where every run's received stream was recorded (one file per run)."""

    @property
    def rules(self) -> set[str]:
        return {a.rule for a in self.alerts}


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _bound(endpoint: str) -> bool:
    """True once a trainer listens on ``endpoint``: connecting only then skips the SUB's
    reconnect back-off (up to 2 s of lost steps while torch imports)."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.05):
            return True
    except OSError:
        return False


def _judge(out: Outcome) -> None:
    """Hello first, then every received step in seq order, through a real Fleet + engine."""
    assert out.hello is not None, f"no hello received; trainer stderr: {out.stderr[-500:]}"
    fleet = Fleet(observer_factory=AlertEngine)
    # seq -1: steps that arrived before the hello (a re-send, later seq) must not be
    # mistaken for replays by the run state's sequence check.
    fleet.apply(dataclasses.replace(out.hello, seq=-1), now=0.0)
    state = fleet.runs[out.hello.run]
    engine = state.observer
    assert isinstance(engine, AlertEngine)
    for index, seq in enumerate(sorted(out.steps)):
        fleet.apply(out.steps[seq], now=0.0)
        for alert in engine.active:
            out.fired_at.setdefault(alert.rule, index)
    if out.end is not None:
        fleet.apply(out.end, now=0.0)
    assert state.counters.mismatched == state.counters.duplicates == 0
    assert state.counters.steps == len(out.steps)
    out.alerts = engine.history


def _summary(out: Outcome) -> str:
    seqs = sorted(out.steps)
    first = out.steps[seqs[0]].step if seqs else -1
    last = out.steps[seqs[-1]].step if seqs else -1
    alerts = "; ".join(
        f"{a.rule} {a.first_step}-{a.last_step} (after {out.fired_at.get(a.rule, -1) + 1} "
        f"received steps) worst={a.worst:.3g}"
        for a in out.alerts
    )
    status = out.end.status if out.end is not None else "no end"
    return f"rc={out.returncode} {status}; steps {first}..{last} ({len(seqs)} received); " + (
        alerts or "no alerts"
    )


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GRADTUI_RUNTIME_DIR": str(tmp_path_factory.mktemp("runtime")),
    }
    endpoints = {name: _free_endpoint() for name in MATRIX}
    outcomes = {name: Outcome() for name in MATRIX}
    by_endpoint = {ep: outcomes[name] for name, ep in endpoints.items()}
    recordings = tmp_path_factory.mktemp("recordings")
    recorder = RunRecorder(recordings)  # the same stream, for the report test
    sub = Subscriber()
    waiting = set(endpoints.values())
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "trainer", *args, *SMALL, "--endpoint", endpoints[name]],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in MATRIX.items()
    }
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for endpoint in [ep for ep in waiting if _bound(ep)]:
                sub.add(endpoint)
                waiting.discard(endpoint)
            for got in sub.poll(0.05 if waiting else 0.2):
                out, msg = by_endpoint[got.endpoint], got.message
                recorder(msg)
                if isinstance(msg, Hello):
                    out.hello = out.hello or msg
                elif isinstance(msg, Step):
                    out.steps.setdefault(msg.seq, msg)
                elif isinstance(msg, End):
                    out.end = msg
            if all(o.end is not None for o in outcomes.values()):
                break
            if all(p.poll() is not None for p in procs.values()):
                sub.poll(0.5)  # the last messages after the processes exited
                break
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=60)
            outcomes[name].returncode, outcomes[name].stderr = proc.returncode, err
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        sub.close()
        recorder.close()
    assert recorder.dropped == 0
    for name, out in outcomes.items():
        out.recordings = recordings
        _judge(out)
        print(f"\n[matrix] {name}: {_summary(out)}")  # shown with -s; recorded in the docs
    yield outcomes


def test_deep_sigmoid_flags_vanishing_within_50_steps(matrix: dict[str, Outcome]) -> None:
    """Guards the headline diagnosis: depth-20 sigmoid is called vanishing, and quickly."""
    out = matrix["sigmoid"]
    assert "vanishing" in out.rules, out.alerts
    assert out.fired_at["vanishing"] < 50, out.fired_at
    alert = next(a for a in out.alerts if a.rule == "vanishing")
    assert "blocks.0.linear" in alert.layers
    assert "--act relu" in alert.remedy
    assert out.rules <= {"vanishing", "saturated", "stalled_updates"}, out.alerts


def test_relu_bn_residual_raises_nothing_in_500_steps(matrix: dict[str, Outcome]) -> None:
    """Guards against false alarms: the fixed network must stay silent for its whole run."""
    out = matrix["fixed"]
    assert out.returncode == 0, out.stderr[-500:]
    assert len(out.steps) > 300, "most of the run must have been judged"
    assert out.alerts == [], [(a.rule, a.first_step, a.message) for a in out.alerts]


def test_learning_rate_blow_up_flags_exploding_and_nonfinite(matrix: dict[str, Outcome]) -> None:
    """Guards the blow-up path: exploding is flagged, then the non-finite crash."""
    out = matrix["blowup"]
    assert {"exploding", "nonfinite"} <= out.rules, out.alerts
    nonfinite = next(a for a in out.alerts if a.rule == "nonfinite")
    exploding = next(a for a in out.alerts if a.rule == "exploding")
    assert nonfinite.severity == exploding.severity == "critical"
    assert exploding.first_step <= nonfinite.first_step
    assert out.end is not None and out.end.status == "crashed"
    assert out.returncode == 1


def test_report_on_the_recorded_runs_agrees(
    matrix: dict[str, Outcome], capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards report against real recordings: same verdicts as live, and the CI exit code."""
    folder = matrix["fixed"].recordings
    assert folder is not None
    names = {out.hello.run: name for name, out in matrix.items() if out.hello is not None}
    with open_recording(folder) as rec:
        verdicts = {names[run.run]: summarize(run) for run in rec.runs}
    assert verdicts["sigmoid"].verdict.startswith("VANISHING GRADIENTS")
    assert verdicts["fixed"].verdict.startswith("HEALTHY")
    assert verdicts["blowup"].verdict.startswith("BLEW UP")
    for name, rep in verdicts.items():
        live = [(a.rule, a.first_step, a.last_step) for a in matrix[name].alerts]
        assert [(a.rule, a.first_step, a.last_step) for a in rep.alerts] == live
    assert main(["report", str(folder), "--fail-on", "nonfinite"]) == 3
    assert "BLEW UP" in capsys.readouterr().out
