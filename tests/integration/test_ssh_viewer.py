"""The viewer-side commands over a REAL sshd: `ls --ssh`, `record --ssh`, and a late-joining
watch source that gets the remote run's history through the tunnel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_fixture import Sshd, sshd

from gradtui.publish import Publisher
from gradtui.remote import RemoteRuns
from gradtui.state import Fleet
from gradtui.storage import open_recording
from gradtui.synthetic import SyntheticRun, synthetic_layers
from gradtui.tui.live_source import LiveSource

__all__ = ["sshd"]

pytestmark = pytest.mark.ssh

GRADTUI = str(Path(sys.executable).parent / "gradtui")


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rt = tmp_path / "rt"
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(rt))
    return rt


def _ssh_args(sshd: Sshd, runtime: Path) -> list[str]:
    return [
        "--ssh", sshd.host, "--ssh-config", str(sshd.config),
        "--remote-cmd", GRADTUI, "--remote-runtime-dir", str(runtime),
    ]  # fmt: skip


def _publish(pub: Publisher, synth: SyntheticRun, steps: range) -> None:
    for step in steps:
        pub.publish_step(step=step, loss=synth.loss(step), stats=synth.stats(step))


def test_ls_over_ssh_lists_remote_runs(sshd: Sshd, runtime: Path) -> None:
    """Guards `gradtui ls --ssh`: the remote registry, as JSON, through the user's ssh."""
    layers = synthetic_layers(2)
    with Publisher(name="far-away", layers=layers) as pub:
        out = subprocess.run(
            [GRADTUI, "ls", "--json", *_ssh_args(sshd, runtime)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        runs = json.loads(out.stdout)
        assert [(r["run"], r["name"]) for r in runs] == [(pub.run, "far-away")]
        assert runs[0]["snapshot"] == pub.snapshot_endpoint


def test_ls_over_ssh_bad_host_is_one_line(sshd: Sshd, runtime: Path) -> None:
    """Guards the error path: an unreachable host is one line on stderr and exit 2."""
    args = _ssh_args(sshd, runtime)
    args[1] = "nobody@127.0.0.1:1"
    out = subprocess.run(
        [GRADTUI, "ls", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_remote_late_joiner_sees_history_through_tunnels(sshd: Sshd, runtime: Path) -> None:
    """Guards watch --ssh: steps published before the viewer came are fetched via the tunnel."""
    layers = synthetic_layers(4)
    synth = SyntheticRun(layers, mode="vanishing")
    with Publisher(name="remote", layers=layers, queue_size=10_000) as pub:
        _publish(pub, synth, range(300))
        remote = RemoteRuns(
            sshd.host,
            ssh_options=sshd.ssh_options,
            remote_cmd=GRADTUI,
            remote_env={"GRADTUI_RUNTIME_DIR": str(runtime)},
        ).start()
        source = LiveSource(discover=True, list_runs=remote.local_entries, resolve=remote.local_for)
        fleet = Fleet()
        source.open()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                fleet.apply_many(source.poll(0.1))
                state = fleet.runs.get(pub.run)
                if state is not None and state.counters.steps >= 300:
                    break
            _publish(pub, synth, range(300, 320))
            while time.monotonic() < deadline:
                fleet.apply_many(source.poll(0.1))
                if fleet.runs[pub.run].counters.steps >= 320:
                    break
        finally:
            source.close()
            remote.close()
    state = fleet.runs[pub.run]
    steps, _ = state.series("grad_rms")
    assert list(steps) == list(range(320))
    assert state.counters.gaps == 0


def test_record_over_ssh_until_end(sshd: Sshd, runtime: Path, tmp_path: Path) -> None:
    """Guards `gradtui record --ssh`: a remote run is recorded locally, through to its end."""
    layers = synthetic_layers(2)
    synth = SyntheticRun(layers, mode="healthy")
    out = tmp_path / "remote.sqlite"
    pub = Publisher(name="rec", layers=layers)
    proc = subprocess.Popen(
        [GRADTUI, "record", "-q", "--until-end", "-o", str(out), *_ssh_args(sshd, runtime)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        step = 0
        while not out.exists() and time.monotonic() < deadline:  # recorder is connected
            _publish(pub, synth, range(step, step + 1))
            step += 1
            time.sleep(0.02)
        _publish(pub, synth, range(step, step + 50))
        time.sleep(0.5)
    finally:
        pub.close()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a recorder (and its ssh) behind
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    with open_recording(out) as rec:
        (run,) = rec.runs
        assert run.run == pub.run and run.end is not None
        assert run.steps == step + 50, "history + live: every step published is recorded"
