"""MQTT input and operator output drivers against a real mosquitto.

The shared broker comes from the session fixture `mosquitto` (tests/conftest.py). Each test uses
its own topic prefix, so retained messages of one test never reach another. The broker-restart
test starts a private mosquitto, because it must kill it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from pydantic import ValidationError

from drivers.mqtt_common import ProtocolSetting
from drivers.mqtt_input import MqttInputDriver
from drivers.mqtt_output import MqttOperatorOutput
from drivers.operator_topics import base_topic, iso_ms
from gateway.config import LineConfig, MqttConnection, MqttOutput, Tag, TopicRoute, load_config
from gateway.config import MqttInputDriver as MqttInputSettings
from gateway.errors import FatalDriverError, RetryableError
from gateway.output_queue import OutputQueue
from gateway.ports import BoundTag, FlowFigure, PipelineUpdate, SignalState
from gateway.samples import Quality
from simulators.local_services import Mosquitto, free_port
from tests.builders import pipeline_update, yield_figure
from tests.mqtt_helpers import T0, TIMEOUT, BrokerAddress, ListSink, Subscriber, eventually, running

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LINE_CONFIG = REPO / "config" / "line1.toml"


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def line_config() -> LineConfig:
    return load_config(LINE_CONFIG)


# -- input ------------------------------------------------------------------------------------


def input_driver(
    broker: BrokerAddress, prefix: str, client_id: str | None = None, protocol: ProtocolSetting = "auto"
) -> tuple[MqttInputDriver, dict[str, BoundTag]]:
    tags = {
        "h2": BoundTag(
            3, Tag(name="gas.h2", driver="iot", unit="ppm", range=(0, 1000), topic=f"{prefix}/h2")
        ),
        "voc": BoundTag(
            5,
            Tag(
                name="gas.voc",
                driver="iot",
                unit="ppm",
                range=(0, 2000),
                topic=f"{prefix}/voc",
                payload="number",
            ),
        ),
        "therm": BoundTag(
            7, Tag(name="therm.hotspot_max", driver="iot", unit="°C", range=(0, 200), topic=f"{prefix}/therm")
        ),
    }
    settings = MqttInputSettings(
        type="mqtt",
        connection=MqttConnection(
            host=broker.host,
            port=broker.port,
            client_id=client_id,
            protocol=protocol,
        ),
        qos=1,
        max_payload_bytes=256,
    )
    return MqttInputDriver("iot", settings, list(tags.values())), tags


async def publish_all(broker: BrokerAddress, messages: list[tuple[str, bytes, bool]]) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        for topic, payload, retain in messages:
            await pub.publish(topic, payload, qos=1, retain=retain)


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
async def test_input_decodes_good_and_hostile_payloads(
    mosquitto: BrokerAddress, prefix: str, protocol: ProtocolSetting
) -> None:
    # A retained bare number is waiting before the driver connects: its age is unknown.
    await publish_all(mosquitto, [(f"{prefix}/voc", b"99", True)])
    driver, tags = input_driver(mosquitto, prefix, protocol=protocol)
    h2, voc, therm = tags["h2"].index, tags["voc"].index, tags["therm"].index
    sink = ListSink()
    connected = asyncio.Event()
    before = time.time()
    async with running(driver.run(sink, connected.set), connected):
        # mosquitto 2.0 speaks MQTT 5, so `auto` stays on it; "3.1.1" is forced.
        assert driver.protocol == ("5" if protocol == "auto" else "3.1.1")
        await eventually(lambda: driver.rejected["retained_untimed"] == 1, "the retained number")
        await publish_all(
            mosquitto,
            [
                (f"{prefix}/therm", b"{not json", False),  # rejected before any good sample
                (f"{prefix}/h2", json.dumps({"value": 5.5, "ts": T0}).encode(), False),
                (
                    f"{prefix}/h2",
                    json.dumps({"value": 6, "ts": T0 + 1, "quality": "uncertain"}).encode(),
                    False,
                ),
                (f"{prefix}/h2", json.dumps({"value": None, "ts": T0 + 2, "quality": "bad"}).encode(), False),
                (
                    f"{prefix}/h2",
                    json.dumps({"value": 1000.5, "ts": T0 + 3}).encode(),
                    False,
                ),  # range 0..1000
                (f"{prefix}/h2", b'{"value": 1, "ts": 1714564800, "pad": "' + b"x" * 300 + b'"}', False),
                (f"{prefix}/h2", b"\xff\xfe", False),
                (f"{prefix}/h2", b'{"value": true, "ts": 1714564800}', False),
                (f"{prefix}/h2", b'{"value": NaN, "ts": 1714564800}', False),
                (f"{prefix}/h2", b'{"value": 1, "ts": 1714564800000}', False),
                (f"{prefix}/h2", b'{"value": 1}', False),
                (f"{prefix}/voc", b"12.5", False),
                (f"{prefix}/voc", b"inf", False),
            ],
        )
        await eventually(lambda: driver.received == 14, "14 messages")
    after = time.time()

    assert driver.accepted == 4
    assert driver.rejected == {
        "oversized": 1,
        "malformed": 3,
        "non_finite": 2,
        "bad_timestamp": 2,
        "out_of_range": 1,
        "unexpected_topic": 0,
        "retained_untimed": 1,
        "queue_overflow": 0,
    }

    h2_samples = sink.of(h2)
    assert [(s.t, s.quality) for s in h2_samples[:3]] == [
        (T0, Quality.GOOD),
        (T0 + 1, Quality.UNCERTAIN),
        (T0 + 2, Quality.BAD),
    ]
    assert [s.value for s in h2_samples[:2]] == [5.5, 6.0]
    assert math.isnan(h2_samples[2].value)
    # Each rejection marks the tag BAD at its last source time, so the pipeline sees it bad.
    assert len(h2_samples) == 10
    for s in h2_samples[3:]:
        assert (s.t, s.quality, s.status) == (T0 + 2, Quality.BAD, 0)
        assert math.isnan(s.value)

    voc_samples = sink.of(voc)
    assert len(voc_samples) == 2  # the retained "99" produced no sample
    good, bad = voc_samples
    assert (good.value, good.quality) == (12.5, Quality.UNCERTAIN)
    assert before <= good.t <= after  # receive time stands in for the missing source time
    assert (bad.t, bad.quality) == (good.t, Quality.BAD)
    assert math.isnan(bad.value)

    (therm_sample,) = sink.of(therm)
    assert therm_sample.quality is Quality.BAD
    assert before <= therm_sample.t <= after  # no source time known yet: receive time

    await publish_all(mosquitto, [(f"{prefix}/voc", b"", True)])  # clear the retained message


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
async def test_input_persistent_session_keeps_messages_and_counts_stale_topics(
    mosquitto: BrokerAddress, prefix: str, protocol: ProtocolSetting
) -> None:
    # With MQTT 5 (auto) the session must be resumed by clean_start=False plus a session expiry;
    # with 3.1.1 by clean_session=False. The old session here is a 3.1.1 one either way.
    client_id = f"test-{prefix}"
    # An earlier run of this gateway, whose config also had a topic the current one dropped.
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, identifier=client_id, clean_session=False
    ) as old:
        await old.subscribe([(f"{prefix}/h2", 1), (f"{prefix}/retired", 1)])
    # While the gateway is down, a sensor keeps publishing (QoS 1): the session queues it.
    await publish_all(
        mosquitto,
        [
            (f"{prefix}/h2", json.dumps({"value": 1.0, "ts": T0}).encode(), False),
            (f"{prefix}/retired", b"1", False),
        ],
    )
    driver, tags = input_driver(mosquitto, prefix, client_id=client_id, protocol=protocol)
    sink = ListSink()
    connected = asyncio.Event()
    try:
        async with running(driver.run(sink, connected.set), connected):
            await eventually(lambda: driver.received == 2, "the queued messages")
    finally:
        # Remove the persistent session from the shared broker.
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=client_id, clean_session=True):
            pass
    assert driver.rejected["unexpected_topic"] == 1
    assert [(s.tag, s.value, s.t) for s in sink.samples] == [(tags["h2"].index, 1.0, T0)]


async def test_input_unreachable_broker_is_retryable(prefix: str) -> None:
    driver, _ = input_driver(_Address("127.0.0.1", free_port()), prefix)
    with pytest.raises(RetryableError) as err:
        await driver.run(ListSink(), lambda: None)
    assert isinstance(err.value.__cause__, aiomqtt.MqttError)


async def test_input_missing_password_env_is_fatal(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINEGATE_TEST_NO_SUCH_PASSWORD", raising=False)
    settings = MqttInputSettings(
        type="mqtt",
        connection=MqttConnection(
            port=free_port(), username="u", password_env="LINEGATE_TEST_NO_SUCH_PASSWORD"
        ),
    )
    driver = MqttInputDriver("iot", settings, [])
    with pytest.raises(FatalDriverError, match="LINEGATE_TEST_NO_SUCH_PASSWORD"):
        await driver.run(ListSink(), lambda: None)


def test_input_refuses_wildcard_and_shared_topics() -> None:
    # A wildcard in a tag's own topic is a config error now (routes are the way to use one).
    with pytest.raises(ValidationError, match="topic"):
        Tag(name="a", driver="iot", unit="-", range=(0, 1), topic="plant/+/x")
    with pytest.raises(ValidationError, match="topic"):
        Tag(name="a", driver="iot", unit="-", range=(0, 1), topic="plant/#")
    settings = MqttInputSettings(type="mqtt")
    a = Tag(name="a", driver="iot", unit="-", range=(0, 1), topic="plant/x")
    b = Tag(name="b", driver="iot", unit="-", range=(0, 1), topic="plant/x")
    with pytest.raises(FatalDriverError, match="also used by tag 'a'"):
        MqttInputDriver("iot", settings, [BoundTag(0, a), BoundTag(1, b)])


def test_input_refuses_a_topicless_tag_no_route_can_name() -> None:
    settings = MqttInputSettings(type="mqtt", routes=[TopicRoute(topic="plant/+/gas/+", tag="gas.{2}")])
    reachable = Tag(name="gas.h2", driver="iot", unit="ppm", range=(0, 1000))
    unreachable = Tag(name="vib.rms", driver="iot", unit="mm/s", range=(0, 50))
    MqttInputDriver("iot", settings, [BoundTag(0, reachable)])
    with pytest.raises(FatalDriverError, match=r"'vib\.rms' has no topic"):
        MqttInputDriver("iot", settings, [BoundTag(0, reachable), BoundTag(1, unreachable)])
    with pytest.raises(FatalDriverError, match="has no topic"):
        MqttInputDriver("iot", MqttInputSettings(type="mqtt"), [BoundTag(0, reachable)])


async def test_input_routes_map_wildcard_topics_to_declared_tags(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    h2 = BoundTag(2, Tag(name="gas.h2", driver="iot", unit="ppm", range=(0, 1000)))
    co = BoundTag(4, Tag(name="gas.co", driver="iot", unit="ppm", range=(0, 500), payload="number"))
    # A tag with its own topic under the route's filter: its topic wins, and the route cannot
    # reach it from another line either (two sources would interleave in one tag).
    o2 = BoundTag(
        6, Tag(name="gas.o2", driver="iot", unit="vol%", range=(0, 25), topic=f"{prefix}/plant/l1/gas/o2")
    )
    settings = MqttInputSettings(
        type="mqtt",
        connection=MqttConnection(host=mosquitto.host, port=mosquitto.port),
        routes=[TopicRoute(topic=f"{prefix}/plant/+/gas/+", tag="gas.{2}")],
    )
    driver = MqttInputDriver("iot", settings, [h2, co, o2])
    # The o2 topic is covered by the route's filter: subscribing it too would deliver it twice.
    assert driver.topics == [f"{prefix}/plant/+/gas/+"]
    sink = ListSink()
    connected = asyncio.Event()
    async with running(driver.run(sink, connected.set), connected):
        await publish_all(
            mosquitto,
            [
                (f"{prefix}/plant/l1/gas/h2", json.dumps({"value": 12.5, "ts": T0}).encode(), False),
                (f"{prefix}/plant/l2/gas/co", b"7", False),
                (f"{prefix}/plant/l1/gas/o2", json.dumps({"value": 20.9, "ts": T0}).encode(), False),
                (
                    f"{prefix}/plant/l1/gas/xyz",
                    json.dumps({"value": 1, "ts": T0}).encode(),
                    False,
                ),  # undeclared
                (
                    f"{prefix}/plant/l2/gas/o2",
                    json.dumps({"value": 5, "ts": T0}).encode(),
                    False,
                ),  # has a topic
                (f"{prefix}/plant/l1/gas/h2", b'{"value": 1}', False),  # routed, then rejected
            ],
        )
        await eventually(lambda: driver.received == 6, "6 messages")
    assert driver.accepted == 3
    assert driver.routed == 3
    assert driver.rejected["unexpected_topic"] == 2
    assert driver.rejected["bad_timestamp"] == 1
    assert sum(driver.rejected.values()) == 3
    good, bad = sink.of(h2.index)
    assert (good.value, good.t, good.quality) == (12.5, T0, Quality.GOOD)
    assert (bad.t, bad.quality) == (T0, Quality.BAD)
    assert [(s.value, s.quality) for s in sink.of(co.index)] == [(7.0, Quality.UNCERTAIN)]
    assert [(s.value, s.t) for s in sink.of(o2.index)] == [(20.9, T0)]  # exactly once


@dataclass(frozen=True)
class _Address:
    host: str
    port: int


# -- output -----------------------------------------------------------------------------------


def output_settings(broker: BrokerAddress, prefix: str, min_interval_s: float = 0.0) -> MqttOutput:
    return MqttOutput(
        connection=MqttConnection(host=broker.host, port=broker.port),
        prefix=prefix,
        qos=1,
        min_interval_s=min_interval_s,
    )


def sample_update(t: float = T0) -> PipelineUpdate:
    return pipeline_update(
        t_plant=t,
        signals=[
            SignalState("gas.h2", "ppm", t, 5.5, Quality.GOOD),
            SignalState("shr.power", "kW", t - 0.25, math.nan, Quality.BAD),
            SignalState("dry.jacket_temp", "°C", t - 30, 71.25, Quality.STALE),
            SignalState("shr.o2_a", "vol%", t, 1.2, Quality.UNCERTAIN),
        ],
        yield_rolling=yield_figure(t=t),  # the builder's defaults: EXPECTED_YIELD is them on the wire
        flows=FlowFigure(t=t, feed_tph=1.65, black_mass_tph=None, feed_vs_nameplate=1.65 / 1.6875),
    )


def signal_update(name: str, value: float, t: float) -> PipelineUpdate:
    return pipeline_update(t_plant=t, signals=[SignalState(name, "ppm", t, value, Quality.GOOD)])


EXPECTED_SIGNALS = {
    "gas.h2": {"value": 5.5, "unit": "ppm", "quality": "good", "timestamp": "2024-05-01T12:00:00.000Z"},
    "shr.power": {"value": None, "unit": "kW", "quality": "bad", "timestamp": "2024-05-01T11:59:59.750Z"},
    "dry.jacket_temp": {
        "value": 71.25,
        "unit": "°C",
        "quality": "stale",
        "timestamp": "2024-05-01T11:59:30.000Z",
    },
    "shr.o2_a": {
        "value": 1.2,
        "unit": "vol%",
        "quality": "uncertain",
        "timestamp": "2024-05-01T12:00:00.000Z",
    },
}
EXPECTED_YIELD = {
    "value": 41.237,
    "unit": "%",
    "quality": "good",
    "timestamp": "2024-05-01T12:00:00.000Z",
    "uncertainty": 1.23,
    "uncertainty_kind": "2sigma",
    "basis": "wet",
    "window_h": 4.0,
    "covered_h": 4.0,
    "coverage": 0.97,
    "delay_min": 95.0,
    "feed_t": 6.6,
    "black_mass_t": 2.722,
}
EXPECTED_FEED = {
    "value": 1.65,
    "unit": "t/h",
    "quality": "good",
    "timestamp": "2024-05-01T12:00:00.000Z",
    "vs_nameplate": 0.9778,
}
EXPECTED_BLACK_MASS = {
    "value": None,
    "unit": "t/h",
    "quality": "bad",
    "timestamp": "2024-05-01T12:00:00.000Z",
}


async def test_output_retained_topics_reach_a_late_subscriber(
    mosquitto: BrokerAddress, prefix: str, line_config: LineConfig
) -> None:
    driver = MqttOperatorOutput(output_settings(mosquitto, prefix), line_config)
    base = f"{prefix}/winston-salem/preprocessing/line1"
    assert driver.base == base == base_topic(line_config, prefix)
    queue: OutputQueue[PipelineUpdate] = OutputQueue(100)
    connected = asyncio.Event()
    queue.put(signal_update("gas.h2", 1.0, T0 - 5))  # superseded by the next update
    queue.put(sample_update())
    wall_before = time.time()
    async with running(driver.run(queue, connected.set), connected):
        await eventually(lambda: len(queue) == 0 and driver.pending == 0, "the queue to be delivered")
        # 4 signals + yield + 2 flows + the birth (the superseded h2 value may or may not go out).
        assert driver.published in (8, 9)
        assert driver.reconnect_republished == 0
        assert set(driver.latest) == {f"{base}/signals/{n}" for n in EXPECTED_SIGNALS} | {
            f"{base}/kpi/yield_rolling",
            f"{base}/kpi/feed_rate",
            f"{base}/kpi/black_mass_rate",
        }

        # A dashboard that connects only now gets the whole state from the retained store.
        async with Subscriber(mosquitto, f"{base}/#") as sub:
            topics = {f"{base}/status", *driver.latest}
            await eventually(lambda: topics <= set(sub.latest), "every retained topic")
            assert all(sub.latest[t].retain for t in topics)
            for name, expected in EXPECTED_SIGNALS.items():
                assert sub.json(f"{base}/signals/{name}") == expected
            assert sub.json(f"{base}/kpi/yield_rolling") == EXPECTED_YIELD
            assert sub.json(f"{base}/kpi/feed_rate") == EXPECTED_FEED
            assert sub.json(f"{base}/kpi/black_mass_rate") == EXPECTED_BLACK_MASS
            status = sub.json(f"{base}/status")
            assert status.keys() == {"state", "since", "gateway"}
            assert (status["state"], status["gateway"]) == ("online", "linegate")
            assert iso_ms(wall_before - 1) <= status["since"] <= iso_ms(time.time())

    # Cancelled: a clean stop leaves a retained "offline, shutdown" behind.
    async with Subscriber(mosquitto, f"{base}/status") as sub:
        assert await sub.wait_json(f"{base}/status", lambda p: p.get("state") == "offline", "offline") == {
            "state": "offline",
            "reason": "shutdown",
        }

    # Run again with the same driver object: birth again, and everything in `latest` republished.
    published = driver.published
    connected = asyncio.Event()
    async with (
        Subscriber(mosquitto, f"{base}/status") as sub,
        running(driver.run(queue, connected.set), connected),
    ):
        assert driver.reconnect_republished == len(driver.latest) == 7
        assert driver.published == published + 1 + 7
        await sub.wait_json(f"{base}/status", lambda p: p["state"] == "online", "the second birth")


async def test_output_throttles_per_topic_and_publishes_the_last_value(
    mosquitto: BrokerAddress, prefix: str, line_config: LineConfig
) -> None:
    interval = 0.3
    driver = MqttOperatorOutput(output_settings(mosquitto, prefix, min_interval_s=interval), line_config)
    topic = f"{driver.base}/signals/gas.h2"
    queue: OutputQueue[PipelineUpdate] = OutputQueue(1000)
    connected = asyncio.Event()
    async with Subscriber(mosquitto, topic) as sub, running(driver.run(queue, connected.set), connected):
        start = time.monotonic()
        for i in range(40):  # 40 values over about 0.8 s, far faster than one per 0.3 s
            queue.put(signal_update("gas.h2", float(i), T0 + i))
            await asyncio.sleep(0.02)  # pacing the producer, not synchronisation
        elapsed = time.monotonic() - start
        await sub.wait_json(topic, lambda p: p["value"] == 39.0, "the last value")
        # The PUBACK may reach the driver just after the subscriber got the message.
        await eventually(lambda: driver.pending == 0, "nothing left to publish")
    values = [json.loads(bytes(m.payload))["value"] for _, m in sub.history]  # type: ignore[arg-type]
    times = [t for t, _ in sub.history]
    assert values[0] == 0.0  # the first value is not held back
    assert values[-1] == 39.0
    assert values == sorted(values)
    assert len(values) <= math.ceil(elapsed / interval) + 2
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Unthrottled, values would arrive 20 ms apart; allow generous receive-side jitter.
    assert min(gaps) >= interval * 0.5


async def test_output_stops_promptly_when_cancelled_mid_publish(
    mosquitto: BrokerAddress, prefix: str, line_config: LineConfig
) -> None:
    # Regression: on Python 3.11 a cancel landing together with a PUBACK was swallowed inside
    # aiomqtt (asyncio.wait_for), and the driver published on forever after being cancelled.
    for trial in range(30):
        driver = MqttOperatorOutput(output_settings(mosquitto, prefix), line_config)
        queue: OutputQueue[PipelineUpdate] = OutputQueue(1000)
        connected = asyncio.Event()
        task = asyncio.create_task(driver.run(queue, connected.set))
        await asyncio.wait_for(connected.wait(), TIMEOUT)
        for i in range(20 + trial * 7):  # vary where in the publish cycle the cancel lands
            queue.put(signal_update("gas.h2", float(i), T0 + i))
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
        assert task in done, f"trial {trial}: driver still running {TIMEOUT} s after cancel"
        assert task.cancelled()


# -- Last Will and broker restart ---------------------------------------------------------------

GATEWAY_SCRIPT = """
import asyncio, sys
from drivers.mqtt_output import MqttOperatorOutput
from gateway.config import MqttConnection, MqttOutput, load_config
from gateway.output_queue import OutputQueue

async def main() -> None:
    config = load_config(sys.argv[1])
    connection = MqttConnection(host=sys.argv[2], port=int(sys.argv[3]))
    settings = MqttOutput(connection=connection, prefix=sys.argv[4])
    await MqttOperatorOutput(settings, config).run(OutputQueue(10), lambda: print("connected", flush=True))

asyncio.run(main())
"""


async def test_output_last_will_marks_a_killed_gateway_offline(
    mosquitto: BrokerAddress, prefix: str, line_config: LineConfig
) -> None:
    status = f"{base_topic(line_config, prefix)}/status"
    async with Subscriber(mosquitto, status) as sub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            GATEWAY_SCRIPT,
            str(LINE_CONFIG),
            mosquitto.host,
            str(mosquitto.port),
            prefix,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            await sub.wait_json(status, lambda p: p["state"] == "online", "the subprocess's birth")
        finally:
            proc.send_signal(signal.SIGKILL)  # no chance to say goodbye
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert await sub.wait_json(status, lambda p: p["state"] == "offline", "the Last Will") == {
            "state": "offline"
        }
    # Retained: a dashboard opened later sees the gateway offline too.
    async with Subscriber(mosquitto, status) as late:
        assert await late.wait_json(status, lambda p: True, "the retained status") == {"state": "offline"}


async def test_output_survives_a_broker_restart(prefix: str, line_config: LineConfig, tmp_path: Path) -> None:
    # A private broker: this test stops it. Without persistence, a restart loses every retained
    # message, as a real broker without a persistence file would.
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    try:
        driver = MqttOperatorOutput(output_settings(broker, prefix), line_config)
        queue: OutputQueue[PipelineUpdate] = OutputQueue(100)
        queue.put(sample_update())
        connected = asyncio.Event()
        task = asyncio.create_task(driver.run(queue, connected.set))
        await asyncio.wait_for(connected.wait(), TIMEOUT)
        await eventually(lambda: len(queue) == 0 and driver.pending == 0, "the first delivery")

        broker.stop(keep_workdir=True)
        # The driver is idle, yet it notices and hands the runtime a retryable error.
        with pytest.raises(RetryableError):
            await asyncio.wait_for(task, TIMEOUT)

        queue.put(signal_update("gas.h2", 8.0, T0 + 60))  # arrives while disconnected: stays queued
        broker.start()  # same port
        connected = asyncio.Event()
        async with running(driver.run(queue, connected.set), connected):
            assert driver.reconnect_republished == 7
            async with Subscriber(broker, f"{driver.base}/#") as sub:
                topics = {f"{driver.base}/status", *driver.latest}
                await eventually(lambda: topics <= set(sub.latest), "the restored retained state")
                await sub.wait_json(
                    f"{driver.base}/signals/gas.h2", lambda p: p["value"] == 8.0, "the new value"
                )
                assert sub.json(f"{driver.base}/kpi/yield_rolling") == EXPECTED_YIELD
    finally:
        broker.stop()
