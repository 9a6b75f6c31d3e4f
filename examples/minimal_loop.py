"""The probe in a training loop: run this, then `gradtui watch` in another terminal."""

from __future__ import annotations

import time

import torch
from torch import nn

from gradtui.probe import Monitor

model = nn.Sequential(
    nn.Linear(8, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 2)
)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(256, 8), torch.randint(0, 2, (256,))

with Monitor(model, name="minimal", optimizer=opt, config={"lr": 1e-3}) as mon:
    print(f"publishing on {mon.endpoint}")
    for _ in range(2000):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        mon.step(loss)  # after backward, before the optimizer step
        opt.step()
        time.sleep(0.01)  # slow enough to watch
