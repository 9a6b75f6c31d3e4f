"""Recording benchmarks: write throughput, and time to a first frame of a huge recording.

    .venv/bin/python benchmarks/record.py                 # 100,000 steps x 100 layers
    .venv/bin/python benchmarks/record.py --steps 20000   # quicker

1. Throughput: steps/s of 100-layer messages through ``RunRecorder`` (enqueue to commit;
   the producer waits whenever 5,000 messages are pending, so nothing is dropped), and
   the caller's cost per message (what a publisher's sender thread pays).
2. First frame: a fresh process opens the recording and reads what a dashboard's first
   frame needs: the run list, every step's scalars, the latest 300 matrices and a 512-point
   overview. Measured in a subprocess so imports and a cold Python are included (the OS
   page cache is warm: the file was just written).
Targets: >= 5,000 steps/s; first frame < 2 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gradtui.protocol import COLUMNS, Hello, LayerInfo, Step
from gradtui.storage import RunRecorder

FIRST_FRAME = """
import json, sys, time
t0 = time.perf_counter()
from gradtui.storage import open_recording
t_import = time.perf_counter()
rec = open_recording(sys.argv[1])
run = rec.runs[0]
t_open = time.perf_counter()
scalars = run.scalars()
t_scalars = time.perf_counter()
steps, tail = run.tail(300)
t_tail = time.perf_counter()
osteps, overview = run.overview(512)
t_end = time.perf_counter()
assert len(scalars["loss"]) == run.steps and tail.shape[0] == 300 and overview.shape[0] == 512
print(json.dumps({
    "import_s": t_import - t0, "open_s": t_open - t_import, "scalars_s": t_scalars - t_open,
    "tail300_s": t_tail - t_scalars, "overview512_s": t_end - t_tail, "total_s": t_end - t0,
    "steps": run.steps,
}))
"""


def write(path: Path, steps: int, layers: int) -> dict[str, float]:
    infos = tuple(
        LayerInfo(name=f"blocks.{i}.fc", kind="Linear", role="param") for i in range(layers)
    )
    rng = np.random.default_rng(0)
    matrices = [rng.random((layers, len(COLUMNS)), dtype=np.float32) for _ in range(64)]
    msgs = [
        Step(run="bench", seq=i + 1, t=float(i), step=i, loss=1.0, stats=matrices[i % 64])
        for i in range(steps)
    ]
    rec = RunRecorder(path)
    t0 = time.perf_counter()
    rec(Hello(run="bench", seq=0, t=0.0, name="bench", layers=infos))
    calls = 0.0
    for msg in msgs:
        while rec.pending > 5_000:  # a producer faster than the disk: wait, never drop
            time.sleep(0.0005)
        c0 = time.perf_counter()
        rec(msg)
        calls += time.perf_counter() - c0
    assert rec.close(600) and rec.error is None and rec.dropped == 0
    t_done = time.perf_counter()
    return {
        "steps": steps,
        "layers": layers,
        "write_s": t_done - t0,
        "steps_per_s": steps / (t_done - t0),
        "enqueue_us_per_msg": calls / steps * 1e6,
        "file_mb": path.stat().st_size / 2**20,
        "bytes_per_step": path.stat().st_size / steps,
    }


def first_frame(path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_FRAME, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="first-frame measurements")
    parser.add_argument("--keep", metavar="FILE", help="write the recording here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "bench.sqlite"
        path.unlink(missing_ok=True)
        w = write(path, args.steps, args.layers)
        print(
            f"write: {w['steps']} steps x {w['layers']} layers in {w['write_s']:.2f} s ="
            f" {w['steps_per_s']:,.0f} steps/s (target >= 5,000); caller"
            f" {w['enqueue_us_per_msg']:.2f} us/msg; file {w['file_mb']:.0f} MiB"
            f" ({w['bytes_per_step']:,.0f} B/step)"
        )
        frames = [first_frame(path) for _ in range(args.repeat)]
        best = min(frames, key=lambda f: f["total_s"])
        worst = max(f["total_s"] for f in frames)
        print(
            f"first frame (fresh process, warm page cache): best {best['total_s']:.3f} s,"
            f" worst {worst:.3f} s (target < 2 s); best breakdown: import"
            f" {best['import_s']:.3f}, open {best['open_s']:.3f}, scalars"
            f" {best['scalars_s']:.3f}, tail(300) {best['tail300_s']:.3f}, overview(512)"
            f" {best['overview512_s']:.3f}"
        )
        print(json.dumps({"write": w, "first_frame": frames}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
