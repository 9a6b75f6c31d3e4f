"""Endpoint strings: which ones a publisher may bind, and how to tell a run id from an endpoint.

Until authentication exists, a publisher binds only where nobody else can reach it: a private
``ipc://`` socket in the 0700 runtime directory (the default) or TCP on a loopback address.
Remote viewers come in through an SSH tunnel to that loopback port.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Final

from gradtui.errors import GradtuiError

# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), including the NUL.
_MAX_IPC_PATH: Final = 103
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class EndpointError(GradtuiError):
    """An endpoint that cannot or must not be used (not loopback, malformed, in use)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=2)


def is_endpoint(text: str) -> bool:
    """True for ``scheme://...`` strings; anything else is a run id or name."""
    return "://" in text


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint, else None."""
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


def ipc_in_use(path: Path) -> bool:
    """True when something is listening on the unix socket at ``path``.

    libzmq silently unlinks and replaces an existing ipc socket file on bind, which would
    steal a live run's viewers; probing with a plain connect tells live from stale.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.2)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_address(endpoint: str) -> str:
    """Validate a bind endpoint and normalise it to what libzmq accepts.

    ``tcp://127.0.0.1:*``, ``tcp://localhost:0`` and ``tcp://[::1]:0`` mean "a random free
    port"; the publisher reports the real one. Any non-loopback address is refused.

    Raises:
        EndpointError: malformed, non-loopback, unsupported scheme, or ipc path too long.
    """
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path or path == "*":
            raise EndpointError(f"{endpoint}: give an ipc socket path")
        if len(path.encode()) > _MAX_IPC_PATH:
            raise EndpointError(
                f"{endpoint}: ipc path longer than {_MAX_IPC_PATH} bytes "
                "(set GRADTUI_RUNTIME_DIR to a shorter directory or use tcp://127.0.0.1:*)"
            )
        return endpoint
    if not endpoint.startswith("tcp://"):
        scheme = endpoint.split("://", 1)[0] if "://" in endpoint else endpoint
        raise EndpointError(f"{scheme!r}: only tcp://<loopback>:PORT and ipc://PATH can be bound")
    rest = endpoint[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise EndpointError(f"{endpoint}: expected tcp://HOST:PORT")
    if not _is_loopback(host):
        raise EndpointError(
            f"{endpoint}: refusing to bind a non-loopback address (no authentication yet); "
            "bind 127.0.0.1 and reach it through an SSH tunnel"
        )
    if port in ("*", "0"):
        port = "*"
    elif not (port.isdigit() and 0 < int(port) < 65536):
        raise EndpointError(f"{endpoint}: bad port {port!r}")
    if host.lower() == "localhost":
        host = "127.0.0.1"  # libzmq would otherwise resolve it per bind, maybe to ::1
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
