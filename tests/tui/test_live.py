"""The real dashboard fed by real publishers over TCP loopback (no mocks, torch-free)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
import zmq
from tui_helpers import wait_until

from gradtui.alerts import AlertEngine
from gradtui.protocol import COLUMNS, Hello, LayerInfo, Step, encode
from gradtui.publish import Publisher
from gradtui.state import Fleet, LivenessPolicy
from gradtui.synthetic import SyntheticRun, synthetic_layers
from gradtui.tui.app import GradApp
from gradtui.tui.live_source import LiveSource
from gradtui.tui.widgets.heatmap import Heatmap
from gradtui.tui.widgets.layer_table import LayerTable
from gradtui.tui.widgets.run_list import RunList
from gradtui.tui.widgets.status_bar import StatusBar


def _app(endpoints: list[str], *, stale_after: float = 4.0, discover: bool = False) -> GradApp:
    fleet = Fleet(observer_factory=AlertEngine, policy=LivenessPolicy(stale_after=stale_after))
    source = LiveSource(endpoints, discover=discover, rescan_s=0.2, watchdog_s=2.0)
    return GradApp(fleet, [source], fps=15)


def _runs(app: GradApp) -> RunList:
    return app.screen.query_one("#runs", RunList)


def _table(app: GradApp) -> LayerTable:
    return app.screen.query_one("#layers", LayerTable)


def _cells(table: LayerTable, row: int) -> dict[str, str]:
    return {k: v.plain for k, v in table.row_cells(row).items()}


def _screen_text(app: GradApp) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join(s.text for s in strips)


class Feeder:
    """Publishes synthetic steps from the test coroutine, a few per UI pause."""

    def __init__(self, pub: Publisher, syn: SyntheticRun) -> None:
        self.pub, self.syn, self.step = pub, syn, 0

    def __call__(self, n: int = 5) -> None:
        for _ in range(n):
            s = self.step
            self.pub.publish_step(
                step=s,
                loss=self.syn.loss(s),
                stats=self.syn.stats(s),
                grad_norm=self.syn.grad_norm(s),
            )
            self.step += 1


@pytest.fixture
def publisher() -> Iterator[tuple[Publisher, Feeder]]:
    layers = synthetic_layers(6)
    pub = Publisher(
        name="sigmoid-6",
        layers=layers,
        endpoint="tcp://127.0.0.1:*",
        register=False,
        hello_interval=0.2,
        heartbeat_interval=0.2,
    )
    try:
        yield pub, Feeder(pub, SyntheticRun(layers, mode="vanishing", seed=1))
    finally:
        pub.close()


async def test_live_run_appears_with_layers_and_heatmap(
    publisher: tuple[Publisher, Feeder],
) -> None:
    """Guards the whole live path: publisher -> Subscriber thread -> Fleet -> painted widgets."""
    pub, feed = publisher
    app = _app([pub.endpoint])
    async with app.run_test(size=(160, 48)) as pilot:

        def shown() -> bool:
            feed(3)
            rows = _runs(app).rows
            return bool(rows) and rows[0].name == "sigmoid-6" and rows[0].step >= 20

        await wait_until(pilot, shown)
        assert _runs(app).rows[0].status == "live"
        table = _table(app)
        await wait_until(pilot, lambda: table.row_count == 12)
        first = _cells(table, 0)
        assert first["name"] == "layers.0.linear"
        assert "e-" in first["grad"]  # vanishing: tiny RMS at the input, in e-notation
        heatmap = app.screen.query_one("#heatmap", Heatmap)
        assert heatmap._levels.shape[0] > 0
        status = app.screen.query_one("#status", StatusBar)
        await wait_until(pilot, lambda: status.info.received > 0 and status.info.endpoints == 1)
        assert app.paint_errors == 0


async def test_ended_run_shows_final_status() -> None:
    """Guards end handling: a run that ended says so with its final status, not 'stale'."""
    layers = synthetic_layers(2)
    pub = Publisher(
        name="short",
        layers=layers,
        endpoint="tcp://127.0.0.1:*",
        register=False,
        hello_interval=0.1,
        heartbeat_interval=0.1,
    )
    feed = Feeder(pub, SyntheticRun(layers, mode="healthy"))
    app = _app([pub.endpoint])
    try:
        async with app.run_test(size=(120, 40)) as pilot:

            def live() -> bool:
                feed(2)
                return bool(_runs(app).rows) and _runs(app).rows[0].step >= 0

            await wait_until(pilot, live)
            pub.close(status="crashed", reason="CUDA out of memory")
            await wait_until(pilot, lambda: _runs(app).rows[0].status == "crashed")
    finally:
        pub.close()


async def test_run_turns_stale_when_publisher_stops() -> None:
    """Guards liveness: a trainer that dies without an end message turns stale in seconds."""
    layers = synthetic_layers(2)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    syn = SyntheticRun(layers, mode="healthy")
    app = _app([f"tcp://127.0.0.1:{port}"], stale_after=0.6)
    seq = 0
    try:
        async with app.run_test(size=(120, 40)) as pilot:

            def live() -> bool:
                nonlocal seq
                hello = Hello(
                    run="dying", inc="x", seq=seq, t=time.time(), name="dying", layers=layers
                )
                step = Step(
                    run="dying",
                    inc="x",
                    seq=seq + 1,
                    t=time.time(),
                    step=seq,
                    loss=1.0,
                    stats=syn.stats(seq),
                )
                sock.send_multipart(encode(hello))
                sock.send_multipart(encode(step))
                seq += 2
                rows = _runs(app).rows
                return bool(rows) and rows[0].status == "live"

            await wait_until(pilot, live)
            sock.close()  # the "trainer" dies: no end, no heartbeats
            await wait_until(pilot, lambda: _runs(app).rows[0].status == "stale", timeout=5)
    finally:
        sock.close()


def _hostile_frames(port_layers: tuple[LayerInfo, ...], seq: int) -> list[list[bytes]]:
    bad_head = msgpack.packb({"v": 1, "kind": "step", "run": "x", "seq": 0, "t": 0.0})
    stats = np.full((len(port_layers), len(COLUMNS)), np.nan, np.float32)
    stats[:, COLUMNS.index("grad_rms")] = [np.nan, np.inf, 1e-3, -np.inf][: len(port_layers)]
    hello = Hello(
        run="evil",
        inc="e",
        seq=seq,
        t=time.time(),
        name="[bold red]pwn[/]\x1b[31mRED\x1b]0;title\x07",
        layers=port_layers,
    )
    step = Step(
        run="evil",
        inc="e",
        seq=seq + 1,
        t=time.time(),
        step=seq,
        loss=math.nan,
        stats=stats,
        grad_norm=math.inf,
    )
    return [
        [b"garbage"],
        [b"gt1/evil/step", b"\xc1\xff not msgpack", b"1234"],
        [b"gt1/x/step", bad_head, b"\x00" * 7],
        encode(hello),
        encode(step),
    ]


async def test_hostile_publisher_cannot_crash_or_inject() -> None:
    """Guards DESIGN §8: markup/ESC in names, NaN/Inf stats and garbage frames are survived."""
    layers = (
        LayerInfo(name="[/]\x1b[2Jboom", kind="Linear", role="param", shape=(2, 2), params=6),
        LayerInfo(name="[bold]inf", kind="Linear", role="param", shape=(2, 2), params=6),
        LayerInfo(name="ok", kind="Linear", role="param", shape=(2, 2), params=6),
        LayerInfo(name="neg", kind="Linear", role="param", shape=(2, 2), params=6),
    )
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    app = _app([f"tcp://127.0.0.1:{port}"])
    seq = 0
    try:
        async with app.run_test(size=(160, 48)) as pilot:

            def seen() -> bool:
                nonlocal seq
                for frames in _hostile_frames(layers, seq):
                    sock.send_multipart(frames)
                seq += 2
                rows = _runs(app).rows
                table = _table(app)
                return bool(rows) and table.row_count == 4 and _cells(table, 0)["grad"] != "·"

            await wait_until(pilot, seen)
            status = app.screen.query_one("#status", StatusBar)
            await wait_until(pilot, lambda: status.info.malformed >= 3)
            table = _table(app)
            assert _cells(table, 0)["grad"] == "nan"
            assert _cells(table, 1)["grad"] == "inf"
            assert _cells(table, 3)["grad"] == "-inf"
            assert table.row_cells(0)["grad"].style == "bold magenta"
            assert _cells(table, 0)["name"] == "[/]boom"
            text = _screen_text(app)
            assert "\x1b" not in text
            assert "[bold red]p" in text  # markup shown literally, not interpreted
            assert _runs(app).row_cells(0)["name"].plain == "[bold red]pwn[/]RED"
            assert app.is_running and app.paint_errors == 0
    finally:
        sock.close()


async def test_discovers_runs_that_start_later() -> None:
    """Guards registry discovery: `gradtui watch` with no argument picks up a run started later."""
    app = _app([], discover=True)
    layers = synthetic_layers(2)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        assert _runs(app).rows == []
        pub = Publisher(
            name="latecomer",
            layers=layers,
            endpoint="tcp://127.0.0.1:*",
            register=True,
            hello_interval=0.1,
            heartbeat_interval=0.1,
        )
        feed = Feeder(pub, SyntheticRun(layers, mode="healthy"))
        try:

            def found() -> bool:
                feed(2)
                return any(r.name == "latecomer" for r in _runs(app).rows)

            await wait_until(pilot, found)
        finally:
            pub.close()


async def test_quit_is_fast_and_closes_everything(publisher: tuple[Publisher, Feeder]) -> None:
    """Guards quitting: q exits within a second and the receive thread has closed its sockets."""
    pub, feed = publisher
    app = _app([pub.endpoint])
    async with app.run_test(size=(120, 40)) as pilot:

        def live() -> bool:
            feed(2)
            return bool(_runs(app).rows)

        await wait_until(pilot, live)
        started = time.monotonic()
        await pilot.press("q")
        await wait_until(pilot, lambda: app.receiver.stopped, 2)
        assert time.monotonic() - started < 1.0
    assert app.return_value == 0
    source = app.receiver.sources[0]
    assert isinstance(source, LiveSource) and source._sub is None  # Subscriber closed
