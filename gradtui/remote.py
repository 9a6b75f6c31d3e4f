"""Remote runs over SSH: discovery (``gradtui ls --json`` on the far side) and port-forward tunnels.

Only the system's OpenSSH client is used, as a subprocess, so the user's ``~/.ssh/config``,
agent, keys and ``known_hosts`` apply unchanged. ``BatchMode=yes`` is always the first option:
ssh must never prompt for a password or a host key inside a TUI; a failure becomes one line.

A ``Tunnel`` owns one ``ssh -N -L`` child. Its supervisor thread spawns the child and restarts it
when it dies, keeping the same local port so a ZeroMQ socket connected to ``local_endpoint`` just
reconnects. Children never outlive the viewer: each runs in its own process group (killed on
close and at interpreter exit) and asks the kernel for SIGTERM when its parent thread dies
(``PR_SET_PDEATHSIG``), which covers ``kill -9`` of the viewer.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gradtui.errors import GradtuiError

if TYPE_CHECKING:
    import argparse

    from gradtui.registry import RunEntry

_PR_SET_PDEATHSIG: Final = 1
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_LS_BYTES: Final = 4 * 1024 * 1024
# Options after the user's: ssh keeps the first value it sees, so the user's -o wins.
_TUNNEL_DEFAULTS: Final = (
    "-o",
    "ExitOnForwardFailure=yes",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
    "-o",
    "ConnectTimeout=10",
    # A multiplexed master would own the forward and our child's lifetime would mean nothing.
    "-o",
    "ControlPath=none",
)


def add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    """The remote options every viewer-side command shares (watch, ls, tail, record)."""
    parser.add_argument(
        "--ssh",
        metavar="[USER@]HOST[:PORT]",
        help="runs on this host, found and tunnelled with your ssh (keys/agent; never prompts)",
    )
    parser.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra ssh -o option, e.g. ProxyJump=bastion (repeatable)",
    )
    parser.add_argument("--ssh-config", metavar="FILE", help="ssh config file (ssh -F)")
    parser.add_argument(
        "--remote-cmd",
        default="gradtui",
        metavar="CMD",
        help="how to run gradtui on the host (default: gradtui), e.g. ~/venv/bin/gradtui",
    )
    parser.add_argument(
        "--remote-runtime-dir",
        metavar="DIR",
        help="the host's GRADTUI_RUNTIME_DIR, when its trainers use a non-default one",
    )


def ssh_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``discover``/``RemoteRuns`` from ``add_ssh_arguments`` options."""
    options: list[str] = []
    if args.ssh_config:
        options += ["-F", args.ssh_config]
    for opt in args.ssh_option:
        options += ["-o", opt]
    env = {"GRADTUI_RUNTIME_DIR": args.remote_runtime_dir} if args.remote_runtime_dir else {}
    return {"ssh_options": tuple(options), "remote_cmd": args.remote_cmd, "remote_env": env}


class RemoteError(GradtuiError):
    """An SSH failure (unreachable host, host key, authentication, remote command) in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=2)


@dataclass(frozen=True, slots=True)
class SshTarget:
    """A parsed ``[user@]host[:port]`` (``[v6addr]:port`` for IPv6 literals)."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """The ``user@host`` argument for ssh."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text


def parse_target(text: str) -> SshTarget:
    """Parse ``[user@]host[:port]``; a bare IPv6 address may be written ``[::1]:2222``.

    Raises:
        RemoteError: empty parts, a bad port, or characters ssh would read as an option.
    """
    user: str | None = None
    rest = text.strip()
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user:
            raise RemoteError(f"{text!r}: empty user name")
    port: int | None = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise RemoteError(f"{text!r}: expected [ADDRESS]:PORT")
        port_text = tail[1:] if tail else ""
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""  # a bare IPv6 address has several colons and no port
    if port_text:
        if not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise RemoteError(f"{text!r}: bad port {port_text!r}")
        port = int(port_text)
    # A leading '-' would make ssh parse the host as an option.
    for part in (host, user or "x"):
        if not part or part.startswith("-") or _CONTROL_CHARS.search(part) or " " in part:
            raise RemoteError(f"{text!r}: not a valid [user@]host[:port]")
    return SshTarget(host=host, user=user, port=port)


def ssh_command(
    target: SshTarget, ssh_options: Sequence[str] = (), *, ssh: str = "ssh"
) -> list[str]:
    """The ssh argv up to (and including) the destination, with ``BatchMode=yes`` first."""
    argv = [ssh, "-o", "BatchMode=yes", *ssh_options]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    return argv


def _clean(text: str) -> str:
    return _CONTROL_CHARS.sub(" ", text).strip()


def explain_ssh_failure(target: SshTarget | str, stderr: str) -> str:
    """One line for the user from ssh's stderr (host key, auth, network), no banner noise."""
    lines = [_clean(line) for line in stderr.splitlines()]
    lines = [line for line in lines if line and not set(line) <= {"@", " "}]
    where = f"ssh {target}"
    if any("REMOTE HOST IDENTIFICATION HAS CHANGED" in line for line in lines):
        return (
            f"{where}: the host key has CHANGED since it was recorded in known_hosts "
            "(possible man-in-the-middle); verify it, then fix known_hosts with ssh-keygen -R"
        )
    if any("Host key verification failed" in line for line in lines):
        return (
            f"{where}: host key verification failed (the host is not in known_hosts; "
            "connect once with plain `ssh` to check and accept its key)"
        )
    for line in lines:
        if "Permission denied" in line:
            return (
                f"{where}: authentication failed ({line}); "
                "gradtui never prompts: load your key into ssh-agent or configure IdentityFile"
            )
    for line in lines:
        if "Address already in use" in line:
            return f"{where}: local forward failed: {line}"
    real = [line for line in lines if not line.startswith("Warning: Permanently added")]
    return f"{where}: {real[-1] if real else 'ssh failed with no message'}"


def remote_command(
    remote_cmd: str, args: Sequence[str], remote_env: Mapping[str, str] | None = None
) -> str:
    """The command line the remote shell runs.

    ``remote_cmd`` is a shell fragment the user chose (``gradtui``, ``~/venv/bin/gradtui``,
    ``python -m gradtui``) and is passed as is; ``args`` and ``remote_env`` values are quoted.
    """
    parts: list[str] = []
    if remote_env:
        parts.append("env")
        for key, value in remote_env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise RemoteError(f"bad environment variable name {key!r}")
            parts.append(shlex.quote(f"{key}={value}"))
    parts.append(remote_cmd)
    parts.extend(shlex.quote(a) for a in args)
    return " ".join(parts)


_ENTRY_DEFAULTS: Final[dict[str, Any]] = {"pid": 0, "host": "", "started": 0.0}


def _entry(raw: Any) -> RunEntry | None:
    """A RunEntry from untrusted JSON, or None when a field is missing or mistyped.

    Fields RunEntry gains later (e.g. a snapshot endpoint) are taken when their type matches
    their default's, so an older or newer gradtui on the remote side still works.
    """
    # Deferred: the registry pulls in numpy; this module stays cheap for command modules.
    from gradtui.protocol import valid_run_id
    from gradtui.registry import RunEntry

    if not isinstance(raw, dict) or "run" not in raw or "endpoint" not in raw:
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RunEntry):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = _ENTRY_DEFAULTS.get(f.name, raw["run"] if f.name == "name" else "")
        value = raw.get(f.name, default)
        want: type | tuple[type, ...] = (
            (int, float) if isinstance(default, float) else type(default)
        )
        if isinstance(value, bool) or not isinstance(value, want):
            return None
        if isinstance(value, str) and len(value) > 4096:
            return None
        values[f.name] = value
    entry = RunEntry(**values)
    return entry if valid_run_id(entry.run) and entry.endpoint else None


def discover(
    host: str | SshTarget,
    *,
    ssh_options: Sequence[str] = (),
    remote_cmd: str = "gradtui",
    remote_env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    ssh: str = "ssh",
) -> list[RunEntry]:
    """The live runs on ``host``: runs ``gradtui ls --json`` there over SSH.

    Args:
        host: ``[user@]host[:port]`` or a parsed target.
        ssh_options: extra ssh arguments (e.g. ``("-F", "cfg")`` or ``("-o", "X=y")``).
        remote_cmd: how to start gradtui on the remote side (a shell fragment).
        remote_env: environment for the remote command, e.g. ``{"GRADTUI_RUNTIME_DIR": ...}``.
        timeout: seconds before the ssh child is killed.

    Raises:
        RemoteError: ssh failed (one line from its stderr), the remote command is missing
            or failed, or it printed something that is not the expected JSON.
    """
    target = host if isinstance(host, SshTarget) else parse_target(host)
    argv = [
        *ssh_command(target, ssh_options, ssh=ssh),
        "-T",
        "--",
        target.destination,
        remote_command(remote_cmd, ["ls", "--json"], remote_env),
    ]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=True,  # a Ctrl-C meant for the TUI must not reach ssh
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RemoteError(f"ssh {target}: no answer within {timeout:g} s") from None
    except FileNotFoundError:
        raise RemoteError(f"{ssh!r} not found: install the OpenSSH client") from None
    stderr = done.stderr.decode(errors="replace")
    if done.returncode == 255:
        raise RemoteError(explain_ssh_failure(target, stderr))
    if done.returncode == 127:
        raise RemoteError(
            f"ssh {target}: remote command {remote_cmd!r} not found "
            "(install gradtui there or pass the remote command's path)"
        )
    if done.returncode != 0:
        last = [_clean(x) for x in stderr.splitlines() if x.strip()]
        detail = last[-1] if last else f"exit status {done.returncode}"
        raise RemoteError(f"ssh {target}: {remote_cmd} ls failed: {detail}")
    return parse_run_list(done.stdout, f"ssh {target}: `{remote_cmd} ls --json`")


def parse_run_list(output: bytes, where: str = "gradtui ls --json") -> list[RunEntry]:
    """The runs in ``gradtui ls --json`` output (untrusted: malformed entries are skipped).

    Raises:
        RemoteError: output too large, not JSON, or not a list.
    """
    if len(output) > _MAX_LS_BYTES:
        raise RemoteError(f"{where}: output larger than {_MAX_LS_BYTES} bytes")
    try:
        raw = json.loads(output.decode(errors="replace") or "[]")
    except ValueError:
        raise RemoteError(f"{where} did not print JSON") from None
    if not isinstance(raw, list):
        raise RemoteError(f"{where} did not print a list")
    return [e for e in (_entry(item) for item in raw) if e is not None]


def forward_target(remote_endpoint: str) -> str:
    """The ``-L`` target for a remote endpoint: ``127.0.0.1:PORT`` or a unix socket path.

    Raises:
        RemoteError: not a tcp loopback or ipc endpoint (other hosts are not tunnelled).
    """
    if remote_endpoint.startswith("ipc://"):
        path = remote_endpoint[len("ipc://") :]
        if not path.startswith("/"):
            raise RemoteError(f"{remote_endpoint}: only absolute ipc paths can be forwarded")
        return path
    if remote_endpoint.startswith("tcp://"):
        host, sep, port = remote_endpoint[len("tcp://") :].rpartition(":")
        if sep and port.isdigit() and 0 < int(port) < 65536:
            if host in ("127.0.0.1", "localhost"):
                return f"127.0.0.1:{port}"
            if host in ("[::1]", "::1"):
                return f"[::1]:{port}"
    raise RemoteError(f"{remote_endpoint}: only tcp://127.0.0.1:PORT and ipc:// can be tunnelled")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listens(pid: int, port: int) -> bool:
    """True when process ``pid`` holds the socket listening on 127.0.0.1:``port``.

    A plain connect would also succeed against another program that took the port; on Linux
    the listener's inode in /proc/net/tcp is matched against the process's fds instead.
    """
    try:
        with open("/proc/net/tcp", encoding="ascii") as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
    except OSError:
        return _accepts(port)  # no /proc (macOS): fall back to "something accepts"
    inodes = {
        f"socket:[{row[9]}]"
        for row in rows
        if len(row) > 9 and row[1] == f"0100007F:{port:04X}" and row[3] == "0A"
    }
    if not inodes:
        return False
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False  # the process is gone
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") in inodes:
                return True
        except OSError:
            continue  # closed while we looked
    return False


def _port_taken(error: str | None) -> bool:
    return error is not None and (
        "Address already in use" in error or "cannot listen to port" in error
    )


def _drain_tail(proc: subprocess.Popen[bytes], keep: int = 8192) -> str:
    """Read the child's stderr to EOF (so it never blocks on a full pipe), keep the tail."""
    assert proc.stderr is not None
    tail = b""
    fd = proc.stderr.fileno()
    while chunk := os.read(fd, 4096):
        tail = (tail + chunk)[-keep:]
    proc.wait()
    proc.stderr.close()
    return tail.decode(errors="replace")


def _libc_prctl() -> Callable[[], None] | None:
    # Loaded in the parent: the child (between fork and exec) must not import or allocate much.
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    parent = os.getpid()

    def set_pdeathsig() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return set_pdeathsig


_LIVE: weakref.WeakSet[Tunnel] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for tunnel in list(_LIVE):
        tunnel.close()


class Tunnel:
    """``ssh -N -L 127.0.0.1:<local port>:<remote target>`` kept alive until closed.

    Args:
        host: ``[user@]host[:port]`` or a parsed target.
        remote_endpoint: the remote run's endpoint (``tcp://127.0.0.1:PORT`` or ``ipc://PATH``).
        ssh_options: extra ssh arguments, placed before gradtui's defaults so they win.
        local_port: fixed local port; default a free one (kept across restarts).
        restart_delay: first pause before re-spawning a dead ssh; doubles up to 10 s.

    ``start()`` waits until ssh itself listens on the local port (its socket inode, read
    from /proc, among the child's fds: a plain connect would be fooled by another program).
    A supervisor thread re-spawns ssh whenever it exits; ``restarts`` counts that and
    ``last_error`` holds ssh's last failure in one line. The supervisor thread spawns the
    child on purpose: ``PR_SET_PDEATHSIG`` fires when the spawning *thread* exits.
    """

    def __init__(
        self,
        host: str | SshTarget,
        remote_endpoint: str,
        *,
        ssh_options: Sequence[str] = (),
        local_port: int | None = None,
        restart_delay: float = 0.2,
        ssh: str = "ssh",
    ) -> None:
        self.target = host if isinstance(host, SshTarget) else parse_target(host)
        self.remote_endpoint = remote_endpoint
        self._forward = forward_target(remote_endpoint)
        self._options = tuple(ssh_options)
        self._ssh = ssh
        self._auto_port = local_port is None
        self.local_port = local_port if local_port is not None else free_port()
        self._restart_delay = restart_delay
        self.restarts = 0
        """How many times ssh was re-spawned after it exited."""
        self.last_error: str | None = None
        """ssh's most recent failure, one line; cleared by a successful start/wait_ready."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._preexec = _libc_prctl()

    @property
    def local_endpoint(self) -> str:
        """Where to connect locally: ``tcp://127.0.0.1:PORT``."""
        return f"tcp://127.0.0.1:{self.local_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the current ssh child (None between restarts)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def argv(self) -> list[str]:
        """The ssh command line of the child."""
        return [
            *ssh_command(self.target, self._options, ssh=self._ssh),
            *_TUNNEL_DEFAULTS,
            "-N",
            "-T",
            "-L",
            f"127.0.0.1:{self.local_port}:{self._forward}",
            "--",
            self.target.destination,
        ]

    def start(self, timeout: float = 15.0) -> Tunnel:
        """Spawn ssh and wait until it listens on the local port.

        Raises:
            RemoteError: ssh exited (host key, auth, forward failure) or timed out; the
                tunnel is closed then.
        """
        if self._thread is None:
            _LIVE.add(self)
            self._thread = threading.Thread(
                target=self._supervise, name=f"gradtui-tunnel-{self.local_port}", daemon=True
            )
            self._thread.start()
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline and not self._closing.is_set():
            if self.restarts > seen:
                seen = self.restarts
                if not (self._auto_port and seen <= 3 and _port_taken(self.last_error)):
                    break  # ssh exited: report why
                # Someone took the free port between our probe and ssh's bind: pick another
                # (the supervisor's next spawn reads it).
                self.local_port = free_port()
            pid = self.pid
            if pid is not None and _listens(pid, self.local_port):
                self.last_error = None
                return self
            time.sleep(0.02)
        message = self.last_error or f"ssh {self.target}: tunnel not ready within {timeout:g} s"
        self.close()
        raise RemoteError(message)

    def wait_ready(self, timeout: float) -> bool:
        """True once ssh listens on the local port again (e.g. after a restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._closing.is_set():
            pid = self.pid
            if pid is not None and _listens(pid, self.local_port):
                self.last_error = None
                return True
            time.sleep(0.02)
        return False

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: killpg on close, no stray Ctrl-C
            preexec_fn=self._preexec,  # only prctl + getppid: safe between fork and exec
        )

    def _supervise(self) -> None:
        delay = self._restart_delay
        while not self._closing.is_set():
            with self._lock:
                if self._closing.is_set():
                    return
                try:
                    proc = self._spawn()
                except OSError as exc:
                    self.last_error = f"cannot run {self._ssh!r}: {exc.strerror}"
                    self.restarts += 1
                    self._closing.wait(delay)
                    continue
                self._proc = proc
            started = time.monotonic()
            err = _drain_tail(proc)
            if self._closing.is_set():
                return
            self.last_error = (
                explain_ssh_failure(self.target, err)
                if err.strip()
                else (f"ssh {self.target}: tunnel exited with status {proc.returncode}")
            )
            self.restarts += 1
            # A tunnel that lived a while was healthy: restart fast; a failing one backs off.
            delay = self._restart_delay if time.monotonic() - started > 10 else min(delay * 2, 10)
            self._closing.wait(delay)

    def close(self, timeout: float = 2.0) -> None:
        """Kill the ssh child's process group and stop the supervisor. Idempotent."""
        self._closing.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _LIVE.discard(self)

    def __enter__(self) -> Tunnel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteRuns:
    """Keeps tunnels open to the live runs of one remote host.

    ``refresh()`` rediscovers the runs and reconciles tunnels (opens for new runs, closes for
    gone ones); ``start()`` calls it every ``interval`` seconds in a background thread. The
    viewer polls ``endpoints()`` (run id -> local endpoint) and ``local_for()`` for other remote
    endpoints it learns about (a run's snapshot service from its ``hello``).

    Args:
        host: ``[user@]host[:port]``.
        ssh_options, remote_cmd, remote_env: as for ``discover``.
        interval: seconds between rediscoveries in the background thread.
    """

    def __init__(
        self,
        host: str,
        *,
        ssh_options: Sequence[str] = (),
        remote_cmd: str = "gradtui",
        remote_env: Mapping[str, str] | None = None,
        interval: float = 5.0,
        ssh: str = "ssh",
    ) -> None:
        self.target = parse_target(host)
        self._options = tuple(ssh_options)
        self._remote_cmd = remote_cmd
        self._remote_env = dict(remote_env or {})
        self._ssh = ssh
        self.interval = interval
        self.error: str | None = None
        """The last discovery or tunnel failure, one line; None after a clean refresh."""
        self._runs: dict[str, RunEntry] = {}
        self._tunnels: dict[str, Tunnel] = {}  # remote endpoint -> tunnel
        self._owner: dict[str, str | None] = {}  # remote endpoint -> run it belongs to
        self._retry_at: dict[str, float] = {}  # remote endpoint -> monotonic time to retry
        self.retry_after = max(30.0, interval)
        """Seconds before a tunnel that failed to open is tried again."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def runs(self) -> list[RunEntry]:
        """The runs found by the last successful discovery."""
        with self._lock:
            return list(self._runs.values())

    def endpoints(self) -> dict[str, str]:
        """Run id -> local endpoint, for runs whose tunnel is open."""
        with self._lock:
            return {
                run: self._tunnels[e.endpoint].local_endpoint
                for run, e in self._runs.items()
                if e.endpoint in self._tunnels
            }

    def local_entries(self) -> list[RunEntry]:
        """The remote runs with their endpoint replaced by the local tunnel's.

        Drop-in for a registry lookup: ``LiveSource(list_runs=remote.local_entries, ...)``.
        Runs whose tunnel is not open (yet) are left out.
        """
        with self._lock:
            return [
                dataclasses.replace(e, endpoint=self._tunnels[e.endpoint].local_endpoint)
                for e in self._runs.values()
                if e.endpoint in self._tunnels
            ]

    def local_for(self, remote_endpoint: str, run: str | None = None, timeout: float = 15.0) -> str:
        """A local endpoint forwarding to ``remote_endpoint`` on the host (opened on demand).

        Args:
            remote_endpoint: e.g. a run's snapshot endpoint from its ``hello``.
            run: the run it belongs to: the tunnel closes when the run disappears. None keeps
                it until ``close()``.

        Raises:
            RemoteError: the endpoint cannot be tunnelled or ssh failed.
        """
        with self._lock:
            tunnel = self._tunnels.get(remote_endpoint)
        if tunnel is None:
            fresh = Tunnel(
                self.target, remote_endpoint, ssh_options=self._options, ssh=self._ssh
            ).start(timeout)
            with self._lock:
                tunnel = self._tunnels.setdefault(remote_endpoint, fresh)
                self._owner.setdefault(remote_endpoint, run)
            if tunnel is not fresh:
                fresh.close()
        return tunnel.local_endpoint

    def refresh(self) -> None:
        """Rediscover once and reconcile tunnels; failures land in ``error``, never raise."""
        try:
            found = discover(
                self.target,
                ssh_options=self._options,
                remote_cmd=self._remote_cmd,
                remote_env=self._remote_env,
                ssh=self._ssh,
            )
        except RemoteError as exc:
            self.error = str(exc)
            return
        errors: list[str] = []
        now = time.monotonic()
        for entry in found:
            if self._retry_at.get(entry.endpoint, 0.0) > now:
                continue  # failed recently: don't stall every refresh on the same ssh error
            try:
                self.local_for(entry.endpoint, entry.run)
                self._retry_at.pop(entry.endpoint, None)
            except RemoteError as exc:
                errors.append(str(exc))
                self._retry_at[entry.endpoint] = time.monotonic() + self.retry_after
        live = {e.run for e in found}
        with self._lock:
            self._runs = {e.run: e for e in found}
            gone = [ep for ep, run in self._owner.items() if run is not None and run not in live]
            closing = [self._tunnels.pop(ep) for ep in gone if ep in self._tunnels]
            for ep in gone:
                del self._owner[ep]
        for tunnel in closing:
            tunnel.close()
        self.error = errors[-1] if errors else None

    def start(self) -> RemoteRuns:
        """Refresh now, then every ``interval`` seconds in a background thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="gradtui-remote", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def close(self) -> None:
        """Stop rediscovering and close every tunnel. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
        with self._lock:
            tunnels = list(self._tunnels.values())
            self._tunnels.clear()
            self._owner.clear()
        for tunnel in tunnels:
            tunnel.close()

    def __enter__(self) -> RemoteRuns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
