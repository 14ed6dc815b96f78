"""The OPC-UA input driver against the simulator's real asyncua server, values set by the test.

The server is `SimOpcUaServer` serving the example line's PLC tags; the test publishes the
values itself (`publish`), so what the driver must deliver is known exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua

from drivers.opcua_input import OpcUaInputDriver
from gateway.config import LineConfig, OpcUaDriver
from gateway.errors import RetryableError
from gateway.runtime import Runtime
from gateway.samples import Quality
from simulators.local_services import free_port
from simulators.opcua_server import SimOpcUaServer
from simulators.plant import SIGNALS
from tests.opcua_helpers import RecordingSink, bound_tags, plc_config

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass
class Rig:
    config: LineConfig
    server: SimOpcUaServer
    driver: OpcUaInputDriver
    sink: RecordingSink
    connected: asyncio.Event
    t: datetime
    current: dict[str, float]

    def index(self, name: str) -> int:
        return self.config.tag_index(name)

    async def publish(self, values: dict[str, float], dt_s: float = 1.0) -> float:
        """Publish values one plant step later; returns that step's epoch time."""
        self.t += timedelta(seconds=dt_s)
        self.current.update(values)
        await self.server.publish(self.current, self.t)
        return self.t.timestamp()

    def values_of(self, name: str) -> list[float]:
        return [s.value for s in self.sink.of(self.index(name))]


def middle_values(config: LineConfig) -> dict[str, float]:
    return {t.name: (t.range[0] + t.range[1]) / 2 if t.range[1] < 1e6 else 100.0 for t in config.tags}


@contextlib.asynccontextmanager
async def rig(make_config: Callable[[int], LineConfig]) -> AsyncIterator[Rig]:
    config = make_config(free_port())
    server_config = plc_config(int(config.drivers["plc"].url.rsplit(":", 1)[1].split("/")[0]))
    server = SimOpcUaServer(server_config, "plc", known_signals=SIGNALS, initial_time=T0)
    await server.start()
    settings = config.drivers["plc"]
    assert isinstance(settings, OpcUaDriver)
    driver = OpcUaInputDriver("plc", settings, bound_tags(config))
    sink = RecordingSink()
    connected = asyncio.Event()
    r = Rig(config, server, driver, sink, connected, T0, {})
    await r.publish(middle_values(server_config))

    async def supervise() -> None:  # what the runtime does: run again after a short pause
        while True:
            with contextlib.suppress(RetryableError):
                await driver.run(sink, connected.set)
            await asyncio.sleep(0.2)

    task = asyncio.create_task(supervise())
    try:
        done, _ = await asyncio.wait(
            {task, asyncio.create_task(connected.wait())}, timeout=20, return_when="FIRST_COMPLETED"
        )
        if task in done:
            task.result()
        assert connected.is_set(), "driver did not connect within 20 s"
        yield r
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await server.stop()


async def test_every_tag_arrives_good_with_source_time_and_status() -> None:
    async with rig(lambda p: plc_config(p)) as r:
        n = len(r.config.tags)
        await r.sink.wait_for("a first value of every tag", lambda: len({s.tag for s in r.sink.samples}) == n)
        assert all(s.quality == Quality.GOOD and s.t == r.t.timestamp() for s in r.sink.samples)
        assert r.driver.subscriptions == 1
        assert r.driver.bad_nodes == {}
        assert r.driver.polled == []


async def test_items_are_created_in_batches_over_several_subscriptions() -> None:
    async with rig(
        lambda p: plc_config(p, driver={"items_per_call": 3, "max_items_per_subscription": 5})
    ) as r:
        n = len(r.config.tags)
        assert r.driver.subscriptions == math.ceil(n / 5)
        await r.sink.wait_for(
            "every tag over all subscriptions", lambda: len({s.tag for s in r.sink.samples}) == n
        )
        t = await r.publish({"shr.power": 123.0, "bm.total": 7.5})
        await r.sink.wait_for(
            "the update on both subscriptions",
            lambda: (
                {(s.tag, s.value) for s in r.sink.samples if s.t == t}
                == {(r.index("shr.power"), 123.0), (r.index("bm.total"), 7.5)}
            ),
        )


async def test_absolute_deadband_is_applied_by_the_server() -> None:
    deadband = {"shr.power": {"deadband": "absolute", "deadband_value": 1.0}}
    async with rig(lambda p: plc_config(p, monitoring=deadband)) as r:
        k = r.index("shr.power")
        await r.sink.wait_for("the first value", lambda: bool(r.sink.of(k)))
        kc = r.index("shr.current")
        # Chosen so "moved > 1.0 since the last reported" and asyncua's "since the previous
        # sample" agree: 100.5 and 102.5 stay inside the band. One value per publishing
        # interval (queue size 1): each waits for the undamped neighbour published beside it.
        for v in (124.5, 100.0, 100.5, 102.0, 102.5, 104.0):
            await r.publish({"shr.power": v, "shr.current": v})
            await r.sink.wait_for(f"the neighbour's {v}", lambda v=v: r.sink.of(kc)[-1].value == v)
        # 200 is the rig's start value (mid-range of [0, 400]); 124.5 moved by more than 1.
        assert r.values_of("shr.power") == [200.0, 124.5, 100.0, 102.0, 104.0]
        assert r.values_of("shr.current")[1:] == [124.5, 100.0, 100.5, 102.0, 102.5, 104.0]


async def wait_polls(driver: OpcUaInputDriver, n: int, deadline_s: float = 10.0) -> None:
    """Until the poller has done `n` more reads (a count, no event: checked every 10 ms)."""
    target = driver.poll_reads + n
    deadline = time.monotonic() + deadline_s
    while driver.poll_reads < target:
        if time.monotonic() > deadline:
            pytest.fail(f"the poller did not read {n} times within {deadline_s} s")
        await asyncio.sleep(0.01)


async def test_a_refused_percent_deadband_falls_back_to_polling_with_the_deadband_applied_here() -> None:
    # shr.power has range [0, 400]: 1.25 % is 5 kW. The simulated PLC refuses PercentDeadband.
    deadband = {"shr.power": {"deadband": "percent", "deadband_value": 1.25, "sampling_interval_ms": 50}}
    async with rig(lambda p: plc_config(p, monitoring=deadband)) as r:
        assert r.driver.polled == ["shr.power"]
        await r.sink.wait_for("the first polled value", lambda: r.values_of("shr.power") == [200.0])
        await r.publish({"shr.power": 125.0})
        await r.sink.wait_for("the move to 125", lambda: r.values_of("shr.power") == [200.0, 125.0])
        # Against the last *reported* value: 128 and then 134 stay within 5 kW of 125 and 131.
        for v, expected in (
            (128.0, [200.0, 125.0]),
            (131.0, [200.0, 125.0, 131.0]),
            (134.0, [200.0, 125.0, 131.0]),
            (140.0, [200.0, 125.0, 131.0, 140.0]),
        ):
            await r.publish({"shr.power": v})
            await wait_polls(r.driver, 2)
            assert r.values_of("shr.power") == expected
        assert r.driver.bad_nodes == {}


async def test_polling_by_configuration_delivers_changes_only() -> None:
    poll = {"dry.jacket_temp": {"mode": "poll", "sampling_interval_ms": 50}}
    async with rig(lambda p: plc_config(p, monitoring=poll)) as r:
        assert r.driver.polled == ["dry.jacket_temp"]
        await r.sink.wait_for("the first polled value", lambda: r.values_of("dry.jacket_temp") == [70.0])
        await wait_polls(r.driver, 5)
        assert r.values_of("dry.jacket_temp") == [70.0], "an unchanged value was re-emitted by the poll"
        t = await r.publish({"dry.jacket_temp": 80.0})
        await r.sink.wait_for("the change", lambda: r.values_of("dry.jacket_temp") == [70.0, 80.0])
        assert r.sink.of(r.index("dry.jacket_temp"))[-1].t == t


async def test_a_bad_node_is_isolated_and_reported_while_the_rest_runs() -> None:
    ghost = {
        "name": "shr.ghost",
        "driver": "plc",
        "unit": "kW",
        "range": [0, 1],
        "node_id": "ns=2;s=no.such.node",
    }
    async with rig(lambda p: plc_config(p, extra_tags=[ghost])) as r:
        assert r.driver.bad_nodes == {"ns=2;s=no.such.node": "BadNodeIdUnknown"}
        assert r.index("shr.ghost") in r.sink.stale_marks
        t = await r.publish({"bm.rate": 0.7})
        await r.sink.wait_for(
            "the others to keep running", lambda: any(s.t == t for s in r.sink.of(r.index("bm.rate")))
        )


async def test_status_code_maps_to_quality_and_is_kept() -> None:
    async with rig(lambda p: plc_config(p)) as r:
        k = r.index("dry.mass")
        await r.sink.wait_for("the first value", lambda: bool(r.sink.of(k)))
        server = r.server._server
        assert server is not None
        for code, quality in (
            (ua.StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN),
            (ua.StatusCodes.BadSensorFailure, Quality.BAD),
            (ua.StatusCodes.Good, Quality.GOOD),
        ):
            r.t += timedelta(seconds=1)
            dv = ua.DataValue(
                Value=ua.Variant(1000.0 + len(r.sink.of(k)), ua.VariantType.Double),
                StatusCode=ua.StatusCode(code),
                SourceTimestamp=r.t,
                ServerTimestamp=r.t,
            )
            await server.write_attribute_value(ua.NodeId("dry.mass", 2), dv)
            await r.sink.wait_for(f"status {code:#x}", lambda c=code: r.sink.of(k)[-1].status == c)
            assert r.sink.of(k)[-1].quality == quality


async def test_a_server_restart_makes_tags_stale_and_unchanged_values_are_not_re_emitted() -> None:
    async with rig(lambda p: plc_config(p, driver={"heartbeat_s": 0.2, "heartbeat_timeout_s": 1.0})) as r:
        n = len(r.config.tags)
        await r.sink.wait_for("every tag", lambda: len({s.tag for s in r.sink.samples}) == n)
        before = len(r.sink.samples)
        await r.server.stop()
        await r.sink.wait_for("every tag stale", lambda: set(range(n)) <= set(r.sink.stale_marks))
        r.connected.clear()
        await r.server.start()
        await r.publish({"bm.rate": 0.9}, dt_s=0)  # same source time as before: only bm.rate changed
        await asyncio.wait_for(r.connected.wait(), timeout=20)
        await r.sink.wait_for("the changed value", lambda: r.values_of("bm.rate")[-1] == 0.9)
        new = r.sink.samples[before:]
        assert [(s.tag, s.value) for s in new] == [(r.index("bm.rate"), 0.9)], (
            "an old value came back as current"
        )
        assert r.driver.connection_losses == 1
        assert r.driver.repeats_dropped >= n - 1


async def test_a_tag_silent_past_its_period_is_flagged_stale_by_the_runtime() -> None:
    port = free_port()
    config = plc_config(port, driver={"stale_after_s": 60.0})
    data_cfg = config.model_dump(by_alias=True)
    for tag in data_cfg["tags"]:
        if tag["name"] == "dry.mass":
            tag["stale_after_s"] = 1.0
    config = LineConfig.model_validate(data_cfg)
    server = SimOpcUaServer(plc_config(port), "plc", known_signals=SIGNALS, initial_time=T0)
    await server.start()
    settings = config.drivers["plc"]
    assert isinstance(settings, OpcUaDriver)
    runtime = Runtime(
        config, {OpcUaInputDriver("plc", settings, bound_tags(config)): list(range(len(config.tags)))}, []
    )
    values = middle_values(config)
    silent, lively = config.tag_index("dry.mass"), config.tag_index("shr.power")
    q = runtime.pipeline.last_quality
    run = asyncio.create_task(runtime.run())
    try:
        await server.publish(values, T0)
        await asyncio.wait_for(runtime.ready.wait(), 30)
        t = T0
        deadline = time.monotonic() + 20
        seen_good = False
        while not (
            seen_good and q[silent] == Quality.STALE
        ):  # keep every other tag moving; dry.mass never changes
            assert time.monotonic() < deadline, "dry.mass was not flagged stale within 20 s"
            t += timedelta(seconds=1)
            values["shr.power"] += 1
            await server.publish(values, t)
            await asyncio.sleep(0.1)  # the plant's publish cadence, not a synchronisation
            seen_good = seen_good or q[silent] == Quality.GOOD
        assert q[lively] == Quality.GOOD
        assert runtime.silence.flagged == 1
    finally:
        runtime.stop()
        await asyncio.wait_for(run, 30)
        await server.stop()


async def test_iterator_queue_overflow_is_counted_exactly() -> None:
    # Nineteen tags change in one publish response; asyncua delivers all of them into a queue
    # of ten before the consumer runs: nine are lost and must be counted, not hidden.
    async with rig(lambda p: plc_config(p, driver={"queue_maxsize": 10})) as r:
        n = len(r.config.tags)
        assert n == 19
        # The initial values of all nineteen items come in one publish response too.
        await r.sink.wait_for("the first ten", lambda: len(r.sink.samples) >= 10)
        assert r.driver.dropped_overflow == n - 10
        before_samples, before_dropped = len(r.sink.samples), r.driver.dropped_overflow
        await r.publish({name: v + 1 for name, v in r.current.items()})
        await r.sink.wait_for("the ten that fit", lambda: len(r.sink.samples) >= before_samples + 10)
        assert r.driver.dropped_overflow - before_dropped == n - 10
        assert len(r.sink.samples) == before_samples + 10
