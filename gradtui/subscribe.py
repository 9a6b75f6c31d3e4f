"""The subscriber: SUB sockets on many endpoints, drained by ``poll`` into decoded messages.

Synchronous and owned by one thread (the viewer runs it in a worker thread). One SUB socket
per endpoint, so one dead or poisoned connection is rebuilt without touching the others:
after one oversized message libzmq drops the connection and never reconnects (DESIGN §8),
hence the watchdog that rebuilds a socket that has been silent for ``watchdog_s``.
Publishers heartbeat every second, so a healthy endpoint is never silent that long.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import zmq

from gradtui.protocol import MAX_MESSAGE_BYTES, TOPIC_PREFIX, AnyMessage, ProtocolError, decode

_CHUNK: Final = 256  # messages taken from one endpoint before visiting the next
_RCVHWM: Final = 10_000  # messages; bounds the memory a fast publisher can pin here
# Retry a not-yet-bound endpoint every 100 ms with no back-off: a viewer started before its
# trainer must connect as soon as it binds, or it misses a short run's only messages.
_RECONNECT_IVL_MS: Final = 100


@dataclass(frozen=True, slots=True)
class Received:
    """One decoded message and where and when it arrived."""

    endpoint: str
    message: AnyMessage
    received: float
    """Local ``time.time()`` at receipt."""


@dataclass(slots=True)
class EndpointStats:
    """Per-endpoint counters."""

    received: int = 0
    """Valid messages decoded."""
    malformed: int = 0
    """Frames rejected by the decoder (dropped, never raised)."""
    rebuilds: int = 0
    """Times the watchdog closed and recreated the socket."""
    last_message: float | None = None
    """``time.time()`` of the last valid message, None before the first."""


class Subscriber:
    """Receives and decodes messages from publisher endpoints.

    Args:
        endpoints: endpoints to connect to at once.
        watchdog_s: rebuild an endpoint's socket after this long without a valid message.
        rcvhwm: messages queued per endpoint before libzmq drops (memory bound: a step is
            about ``rows x cols x 4`` bytes plus ~300 bytes of header).
    """

    def __init__(
        self, endpoints: Iterable[str] = (), *, watchdog_s: float = 5.0, rcvhwm: int = _RCVHWM
    ) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._by_socket: dict[zmq.Socket[bytes], str] = {}
        self._quiet_since: dict[str, float] = {}  # monotonic time of last message or rebuild
        self.watchdog_s = watchdog_s
        self._rcvhwm = rcvhwm
        self.stats: dict[str, EndpointStats] = {}
        self._closed = False
        for endpoint in endpoints:
            self.add(endpoint)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The connected endpoints, in the order they were added."""
        return tuple(self._sockets)

    def _connect(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.SUBSCRIBE, TOPIC_PREFIX)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from None
        self._poller.register(sock, zmq.POLLIN)
        self._sockets[endpoint] = sock
        self._by_socket[sock] = endpoint
        self._quiet_since[endpoint] = time.monotonic()
        return sock

    def _disconnect(self, endpoint: str) -> None:
        sock = self._sockets.pop(endpoint)
        del self._by_socket[sock]
        self._poller.unregister(sock)
        sock.close(0)

    def add(self, endpoint: str) -> None:
        """Connect to ``endpoint`` (no-op if already connected).

        Raises:
            ValueError: libzmq rejects the endpoint string.
        """
        if endpoint in self._sockets:
            return
        self._connect(endpoint)
        self.stats.setdefault(endpoint, EndpointStats())

    def remove(self, endpoint: str) -> None:
        """Disconnect from ``endpoint`` and forget its counters (no-op if unknown)."""
        if endpoint not in self._sockets:
            return
        self._disconnect(endpoint)
        self._quiet_since.pop(endpoint, None)
        self.stats.pop(endpoint, None)

    def poll(self, timeout: float, max_messages: int = 10_000) -> list[Received]:
        """Wait up to ``timeout`` s for messages, then drain what is ready.

        Args:
            timeout: seconds to wait for the first message.
            max_messages: at most this many messages are read, valid or malformed, visiting
                the ready endpoints round-robin.

        Returns:
            The decoded messages (possibly none). Malformed frames are counted in
            ``stats[endpoint].malformed`` and dropped.
        """
        out: list[Received] = []
        if self._sockets:
            ready = list(dict(self._poller.poll(round(max(timeout, 0.0) * 1000))))
            # Round-robin in small chunks so one flooding run cannot starve the others; the
            # budget counts malformed frames too, so a garbage flood cannot spin us forever.
            budget = max_messages
            while ready and budget > 0:
                for sock in list(ready):
                    chunk = min(_CHUNK, budget)
                    taken, more = self._drain(sock, out, chunk)
                    budget -= taken
                    if not more:
                        ready.remove(sock)
                    if budget <= 0:
                        break
        elif timeout > 0:
            time.sleep(timeout)  # nothing to wait on; keep the caller's pacing
        self._watchdog()
        return out

    def _drain(self, sock: zmq.Socket[bytes], out: list[Received], chunk: int) -> tuple[int, bool]:
        """Receive up to ``chunk`` messages into ``out``.

        Returns:
            (messages taken, valid or not; False in second place once the socket is empty).
        """
        endpoint = self._by_socket[sock]
        counters = self.stats[endpoint]
        for taken in range(chunk):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return taken, False
            try:
                message = decode(frames)
            except ProtocolError:
                counters.malformed += 1
                continue
            now = time.time()
            counters.received += 1
            counters.last_message = now
            self._quiet_since[endpoint] = time.monotonic()
            out.append(Received(endpoint, message, now))
        return chunk, True

    def _watchdog(self) -> None:
        now = time.monotonic()
        for endpoint, since in list(self._quiet_since.items()):
            if now - since >= self.watchdog_s:
                self._disconnect(endpoint)
                self._connect(endpoint)
                self.stats[endpoint].rebuilds += 1

    def close(self) -> None:
        """Close every socket and the context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for endpoint in list(self._sockets):
            self._disconnect(endpoint)
        self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
