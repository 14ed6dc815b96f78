"""Scenarios on the served simulator: injected faults show in what the servers publish, the PLC's
interlock trips and resets, and the acceptance command gives a reproducible day."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.opcua_input import OpcUaInputDriver
from gateway.config import LineConfig, OpcUaDriver, parse_config
from simulators.local_config import localize_config_text
from simulators.local_services import Mosquitto, free_port
from simulators.runner import run_simulator
from simulators.scenario import parse_scenario
from simulators.truth import read_truth
from tests.opcua_helpers import CONFIG, RecordingSink, Sample, bound_tags

pytestmark = pytest.mark.integration

START = datetime(2026, 2, 2, 6, 0, tzinfo=UTC)
T0 = START.timestamp()
H = 3600.0
SPEED = 600.0  # one publish (10 Hz) every 60 plant seconds

FAULTS = {
    "id": "T1",
    "title": "served fault catalogue",
    "hours": 1.5,
    "events": [
        {"at_h": 0, "kind": "sensor.rollover", "signal": "bw_feed.total", "modulus": 0.5},
        {
            "at_h": 0,
            "kind": "sensor.spikes",
            "signal": "dry.press_abs",
            "probability": 0.25,
            "duration_s": 5400,
        },
        {"at_h": 0.25, "kind": "sensor.stuck", "signal": "shr.power", "duration_s": 1800},
        {"at_h": 0.25, "kind": "sensor.dropout", "signal": "dry.mass", "duration_s": 1800},
        {"at_h": 0.25, "kind": "sensor.clock_skew", "signal": "gas.h2", "offset_s": 30, "duration_s": 1800},
        {"at_h": 0.25, "kind": "process.o2_ingress", "peak_vol_pct": 4.5, "duration_s": 120},
    ],
}


def served_config(opcua_port: int, mqtt_port: int) -> LineConfig:
    """The example line, every OPC-UA tag reporting each publish (timestamp trigger), plus the
    PLC's feed-trip flag."""
    text = localize_config_text(
        CONFIG.read_text(encoding="utf-8"), opcua_port=opcua_port, mqtt_port=mqtt_port, influx_url=None
    )
    data: dict[str, Any] = tomllib.loads(text)
    data["tags"].append(
        {
            "name": "il.feed_trip",
            "driver": "plc",
            "node_id": "ns=2;s=il.feed_trip",
            "unit": "",
            "range": [0, 1],
        }
    )
    for tag in data["tags"]:
        if tag["driver"] == "plc":
            tag["monitoring"] = {"trigger": "status_value_timestamp"}
    return parse_config(data, str(CONFIG))


async def start_simulator(
    config: LineConfig,
    scenario: dict[str, Any],
    stop: asyncio.Event,
    *,
    seed: int,
    truth_path: Path | None = None,
    broker: Mosquitto | None = None,
) -> asyncio.Task[None]:
    """The simulator at SPEED from START, running once it is ready (its start-up error raised here)."""
    ready = asyncio.Event()
    sim = asyncio.create_task(
        run_simulator(
            config,
            seed=seed,
            speed=SPEED,
            hours=None,
            truth_path=truth_path,
            start=START,
            stop=stop,
            ready=ready,
            scenario=parse_scenario(scenario),
            broker=broker,
        )
    )
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({sim, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if sim.done():
        sim.result()  # the simulator failed to start: raise its error here
    waiter.cancel()
    assert ready.is_set(), "simulator not ready within 30 s"
    return sim


@dataclass
class Served:
    config: LineConfig
    opcua: RecordingSink
    mqtt: list[dict[str, float]]

    def series(self, name: str) -> list[Sample]:
        k = self.config.tag_index(name)
        return [s for s in self.opcua.samples if s.tag == k and s.quality != 3]


@contextlib.asynccontextmanager
async def serve(mosquitto: Mosquitto, scenario: dict[str, Any], tmp_path: Path) -> AsyncIterator[Served]:
    config = served_config(free_port(), mosquitto.port)
    settings = config.drivers["plc"]
    assert isinstance(settings, OpcUaDriver)
    sink = RecordingSink()
    done = asyncio.Event()
    mqtt: list[dict[str, float]] = []
    sim = await start_simulator(config, scenario, done, seed=11, truth_path=tmp_path / "truth.jsonl")
    driver = OpcUaInputDriver("plc", settings, [bt for bt in bound_tags(config) if bt.tag.driver == "plc"])
    connected = asyncio.Event()
    reader = asyncio.create_task(driver.run(sink, connected.set))

    async def listen() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe("plant/line1/gas/h2", qos=1)
            async for msg in client.messages:
                mqtt.append(json.loads(bytes(msg.payload)))  # type: ignore[arg-type]

    listener = asyncio.create_task(listen())
    try:
        waiter = asyncio.create_task(connected.wait())
        await asyncio.wait({reader, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            reader.result()  # the driver failed: raise its error here
        assert connected.is_set(), "OPC-UA driver not connected within 20 s"
        yield Served(config, sink, mqtt)
    finally:
        done.set()
        await stop_all({"OPC-UA reader": reader, "MQTT listener": listener}, {"simulator": sim})


async def stop_all(cancel: dict[str, asyncio.Task[Any]], finish: dict[str, asyncio.Task[Any]]) -> None:
    """Cancel `cancel`, let `finish` end on their own; fail naming whatever does not end in
    time (asyncio.wait_for would wait forever for a task that swallows its cancellation)."""
    for task in cancel.values():
        task.cancel()
    tasks = {**cancel, **finish}
    _, pending = await asyncio.wait(tasks.values(), timeout=30)
    if pending:
        names = [name for name, task in tasks.items() if task in pending]
        for task in pending:
            task.cancel()
        pytest.fail(f"did not stop within 30 s: {names}")
    for name, task in finish.items():
        if not task.cancelled() and task.exception() is not None:
            raise AssertionError(f"{name} failed") from task.exception()


async def test_injected_faults_and_the_interlock_show_in_the_served_signals(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with serve(mosquitto, FAULTS, tmp_path) as s:
        k = s.config.tag_index("bw_feed.total")
        await s.opcua.wait_for(
            "1.4 plant hours", lambda: any(x.tag == k and x.t >= T0 + 1.4 * H for x in s.opcua.samples), 60
        )
    window = (T0 + 0.25 * H, T0 + 0.75 * H)

    def inside(x: Sample) -> bool:
        return window[0] < x.t < window[1]

    # Stuck: shr.power holds one value over the window and moves outside it.
    power = s.series("shr.power")
    assert len({x.value for x in power if inside(x)}) == 1
    assert len({x.value for x in power if x.t > window[1] + 60}) > 5
    # Dropout: dry.mass is not published over the window, and is before and after it.
    mass = s.series("dry.mass")
    assert not [x for x in mass if inside(x)]
    assert any(x.t < window[0] for x in mass)
    assert any(x.t > window[1] for x in mass)
    # Rollover: the feed totalizer stays below its modulus and wraps.
    total = [x.value for x in s.series("bw_feed.total")]
    assert max(total) < 0.5
    assert any(b < a for a, b in itertools.pairwise(total))
    # Spikes: a quarter of the pressure samples jump far (> 10 sigma = 25 mbar) from their neighbours.
    press = [x.value for x in s.series("dry.press_abs")]
    jumps = sum(1 for a, b, c in zip(press, press[1:], press[2:], strict=False) if abs(b - (a + c) / 2) > 25)
    assert jumps >= 0.1 * len(press)
    # Clock skew: MQTT gas.h2 stamped 30 s ahead over the window; publishes are every 60 plant s.
    offsets = {round((m["ts"] - T0) % 60) for m in s.mqtt if window[0] + 60 < m["ts"] < window[1] - 60}
    assert offsets == {30}
    assert {round((m["ts"] - T0) % 60) for m in s.mqtt if m["ts"] > window[1] + 120} == {0}
    # Interlock: air ingress at 0.25 h trips the feed (O2 >= 3 %), feed stops, then resets and restarts.
    trip = s.series("il.feed_trip")
    o2 = s.series("shr.o2_a")
    rate = s.series("bw_feed.rate")
    tripped = [x.t for x in trip if x.value == 1.0]
    assert tripped, "the feed never tripped"
    assert min(tripped) >= T0 + 0.25 * H
    assert any(x.value >= 3.0 for x in o2 if x.t <= min(tripped) + 60)
    assert all(x.value == 0.0 for x in rate if min(tripped) + 60 < x.t < max(tripped))
    reset = [x.t for x in trip if x.value == 0.0 and x.t > max(tripped)]
    assert reset, "the trip never reset"
    assert any(x.value > 0.5 for x in rate if x.t > min(reset) + 300)
    _, events = read_truth(tmp_path / "truth.jsonl", kind="event")
    assert [e["event"] for e in events] == [e["kind"] for e in FAULTS["events"]]


def spawn_day(config: Path, speed: float, truth: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gateway.cli", "simulate", "--config", str(config), "--scenario", "S6"]
    cmd += ["--seed", "7", "--hours", "24", "--speed", str(speed), "--truth", str(truth)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


# The README's acceptance command runs at 500x (a day in three minutes of wall time). Here the
# same command runs at two higher speeds side by side: the truth record must not depend on the
# speed (events are tied to plant steps, never to wall time), so equal records at 2,500x and
# 10,000x say what a 500x run would give, in a fraction of the suite's time.
SPEEDS = (2500, 10000)


def test_the_acceptance_command_runs_a_day_and_is_reproducible(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`linegate simulate --scenario S6 --seed 7 --hours 24 --speed N` at two speeds: both
    finish, and the truth records are byte-identical."""
    runs = []
    for speed in SPEEDS:
        config = tmp_path / f"line-{speed}.toml"
        text = localize_config_text(
            CONFIG.read_text(encoding="utf-8"),
            opcua_port=free_port(),
            mqtt_port=mosquitto.port,
            influx_url=None,
        )
        config.write_text(text, encoding="utf-8")
        truth = tmp_path / f"truth-{speed}.jsonl"
        runs.append(
            (
                spawn_day(config, speed, truth, tmp_path / f"sim-{speed}.log"),
                truth,
                tmp_path / f"sim-{speed}.log",
            )
        )
    try:
        for proc, _, log in runs:
            try:
                code = proc.wait(timeout=24 * 3600 / SPEEDS[0] + 120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a simulated day did not finish in time:\n{log.read_text()[-2000:]}")
            assert code == 0, log.read_text()[-2000:]
    finally:
        for proc, _, _ in runs:  # never leave a simulator behind, whatever failed
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    (_, truth_a, _), (_, truth_b, _) = runs
    assert truth_a.read_bytes() == truth_b.read_bytes()
    header, rows = read_truth(truth_a)
    assert header["scenario"]["id"] == "S6"
    assert header["seed"] == 7
    assert rows[-1]["t"] - rows[0]["t"] == 24 * H
    _, events = read_truth(truth_a, kind="event")
    assert [e["event"] for e in events] == ["sensor.zero_drift"]


COMM = {
    "id": "T2",
    "title": "served comm faults",
    "hours": 1,
    "events": [
        {"at_h": 0.1, "kind": "comm.opcua_stop", "duration_s": 3},
        {"at_h": 0.1, "kind": "comm.mqtt_stop", "duration_s": 3},
    ],
}


def arrival_gaps(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(sorted(times))), default=0.0)


async def test_comm_faults_stop_and_restore_the_servers_and_publishers(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = served_config(free_port(), mosquitto.port)
    settings = config.drivers["plc"]
    assert isinstance(settings, OpcUaDriver)
    arrivals: list[float] = []
    stop = asyncio.Event()
    sim = await start_simulator(config, COMM, stop, seed=2)
    sink = RecordingSink()
    driver = OpcUaInputDriver("plc", settings, [bt for bt in bound_tags(config) if bt.tag.driver == "plc"])

    async def supervise() -> None:  # the runtime's retry, shortened
        while True:
            with contextlib.suppress(Exception):
                await driver.run(sink, lambda: None)
            await asyncio.sleep(0.2)

    async def listen() -> None:
        loop = asyncio.get_running_loop()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe("plant/line1/gas/h2", qos=1)
            async for _ in client.messages:
                arrivals.append(loop.time())

    tasks = [asyncio.create_task(supervise()), asyncio.create_task(listen())]
    try:
        k = config.tag_index("bm.total")
        # 0.1 h at 600x is 0.6 s of wall time; the faults last 3 s; wait well past them.
        await sink.wait_for(
            "OPC-UA samples after the restart",
            lambda: (
                driver.connection_losses >= 1 and any(x.tag == k and x.t > T0 + 0.3 * H for x in sink.samples)
            ),
            60,
        )
    finally:
        stop.set()
        await stop_all({"OPC-UA reader": tasks[0], "MQTT listener": tasks[1]}, {"simulator": sim})
    assert driver.connection_losses >= 1
    assert set(sink.stale_marks) >= {bt.index for bt in driver.tags}
    assert arrival_gaps(arrivals) >= 2.5, "the MQTT publisher never paused"
    assert len(arrivals) > 20


async def test_broker_loss_stops_and_restarts_a_broker_the_simulator_controls(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    scenario = {
        "id": "T3",
        "title": "broker loss",
        "hours": 1,
        "events": [{"at_h": 0.1, "kind": "comm.broker_stop", "duration_s": 3}],
    }
    with Mosquitto(port=free_port()) as broker:
        config = served_config(free_port(), broker.port)
        arrivals: list[float] = []
        # paho's own loop reconnects after the broker is back (1-2 s backoff).
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="broker-loss-probe")
        client.on_connect = lambda c, *_: c.subscribe("plant/line1/gas/h2", qos=0)
        client.on_message = lambda *_: arrivals.append(time.monotonic())
        client.reconnect_delay_set(0.2, 1.0)
        client.connect(broker.host, broker.port)
        client.loop_start()
        stop = asyncio.Event()
        sim = await start_simulator(config, scenario, stop, seed=2, broker=broker)
        try:
            deadline = time.monotonic() + 60
            while not (arrival_gaps(arrivals) >= 2.5 and arrivals and arrivals[-1] > time.monotonic() - 1):
                assert time.monotonic() < deadline, (
                    "no pause-then-resume of the broker's messages within 60 s"
                )
                await asyncio.sleep(0.1)  # arrivals come from paho's thread: nothing to await
        finally:
            stop.set()
            await stop_all({}, {"simulator": sim})
            client.loop_stop()
            client.disconnect()
        assert broker.running
