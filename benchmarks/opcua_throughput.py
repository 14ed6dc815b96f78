"""Benchmark: OPC-UA input throughput, gateway CPU, RSS and latency at 1,000 and 5,000 tags.

Run: `NUMBA_CACHE_DIR=/tmp/numba-cache .venv/bin/python benchmarks/opcua_throughput.py`
     (options: --tags 1000 5000 --interval-ms 100 --seconds 10 --warmup 3 --shards N
     --publishing-ms P --queue-size 1 --shard-nice 10; about 1.5 min for both sizes)

The load: `simulators.opcua_load` shard processes (ceil(tags / 1,700) of them: one asyncua
server process carries about 20,000 notifications/s) update every tag every `--interval-ms`
with the tick's sequence number as the value and the wall clock as SourceTimestamp. The
gateway side runs in THIS process: one real `drivers.opcua_input.OpcUaInputDriver` per shard,
feeding a counting sink, so this process's CPU and memory are the gateway's input path. A
driver that loses its session is restarted after 0.5 s, as the runtime would; losses during
the window are reported with their reason.

Measured over `--seconds` after every tag has delivered and `--warmup` more seconds:
- offered: tags x 1000 / interval; served: what the shards really wrote (their `load.updates`
  counter node, read at the window's ends; the reference that tells server-limited from
  client-limited); received: notifications the drivers took in.
- missed: updates that never reached the sink, from the jumps in each tag's sequence numbers.
  They are the client's counted queue overflow (`dropped_overflow`) plus what the server
  coalesced: with queue size 1 a monitored item keeps only the latest value per publish, so a
  slow reader or a late publish cycle costs updates there rather than adding lag.
- gateway CPU (process_time / wall, % of one core), each shard's CPU (from /proc), RSS.
- latency = arrival wall time - SourceTimestamp for every 10th notification, p50/p99 in the
  first and the last fifth of the window: a growing figure means lag that keeps growing.

This machine has 2 cores shared by the shards and the gateway: at 5,000 tags the box is CPU
bound, and the verdict says so. The shards run at nice 10 (`--shard-nice`) so that the gateway,
the process under test, gets first call on the CPU and the shards take what it leaves: the
gateway's own ceiling shows, and "server-limited" then means the box had no CPU left for load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from asyncua import Client, ua  # noqa: E402

from drivers.opcua_input import OpcUaInputDriver  # noqa: E402
from drivers.opcua_session import open_session  # noqa: E402
from gateway.config import OpcUaDriver, OpcUaMonitoring  # noqa: E402
from gateway.errors import FatalDriverError, RetryableError  # noqa: E402
from gateway.samples import Quality  # noqa: E402
from simulators.opcua_load import (  # noqa: E402
    COUNTER_NAME,
    RunningShards,
    ShardStartError,
    gateway_config,
    run_shards,
)

TAGS_PER_SHARD = 1700  # one asyncua server process tops out near 20,000 notifications/s
LATENCY_EVERY = 10  # latency of every 10th notification: enough samples, little cost
CONNECT_TIMEOUT_S = 120.0  # creating 5,000 monitored items on a CPU-bound box takes a while
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESTART_DELAY_S = 0.5  # the runtime's first backoff


class BenchSink:
    """Counts notifications per tag, checks sequence numbers, samples latency."""

    def __init__(self, n_tags: int) -> None:
        self.count = [0] * n_tags
        self.last_value = [math.nan] * n_tags
        self.last_t = [-math.inf] * n_tags
        self.puts = 0
        self.missed = 0  # sequence numbers never seen, counted while `measuring`
        self.out_of_order = 0  # a sample not newer than the tag's last one
        self.not_good = 0
        self.measuring = False
        self.latencies: list[tuple[float, float]] = []  # (arrival, latency) while measuring

    def put(self, tag: int, t: float, value: float, quality: Quality | int, status: int = 0) -> None:
        self.puts += 1
        self.count[tag] += 1
        last = self.last_value[tag]
        if value <= last or t <= self.last_t[tag]:
            self.out_of_order += 1
        elif self.measuring and value > last + 1:
            self.missed += int(value - last) - 1
        self.last_value[tag] = value
        self.last_t[tag] = t
        if quality != Quality.GOOD:
            self.not_good += 1
        if self.measuring and self.puts % LATENCY_EVERY == 0:
            now = time.time()
            self.latencies.append((now, now - t))

    def mark_stale(self, tags: Sequence[int]) -> None:
        """Session losses are counted by the supervisor, with their reason."""


@dataclass
class Snapshot:
    wall: float
    cpu: float
    box_busy: float  # CPU-seconds all processes on the box used so far (/proc/stat)
    received: int
    dropped: int
    served: int
    shard_cpu: list[float]


@dataclass
class Result:
    tags: int
    shards: int
    offered: float
    served: float
    received: float
    missed: int
    dropped: int
    out_of_order: int
    not_good: int
    gateway_cpu: float  # fraction of one core
    shard_cpu: list[float]
    other_cpu: float  # what everything else on the box used meanwhile, fraction of one core
    rss_mib: float
    hwm_mib: float
    rss_before_mib: float
    connect_s: float
    lat_first: tuple[float, float]  # p50, p99 in ms
    lat_last: tuple[float, float]
    lat_all: tuple[float, float, float]  # p50, p99, max
    silent_tags: int
    skipped_ticks: int
    losses: list[str]  # sessions lost during the window, and why
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def box_busy_s() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def vm_kib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return math.nan


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def read_counters(sessions: list[Client]) -> int:
    total = 0
    for client in sessions:
        total += int(await client.get_node(ua.NodeId(COUNTER_NAME, 2)).read_value())
    return total


async def run_size(tags: int, args: argparse.Namespace) -> Result:
    shards_n = args.shards or math.ceil(tags / TAGS_PER_SHARD)
    publishing_ms = args.publishing_ms or round(args.interval_ms)
    print(
        f"\n{tags} tags x every {args.interval_ms:g} ms, {shards_n} shard(s): starting the load servers ...",
        flush=True,
    )
    rss_before = vm_kib("VmRSS")
    with run_shards(tags, args.interval_ms, shards_n, nice=args.shard_nice) as shards:
        result = await measure(tags, shards, publishing_ms, rss_before, args)
    result.skipped_ticks = sum(s.skipped_ticks for s in shards.stats if s is not None)
    judge(result, args.interval_ms)
    return result


async def measure(
    tags: int, shards: RunningShards, publishing_ms: int, rss_before: float, args: argparse.Namespace
) -> Result:
    cfg = gateway_config(shards.specs, publishing_ms, monitoring=OpcUaMonitoring(queue_size=args.queue_size))
    sink = BenchSink(len(cfg.tags))
    drivers = [OpcUaInputDriver(name, cfg.drivers[name], cfg.bound[name]) for name in cfg.drivers]
    connected = [asyncio.Event() for _ in drivers]
    losses: list[tuple[float, str]] = []
    t_connect = time.monotonic()
    tasks = [
        asyncio.create_task(supervise(d, sink, ev, losses)) for d, ev in zip(drivers, connected, strict=True)
    ]
    try:
        await wait_until("every driver connected", lambda: all(ev.is_set() for ev in connected), tasks)
        connect_s = time.monotonic() - t_connect
        await wait_until("every tag delivered", lambda: all(sink.count), tasks)
        await asyncio.sleep(args.warmup)  # warm-up: let queues and caches settle
        async with contextlib.AsyncExitStack() as stack:
            # Patient sessions: on a saturated box a 1 s watchdog would drop them.
            counter_settings = [
                OpcUaDriver(type="opcua", url=s.url, heartbeat_s=5, heartbeat_timeout_s=10)
                for s in shards.specs
            ]
            sessions = [
                await stack.enter_async_context(open_session(settings, "bench-counter"))
                for settings in counter_settings
            ]
            before_counts = list(sink.count)
            start = await snapshot(drivers, sessions, shards)
            sink.measuring = True
            await asyncio.sleep(args.seconds)
            sink.measuring = False
            end = await snapshot(drivers, sessions, shards)
        for task in tasks:
            if task.done():
                task.result()  # a driver that failed for good: its error, not a table
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    wall = end.wall - start.wall
    gateway_cpu = (end.cpu - start.cpu) / wall
    shard_cpu = [(b - a) / wall for a, b in zip(start.shard_cpu, end.shard_cpu, strict=True)]
    lat = sink.latencies
    fifth = wall / 5
    first = [x * 1e3 for t, x in lat if t - lat[0][0] < fifth] if lat else []
    last = [x * 1e3 for t, x in lat if lat[-1][0] - t < fifth] if lat else []
    every = [x * 1e3 for _, x in lat]
    return Result(
        tags=tags,
        shards=len(shards.specs),
        offered=shards.offered_rate,
        served=(end.served - start.served) / wall,
        received=(end.received - start.received) / wall,
        missed=sink.missed,
        dropped=end.dropped - start.dropped,
        out_of_order=sink.out_of_order,
        not_good=sink.not_good,
        gateway_cpu=gateway_cpu,
        shard_cpu=shard_cpu,
        other_cpu=max(0.0, (end.box_busy - start.box_busy) / wall - gateway_cpu - sum(shard_cpu)),
        rss_mib=vm_kib("VmRSS") / 1024,
        hwm_mib=vm_kib("VmHWM") / 1024,
        rss_before_mib=rss_before / 1024,
        connect_s=connect_s,
        lat_first=(pct(first, 0.5), pct(first, 0.99)),
        lat_last=(pct(last, 0.5), pct(last, 0.99)),
        lat_all=(pct(every, 0.5), pct(every, 0.99), max(every, default=math.nan)),
        silent_tags=sum(1 for a, b in zip(before_counts, sink.count, strict=True) if b == a),
        skipped_ticks=0,
        losses=[why for t, why in losses if start.wall <= t <= end.wall],
    )


async def supervise(
    driver: OpcUaInputDriver, sink: BenchSink, connected: asyncio.Event, losses: list[tuple[float, str]]
) -> None:
    """Run the driver as the runtime would: after a RetryableError, again after a short pause."""
    while True:
        try:
            await driver.run(sink, connected.set)
            raise RetryableError(f"opcua {driver.name}: run() returned")
        except RetryableError as exc:
            losses.append((time.monotonic(), str(exc)))
            await asyncio.sleep(RESTART_DELAY_S)


async def wait_until(what: str, cond: Callable[[], bool], tasks: list[asyncio.Task[None]]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not cond():
        for task in tasks:
            if task.done():
                task.result()  # raises the driver's error
                raise RuntimeError(f"a driver stopped before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {CONNECT_TIMEOUT_S:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def snapshot(
    drivers: list[OpcUaInputDriver], sessions: list[Client], shards: RunningShards
) -> Snapshot:
    served = await read_counters(sessions)
    return Snapshot(
        wall=time.monotonic(),
        cpu=time.process_time(),
        box_busy=box_busy_s(),
        # getattr: any driver version with or without these counters can be measured.
        received=sum(getattr(d, "received", 0) for d in drivers),
        dropped=sum(getattr(d, "dropped_overflow", 0) for d in drivers),
        served=served,
        shard_cpu=[proc_cpu_s(pid) for pid in shards.pids],
    )


def judge(r: Result, interval_ms: float) -> None:
    if r.served < 0.97 * r.offered:
        r.reasons.append(
            f"server-limited: the shards wrote {r.served:,.0f}/s of {r.offered:,.0f}/s offered "
            f"(shard CPU {', '.join(f'{c:.0%}' for c in r.shard_cpu)}; {r.skipped_ticks} ticks skipped)"
        )
    if r.received < 0.97 * r.served:
        r.reasons.append(
            f"client-limited: received {r.received:,.0f}/s of the {r.served:,.0f}/s written "
            f"(gateway at {r.gateway_cpu:.0%} of a core; the rest was coalesced by the server or dropped)"
        )
    if r.dropped:
        r.reasons.append(f"{r.dropped:,} notifications dropped by the client queue (counted)")
    if r.lat_last[0] > r.lat_first[0] + interval_ms:
        r.reasons.append(f"lag grows: p50 {r.lat_first[0]:.0f} ms -> {r.lat_last[0]:.0f} ms over the window")
    if r.losses:
        r.reasons.append(
            f"{len(r.losses)} session(s) lost and restarted during the window, first: {r.losses[0]}"
        )
    if r.silent_tags:
        r.reasons.append(f"{r.silent_tags} tags delivered nothing in the window")
    if r.out_of_order:
        r.reasons.append(f"{r.out_of_order} samples out of order")
    if r.not_good:
        r.reasons.append(f"{r.not_good} samples not of GOOD quality")
    r.verdict = "falls behind" if r.reasons else "keeps up"
    box = r.gateway_cpu + sum(r.shard_cpu) + r.other_cpu
    cores = os.cpu_count() or 1
    if box > 0.9 * cores:
        r.reasons.append(
            f"the box is CPU-saturated: {box:.0%} of {cores * 100} % busy (gateway {r.gateway_cpu:.0%}, "
            f"shards {sum(r.shard_cpu):.0%}, other processes {r.other_cpu:.0%})"
        )
    elif r.other_cpu > 0.1:
        r.reasons.append(f"other processes used {r.other_cpu:.0%} of a core meanwhile")


def print_table(results: list[Result]) -> None:
    print(
        "\n| tags | shards | offered/s | served/s | received/s | missed (of which dropped) | gateway CPU (µs/notif.) | shard CPU | other CPU | RSS MiB (before) | latency p50/p99 ms, first fifth | last fifth | overall p50/p99/max |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.tags:,} | {r.shards} | {r.offered:,.0f} | {r.served:,.0f} | {r.received:,.0f} | "
            f"{r.missed:,} ({r.dropped:,}) | {r.gateway_cpu:.0%} ({r.gateway_cpu / max(r.received, 1) * 1e6:.0f}) | {' + '.join(f'{c:.0%}' for c in r.shard_cpu)} | "
            f"{r.other_cpu:.0%} | "
            f"{r.rss_mib:.0f} ({r.rss_before_mib:.0f}) | {r.lat_first[0]:.0f} / {r.lat_first[1]:.0f} | "
            f"{r.lat_last[0]:.0f} / {r.lat_last[1]:.0f} | "
            f"{r.lat_all[0]:.0f} / {r.lat_all[1]:.0f} / {r.lat_all[2]:.0f} |"
        )
    print()
    for r in results:
        why = (
            "; ".join(r.reasons)
            or f"received {r.received / r.offered:.0%} of offered, nothing dropped, no lag growth"
        )
        print(f"{r.tags:,} tags: {r.verdict}: {why}. (subscriptions up in {r.connect_s:.1f} s)")


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # session-timeout notices and the like
    print(
        f"OPC-UA input benchmark: {os.cpu_count()} CPUs; window {args.seconds:g} s after {args.warmup:g} s warm-up; "
        f"publishing interval {args.publishing_ms or round(args.interval_ms)} ms; "
        f"monitored-item queue size {args.queue_size}; shards at nice {args.shard_nice}"
    )
    results = [await run_size(tags, args) for tags in args.tags]
    print_table(results)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--tags", type=int, nargs="+", default=[1000, 5000], help="tag counts to run, one after the other"
    )
    p.add_argument("--interval-ms", type=float, default=100.0, help="update interval of every tag")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per size")
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds after every tag delivered, before measuring"
    )
    p.add_argument(
        "--shards", type=int, default=None, help=f"server processes (default: ceil(tags / {TAGS_PER_SHARD}))"
    )
    p.add_argument(
        "--publishing-ms",
        type=int,
        default=None,
        help="the drivers' publishing interval (default: --interval-ms)",
    )
    p.add_argument(
        "--shard-nice",
        type=int,
        default=10,
        choices=range(20),
        metavar="0-19",
        help="CPU priority penalty of the load servers: the gateway under test gets first call on the CPU",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=1,
        help="server-side queue per monitored item (1: latest value only)",
    )
    args = p.parse_args(argv)
    if any(t < 1 for t in args.tags) or args.interval_ms <= 0 or args.seconds <= 0 or args.warmup < 0:
        p.error("--tags, --interval-ms and --seconds must be positive, --warmup not negative")
    if args.shards is not None and not 1 <= args.shards <= min(args.tags):
        p.error("--shards must be between 1 and the smallest --tags")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args(sys.argv[1:])))
    except KeyboardInterrupt:
        pass
    except (ShardStartError, FatalDriverError, RuntimeError) as exc:
        sys.exit(f"opcua_throughput: {exc}")
