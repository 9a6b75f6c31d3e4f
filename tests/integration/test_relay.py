"""The relay: two publishers -> XSUB/XPUB proxy -> one subscriber, in-process and as a command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from gradtui.protocol import Heartbeat, decode, encode
from gradtui.relay import Relay
from gradtui.security import (
    SecurityError,
    configure_curve_client,
    generate_keypair,
    load_secret_key,
)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.term()


def _pub(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)  # publishers connect to the relay: it is the stable side
    return sock


def _sub(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"gt1/")
    sock.connect(endpoint)
    return sock


def _runs_seen(
    pubs: dict[str, zmq.Socket[bytes]], sub: zmq.Socket[bytes], timeout: float = 10.0
) -> set[str]:
    """Publish heartbeats from every publisher until the subscriber saw each run (or timeout)."""
    seen: set[str] = set()
    seq = 0
    deadline = time.monotonic() + timeout
    while seen != set(pubs) and time.monotonic() < deadline:
        for run, sock in pubs.items():
            sock.send_multipart(encode(Heartbeat(run=run, inc="i", seq=seq)))
        seq += 1
        while sub.poll(20, zmq.POLLIN):
            seen.add(decode(sub.recv_multipart()).run)
    return seen


def test_two_publishers_one_subscriber(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Guards the relay path: messages of two connecting publishers reach one subscriber."""
    with Relay("tcp://127.0.0.1:*", "tcp://127.0.0.1:*") as relay:
        pubs = {"run-a": _pub(ctx, relay.frontend), "run-b": _pub(ctx, relay.frontend)}
        sub = _sub(ctx, relay.backend)
        try:
            assert _runs_seen(pubs, sub) == {"run-a", "run-b"}
        finally:
            for sock in (*pubs.values(), sub):
                sock.close(0)
        assert relay.error is None


def test_relay_with_curve(ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path) -> None:
    """Guards CURVE on both relay sides: allow-listed publisher and viewer get through."""
    relay_keys, client = (load_secret_key(generate_keypair(tmp_path, n)[1]) for n in ("r", "c"))
    with Relay(
        "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", curve=relay_keys, allowed=[client.public]
    ) as relay:
        pub = ctx.socket(zmq.PUB)
        sub = ctx.socket(zmq.SUB)
        for sock in (pub, sub):
            sock.setsockopt(zmq.LINGER, 0)
            configure_curve_client(sock, client, relay_keys.public)
        sub.setsockopt(zmq.SUBSCRIBE, b"gt1/")
        pub.connect(relay.frontend)
        sub.connect(relay.backend)
        try:
            assert _runs_seen({"run-c": pub}, sub) == {"run-c"}
        finally:
            pub.close(0)
            sub.close(0)


def test_non_loopback_needs_curve_or_insecure() -> None:
    """Guards the relay bind policy: 0.0.0.0 refused without keys, warned with --insecure."""
    with pytest.raises(SecurityError):
        Relay("tcp://0.0.0.0:*", "tcp://127.0.0.1:*")
    with Relay("tcp://0.0.0.0:*", "tcp://127.0.0.1:*", insecure=True) as relay:
        assert len(relay.warnings) == 1 and "WITHOUT" in relay.warnings[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_relay_command_exits_cleanly(ctx: zmq.Context[zmq.Socket[bytes]], sig: int) -> None:
    """Guards `gradtui relay`: forwards as a real process and exits 0 promptly on SIGTERM/Ctrl-C."""
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradtui",
            "relay",
            "--frontend",
            "tcp://127.0.0.1:*",
            "--backend",
            "tcp://127.0.0.1:*",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            words = proc.stdout.readline().split()
            frontend, backend = words[words.index("frontend") + 1], words[-1]
            pub, sub = _pub(ctx, frontend), _sub(ctx, backend)
            try:
                assert _runs_seen({"run-d": pub}, sub) == {"run-d"}
            finally:
                pub.close(0)
                sub.close(0)
            proc.send_signal(sig)
            assert proc.wait(10) == 0
        finally:
            proc.kill()


def test_real_publishers_through_relay_to_subscriber(tmp_path: Path) -> None:
    """Guards `Publisher(relay=...)`: two runs on their own endpoints, one viewer on the relay."""
    import numpy as np

    from gradtui.publish import Publisher
    from gradtui.subscribe import Subscriber
    from gradtui.synthetic import synthetic_layers

    layers = synthetic_layers(2)
    stats = np.zeros((len(layers), 11), np.float32)
    with Relay("tcp://127.0.0.1:*", "tcp://127.0.0.1:*") as relay:
        pubs = [
            Publisher(
                name=f"node{i}",
                layers=layers,
                endpoint="tcp://127.0.0.1:*",
                register=False,
                relay=relay.frontend,
                hello_interval=0.2,
            )
            for i in range(2)
        ]
        steps: dict[str, set[int]] = {p.run: set() for p in pubs}
        try:
            with Subscriber([relay.backend]) as sub:
                deadline = time.monotonic() + 15
                step = 0
                while time.monotonic() < deadline and not all(len(s) >= 5 for s in steps.values()):
                    for pub in pubs:
                        pub.publish_step(step=step, loss=1.0, stats=stats)
                    step += 1
                    for got in sub.poll(0.05):
                        if got.message.kind == "step":
                            steps[got.message.run].add(got.message.step)  # type: ignore[union-attr]
        finally:
            for pub in pubs:
                pub.close()
    assert all(len(s) >= 5 for s in steps.values()), steps
