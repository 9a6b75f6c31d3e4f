"""A relay: many publishers in, one endpoint out (ZeroMQ's XSUB/XPUB proxy).

Trainers on several nodes *connect* a PUB to the relay's frontend (XSUB); viewers and
recorders connect a SUB to its backend (XPUB). Subscriptions flow upstream, so a publisher
only sends what someone wants. The relay is the stable side, so it binds both.

The proxy runs ``zmq.proxy_steerable`` in a thread; ``close()`` sends ``TERMINATE`` on the
control socket, so the relay stops promptly on Ctrl-C/SIGTERM and never hangs on exit
(LINGER 0 everywhere).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Final

import zmq

from gradtui.endpoints import EndpointError
from gradtui.protocol import MAX_MESSAGE_BYTES
from gradtui.security import CurveAuth, KeyPair, check_bind_policy, configure_curve_server

_HWM: Final = 10_000
_CONTROL: Final = "inproc://gradtui-relay-control-{}"


class Relay:
    """An XSUB (frontend) -> XPUB (backend) forwarder.

    Args:
        frontend: where publishers connect, e.g. ``tcp://127.0.0.1:*`` or ``tcp://0.0.0.0:5555``.
        backend: where viewers connect.
        curve: the relay's key pair; with it both sides are CURVE servers.
        allowed: client public keys (publishers and viewers) accepted when ``curve`` is set.
        insecure: allow a non-loopback bind without CURVE (``warnings`` says so).

    Raises:
        SecurityError: a non-loopback endpoint without CURVE or ``insecure``.
        EndpointError: an endpoint that cannot be bound.
    """

    def __init__(
        self,
        frontend: str,
        backend: str,
        *,
        curve: KeyPair | None = None,
        allowed: Iterable[bytes] = (),
        insecure: bool = False,
    ) -> None:
        self.warnings: list[str] = []
        """Messages the caller must show at every start (insecure non-loopback binds)."""
        for endpoint in (frontend, backend):
            warning = check_bind_policy(endpoint, curve=curve is not None, insecure=insecure)
            if warning:
                self.warnings.append(warning)
        allowed_keys = frozenset(allowed)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._auth: list[CurveAuth] = []
        self._sockets: list[zmq.Socket[bytes]] = []
        try:
            xsub = self._socket(zmq.XSUB, curve, allowed_keys)
            xsub.setsockopt(zmq.RCVHWM, _HWM)
            xsub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # a hostile peer can't pin memory
            xpub = self._socket(zmq.XPUB, curve, allowed_keys)
            xpub.setsockopt(zmq.SNDHWM, _HWM)
            self.frontend = self._bind(xsub, frontend)
            """The bound frontend endpoint (real port)."""
            self.backend = self._bind(xpub, backend)
            """The bound backend endpoint (real port)."""
            control_address = _CONTROL.format(id(self))
            control = self._socket(zmq.PAIR, None, frozenset())
            control.bind(control_address)
            self._steer = self._socket(zmq.PAIR, None, frozenset())
            self._steer.connect(control_address)
        except BaseException:
            self._teardown()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(xsub, xpub, control), name="gradtui-relay", daemon=True
        )
        self.error: BaseException | None = None
        self._thread.start()

    def _socket(
        self, kind: int, curve: KeyPair | None, allowed: frozenset[bytes]
    ) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(kind)
        self._sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self._auth.append(configure_curve_server(sock, curve, allowed))
        return sock

    @staticmethod
    def _bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise EndpointError(f"cannot bind {endpoint}: {exc}") from None
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _run(
        self, xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], control: zmq.Socket[bytes]
    ) -> None:
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                self.error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the proxy stops (True) or ``timeout`` passes (False)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the proxy, close every socket, terminate the context. Idempotent."""
        if self._thread.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self._steer.send(b"TERMINATE", zmq.NOBLOCK)
            self._thread.join(timeout)
        self._teardown()

    def _teardown(self) -> None:
        for sock in self._sockets:
            sock.close(0)
        self._sockets.clear()
        for auth in self._auth:
            auth.release()
        self._auth.clear()
        if not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
