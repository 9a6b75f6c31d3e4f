"""The Monitor over a real publisher: what a viewer receives over ZeroMQ (tcp loopback)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from torch import nn

from gradtui.probe import Monitor, StatsTable
from gradtui.protocol import AnyMessage, End, Hello, Step, decode


def receive(sub: zmq.Socket[bytes], timeout_ms: int) -> list[AnyMessage]:
    out: list[AnyMessage] = []
    while sub.poll(timeout_ms):
        out.append(decode(sub.recv_multipart()))
        timeout_ms = 0
    return out


def test_monitor_publishes_hello_steps_and_crash_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the wiring Monitor -> Publisher -> wire: the hello carries the rows and a cleaned
    config, step payloads equal ``mon.last`` for that step, and an exception leaving the
    ``with`` block sends ``end`` with status crashed and the reason."""
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(tmp_path / "rt"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    tables: dict[int, StatsTable] = {}
    got: list[AnyMessage] = []
    config = {"lr": 1e-3, "data": tmp_path, "sizes": [1, 2]}
    try:
        with (
            pytest.raises(ValueError, match="boom"),
            Monitor(
                model, name="probe-test", config=config, endpoint="tcp://127.0.0.1:*", optimizer=opt
            ) as mon,
        ):
            assert mon.endpoint is not None and mon.endpoint.startswith("tcp://127.0.0.1:")
            sub.connect(mon.endpoint)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                any(isinstance(m, Step) for m in got) and any(isinstance(m, Hello) for m in got)
            ):
                loss = model(torch.randn(16, 4)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                mon.step(loss, batch_size=16)
                opt.step()
                assert mon.last is not None
                tables[mon.last.step] = mon.last
                got += receive(sub, 10)
            raise ValueError("boom")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(isinstance(m, End) for m in got):
            got += receive(sub, 100)
    finally:
        sub.close(linger=0)
        ctx.term()

    hello = next(m for m in got if isinstance(m, Hello))
    assert hello.name == "probe-test" and hello.layers == mon.layers
    assert hello.config == {"lr": 1e-3, "data": str(tmp_path), "sizes": "[1, 2]"}
    steps = [m for m in got if isinstance(m, Step)]
    assert steps
    for msg in steps:
        table = tables[msg.step]
        np.testing.assert_array_equal(msg.stats, table.values)
        assert msg.loss == pytest.approx(table.loss) and msg.grad_norm == table.grad_norm
        assert msg.lr == pytest.approx(1e-3)
        if msg.step > 0:
            assert msg.step_time > 0 and msg.throughput == pytest.approx(16 / msg.step_time)
    end = next(m for m in got if isinstance(m, End))
    assert end.status == "crashed" and "ValueError: boom" in end.reason
    assert mon.run is not None and end.run == mon.run
