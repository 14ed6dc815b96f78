"""The composition root: the one module of the core that may import drivers and simulators.

It turns a validated `LineConfig` into concrete drivers and a `Runtime`, and runs the
gateway, the simulator and the demo (which starts local services, the simulator as a child
process, and the gateway with a live terminal view).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TextIO

from drivers.command_client import Command, send_command
from drivers.influx_lines import InfluxLineEncoder, series_tags
from drivers.influx_output import InfluxOutputDriver
from drivers.mqtt_commands import MqttCommandChannel
from drivers.mqtt_input import MqttInputDriver
from drivers.mqtt_output import MqttOperatorOutput
from drivers.opcua_browse import browse_command
from drivers.opcua_input import OpcUaInputDriver
from drivers.opcua_security import certs_command, resolve_pki_dir
from drivers.opcua_writer import OpcUaSetpointWriter
from drivers.status_client import read_status
from gateway.audit_log import AuditLog
from gateway.commands import CommandLedger, CommandStep
from gateway.config import InfluxOutput, LineConfig, OpcUaDriver, load_config, parse_config
from gateway.control_service import GuardedControl
from gateway.dead_letter import DeadLetterFile
from gateway.durable_spool import DurableSpool, SpoolError, SpoolLimits
from gateway.errors import ConfigError, FatalDriverError, RetryableError
from gateway.interlock_monitor import InterlockMonitor
from gateway.log_format import JsonLineFormatter, RepeatFilter
from gateway.pipeline import YieldPipeline
from gateway.ports import BoundTag, InputDriver, PipelineUpdate, Service
from gateway.runtime import OutputBinding, Runtime
from gateway.self_metrics import BufferMetrics
from gateway.state_paths import state_dir
from gateway.status_report import Verdict, assess
from gateway.terminal_view import TerminalView
from simulators.local_config import localize_config_text
from simulators.local_services import LocalStack, free_port
from simulators.runner import run_simulator
from simulators.scenario import ScenarioError, available, load_scenario

log = logging.getLogger(__name__)

# Operator topics hold the latest state; a long backlog of superseded updates is worthless.
MQTT_OUTPUT_QUEUE = 1_000


@dataclass
class Carry:
    """What a config reload hands from the old runtime to the new one when it still fits."""

    pipeline: YieldPipeline | None = None
    encoder: InfluxLineEncoder | None = None


def _same_model(a: LineConfig, b: LineConfig) -> bool:
    """The pipeline's state means the same under both configs (tags, yield model, detectors)."""
    return (a.line, a.tags, a.yield_, a.detectors, a.kpis) == (b.line, b.tags, b.yield_, b.detectors, b.kpis)


def build_runtime(
    config: LineConfig, control: GuardedControl | None = None, carry: Carry | None = None
) -> Runtime:
    inputs: dict[InputDriver, list[int]] = {}
    for name, settings in config.drivers.items():
        tags = [BoundTag(i, t) for i, t in enumerate(config.tags) if t.driver == name]
        if not tags:
            log.warning("driver %s has no tags; not started", name)
            continue
        driver: InputDriver
        if settings.type == "opcua":
            driver = OpcUaInputDriver(name, settings, tags)
        else:
            driver = MqttInputDriver(name, settings, tags)
        inputs[driver] = [bt.index for bt in tags]
    outputs: list[OutputBinding] = []
    services: list[Service] = []
    if config.outputs.mqtt is not None:
        outputs.append(OutputBinding(MqttOperatorOutput(config.outputs.mqtt, config), MQTT_OUTPUT_QUEUE))
        if config.outputs.mqtt.commands:
            control = control or build_control(config)
            services.append(MqttCommandChannel(config.outputs.mqtt, config, control, CommandLedger()))
    carry = carry or Carry()
    if config.outputs.influxdb is not None:
        encoder = carry.encoder
        if encoder is None or encoder.series != series_tags(config):
            encoder = InfluxLineEncoder(config, config.outputs.influxdb.sequence_field)
        encoder.sequence_field = config.outputs.influxdb.sequence_field
        carry.encoder = encoder
        outputs.append(influx_binding(config, config.outputs.influxdb, encoder))
    runtime = Runtime(config, inputs, outputs, services=services, pipeline=carry.pipeline)
    if control is not None:
        runtime.add_listener(control.interlocks.observe)
        runtime.add_audit_source(control.drain_audit)
    return runtime


def influx_binding(config: LineConfig, influx: InfluxOutput, encoder: InfluxLineEncoder) -> OutputBinding:
    """The historian: the durable buffer on disk, the writer draining it, their metrics.
    `encoder` may come from before a reload: it remembers what each series last wrote.

    Raises `ConfigError` when the buffer file cannot be opened or is not a buffer."""
    path = influx.buffer_path if influx.buffer_path is not None else state_dir() / "influxdb-buffer.sqlite"
    limits = SpoolLimits(
        max_bytes=int(influx.buffer_max_mb * 2**20), max_age_s=influx.buffer_max_age_h * 3600.0
    )
    try:
        spool = DurableSpool[PipelineUpdate](path, encoder.encode, limits)
    except (SpoolError, OSError) as exc:
        raise ConfigError(str(path), [("outputs.influxdb.buffer_path", str(exc))]) from None
    dead = influx.dead_letter_path
    dead_letter = DeadLetterFile(
        dead if dead is not None else state_dir() / "influxdb-dead-letter.jsonl",
        int(influx.dead_letter_max_mb * 2**20),
    )
    driver = InfluxOutputDriver(influx, dead_letter)

    def metrics() -> BufferMetrics:
        st = spool.stats()
        return BufferMetrics(
            points=st.pending_points,
            bytes=st.pending_bytes,
            age_s=st.oldest_age_s,
            dropped_points=st.dropped_points,
            replayed_points=st.replayed_points,
            written_points=driver.written_points,
            rejected_points=driver.rejected_points,
            refused_points=st.refused_points,
        )

    return OutputBinding(driver, capacity=0, sink=spool, buffer_metrics=metrics)


def build_control(config: LineConfig) -> GuardedControl:
    """The command handler: guarded writes to the control driver's server (deny by default).

    Raises `ConfigError` when an operator's signing key is named but not in the environment:
    a gateway that would refuse that operator's every command should not start quietly.
    """
    c = config.control
    keys: dict[str, bytes] = {}
    missing: list[tuple[str, str]] = []
    for name, op in c.operators.items():
        if op.key_env is None:
            continue
        key = os.environ.get(op.key_env)
        if key:
            keys[name] = key.encode()
        elif c.enabled:
            missing.append(
                (f"control.operators.{name}.key_env", f"environment variable {op.key_env} is not set")
            )
    if missing:
        raise ConfigError("<environment>", missing)
    writer = None
    if c.enabled and c.driver is not None:
        settings = config.drivers[c.driver]
        assert isinstance(settings, OpcUaDriver)  # checked when the config loaded
        writer = OpcUaSetpointWriter(c.driver, settings)
    audit = AuditLog(c.audit_log if c.audit_log is not None else state_dir() / "audit.jsonl")
    return GuardedControl(c, writer, InterlockMonitor(config), audit, keys)


def _install_stop_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def serve(config: LineConfig, config_path: Path | None = None) -> None:
    """`linegate run`: until SIGTERM/SIGINT. SIGHUP (`systemctl reload`) re-reads `config_path`:
    an invalid file is refused with every problem logged and the running config stays; a valid
    one replaces the runtime. The durable buffer carries every accepted point over (the new
    runtime reopens it), and when the tags and the yield model are unchanged the pipeline, with
    its windows, is handed over too; otherwise the windows start again (the yield is UNCERTAIN
    until they are full, as after a restart)."""
    loop = asyncio.get_running_loop()
    carry = Carry()
    while True:
        control = (
            build_control(config)
            if config.outputs.mqtt is not None and config.outputs.mqtt.commands
            else None
        )
        runtime = build_runtime(config, control, carry)
        _install_stop_signals(runtime.stop)
        pending: list[LineConfig] = []
        loop.add_signal_handler(signal.SIGHUP, partial(_reload_requested, config_path, runtime, pending))
        try:
            await runtime.run()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if control is not None:
                await control.aclose()
        if not pending:
            return
        new = pending[-1]
        carry.pipeline = runtime.pipeline if _same_model(config, new) else None
        log.info(
            "config reloaded from %s: %d tags; %s",
            config_path,
            len(new.tags),
            "pipeline kept"
            if carry.pipeline is not None
            else "tags or yield model changed: the windows start again",
        )
        config = new


def _reload_requested(path: Path | None, runtime: Runtime, pending: list[LineConfig]) -> None:
    """SIGHUP: validate first; only a valid config stops the runtime for a new one."""
    if path is None:
        log.warning("SIGHUP: no config file to reload from; config unchanged")
        return
    try:
        new = load_config(path)
    except ConfigError as exc:
        problems = "; ".join(f"{key}: {reason}" for key, reason in exc.problems)
        log.error("SIGHUP: %s refused, still running on the previous config: %s", path, problems)
        runtime.notifier.status(f"reload refused: {problems}"[:200])
        return
    log.info("SIGHUP: %s is valid; reloading", path)
    pending.append(new)
    runtime.stop(reloading=True)


async def simulate(
    config: LineConfig,
    *,
    seed: int,
    speed: float,
    hours: float | None,
    truth: Path | None,
    start: datetime,
    scenario: str | None = None,
) -> int:
    """`linegate simulate`: 0 when the run ends (hours reached or stopped), 2 on a bad scenario."""
    try:
        chosen = load_scenario(scenario) if scenario is not None else None
        if hours is None and chosen is not None:
            hours = chosen.hours
        stop = asyncio.Event()
        _install_stop_signals(stop.set)
        await run_simulator(
            config,
            seed=seed,
            speed=speed,
            hours=hours,
            truth_path=truth,
            start=start,
            stop=stop,
            scenario=chosen,
        )
    except ScenarioError as exc:
        print(f"linegate simulate: invalid scenario {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    return 0


def scenarios(out: TextIO) -> int:
    """`linegate scenarios`: the scenario files shipped with the simulator."""
    for s in available():
        print(f"{s.id:4} {s.hours:5g} h  {s.title}", file=out)
        if s.criterion:
            print(f"{'':13}pass: {s.criterion}", file=out)
    return 0


async def _watch_child(proc: asyncio.subprocess.Process, runtime: Runtime) -> None:
    code = await proc.wait()
    log.error("simulator exited with code %s; stopping the demo", code)
    runtime.stop()


async def demo(
    config_text: str,
    *,
    minutes: float | None,
    speed: float,
    seed: int,
    out: TextIO,
    scenario: str | None = None,
) -> None:
    """Local services + simulator (child process) + gateway with a live view, until stopped."""
    workdir = Path(tempfile.mkdtemp(prefix="linegate-demo-"))
    # The live view owns the terminal: the gateway's log goes to a file beside the others.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(workdir / "gateway.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)
    out.write(f"linegate demo: starting mosquitto, InfluxDB and its v2 proxy in {workdir}\n")
    stack = LocalStack()
    await asyncio.to_thread(stack.start)
    proc: asyncio.subprocess.Process | None = None
    try:
        text = localize_config_text(
            config_text,
            opcua_port=free_port(),
            mqtt_port=stack.mosquitto.port,
            influx_url=stack.proxy.url,
            state_dir=workdir,
            speed=speed,
        )
        local = workdir / "line.toml"
        await asyncio.to_thread(local.write_text, text, encoding="utf-8")
        config = parse_config(tomllib.loads(text), str(local))
        truth = workdir / "truth.jsonl"
        start = datetime.now(UTC).replace(microsecond=0)
        cmd = [sys.executable, "-m", "gateway.cli", "simulate", "--config", str(local), "--speed", str(speed)]
        cmd += ["--seed", str(seed), "--truth", str(truth), "--start", start.isoformat()]
        if scenario is not None:
            cmd += ["--scenario", scenario]
        sim_log = await asyncio.to_thread((workdir / "simulator.log").open, "wb")
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=sim_log, stderr=asyncio.subprocess.STDOUT)
        sim_log.close()  # the child holds its own descriptor
        out.write(f"simulator: pid {proc.pid}, {speed:g}x plant time, log {workdir / 'simulator.log'}\n")
        runtime = build_runtime(config)
        _install_stop_signals(runtime.stop)
        view = TerminalView(config, runtime, out, truth_path=truth)
        runtime.add_listener(view.on_update)
        watcher = asyncio.create_task(_watch_child(proc, runtime))
        timer = asyncio.create_task(_stop_after(runtime, minutes))
        try:
            await runtime.run()
        finally:
            watcher.cancel()
            timer.cancel()
            view.close()
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        await asyncio.to_thread(stack.stop)
        out.write(f"demo stopped; files kept in {workdir}\n")


async def _stop_after(runtime: Runtime, minutes: float | None) -> None:
    if minutes is None:
        return
    await asyncio.sleep(minutes * 60)  # the demo's own duration, not synchronisation
    runtime.stop()


def _opcua_settings(config: LineConfig | None, driver: str | None) -> tuple[str, OpcUaDriver] | None:
    """The named (or only) OPC-UA driver of `config`; raises ValueError when that is ambiguous."""
    if config is None:
        return None
    found = {n: d for n, d in config.drivers.items() if isinstance(d, OpcUaDriver)}
    if driver is not None:
        if driver not in found:
            raise ValueError(f"no OPC-UA driver named {driver!r} in the config (have {sorted(found)})")
        return driver, found[driver]
    if len(found) != 1:
        raise ValueError(
            f"the config has {len(found)} OPC-UA drivers {sorted(found)}: name one with --driver"
        )
    name = next(iter(found))
    return name, found[name]


def certs(
    config: LineConfig | None,
    *,
    driver: str | None,
    pki_dir: Path | None,
    action: str,
    certificate: str | None,
    out: TextIO,
) -> int:
    """`linegate certs list|trust`: exit 0 on success, 1 on a refused action, 2 on bad usage."""
    try:
        chosen = _opcua_settings(config, driver)
    except ValueError as exc:
        print(f"linegate certs: {exc}", file=sys.stderr)
        return 2
    security = chosen[1].security if chosen else None
    return certs_command(
        pki_dir if pki_dir is not None else resolve_pki_dir(security),
        action=action,
        certificate=certificate,
        expiry_warning_days=security.expiry_warning_days if security else 30,
        out=out,
    )


async def browse(
    url: str, *, config: LineConfig | None, root: str, depth: int, driver: str, out: TextIO
) -> int:
    """`linegate browse URL`: print a tag config snippet for the variables found under `root`."""
    try:
        # --driver names the snippet's driver; it also picks the config's driver when it has one by that name.
        chosen = _opcua_settings(config, driver if config is not None and driver in config.drivers else None)
    except ValueError as exc:
        print(f"linegate browse: {exc}", file=sys.stderr)
        return 2
    return await browse_command(
        url, security=chosen[1].security if chosen else None, root=root, depth=depth, driver=driver, out=out
    )


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Logs to stderr (journald under systemd): JSON lines when `fmt` is json, or auto and not
    on a terminal; human text on a terminal. Repeating faults are rate-limited either way."""
    journald = "JOURNAL_STREAM" in os.environ
    as_json = fmt == "json" or (fmt == "auto" and (journald or not sys.stderr.isatty()))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLineFormatter(journald_prefix=journald)
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    # asyncua logs every reconnect attempt at INFO/WARNING with tracebacks; ours say it once.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))


# Exit codes of `linegate command`, by result status.
COMMAND_EXIT = {"accepted": 0, "armed": 0, "dry_run": 0, "rejected": 3, "failed": 4}


def command(
    config: LineConfig,
    *,
    setpoint: str,
    value: float,
    operator: str,
    step: str,
    key_env: str | None,
    request_id: str,
    timeout_s: float,
    out: TextIO,
) -> int:
    """`linegate command`: send one command, print its result; exit code from its status."""
    key = None
    if key_env is not None:
        raw = os.environ.get(key_env)
        if not raw:
            print(f"linegate command: environment variable {key_env} is not set", file=sys.stderr)
            return 2
        key = raw.encode()
    cmd = Command(setpoint, value, operator, CommandStep(step), request_id)
    try:
        result = asyncio.run(send_command(config, cmd, key=key, timeout_s=timeout_s))
    except TimeoutError:
        print(
            f"linegate command: no result within {timeout_s:g} s (is the gateway running?)", file=sys.stderr
        )
        return 5
    except (RetryableError, FatalDriverError, ValueError) as exc:
        print(f"linegate command: {exc}", file=sys.stderr)
        return 5
    print(json.dumps(result, indent=2), file=out)
    return COMMAND_EXIT.get(str(result.get("status")), 4)


def status(config: LineConfig, *, timeout_s: float, out: TextIO) -> int:
    """`linegate status`: the gateway's health from its retained MQTT state; a monitoring exit code."""
    try:
        snap = asyncio.run(read_status(config, timeout_s=timeout_s))
    except (RetryableError, FatalDriverError, ValueError) as exc:
        print(f"linegate status: UNKNOWN: {exc}", file=out)
        return int(Verdict.UNKNOWN)
    verdict, lines = assess(
        snap, now=time.time(), metrics_interval_s=config.runtime.metrics_interval_s, line=config.line.name
    )
    out.write("\n".join(lines) + "\n")
    return int(verdict)
