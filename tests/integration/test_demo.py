"""``gradtui demo``: config parsing, and that every trainer it starts is stopped, however it ends.

Process tests use real subprocesses. Most substitute a tiny stand-in trainer module (written to
a tmp dir) so they take a second; one runs the real trainers headless when the probe exists.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gradtui.demo import DEFAULT_CONFIGS, TrainerGroup, TrainerSpec, parse_configs
from gradtui.errors import GradtuiError

# A stand-in trainer: records its argv, then sleeps; with IGNORE_TERM it shrugs off SIGTERM.
FAKE_TRAINER = textwrap.dedent(
    """
    import os, signal, sys, time
    out = os.environ["FAKE_OUT"]
    with open(os.path.join(out, f"{os.getpid()}.argv"), "w") as f:
        f.write("\\n".join(sys.argv[1:]))
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAIL"):
        sys.stderr.write("trainer: error: boom\\n")
        sys.exit(2)
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); count it as gone (it is not running).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    pkg = tmp_path / "fake_trainer"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_TRAINER)
    out = tmp_path / "out"
    out.mkdir()
    return {"PYTHONPATH": str(tmp_path), "FAKE_OUT": str(out)}


def _group(env: dict[str, str], n: int = 2, **kw: object) -> TrainerGroup:
    specs = parse_configs(";".join(DEFAULT_CONFIGS[:n]))
    return TrainerGroup(specs, module="fake_trainer", env=env, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ configs


def test_parse_configs_default_and_short_form() -> None:
    """Guards --configs parsing: ';' separates trainers, a bare activation means --act NAME."""
    specs = parse_configs("sigmoid; relu --bn --residual --clip-norm 1")
    assert specs == [
        TrainerSpec("sigmoid", ("--act", "sigmoid")),
        TrainerSpec(
            "relu+bn+res+clip1", ("--act", "relu", "--bn", "--residual", "--clip-norm", "1")
        ),
    ]
    assert [s.label for s in parse_configs(";".join(DEFAULT_CONFIGS))] == [
        "sigmoid",
        "tanh",
        "relu",
        "relu+bn+res+clip1",
    ]


@pytest.mark.parametrize(
    "text", ["", " ; ", "a;b;c;d;e".replace("a", "sigmoid"), "--endpoint tcp://x:1", "'oops"]
)
def test_parse_configs_rejects(text: str) -> None:
    """Guards one-line errors (exit 2) for empty, too many, reserved-flag or unparsable configs."""
    if text.count(";") == 4:
        text = ";".join(["sigmoid"] * 5)
    with pytest.raises(GradtuiError) as err:
        parse_configs(text)
    assert err.value.code == 2


def test_trainer_argv_has_endpoint_quiet_and_no_record(fake: dict[str, str]) -> None:
    """Guards the trainer command line: own endpoint each, --quiet, depth/steps, no recording."""
    group = _group(fake, depth=3, steps=7, extra=("--width", "8"))
    with group:
        group.start()
        assert len(set(group.endpoints)) == 2
        assert all(ep.startswith("ipc://") for ep in group.endpoints)
        deadline = time.monotonic() + 10
        files: list[Path] = []
        while len(files) < 2 and time.monotonic() < deadline:
            files = list(Path(fake["FAKE_OUT"]).glob("*.argv"))
            time.sleep(0.02)
        argvs = [f.read_text().split("\n") for f in files]
    assert len(argvs) == 2
    for argv in argvs:
        assert argv[argv.index("--depth") + 1] == "3"
        assert argv[argv.index("--steps") + 1] == "7"
        assert argv[argv.index("--width") + 1] == "8"
        assert "--quiet" in argv and "--no-record" in argv
        assert argv[argv.index("--endpoint") + 1] in group.endpoints


def test_tcp_endpoints_are_distinct_loopback(fake: dict[str, str]) -> None:
    """Guards --tcp: each trainer gets its own tcp://127.0.0.1:<port>."""
    with _group(fake, tcp=True) as group:
        group.start()
        eps = group.endpoints
    assert len(set(eps)) == 2 and all(ep.startswith("tcp://127.0.0.1:") for ep in eps)


# ------------------------------------------------------------------------------ stopping


def test_stop_terminates_then_kills_stubborn_trainers(fake: dict[str, str]) -> None:
    """Guards the SIGTERM -> SIGKILL escalation: a trainer ignoring SIGTERM is still ended."""
    group = _group({**fake, "IGNORE_TERM": "1"})
    group.start()
    pids = [t.pid for t in group.trainers]
    time.sleep(0.5)  # let the children install their SIGTERM handler
    killed = group.stop(timeout=0.5)
    group.cleanup()
    assert sorted(killed) == sorted(pids)
    assert _wait_gone(pids) == []


def test_failed_trainer_is_reported_with_its_error(fake: dict[str, str]) -> None:
    """Guards showing why a trainer died: exit code and its last stderr line."""
    with _group({**fake, "FAIL": "1"}, n=1) as group:
        group.start()
        group.trainers[0].process.wait(10)
        failed = group.failed()
        assert [t.process.returncode for t in failed] == [2]
        assert failed[0].last_error() == "trainer: error: boom"


HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from gradtui.demo import TrainerGroup, parse_configs, exit_on_signals
    group = TrainerGroup(parse_configs("sigmoid;relu"), module="fake_trainer")
    with exit_on_signals():
        try:
            group.start()
            print(" ".join(str(t.pid) for t in group.trainers), flush=True)
            time.sleep(60)
        finally:
            group.stop(timeout=2)
            group.cleanup()
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL])
def test_trainers_end_when_the_demo_process_is_signalled(
    fake: dict[str, str], sig: signal.Signals
) -> None:
    """Guards "nothing left running" on SIGTERM/SIGHUP/Ctrl-C of the demo, and even kill -9
    (the trainers' parent-death signal)."""
    env = {**os.environ, **fake, "PYTHONPATH": os.pathsep.join([fake["PYTHONPATH"], os.getcwd()])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        pids = [int(p) for p in holder.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.3)
        holder.send_signal(sig)
        holder.wait(15)
        assert _wait_gone(pids) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_demo_flags_are_validated() -> None:
    """Guards one-line errors for nonsense demo flags (no trainer is started)."""
    from gradtui.commands import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    for argv in (["--depth", "0"], ["--steps", "-1"], ["--configs", ";"], ["--width", "0"]):
        with pytest.raises(GradtuiError) as err:
            demo.make_group(parser.parse_args(argv))
        assert err.value.code == 2


# ------------------------------------------------------------------------------ the real thing


def _probe_available() -> bool:
    try:
        from gradtui.probe import Monitor  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _probe_available(), reason="gradtui.probe.Monitor not built yet")
async def test_demo_headless_shows_four_runs_and_leaves_nothing_running() -> None:
    """Guards the demo end to end: four real trainers appear with data in the compare view,
    and after quitting no trainer process remains."""
    from gradtui.commands import demo
    from gradtui.tui.screens.compare import CompareScreen

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--depth", "3", "--width", "16"])
    group = demo.make_group(args)
    pids: list[int] = []
    try:
        group.start()
        pids = [t.pid for t in group.trainers]
        app = demo.make_app(group)
        async with app.run_test(size=(160, 48)) as pilot:
            labels = sorted(s.label for s in group.specs)
            deadline = time.monotonic() + 120  # four torch imports on two busy cores
            screen = app.screen
            while time.monotonic() < deadline:
                await pilot.pause(0.2)
                screen = app.screen
                if (
                    isinstance(screen, CompareScreen)
                    and len(screen.frames) == 4
                    and all(f.step >= 1 for f in screen.frames)
                    and sorted(f.name for f in screen.frames) == labels  # hellos arrived
                ):
                    break
                assert not group.failed(), [t.last_error() for t in group.failed()]
            assert isinstance(screen, CompareScreen)
            assert sorted(f.name for f in screen.frames) == sorted(s.label for s in group.specs)
            await pilot.press("q")
    finally:
        group.stop(timeout=3)
        group.cleanup()
    assert _wait_gone(pids) == []
