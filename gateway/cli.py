"""The `linegate` command: run, simulate, demo, check-config.

Heavy imports (numba, asyncua, the drivers) happen inside the subcommands, so `--help` and
`check-config` answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import load_config
from gateway.errors import ConfigError

DEFAULT_SIM_START = "2026-01-05T06:00:00+00:00"


def _numba_cache_default() -> None:
    # cache=True needs a writable directory; the systemd unit points this at CacheDirectory=.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "linegate" / "numba"))


def _parse_start(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="linegate",
        description="Telemetry and control gateway for battery-recycling preprocessing lines.",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway for a line config (the daemon's command)")
    run.add_argument("--config", required=True, type=Path, help="line config file (TOML)")

    sim = sub.add_parser("simulate", help="run the plant simulator's OPC-UA server and MQTT publishers")
    sim.add_argument(
        "--config", required=True, type=Path, help="line config whose endpoints and tags to serve"
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed (same seed, same plant; default 1)")
    sim.add_argument("--speed", type=float, default=60.0, help="plant seconds per wall second (default 60)")
    sim.add_argument("--hours", type=float, default=None, help="stop after this much plant time")
    sim.add_argument("--truth", type=Path, default=None, help="write the ground-truth record (JSONL) here")
    sim.add_argument(
        "--start",
        type=_parse_start,
        default=_parse_start(DEFAULT_SIM_START),
        help="plant start time (ISO 8601)",
    )

    demo = sub.add_parser("demo", help="simulator + gateway on local services, with a live view of yield")
    demo.add_argument("--config", type=Path, default=Path("config/line1.toml"), help="line config")
    demo.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    demo.add_argument(
        "--speed", type=float, default=600.0, help="plant seconds per wall second (default 600)"
    )
    demo.add_argument("--seed", type=int, default=1)

    check = sub.add_parser("check-config", help="validate a line config and exit (0 valid, 2 invalid)")
    check.add_argument("file", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config if args.command != "check-config" else args.file)
    except ConfigError as exc:
        print(f"linegate: invalid config {exc.path}:", file=sys.stderr)
        for key, reason in exc.problems:
            print(f"  {key}: {reason}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(
            f"{args.file}: OK: line {config.line.name}, {len(config.tags)} tags, "
            f"{len(config.drivers)} input drivers"
        )
        return 0

    _numba_cache_default()
    from gateway import composition  # the composition root pulls in the drivers

    composition.configure_logging(args.log_level)
    try:
        if args.command == "run":
            asyncio.run(composition.serve(config))
        elif args.command == "simulate":
            asyncio.run(
                composition.simulate(
                    config,
                    seed=args.seed,
                    speed=args.speed,
                    hours=args.hours,
                    truth=args.truth,
                    start=args.start,
                )
            )
        elif args.command == "demo":
            asyncio.run(
                composition.demo(
                    args.config.read_text(encoding="utf-8"),
                    minutes=args.minutes,
                    speed=args.speed,
                    seed=args.seed,
                    out=sys.stdout,
                )
            )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
