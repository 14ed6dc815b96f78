"""Calibration of the published +-2 sigma band: coverage of the yield over many seeds.

Runs S0 (nominal) for `--hours` of plant time on each of `--seeds` seeds, offline like the
accuracy report, and prints per seed the share of GOOD 4 h figures (and shift figures, when a
run holds a shift) whose band holds the truth, their bias and the RMS of error/sigma, then the
coverage over the seeds with its 95 % interval against domain.md's 90-98 % (`simulators.uncertainty_calibration`: one seed is one trial,
because the weighers' span errors are drawn once per seed).

    .venv/bin/python benchmarks/uncertainty_calibration.py                 # seeds 1-40, 8 h each
    .venv/bin/python benchmarks/uncertainty_calibration.py --seeds 40 --hours 16  # shifts too
"""

from __future__ import annotations

import argparse
import os
import time

from simulators.accuracy import run_many
from simulators.accuracy_verdict import shift_score
from simulators.uncertainty_calibration import calibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="S0")
    ap.add_argument("--seeds", type=int, default=40, help="seeds 1..N")
    ap.add_argument(
        "--hours", type=float, default=8.0, help="plant time per seed (the 4 h window fills after ~5.5 h)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    started = time.perf_counter()
    jobs = [(args.scenario, seed, args.hours) for seed in range(1, args.seeds + 1)]
    records = run_many(jobs, args.jobs)
    print(
        f"uncertainty calibration: {args.scenario} x {args.seeds} seeds, {args.hours:g} h each, "
        f"{time.perf_counter() - started:.0f} s wall"
    )
    rolling = calibrate(records)
    if not rolling.seeds:
        print("no GOOD 4 h figure in the runs: give --hours 6 or more")
        return
    for line in rolling.lines("4 h"):
        print(line)
    shifts = calibrate(records, shift_score)
    if shifts.seeds:
        print()
        for line in shifts.lines("shift"):
            print(line)
    else:
        print("\nno shift completed in the runs: give --hours 16 or more for the shift band")


if __name__ == "__main__":
    main()
