"""CURVE keys, key-file permissions, the allow-list, and the bind policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from gradtui.protocol import TOPIC_PREFIX
from gradtui.security import (
    KeyPair,
    SecurityError,
    check_bind_policy,
    configure_curve_client,
    configure_curve_server,
    generate_keypair,
    load_allowed_keys,
    load_public_key,
    load_secret_key,
    require_curve,
)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.term()


def _pair(directory: Path, name: str) -> KeyPair:
    _, secret = generate_keypair(directory, name)
    return load_secret_key(secret)


def test_keygen_modes_and_roundtrip(tmp_path: Path) -> None:
    """Guards key files: secret created 0600, public 0644, both load back; no silent overwrite."""
    public, secret = generate_keypair(tmp_path / "keys", "laptop")
    assert (public.stat().st_mode & 0o777, secret.stat().st_mode & 0o777) == (0o644, 0o600)
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    pair = load_secret_key(secret)
    assert load_public_key(public) == pair.public == load_public_key(secret)
    assert zmq.curve_public(pair.secret) == pair.public
    with pytest.raises(SecurityError, match="already exists"):
        generate_keypair(tmp_path / "keys", "laptop")
    assert generate_keypair(tmp_path / "keys", "laptop", force=True) == (public, secret)
    assert load_secret_key(secret) != pair


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620])
def test_loose_secret_key_refused(tmp_path: Path, mode: int) -> None:
    """Guards secret-file hygiene: a group/world-accessible secret is refused with the fix."""
    _, secret = generate_keypair(tmp_path, "k")
    secret.chmod(mode)
    with pytest.raises(SecurityError, match=r"chmod 600") as info:
        load_secret_key(secret)
    assert "\n" not in str(info.value)


def test_bad_key_files(tmp_path: Path) -> None:
    """Guards parsing: missing, keyless and corrupt files give a SecurityError, not a crash."""
    with pytest.raises(SecurityError, match="cannot open"):
        load_secret_key(tmp_path / "missing.key_secret")
    bad = tmp_path / "bad.key"
    bad.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(SecurityError, match="not a valid"):
        load_public_key(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SecurityError, match=r"no \*\.key"):
        load_allowed_keys([tmp_path / "empty"])


def test_allowed_keys_from_dir_and_bare_key(tmp_path: Path) -> None:
    """Guards allow-list loading: a directory of .key files and a file with just the key."""
    a = _pair(tmp_path / "d", "a")
    b = _pair(tmp_path / "d", "b")
    c = _pair(tmp_path, "c")
    bare = tmp_path / "c.txt"
    bare.write_bytes(c.public + b"\n")
    assert load_allowed_keys([tmp_path / "d", bare]) == {a.public, b.public, c.public}


def _recv_within(sock: zmq.Socket[bytes], seconds: float) -> list[bytes] | None:
    if sock.poll(round(seconds * 1000), zmq.POLLIN):
        return sock.recv_multipart()
    return None


def test_curve_allow_list(ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path) -> None:
    """Guards CURVE: an allow-listed client receives; unknown keys and plain clients get nothing."""
    server, good, stranger = (_pair(tmp_path, n) for n in ("server", "good", "stranger"))
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    auth = configure_curve_server(pub, server, [good.public])
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    subs = []
    monitor = None
    for pair in (good, stranger, None):
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC_PREFIX)
        if pair is not None:
            configure_curve_client(sub, pair, server.public)
        if pair is stranger:
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        sub.connect(f"tcp://127.0.0.1:{port}")
        subs.append(sub)
    try:
        got = None
        deadline = time.monotonic() + 10
        while got is None and time.monotonic() < deadline:
            pub.send_multipart([TOPIC_PREFIX + b"r/heartbeat", b"x"])
            got = _recv_within(subs[0], 0.05)
        assert got == [TOPIC_PREFIX + b"r/heartbeat", b"x"]
        for _ in range(20):
            pub.send_multipart([TOPIC_PREFIX + b"r/heartbeat", b"x"])
        assert _recv_within(subs[1], 0.3) is None
        assert _recv_within(subs[2], 0.1) is None
        # The stranger was refused by the allow-list (not merely slow to connect).
        assert monitor is not None and monitor.poll(5000)
        event = recv_monitor_message(monitor)
        assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        if monitor is not None:
            subs[1].disable_monitor()
            monitor.close(0)
        for sock in (*subs, pub):
            sock.close(0)
        auth.release()


def test_bind_policy() -> None:
    """Guards the policy: loopback/ipc free; beyond loopback needs CURVE or a loud --insecure."""
    for ok in ("tcp://127.0.0.1:5555", "tcp://[::1]:1", "tcp://localhost:*", "ipc:///tmp/x"):
        assert check_bind_policy(ok, curve=False, insecure=False) is None
    for remote in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:1", "tcp://eth0:1"):
        with pytest.raises(SecurityError, match="not loopback"):
            check_bind_policy(remote, curve=False, insecure=False)
        assert check_bind_policy(remote, curve=True, insecure=False) is None
        warning = check_bind_policy(remote, curve=False, insecure=True)
        assert warning is not None and "WITHOUT authentication" in warning


def test_minimum_libzmq() -> None:
    """Guards the version floor for non-loopback CURVE (CVE-2019-13132) and CURVE presence."""
    require_curve((4, 3, 2), True)
    with pytest.raises(SecurityError, match="too old"):
        require_curve((4, 3, 1), True)
    with pytest.raises(SecurityError, match="no CURVE"):
        require_curve((4, 3, 5), False)


def test_keygen_command(tmp_path: Path) -> None:
    """Guards `gradtui keygen`: writes the pair; a second run refuses in one line with exit 2."""
    cmd = [sys.executable, "-m", "gradtui", "keygen", "-d", str(tmp_path), "--name", "n1"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "n1.key_secret").stat().st_mode & 0o777 == 0o600
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and "already exists" in second.stderr
