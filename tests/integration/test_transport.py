"""Publisher and Subscriber over real ZeroMQ sockets (tcp loopback and ipc)."""

from __future__ import annotations

import itertools
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from gradtui import registry
from gradtui import subscribe as subscribe_mod
from gradtui.endpoints import EndpointError
from gradtui.protocol import (
    AnyMessage,
    End,
    Heartbeat,
    Hello,
    ProtocolError,
    Step,
    decode,
    encode,
)
from gradtui.publish import Publisher
from gradtui.subscribe import Received, Subscriber
from gradtui.synthetic import SyntheticRun, synthetic_layers

LAYERS = synthetic_layers(3)
FAKE = SyntheticRun(LAYERS, mode="vanishing")
WAIT_S = 20.0  # generous: the suite shares 2 cores with other test runs


@pytest.fixture(autouse=True)
def rt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Private runtime dir per test (short path: ipc socket paths are limited)."""
    with tempfile.TemporaryDirectory(prefix="gt-") as tmp:
        monkeypatch.setenv("GRADTUI_RUNTIME_DIR", tmp)
        yield Path(tmp)


def _publisher(**kw: object) -> Publisher:
    args: dict[str, object] = {
        "name": "t",
        "layers": LAYERS,
        "endpoint": "tcp://127.0.0.1:*",
        "hello_interval": 0.05,
        "heartbeat_interval": 0.05,
    }
    args.update(kw)
    return Publisher(**args)  # type: ignore[arg-type]


def _collect_until(
    sub: Subscriber,
    done: Callable[[list[Received]], bool],
    pump: Callable[[], object] | None = None,
) -> list[Received]:
    """Poll (pumping the publisher) until ``done`` or the generous deadline."""
    got: list[Received] = []
    deadline = time.monotonic() + WAIT_S
    while not done(got):
        assert time.monotonic() < deadline, f"timed out; got kinds {[r.message.kind for r in got]}"
        if pump is not None:
            pump()
        got.extend(sub.poll(0.02))
    return got


def _kinds(got: list[Received]) -> set[str]:
    return {r.message.kind for r in got}


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:*", None], ids=["tcp", "ipc"])
def test_loopback_pub_sub_round_trip(endpoint: str | None) -> None:
    """Guards: steps and hello cross a real socket intact, seq increasing, end on close."""
    pub = _publisher(endpoint=endpoint)
    counter = iter(range(10**6))

    def pump() -> None:
        step = next(counter)
        pub.publish_step(step=step, loss=FAKE.loss(step), stats=FAKE.stats(step), lr=0.1)

    with Subscriber([pub.endpoint]) as sub:
        got = _collect_until(
            sub,
            lambda g: "hello" in _kinds(g) and sum(r.message.kind == "step" for r in g) >= 5,
            pump,
        )
        assert pub.endpoint.startswith("tcp://127.0.0.1:" if endpoint else "ipc://")
        hello = next(r.message for r in got if isinstance(r.message, Hello))
        assert hello.run == pub.run and hello.inc == pub.inc and hello.layers == LAYERS
        steps = [r.message for r in got if isinstance(r.message, Step)]
        for s in steps:
            np.testing.assert_array_equal(s.stats, FAKE.stats(s.step))
            assert s.lr == 0.1 and s.run == pub.run
        seqs = [r.message.seq for r in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert sub.stats[pub.endpoint].received == len(got)
        pub.close("finished")
        got = _collect_until(sub, lambda g: "end" in _kinds(g))
        end = got[-1].message
        assert isinstance(end, End) and end.status == "finished" and end.step >= steps[-1].step


def test_ipc_default_registers_and_cleans_up(rt: Path) -> None:
    """Guards: default endpoint is a private ipc socket in the runtime dir, listed while live."""
    pub = Publisher(name="my run/1", layers=LAYERS)
    try:
        assert pub.endpoint == f"ipc://{rt / (pub.run + '.sock')}"
        assert pub.run.startswith("my-run-1-")
        (entry,) = registry.list_runs()
        assert (entry.run, entry.name, entry.endpoint) == (pub.run, "my run/1", pub.endpoint)
        assert (rt.stat().st_mode & 0o777) == 0o700
    finally:
        pub.close()
    assert registry.list_runs() == []
    assert not (rt / f"{pub.run}.sock").exists()


def test_registry_step_refreshed(rt: Path) -> None:
    """Guards: `gradtui ls` shows a live run's progress (refreshed about once a second)."""
    with _publisher() as pub:
        pub.publish_step(step=7, loss=1.0, stats=FAKE.stats(0))
        deadline = time.monotonic() + WAIT_S
        while registry.list_runs()[0].step != 7:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_publish_step_never_blocks_without_subscriber() -> None:
    """Guards: a flood with no reader returns promptly and counts its drops (DESIGN §2)."""
    with _publisher(queue_size=16) as pub:
        stats = FAKE.stats(0)
        t0 = time.perf_counter()
        results = [pub.publish_step(step=i, loss=1.0, stats=stats) for i in range(10_000)]
        elapsed = time.perf_counter() - t0
        assert elapsed < 10.0  # ~50 ms normally; only a blocking send would approach this
        assert not all(results) and pub.dropped == results.count(False) > 0


def test_publish_step_never_blocks_with_stalled_subscriber() -> None:
    """Guards: a subscriber that never reads cannot stall training (PUB drops at HWM)."""
    pub = _publisher(queue_size=64)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 1024)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    try:
        stats = FAKE.stats(0)
        t0 = time.perf_counter()
        for i in range(10_000):
            pub.publish_step(step=i, loss=1.0, stats=stats)
        assert time.perf_counter() - t0 < 10.0
        pub.close(timeout=2.0)
        assert not pub._thread.is_alive()  # close is bounded even with a stalled peer
    finally:
        sub.close(0)
        ctx.term()
        pub.close()


def test_callers_array_may_be_reused_at_once() -> None:
    """Guards: publish_step copies stats; mutating the buffer after return changes nothing."""
    seen: list[AnyMessage] = []
    with _publisher(sinks=[seen.append]) as pub:
        buf = np.ones((len(LAYERS), 11), dtype=np.float32)
        assert pub.publish_step(step=0, loss=1.0, stats=buf)
        buf[:] = -5.0
    (step,) = [m for m in seen if isinstance(m, Step)]
    assert np.all(step.stats == 1.0)


def test_bad_input_is_dropped_not_raised() -> None:
    """Guards: a wrong-shaped matrix or junk never raises into the training loop."""
    with _publisher() as pub:
        assert not pub.publish_step(step=0, loss=1.0, stats=np.zeros((2, 2), np.float32))
        assert not pub.publish_step(step=-1, loss=1.0, stats=FAKE.stats(0))
        assert not pub.publish_step(step=1, loss="x", stats=FAKE.stats(0))  # type: ignore[arg-type]
        assert pub.dropped == 3
    assert not pub.publish_step(step=2, loss=1.0, stats=FAKE.stats(0))  # after close


def test_sinks_see_every_message_in_seq_order() -> None:
    """Guards: the recorder sink gets hello, steps, heartbeats and end with contiguous seq."""
    seen: list[AnyMessage] = []
    pub = _publisher(sinks=[seen.append])
    for i in range(20):
        assert pub.publish_step(step=i, loss=float(i), stats=FAKE.stats(i), grad_norm=2.0)
    time.sleep(0.15)  # let heartbeats fire (interval 0.05 s); no assertion on timing
    pub.close("crashed", "boom")
    assert [m.seq for m in seen] == list(range(len(seen)))
    assert isinstance(seen[0], Hello)
    assert [m.step for m in seen if isinstance(m, Step)] == list(range(20))
    assert any(isinstance(m, Heartbeat) for m in seen)
    assert isinstance(seen[-1], End) and (seen[-1].status, seen[-1].reason) == ("crashed", "boom")
    assert {m.inc for m in seen} == {pub.inc} and pub.sent == len(seen)
    for m in seen:  # what sinks get is exactly what went on the wire
        assert decode(encode(m)).seq == m.seq


def test_sink_errors_counted_not_propagated() -> None:
    """Guards: a broken recorder must not stop the telemetry or the other sinks."""
    good: list[AnyMessage] = []

    def bad(_: AnyMessage) -> None:
        raise RuntimeError("disk full")

    with _publisher(sinks=[bad, good.append]) as pub:
        for i in range(5):
            pub.publish_step(step=i, loss=1.0, stats=FAKE.stats(i))
    assert pub.sink_errors == len(good) >= 7  # hello + 5 steps + end at least
    assert isinstance(good[-1], End)


def test_heartbeat_carries_phase_and_last_step() -> None:
    """Guards: viewers tell a quiet (eval) run from a dead one."""
    seen: list[AnyMessage] = []
    with _publisher(sinks=[seen.append]) as pub:
        pub.publish_step(step=3, loss=1.0, stats=FAKE.stats(0))
        pub.set_phase("eval")
        deadline = time.monotonic() + WAIT_S
        while not any(isinstance(m, Heartbeat) and m.phase == "eval" for m in list(seen)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    beat = next(m for m in seen if isinstance(m, Heartbeat) and m.phase == "eval")
    assert isinstance(beat, Heartbeat) and beat.step == 3


def test_context_manager_reports_crash_and_interrupt() -> None:
    """Guards: an exception in the training loop ends the run as crashed/interrupted."""
    seen: list[AnyMessage] = []
    with pytest.raises(ValueError), _publisher(sinks=[seen.append]):
        raise ValueError("bad batch")
    end = seen[-1]
    assert isinstance(end, End) and end.status == "crashed" and "bad batch" in end.reason
    seen.clear()
    with pytest.raises(KeyboardInterrupt), _publisher(sinks=[seen.append]):
        raise KeyboardInterrupt
    assert isinstance(seen[-1], End) and seen[-1].status == "interrupted"


def test_close_is_idempotent_and_new_incarnation_differs() -> None:
    """Guards: double close is harmless; a restarted run gets a new incarnation."""
    a = _publisher(run="same-run")
    a.close()
    a.close()
    b = _publisher(run="same-run")
    b.close()
    assert a.run == b.run and a.inc != b.inc


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://0.0.0.0:0",
        "tcp://*:0",
        "tcp://192.168.1.10:5555",
        "tcp://example.com:5555",
        "inproc://x",
        "udp://127.0.0.1:5",
        "tcp://127.0.0.1:99999",
        "tcp://127.0.0.1",
        "ipc://",
        "ipc:///tmp/" + "x" * 200,
    ],
)
def test_refused_endpoints(endpoint: str) -> None:
    """Guards: nothing binds beyond loopback (no auth yet); malformed ones fail clearly."""
    with pytest.raises(EndpointError):
        _publisher(endpoint=endpoint, register=False)


def test_random_port_forms_and_port_in_use() -> None:
    """Guards: `:*`/`:0`/localhost report the real port; a taken port is a clear error."""
    with (
        _publisher(endpoint="tcp://localhost:0") as a,
        _publisher(endpoint="tcp://127.0.0.1:*") as b,
    ):
        for pub in (a, b):
            assert pub.endpoint.startswith("tcp://127.0.0.1:")
            assert int(pub.endpoint.rsplit(":", 1)[1]) > 0
        with pytest.raises(EndpointError, match="in use"):
            _publisher(endpoint=a.endpoint, register=False)


def test_ipc_in_use_by_live_publisher(rt: Path) -> None:
    """Guards: libzmq would silently steal a live ipc socket; we refuse instead."""
    with _publisher(endpoint=None, run="dup") as pub:
        with pytest.raises(EndpointError, match="in use"):
            _publisher(endpoint=None, run="dup", register=False)
        assert pub.endpoint.startswith("ipc://")


def test_seq_gaps_reveal_losses() -> None:
    """Guards: drops at a slow subscriber are detectable from seq gaps alone."""
    wide = synthetic_layers(500)  # ~44 KB per step: overflows socket buffers quickly
    stats = SyntheticRun(wide, mode="healthy").stats(0)
    pub = _publisher(layers=wide, queue_size=100_000)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 5)
    sock.setsockopt(zmq.RCVBUF, 64 * 1024)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(pub.endpoint)
    try:
        seqs: list[int] = []
        deadline = time.monotonic() + WAIT_S
        while not seqs:  # wait until connected (slow joiner), then flood
            assert time.monotonic() < deadline
            pub.publish_step(step=0, loss=1.0, stats=stats)
            if sock.poll(20):
                seqs.append(decode(sock.recv_multipart()).seq)
        for i in range(3000):
            pub.publish_step(step=i + 1, loss=1.0, stats=stats)
        step = 3000
        while seqs[-1] < 3000:  # keep the run going until post-flood messages arrive
            assert time.monotonic() < deadline + WAIT_S
            step += 1
            pub.publish_step(step=step, loss=1.0, stats=stats)
            while sock.poll(10):
                seqs.append(decode(sock.recv_multipart()).seq)
        lost = sum(b - a - 1 for a, b in itertools.pairwise(seqs))
        assert seqs == sorted(seqs) and lost > 0
        assert lost == seqs[-1] - seqs[0] + 1 - len(seqs)
    finally:
        pub.close()
        sock.close(0)
        ctx.term()


def _raw_pub() -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes], str]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    return ctx, sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def test_subscriber_counts_malformed_and_keeps_going() -> None:
    """Guards: hostile frames are dropped and counted, never raised into the viewer."""
    ctx, pub, endpoint = _raw_pub()
    good = encode(Heartbeat(run="r", step=1))
    bad = [
        [b"gt1/r/heartbeat", b"\xc1"],
        [b"gt1/r/heartbeat", msgpack.packb({"v": 99})],
        [b"gt1/r/step", good[1], b"\0"],
    ]
    try:
        with Subscriber([endpoint]) as sub:

            def pump() -> None:
                for frames in bad:
                    pub.send_multipart(frames)
                pub.send_multipart(good)

            got = _collect_until(sub, lambda g: len(g) >= 3, pump)
            assert all(isinstance(r.message, Heartbeat) for r in got)
            stats = sub.stats[endpoint]
            assert stats.malformed >= 3 * stats.received - 3 and stats.malformed > 0
            assert stats.last_message is not None and got[0].received <= time.time()
    finally:
        pub.close(0)
        ctx.term()


def test_watchdog_rebuilds_after_oversized_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: DESIGN §8 - after one oversized message libzmq never reconnects; we rebuild."""
    monkeypatch.setattr(subscribe_mod, "MAX_MESSAGE_BYTES", 1000)
    ctx, pub, endpoint = _raw_pub()
    beat = encode(Heartbeat(run="r", step=1))
    try:
        with Subscriber([endpoint], watchdog_s=0.3) as sub:
            _collect_until(sub, lambda g: len(g) > 0, lambda: pub.send_multipart(beat))
            pub.send_multipart([b"gt1/r/heartbeat", b"\0" * 5000])  # kills the connection
            rebuilds_before = sub.stats[endpoint].rebuilds
            received_before = sub.stats[endpoint].received

            def pump() -> None:
                pub.send_multipart(beat)

            _collect_until(sub, lambda g: sub.stats[endpoint].rebuilds > rebuilds_before, pump)
            _collect_until(sub, lambda g: len(g) > 0, pump)
            assert sub.stats[endpoint].received > received_before
    finally:
        pub.close(0)
        ctx.term()


def test_subscriber_add_remove_and_max_messages() -> None:
    """Guards: endpoints can come and go; poll honours max_messages."""
    a, b = _publisher(), _publisher()
    try:
        sub = Subscriber(watchdog_s=60)
        sub.add(a.endpoint)
        sub.add(a.endpoint)  # no-op
        sub.add(b.endpoint)
        assert sub.endpoints == (a.endpoint, b.endpoint)
        both = {a.endpoint, b.endpoint}
        got = _collect_until(sub, lambda g: {r.endpoint for r in g} == both)
        assert {r.message.run for r in got} == {a.run, b.run}
        sub.remove(a.endpoint)
        sub.remove(a.endpoint)  # no-op
        assert b.endpoint in sub.endpoints and len(sub.endpoints) == 1
        assert a.endpoint not in sub.stats
        for i in range(50):
            b.publish_step(step=i, loss=1.0, stats=FAKE.stats(0))
        time.sleep(0.2)
        assert len(sub.poll(1.0, max_messages=3)) <= 3
        sub.close()
        sub.close()
    finally:
        a.close()
        b.close()


def test_subscriber_rejects_bad_endpoint() -> None:
    """Guards: a malformed endpoint is a ValueError, not a zmq crash."""
    with Subscriber() as sub, pytest.raises(ValueError):
        sub.add("nonsense")
    assert sub.poll(0.0) == []


def test_threads_do_not_leak() -> None:
    """Guards: close() joins the sender thread, so long sessions don't accumulate threads."""
    before = threading.active_count()
    for _ in range(5):
        _publisher().close()
    assert threading.active_count() <= before


def test_nan_steps_are_delivered() -> None:
    """Guards: the exploding/NaN case is exactly when telemetry matters; it must arrive."""
    fake = SyntheticRun(LAYERS, mode="nan", nan_after=0)
    seen: list[AnyMessage] = []
    with _publisher(sinks=[seen.append]) as pub:
        assert pub.publish_step(step=0, loss=math.nan, stats=fake.stats(0), grad_norm=math.inf)
    (step,) = [m for m in seen if isinstance(m, Step)]
    assert math.isnan(step.loss) and np.isnan(step.stats).any()
    with pytest.raises(ProtocolError):  # sanity: the decoder is really strict elsewhere
        decode(encode(step)[:2])


def test_forgotten_close_still_sends_end_and_unregisters(rt: Path) -> None:
    """Guards: a script that never calls close() still ends its run for viewers at exit."""
    script = (
        "import sys\n"
        "from gradtui.publish import Publisher\n"
        "from gradtui.synthetic import synthetic_layers\n"
        "p = Publisher(name='forgot', layers=synthetic_layers(2), hello_interval=0.05)\n"
        "print(p.endpoint, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        endpoint = proc.stdout.readline().strip()
        with Subscriber([endpoint]) as sub:
            _collect_until(sub, lambda g: "hello" in _kinds(g))
            assert [e.endpoint for e in registry.list_runs()] == [endpoint]
            proc.stdin.write("exit\n")
            proc.stdin.flush()
            got = _collect_until(sub, lambda g: "end" in _kinds(g))
        assert proc.wait(WAIT_S) == 0
    end = got[-1].message
    assert isinstance(end, End) and end.status == "interrupted" and "close()" in end.reason
    assert registry.list_runs(prune=False) == []


def test_new_subscriber_gets_hello_at_once() -> None:
    """Guards: a late viewer learns the schema on subscribe, not at the next periodic hello."""
    with _publisher(hello_interval=3600.0) as pub:  # the periodic re-send never comes
        time.sleep(0.1)  # the startup hello is long gone before we connect
        with Subscriber([pub.endpoint]) as sub:
            got = _collect_until(sub, lambda g: "hello" in _kinds(g))
        hello = next(r.message for r in got if isinstance(r.message, Hello))
        assert hello.run == pub.run and hello.seq > 0


def test_viewer_waiting_before_a_very_short_run_still_sees_its_end() -> None:
    """Guards: a run that crashes within ms of binding is not lost to a viewer started first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with Subscriber([endpoint]) as sub:
        time.sleep(0.3)  # the viewer is already retrying its connect
        pub = _publisher(endpoint=endpoint, register=False, hello_interval=3600.0)
        pub.close("crashed", "diverged at step 1")
        got = _collect_until(sub, lambda g: "end" in _kinds(g))
    end = got[-1].message
    assert isinstance(end, End) and end.status == "crashed" and end.run == pub.run
    assert any(isinstance(r.message, Hello) for r in got)


def test_poll_is_fair_between_endpoints() -> None:
    """Guards: a flooding run cannot starve another run's messages out of a poll."""
    quiet = {"hello_interval": 3600.0, "heartbeat_interval": 3600.0}  # only what we send
    a, b = _publisher(queue_size=10_000, **quiet), _publisher(**quiet)
    try:
        with Subscriber([a.endpoint, b.endpoint], watchdog_s=60) as sub:
            both = {a.endpoint, b.endpoint}
            _collect_until(sub, lambda g: {r.endpoint for r in g} == both)
            while sub.poll(0.1):  # drain the joining hellos
                pass
            for i in range(2000):
                a.publish_step(step=i, loss=1.0, stats=FAKE.stats(0))
            for i in range(10):
                b.publish_step(step=i, loss=1.0, stats=FAKE.stats(0))
            deadline = time.monotonic() + WAIT_S
            while a.sent < 2000 or b.sent < 10:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.3)  # let the kernel and libzmq move them into our queues
            got = sub.poll(1.0, max_messages=300)
            assert len(got) <= 300
            assert any(r.endpoint == b.endpoint for r in got)
    finally:
        a.close()
        b.close()


def test_poll_budget_bounds_a_garbage_flood() -> None:
    """Guards: a peer sending only junk cannot keep poll() from returning."""
    ctx, pub, endpoint = _raw_pub()
    try:
        with Subscriber([endpoint], watchdog_s=60) as sub:
            beat = encode(Heartbeat(run="r"))
            _collect_until(sub, lambda g: len(g) > 0, lambda: pub.send_multipart(beat))
            while sub.poll(0.1):
                pass
            for _ in range(500):
                pub.send_multipart([b"gt1/junk", b"\xc1"])
            time.sleep(0.3)
            assert sub.poll(1.0, max_messages=100) == []
            assert sub.stats[endpoint].malformed == 100
    finally:
        pub.close(0)
        ctx.term()
