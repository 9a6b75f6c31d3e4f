"""The run registry: private directory, atomic entries, pruning of dead runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradtui import registry
from gradtui.registry import RegistryError, RunEntry


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh runtime dir (short path under /tmp so ipc socket paths fit)."""
    with tempfile.TemporaryDirectory(prefix="gt-") as tmp:
        path = Path(tmp) / "rt"
        monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(path))
        yield path


def _entry(run: str = "r1", pid: int | None = None, host: str | None = None) -> RunEntry:
    return RunEntry(
        run=run,
        name=f"name-{run}",
        endpoint=f"tcp://127.0.0.1:{5000 + len(run)}",
        pid=os.getpid() if pid is None else pid,
        host=socket.gethostname() if host is None else host,
        started=1000.0,
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runtime_dir_created_private(rt: Path) -> None:
    """Guards: the runtime dir (the ipc sockets' only access control) is created 0700."""
    assert not rt.exists()
    assert registry.runtime_dir() == rt
    assert rt.is_dir() and (rt.stat().st_mode & 0o777) == 0o700


def test_runtime_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Guards: $GRADTUI_RUNTIME_DIR, then $XDG_RUNTIME_DIR/gradtui, then ~/.cache/..."""
    monkeypatch.delenv("GRADTUI_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert registry.runtime_dir(create=False) == tmp_path / "xdg" / "gradtui"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.runtime_dir(create=False) == tmp_path / "home/.cache/gradtui/runtime"


def test_refuses_group_writable_dir(rt: Path) -> None:
    """Guards: a group/world-writable runtime dir is refused, not silently used."""
    rt.mkdir(mode=0o700)
    rt.chmod(0o777)
    with pytest.raises(RegistryError, match="writable"):
        registry.runtime_dir()
    with pytest.raises(RegistryError):
        registry.list_runs()


def test_refuses_non_directory(rt: Path) -> None:
    """Guards: a file where the runtime dir should be is a clear error."""
    rt.write_text("x")
    with pytest.raises(RegistryError, match="not a directory"):
        registry.runtime_dir()


def test_register_list_update_unregister(rt: Path) -> None:
    """Guards: the registry round trip that `ls`, `tail` and `watch` depend on."""
    assert registry.list_runs() == []
    path = registry.register(_entry("b"))
    registry.register(_entry("a"))
    assert path == rt / "b.json"
    runs = registry.list_runs()
    assert [e.run for e in runs] == ["a", "b"]  # same start time: ordered by id
    assert runs[1].name == "name-b" and runs[1].step == -1 and runs[1].updated > 0
    registry.update_step("b", 42)
    assert {e.run: e.step for e in registry.list_runs()} == {"a": -1, "b": 42}
    registry.unregister("b")
    registry.unregister("b")  # idempotent
    assert [e.run for e in registry.list_runs()] == ["a"]
    assert not [p for p in rt.iterdir() if p.name.startswith(".tmp-")]  # no temp files left


def test_update_step_of_missing_run_is_a_no_op(rt: Path) -> None:
    """Guards: a publisher whose entry was pruned must not recreate a half entry."""
    registry.update_step("ghost", 3)
    assert registry.list_runs() == []


def test_prune_dead_pid_removes_file_and_socket(rt: Path) -> None:
    """Guards: a killed trainer's entry and its ipc socket file are cleaned up."""
    rt.mkdir(mode=0o700)
    sock = rt / "dead.sock"
    sock.write_bytes(b"")
    entry = _entry("dead", pid=_dead_pid())
    entry.endpoint = f"ipc://{sock}"
    registry.register(entry)
    registry.register(_entry("alive"))
    assert {e.run for e in registry.list_runs(prune=False)} == {"dead", "alive"}
    assert [e.run for e in registry.list_runs()] == ["alive"]
    assert not (rt / "dead.json").exists() and not sock.exists()


def test_prune_never_deletes_sockets_outside_the_dir(rt: Path, tmp_path: Path) -> None:
    """Guards: a forged entry cannot make `ls` delete files elsewhere."""
    victim = tmp_path / "victim.sock"
    victim.write_bytes(b"keep")
    entry = _entry("forged", pid=_dead_pid())
    entry.endpoint = f"ipc://{victim}"
    registry.register(entry)
    assert registry.list_runs() == []
    assert victim.exists()


def test_other_hosts_are_not_pruned(rt: Path) -> None:
    """Guards: on a shared home directory, another machine's pid says nothing here."""
    registry.register(_entry("remote", pid=_dead_pid(), host="some-other-host"))
    assert [e.run for e in registry.list_runs()] == ["remote"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"run": "bad"}),
        json.dumps({**_entry("bad", pid=1).__dict__, "pid": "12"}),
        json.dumps({**_entry("bad", pid=1).__dict__, "pid": True}),
        json.dumps({**_entry("other", pid=1).__dict__}),  # file name != its run id
    ],
    ids=["not-json", "not-a-map", "missing-fields", "pid-str", "pid-bool", "name-mismatch"],
)
def test_corrupt_files_ignored(rt: Path, content: str) -> None:
    """Guards: one corrupt or foreign file never breaks `ls` for the valid entries."""
    registry.register(_entry("good"))
    (rt / "bad.json").write_text(content)
    assert [e.run for e in registry.list_runs()] == ["good"]


def test_missing_dir_lists_nothing(rt: Path) -> None:
    """Guards: `gradtui ls` on a fresh machine works (and creates nothing)."""
    assert registry.list_runs() == []
    assert not rt.exists()


def test_invalid_run_id_rejected(rt: Path) -> None:
    """Guards: a run id cannot escape the directory (path traversal via ``../``)."""
    with pytest.raises(ValueError):
        registry.register(_entry("../evil"))


def test_pid_alive() -> None:
    """Guards: liveness check used by pruning."""
    assert registry.pid_alive(os.getpid())
    assert not registry.pid_alive(_dead_pid())
    assert not registry.pid_alive(0)


def test_resolve_endpoints_names_ids_and_errors() -> None:
    """Guards the one shared lookup behind tail/record: ids, names, endpoints, clear failure."""
    from gradtui.errors import GradtuiError
    from gradtui.registry import RunEntry, resolve_endpoints

    entries = [
        RunEntry(run="a-1", name="alpha", endpoint="ipc:///x/a.sock", pid=1, host="h", started=0),
        RunEntry(run="b-2", name="beta", endpoint="tcp://127.0.0.1:9", pid=2, host="h", started=0),
    ]
    got = resolve_endpoints(["alpha", "b-2", "tcp://127.0.0.1:5", "a-1"], entries)
    assert got == ["ipc:///x/a.sock", "tcp://127.0.0.1:9", "tcp://127.0.0.1:5"]
    with pytest.raises(GradtuiError, match=r"no live run 'ga\?ma'; live runs: a-1, b-2") as err:
        resolve_endpoints(["ga\x1bma"], entries)
    assert err.value.code == 2
