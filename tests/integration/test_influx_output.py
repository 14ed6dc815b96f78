"""The InfluxDB output driver against real InfluxDB 1.6 behind the shipped nginx v2 proxy.

Updates are built by hand from the `gateway.ports` dataclasses, go through a real durable
buffer (SQLite, in the test's tmp_path), and are read back with InfluxQL straight from
InfluxDB. Each test writes to its own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers.influx_lines import InfluxLineEncoder, escape_tag
from drivers.influx_output import InfluxOutputDriver
from gateway.config import InfluxOutput, LineConfig, load_config
from gateway.dead_letter import DeadLetterFile
from gateway.durable_spool import DurableSpool
from gateway.errors import FatalDriverError, RetryableError
from gateway.ports import FlowFigure, PipelineUpdate, SampleColumns, YieldFigure
from gateway.samples import Quality
from simulators.local_services import InfluxDB, InfluxV2CompatProxy
from tests.builders import pipeline_update, yield_figure

pytestmark = pytest.mark.integration

LINE_TOML = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
T0 = 1_700_000_000.0  # plant time of the first sample, epoch seconds
NAMES = ["bw_feed.rate", "shr.power", "odd name,with=specials"]


@pytest.fixture(scope="module")
def line_config() -> LineConfig:
    return load_config(LINE_TOML)


@pytest.fixture
def database(influxdb: InfluxDB) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    influxdb.create_database(name)
    yield name
    influxdb.query(f'DROP DATABASE "{name}"')


def settings(url: str, db: str, **kw: object) -> InfluxOutput:
    return InfluxOutput.model_validate({"url": url, "bucket": f"{db}/autogen", "flush_interval_ms": 20, **kw})


Spool = DurableSpool[PipelineUpdate]


def output(
    tmp_path: Path, s: InfluxOutput, config: LineConfig, sequence_field: bool = False
) -> tuple[InfluxOutputDriver, Spool]:
    """The driver and its durable buffer, as the composition root wires them."""
    encoder = InfluxLineEncoder(config, sequence_field)
    spool = Spool(tmp_path / "buffer.sqlite", encoder.encode)
    return InfluxOutputDriver(s, DeadLetterFile(tmp_path / "dead-letter.jsonl", 1 << 20)), spool


def samples(rows: list[tuple[int, float, float, Quality]]) -> SampleColumns:
    return SampleColumns(
        tag=np.array([r[0] for r in rows], np.int32),
        t=np.array([r[1] for r in rows], np.float64),
        value=np.array([r[2] for r in rows], np.float64),
        quality=np.array([int(r[3]) for r in rows], np.int8),
    )


def update(
    rows: list[tuple[int, float, float, Quality]],
    yield_rolling: YieldFigure | None = None,
    flows: FlowFigure | None = None,
) -> PipelineUpdate:
    cols = samples(rows)
    t = max([*cols.t.tolist(), T0])
    return pipeline_update(t_plant=t, samples=cols, yield_rolling=yield_rolling, flows=flows, tag_names=NAMES)


def figure(t: float, value: float | None, uncertainty: float | None, quality: Quality) -> YieldFigure:
    # A window still filling (3.5 h of 4): the kpi read-back below checks these exact fields.
    return yield_figure(
        t=t,
        value=value,
        uncertainty=uncertainty,
        quality=quality,
        coverage=0.93,
        covered_h=3.5,
        feed_t=6.25,
        black_mass_t=2.577,
    )


async def until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.01)  # poll interval; the deadline above bounds the wait


async def deliver(driver: InfluxOutputDriver, queue: Spool) -> None:
    """Run the driver until the queue is empty, then cancel it; re-raise if it failed first."""
    connected = asyncio.Event()
    task = asyncio.create_task(driver.run(queue, connected.set))
    try:
        await until(lambda: len(queue) == 0 or task.done(), "the queue to drain")
        if task.done():
            task.result()
        assert connected.is_set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def enqueue(queue: Spool, *updates: PipelineUpdate) -> None:
    for u in updates:
        queue.put(u)


def write_1x(influx: InfluxDB, db: str, body: str) -> None:
    req = urllib.request.Request(
        f"{influx.url}/write?db={db}&precision=ms", data=body.encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


async def test_signal_kpi_and_flow_points_read_back_exactly(
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
    database: str,
    line_config: LineConfig,
    tmp_path: Path,
) -> None:
    first = update(
        [
            (0, T0 + 0.001, 1.5, Quality.GOOD),
            (1, T0 + 0.002, math.nan, Quality.BAD),
            (0, T0 + 0.25, 1.0e-5, Quality.UNCERTAIN),
            (2, T0 + 0.999, -123.456789012345, Quality.STALE),
        ],
        yield_rolling=figure(T0 + 1, 0.4123, 0.0125, Quality.GOOD),
        flows=FlowFigure(T0 + 1, feed_tph=1.62, black_mass_tph=0.67, feed_vs_nameplate=None),
    )
    second = update(
        [(1, T0 + 2.0, 187.25, Quality.GOOD)],
        yield_rolling=figure(T0 + 2, None, None, Quality.BAD),
        flows=FlowFigure(T0 + 2, feed_tph=None, black_mass_tph=None, feed_vs_nameplate=None),
    )
    driver, queue = output(tmp_path, settings(influx_proxy.url, database), line_config, sequence_field=True)
    enqueue(queue, first, second)
    assert queue.weight == 6 + 2

    await deliver(driver, queue)

    assert (driver.written_points, driver.rejected_points, driver.write_errors) == (8, 0, 0)
    ms = 1_700_000_000_000
    line = {"line": "line1", "site": "winston-salem"}
    # `seq` numbers the points in the order they were accepted: the first update's four samples,
    # its yield and its flow, then the second's sample and yield (its flow had no field).
    signal = influxdb.rows("SELECT * FROM signal", database)
    assert signal == [
        {"time": ms + 1, **line, "tag": "bw_feed.rate", "value": 1.5, "quality": "good", "seq": 1},
        {"time": ms + 2, **line, "tag": "shr.power", "value": None, "quality": "bad", "seq": 2},
        {"time": ms + 250, **line, "tag": "bw_feed.rate", "value": 1.0e-5, "quality": "uncertain", "seq": 3},
        {"time": ms + 999, **line, "tag": NAMES[2], "value": -123.456789012345, "quality": "stale", "seq": 4},
        {"time": ms + 2000, **line, "tag": "shr.power", "value": 187.25, "quality": "good", "seq": 7},
    ]
    kpi = influxdb.rows("SELECT * FROM kpi", database)
    common = {
        **line,
        "kpi": "yield_rolling",
        "basis": "wet",
        "coverage": 0.93,
        "window_h": 4.0,
        "covered_h": 3.5,
        "delay_min": 95.0,
        "feed_t": 6.25,
        "black_mass_t": 2.577,
    }
    assert kpi == [
        {
            "time": ms + 1000,
            **common,
            "value": 0.4123 * 100,
            "uncertainty": 0.0125 * 100,
            "quality": "good",
            "seq": 5,
        },
        {"time": ms + 2000, **common, "value": None, "uncertainty": None, "quality": "bad", "seq": 8},
    ]
    flow = influxdb.rows("SELECT * FROM flow", database)
    assert flow == [
        {"time": ms + 1000, **line, "feed_tph": 1.62, "black_mass_tph": 0.67, "seq": 6}
    ]  # feed_vs_nameplate was never written, so the column does not exist
    keys = influxdb.rows("SHOW FIELD KEYS FROM signal", database, epoch=None)
    assert {r["fieldKey"]: r["fieldType"] for r in keys} == {
        "value": "float",
        "quality": "string",
        "seq": "integer",
    }
    assert (len(queue), queue.stats().delivered_points) == (0, 8)


def test_line_protocol_escapes_tag_values() -> None:
    assert escape_tag("odd name,with=specials") == r"odd\ name\,with\=specials"


async def test_small_updates_are_batched_within_the_flush_interval(
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
    database: str,
    line_config: LineConfig,
    tmp_path: Path,
) -> None:
    driver, queue = output(
        tmp_path, settings(influx_proxy.url, database, flush_interval_ms=1_000), line_config
    )
    connected = asyncio.Event()
    task = asyncio.create_task(driver.run(queue, connected.set))
    try:
        await asyncio.wait_for(connected.wait(), 10)
        for i in range(5):
            enqueue(queue, update([(0, T0 + i, float(i), Quality.GOOD)]))
            await asyncio.sleep(0.01)  # a producer ticking every 10 ms: the workload, not a sync
        await until(lambda: len(queue) == 0 or task.done(), "the queue to drain")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    access_log = (influx_proxy.workdir / "access.log").read_text()
    requests = [ln for ln in access_log.splitlines() if f"bucket={database}%2Fautogen" in ln]
    assert len(requests) == 1, requests
    assert influxdb.rows("SELECT count(value) FROM signal", database)[0]["count"] == 5


async def test_a_full_batch_is_sent_without_waiting_for_the_interval(
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
    database: str,
    line_config: LineConfig,
    tmp_path: Path,
) -> None:
    s = settings(influx_proxy.url, database, flush_interval_ms=60_000, batch_size=3)
    driver, queue = output(tmp_path, s, line_config)
    enqueue(
        queue,
        update([(0, T0, 1.0, Quality.GOOD), (1, T0, 2.0, Quality.GOOD), (0, T0 + 1, 3.0, Quality.GOOD)]),
    )
    await deliver(driver, queue)  # the 10 s deadline in `until` is far below the 60 s interval
    assert driver.written_points == 3


async def test_a_rejected_batch_is_dead_lettered_and_the_buffer_moves_on(
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
    database: str,
    line_config: LineConfig,
    tmp_path: Path,
) -> None:
    # `value` already exists as a string in this shard (1.x checks types per shard): float
    # values written next to it conflict.
    write_1x(influxdb, database, 'signal,line=line1,site=winston-salem,tag=x value="text" 1699999999999')
    driver, queue = output(tmp_path, settings(influx_proxy.url, database, batch_size=2), line_config)
    poison = update([(0, T0, 1.0, Quality.GOOD), (1, T0, math.nan, Quality.BAD)])
    later = update([], flows=FlowFigure(T0 + 5, feed_tph=1.5, black_mass_tph=None, feed_vs_nameplate=0.9))
    enqueue(queue, poison, later)

    await deliver(driver, queue)

    # The quality-only point of the poison batch was stored: 1.x writes what it can.
    assert (driver.rejected_points, driver.written_points, driver.write_errors) == (1, 2, 1)
    stored = influxdb.rows("""SELECT quality FROM signal WHERE "tag" = 'shr.power'""", database)
    assert stored == [{"time": 1_700_000_000_000, "quality": "bad"}]
    assert influxdb.rows("SELECT feed_tph FROM flow", database) == [
        {"time": 1_700_000_005_000, "feed_tph": 1.5}
    ]
    # The refused batch is kept, with InfluxDB's reason, for someone to look at and replay.
    (record,) = [json.loads(x) for x in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert (record["output"], record["status"], record["points"], record["rejected"]) == (
        "influxdb",
        400,
        2,
        1,
    )
    assert "field type conflict" in record["reason"]
    assert record["lines"][0].startswith("signal,line=line1,site=winston-salem,tag=bw_feed.rate value=1.0")


async def test_missing_token_variable_is_fatal(
    influx_proxy: InfluxV2CompatProxy,
    line_config: LineConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("LINEGATE_TEST_NO_SUCH_TOKEN", raising=False)
    s = settings(influx_proxy.url, "linegate", token_env="LINEGATE_TEST_NO_SUCH_TOKEN")
    driver, queue = output(tmp_path, s, line_config)
    with pytest.raises(FatalDriverError, match="LINEGATE_TEST_NO_SUCH_TOKEN"):
        await driver.run(queue, lambda: None)


async def test_outage_keeps_the_buffer_and_replay_does_not_duplicate(
    line_config: LineConfig, tmp_path: Path
) -> None:
    # A private InfluxDB and proxy: this test stops and restarts the database.
    with InfluxDB() as influx, InfluxV2CompatProxy(influx) as proxy:
        influx.create_database("outage")
        driver, queue = output(tmp_path, settings(proxy.url, "outage"), line_config)
        first = update(
            [(0, T0 + i, float(i), Quality.GOOD) for i in range(10)],
            yield_rolling=figure(T0 + 10, 0.41, 0.01, Quality.GOOD),
        )
        second = update([(1, T0 + 20 + i, 100.0 + i, Quality.GOOD) for i in range(10)])

        # InfluxDB down before the driver starts: the ping fails, nothing leaves the queue.
        await asyncio.to_thread(influx.stop, keep_workdir=True)
        enqueue(queue, first)
        with pytest.raises(RetryableError, match="does not answer"):
            await driver.run(queue, lambda: None)
        assert (len(queue), queue.weight, queue.stats().delivered_points) == (1, 11, 0)

        # Back up: the first update is delivered. Then down again while the driver runs.
        await asyncio.to_thread(influx.start)
        connected = asyncio.Event()
        task = asyncio.create_task(driver.run(queue, connected.set))
        await until(lambda: len(queue) == 0 or task.done(), "the first update to be delivered")
        assert not task.done()
        await asyncio.to_thread(influx.stop, keep_workdir=True)
        enqueue(queue, second)
        with pytest.raises(RetryableError, match="write failed"):
            await asyncio.wait_for(task, 10)
        assert (len(queue), queue.weight) == (1, 10)
        assert driver.write_errors == 1

        # Restarted on the same port and data: the second update is delivered. The same update
        # offered again is a repeat the encoder does not write twice.
        await asyncio.to_thread(influx.start)
        enqueue(queue, first)
        await deliver(driver, queue)
        assert driver.written_points == 11 + 10

        # A gateway that does not know what was written (a restart, an answer lost in a crash)
        # writes the update again: the points overwrite themselves instead of adding up.
        again, again_queue = output(tmp_path / "restarted", settings(proxy.url, "outage"), line_config)
        enqueue(again_queue, first)
        await deliver(again, again_queue)
        assert again.written_points == 11

        counts = influx.rows('SELECT count(value) FROM signal GROUP BY "tag"', "outage", epoch=None)
        assert {r["tag"]: r["count"] for r in counts} == {"bw_feed.rate": 10, "shr.power": 10}
        assert influx.rows("SELECT count(value) FROM kpi", "outage")[0]["count"] == 1


# A real nginx rate limit in front of the proxy: over 2 writes a second it answers 429 with
# Retry-After, as InfluxDB Cloud and loaded 2.x servers do.
THROTTLE_TEMPLATE = """
worker_processes 1;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events { worker_connections 64; }
http {
    access_log @PREFIX@/access.log;
    client_body_temp_path @PREFIX@/client_body_temp;
    proxy_temp_path @PREFIX@/proxy_temp;
    fastcgi_temp_path @PREFIX@/fastcgi_temp;
    uwsgi_temp_path @PREFIX@/uwsgi_temp;
    scgi_temp_path @PREFIX@/scgi_temp;
    limit_req_zone $binary_remote_addr zone=writes:1m rate=2r/s;
    server {
        listen @LISTEN@;
        location = /api/v2/write {
            limit_req zone=writes;
            limit_req_status 429;
            add_header Retry-After 1 always;
            proxy_pass http://@UPSTREAM@;
        }
        location / { proxy_pass http://@UPSTREAM@; }
    }
}
"""


async def test_a_throttled_write_waits_as_asked_and_keeps_the_session(
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
    database: str,
    line_config: LineConfig,
    tmp_path: Path,
) -> None:
    template = tmp_path / "throttle.nginx.conf"
    template.write_text(THROTTLE_TEMPLATE, encoding="utf-8")
    upstream = influx_proxy.url.removeprefix("http://")
    with InfluxV2CompatProxy(upstream, workdir=tmp_path / "throttle", template=template) as throttle:
        driver, queue = output(tmp_path, settings(throttle.url, database, batch_size=5), line_config)
        enqueue(queue, *(update([(0, T0 + i, float(i), Quality.GOOD)]) for i in range(30)))
        await deliver(driver, queue)
    assert influxdb.rows("SELECT count(value) FROM signal", database)[0]["count"] == 30
    # 6 writes at 2 a second: some were refused with Retry-After and written again a second
    # later, without the driver giving up its session (deliver() re-raises a failure).
    assert driver.throttled > 0
    assert driver.write_errors == driver.throttled
    log = (tmp_path / "throttle" / "access.log").read_text()
    assert " 429 " in log
