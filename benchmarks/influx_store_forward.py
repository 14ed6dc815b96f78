"""Benchmark: the historian path, durable buffer -> InfluxDB, live and replaying after an outage.

Starts a private InfluxDB 1.6 behind the shipped nginx v2 proxy (as the tests do) and measures,
with ticks shaped like the pipeline's (TAGS tags x SAMPLES samples, plus a yield figure):
- sustained write rate: ticks put into the durable spool at the runtime's pace while the real
  InfluxDB output driver drains it; points/s confirmed by InfluxDB, and whether the buffer
  stays flat (it keeps up) or grows;
- replay rate after an outage: a backlog of OUTAGE_TICKS ticks accepted while InfluxDB was
  unreachable, then drained by the driver; points/s, and the same while live ticks keep
  arriving (the spool interleaves them with the backlog);
- reference, same run: the same lines posted straight through influxdb-client in batches of
  the same size (no buffer, no encoding): what this InfluxDB accepts at most.
Prints a table; asserts nothing.
Run: `NUMBA_CACHE_DIR=/tmp/numba-cache .venv/bin/python benchmarks/influx_store_forward.py`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from drivers.influx_lines import InfluxLineEncoder
from drivers.influx_output import InfluxOutputDriver
from gateway.config import InfluxOutput, LineConfig, load_config
from gateway.dead_letter import DeadLetterFile
from gateway.durable_spool import DurableSpool
from gateway.ports import PipelineUpdate, SampleColumns
from gateway.samples import Quality
from simulators.local_services import InfluxDB, InfluxV2CompatProxy

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_767_600_000.0


def ticks(n: int, tags: int, samples: int, start: float = T0, tick_s: float = 0.25) -> list[PipelineUpdate]:
    """`n` pipeline updates, each `tags` x `samples` signal samples spread over one tick."""
    rng = np.random.default_rng(n + tags)
    tag = np.repeat(np.arange(tags, dtype=np.int32), samples)
    offsets = np.tile(np.arange(samples) / samples * tick_s, tags)
    names = [f"bench.t{i}" for i in range(tags)]
    out = []
    for i in range(n):
        cols = SampleColumns(
            tag=tag,
            t=start + i * tick_s + offsets,
            value=rng.uniform(0, 100, tag.size),
            quality=np.full(tag.size, int(Quality.GOOD), np.int8),
        )
        out.append(
            PipelineUpdate(
                t_plant=start + (i + 1) * tick_s,
                signals=[],
                samples=cols,
                yield_rolling=None,
                flows=None,
                tag_names=names,
            )
        )
    return out


class Historian:
    """Spool + driver wired as the composition root does, on a given InfluxDB URL."""

    def __init__(self, work: Path, url: str, config: LineConfig, batch: int) -> None:
        self.settings = InfluxOutput.model_validate(
            {"url": url, "bucket": "bench/autogen", "batch_size": batch, "flush_interval_ms": 100}
        )
        self.encoder = InfluxLineEncoder(config)
        self.spool = DurableSpool[PipelineUpdate](work / "buffer.sqlite", self.encoder.encode)
        self.driver = InfluxOutputDriver(self.settings, DeadLetterFile(work / "dead.jsonl", 1 << 30))
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.driver.run(self.spool, lambda: None))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def drained(self, within_s: float = 600.0) -> None:
        deadline = time.monotonic() + within_s
        while len(self.spool):
            if self.task is not None and self.task.done():
                self.task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("the spool did not drain")
            await asyncio.sleep(0.01)  # polling the spool's depth; the driver signals nothing


async def sustained(h: Historian, updates: list[PipelineUpdate], tick_s: float) -> tuple[float, int]:
    """Put one update per tick while the driver writes; (points/s, buffer depth at the end of
    the puts). Keeping up means the depth stays near one batch."""
    h.start()
    points_before = h.driver.written_points
    t0 = time.perf_counter()
    next_at = time.monotonic()
    for u in updates:
        h.spool.put(u)
        next_at += tick_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    depth = h.spool.weight
    await h.drained()
    elapsed = time.perf_counter() - t0
    await h.stop()
    return (h.driver.written_points - points_before) / elapsed, depth


async def replay(
    h: Historian, backlog: list[PipelineUpdate], live: list[PipelineUpdate], tick_s: float
) -> tuple[float, float]:
    """A backlog accepted while InfluxDB was away, then drained (live ticks arriving meanwhile
    when `live` is given); (backlog points/s, seconds until the backlog was gone)."""
    for u in backlog:
        h.spool.put(u)
    h.spool.mark_backlog()
    backlog_points = h.spool.weight
    h.start()
    t0 = time.perf_counter()
    next_at = time.monotonic()
    for u in live:
        h.spool.put(u)
        next_at += tick_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await h.drained()
    elapsed = time.perf_counter() - t0
    await h.stop()
    return backlog_points / elapsed, elapsed


def reference(url: str, lines: list[str], batch: int) -> float:
    """Points/s of the same lines posted straight through influxdb-client, batch by batch."""
    with InfluxDBClient(url=url, token="x", org="linegate", enable_gzip=True) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t0 = time.perf_counter()
        for i in range(0, len(lines), batch):
            api.write(
                bucket="bench/autogen",
                record="\n".join(lines[i : i + batch]),
                write_precision=WritePrecision.MS,
            )
        return len(lines) / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10, help="per tag and tick")
    ap.add_argument("--ticks", type=int, default=120, help="live ticks (250 ms each)")
    ap.add_argument("--outage-ticks", type=int, default=480, help="ticks accepted while InfluxDB is away")
    ap.add_argument("--batch", type=int, default=5000, help="points per write")
    args = ap.parse_args()
    config = load_config(ROOT / "config" / "line1.toml")
    tick_s = 0.25
    per_tick = args.tags * args.samples
    with tempfile.TemporaryDirectory() as tmp:
        influx = InfluxDB(workdir=Path(tmp) / "influxdb")
        with influx, InfluxV2CompatProxy(influx) as proxy:
            influx.create_database("bench")
            work = Path(tmp)
            rows: list[tuple[str, str, str]] = []

            h = Historian(work / "live", proxy.url, config, args.batch)
            rate, depth = await sustained(h, ticks(args.ticks, args.tags, args.samples), tick_s)
            offered = per_tick / tick_s
            rows.append(
                (
                    f"sustained, {args.tags} tags x {args.samples} samples per 250 ms tick ({offered:,.0f} points/s offered)",
                    f"{rate:,.0f} points/s confirmed",
                    f"buffer at the end of the puts: {depth:,} points ({depth / per_tick:.1f} ticks)",
                )
            )
            h.spool.close()

            h = Historian(work / "replay", proxy.url, config, args.batch)
            backlog = ticks(args.outage_ticks, args.tags, args.samples, start=T0 + 3600)
            rate, secs = await replay(h, backlog, [], tick_s)
            rows.append(
                (
                    f"replay of an outage backlog ({len(backlog) * per_tick:,} points), no live data",
                    f"{rate:,.0f} points/s",
                    f"{secs:.1f} s to empty",
                )
            )
            h.spool.close()

            h = Historian(work / "replay-live", proxy.url, config, args.batch)
            backlog = ticks(args.outage_ticks, args.tags, args.samples, start=T0 + 7200)
            live_n = args.ticks
            live = ticks(live_n, args.tags, args.samples, start=T0 + 7200 + args.outage_ticks * tick_s)
            rate, secs = await replay(h, backlog, live, tick_s)
            rows.append(
                (
                    "replay of the same backlog while live ticks keep arriving",
                    f"{rate:,.0f} backlog points/s",
                    f"{secs:.1f} s to empty (live ticks for {live_n * tick_s:.0f} s)",
                )
            )
            h.spool.close()

            lines = InfluxLineEncoder(config, sequence_field=True).encode(
                _merged(ticks(args.outage_ticks, args.tags, args.samples, start=T0 + 10800)), 1
            )
            ref = reference(proxy.url, lines, args.batch)
            rows.append(
                (
                    f"reference: the same lines posted directly, {args.batch}-point batches",
                    f"{ref:,.0f} points/s",
                    "no buffer, no encoding",
                )
            )
    print("| measurement | rate | detail |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


def _merged(updates: list[PipelineUpdate]) -> PipelineUpdate:
    cols = [u.samples for u in updates]
    return PipelineUpdate(
        t_plant=updates[-1].t_plant,
        signals=[],
        samples=SampleColumns(
            tag=np.concatenate([c.tag for c in cols]),
            t=np.concatenate([c.t for c in cols]),
            value=np.concatenate([c.value for c in cols]),
            quality=np.concatenate([c.quality for c in cols]),
        ),
        yield_rolling=None,
        flows=None,
        tag_names=updates[0].tag_names,
    )


if __name__ == "__main__":
    asyncio.run(main())
