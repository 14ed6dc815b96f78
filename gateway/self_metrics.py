"""The gateway's own metrics: what it does and what it costs, sampled every few seconds.

The runtime fills a `GatewayMetrics` from its counters, its drivers' health and the durable
buffer, and hands it to the outputs on the tick's update (the historian's `gateway` and `driver`
measurements). CPU and RSS come from the process itself (Linux /proc), no library needed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DriverMetrics:
    name: str
    kind: str  # input | output | service
    connected: bool
    connects: int
    failures: int


@dataclass(frozen=True, slots=True)
class BufferMetrics:
    """The durable buffer's state (all zero when there is none)."""

    points: int = 0
    bytes: int = 0
    age_s: float = 0.0
    dropped_points: int = 0  # lifetime, by the size/age caps
    replayed_points: int = 0  # lifetime, delivered after an outage or restart
    written_points: int = 0  # confirmed by InfluxDB (this process)
    rejected_points: int = 0  # refused by InfluxDB as malformed, dead-lettered (this process)
    refused_points: int = 0  # could not be stored (disk full, I/O error): never accepted


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    t: float  # wall clock (epoch s): they describe the gateway, and must move when plant clocks stop
    tick_ms: float
    tick_errors: int
    samples_in: int  # cumulative samples taken off the bus
    alarms_active: int
    cpu_percent: float  # of one core, over the last interval
    rss_mb: float
    latency_ms: float = float("nan")  # median source timestamp -> tick, of the last tick with samples
    pipeline_ms: float = float("nan")  # of that tick: the pipeline's share (yields, KPIs, detectors)
    samples_out: int = 0  # cumulative samples handed to the outputs
    # Cumulative drops by reason: bus full (oldest dropped), out of order, out of range/non-finite.
    dropped_bus: int = 0
    dropped_out_of_order: int = 0
    rejected_range: int = 0
    bus_depth: int = 0
    # Per output: updates waiting in its queue (records, for the durable buffer) and dropped.
    queue_depths: dict[str, int] = field(default_factory=dict)
    queue_dropped: dict[str, int] = field(default_factory=dict)
    buffer: BufferMetrics = BufferMetrics()
    drivers: list[DriverMetrics] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        b = self.buffer
        return {
            "tick_errors": self.tick_errors,
            "samples_in": self.samples_in,
            "samples_out": self.samples_out,
            "dropped_bus": self.dropped_bus,
            "dropped_out_of_order": self.dropped_out_of_order,
            "rejected_range": self.rejected_range,
            "bus_depth": self.bus_depth,
            **{f"queue_{name}": depth for name, depth in self.queue_depths.items()},
            **{f"queue_{name}_dropped": n for name, n in self.queue_dropped.items()},
            "alarms_active": self.alarms_active,
            "drivers_connected": sum(d.connected for d in self.drivers),
            "drivers_total": len(self.drivers),
            "buffer_points": b.points,
            "buffer_bytes": b.bytes,
            "buffer_dropped_points": b.dropped_points,
            "buffer_replayed_points": b.replayed_points,
            "influx_written_points": b.written_points,
            "influx_rejected_points": b.rejected_points,
            "buffer_refused_points": b.refused_points,
        }

    def gauges(self) -> dict[str, float]:
        return {
            "tick_ms": self.tick_ms,
            "latency_ms": self.latency_ms,
            "pipeline_ms": self.pipeline_ms,
            "cpu_percent": self.cpu_percent,
            "rss_mb": self.rss_mb,
            "buffer_age_s": self.buffer.age_s,
        }


def rss_mb() -> float:
    """Resident set size now (not the peak), from /proc; NaN where there is no /proc."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class CpuMeter:
    """Process CPU time over wall time between two readings, in percent of one core."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def percent(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        span = wall - self._wall
        share = (cpu - self._cpu) / span * 100.0 if span > 0 else float("nan")
        self._cpu, self._wall = cpu, wall
        return share
