"""The OPC-UA session supervisor against a simulator that is killed, restarted and frozen.

The simulator runs as a child process (`linegate simulate`), as a PLC would: SIGKILL and a
restart five times, then SIGSTOP and SIGCONT once. The gateway's runtime (in this process,
with the real OPC-UA driver and the real pipeline) must, each time, flag every tag stale while
the server is gone, resume every tag within 10 s of the server being back, count every
reconnect, and never need a restart itself.

A restarted PLC keeps its clock: each restart starts the simulator's plant time after the
last time the gateway saw, so new samples are new.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from drivers.opcua_input import OpcUaInputDriver
from gateway.config import OpcUaDriver
from gateway.runtime import Runtime
from gateway.samples import Quality
from simulators.local_config import localize_config_text
from simulators.local_services import Mosquitto, free_port
from tests.opcua_helpers import CONFIG, bound_tags, plc_config

pytestmark = pytest.mark.integration

RESUME_S = 10.0
# The simulator's shutdown steps are bounded (10 s each); a clean stop takes well under one.
SIM_STOP_S = 30.0


def spawn_simulator(config: Path, start: float, log: Path) -> subprocess.Popen[bytes]:
    iso = datetime.fromtimestamp(start, UTC).isoformat()
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "simulate",
                "--config",
                str(config),
                "--speed",
                "60",
                "--start",
                iso,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba-cache")),
        )


async def wait_until(what: str, pred: Callable[[], bool], deadline_s: float) -> float:
    """Poll `pred` every 20 ms (the runtime ticks every 250 ms: there is no finer event);
    return the seconds it took."""
    started = time.monotonic()
    while not pred():
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-3000:]


async def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"simulator exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"simulator not listening on {port} after {deadline_s} s")
            await asyncio.sleep(0.1)


async def test_server_killed_five_times_and_frozen_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    config_path = tmp_path / "line.toml"
    config_path.write_text(
        localize_config_text(
            CONFIG.read_text(encoding="utf-8"), opcua_port=port, mqtt_port=mosquitto.port, influx_url=None
        )
    )
    config = plc_config(port)
    settings = config.drivers["plc"]
    assert isinstance(settings, OpcUaDriver)
    driver = OpcUaInputDriver("plc", settings, bound_tags(config))
    runtime = Runtime(config, {driver: list(range(len(config.tags)))}, [])
    q = runtime.pipeline.last_quality
    last_t = runtime.pipeline.last_t
    log = tmp_path / "simulator.log"

    def all_stale() -> bool:
        return bool(np.all(q == Quality.STALE))

    def all_fresh_after(t: float) -> Callable[[], bool]:
        return lambda: bool(np.all((q != Quality.STALE) & (last_t > t)))

    sim = spawn_simulator(config_path, datetime(2026, 3, 2, 6, tzinfo=UTC).timestamp(), log)
    run = asyncio.create_task(runtime.run())
    resumes: list[float] = []
    try:
        await wait_port(port, sim, log)
        await wait_until("every tag good at first", all_fresh_after(0), 30)
        assert runtime.health["plc"].connects == 1
        for cycle in range(1, 6):
            seen = float(np.nanmax(last_t))
            sim.kill()
            sim.wait()
            await wait_until(f"every tag stale after kill {cycle}", all_stale, RESUME_S)
            sim = spawn_simulator(config_path, seen + 120, log)
            await wait_port(port, sim, log)
            resumes.append(
                await wait_until(f"every tag back after restart {cycle}", all_fresh_after(seen), RESUME_S)
            )
            assert runtime.health["plc"].connects == cycle + 1
            assert driver.connection_losses == cycle

        seen = float(np.nanmax(last_t))
        sim.send_signal(signal.SIGSTOP)
        try:
            await wait_until("every tag stale while the server is frozen", all_stale, RESUME_S)
        finally:
            sim.send_signal(signal.SIGCONT)
        resumes.append(await wait_until("every tag back after SIGCONT", all_fresh_after(seen), RESUME_S))
        assert runtime.health["plc"].connects == 7
        assert driver.connection_losses == 6
        # A frozen server keeps its socket open: only a probe (ours or asyncua's) can notice.
        assert any(
            why in (runtime.health["plc"].last_error or "")
            for why in ("heartbeat not answered", "BadShutdown")
        )
        assert driver.dropped_overflow == 0
        assert not run.done(), "the gateway itself stopped"
    finally:
        runtime.stop()
        await asyncio.wait_for(run, 30)
        if sim.poll() is None:
            sim.send_signal(signal.SIGCONT)
            sim.terminate()
            try:
                sim.wait(SIM_STOP_S)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
                pytest.fail(f"the simulator did not stop within {SIM_STOP_S} s of SIGTERM:\n{tail(log)}")
    print(f"resume times after the server was back: {[f'{r:.1f}' for r in resumes]} s")
