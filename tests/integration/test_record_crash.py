"""Crash consistency of the recorder with real processes, and recording a real publisher."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gradtui.publish import Publisher
from gradtui.storage import RunRecorder, open_recording
from gradtui.synthetic import synthetic_layers

# A writer that records 100-layer steps as fast as it can without dropping any, printing
# the committed count after every commit (the recorder's only acknowledgement).
WRITER = """
import sys, time
import numpy as np
from gradtui.protocol import Hello, LayerInfo, Step
from gradtui.storage import RunRecorder

def report(n):
    print(n, flush=True)

rec = RunRecorder(sys.argv[1], batch_messages=100, batch_seconds=0.02, on_commit=report)
layers = tuple(LayerInfo(name=f"l{i}", kind="Linear", role="param") for i in range(100))
rec(Hello(run="crash", seq=0, t=0.0, name="crash", layers=layers))
m = np.ones((100, 11), np.float32)
i = 0
while True:
    if rec.pending > 1000:  # stay under the queue bound: no drops, so seqs stay contiguous
        time.sleep(0.001)
        continue
    i += 1
    rec(Step(run="crash", seq=i, t=float(i), step=i - 1, loss=1.0, stats=m * i))
"""


def _lines(proc: subprocess.Popen[str], out: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line)


@pytest.mark.parametrize("commits", [1, 4, 45])
def test_kill_9_loses_nothing_committed(tmp_path: Path, commits: int) -> None:
    """A writer killed with SIGKILL mid-run leaves a readable file holding every step it
    reported committed (at most its last, uncommitted batch is missing)."""
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc, lines), daemon=True)
    reader.start()
    reported: list[int] = []
    try:
        while len(reported) < commits:
            reported.append(int(lines.get(timeout=30)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)  # EOF once the process is gone
        assert proc.stdout is not None
        proc.stdout.close()
    # Lines still in the pipe were printed after their commit, before the kill: count them.
    while not lines.empty():
        reported.append(int(lines.get_nowait()))
    acked = max(reported)
    assert acked >= 100
    with open_recording(path) as rec:
        (run,) = rec.runs
        assert run.hello is not None and run.hello.name == "crash" and run.end is None
        seqs = run.scalars()["seq"]
        # Messages 0 (hello) .. acked-1 were acknowledged: steps with seq 1 .. acked-1.
        assert seqs[: acked - 1].tolist() == list(range(1, acked))
        assert run.gaps() == []
        steps, stack = run.tail(1)
        assert np.all(stack[0] == np.float32(steps[0] + 1))  # last row intact, not torn


def test_publisher_sink_records_the_run(tmp_path: Path) -> None:
    """A RunRecorder given to a real Publisher as a sink records hello, every step and end."""
    layers = synthetic_layers(4)
    rec = RunRecorder(tmp_path / "runs")
    pub = Publisher(
        name="sinktest",
        layers=layers,
        endpoint="tcp://127.0.0.1:*",
        register=False,
        sinks=[rec],
    )
    rows = len(layers)
    cols = 11
    for i in range(50):
        pub.publish_step(step=i, loss=1.0 / (i + 1), stats=np.full((rows, cols), i, np.float32))
    pub.close("finished", timeout=5)
    assert rec.close(10) and rec.error is None
    (path,) = rec.paths
    assert path.parent == tmp_path / "runs" and path.name.endswith(f"-sinktest-{pub.run}.sqlite")
    with open_recording(path) as r:
        (run,) = r.runs
        assert run.run == pub.run and run.inc == pub.inc and run.steps == 50
        assert run.end is not None and run.end.status == "finished"
        steps, stack = run.stats()
        assert steps.tolist() == list(range(50)) and np.all(stack[7] == 7)
        assert run.gaps() == []


def test_interpreter_exit_without_close_commits_the_queue(tmp_path: Path) -> None:
    """A script that forgets close() must still get its queued messages committed at exit."""
    path = tmp_path / "exit.sqlite"
    code = (
        "import sys, numpy as np\n"
        "from gradtui.protocol import Step\n"
        "from gradtui.storage import RunRecorder\n"
        "rec = RunRecorder(sys.argv[1], batch_seconds=60)\n"
        "m = np.zeros((2, 2), np.float32)\n"
        "for i in range(10):\n"
        "    rec(Step(run='x', seq=i, t=0.0, step=i, loss=0.0, stats=m))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path)],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    with open_recording(path) as rec:
        assert rec.runs[0].steps == 10
