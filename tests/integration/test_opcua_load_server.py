"""The sharded synthetic OPC-UA load through the gateway's real OPC-UA input driver.

Functional only: no timing is asserted (the figures are the benchmark's job). Two shard
processes serve a few hundred tags; one `OpcUaInputDriver` per shard feeds a recording sink.
Every update carries its tick's sequence number as the value, so the test can account for
every update the server wrote between a tag's first and last sample.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from drivers.opcua_input import OpcUaInputDriver
from gateway.config import OpcUaMonitoring
from gateway.samples import Quality
from simulators.opcua_load import (
    REPO_ROOT,
    ShardStartError,
    gateway_config,
    node_id,
    plan_shards,
    run_shards,
    tag_name,
)

pytestmark = pytest.mark.integration

TAGS = 300
SHARDS = 2
INTERVAL_MS = 200
SAMPLES_PER_TAG = 10  # about 2 s of updates


@dataclass
class RecordingSink:
    samples: list[list[tuple[float, float, int]]]  # per tag index: (t, value, quality)
    stale: list[int] = field(default_factory=list)

    def put(self, tag: int, t: float, value: float, quality: Quality | int, status: int = 0) -> None:
        self.samples[tag].append((t, value, int(quality)))

    def mark_stale(self, tags: list[int]) -> None:
        self.stale.extend(tags)


async def poll(what: str, fn: Callable[[], bool], deadline_s: float) -> None:
    """Wait until `fn()` is true; fail naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not fn():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_plan_and_gateway_config_cover_every_tag_once() -> None:
    specs = plan_shards(1001, 3, base_port=40000)
    assert [(s.first, s.count, s.port) for s in specs] == [
        (1, 334, 40000),
        (335, 334, 40001),
        (669, 333, 40002),
    ]
    cfg = gateway_config(specs, 100, queue_maxsize=50_000)
    assert [t.name for t in cfg.tags] == [tag_name(k) for k in range(1, 1002)]
    assert cfg.tags[0].node_id == "ns=2;s=load.t00001" == node_id(1)
    assert [bt.index for name in cfg.drivers for bt in cfg.bound[name]] == list(range(1001))
    assert all(bt.tag.driver == name for name in cfg.drivers for bt in cfg.bound[name])
    assert cfg.drivers["load2"].url == "opc.tcp://127.0.0.1:40002/linegate/load"
    assert cfg.drivers["load0"].queue_maxsize == 50_000


async def test_every_tag_delivers_in_order_and_every_update_is_accounted_for() -> None:
    with run_shards(TAGS, INTERVAL_MS, SHARDS) as shards:
        # Server-side queue of 10 per item: the server never coalesces updates unless it
        # goes 2 s without a publish, so every update written must arrive.
        cfg = gateway_config(
            shards.specs, INTERVAL_MS // 2, monitoring=OpcUaMonitoring(queue_size=10), queue_maxsize=50_000
        )
        sink = RecordingSink(samples=[[] for _ in cfg.tags])
        drivers = [OpcUaInputDriver(name, cfg.drivers[name], cfg.bound[name]) for name in cfg.drivers]
        tasks = [asyncio.create_task(d.run(sink, lambda: None)) for d in drivers]
        try:
            await poll(
                f"{SAMPLES_PER_TAG} samples from every tag",
                lambda: all(len(s) >= SAMPLES_PER_TAG for s in sink.samples) or any(t.done() for t in tasks),
                deadline_s=30,
            )
            for task in tasks:
                assert not task.done(), f"a driver stopped: {task.exception()!r}"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    stats = shards.stats
    assert all(s is not None for s in stats), "every shard reports its own account when stopped"

    gaps = 0
    for index, samples in enumerate(sink.samples):
        times = [t for t, _, _ in samples]
        values = [v for _, v, _ in samples]
        assert len(samples) >= SAMPLES_PER_TAG, f"{cfg.tags[index].name} delivered {len(samples)} samples"
        assert all(a < b for a, b in itertools.pairwise(times)), f"{cfg.tags[index].name}: time went back"
        assert all(a < b for a, b in itertools.pairwise(values)), f"{cfg.tags[index].name}: {values}"
        assert all(q == Quality.GOOD for _, _, q in samples)
        assert all(v == int(v) and v >= 0 for v in values), (cfg.tags[index].name, samples[:3])
        # Every sequence number between the first and the last sample arrived.
        gaps += int(values[-1] - values[0]) + 1 - len(values)
    assert gaps == 0

    for spec, shard_stats, driver in zip(shards.specs, stats, drivers, strict=True):
        assert shard_stats is not None
        indices = [bt.index for bt in cfg.bound[driver.name]]
        assert max(sink.samples[i][-1][1] for i in indices) <= shard_stats.ticks
        # Each sample is an update the shard wrote (or the value 0 it created the variable with).
        assert sum(1 for i in indices for _, v, _ in sink.samples[i] if v > 0) <= shard_stats.updates
        assert shard_stats.tags == spec.count
        # The driver's own account: every notification it took in reached the sink; none
        # overflowed its queue, none was a repeat.
        assert driver.dropped_overflow == 0
        assert driver.repeats_dropped == 0
        assert driver.samples == sum(len(sink.samples[i]) for i in indices)
        assert driver.received == driver.samples
        # The load's responses are plain data changes of numbers: the fast reader takes them
        # (asyncua decodes the rest, such as keep-alives), and no handle is unknown.
        fast, generic = driver.publish_responses
        assert fast > generic, (fast, generic)
        assert driver.unknown_handles == 0


def test_a_shard_that_cannot_start_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ShardStartError) as info, run_shards(10, 200, 1, base_port=port):
            pytest.fail("the shard started on a port that is taken")
    message = str(info.value)
    assert f"load shard 0 (opc.tcp://127.0.0.1:{port}/linegate/load, tags 1..10)" in message
    assert "exited with code 1" in message
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert "Traceback" not in message


def test_the_shard_command_line_refuses_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "simulators.opcua_load", "--port", "70000", "--count", "5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--port: 70000 is not a TCP port" in proc.stderr
    assert "Traceback" not in proc.stderr
