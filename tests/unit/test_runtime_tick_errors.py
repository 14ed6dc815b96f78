"""A failing tick is logged and counted, and the pipeline ticks on."""

from __future__ import annotations

import asyncio
import socket
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


async def test_watchdog_pings_stop_within_one_period_once_the_pipeline_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real notify socket, as systemd's: the runtime pings while it ticks; once every tick
    fails (a dead pipeline, the event loop still alive) the pings stop within one watchdog
    period, so systemd would kill and restart it."""
    period_s = 6.0
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(period_s * 1e6)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    loop = asyncio.get_running_loop()
    pings: list[float] = []
    first_ping = asyncio.Event()

    def receive() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            if b"WATCHDOG=1" in data.split(b"\n"):
                pings.append(loop.time())
                first_ping.set()

    loop.add_reader(sock.fileno(), receive)
    runtime = Runtime(load_config(CONFIG), {}, [])
    stalled_at: list[float] = []

    def dead(batch: SampleBatch, arrival: float | None = None):  # type: ignore[no-untyped-def]
        if not stalled_at:
            stalled_at.append(loop.time())
        raise RuntimeError("the pipeline is dead")

    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(first_ping.wait(), 30)
        runtime.pipeline.tick = dead  # type: ignore[method-assign]
        # Watch past the stall for one period and a half: no ping may come after one period.
        await asyncio.sleep(1.5 * period_s)  # the observation window itself, not a wait for an event
    finally:
        loop.remove_reader(sock.fileno())
        runtime.stop()
        await asyncio.wait_for(task, 30)
        sock.close()
    assert stalled_at
    late = [t - stalled_at[0] for t in pings if t > stalled_at[0] + period_s]
    assert not late, f"pings {late} s after the stall"
    assert runtime.tick_errors > 0
