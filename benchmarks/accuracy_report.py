"""Accuracy report: the gateway's yield against the simulator's ground truth, per scenario.

Runs every scenario (S0-S12 by default) for 24 h of plant time over several seeds, offline
(`simulators.accuracy`: plant + sensor layer -> the gateway's YieldPipeline, no network), and
prints per scenario: bias, RMSE, P95 and max error of the 4 h rolling and the shift yield in
percentage points, the coverage of the published +-2 sigma band, availability of GOOD figures,
detection delays of the injected faults and false alarms, and the scenario's pass verdict
against domain.md section 4. Runs seeds in parallel (one process per core).

    .venv/bin/python benchmarks/accuracy_report.py                 # S0-S12 x seeds 1-3, 24 h
    .venv/bin/python benchmarks/accuracy_report.py --scenarios S0 S6 --seeds 1 2 --hours 12
"""

from __future__ import annotations

import argparse
import os
import time

from simulators.accuracy import RunRecord, run_many
from simulators.accuracy_verdict import ScenarioReport, report_for
from simulators.scenario import load_scenario

DEFAULT_SCENARIOS = [f"S{i}" for i in range(13)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    names = list(args.scenarios)
    if "S3" in names and "S0" not in names:
        names.insert(0, "S0")  # S3 is judged against S0 of the same seeds
    jobs = [(s, seed, args.hours) for s in names for seed in args.seeds]
    started = time.perf_counter()
    records = run_many(jobs, args.jobs)
    by_scenario: dict[str, list[RunRecord]] = {}
    for r in records:
        by_scenario.setdefault(r.scenario, []).append(r)
    reference = by_scenario.get("S0", [])
    reports = [
        report_for(load_scenario(name), runs, reference)
        for name, runs in by_scenario.items()
        if name in args.scenarios
    ]
    print(
        f"accuracy report: {len(args.scenarios)} scenarios x seeds {args.seeds}, "
        f"{args.hours:g} h plant time each, {time.perf_counter() - started:.0f} s wall"
    )
    print(ScenarioReport.table_header())
    for rep in reports:
        print(rep.table_row())
    print()
    for rep in reports:
        for line in rep.details():
            print(line)
    failed = [r.scenario for r in reports if not r.passed]
    print()
    print("all scenarios pass" if not failed else f"FAIL: {', '.join(failed)}")


if __name__ == "__main__":
    main()
