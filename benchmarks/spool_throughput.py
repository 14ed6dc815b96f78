"""Benchmark: the durable spool (SQLite WAL) against the in-memory output queue it replaces.

Prints markdown rows, for records of 10 and 10,000 line-protocol points (one tick of 1 tag, and
of 1,000 tags x 10 samples): the wall time of one `put` (median, p95, max) and the put rate in
points/s; the drain rate of `peek(batch) + commit` until empty (after a reopen, so it is the
replay of a backlog); the spool's file size per stored point (WAL folded in). Beside them, in the
same run: `gateway.output_queue.OutputQueue` doing the same puts and peeks, and the spool with
synchronous=NORMAL (no fsync per put: what durability costs). Puts go back to back, except in the
row paced like the runtime (one put per 250 ms tick). Asserts nothing.
Run: `.venv/bin/python benchmarks/spool_throughput.py [--dir DIR]` (DIR on the disk the spool
will live on; default a fresh temporary directory).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gateway.durable_spool import DurableSpool, SpoolLimits
from gateway.output_queue import OutputQueue

# The influx output's own batch size default: what one peek asks for.
BATCH_POINTS = 5_000
# Issue target: one put of a 1,000-tag x 10-sample tick stays within a few ms.
PUT_TARGET_S = 5e-3
TICK_S = 0.25


def tick_lines(points: int) -> list[str]:
    """Signal lines shaped like the InfluxDB output's (about 100 bytes each)."""
    rng = np.random.default_rng(points)
    values = rng.uniform(0, 100, points).tolist()
    return [
        f'signal,line=line1,site=plant-a,tag=bench.t{i // 10} value={v!r},quality="good" {1767600000000 + i}'
        for i, v in enumerate(values)
    ]


def pass_through(lines: list[str], first_seq: int) -> list[str]:
    return lines


@dataclass(frozen=True)
class Run:
    """Wall times of one put/drain run."""

    points_per_put: int
    put_s: list[float]
    drain_s: float
    file_bytes: int  # the database file holding all the puts, 0 for the in-memory queue

    @property
    def points(self) -> int:
        return self.points_per_put * len(self.put_s)

    def row(self, what: str) -> str:
        put = np.array(self.put_s) * 1e3
        per_point = f"{self.file_bytes / self.points:.0f} B" if self.file_bytes else "-"
        return (
            f"| {what} | {self.points_per_put:,} | {np.median(put):.3f} | {np.percentile(put, 95):.3f} |"
            f" {put.max():.3f} | {_rate(self.points / sum(self.put_s))} | {_rate(self.points / self.drain_s)} |"
            f" {per_point} |"
        )


def _rate(per_s: float) -> str:
    return f"{per_s / 1e6:,.2f} M" if per_s >= 1e6 else f"{per_s / 1e3:,.0f} k"


def spool_run(
    directory: Path,
    lines: list[str],
    puts: int,
    synchronous: Literal["FULL", "NORMAL"],
    pause_s: float = 0.0,
) -> Run:
    path = directory / f"spool-{synchronous.lower()}-{len(lines)}-{pause_s:g}.db"

    def open_spool() -> DurableSpool[list[str]]:
        limits = SpoolLimits(max_bytes=1 << 40, max_age_s=0)
        return DurableSpool(path, pass_through, limits, _synchronous=synchronous)

    spool = open_spool()
    try:
        put_s = []
        for _ in range(puts):
            t0 = time.perf_counter()
            spool.put(lines)
            put_s.append(time.perf_counter() - t0)
            if pause_s:
                time.sleep(pause_s)  # pacing like the runtime's ticks, not synchronisation
    finally:
        spool.close()  # folds the WAL into the file
    file_bytes = path.stat().st_size
    spool = open_spool()
    try:
        t0 = time.perf_counter()
        while len(spool):
            _, token = spool.peek(BATCH_POINTS)
            spool.commit(token)
        drain_s = time.perf_counter() - t0
    finally:
        spool.close()
    return Run(len(lines), put_s, drain_s, file_bytes)


def queue_run(lines: list[str], puts: int) -> Run:
    queue: OutputQueue[list[str]] = OutputQueue(capacity=1 << 40)
    put_s = []
    for _ in range(puts):
        t0 = time.perf_counter()
        queue.put(lines, len(lines))
        put_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    while len(queue):
        items, token = queue.peek(BATCH_POINTS)
        _ = [line for item in items for line in item]  # the flat line list the spool's peek hands over
        queue.commit(token)
    return Run(len(lines), put_s, time.perf_counter() - t0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where to put the spool files (default: a temp dir)")
    parser.add_argument("--small-puts", type=int, default=500, help="puts of 10-point records")
    parser.add_argument("--large-puts", type=int, default=60, help="puts of 10,000-point records")
    parser.add_argument("--paced-puts", type=int, default=20, help="10,000-point puts, one per 250 ms")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    try:
        print(f"Spool files in {directory}; 2 shared cores, so figures may be depressed by other load.")
        print(f"Drain: peek({BATCH_POINTS:,}) + commit until empty, after a reopen. Put times in ms.")
        print()
        print(
            "| store | points/put | put median | put p95 | put max | put points/s | drain points/s | file/point |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for points, puts in ((10, args.small_puts), (10_000, args.large_puts)):
            lines = tick_lines(points)
            full = spool_run(directory, lines, puts, "FULL")
            print(full.row("spool, synchronous=FULL"))
            print(spool_run(directory, lines, puts, "NORMAL").row("spool, synchronous=NORMAL (reference)"))
            print(queue_run(lines, puts).row("OutputQueue in memory (reference)"))
        paced = spool_run(directory, tick_lines(10_000), args.paced_puts, "FULL", TICK_S)
        print(paced.row(f"spool, synchronous=FULL, one put per {TICK_S * 1e3:g} ms"))
        verdict = "met" if np.median(paced.put_s) < PUT_TARGET_S else "MISSED"
        print(f"| target: paced 10,000-point put < {PUT_TARGET_S * 1e3:g} ms (median) | {verdict} |")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
