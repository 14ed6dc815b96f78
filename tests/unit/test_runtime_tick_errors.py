"""A failing tick is logged and counted, and the pipeline ticks on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.runtime import Runtime
from gateway.samples import SampleBatch

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"


async def test_a_tick_that_raises_does_not_stop_the_tick_loop(caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(load_config(CONFIG), {}, [])
    real_tick = runtime.pipeline.tick
    calls = 0
    ticked_after = asyncio.Event()

    def flaky(batch: SampleBatch, arrival: float | None = None):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("a bug in one figure")
        if calls >= 4:
            ticked_after.set()
        return real_tick(batch, arrival)

    runtime.pipeline.tick = flaky  # type: ignore[method-assign]
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(ticked_after.wait(), 30)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 30)
    assert runtime.tick_errors == 1
    assert "pipeline tick failed" in caplog.text
