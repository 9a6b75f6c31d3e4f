"""A real OpenSSH server on 127.0.0.1 and a random port, with keys and config in a tmp dir.

Import the fixture into a test module (``from sshd_fixture import sshd``). Everything lives in
the test's tmp dir: host key, client key, ``authorized_keys``, an ``ssh_config`` passed with
``-F`` (its own ``UserKnownHostsFile``), so the user's real ssh setup is never touched.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    """A running test sshd and the client-side files that reach it."""

    port: int
    dir: Path
    config: Path
    """ssh client config for ``-F``: client key, tmp known_hosts, strict host key checking."""
    known_hosts: Path
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        """``user@127.0.0.1:PORT`` as gradtui's ``--ssh`` takes it."""
        return f"{getpass.getuser()}@127.0.0.1:{self.port}"

    @property
    def ssh_options(self) -> tuple[str, ...]:
        return ("-F", str(self.config))


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(d: Path) -> tuple[int, subprocess.Popen[bytes]]:
    # A free port can be taken between probe and bind: retry a few times.
    for _ in range(5):
        port = _free_port()
        cfg = d / "sshd_config"
        cfg.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin yes\nStrictModes no\n"  # tmp dirs are not 0700 all the way up
            "AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\n"
            "PidFile none\nLogLevel ERROR\n"
        )
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _accepts(port):
                return port, proc
            time.sleep(0.02)
        _stop(proc)
    raise RuntimeError("could not start the test sshd")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1:<random port> accepting a tmp client key."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (.ci/run installs them)")
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    # sshd refuses to start without its privilege-separation directory.
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    except PermissionError:
        pytest.skip("/run/sshd is missing and cannot be created (not root)")
    port, proc = _start(d)
    known = d / "known_hosts"
    host_pub = (d / "host_key.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = d / "ssh_config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {d / 'client_key'}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        f"  UserKnownHostsFile {known}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  LogLevel ERROR\n"
    )
    try:
        yield Sshd(port=port, dir=d, config=config, known_hosts=known, proc=proc)
    finally:
        _stop(proc)
