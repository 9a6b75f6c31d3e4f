"""Remote runs over a REAL sshd on 127.0.0.1: discovery, tunnels, restarts, failures, cleanup."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_fixture import Sshd, sshd

from gradtui.protocol import Hello, Step
from gradtui.publish import Publisher
from gradtui.remote import (
    RemoteError,
    RemoteRuns,
    Tunnel,
    add_ssh_arguments,
    discover,
    parse_run_list,
    parse_target,
    ssh_settings,
)
from gradtui.snapshot import HistoryStore, SnapshotServer, fetch_snapshot
from gradtui.subscribe import Subscriber
from gradtui.synthetic import SyntheticRun, synthetic_layers

__all__ = ["sshd"]  # the fixture, imported for pytest

pytestmark = pytest.mark.ssh

GRADTUI = str(Path(sys.executable).parent / "gradtui")


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rt = tmp_path / "rt"
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(rt))
    return rt


class Feeder:
    """A Publisher fed with synthetic steps every 10 ms from a background thread."""

    def __init__(self, endpoint: str | None) -> None:
        layers = synthetic_layers(2)
        self.pub = Publisher(name="remote-test", layers=layers, endpoint=endpoint)
        self._synth = SyntheticRun(layers, mode="healthy")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        step = 0
        while not self._stop.wait(0.01):
            self.pub.publish_step(step=step, loss=1.0, stats=self._synth.stats(step))
            step += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pub.close()


@pytest.fixture(params=["tcp://127.0.0.1:*", None], ids=["tcp", "ipc"])
def feeder(request: pytest.FixtureRequest, runtime: Path) -> Iterator[Feeder]:
    f = Feeder(request.param)
    yield f
    f.close()


def _wait_step(sub: Subscriber, timeout: float = 10.0) -> Step:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in sub.poll(0.1):
            if isinstance(item.message, Step):
                return item.message
    raise AssertionError("no step arrived through the tunnel")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0): read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_parse_target_forms() -> None:
    """Guards the [user@]host[:port] parser, IPv6 brackets and option-injection refusal."""
    assert parse_target("alice@gpu1:2222") == parse_target("alice@gpu1:2222")
    t = parse_target("alice@gpu1:2222")
    assert (t.user, t.host, t.port) == ("alice", "gpu1", 2222)
    assert parse_target("gpu1").port is None
    assert parse_target("[::1]:22").host == "::1"
    assert parse_target("fe80::1").port is None
    for bad in ("-oProxyCommand=x", "host:0", "host:http", "@host", "a b"):
        with pytest.raises(RemoteError):
            parse_target(bad)


def test_parse_run_list_is_defensive() -> None:
    """Guards the untrusted run list: bad entries skipped, unknown fields ignored, junk refused."""
    good = {"run": "r1", "endpoint": "tcp://127.0.0.1:5", "name": "n", "pid": 3, "new": [1]}
    bad = [
        {"run": "bad id!", "endpoint": "e"},
        {"run": "r2"},
        {"run": "r3", "endpoint": "e", "pid": True},
        {"run": "r4", "endpoint": "e", "step": "7"},
        [1, 2],
    ]
    [entry] = parse_run_list(json.dumps([good, *bad]).encode())
    assert (entry.run, entry.name, entry.pid, entry.step) == ("r1", "n", 3, -1)
    assert parse_run_list(b"") == []
    for junk in (b"no runs", b'{"run": "r1"}', b"[" * 10 + b"1"):
        with pytest.raises(RemoteError):
            parse_run_list(junk)


def test_discover_finds_remote_publisher(sshd: Sshd, feeder: Feeder, runtime: Path) -> None:
    """Guards discovery via the shared CLI options: `gradtui ls --json` over ssh finds the run."""
    parser = argparse.ArgumentParser()
    add_ssh_arguments(parser)
    argv = ["--ssh", sshd.host, "--ssh-config", str(sshd.config), "--remote-cmd", GRADTUI]
    argv += ["--remote-runtime-dir", str(runtime), "--ssh-option", "ConnectTimeout=5"]
    args = parser.parse_args(argv)
    runs = discover(args.ssh, **ssh_settings(args))
    assert [(r.run, r.endpoint) for r in runs] == [(feeder.pub.run, feeder.pub.endpoint)]


def test_remote_module_is_cheap_to_import() -> None:
    """Guards command-module cheapness: importing gradtui.remote loads neither numpy nor zmq."""
    code = "import sys, gradtui.remote; print(sorted({'numpy', 'zmq'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tunnel_carries_data_and_restarts(sshd: Sshd, feeder: Feeder) -> None:
    """Guards the tunnel: steps arrive through it; a killed ssh is re-spawned on the same port."""
    with (
        Tunnel(sshd.host, feeder.pub.endpoint, ssh_options=sshd.ssh_options) as tunnel,
        Subscriber([tunnel.local_endpoint]) as sub,
    ):
        assert _wait_step(sub).run == feeder.pub.run
        first = tunnel.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while tunnel.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tunnel.restarts >= 1
        assert tunnel.wait_ready(10)
        assert tunnel.pid not in (None, first)
        sub.poll(0.2)  # drop what was queued before the kill
        assert _wait_step(sub).run == feeder.pub.run
        last = tunnel.pid
    assert last is not None and _wait_gone(last)


def test_wrong_host_key_is_one_clear_line(sshd: Sshd, tmp_path: Path, runtime: Path) -> None:
    """Guards host-key failures: reported as one line naming the problem, never a prompt."""
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    bad_known = tmp_path / "known_hosts"
    kind, key = (tmp_path / "other_key.pub").read_text().split()[:2]
    bad_known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    options = (*sshd.ssh_options, "-o", f"UserKnownHostsFile={bad_known}")
    with pytest.raises(RemoteError) as info:
        discover(sshd.host, ssh_options=options, remote_cmd=GRADTUI)
    message = str(info.value)
    assert "\n" not in message
    assert "host key" in message and "CHANGED" in message
    with pytest.raises(RemoteError, match="host key"):
        Tunnel(sshd.host, "tcp://127.0.0.1:9", ssh_options=options).start(timeout=10)


def test_busy_local_port_is_reported(sshd: Sshd) -> None:
    """Guards ExitOnForwardFailure: a fixed local port in use fails start() with ssh's reason."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tunnel = Tunnel(
            sshd.host, "tcp://127.0.0.1:9", ssh_options=sshd.ssh_options, local_port=port
        )
        with pytest.raises(RemoteError, match=r"in use|listen"):
            tunnel.start(timeout=10)
        assert tunnel.pid is None


def test_unknown_client_key_is_auth_failure(sshd: Sshd, tmp_path: Path) -> None:
    """Guards auth failures: a key the server does not know gives one 'authentication' line."""
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    options = (*sshd.ssh_options, "-o", f"IdentityFile={stranger}")
    # -F's IdentityFile would still be offered; point -F at a config without it.
    cfg = tmp_path / "cfg"
    cfg.write_text(sshd.config.read_text().replace(f"IdentityFile {sshd.dir / 'client_key'}", ""))
    options = ("-F", str(cfg), "-o", f"IdentityFile={stranger}")
    with pytest.raises(RemoteError, match="authentication failed") as info:
        discover(sshd.host, ssh_options=options, remote_cmd=GRADTUI)
    assert "\n" not in str(info.value)


def test_missing_remote_command(sshd: Sshd) -> None:
    """Guards the 'gradtui not installed remotely' case: a clear line, not a JSON error."""
    with pytest.raises(RemoteError, match="not found"):
        discover(sshd.host, ssh_options=sshd.ssh_options, remote_cmd="/nonexistent/gradtui")


def test_remote_runs_tracks_runs(sshd: Sshd, runtime: Path) -> None:
    """Guards RemoteRuns: a new run gets a tunnel, a finished run's tunnel and ssh go away."""
    manager = RemoteRuns(
        sshd.host,
        ssh_options=sshd.ssh_options,
        remote_cmd=GRADTUI,
        remote_env={"GRADTUI_RUNTIME_DIR": str(runtime)},
    )
    try:
        manager.refresh()
        assert manager.endpoints() == {} and manager.error is None
        feeder = Feeder("tcp://127.0.0.1:*")
        try:
            manager.refresh()
            local = manager.endpoints()
            assert list(local) == [feeder.pub.run]
            [entry] = manager.local_entries()
            assert (entry.run, entry.endpoint) == (feeder.pub.run, local[feeder.pub.run])
            with Subscriber([local[feeder.pub.run]]) as sub:
                assert _wait_step(sub).run == feeder.pub.run
            pids = [t.pid for t in manager._tunnels.values()]
        finally:
            feeder.close()
        manager.refresh()
        assert manager.endpoints() == {}
        assert all(pid is not None and _wait_gone(pid) for pid in pids)
    finally:
        manager.close()


def test_remote_snapshot_through_tunnel(sshd: Sshd, runtime: Path) -> None:
    """Guards remote late joiners: a run's ipc snapshot service is fetched through local_for."""
    store = HistoryStore()
    store(Hello(run="r1", inc="i", seq=0, name="n", layers=synthetic_layers(1)))
    runtime.mkdir(mode=0o700, exist_ok=True)
    with (
        SnapshotServer(store, f"ipc://{runtime / 'r1.snap.sock'}") as server,
        RemoteRuns(sshd.host, ssh_options=sshd.ssh_options, remote_cmd=GRADTUI) as manager,
    ):
        local = manager.local_for(server.endpoint, run=None)
        assert local.startswith("tcp://127.0.0.1:")
        assert manager.local_for(server.endpoint) == local  # one tunnel per remote endpoint
        snap = fetch_snapshot(local, "r1", 10.0)
        assert (snap.inc, [m.kind for m in snap.messages]) == ("i", ["hello"])


_ORPHAN_SCRIPT = """
import sys, time
from gradtui.remote import Tunnel
t = Tunnel(sys.argv[1], "tcp://127.0.0.1:9", ssh_options=sys.argv[2:]).start()
print(t.pid, flush=True)
time.sleep(60)
"""


def test_ssh_dies_with_killed_viewer(sshd: Sshd) -> None:
    """Guards PR_SET_PDEATHSIG: kill -9 of the viewer must not leave its ssh child running."""
    with subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, sshd.host, *sshd.ssh_options],
        stdout=subprocess.PIPE,
        text=True,
    ) as viewer:
        try:
            assert viewer.stdout is not None
            ssh_pid = int(viewer.stdout.readline())
            assert not _gone(ssh_pid)
            viewer.kill()
            viewer.wait(5)
            assert _wait_gone(ssh_pid)
        finally:
            viewer.kill()
