"""How fast the simulator runs a plant day offline: the plant alone, then with the sensor layer
and the truth record (what `linegate simulate` does between publishes).

Prints plant seconds per wall second for each, so the reader sees what the instruments and the
truth cost beside the bare model, and how much headroom `--speed` has on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from simulators.plant import Plant
from simulators.runner import DEFAULT_START, run_offline
from simulators.scenario import load_scenario


def plant_alone(hours: float, seed: int) -> float:
    plant = Plant(seed=seed)
    steps = round(hours * 3600 / plant.dt_s)
    t = time.perf_counter()
    plant.advance(steps)
    return time.perf_counter() - t


def with_sensors_and_truth(hours: float, seed: int, scenario: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run_offline(
            load_scenario(scenario),
            seed=seed,
            hours=hours,
            truth_path=Path(tmp) / "truth.jsonl",
            start=DEFAULT_START,
            measure_every_s=6.0,  # 10 Hz publishing at 60x; the sensor cost per plant second
        )
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scenario", default="S3", help="scenario for the full run (default S3: spikes)")
    args = ap.parse_args()
    bare = plant_alone(args.hours, args.seed)
    full = with_sensors_and_truth(args.hours, args.seed, args.scenario)
    plant_s = args.hours * 3600
    print(f"simulated day: {args.hours:g} h plant time at 1 s steps")
    print("| run | wall s | plant s per wall s |")
    print("|---|---:|---:|")
    print(f"| plant alone (reference) | {bare:.1f} | {plant_s / bare:,.0f} |")
    print(
        f"| plant + sensors (every 6 plant s) + truth, scenario {args.scenario} | {full:.1f} | {plant_s / full:,.0f} |"
    )


if __name__ == "__main__":
    main()
