"""Benchmark: pipeline kernels and one whole pipeline tick, beside the numpy reference.

Prints markdown rows: samples/s of the streaming kernels (numba) against the numpy reference
computing the same grid, and the wall time of one `YieldPipeline.tick` for 1,000 and 5,000 tags
with 10 samples per tag, beside what an output then pays to read the changed tags (the tick
hands them over as columns; rows or SignalState objects are built only by whoever asks).
Run: `.venv/bin/python benchmarks/pipeline_tick.py`.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway import kernels
from gateway.config import parse_config
from gateway.kernels_reference import stream_grid_reference
from gateway.pipeline import YieldPipeline
from gateway.samples import SampleBatch

ROOT = Path(__file__).resolve().parents[1]
# Issue acceptance: one tick of a 1,000-tag line, 10 samples per tag.
TICK_TARGET_S = 1e-3


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stream_throughput(n: int = 2_000_000) -> tuple[float, float]:
    t = 1e9 + np.arange(n, dtype=np.float64)
    v = np.cumsum(np.full(n, 1.7 / 3600))
    q = np.zeros(n, np.int8)
    ring = 4096

    def run_numba() -> None:
        kernels.accumulate_streams(
            np.zeros(n, np.int32), t, v, q, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1),
            np.zeros(1), np.full(1, np.inf), 10.0, 120.0,
            np.full(1, np.nan), np.zeros(1), np.zeros(1, np.int8), np.zeros(1), np.zeros((1, 3), np.int64),
            np.zeros((1, ring)), np.zeros((1, ring), np.bool_), np.full(1, -1, np.int64), np.zeros(1, np.int64),
        )  # fmt: skip

    run_numba()  # compile
    numba_s = _best(run_numba)
    ref_s = _best(lambda: stream_grid_reference(t, v, q, kernels.KIND_TOTAL, 1.0, 10.0, 120.0), repeat=2)
    return n / numba_s, n / ref_s


@dataclass(frozen=True)
class TickFigures:
    """Per-tick wall times (s) of the pipeline and of what an output does with its signals."""

    tick: list[float]
    rows: list[float]  # update.signal_rows(): what the MQTT output and the terminal view read
    objects: list[float]  # list(update.signals): SignalState objects, for consumers that want them


def tick_times(n_tags: int, per_tag: int = 10, ticks: int = 50) -> TickFigures:
    base = tomllib.loads((ROOT / "config" / "line1.toml").read_text(encoding="utf-8"))
    extra = [
        {
            "name": f"bench.t{i}",
            "driver": "plc",
            "node_id": f"ns=2;s=bench.t{i}",
            "unit": "-",
            "range": [0, 100],
        }
        for i in range(n_tags - len(base["tags"]))
    ]
    base["tags"] = base["tags"] + extra
    p = YieldPipeline(parse_config(base))
    p.warm_up()
    rng = np.random.default_rng(1)
    t_now = 1.7676e9

    def batch() -> SampleBatch:
        nonlocal t_now
        n = n_tags * per_tag
        t_now += 1.0
        return SampleBatch(
            tag=np.repeat(np.arange(n_tags, dtype=np.int32), per_tag),
            t=np.tile(t_now + np.linspace(0, 0.9, per_tag), n_tags),
            value=rng.uniform(0, 100, n),
            quality=np.zeros(n, np.int8),
            status=np.zeros(n, np.uint32),
        )

    batches = [batch() for _ in range(ticks)]
    figures = TickFigures([], [], [])
    updates = []
    for b in batches:
        t0 = time.perf_counter()
        updates.append(p.tick(b))
        figures.tick.append(time.perf_counter() - t0)
    # Measured apart from the ticks, so their garbage does not land on the tick figures.
    for update in updates:
        t0 = time.perf_counter()
        update.signal_rows()
        figures.rows.append(time.perf_counter() - t0)
    for update in updates:
        t0 = time.perf_counter()
        list(update.signals)
        figures.objects.append(time.perf_counter() - t0)
    return figures


def _ms(times: list[float]) -> str:
    return f"{np.median(times) * 1e3:.3f} ms (p95 {np.percentile(times, 95) * 1e3:.3f})"


def main() -> None:
    numba_rate, ref_rate = stream_throughput()
    print("Medians of 50 ticks; 2 shared cores, so figures may be depressed by other load.")
    print()
    print("| benchmark | figure |")
    print("|---|---:|")
    print(
        f"| stream accumulation (totalizer -> plant-time grid), numba | {numba_rate / 1e6:.1f} M samples/s |"
    )
    print(f"| the same grid, numpy reference | {ref_rate / 1e6:.1f} M samples/s |")
    print(f"| ratio numba / numpy | {numba_rate / ref_rate:.1f}x |")
    for n in (1_000, 5_000):
        figures = tick_times(n)
        print(f"| `YieldPipeline.tick`, {n:,} tags x 10 samples | {_ms(figures.tick)} |")
        print(
            f"| then `update.signal_rows()` ({n:,} changed tags, as an output reads them) | {_ms(figures.rows)} |"
        )
        print(f"| or `list(update.signals)` ({n:,} SignalState objects) | {_ms(figures.objects)} |")
        if n == 1_000:
            verdict = "met" if np.median(figures.tick) < TICK_TARGET_S else "MISSED"
            print(f"| target: 1,000-tag tick < {TICK_TARGET_S * 1e3:g} ms | {verdict} |")


if __name__ == "__main__":
    main()
