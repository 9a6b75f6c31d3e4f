"""Viewer throughput benchmark: torch-free publishers flood ``GradApp`` with 100-layer steps.

For each target rate (msg/s, split over ``--runs`` publishers in a child process) the real
dashboard (headless Textual, 160x48, the real Subscriber thread, alert engine on) receives for
``--duration`` seconds. Reported per rate: achieved ingest rate, publish-to-state latency
p50/p99 (apply time minus the message's ``t``), the UI message queue (max), frames painted per
second, viewer CPU (% of one core) and RSS at start/end of the level, and messages lost (seq gaps).
Then the time from process start to the first painted frame, in a fresh process.

    .venv/bin/python benchmarks/viewer.py                      # 1k 5k 10k 20k, 10 s each
    .venv/bin/python benchmarks/viewer.py --rates 20000 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

LAYERS = 100
WARMUP_S = 2.0


# ----------------------------------------------------------------------------- publisher child


def publish(rate: float, duration: float, runs: int) -> None:
    """Child process: ``runs`` raw PUB sockets sending paced step messages; prints endpoints."""
    import zmq

    from gradtui.protocol import COLUMNS, Hello, Step, encode
    from gradtui.synthetic import SyntheticRun, synthetic_layers

    layers = synthetic_layers(LAYERS // 2)
    stats = SyntheticRun(layers, mode="vanishing").stats(10)
    ctx = zmq.Context()
    socks = []
    for _ in range(runs):
        s = ctx.socket(zmq.PUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        socks.append((s, f"tcp://127.0.0.1:{port}"))
    print(json.dumps([ep for _, ep in socks]), flush=True)
    assert len(COLUMNS) == stats.shape[1]
    seqs = [0] * runs
    hellos_at = 0.0
    # Runs until the parent's SIGTERM (after its measurement window, however late that starts),
    # with a hard stop in case the parent died.
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    start = time.perf_counter()
    end = start + WARMUP_S + duration + 120
    sent = 0
    while not stop:
        now = time.perf_counter()
        if now >= end:
            break
        if now >= hellos_at:  # re-sent: the viewer's SUB joins late (slow joiner)
            hellos_at = now + 0.5
            for k, (s, _) in enumerate(socks):
                h = Hello(
                    run=f"bench{k}",
                    inc="b",
                    seq=seqs[k],
                    t=time.time(),
                    name=f"bench-{k}",
                    layers=layers,
                )
                seqs[k] += 1
                s.send_multipart(encode(h))
        due = int((now - start) * rate) - sent
        if due <= 0:
            time.sleep(0.001)
            continue
        for _ in range(min(due, 2000)):
            k = sent % runs
            s, _ = socks[k]
            msg = Step(
                run=f"bench{k}",
                inc="b",
                seq=seqs[k],
                t=time.time(),
                step=seqs[k],
                loss=1.0,
                stats=stats,
                grad_norm=1.0,
            )
            seqs[k] += 1
            s.send_multipart(encode(msg), copy=False)
            sent += 1
    for s, _ in socks:
        s.close()
    ctx.term()
    print(json.dumps({"sent": sent, "rate": sent / (time.perf_counter() - start)}), flush=True)


# ----------------------------------------------------------------------------- viewer side


async def measure(rate: float, duration: float, runs: int, alerts: bool) -> dict[str, Any]:
    import psutil

    from gradtui.alerts import AlertEngine
    from gradtui.state import Fleet
    from gradtui.tui.app import GradApp
    from gradtui.tui.live_source import LiveSource

    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(rate), str(duration), str(runs)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    endpoints = json.loads(child.stdout.readline())
    fleet = Fleet(observer_factory=AlertEngine if alerts else None)
    app = GradApp(fleet, [LiveSource(endpoints)], fps=12, measure_latency=True)
    proc = psutil.Process()
    result: dict[str, Any] = {"target": rate}
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(WARMUP_S)
        app.receiver.stats.latencies.clear()
        gaps0 = sum(r.counters.gaps for r in fleet.runs.values())
        received0, frames0 = fleet.received, app.frames
        wire0 = sum(h.received for h in app.receiver.health())
        shed0 = app.receiver.stats.shed
        rss0 = proc.memory_info().rss
        proc.cpu_percent()
        t0 = time.perf_counter()
        max_queue = 0
        while time.perf_counter() - t0 < duration:
            await pilot.pause(0.05)
            max_queue = max(max_queue, app._message_queue.qsize())
        elapsed = time.perf_counter() - t0
        cpu = proc.cpu_percent()
        applied = fleet.received - received0
        wire = sum(h.received for h in app.receiver.health()) - wire0
        lat = np.array(app.receiver.stats.latencies, dtype=np.float64)
        with fleet.lock:
            gaps = sum(r.counters.gaps for r in fleet.runs.values()) - gaps0
        result.update(
            ingest=wire / elapsed,
            applied=applied / elapsed,
            shed=app.receiver.stats.shed - shed0,
            p50_ms=float(np.percentile(lat, 50) * 1e3) if len(lat) else math.nan,
            p99_ms=float(np.percentile(lat, 99) * 1e3) if len(lat) else math.nan,
            max_ui_queue=max_queue,
            fps=(app.frames - frames0) / elapsed,
            cpu_pct=cpu,
            rss0_mb=rss0 / 2**20,
            rss1_mb=proc.memory_info().rss / 2**20,
            lost=max(0, gaps - (app.receiver.stats.shed - shed0)),
            max_batch=app.receiver.stats.max_batch,
        )
        await pilot.press("q")
    child.terminate()
    tail = child.communicate(timeout=30)[0].strip().splitlines()
    result["sent"] = json.loads(tail[-1])["rate"] if tail else math.nan
    return result


def first_frame_child() -> None:
    """Fresh process: import, build and mount the app, report the wall time of the first paint.

    The parent subtracts the time it spawned this process, so interpreter start counts.
    """

    async def run() -> float:
        from gradtui.state import Fleet
        from gradtui.tui.app import GradApp

        app = GradApp(Fleet(), [])
        async with app.run_test(size=(160, 48)) as pilot:
            while app.first_paint is None:
                await pilot.pause(0.005)
            painted = time.time()
            await pilot.press("q")
        return painted

    print(json.dumps({"painted_at": asyncio.run(run())}), flush=True)


def first_frame() -> float:
    # Spawn to first frame of a fresh interpreter (cold imports), best of three.
    best = math.inf
    for _ in range(3):
        spawned = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--first-frame-child"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        painted = float(json.loads(out.strip().splitlines()[-1])["painted_at"])
        best = min(best, painted - spawned)
    return best


def pipeline_costs() -> None:
    """CPU cost per message of each receive stage, single-threaded (load-independent-ish)."""
    from gradtui.alerts import AlertEngine
    from gradtui.protocol import Hello, Step, decode, encode
    from gradtui.state import Fleet
    from gradtui.synthetic import SyntheticRun, synthetic_layers

    layers = synthetic_layers(LAYERS // 2)
    stats = SyntheticRun(layers, mode="vanishing").stats(10)
    n = 5000
    msgs = [
        Step(run="r", inc="a", seq=i + 1, t=0.0, step=i, loss=1.0, stats=stats) for i in range(n)
    ]
    frames = [encode(m) for m in msgs]
    t = time.process_time()
    for f in frames:
        decode(f)
    print(f"  decode        {(time.process_time() - t) / n * 1e6:7.1f} us/msg CPU")
    for label, factory in (("apply", None), ("apply+alerts", AlertEngine)):
        fleet = Fleet(observer_factory=factory)
        fleet.apply(Hello(run="r", inc="a", seq=0, t=0.0, name="r", layers=layers), 0.0)
        t = time.process_time()
        fleet.apply_many((m, 0.0, "x") for m in msgs)
        print(f"  {label:13s} {(time.process_time() - t) / n * 1e6:7.1f} us/msg CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=4, help="publishers (one PUB socket each)")
    parser.add_argument("--no-alerts", action="store_true", help="no AlertEngine per run")
    args = parser.parse_args()
    print(
        f"viewer benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, {LAYERS} layers, {args.runs} publishers, {args.duration:g} s, "
        f"alerts {'off' if args.no_alerts else 'on'}, load {os.getloadavg()[0]:.1f}"
    )
    header = (
        "target",
        "sent",
        "ingest",
        "applied",
        "shed",
        "p50_ms",
        "p99_ms",
        "max_ui_queue",
        "fps",
        "cpu_pct",
        "rss0_mb",
        "rss1_mb",
        "lost",
        "max_batch",
    )
    print(" ".join(f"{h:>12}" for h in header))
    for rate in args.rates:
        r = asyncio.run(measure(rate, args.duration, args.runs, not args.no_alerts))
        print(
            " ".join(
                f"{r[h]:>12.1f}" if isinstance(r[h], float) else f"{r[h]:>12}" for h in header
            ),
            flush=True,
        )
    print(f"first frame: {first_frame():.3f} s from spawn (best of 3; imports + mount + paint)")
    print("pipeline cost (100-layer step, one thread):")
    pipeline_costs()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        publish(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--first-frame-child":
        first_frame_child()
    else:
        main()
