"""The `linegate` command: run, simulate, demo, check-config, certs, browse.

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

from gateway.config import LineConfig, load_config
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
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "text"],
        default="auto",
        help="json: one JSON event per line (default when not on a terminal, e.g. under systemd); text",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway for a line config (the daemon's command)")
    run.add_argument("--config", required=True, type=Path, help="line config file (TOML)")

    sim = sub.add_parser("simulate", help="run the plant simulator's OPC-UA server and MQTT publishers")
    sim.add_argument(
        "--config", required=True, type=Path, help="line config whose endpoints and tags to serve"
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed (same seed, same plant; default 1)")
    sim.add_argument("--speed", type=float, default=60.0, help="plant seconds per wall second (default 60)")
    sim.add_argument(
        "--hours",
        type=float,
        default=None,
        help="stop after this much plant time (default: the scenario's, else never)",
    )
    sim.add_argument(
        "--scenario",
        default=None,
        help="scenario id (S0-S12, C1-C3: see `linegate scenarios`) or a scenario TOML file",
    )
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
    demo.add_argument("--scenario", default=None, help="simulator scenario (see `linegate scenarios`)")

    sub.add_parser("scenarios", help="list the simulator's scenarios and their pass criteria")

    check = sub.add_parser("check-config", help="validate a line config and exit (0 valid, 2 invalid)")
    check.add_argument("file", type=Path)

    certs = sub.add_parser("certs", help="list OPC-UA certificates, trust a rejected server certificate")
    where = certs.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="line config: the PKI directory of its OPC-UA drivers")
    where.add_argument("--pki-dir", type=Path, help="a PKI directory (own/, trusted/, rejected/)")
    certs.add_argument(
        "--driver", default=None, help="OPC-UA driver whose PKI to use (default: the only one)"
    )
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    certs_sub.add_parser("list", help="our certificate, trusted and rejected server certificates, expiry")
    trust = certs_sub.add_parser("trust", help="move a rejected server certificate to trusted")
    trust.add_argument("certificate", help="file name in rejected/, or a SHA-256 fingerprint (prefix)")

    browse = sub.add_parser(
        "browse", help="walk an OPC-UA server's address space; print a tag config snippet"
    )
    browse.add_argument("url", help="opc.tcp://HOST:PORT[/path]")
    browse.add_argument("--root", default="i=85", help="node to start from (default: the Objects folder)")
    browse.add_argument("--depth", type=int, default=6, help="how deep to walk (default 6)")
    browse.add_argument("--driver", default="plc", help="driver name written into the snippet")
    browse.add_argument(
        "--config", type=Path, default=None, help="line config whose driver security settings to connect with"
    )
    command = sub.add_parser(
        "command",
        help="send a setpoint command to a running gateway and wait for its result",
        description="Exit status: 0 accepted (or armed, or dry run), 3 rejected, 4 failed, "
        "5 no result in time or no broker, 2 bad config or arguments.",
    )
    command.add_argument("setpoint", help="setpoint name, e.g. shr.feed_rate_sp")
    command.add_argument("value", type=float, help="new value in the setpoint's unit")
    command.add_argument(
        "--config", required=True, type=Path, help="line config of the gateway (for its broker)"
    )
    command.add_argument(
        "--operator", default=os.environ.get("USER") or "operator", help="who issues it (default: $USER)"
    )
    command.add_argument(
        "--step", choices=["set", "arm", "execute"], default="set", help="arm/execute: critical setpoints"
    )
    command.add_argument(
        "--key-env", default=None, help="environment variable with your HMAC key (signs the command)"
    )
    command.add_argument("--request-id", default="", help="request id (default: a fresh random one)")
    command.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the result")
    status = sub.add_parser(
        "status",
        help="one-screen health of a running gateway, from its retained MQTT state",
        description="Exit status: 0 OK, 1 WARNING (a driver down, an alarm, a historian backlog), "
        "2 CRITICAL (offline, or not reporting), 3 UNKNOWN (no broker, nothing retained, bad config).",
    )
    status.add_argument(
        "--config", required=True, type=Path, help="line config of the gateway (for its broker)"
    )
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker's answer")
    return p


def _load(path: Path) -> object:
    """The config at `path`, or an exit code after printing every problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"linegate: invalid config {exc.path}:", file=sys.stderr)
        for key, reason in exc.problems:
            print(f"  {key}: {reason}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("certs", "browse"):
        return _opcua_tool(args)
    if args.command == "scenarios":
        from gateway import composition

        return composition.scenarios(sys.stdout)
    config = _load(args.config if args.command != "check-config" else args.file)
    if isinstance(config, int):
        return 3 if args.command == "status" else config
    assert isinstance(config, LineConfig)
    if args.command == "status":
        from gateway import composition

        composition.configure_logging(args.log_level, args.log_format)
        return composition.status(config, timeout_s=args.timeout, out=sys.stdout)
    if args.command == "command":
        from gateway import composition

        composition.configure_logging(args.log_level, args.log_format)
        return composition.command(
            config,
            setpoint=args.setpoint,
            value=args.value,
            operator=args.operator,
            step=args.step,
            key_env=args.key_env,
            request_id=args.request_id,
            timeout_s=args.timeout,
            out=sys.stdout,
        )
    if args.command == "check-config":
        print(
            f"{args.file}: OK: line {config.line.name}, {len(config.tags)} tags, "
            f"{len(config.drivers)} input drivers"
        )
        return 0

    _numba_cache_default()
    from gateway import composition  # the composition root pulls in the drivers

    composition.configure_logging(args.log_level, args.log_format)
    try:
        if args.command == "run":
            asyncio.run(composition.serve(config, args.config))
        elif args.command == "simulate":
            return asyncio.run(
                composition.simulate(
                    config,
                    seed=args.seed,
                    speed=args.speed,
                    hours=args.hours,
                    truth=args.truth,
                    start=args.start,
                    scenario=args.scenario,
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
                    scenario=args.scenario,
                )
            )
    except KeyboardInterrupt:
        return 130
    return 0


def _opcua_tool(args: argparse.Namespace) -> int:
    config: LineConfig | None = None
    if args.config is not None:
        loaded = _load(args.config)
        if isinstance(loaded, int):
            return loaded
        assert isinstance(loaded, LineConfig)
        config = loaded
    from gateway import composition

    composition.configure_logging(args.log_level, args.log_format)
    if args.command == "certs":
        return composition.certs(
            config,
            driver=args.driver,
            pki_dir=args.pki_dir,
            action=args.certs_command,
            certificate=getattr(args, "certificate", None),
            out=sys.stdout,
        )
    try:
        return asyncio.run(
            composition.browse(
                args.url, config=config, root=args.root, depth=args.depth, driver=args.driver, out=sys.stdout
            )
        )
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
