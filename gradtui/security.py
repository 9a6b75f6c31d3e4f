"""CURVE keys and the bind policy: what it takes to listen beyond loopback.

Loopback TCP and ``ipc://`` sockets in the 0700 runtime directory need no keys: only local
users can reach them, and remote viewers come in through SSH. Anything else must use CURVE
(encryption + an allow-list of client public keys checked by a ZAP handler) or be explicitly
``--insecure``, which warns at every start.

Key files use the ZPL certificate format of ``zmq.auth.create_certificates``: ``NAME.key``
holds the public key, ``NAME.key_secret`` both keys and is created mode 0600.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import stat
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gradtui.errors import GradtuiError

if TYPE_CHECKING:
    import zmq

# 4.3.2 fixed CVE-2019-13132, a remote stack overflow reachable before CURVE authentication.
MIN_LIBZMQ: Final = (4, 3, 2)
PUBLIC_SUFFIX: Final = ".key"
SECRET_SUFFIX: Final = ".key_secret"
_Z85_KEY: Final = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_KEY_LINE: Final = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]*)"\s*$', re.MULTILINE)
_NAME: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SecurityError(GradtuiError):
    """A key, key file or bind policy problem the user must fix; exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=2)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as Z85 text (40 bytes each)."""

    public: bytes
    secret: bytes


# --------------------------------------------------------------------------- key files


def default_key_dir() -> Path:
    """``$XDG_CONFIG_HOME/gradtui/keys`` (``~/.config/gradtui/keys``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gradtui" / "keys"


def _valid_key(key: bytes) -> bool:
    if not _Z85_KEY.match(key):
        return False
    from zmq.utils import z85  # deferred: keep this module importable without loading zmq

    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError):
        return False


def _cert_text(name: str, pair: KeyPair, with_secret: bool) -> str:
    lines = [
        f"#   ****  gradtui CURVE {'secret ' if with_secret else ''}certificate: {name}  ****",
        "#   Keep this file private (mode 0600); it proves the holder's identity."
        if with_secret
        else "#   Public key: copy it to the peers that must accept this identity.",
        "",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{pair.public.decode()}"',
    ]
    if with_secret:
        lines.append(f'    secret-key = "{pair.secret.decode()}"')
    return "\n".join(lines) + "\n"


def generate_keypair(
    directory: Path | str, name: str = "gradtui", *, force: bool = False
) -> tuple[Path, Path]:
    """Create ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in ``directory``.

    The directory is created 0700 when missing. Existing files are kept unless ``force``.

    Returns:
        ``(public_path, secret_path)``.

    Raises:
        SecurityError: bad name, files exist, or libzmq lacks CURVE.
    """
    import zmq

    if not _NAME.match(name):
        raise SecurityError(f"key name {name!r}: use 1-64 of [A-Za-z0-9._-]")
    if not zmq.has("curve"):
        raise SecurityError("this libzmq was built without CURVE support")
    folder = Path(directory).expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    if not force and (public_path.exists() or secret_path.exists()):
        raise SecurityError(f"{secret_path} already exists (pass --force to replace it)")
    public, secret = zmq.curve_keypair()
    pair = KeyPair(public=public, secret=secret)
    for path, mode, with_secret in ((secret_path, 0o600, True), (public_path, 0o644, False)):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        # Created with its final mode: the secret is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have removed bits from a public file
            fh.write(_cert_text(name, pair, with_secret))
        os.replace(tmp, path)
    return public_path, secret_path


def _keys_in(path: Path, text: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for kind, value in _KEY_LINE.findall(text):
        key = value.encode("ascii", "replace")
        if not _valid_key(key):
            raise SecurityError(f"{path}: the {kind} key is not a valid Z85 CURVE key")
        found[kind] = key
    return found


def load_public_key(path: Path | str) -> bytes:
    """The public key of a ``.key`` or ``.key_secret`` file (or a file holding just the key).

    Raises:
        SecurityError: unreadable file or no valid public key in it.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise SecurityError(f"cannot read key file {p}: {exc.strerror}") from None
    bare = text.strip().encode("ascii", "replace")
    if _valid_key(bare):
        return bare
    keys = _keys_in(p, text)
    if "public" not in keys:
        raise SecurityError(f"{p}: no public-key line found")
    return keys["public"]


def load_secret_key(path: Path | str) -> KeyPair:
    """Load a ``.key_secret`` file, refusing one that others could read.

    Raises:
        SecurityError: missing file, group/world-accessible mode, another owner, or no keys.
    """
    p = Path(path).expanduser()
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SecurityError(f"cannot open secret key {p}: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as fh:
        info = os.fstat(fh.fileno())  # of the file we opened, not of whatever the path is now
        if not stat.S_ISREG(info.st_mode):
            raise SecurityError(f"secret key {p} is not a regular file")
        if info.st_mode & 0o077:
            raise SecurityError(
                f"secret key {p} is accessible by group/others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {p}`"
            )
        if info.st_uid != os.getuid():
            raise SecurityError(f"secret key {p} belongs to another user; refusing to use it")
        text = fh.read()
    keys = _keys_in(p, text)
    if "secret" not in keys or "public" not in keys:
        raise SecurityError(f"{p}: expected public-key and secret-key lines")
    return KeyPair(public=keys["public"], secret=keys["secret"])


def load_allowed_keys(paths: Iterable[Path | str]) -> frozenset[bytes]:
    """Public keys from files and directories (every ``*.key`` file in a directory).

    Raises:
        SecurityError: a file without a valid key, or a directory without ``*.key`` files.
    """
    keys: set[bytes] = set()
    for item in paths:
        p = Path(item).expanduser()
        if p.is_dir():
            files = sorted(p.glob(f"*{PUBLIC_SUFFIX}"))
            if not files:
                raise SecurityError(f"no *{PUBLIC_SUFFIX} files in {p}")
            keys.update(load_public_key(f) for f in files)
        else:
            keys.add(load_public_key(p))
    return frozenset(keys)


# --------------------------------------------------------------------------- sockets


def require_curve(
    version: tuple[int, int, int] | None = None, has_curve: bool | None = None
) -> None:
    """Refuse a libzmq without CURVE or older than ``MIN_LIBZMQ`` (args: for tests).

    Raises:
        SecurityError: CURVE unavailable or libzmq too old.
    """
    import zmq

    version = version if version is not None else zmq.zmq_version_info()
    has_curve = has_curve if has_curve is not None else bool(zmq.has("curve"))
    if not has_curve:
        raise SecurityError("this libzmq has no CURVE support; cannot listen beyond loopback")
    if tuple(version) < MIN_LIBZMQ:
        want = ".".join(map(str, MIN_LIBZMQ))
        have = ".".join(map(str, version))
        raise SecurityError(f"libzmq {have} is too old for non-loopback use; need >= {want}")


class CurveAuth:
    """A ZAP handler (pyzmq's ``ThreadAuthenticator``) with one allow-list per server socket.

    One handler serves a whole context; each socket gets its own ZAP domain, so two server
    sockets in one process can trust different clients. Stop it before terminating the context.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.context = context
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._users = 0

    @classmethod
    def for_context(cls, context: zmq.Context[zmq.Socket[bytes]]) -> CurveAuth:
        """The context's handler, started on first use."""
        with _AUTH_LOCK:
            auth = _AUTH_BY_CONTEXT.get(context)
            if auth is None:
                auth = _AUTH_BY_CONTEXT[context] = cls(context)
            auth._users += 1
            return auth

    def allow(self, keys: frozenset[bytes]) -> str:
        """A new ZAP domain accepting exactly ``keys`` (Z85); returns the domain name."""
        domain = f"gradtui-{next(_DOMAINS)}"
        self._auth.configure_curve_callback(domain, _AllowList(keys))
        return domain

    def release(self) -> None:
        """Drop one user; the last one stops the handler thread."""
        with _AUTH_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            _AUTH_BY_CONTEXT.pop(self.context, None)
        self._auth.stop()


_AUTH_LOCK: Final = threading.Lock()
_AUTH_BY_CONTEXT: weakref.WeakKeyDictionary[zmq.Context[zmq.Socket[bytes]], CurveAuth] = (
    weakref.WeakKeyDictionary()
)
_DOMAINS: Final = itertools.count()


@dataclass(frozen=True, slots=True)
class _AllowList:
    keys: frozenset[bytes]

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def configure_curve_server(
    socket: zmq.Socket[bytes], keypair: KeyPair, allowed_client_public_keys: Iterable[bytes]
) -> CurveAuth:
    """Make ``socket`` a CURVE server accepting only the given clients. Call before ``bind``.

    Returns:
        The context's ZAP handler; call ``release()`` on it when the socket is closed.

    Raises:
        SecurityError: CURVE unavailable, libzmq too old, or an invalid key.
    """
    import zmq

    require_curve()
    allowed = frozenset(allowed_client_public_keys)
    if not allowed:
        raise SecurityError("CURVE server with an empty allow-list: nobody could connect")
    for key in (keypair.public, keypair.secret, *allowed):
        if not _valid_key(key):
            raise SecurityError("invalid Z85 CURVE key")
    auth = CurveAuth.for_context(socket.context)
    socket.setsockopt(zmq.ZAP_DOMAIN, auth.allow(allowed).encode())
    socket.setsockopt(zmq.CURVE_SECRETKEY, keypair.secret)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keypair.public)
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    return auth


def configure_curve_client(
    socket: zmq.Socket[bytes], keypair: KeyPair, server_public_key: bytes
) -> None:
    """Make ``socket`` a CURVE client of the server with ``server_public_key``. Before connect.

    Raises:
        SecurityError: CURVE unavailable, libzmq too old, or an invalid key.
    """
    import zmq

    require_curve()
    for key in (keypair.public, keypair.secret, server_public_key):
        if not _valid_key(key):
            raise SecurityError("invalid Z85 CURVE key")
    socket.setsockopt(zmq.CURVE_SERVERKEY, server_public_key)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keypair.public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, keypair.secret)


# --------------------------------------------------------------------------- bind policy


def is_local_endpoint(endpoint: str) -> bool:
    """True for ``ipc://``, ``inproc://`` and TCP on a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a hostname: may be reachable from outside


def check_bind_policy(endpoint: str, *, curve: bool, insecure: bool) -> str | None:
    """May ``endpoint`` be bound? Loopback/ipc always; anything else needs CURVE or insecure.

    Returns:
        None, or a warning the caller must print at every start (``insecure`` non-loopback).

    Raises:
        SecurityError: non-loopback without CURVE or ``insecure``, or CURVE unusable here.
    """
    if is_local_endpoint(endpoint):
        return None
    if curve:
        require_curve()
        return None
    if insecure:
        return (
            f"WARNING: {endpoint} is bound WITHOUT authentication or encryption: anyone who "
            "can reach it can read this telemetry (use CURVE keys: gradtui keygen)"
        )
    raise SecurityError(
        f"{endpoint} is not loopback: use CURVE keys (gradtui keygen) or --insecure, "
        "or bind 127.0.0.1 and reach it through an SSH tunnel"
    )
