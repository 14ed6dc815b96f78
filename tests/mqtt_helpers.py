"""Helpers for tests against a real mosquitto: a recording subscriber, polling with a deadline,
and a small all-MQTT line config (no OPC-UA, no InfluxDB) for running a whole `Runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
import pytest
from paho.mqtt.properties import Properties

from gateway.config import LineConfig, parse_config
from gateway.ports import Service
from gateway.runtime import Runtime
from gateway.samples import Quality

TIMEOUT = 10.0
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z, plant time of the test data
SITE, AREA, LINE = "test-site", "preprocessing", "line1"
FEED, BLACK_MASS, H2 = "bw_feed.total", "bm.total", "gas.h2"


class BrokerAddress(Protocol):
    host: str
    port: int


async def eventually(condition: Callable[[], bool], what: str, within: float = TIMEOUT) -> None:
    """Poll `condition` until it holds, failing with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Sample:
    tag: int
    t: float
    value: float
    quality: Quality
    status: int


class ListSink:
    """A list-backed `SampleSink` (our own protocol; `gateway.bus.SampleBus` is the real one)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def put(self, tag: int, t: float, value: float, quality: Quality | int, status: int = 0) -> None:
        self.samples.append(Sample(tag, t, value, Quality(quality), status))

    def of(self, tag: int) -> list[Sample]:
        return [s for s in self.samples if s.tag == tag]


@contextlib.asynccontextmanager
async def running(coro: Any, started: asyncio.Event) -> AsyncIterator[asyncio.Task[None]]:
    """Run a driver's `run` coroutine as a task until `started` is set; cancel it on exit."""
    task = asyncio.create_task(coro)
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        if task in done:
            task.result()  # raises the driver's error
        task.cancel()
        pytest.fail("driver did not connect")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Subscriber:
    """A plain aiomqtt client recording every message and the newest one per topic."""

    def __init__(
        self, broker: BrokerAddress, *filters: str, protocol: aiomqtt.ProtocolVersion | None = None
    ) -> None:
        self.client = aiomqtt.Client(
            broker.host, broker.port, identifier=f"test-sub-{uuid.uuid4().hex[:8]}", protocol=protocol
        )
        self.filters = filters
        self.latest: dict[str, aiomqtt.Message] = {}
        self.history: list[tuple[float, aiomqtt.Message]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.client.__aenter__()
        await self.client.subscribe([(f, 1) for f in self.filters])
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            self.latest[message.topic.value] = message
            self.history.append((time.monotonic(), message))

    def on(self, topic: str) -> list[aiomqtt.Message]:
        """Every message received on `topic`, oldest first."""
        return [m for _, m in self.history if m.topic.value == topic]

    def json_on(self, topic: str) -> list[Any]:
        return [json.loads(payload(m)) for m in self.on(topic)]

    def retained_state(self, prefix: str) -> dict[str, bytes]:
        """Topics under `prefix` whose newest message is not a deletion (an empty payload)."""
        return {t: payload(m) for t, m in self.latest.items() if t.startswith(prefix) and payload(m)}

    def json(self, topic: str) -> Any:
        return json.loads(payload(self.latest[topic]))

    async def wait_json(self, topic: str, predicate: Callable[[Any], bool], what: str) -> Any:
        await eventually(
            lambda: (
                topic in self.latest and bool(payload(self.latest[topic])) and predicate(self.json(topic))
            ),
            what,
        )
        return self.json(topic)


def payload(message: aiomqtt.Message) -> bytes:
    return bytes(message.payload) if message.payload is not None else b""  # type: ignore[arg-type]


async def publish(
    broker: BrokerAddress,
    messages: list[tuple[str, bytes]],
    *,
    retain: bool = False,
    protocol: aiomqtt.ProtocolVersion | None = None,
    properties: Properties | None = None,
) -> None:
    async with aiomqtt.Client(broker.host, broker.port, protocol=protocol) as pub:
        for topic, data in messages:
            await pub.publish(topic, data, qos=1, retain=retain, properties=properties)


def sample(value: float, ts: float) -> bytes:
    return json.dumps({"value": value, "ts": ts}).encode()


def command(request_id: str | None, value: object = 1.5, **extra: object) -> bytes:
    body: dict[str, object] = {"value": value, **extra}
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body).encode()


def mqtt_line_config(
    broker: BrokerAddress,
    prefix: str,
    *,
    tick_ms: int = 50,
    min_interval_s: float = 0.0,
    commands: bool = True,
    h2_deadband: float = 0.0,
    input_client_id: str | None = None,
) -> LineConfig:
    """A line read only over MQTT: feed and black-mass totalizers and one gas signal.

    Sensor topics are `<prefix>/in/<tag>`; the operator tree is `<prefix>/test-site/preprocessing/line1`.
    The output's client id is `<prefix>-out`, so the command channel's is `<prefix>-out-commands`.
    """
    connection = {"host": broker.host, "port": broker.port}
    data: dict[str, object] = {
        "line": {"name": LINE, "site": SITE, "area": AREA, "nameplate": {"capacity": 13500}},
        "drivers": {
            "iot": {
                "type": "mqtt",
                "qos": 1,
                "connection": {**connection, **({"client_id": input_client_id} if input_client_id else {})},
            }
        },
        "tags": [
            {
                "name": FEED,
                "driver": "iot",
                "topic": f"{prefix}/in/{FEED}",
                "unit": "t",
                "range": [0, 1e9],
                "role": "feed",
                "kind": "total",
            },
            {
                "name": BLACK_MASS,
                "driver": "iot",
                "topic": f"{prefix}/in/{BLACK_MASS}",
                "unit": "t",
                "range": [0, 1e9],
                "role": "black_mass",
                "kind": "total",
            },
            {
                "name": H2,
                "driver": "iot",
                "topic": f"{prefix}/in/{H2}",
                "unit": "ppm",
                "range": [0, 1000],
                "deadband": h2_deadband,
            },
        ],
        # A short window so a few minutes of plant time give every KPI a figure.
        "yield": {"window_h": 0.1, "transport_delay_min": 1, "bin_s": 1, "max_gap_s": 60},
        "outputs": {
            "mqtt": {
                "prefix": prefix,
                "qos": 1,
                "min_interval_s": min_interval_s,
                "commands": commands,
                "connection": {**connection, "client_id": f"{prefix}-out"},
            }
        },
        "runtime": {"tick_ms": tick_ms},
    }
    return parse_config(data)


def base_of(prefix: str) -> str:
    return f"{prefix}/{SITE}/{AREA}/{LINE}"


@contextlib.asynccontextmanager
async def running_runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    """Run `runtime` until every driver and service has connected; stop it cleanly on exit."""
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    # The first run compiles (or loads) the numba kernels: allow for it.
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()
        task.cancel()
        pytest.fail(f"runtime not ready: {[(h.name, h.last_error) for h in runtime.health.values()]}")
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 30)


def running_service(service: Service) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    """Run a `Service` as a task until it calls `on_connected`; cancel it on exit."""
    connected = asyncio.Event()
    return running(service.run(connected.set), connected)


async def forget_sessions(broker: BrokerAddress, *client_ids: str) -> None:
    """Remove persistent sessions from a shared broker (a clean connect ends them)."""
    for client_id in client_ids:
        async with aiomqtt.Client(broker.host, broker.port, identifier=client_id, clean_session=True):
            pass
