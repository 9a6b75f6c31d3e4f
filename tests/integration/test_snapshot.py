"""Late joiners: HistoryStore bounds, the ROUTER snapshot service, and the snapshot/live seam."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from gradtui.protocol import AnyMessage, End, Heartbeat, Hello, Step, decode, encode
from gradtui.publish import Publisher
from gradtui.security import (
    CurveAuth,
    SecurityError,
    configure_curve_client,
    configure_curve_server,
    generate_keypair,
    load_secret_key,
)
from gradtui.snapshot import (
    HistoryStore,
    Seam,
    Snapshot,
    SnapshotError,
    SnapshotServer,
    fetch_snapshot,
    join,
)
from gradtui.synthetic import SyntheticRun, synthetic_layers

LAYERS = synthetic_layers(3)
STATS = SyntheticRun(LAYERS, mode="healthy").stats(0)


def _hello(seq: int, inc: str = "i1", snapshot: str = "") -> Hello:
    return Hello(run="r1", inc=inc, seq=seq, name="n", layers=LAYERS, snapshot=snapshot)


def _step(seq: int, inc: str = "i1") -> Step:
    return Step(run="r1", inc=inc, seq=seq, step=seq, loss=float(seq), stats=STATS)


def _feed(store: HistoryStore, n: int, inc: str = "i1") -> None:
    store(_hello(0, inc))
    for seq in range(1, n + 1):
        store(_step(seq, inc))


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(tmp_path / "rt"))
    return tmp_path / "rt"


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.term()


# --------------------------------------------------------------------------- store


def test_store_is_bounded_and_seq_ordered() -> None:
    """Guards bounded memory: a long run keeps <= recent + coarse steps, hello first, in order."""
    store = HistoryStore(recent=100, coarse=10)
    _feed(store, 20_000)
    store(Heartbeat(run="r1", inc="i1", seq=20_001))
    store(End(run="r1", inc="i1", seq=20_002, status="finished"))
    inc, last, frames, truncated = store.history("r1")
    assert (inc, last, truncated) == ("i1", 20_002, False)
    assert len(frames) <= 1 + 100 + 10 + 1
    assert frames[0][0] == b"gt1/r1/hello" and frames[-1][0] == b"gt1/r1/end"
    steps = [f for f in frames if f[0] == b"gt1/r1/step"]
    assert len(steps) >= 100
    # Recent steps are all there at full resolution; the oldest ones are sparse.
    seqs = [decode(f).seq for f in frames]
    assert seqs == sorted(seqs)
    assert seqs[-101:-1] == list(range(19_901, 20_001))
    assert 1 in seqs  # decimation keeps the very first step


def test_store_byte_budget_and_new_incarnation() -> None:
    """Guards max_bytes (wide models) and reset on a restarted run (a new incarnation)."""
    step_bytes = sum(len(f) for f in encode(_step(1)))
    store = HistoryStore(recent=10_000, coarse=100, max_bytes=step_bytes * 40)
    _feed(store, 1_000)
    _, _, frames, _ = store.history("r1")
    total = sum(len(x) for f in frames for x in f)
    assert total <= step_bytes * 40 * 1.2 + 4096
    _feed(store, 5, inc="i2")
    inc, last, frames, _ = store.history("r1")
    assert (inc, last, len(frames)) == ("i2", 5, 6)


def test_store_reply_budget_truncates_oldest() -> None:
    """Guards the bounded reply: the oldest steps go first, hello kept, marked truncated."""
    store = HistoryStore()
    _feed(store, 100)
    one = sum(len(x) for x in store.history("r1")[2][1])
    _, _, frames, truncated = store.history("r1", max_bytes=one * 11)
    assert truncated and frames[0][0] == b"gt1/r1/hello"
    assert len(frames) <= 11


# --------------------------------------------------------------------------- server


def test_fetch_roundtrip_over_tcp(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Guards the sub-protocol end to end: decoded history in order with last_seq and inc."""
    store = HistoryStore()
    _feed(store, 50)
    with SnapshotServer(store, "tcp://127.0.0.1:*", context=ctx) as server:
        snap = fetch_snapshot(server.endpoint, "r1", 5.0, context=ctx)
        assert (snap.inc, snap.last_seq, snap.rejected) == ("i1", 50, 0)
        assert isinstance(snap.messages[0], Hello)
        assert [m.seq for m in snap.messages] == list(range(51))
        np.testing.assert_array_equal(snap.messages[-1].stats, STATS)  # type: ignore[union-attr]
        unknown = fetch_snapshot(server.endpoint, "nope", 5.0, context=ctx)
        assert (unknown.last_seq, unknown.messages) == (-1, [])
        store(_hello(51, snapshot="tcp://new"))
        again = fetch_snapshot(server.endpoint, "r1", 5.0, context=ctx)
        hello = again.messages[0]
        assert isinstance(hello, Hello) and (hello.seq, hello.snapshot) == (0, "tcp://new")
        assert server.served == 3


def test_malformed_requests_ignored_and_counted(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    """Guards robustness: garbage requests get no answer, are counted, and don't stop service."""
    store = HistoryStore()
    _feed(store, 3)
    with SnapshotServer(store, f"ipc://{tmp_path / 's.sock'}", context=ctx) as server:
        bad = ctx.socket(zmq.DEALER)
        bad.setsockopt(zmq.LINGER, 0)
        bad.connect(server.endpoint)
        for frames in (
            [b"HELLO", b"r1"],
            [b"SNAP"],
            [b"SNAP", b"bad run!"],
            [b"SNAP", b"\xff\xfe"],
            [b"SNAP", b"r1", b"x" * 33],
            [b"SNAP", b"r1", b"t", b"extra"],
        ):
            bad.send_multipart(frames)
        assert not bad.poll(300, zmq.POLLIN)
        bad.close(0)
        snap = fetch_snapshot(server.endpoint, "r1", 5.0, context=ctx)
        assert len(snap.messages) == 4
        assert server.malformed == 6


def test_fetch_times_out_without_server(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Guards the bounded wait: no service means SnapshotError after the timeout, not a hang."""
    with socket_port() as port, pytest.raises(SnapshotError):
        fetch_snapshot(f"tcp://127.0.0.1:{port}", "r1", 0.3, context=ctx)


class socket_port:
    """A port nobody listens on (bound by a plain socket that never accepts)."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


def test_client_rejects_garbage_replies(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Guards validation: a hostile server's invalid frames are counted, never returned."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def serve() -> None:
        if not router.poll(5000):
            return
        ident, _, _, token = router.recv_multipart()
        router.send_multipart([ident, b"SNAPMSG", token, b"gt1/r1/hello", b"\xc1"])
        import msgpack

        end = msgpack.packb({"run": "r1", "inc": "i1", "last_seq": 3, "truncated": False})
        router.send_multipart([ident, b"SNAPEND", token, end])

    thread = threading.Thread(target=serve)
    thread.start()
    snap = fetch_snapshot(f"tcp://127.0.0.1:{port}", "r1", 5.0, context=ctx)
    thread.join()
    router.close(0)
    assert (snap.messages, snap.rejected, snap.last_seq) == ([], 1, 3)


# --------------------------------------------------------------------------- seam


def test_seam_no_gap_no_duplicate() -> None:
    """Guards the seam: snapshot 0..10 plus live 8..15 delivers 0..15 exactly once, in order."""
    seam = Seam()
    out = []
    for seq in range(8, 12):
        msg = _hello(seq, snapshot="tcp://x:1") if seq == 9 else _step(seq)
        out += seam.offer(msg)
    assert out == []  # held back until the snapshot arrives
    assert seam.wanted() == [("r1", "tcp://x:1")] and seam.wanted() == []
    snap = Snapshot(
        run="r1", inc="i1", last_seq=10, messages=[_hello(0), *(_step(s) for s in range(1, 11))]
    )
    out += seam.complete("r1", snap)
    for seq in range(12, 16):
        out += seam.offer(_step(seq))
    out += seam.offer(_step(10))  # a late duplicate
    assert [m.seq for m in out] == list(range(16))
    assert seam.seam_gaps == 0


def test_seam_without_snapshot_and_restart() -> None:
    """Guards runs without a snapshot service (flushed at hello) and a new incarnation passing."""
    seam = Seam()
    assert seam.offer(_step(5)) == []
    assert [m.seq for m in seam.offer(_hello(6))] == [5, 6]
    assert [m.seq for m in seam.offer(_step(7))] == [7]
    seam2 = Seam()
    seam2.offer(_hello(3, snapshot="e"))
    seam2.wanted()
    seam2.complete("r1", Snapshot(run="r1", inc="i1", last_seq=20, messages=[]))
    assert seam2.offer(_step(4)) == []  # covered by the snapshot
    assert seam2.offer(_step(4, inc="i2")) != []  # restarted run: seq restarts, keep it


def _snap(last: int, first: int = 0) -> Snapshot:
    msgs: list[AnyMessage] = [_hello(0), *(_step(q) for q in range(max(first, 1), last + 1))]
    return Snapshot(run="r1", inc="i1", last_seq=last, messages=msgs)


def test_seam_heals_a_hole_with_a_refetch() -> None:
    """Guards healing: a snapshot ending before the first live message triggers one refetch."""
    seam = Seam()
    seam.expect("r1", "e")  # fetch at once, before the SUB has seen anything
    assert seam.wanted() == [("r1", "e")]
    out = seam.complete("r1", _snap(40))
    out += seam.offer(_step(50))  # 41..49 went by before the SUB was connected
    assert seam.wanted() == [("r1", "e")]
    out += seam.offer(_step(51))
    out += seam.complete("r1", _snap(50))
    out += seam.offer(_step(52))
    assert [m.seq for m in out] == list(range(53)) and seam.seam_gaps == 0


def test_seam_counts_unhealed_gap_and_failed_fetch() -> None:
    """Guards diagnostics: a hole left after refetches is counted; a failed fetch flushes."""
    seam = Seam(max_refetches=0)
    seam.offer(_hello(50, snapshot="e"))
    seam.wanted()
    out = seam.complete("r1", Snapshot(run="r1", inc="i1", last_seq=40, messages=[]))
    assert [m.seq for m in out] == [50] and seam.seam_gaps == 9
    other = Seam()
    other.offer(_hello(1, snapshot="e"))
    other.wanted()
    assert [m.seq for m in other.complete("r1", None)] == [1]
    assert [m.seq for m in other.offer(_step(2))] == [2]


# --------------------------------------------------------------------------- real publisher


@pytest.mark.parametrize("known", [False, True], ids=["from-hello", "from-registry"])
def test_late_joiner_gets_history_and_live_seamlessly(
    ctx: zmq.Context[zmq.Socket[bytes]], runtime: Path, known: bool
) -> None:
    """Guards the Clone pattern end to end with a real Publisher: every step once, in order.

    ``known``: the snapshot endpoint is given up front and fetched before the SUB connects.
    """
    pub = Publisher(
        name="snap",
        layers=LAYERS,
        endpoint="tcp://127.0.0.1:*",
        hello_interval=0.2,
        register=False,
        queue_size=100_000,
    )
    assert pub.snapshot_endpoint.startswith("tcp://127.0.0.1:")
    stop = threading.Event()
    published = [0]

    def feed() -> None:
        while not stop.is_set():
            pub.publish_step(step=published[0], loss=0.5, stats=STATS)
            published[0] += 1
            time.sleep(0.0005)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        while published[0] < 500:
            time.sleep(0.01)
        target = published[0] + 200  # history up to now, then 200 live steps
        steps: list[int] = []
        seqs: list[int] = []
        snap_ep = pub.snapshot_endpoint if known else ""
        for msg in join(pub.endpoint, pub.run, snapshot_endpoint=snap_ep, context=ctx):
            seqs.append(msg.seq)
            if isinstance(msg, Step):
                steps.append(msg.step)
                if len(steps) >= target:
                    break
    finally:
        stop.set()
        feeder.join()
        pub.close()
    assert pub.dropped == 0
    assert steps[0] == 0 and steps == list(range(len(steps)))  # from the start, no gap/dup
    assert seqs == sorted(set(seqs))


def test_default_publisher_serves_history_on_private_ipc(runtime: Path) -> None:
    """Guards the default: the history service sits beside the ipc endpoint and is registered."""
    from gradtui import registry

    with Publisher(name="snap", layers=LAYERS) as pub:
        assert pub.snapshot_endpoint == f"ipc://{runtime / (pub.run + '.snap.sock')}"
        (entry,) = registry.list_runs()
        assert entry.snapshot == pub.snapshot_endpoint
        for step in range(5):
            pub.publish_step(step=step, loss=0.5, stats=STATS)
        deadline = time.monotonic() + 5
        snap = None
        while time.monotonic() < deadline:
            snap = fetch_snapshot(pub.snapshot_endpoint, pub.run, 2.0)
            if sum(isinstance(m, Step) for m in snap.messages) == 5:
                break
            time.sleep(0.05)
        assert snap is not None
        assert [m.step for m in snap.messages if isinstance(m, Step)] == list(range(5))


def test_snapshot_bind_policy_and_curve(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    """Guards snapshot security: no open non-loopback bind; CURVE admits only allowed clients."""
    store = HistoryStore()
    _feed(store, 3)
    with pytest.raises(SecurityError):
        SnapshotServer(store, "tcp://0.0.0.0:*", context=ctx)
    srv, cli, other = (load_secret_key(generate_keypair(tmp_path, n)[1]) for n in "sco")
    auths: list[CurveAuth] = []

    def server_setup(sock: zmq.Socket[bytes]) -> None:
        auths.append(configure_curve_server(sock, srv, [cli.public]))

    with SnapshotServer(store, context=ctx, socket_setup=server_setup) as server:
        snap = fetch_snapshot(
            server.endpoint,
            "r1",
            5.0,
            context=ctx,
            socket_setup=lambda s: configure_curve_client(s, cli, srv.public),
        )
        assert len(snap.messages) == 4
        with pytest.raises(SnapshotError):
            fetch_snapshot(
                server.endpoint,
                "r1",
                0.5,
                context=ctx,
                socket_setup=lambda s: configure_curve_client(s, other, srv.public),
            )
    auths[0].release()


def test_history_socket_removed_on_close(runtime: Path) -> None:
    """Guards the runtime dir: closing a publisher leaves no stale snapshot socket behind."""
    pub = Publisher(name="snap", layers=LAYERS)
    sock = runtime / (pub.run + ".snap.sock")
    assert sock.exists()
    pub.close()
    assert not sock.exists()
