"""Benchmark: pipeline kernels and one whole pipeline tick, beside the numpy reference.

Prints samples/s of the streaming kernels (numba) against the numpy reference computing the
same grid, and the wall time of one `YieldPipeline.tick` for 1,000 and 5,000 tags with 10
samples per tag. Run: `.venv/bin/python benchmarks/pipeline_tick.py`.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import numpy as np

from gateway import kernels
from gateway.config import parse_config
from gateway.kernels_reference import stream_grid_reference
from gateway.pipeline import YieldPipeline
from gateway.samples import SampleBatch

ROOT = Path(__file__).resolve().parents[1]


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
            np.zeros(n, np.int32), t, v, q, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), 10.0, 120.0,
            np.full(1, np.nan), np.zeros(1), np.zeros(1, np.int8), np.zeros(1), np.zeros(1, np.int64),
            np.zeros((1, ring)), np.zeros((1, ring), np.bool_), np.full(1, -1, np.int64), np.zeros(1, np.int64),
        )  # fmt: skip

    run_numba()  # compile
    numba_s = _best(run_numba)
    ref_s = _best(lambda: stream_grid_reference(t, v, q, kernels.KIND_TOTAL, 1.0, 10.0, 120.0), repeat=2)
    return n / numba_s, n / ref_s


def tick_time(n_tags: int, per_tag: int = 10) -> float:
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

    batches = [batch() for _ in range(50)]
    times = []
    for b in batches:
        t0 = time.perf_counter()
        p.tick(b)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    numba_rate, ref_rate = stream_throughput()
    print(f"stream accumulation (totalizer -> plant-time grid): numba {numba_rate / 1e6:6.1f} M samples/s")
    print(f"  numpy reference, same result:                     {ref_rate / 1e6:6.1f} M samples/s")
    print(f"  ratio numba / numpy: {numba_rate / ref_rate:.1f}x")
    for n in (1_000, 5_000):
        print(f"pipeline tick, {n:5d} tags x 10 samples: median {tick_time(n) * 1e3:7.3f} ms")


if __name__ == "__main__":
    main()
