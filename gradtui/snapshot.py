"""Late joiners: a run's retained history served on request (the ZeroMQ guide's Clone pattern).

The publisher feeds every message it sends into a ``HistoryStore`` (a publisher sink). A
``SnapshotServer`` answers ``[b"SNAP", run]`` on a ROUTER socket with that history. A viewer
connects its SUB first, buffers, fetches the snapshot, then keeps only live messages newer than
the snapshot's last sequence number: no gap and no duplicate at the seam (``Seam``, ``join``).

The sub-protocol (``docs/remote.md`` is normative):

* request (DEALER -> ROUTER): ``[b"SNAP", run, token]``; ``token`` (0-32 bytes, optional) is
  echoed so a client can tell its reply from a stale one;
* one reply message per history message: ``[b"SNAPMSG", token, topic, header(, payload)]``
  (the normal protocol frames), in increasing ``seq`` order, first the run's hello;
* a final ``[b"SNAPEND", token, msgpack {run, inc, last_seq, count, truncated}]``; ``last_seq``
  is the highest sequence number the store had *seen* (included or deliberately left out,
  e.g. heartbeats and decimated steps): live messages with ``seq <= last_seq`` of the same
  ``inc`` are already accounted for. ``last_seq`` is -1 when the run is unknown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import zmq

from gradtui.endpoints import EndpointError, bind_address, ipc_in_use, ipc_path
from gradtui.protocol import (
    MAX_MESSAGE_BYTES,
    TOPIC_PREFIX,
    AnyMessage,
    End,
    Frames,
    Heartbeat,
    Hello,
    ProtocolError,
    Step,
    decode,
    encode,
    valid_run_id,
)
from gradtui.security import check_bind_policy, is_local_endpoint

REQUEST: Final = b"SNAP"
REPLY_MSG: Final = b"SNAPMSG"
REPLY_END: Final = b"SNAPEND"
MAX_TOKEN_BYTES: Final = 32
DEFAULT_MAX_BYTES: Final = 128 * 1024 * 1024
MAX_REPLY_MESSAGES: Final = 1_000_000  # what a client accepts from a (possibly hostile) server
_POLL_MS: Final = 100

SocketSetup = Callable[["zmq.Socket[bytes]"], None]
"""Applied to a socket before bind/connect (e.g. ``security.configure_curve_server``)."""


class SnapshotError(Exception):
    """The snapshot service did not answer in time, or answered nonsense."""


def _size(frames: Frames) -> int:
    return sum(len(f) for f in frames)


@dataclass(slots=True)
class _Entry:
    seq: int
    frames: Frames
    nbytes: int


@dataclass(slots=True)
class _RunHistory:
    """One incarnation of one run: first hello, steps (recent full, older decimated), end."""

    inc: str
    hello: _Entry | None = None
    recent: deque[_Entry] = field(default_factory=deque)
    recent_bytes: int = 0
    coarse: list[_Entry] = field(default_factory=list)
    coarse_bytes: int = 0
    stride: int = 1
    evicted: int = 0
    end: _Entry | None = None
    last_seq: int = -1
    touched: float = 0.0


class HistoryStore:
    """A publisher sink keeping a bounded, already-encoded history per run. Thread-safe.

    One ``hello`` per incarnation is kept: the latest one's content under the first one's
    ``seq`` (the reply is in ``seq`` order and the viewer must learn the schema first). The
    latest ``recent`` steps are kept at full resolution; older steps are decimated into at most
    ``coarse`` entries (every ``stride``-th, the stride doubling when full), so memory is bounded
    however long the run. ``max_bytes`` bounds the encoded bytes held per run.

    Args:
        recent: steps kept at full resolution per run.
        coarse: decimated older steps kept per run.
        max_bytes: encoded bytes budget per run (3/4 recent, 1/4 coarse).
        max_runs: runs kept; the least recently updated is forgotten first.
    """

    def __init__(
        self,
        *,
        recent: int = 10_000,
        coarse: int = 2_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_runs: int = 64,
    ) -> None:
        if recent < 1 or coarse < 2 or max_bytes < 1 or max_runs < 1:
            raise ValueError("recent >= 1, coarse >= 2, max_bytes >= 1, max_runs >= 1")
        self.recent = recent
        self.coarse = coarse
        self.max_bytes = max_bytes
        self.max_runs = max_runs
        self._runs: dict[str, _RunHistory] = {}
        self._lock = threading.Lock()

    def __call__(self, msg: AnyMessage) -> None:
        """Record one message (the publisher sink interface)."""
        if isinstance(msg, Heartbeat):
            frames: Frames = []
        elif isinstance(msg, Hello):
            # The latest hello's content under the first hello's seq: it must come first in
            # seq order, yet a re-sent hello may carry newer metadata (e.g. the snapshot field).
            with self._lock:
                hist = self._runs.get(msg.run)
                first = hist.hello.seq if hist and hist.inc == msg.inc and hist.hello else None
            frames = encode(msg if first is None else dataclasses.replace(msg, seq=first))
        else:
            frames = encode(msg)  # outside the lock: encoding a step copies its matrix
        with self._lock:
            hist = self._runs.get(msg.run)
            if hist is None or hist.inc != msg.inc:
                hist = self._new_run(msg.run, msg.inc)
            hist.touched = time.monotonic()
            hist.last_seq = max(hist.last_seq, msg.seq)
            entry = _Entry(msg.seq, frames, _size(frames))
            if isinstance(msg, Hello):
                hist.hello = (
                    entry if hist.hello is None else _Entry(hist.hello.seq, frames, entry.nbytes)
                )
            elif isinstance(msg, Step):
                if hist.hello is not None:  # without a schema the steps are unusable
                    self._add_step(hist, entry)
            elif isinstance(msg, End):
                hist.end = entry

    def _new_run(self, run: str, inc: str) -> _RunHistory:
        if run not in self._runs and len(self._runs) >= self.max_runs:
            oldest = min(self._runs, key=lambda r: self._runs[r].touched)
            del self._runs[oldest]
        hist = _RunHistory(inc=inc)
        self._runs[run] = hist
        return hist

    def _add_step(self, hist: _RunHistory, entry: _Entry) -> None:
        hist.recent.append(entry)
        hist.recent_bytes += entry.nbytes
        budget = self.max_bytes * 3 // 4
        while len(hist.recent) > self.recent or (
            hist.recent_bytes > budget and len(hist.recent) > 1
        ):
            old = hist.recent.popleft()
            hist.recent_bytes -= old.nbytes
            if hist.evicted % hist.stride == 0:
                hist.coarse.append(old)
                hist.coarse_bytes += old.nbytes
            hist.evicted += 1
        if len(hist.coarse) > self.coarse or hist.coarse_bytes > self.max_bytes - budget:
            # Halve the resolution of the old part: keep every other entry, double the stride.
            hist.coarse = hist.coarse[::2]
            hist.coarse_bytes = sum(e.nbytes for e in hist.coarse)
            hist.stride *= 2

    def runs(self) -> list[str]:
        """Run ids with retained history."""
        with self._lock:
            return list(self._runs)

    def history(
        self, run: str, max_bytes: int | None = None
    ) -> tuple[str, int, list[Frames], bool]:
        """The run's retained messages, oldest first, as encoded frames.

        Args:
            run: run id.
            max_bytes: reply budget; the oldest steps are left out first (never the hello
                or the end) and the result is marked truncated.

        Returns:
            ``(inc, last_seq, frames_list, truncated)``; ``("", -1, [], False)`` if unknown.
        """
        with self._lock:
            hist = self._runs.get(run)
            if hist is None:
                return "", -1, [], False
            steps = [*hist.coarse, *hist.recent]  # references only: frames are immutable
            head = [hist.hello] if hist.hello is not None else []
            tail = [hist.end] if hist.end is not None else []
            inc, last_seq = hist.inc, hist.last_seq
        truncated = False
        if max_bytes is not None:
            total = sum(e.nbytes for e in (*head, *steps, *tail))
            drop = 0
            while total > max_bytes and drop < len(steps):
                total -= steps[drop].nbytes
                drop += 1
            truncated = drop > 0
            steps = steps[drop:]
        return inc, last_seq, [e.frames for e in (*head, *steps, *tail)], truncated


class SnapshotServer:
    """Answers snapshot requests for a ``HistoryStore`` from a ROUTER socket in its own thread.

    Args:
        store: the history to serve.
        endpoint: where to bind: ``tcp://127.0.0.1:*`` (random port), ``ipc://PATH``, or a
            non-loopback address when ``socket_setup`` enables CURVE or ``insecure`` is set
            (``security.check_bind_policy``).
        max_reply_bytes: bound on one reply; older steps are left out beyond it.
        send_timeout: a client that does not drain its reply within this long is abandoned.
        socket_setup: applied to the ROUTER before bind (CURVE server keys).
        insecure: allow a non-loopback bind without CURVE (see ``warning``).

    Counters: ``served`` (requests answered), ``malformed`` (requests ignored), ``abandoned``
    (replies cut short because the client stopped reading).
    """

    def __init__(
        self,
        store: HistoryStore,
        endpoint: str = "tcp://127.0.0.1:*",
        *,
        max_reply_bytes: int = DEFAULT_MAX_BYTES,
        send_timeout: float = 5.0,
        socket_setup: SocketSetup | None = None,
        insecure: bool = False,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        # Same rule as the publisher: loopback/ipc, else CURVE (socket_setup) or insecure.
        self.warning = check_bind_policy(
            endpoint, curve=socket_setup is not None, insecure=insecure
        )
        """A warning to show at every start when bound beyond loopback without CURVE."""
        if endpoint.startswith(("tcp://", "ipc://")) and is_local_endpoint(endpoint):
            endpoint = bind_address(endpoint)  # localhost -> 127.0.0.1, :0 -> :*
        self.store = store
        self.max_reply_bytes = max_reply_bytes
        self.send_timeout = send_timeout
        self.served = 0
        self.malformed = 0
        self.abandoned = 0
        self._own_ctx = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self._stop = threading.Event()
        sock = self._ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # EAGAIN instead of silent drops at HWM
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.setsockopt(zmq.RCVHWM, 100)  # queued requests; more are dropped by libzmq
            sock.setsockopt(zmq.MAXMSGSIZE, 4096)  # requests are tiny
            if endpoint.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            if socket_setup is not None:
                socket_setup(sock)
            path = ipc_path(endpoint)
            if path is not None and ipc_in_use(path):
                raise EndpointError(f"{endpoint} is already in use")
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise EndpointError(f"cannot bind snapshot service {endpoint}: {exc}") from None
        except BaseException:
            sock.close(0)
            if self._own_ctx:
                self._ctx.term()
            raise
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        """The bound endpoint, with the real port; put it in ``Hello.snapshot``."""
        # A socket may move threads once, with a memory barrier: Thread.start() is one.
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="gradtui-snapshot", daemon=True
        )
        self._thread.start()

    def _serve(self, sock: zmq.Socket[bytes]) -> None:
        try:
            while not self._stop.is_set():
                if not sock.poll(_POLL_MS, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart()
                request = _parse_request(frames)
                if request is None:
                    self.malformed += 1
                    continue
                ident, run, token = request
                self._reply(sock, ident, run, token)
        finally:
            sock.close(0)

    def _reply(self, sock: zmq.Socket[bytes], ident: bytes, run: str, token: bytes) -> None:
        inc, last_seq, history, truncated = self.store.history(run, self.max_reply_bytes)
        deadline = time.monotonic() + self.send_timeout
        for frames in history:
            if not self._send(sock, [ident, REPLY_MSG, token, *frames], deadline):
                self.abandoned += 1
                return
        end = msgpack.packb(
            {
                "run": run,
                "inc": inc,
                "last_seq": last_seq,
                "count": len(history),
                "truncated": truncated,
            }
        )
        if self._send(sock, [ident, REPLY_END, token, end], deadline):
            self.served += 1
        else:
            self.abandoned += 1

    def _send(self, sock: zmq.Socket[bytes], frames: list[bytes], deadline: float) -> bool:
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                pass  # this client's pipe is full: wait for it to read, within the deadline
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    return False  # the client went away
                raise
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(0.001)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the socket. Idempotent."""
        self._stop.set()
        self._thread.join(timeout)
        if self._own_ctx and not self._thread.is_alive():
            self._ctx.term()
            self._own_ctx = False

    def __enter__(self) -> SnapshotServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_request(frames: list[bytes]) -> tuple[bytes, str, bytes] | None:
    # [identity, b"SNAP", run(, token)] as seen by the ROUTER.
    if not 3 <= len(frames) <= 4 or frames[1] != REQUEST:
        return None
    token = frames[3] if len(frames) == 4 else b""
    if len(token) > MAX_TOKEN_BYTES:
        return None
    try:
        run = frames[2].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not valid_run_id(run):
        return None
    return frames[0], run, token


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A fetched history."""

    run: str
    inc: str
    """Incarnation the history belongs to ("" when the run is unknown to the server)."""
    last_seq: int
    """Live messages of ``inc`` with ``seq <= last_seq`` are covered by this snapshot."""
    messages: list[AnyMessage]
    """Oldest first, hello first."""
    truncated: bool = False
    """The server left out old steps to bound the reply."""
    rejected: int = 0
    """Reply messages that failed ``protocol.decode`` (dropped)."""


def fetch_snapshot(
    endpoint: str,
    run: str,
    timeout: float = 5.0,
    *,
    socket_setup: SocketSetup | None = None,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
) -> Snapshot:
    """Request a run's history from a snapshot service (DEALER client).

    Every reply message is validated with ``protocol.decode``; invalid ones are counted in
    ``rejected`` and dropped, as are messages of another run.

    Raises:
        SnapshotError: no complete reply within ``timeout`` seconds, or a malformed end marker.
    """
    if not valid_run_id(run):
        raise ValueError(f"invalid run id {run!r}")
    ctx: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 1024)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        if socket_setup is not None:
            socket_setup(sock)
        sock.connect(endpoint)
        token = secrets.token_bytes(8)
        sock.send_multipart([REQUEST, run.encode(), token])
        return _collect(sock, run, token, time.monotonic() + timeout)
    finally:
        sock.close(0)


def _collect(sock: zmq.Socket[bytes], run: str, token: bytes, deadline: float) -> Snapshot:
    messages: list[AnyMessage] = []
    rejected = 0
    while True:
        try:
            # Drain without a poll per message: 10,000 polls cost more than the decoding.
            # copy=True: frames are a few KiB, below where zero-copy pays off.
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(max(1, round(remaining * 1000)), zmq.POLLIN):
                raise SnapshotError(f"no snapshot of {run!r} within the timeout") from None
            continue
        if len(frames) < 2 or frames[1] != token:
            continue  # a reply to an earlier request
        if frames[0] == REPLY_MSG:
            if len(messages) >= MAX_REPLY_MESSAGES:
                raise SnapshotError("snapshot reply too long")
            try:
                msg = decode(frames[2:])
            except ProtocolError:
                rejected += 1
                continue
            if msg.run == run:
                messages.append(msg)
            else:
                rejected += 1
        elif frames[0] == REPLY_END and len(frames) == 3:
            return _finish(frames[2], run, messages, rejected)


def _finish(raw: bytes, run: str, messages: list[AnyMessage], rejected: int) -> Snapshot:
    try:
        head: Any = msgpack.unpackb(raw, raw=False)
    except Exception:  # msgpack raises several unrelated types on garbage
        raise SnapshotError("malformed snapshot end marker") from None
    if not isinstance(head, dict):
        raise SnapshotError("malformed snapshot end marker")
    inc, last_seq, truncated = head.get("inc"), head.get("last_seq"), head.get("truncated")
    if (
        not isinstance(inc, str)
        or not isinstance(last_seq, int)
        or isinstance(last_seq, bool)
        or not isinstance(truncated, bool)
    ):
        raise SnapshotError("malformed snapshot end marker")
    # Only this incarnation's messages, in seq order, up to last_seq: the seam relies on it.
    kept = sorted((m for m in messages if m.inc == inc and m.seq <= last_seq), key=_seq)
    return Snapshot(
        run=run,
        inc=inc,
        last_seq=last_seq,
        messages=kept,
        truncated=truncated,
        rejected=rejected + len(messages) - len(kept),
    )


def _seq(msg: AnyMessage) -> int:
    return msg.seq


# --------------------------------------------------------------------------- the seam


@dataclass(slots=True)
class _SeamRun:
    phase: str = "buffering"  # buffering -> wanted -> fetching -> done | direct
    endpoint: str = ""
    buffer: list[AnyMessage] = field(default_factory=list)
    inc: str = ""
    last_seq: int = -1  # highest seq of ``inc`` delivered
    checked: bool = False  # the first live message after the snapshot was checked for a gap
    refetches: int = 0


class Seam:
    """Joins each run's snapshot with its live stream: no gap, no duplicate.

    Feed every live message to ``offer`` (it returns what to deliver now). A run's messages are
    held back until its ``hello`` says whether it has a snapshot service (or from the start,
    when ``expect()`` named the service already); ``wanted()`` then names the fetches to make
    and ``complete()`` returns the snapshot followed by the held-back messages newer than it.
    Afterwards live messages of that incarnation with ``seq <= last_seq`` are dropped.

    A snapshot fetched before the SUB was connected may end before the first live message:
    that hole is detected on the first live message and healed by one more fetch (whose
    already-delivered part is skipped). ``seam_gaps`` counts what could not be healed.

    Args:
        max_buffer: held-back messages per run before giving up on a snapshot for it.
        max_refetches: extra fetches per run to heal a hole at the seam.
    """

    def __init__(self, *, max_buffer: int = 50_000, max_refetches: int = 2) -> None:
        self.max_buffer = max_buffer
        self.max_refetches = max_refetches
        self._runs: dict[str, _SeamRun] = {}
        self.seam_gaps = 0
        """Messages lost between a snapshot and the first live message (not healed)."""

    def expect(self, run: str, endpoint: str) -> None:
        """Fetch ``run``'s snapshot from ``endpoint`` at once (known from the registry)."""
        st = self._runs.setdefault(run, _SeamRun())
        if st.phase == "buffering":
            st.phase, st.endpoint = "wanted", endpoint

    def offer(self, msg: AnyMessage) -> list[AnyMessage]:
        """One live message in; the messages to deliver now out."""
        st = self._runs.setdefault(msg.run, _SeamRun())
        if st.phase == "direct":
            return [msg]
        if st.phase == "done":
            return self._live(st, msg)
        st.buffer.append(msg)
        if st.phase == "buffering":
            if isinstance(msg, Hello):
                if not msg.snapshot:
                    return self._flush(st)
                st.phase, st.endpoint = "wanted", msg.snapshot
            elif isinstance(msg, End):
                return self._flush(st)  # no hello will come: deliver what we have
        if len(st.buffer) > self.max_buffer:
            return self._flush(st)
        return []

    def _live(self, st: _SeamRun, msg: AnyMessage) -> list[AnyMessage]:
        if msg.inc != st.inc:  # a restarted run: its own sequence, nothing to join
            st.inc, st.last_seq, st.checked = msg.inc, msg.seq, True
            return [msg]
        if msg.seq <= st.last_seq:
            return []  # already delivered by the snapshot
        if not st.checked:
            st.checked = True
            if msg.seq > st.last_seq + 1 and st.refetches < self.max_refetches and st.endpoint:
                st.refetches += 1
                st.phase, st.buffer = "wanted", [msg]
                return []
            if msg.seq > st.last_seq + 1 and st.last_seq >= 0:
                self.seam_gaps += msg.seq - st.last_seq - 1
        st.last_seq = msg.seq
        return [msg]

    @staticmethod
    def _flush(st: _SeamRun) -> list[AnyMessage]:
        st.phase = "done" if st.inc else "direct"
        out, st.buffer = st.buffer, []
        if st.inc:
            same = [m.seq for m in out if m.inc == st.inc]
            st.last_seq = max([st.last_seq, *same])
        return out

    def wanted(self) -> list[tuple[str, str]]:
        """``(run, snapshot endpoint)`` pairs to fetch now; each is returned once."""
        out = []
        for run, st in self._runs.items():
            if st.phase == "wanted":
                st.phase = "fetching"
                out.append((run, st.endpoint))
        return out

    def complete(self, run: str, snapshot: Snapshot | None) -> list[AnyMessage]:
        """The snapshot (None: the fetch failed) joined with the held-back messages."""
        st = self._runs.setdefault(run, _SeamRun())
        if snapshot is None or st.phase in ("done", "direct"):
            return self._flush(st)
        history = snapshot.messages
        if st.inc and st.inc == snapshot.inc:  # a healing refetch: skip what was delivered
            history = [m for m in history if m.seq > st.last_seq]
        live = [m for m in st.buffer if not (m.inc == snapshot.inc and m.seq <= snapshot.last_seq)]
        delivered = st.last_seq if st.inc == snapshot.inc else -1
        st.buffer = []
        st.phase, st.inc, st.last_seq = "done", snapshot.inc, max(delivered, snapshot.last_seq)
        st.checked = False
        out = list(history)
        for msg in live:
            out += self._live(st, msg)
        return out

    def forget(self, run: str) -> None:
        """Drop a run's seam state (e.g. when the viewer removes the run)."""
        self._runs.pop(run, None)


def join(
    endpoint: str,
    run: str,
    *,
    snapshot_endpoint: str = "",
    timeout: float = 5.0,
    snapshot_timeout: float = 5.0,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[AnyMessage]:
    """A run's history then its live messages, seamlessly (for tools and tests).

    Connects a SUB to ``endpoint`` first and holds back what arrives; fetches the snapshot
    (at once from ``snapshot_endpoint`` if given, else once the run's hello names the service)
    and yields it, then the held-back and live messages newer than it. Ends after the run's
    ``end`` message, when ``stop`` is set, or when nothing arrived for ``timeout`` seconds.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    seam = Seam()
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC_PREFIX + run.encode() + b"/")
        sub.connect(endpoint)
        if snapshot_endpoint:
            seam.expect(run, snapshot_endpoint)
        out: list[AnyMessage] = []
        while stop is None or not stop.is_set():
            for want_run, snap_endpoint in seam.wanted():
                snap: Snapshot | None
                try:
                    snap = fetch_snapshot(snap_endpoint, want_run, snapshot_timeout, context=ctx)
                except SnapshotError:
                    snap = None
                out += seam.complete(want_run, snap)
            for item in out:
                yield item
                if isinstance(item, End) and item.run == run:
                    return
            if not sub.poll(round(timeout * 1000), zmq.POLLIN):
                return
            try:
                msg = decode(sub.recv_multipart())
            except ProtocolError:
                out = []
                continue
            out = seam.offer(msg)
    finally:
        with contextlib.suppress(zmq.ZMQError):
            sub.close(0)
