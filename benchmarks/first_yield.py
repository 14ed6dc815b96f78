"""Benchmark: warm-start time to the first yield figure, from a fresh Python process.

A restarted gateway should show a yield again within seconds. This runs a small driver in a
child process: import the gateway, load config/line1.toml, build `YieldPipeline`, `warm_up()`
(the numba kernels from the on-disk cache), then tick 4.5 h of 10 s feed and black-mass
totalizer samples in three ticks and stop the clock when `tick()` first returns a yield figure
with a value. Warm: a fixed NUMBA_CACHE_DIR under /tmp, filled by one run before the measured
ones. Cold, as the reference: a fresh, empty NUMBA_CACHE_DIR, so every kernel compiles.

Prints markdown rows: the stages inside the child (times since the parent spawned it) and the
wall time the parent measured around `subprocess.run`. Target: warm < 3 s.
Run: `.venv/bin/python benchmarks/first_yield.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "line1.toml"
WARM_CACHE = Path("/tmp/linegate-first-yield-numba-cache")
TARGET_S = 3.0
HISTORY_H = 4.5
STEP_S = 10.0
TICKS = 3
FEED_TPH = 1.7
YIELD = 0.45
T0 = 1_767_600_000.0

# Stage name -> what it covers, in the order they happen.
STAGES = {
    "started": "interpreter start (spawn -> first line of the driver)",
    "imported": "imports (numpy, numba, gateway)",
    "configured": "config load (line1.toml)",
    "warmed": "YieldPipeline + warm_up() (kernels)",
    "first_yield": "ticks until the first yield figure",
}


def child(spawned_at: float) -> None:
    """The measured driver: prints one JSON line of stage times (seconds since spawn)."""
    marks = {"started": time.time() - spawned_at}

    import numpy as np

    from gateway.config import load_config
    from gateway.pipeline import YieldPipeline
    from gateway.samples import SampleBatch

    marks["imported"] = time.time() - spawned_at
    config = load_config(CONFIG)
    marks["configured"] = time.time() - spawned_at
    pipeline = YieldPipeline(config)
    pipeline.warm_up()
    marks["warmed"] = time.time() - spawned_at

    feed, black_mass = config.stream_tag("feed"), config.stream_tag("black_mass")
    delay_s = config.yield_.transport_delay_min * 60
    ts = np.arange(0.0, HISTORY_H * 3600, STEP_S)
    feed_t = FEED_TPH * ts / 3600
    bm_t = YIELD * FEED_TPH * np.clip(ts - delay_s, 0, None) / 3600
    tags = (pipeline.feed_tag, pipeline.bm_tag)
    figure = None
    ticks = 0
    for part in np.array_split(np.arange(len(ts)), TICKS):
        n = len(part)
        ticks += 1
        figure = pipeline.tick(
            SampleBatch(
                tag=np.repeat(np.array(tags, np.int32), n),
                t=np.tile(T0 + ts[part], 2),
                value=np.r_[feed_t[part] / feed.to_tonnes, bm_t[part] / black_mass.to_tonnes],
                quality=np.zeros(2 * n, np.int8),
                status=np.zeros(2 * n, np.uint32),
            )
        ).yield_rolling
        if figure is not None and figure.value is not None:
            break
    marks["first_yield"] = time.time() - spawned_at
    if figure is None or figure.value is None:
        raise SystemExit("no yield figure with a value after the whole history")
    result = {
        "marks": marks,
        "ticks": ticks,
        "value": figure.value,
        "quality": figure.quality.label,
        "covered_h": figure.covered_h,
    }
    print(json.dumps(result), flush=True)


@dataclass(frozen=True)
class ChildRun:
    """One measured child: cumulative stage marks (s since spawn), its first figure, the wall."""

    marks: dict[str, float]
    ticks: int
    value: float
    quality: str
    covered_h: float
    wall: float  # measured by the parent around subprocess.run: spawn to exit

    def stage(self, name: str) -> float:
        """How long one stage took on its own."""
        names = list(STAGES)
        i = names.index(name)
        return self.marks[name] - (self.marks[names[i - 1]] if i else 0.0)


def run_child(cache_dir: Path) -> ChildRun:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    spawned_at = time.time()
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", repr(spawned_at)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return ChildRun(**json.loads(done.stdout.strip().splitlines()[-1]), wall=wall)


def _median(runs: list[ChildRun], figure: Callable[[ChildRun], float]) -> float:
    return statistics.median(figure(r) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per cache state (median)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return

    WARM_CACHE.mkdir(parents=True, exist_ok=True)
    run_child(WARM_CACHE)  # fill (or refresh) the cache; not measured
    warm = [run_child(WARM_CACHE) for _ in range(args.runs)]
    cold = []
    for _ in range(args.runs):
        empty = Path(tempfile.mkdtemp(prefix="linegate-numba-cold-", dir="/tmp"))
        try:
            cold.append(run_child(empty))
        finally:
            shutil.rmtree(empty, ignore_errors=True)

    def row(what: str, figure: Callable[[ChildRun], float], bold: bool = False) -> None:
        w, c = f"{_median(warm, figure):.3f} s", f"{_median(cold, figure):.3f} s"
        if bold:
            what, w = f"**{what}**", f"**{w}**"
        print(f"| {what} | {w} | {c} |")

    print(
        f"first yield figure after a restart, median of {args.runs} runs each (2 shared cores: may be slow)"
    )
    print()
    print("| stage | warm numba cache | cold (empty cache, reference) |")
    print("|---|---:|---:|")
    for name, what in STAGES.items():
        row(what, lambda r, name=name: r.stage(name))
    row("first yield, since spawn (clock inside the child)", lambda r: r.marks["first_yield"], bold=True)
    row("first yield, since the end of imports", lambda r: r.marks["first_yield"] - r.marks["imported"])
    row("wall around subprocess.run (parent; spawn to exit)", lambda r: r.wall, bold=True)
    verdict = "met" if _median(warm, lambda r: r.wall) < TARGET_S else "MISSED"
    print(f"| target: warm wall < {TARGET_S:g} s | {verdict} | - |")
    last = warm[-1]
    print()
    print(
        f"first figure: {last.value * 100:.2f} % ({last.quality}, {last.covered_h:.2f} h of the window "
        f"covered) on tick {last.ticks} of {TICKS}"
    )


if __name__ == "__main__":
    main()
