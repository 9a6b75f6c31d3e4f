"""The publisher: a bounded queue and a background thread that owns the XPUB socket.

The training thread only calls :meth:`Publisher.publish_step`, which copies one small array
into a bounded queue and returns. It never blocks and never raises: a full queue drops the
step and counts it. The sender thread stamps ``seq``/``t``, encodes, sends with ``NOBLOCK``,
sends ``hello`` at once to each new subscriber and periodically (DESIGN §8 slow joiner),
sends ``heartbeat`` when the run is quiet, feeds every sink (e.g. the SQLite recorder) and
refreshes the registry.

Late joiners beyond the hello (the Clone pattern): every outgoing message passes through
``_SenderLoop._emit`` already stamped, and reaches the sinks from there, so a history store
is just a sink (``gradtui.snapshot.HistoryStore``) served by its own ROUTER thread; this
loop needs no change for it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import math
import os
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple

import numpy as np
import zmq

from gradtui import registry
from gradtui.endpoints import _MAX_IPC_PATH, EndpointError, bind_address, ipc_in_use, ipc_path
from gradtui.protocol import (
    COLUMNS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    AnyMessage,
    ConfigValue,
    End,
    EndStatus,
    Heartbeat,
    Hello,
    LayerInfo,
    Matrix,
    ProtocolError,
    Step,
    decode,
    encode,
    end_status,
    valid_run_id,
)
from gradtui.snapshot import HistoryStore, SnapshotServer

log = logging.getLogger(__name__)

Sink = Callable[[AnyMessage], None]

_END_LINGER_MS: Final = 500  # bounded flush of the final End; everything else LINGER 0
_SNDHWM: Final = 1000
_REGISTRY_REFRESH_S: Final = 1.0
_STARTUP_TIMEOUT_S: Final = 10.0
_SUBSCRIPTION_CHECK_S: Final = 0.05  # how soon a new subscriber gets its hello
_FAREWELL_S: Final = 0.3  # > 2 reconnect intervals of a waiting viewer (100 ms each)


class _StepItem(NamedTuple):
    step: int
    loss: float
    stats: Matrix
    lr: float
    step_time: float
    throughput: float
    clipped: bool
    grad_norm: float
    acc: float
    t: float


_STOP: Final = object()  # queue sentinel: wakes the sender thread on close


def make_run_id(name: str) -> str:
    """A short random run id carrying a sanitised prefix of ``name``."""
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40]
    token = secrets.token_hex(4)
    return f"{prefix}-{token}" if prefix else token


def _validate(hello: Hello) -> None:
    # The decoder is the definition of valid: a hello viewers would reject fails here, early.
    try:
        decode(encode(hello))
    except ProtocolError as exc:
        raise ValueError(f"run schema rejected by the protocol: {exc}") from None
    if not hello.columns:
        raise ValueError("columns must not be empty")


def _default_snapshot_endpoint(run: str, endpoint: str | None) -> str:
    """Beside a private ipc endpoint, a private ipc socket too; else loopback tcp."""
    if endpoint is None:
        path = f"ipc://{registry.runtime_dir() / (run + '.snap.sock')}"
        if len(path) - len("ipc://") <= _MAX_IPC_PATH:
            return path
    return "tcp://127.0.0.1:*"


class Publisher:
    """Publishes one run's telemetry on a bound PUB socket.

    Args:
        name: human name of the run (<= 256 chars).
        layers: the rows of every stats matrix, in order.
        columns: the columns of every stats matrix, in order.
        config: scalar run configuration, shown by viewers.
        endpoint: where to bind: None for a private ``ipc://`` socket in the runtime dir,
            ``tcp://127.0.0.1:PORT``, or ``tcp://127.0.0.1:*`` for a random free port.
        run: run id; default ``<sanitised name>-<8 hex>``.
        device: e.g. ``cuda:0``; torch_version: ``torch.__version__``.
        every: the probe publishes every ``every``-th step (metadata for viewers).
        register: write a registry entry so ``gradtui ls``/``watch`` find the run.
        queue_size: bound of the step queue; a full queue drops steps.
        hello_interval: seconds between ``hello`` re-sends.
        heartbeat_interval: a ``heartbeat`` goes out after this long without a step.
        sinks: called in the sender thread with every message sent; exceptions counted.
        history: keep a bounded history of the run and serve it to late joiners (the Clone
            pattern, ``gradtui.snapshot``); its endpoint goes out in every ``hello``.
        relay: also connect to a ``gradtui relay`` frontend at this endpoint, so viewers of
            the relay see the run (the publisher still binds its own endpoint).
        snapshot_endpoint: where the history service binds; default ``ipc://<run>.snap.sock``
            beside a default endpoint, else ``tcp://127.0.0.1:*``.

    Raises:
        EndpointError: endpoint not loopback, malformed, or already in use.
        RegistryError: the runtime directory is unsafe (default endpoint or ``register``).
        ValueError: invalid name, run id, layers, columns or config.
    """

    def __init__(
        self,
        *,
        name: str,
        layers: Sequence[LayerInfo],
        columns: Sequence[str] = COLUMNS,
        config: Mapping[str, ConfigValue] | None = None,
        endpoint: str | None = None,
        run: str | None = None,
        device: str = "",
        torch_version: str = "",
        every: int = 1,
        register: bool = True,
        queue_size: int = 1024,
        hello_interval: float = 2.0,
        heartbeat_interval: float = 1.0,
        sinks: Sequence[Sink] = (),
        history: bool = True,
        snapshot_endpoint: str | None = None,
        relay: str | None = None,
    ) -> None:
        if every < 1 or queue_size < 1 or hello_interval <= 0 or heartbeat_interval <= 0:
            raise ValueError("every, queue_size and intervals must be positive")
        self.run: str = run if run is not None else make_run_id(name)
        if not valid_run_id(self.run):
            raise ValueError(f"invalid run id {self.run!r}: use 1-64 of [A-Za-z0-9._-]")
        self.inc: str = secrets.token_hex(8)
        """Incarnation: random per Publisher; viewers see a restarted run as a new one."""
        self.started = time.time()
        self._hello = Hello(
            run=self.run,
            inc=self.inc,
            name=name,
            layers=tuple(layers),
            columns=tuple(columns),
            config=dict(config or {}),
            host=socket.gethostname()[:MAX_NAME_CHARS],
            pid=os.getpid(),
            device=device[:MAX_NAME_CHARS],
            torch=torch_version[:MAX_NAME_CHARS],
            every=every,
            started=self.started,
        )
        _validate(self._hello)
        self._shape = (len(layers), len(columns))
        self._queue: queue.Queue[_StepItem | object] = queue.Queue(maxsize=queue_size)
        self._queue_dropped = 0  # written by the caller's thread only
        self._warned_input = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._register = register
        self.phase = "train"

        self.relay = relay
        self._snapshot_server: SnapshotServer | None = None
        all_sinks = list(sinks)
        if history:
            if snapshot_endpoint is None:
                snapshot_endpoint = _default_snapshot_endpoint(self.run, endpoint)
            store = HistoryStore()
            self._snapshot_server = SnapshotServer(store, snapshot_endpoint)
            self._hello = dataclasses.replace(self._hello, snapshot=self._snapshot_server.endpoint)
            all_sinks.insert(0, store)  # first, so history holds whatever the viewers saw
        if endpoint is None:
            endpoint = f"ipc://{registry.runtime_dir() / (self.run + '.sock')}"
        try:
            self._loop = _SenderLoop(
                self, bind_address(endpoint), all_sinks, hello_interval, heartbeat_interval
            )
        except BaseException:
            self._close_snapshot()
            raise
        self._thread = threading.Thread(
            target=self._loop.run, name=f"gradtui-publish-{self.run}", daemon=True
        )
        self._thread.start()
        if not self._loop.ready.wait(_STARTUP_TIMEOUT_S):
            self._close_snapshot()
            raise EndpointError(f"{endpoint}: publisher thread did not start")
        if self._loop.error is not None:
            self._thread.join(1.0)
            self._close_snapshot()
            raise self._loop.error
        self.endpoint: str = self._loop.endpoint
        """The bound endpoint, with the real port for ``tcp://...:*``."""
        # A script that forgets close() still tells its viewers it is gone.
        atexit.register(self._close_at_exit)
        if register:
            try:
                registry.register(
                    registry.RunEntry(
                        run=self.run,
                        name=name,
                        endpoint=self.endpoint,
                        pid=os.getpid(),
                        host=self._hello.host,
                        started=self.started,
                        snapshot=self._hello.snapshot,
                    )
                )
            except BaseException:
                self.close(register_cleanup=False)
                raise

    # ----------------------------------------------------------------- counters

    @property
    def sent(self) -> int:
        """Messages handed to the PUB socket (all kinds)."""
        return self._loop.sent

    @property
    def dropped(self) -> int:
        """Steps dropped: queue full, rejected input, send refused, or discarded at close."""
        return self._queue_dropped + self._loop.dropped

    @property
    def sink_errors(self) -> int:
        """Exceptions raised by sinks (each sink call that failed counts once)."""
        return self._loop.sink_errors

    # ----------------------------------------------------------------- the caller's side

    def publish_step(
        self,
        *,
        step: int,
        loss: float,
        stats: Matrix,
        lr: float = math.nan,
        step_time: float = math.nan,
        throughput: float = math.nan,
        clipped: bool = False,
        grad_norm: float = math.nan,
        acc: float = math.nan,
    ) -> bool:
        """Queue one step for sending. Never blocks, never raises.

        ``stats`` is copied, so the caller may reuse its buffer at once.

        Returns:
            True if queued; False if dropped (queue full, closed, or bad input).
        """
        try:
            if self._closed:
                self._queue_dropped += 1
                return False
            matrix = np.array(stats, dtype=np.float32, copy=True)
            if matrix.shape != self._shape:
                raise ValueError(f"stats shape {matrix.shape} != {self._shape}")
            item = _StepItem(
                int(step),
                float(loss),
                matrix,
                float(lr),
                float(step_time),
                float(throughput),
                bool(clipped),
                float(grad_norm),
                float(acc),
                time.time(),
            )
            if item.step < 0:
                raise ValueError(f"step must be >= 0, got {step}")
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self._queue_dropped += 1
            return False
        except Exception as exc:  # a telemetry bug must never kill the training loop
            self._queue_dropped += 1
            if not self._warned_input:
                self._warned_input = True
                log.warning("gradtui: dropping steps with bad input: %s", exc)
            return False

    def set_phase(self, phase: str) -> None:
        """What the run is doing (``train``, ``eval``...); carried by heartbeats."""
        self.phase = phase[:MAX_NAME_CHARS]

    def close(
        self,
        status: EndStatus = "finished",
        reason: str = "",
        timeout: float = 1.0,
        *,
        register_cleanup: bool = True,
    ) -> None:
        """Send ``end``, unregister and stop the sender thread within about ``timeout`` s.

        Steps still queued are sent first if time allows. Idempotent.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        self._loop.request_stop(status, reason[:MAX_TEXT_CHARS], time.monotonic() + timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if threading.current_thread() is not self._thread:  # close() from a sink: no self-join
            self._thread.join(timeout + _END_LINGER_MS / 1000)
        self._close_snapshot()
        if self._register and register_cleanup:
            with contextlib.suppress(Exception):
                registry.unregister(self.run)

    def _close_snapshot(self) -> None:
        server, self._snapshot_server = self._snapshot_server, None
        if server is None:
            return
        with contextlib.suppress(Exception):
            server.close(timeout=0.5)
        path = ipc_path(server.endpoint)
        if path is not None:  # libzmq leaves the socket file behind
            with contextlib.suppress(OSError):
                os.unlink(path)

    @property
    def snapshot_endpoint(self) -> str:
        """Where late joiners fetch this run's history ("" without a history service)."""
        return self._hello.snapshot

    def _close_at_exit(self) -> None:
        self.close("interrupted", "process exited without Publisher.close()")

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(*end_status(exc))


class _SenderLoop:
    """Everything the sender thread does; its attributes are written by that thread only."""

    def __init__(
        self,
        owner: Publisher,
        address: str,
        sinks: list[Sink],
        hello_interval: float,
        heartbeat_interval: float,
    ) -> None:
        self._owner = owner
        self._address = address
        self._sinks = sinks
        self._hello_interval = hello_interval
        self._heartbeat_interval = heartbeat_interval
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.endpoint = ""
        self._bound_path: Path | None = None
        self._bound_at = 0.0
        self._subscribed = False  # has any subscriber ever joined (XPUB notice)?
        self.sent = 0
        self.dropped = 0
        self.sink_errors = 0
        self._warned_sink = False
        self._seq = 0
        self._last_step = -1
        self._stop = threading.Event()
        self._end: tuple[EndStatus, str] = ("finished", "")
        self._deadline = math.inf

    def request_stop(self, status: EndStatus, reason: str, deadline: float) -> None:
        self._end = (status, reason)
        self._deadline = deadline
        self._stop.set()

    # ----------------------------------------------------------------- thread body

    def _open(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        # XPUB, not PUB: it reports each new subscription, and answering with a hello right
        # away beats the slow-joiner problem for the schema (VERBOSE: report every one).
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _SNDHWM)
        if self._address.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        path = ipc_path(self._address)
        try:
            if path is not None and ipc_in_use(path):
                raise EndpointError(f"{self._address} is already in use by a live publisher")
            try:
                sock.bind(self._address)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EADDRINUSE:
                    raise EndpointError(f"{self._address} is already in use") from None
                raise EndpointError(f"cannot bind {self._address}: {exc}") from None
        except BaseException:
            sock.close(0)
            raise
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self._owner.relay:
            try:  # connecting never blocks: libzmq retries in the background
                sock.connect(self._owner.relay)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise EndpointError(f"cannot connect to relay {self._owner.relay}: {exc}") from None
        self._bound_path = path
        self._bound_at = time.monotonic()
        return sock

    def run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            try:
                sock = self._open(ctx)
            except BaseException as exc:
                self.error = exc
                return
            finally:
                self.ready.set()
            try:
                self._serve(sock)
            finally:
                sock.close()
        except Exception:  # the thread must never die silently with the run still going
            log.exception("gradtui: publisher thread failed")
        finally:
            ctx.term()
            if self._bound_path is not None:
                # libzmq leaves the socket file behind; remove it so `ls` stays tidy.
                with contextlib.suppress(OSError):
                    self._bound_path.unlink()

    def _serve(self, sock: zmq.Socket[bytes]) -> None:
        owner = self._owner
        now = time.monotonic()
        next_hello = now
        last_activity = now
        last_registry = now
        registered_step = -1
        while True:
            now = time.monotonic()
            if self._new_subscriber(sock):
                next_hello = now
            if now >= next_hello:
                self._emit(sock, owner._hello)
                next_hello = now + self._hello_interval
            if now - last_activity >= self._heartbeat_interval:
                self._emit(
                    sock,
                    Heartbeat(
                        run=owner.run, inc=owner.inc, step=self._last_step, phase=owner.phase
                    ),
                )
                last_activity = now
            if (
                owner._register
                and self._last_step != registered_step
                and now - last_registry >= _REGISTRY_REFRESH_S
            ):
                registered_step = self._last_step
                last_registry = now
                with contextlib.suppress(Exception):
                    registry.update_step(owner.run, registered_step)

            if self._stop.is_set() and (owner._queue.empty() or now >= self._deadline):
                break
            wait = min(next_hello, last_activity + self._heartbeat_interval) - now
            wait = min(wait, _SUBSCRIPTION_CHECK_S)
            try:
                item = owner._queue.get(timeout=max(wait, 0.0))
            except queue.Empty:
                continue
            if isinstance(item, _StepItem):
                if self._stop.is_set() and time.monotonic() >= self._deadline:
                    self.dropped += 1  # out of time at close: discard, but count
                    continue
                self._emit_step(sock, item)
                last_activity = time.monotonic()

        self._discard_rest()
        status, reason = self._end
        end = End(run=owner.run, inc=owner.inc, status=status, reason=reason, step=self._last_step)
        self._emit(sock, end)
        self._farewell(sock, end)
        # The only non-zero linger: give the End a bounded chance to leave.
        sock.setsockopt(zmq.LINGER, _END_LINGER_MS)

    def _farewell(self, sock: zmq.Socket[bytes], end: End) -> None:
        """Replay hello + end to a viewer that connects just after a very short run ended.

        A viewer started before its trainer retries the connect every 100 ms; a run that
        crashes within that window (e.g. a diverging lr) would otherwise end unseen. Only
        runs younger than ``_FAREWELL_S`` that never had a subscriber wait, at most until
        that age.
        """
        if self._subscribed:
            return
        remaining = self._bound_at + _FAREWELL_S - time.monotonic()
        while remaining > 0:
            if sock.poll(round(remaining * 1000), zmq.POLLIN) and self._new_subscriber(sock):
                self._emit(sock, self._owner._hello)
                self._emit(sock, end)
                return
            remaining = self._bound_at + _FAREWELL_S - time.monotonic()

    def _new_subscriber(self, sock: zmq.Socket[bytes]) -> bool:
        """Drain XPUB's subscription notices; True if anyone (re)subscribed."""
        joined = False
        while True:
            try:
                notice = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                self._subscribed = self._subscribed or joined
                return joined
            joined = joined or notice[:1] == b"\x01"

    def _discard_rest(self) -> None:
        while True:
            try:
                item = self._owner._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _StepItem):
                self.dropped += 1

    def _emit_step(self, sock: zmq.Socket[bytes], item: _StepItem) -> None:
        owner = self._owner
        msg = Step(
            run=owner.run,
            inc=owner.inc,
            step=item.step,
            loss=item.loss,
            stats=item.stats,
            lr=item.lr,
            step_time=item.step_time,
            throughput=item.throughput,
            clipped=item.clipped,
            grad_norm=item.grad_norm,
            acc=item.acc,
        )
        if self._emit(sock, msg, t=item.t):
            self._last_step = item.step
        else:
            self.dropped += 1

    def _emit(self, sock: zmq.Socket[bytes], msg: AnyMessage, t: float | None = None) -> bool:
        """Stamp, encode, send without blocking, feed the sinks. False if not sent."""
        msg = dataclasses.replace(msg, seq=self._seq, t=time.time() if t is None else t)
        self._seq += 1
        ok = True
        try:
            sock.send_multipart(encode(msg), flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            ok = False
        for sink in self._sinks:
            try:
                sink(msg)
            except Exception as exc:  # a broken recorder must not stop the telemetry
                self.sink_errors += 1
                if not self._warned_sink:
                    self._warned_sink = True
                    log.warning("gradtui: sink %r failed (further errors counted): %s", sink, exc)
        return ok
