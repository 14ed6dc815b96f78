"""The operator tree's alarms branch and publish-on-change, against real mosquitto.

Alarms end to end through a whole `Runtime` (a sensor value out of range raises `tag_bad`, a
good one clears it), and the output driver on its own for what needs a controlled sequence:
events outside the rate limit, deletions never sent blindly, deadbands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from drivers.mqtt_output import MqttOperatorOutput
from drivers.operator_topics import alarm_events_topic, alarm_topic, iso_ms, signal_topic
from gateway.alarms import AlarmBoard, Severity
from gateway.composition import build_runtime
from gateway.config import LineConfig
from gateway.output_queue import OutputQueue
from gateway.ports import PipelineUpdate, SignalState
from gateway.samples import Quality
from simulators.local_services import Mosquitto
from tests.builders import pipeline_update
from tests.mqtt_helpers import (
    H2,
    T0,
    TIMEOUT,
    BrokerAddress,
    Subscriber,
    base_of,
    eventually,
    mqtt_line_config,
    payload,
    publish,
    running_runtime,
    sample,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return f"alarm-{uuid.uuid4().hex[:10]}"


# -- through the whole gateway -----------------------------------------------------------------


async def test_a_bad_tag_raises_an_alarm_and_its_recovery_clears_it(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    base = base_of(prefix)
    config = mqtt_line_config(mosquitto, prefix, commands=False)
    runtime = build_runtime(config)
    h2 = config.tag_index(H2)
    alarm = f"tag_bad:{H2}"
    active = alarm_topic(base, alarm)
    assert active == f"{base}/alarms/active/tag_bad:gas.h2"  # ':' stays as it is
    events = alarm_events_topic(base)
    async with Subscriber(mosquitto, f"{base}/alarms/#") as sub, running_runtime(runtime):
        await publish(mosquitto, [(f"{prefix}/in/{H2}", sample(5.0, T0))])
        await eventually(lambda: runtime.pipeline.last_value[h2] == 5.0, "the good sample")
        # 5000 ppm on a 0..1000 ppm detector: the reading is BAD, and that is an alarm.
        await publish(mosquitto, [(f"{prefix}/in/{H2}", sample(5000.0, T0 + 1))])
        raised = await sub.wait_json(active, lambda p: True, "the active alarm")
        async with Subscriber(mosquitto, active) as late:  # retained: a late HMI sees it too
            assert await late.wait_json(active, lambda p: True, "the retained alarm") == raised
            assert late.latest[active].retain
        # Still bad for a while: no second event.
        await publish(mosquitto, [(f"{prefix}/in/{H2}", sample(6000.0, T0 + 2))])
        (sensors,) = runtime.inputs
        await eventually(lambda: getattr(sensors, "received", 0) == 3, "the second bad sample")
        await publish(mosquitto, [(f"{prefix}/in/{H2}", sample(7.0, T0 + 3))])
        await eventually(lambda: active in sub.latest and payload(sub.latest[active]) == b"", "the deletion")
        await eventually(lambda: len(sub.on(events)) == 2, "two events")
    # The input refuses the reading (stamping the BAD marker with the tag's last source time) or
    # the pipeline flags it (at its own time): either way the alarm starts at that plant time.
    assert raised["since"] in (iso_ms(T0), iso_ms(T0 + 1))
    assert raised == {
        "id": alarm,
        "kind": "tag_bad",
        "subject": H2,
        "severity": "warning",
        "text": f"{H2}: bad quality",
        "since": raised["since"],
    }
    up, down = sub.json_on(events)
    assert up == {"event": "raised", **raised, "timestamp": raised["since"]}
    assert down == {"event": "cleared", **raised, "timestamp": "2024-05-01T12:00:03.000Z"}
    assert not any(m.retain for m in sub.on(events))
    # Deleted from the broker's retained store: a dashboard opened now sees no such alarm.
    async with Subscriber(mosquitto, f"{base}/alarms/active/#", f"{base}/status") as late:
        await eventually(lambda: f"{base}/status" in late.latest, "the retained status")
        assert active not in late.latest


# -- the output driver on its own --------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_output(
    driver: MqttOperatorOutput, queue: OutputQueue[PipelineUpdate]
) -> AsyncIterator[None]:
    connected = asyncio.Event()
    task = asyncio.create_task(driver.run(queue, connected.set))
    waiter = asyncio.create_task(connected.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        if task in done:
            task.result()
        task.cancel()
        pytest.fail("output did not connect")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def output_for(broker: BrokerAddress, prefix: str, **kwargs: float) -> tuple[MqttOperatorOutput, LineConfig]:
    config = mqtt_line_config(broker, prefix, **kwargs)  # type: ignore[arg-type]
    assert config.outputs.mqtt is not None
    return MqttOperatorOutput(config.outputs.mqtt, config), config


class Alarms:
    """Drives a real `AlarmBoard` to build the updates the runtime would hand the output."""

    def __init__(self) -> None:
        self.board = AlarmBoard()

    def update(self, t: float, *active: str) -> PipelineUpdate:
        conditions = {a: (a.split(":")[0], a.split(":")[1], Severity.WARNING, f"{a} holds") for a in active}
        events = self.board.update(conditions, t)
        update = pipeline_update(t_plant=t)
        update.alarm_events.extend(events)
        update.active_alarms.extend(self.board.active.values())
        return update


async def test_alarm_events_bypass_the_rate_limit_and_deletions_are_never_blind(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    # A long interval: retained topics are throttled hard, events must not be.
    driver, _ = output_for(mosquitto, prefix, min_interval_s=30.0)
    base = driver.base
    foreign = f"{base}/alarms/active/tag_bad:someone.else"
    await publish(mosquitto, [(foreign, b'{"id":"tag_bad:someone.else"}')], retain=True)
    alarms = Alarms()
    queue: OutputQueue[PipelineUpdate] = OutputQueue(100)
    flap = "tag_bad:shr.power"
    steady = "tag_stale:gas.h2"
    try:
        async with Subscriber(mosquitto, f"{base}/alarms/#") as sub, running_output(driver, queue):
            queue.put(alarms.update(T0, steady))
            queue.put(alarms.update(T0 + 1, steady, flap))
            await eventually(lambda: alarm_topic(base, flap) in sub.latest, "the first raise")
            for i in range(2, 7):  # flapping: cleared at even steps, raised again at odd ones
                queue.put(alarms.update(T0 + i, steady, *([flap] if i % 2 else [])))
            await eventually(lambda: len(sub.on(driver.events_topic)) == 7, "all seven events")
            # Only the flapping alarm's newest state (cleared) waits for its interval.
            await eventually(lambda: driver.pending == 1, "the output to settle")
            kinds = [(e["event"], e["id"], e["timestamp"][17:19]) for e in sub.json_on(driver.events_topic)]
            assert kinds == [
                ("raised", steady, "00"),
                ("raised", flap, "01"),
                ("cleared", flap, "02"),
                ("raised", flap, "03"),
                ("cleared", flap, "04"),
                ("raised", flap, "05"),
                ("cleared", flap, "06"),
            ]
            # The retained topics went out at most once each within the interval: the first raise
            # of `flap`, then nothing more for 30 s. Its latest state (cleared) is held back.
            assert [payload(m) != b"" for m in sub.on(alarm_topic(base, flap))] == [True]
            assert alarm_topic(base, flap) in driver.latest
        # The clean stop flushed the held-back deletion; the cleared alarm is then forgotten.
        assert alarm_topic(base, flap) not in driver.latest
        published = driver.published
        # Reconnect: the active alarm is republished; no deletion is repeated, and the foreign
        # retained alarm, which this gateway never published, is left alone.
        async with Subscriber(mosquitto, f"{base}/alarms/active/#") as sub, running_output(driver, queue):
            await eventually(lambda: driver.pending == 0, "the republication")
            # The retained copy, then the republication.
            await eventually(lambda: len(sub.on(alarm_topic(base, steady))) == 2, "the active alarm twice")
            assert sub.json(alarm_topic(base, steady))["id"] == steady
            assert sub.json(foreign) == {"id": "tag_bad:someone.else"}
            assert alarm_topic(base, flap) not in sub.latest
            assert driver.published == published + 2  # the birth and the one active alarm
            assert all(payload(m) for _, m in sub.history)
    finally:
        await publish(mosquitto, [(foreign, b""), (alarm_topic(base, steady), b"")], retain=True)


def h2_update(value: float, t: float, quality: Quality = Quality.GOOD) -> PipelineUpdate:
    return pipeline_update(t_plant=t, signals=[SignalState(H2, "ppm", t, value, quality)])


async def published_values(
    broker: BrokerAddress,
    prefix: str,
    updates: Sequence[PipelineUpdate],
    *,
    deadband: float,
    interval: float = 0.0,
) -> tuple[list[float | None], list[str], MqttOperatorOutput]:
    """Feed `updates` one at a time (each folded before the next) and return what went out."""
    driver, _ = output_for(broker, prefix, h2_deadband=deadband, min_interval_s=interval)
    topic = signal_topic(driver.base, H2)
    queue: OutputQueue[PipelineUpdate] = OutputQueue(100)
    async with Subscriber(broker, topic) as sub, running_output(driver, queue):
        for update in updates:
            queue.put(update)
            await eventually(lambda: len(queue) == 0, "the update to be folded")
        await eventually(lambda: driver.pending == 0, "nothing left to publish")
        # Every publish but the birth was on this topic.
        await eventually(lambda: len(sub.on(topic)) == driver.published - 1, "every publish to arrive")
    values = [json.loads(payload(m))["value"] for m in sub.on(topic)]
    qualities = [json.loads(payload(m))["quality"] for m in sub.on(topic)]
    await publish(broker, [(topic, b"")], retain=True)
    return values, qualities, driver


async def test_deadband_publishes_only_significant_changes(mosquitto: BrokerAddress, prefix: str) -> None:
    values = [10.0, 10.5, 10.9, 8.9, 9.8, 10.1, 10.1, 10.7]
    updates = [h2_update(v, T0 + i) for i, v in enumerate(values)]
    updates += [h2_update(10.7, T0 + 10, Quality.UNCERTAIN), h2_update(math.nan, T0 + 11, Quality.BAD)]
    sent, qualities, driver = await published_values(mosquitto, prefix, updates, deadband=1.0)
    # 10.5 and 10.9 are within 1.0 of the published 10.0, 8.9 is not; 9.8 is within 1.0 of 8.9,
    # 10.1 is not; 10.1 again and 10.7 are within 1.0 of 10.1. Quality changes always go out.
    assert sent == [10.0, 8.9, 10.1, 10.7, None]
    assert qualities == ["good", "good", "good", "uncertain", "bad"]
    assert driver.deadband_suppressed == 5


async def test_zero_deadband_publishes_every_value_change_but_no_repeats(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    updates = [h2_update(v, T0 + i) for i, v in enumerate([1.0, 1.0, 1.0, 2.0, 2.0, 1.0])]
    sent, _, _ = await published_values(mosquitto, prefix, updates, deadband=0.0)
    assert sent == [1.0, 2.0, 1.0]


async def test_deadband_and_rate_limit_leave_the_broker_within_the_deadband_of_the_latest(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    # 50 ms apart, a 0.5 s interval: 20 rising by 0.3, then back to near the first published value.
    interval = 0.5
    driver, _ = output_for(mosquitto, prefix, h2_deadband=1.0, min_interval_s=interval)
    topic = signal_topic(driver.base, H2)
    queue: OutputQueue[PipelineUpdate] = OutputQueue(100)
    async with Subscriber(mosquitto, topic) as sub, running_output(driver, queue):
        for i in range(20):
            queue.put(h2_update(10.0 + 0.3 * i, T0 + i))
            await asyncio.sleep(0.05)  # pacing the producer, not synchronisation
        queue.put(h2_update(15.9, T0 + 30))
        await eventually(lambda: driver.pending == 0, "nothing held back")
        await eventually(lambda: len(sub.on(topic)) == driver.published - 1, "every publish to arrive")
    sent = [json.loads(payload(m))["value"] for m in sub.on(topic)]
    assert sent[0] == 10.0
    assert len(sent) <= math.ceil(1.1 / interval) + 2  # throttled
    assert abs(sent[-1] - 15.9) <= 1.0  # within the deadband of the latest value
    await publish(mosquitto, [(topic, b"")], retain=True)


async def test_events_wait_for_the_broker_and_go_out_in_order(prefix: str, tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    try:
        driver, _ = output_for(broker, prefix)
        alarms = Alarms()
        queue: OutputQueue[PipelineUpdate] = OutputQueue(100)
        async with running_output(driver, queue):
            queue.put(alarms.update(T0, "tag_bad:a"))
            await eventually(lambda: driver.pending == 0, "the first event")
        # Away: transitions pile up in the queue and then the backlog.
        for i in range(1, 5):
            queue.put(alarms.update(T0 + i, *(["tag_bad:a"] if i % 2 == 0 else [])))
        broker.stop(keep_workdir=True)
        broker.start()  # empty: the first event and the retained alarm are gone from it
        async with Subscriber(broker, f"{driver.base}/alarms/#") as sub, running_output(driver, queue):
            await eventually(lambda: len(sub.on(driver.events_topic)) == 4, "the four held events")
            await eventually(lambda: driver.pending == 0, "the output to settle")
        assert [e["event"] for e in sub.json_on(driver.events_topic)] == [
            "cleared",
            "raised",
            "cleared",
            "raised",
        ]
        assert sub.json(alarm_topic(driver.base, "tag_bad:a"))["since"] == "2024-05-01T12:00:04.000Z"
        assert driver.events_dropped == 0
    finally:
        broker.stop()
