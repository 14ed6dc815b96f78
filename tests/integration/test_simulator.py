"""The simulator end to end: its real OPC-UA server and its MQTT publishers on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from asyncua import Client, ua

from gateway.config import LineConfig, parse_config
from simulators.local_services import Mosquitto, free_port
from simulators.opcua_server import SimOpcUaServer
from simulators.plant import SIGNALS
from simulators.runner import run_simulator
from simulators.truth import read_truth

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
SPEED = 600.0
T = TypeVar("T")


async def poll(what: str, fn: Callable[[], Awaitable[T | None]], deadline_s: float = 10.0) -> T:
    """Call `fn` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = await fn()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def local_config(mqtt_port: int, opcua_port: int) -> LineConfig:
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    data["drivers"]["plc"]["url"] = f"opc.tcp://127.0.0.1:{opcua_port}/linegate/sim"
    data["drivers"]["iot"]["connection"]["port"] = mqtt_port
    return parse_config(data, str(CONFIG))


@dataclass
class Sim:
    config: LineConfig
    url: str
    truth_path: Path
    start: datetime


@pytest.fixture
async def sim(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Sim]:
    config = local_config(mosquitto.port, free_port())
    truth_path = tmp_path / "truth.jsonl"
    start = datetime.now(UTC).replace(microsecond=0)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_simulator(
            config,
            seed=5,
            speed=SPEED,
            hours=None,
            truth_path=truth_path,
            start=start,
            stop=stop,
            ready=ready,
        )
    )
    ready_wait = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, ready_wait}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # startup failed: raise its error here
    assert ready_wait in done, "simulator did not become ready within 30 s"
    url = config.drivers["plc"].url  # type: ignore[union-attr]
    try:
        yield Sim(config, url, truth_path, start)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_every_opcua_tag_is_served_good_in_plant_time(sim: Sim) -> None:
    async with Client(sim.url) as client:
        ns = await client.get_namespace_index("urn:linegate:simulator")
        assert ns == 2
        opcua_tags = [t for t in sim.config.tags if sim.config.drivers[t.driver].type == "opcua"]
        assert len(opcua_tags) == 19  # the shipped config: 19 PLC tags, 3 on MQTT
        node = client.get_node("ns=2;s=bw_feed.total")

        async def plant_ahead() -> bool:
            dv = await node.read_data_value()
            return dv.SourceTimestamp > datetime.now(UTC) + timedelta(minutes=5)

        await poll("plant time to run ahead of wall time", plant_ahead)
        for tag in opcua_tags:
            assert tag.node_id is not None
            dv = await client.get_node(tag.node_id).read_data_value()
            assert dv.StatusCode is not None, tag.name
            assert dv.StatusCode.is_good(), tag.name
            assert dv.Value is not None, tag.name
            assert dv.Value.VariantType == ua.VariantType.Double, tag.name
            lo, hi = tag.range
            assert lo <= dv.Value.Value <= hi, (tag.name, dv.Value.Value)
            # Plant time: at 600x it is minutes ahead of the wall clock after a second or so.
            assert dv.SourceTimestamp is not None, tag.name
            assert dv.SourceTimestamp > datetime.now(UTC), tag.name
            assert dv.ServerTimestamp == dv.SourceTimestamp, tag.name
            props = {
                (await p.read_browse_name()).Name: await p.read_value()
                for p in await client.get_node(tag.node_id).get_properties()
            }
            assert props["EngineeringUnits"].DisplayName.Text == tag.unit
            assert (props["EURange"].Low, props["EURange"].High) == tag.range


async def test_feed_rate_setpoint_write_moves_the_feed_rate(sim: Sim) -> None:
    async with Client(sim.url) as client:
        sp = client.get_node("ns=2;s=shr.feed_rate_sp")
        rate = client.get_node("ns=2;s=bw_feed.rate")
        assert await sp.read_value() == pytest.approx(1.7)

        await sp.write_value(ua.DataValue(ua.Variant(0.3, ua.VariantType.Double)))

        async def low() -> bool:
            return await rate.read_value() < 0.6

        await poll("bw_feed.rate to fall after writing 0.3 t/h", low)

        await sp.write_value(ua.DataValue(ua.Variant(2.0, ua.VariantType.Double)))

        async def high() -> bool:
            return await rate.read_value() > 1.5

        await poll("bw_feed.rate to rise after writing 2.0 t/h", high)
        assert await sp.read_value() == 2.0


async def test_out_of_range_setpoint_write_is_refused(sim: Sim) -> None:
    async with Client(sim.url) as client:
        sp = client.get_node("ns=2;s=shr.feed_rate_sp")
        with pytest.raises(ua.uaerrors.BadOutOfRange):
            await sp.write_value(ua.DataValue(ua.Variant(5.0, ua.VariantType.Double)))
        with pytest.raises(ua.uaerrors.BadOutOfRange):
            await client.get_node("ns=2;s=dry.press_sp").write_value(
                ua.DataValue(ua.Variant(1000.0, ua.VariantType.Double))
            )
        assert await sp.read_value() == pytest.approx(1.7)
        # Measured values are read-only.
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await client.get_node("ns=2;s=bm.total").write_value(
                ua.DataValue(ua.Variant(0.0, ua.VariantType.Double))
            )


async def test_mqtt_tags_arrive_as_json_in_plant_time(sim: Sim, mosquitto: Mosquitto) -> None:
    topics = {t.topic: t for t in sim.config.tags if t.topic is not None}
    assert len(topics) == 3
    seen: dict[str, dict[str, float]] = {}
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def collect() -> None:
            # Until every topic has carried a sample stamped clearly in plant time (at 600x the
            # plant runs minutes ahead of the wall clock).
            async for msg in client.messages:
                assert not msg.retain
                payload = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                if payload["ts"] > time.time() + 60:
                    seen[str(msg.topic)] = payload
                if len(seen) == len(topics):
                    return

        await asyncio.wait_for(collect(), timeout=10)
    for topic, payload in seen.items():
        tag = topics[topic]
        assert set(payload) == {"value", "ts"}
        lo, hi = tag.range
        assert lo <= payload["value"] <= hi, (tag.name, payload)
        assert payload["ts"] >= sim.start.timestamp()


async def test_truth_file_is_written_while_running(sim: Sim) -> None:
    async def rows() -> list[dict[str, Any]] | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            _, r = read_truth(sim.truth_path)
            return r if len(r) >= 10 else None
        return None

    got = await poll("ten truth rows", rows)
    header, _ = read_truth(sim.truth_path)
    assert header["seed"] == 5
    assert header["transport_delay_s"] == 5550
    assert got[0]["t"] == sim.start.timestamp()
    assert got[1]["t"] - got[0]["t"] == 60


async def test_node_id_outside_the_simulator_namespace_is_an_error_at_start() -> None:
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    data["drivers"]["plc"]["url"] = f"opc.tcp://127.0.0.1:{free_port()}/linegate/sim"
    next(t for t in data["tags"] if t["name"] == "bm.total")["node_id"] = "ns=3;s=bm.total"
    server = SimOpcUaServer(parse_config(data), "plc", known_signals=SIGNALS)
    with pytest.raises(ValueError, match=r"bm\.total: node_id ns=3;s=bm\.total is not in namespace 2"):
        await server.start()
    await server.stop()
