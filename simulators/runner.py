"""Runs the plant in accelerated plant time and serves it over OPC-UA and MQTT.

Wall-clock cadence: every 1/publish_hz wall seconds the plant advances speed/publish_hz plant
seconds (in steps of dt) and the measured signals are published once, so the write load on the
servers does not grow with the speed. Tick targets are computed from the start (no drift); if
the model cannot keep up it says so once and runs flat out, without skipping plant time.

Tag binding: each config tag names a plant signal; values are converted from the plant's unit
to the tag's unit when both are mass totals or mass rates (t <-> kg, t/h <-> kg/h ...). A tag
the plant does not know, or a unit it cannot convert, is an error before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config import RATE_UNITS, TOTAL_UNITS, LineConfig, OpcUaDriver
from simulators.mqtt_publisher import SimMqttPublisher
from simulators.opcua_server import SimOpcUaServer
from simulators.plant import SIGNALS, Plant, PlantParams
from simulators.sensors import SensorLayer
from simulators.truth import TruthRecorder

# Fixed default start so that runs are reproducible (same seed + start -> same truth file).
DEFAULT_START = datetime(2026, 1, 5, 6, 0, 0, tzinfo=UTC)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TagBinding:
    """A config tag fed from a plant signal, times `factor` for the unit conversion."""

    tag: str
    signal: str
    factor: float


def unit_factor(plant_unit: str, tag_unit: str) -> float:
    """Factor from a plant unit to a tag unit; raises ValueError if they are not convertible."""
    if plant_unit == tag_unit:
        return 1.0
    for table in (TOTAL_UNITS, RATE_UNITS):
        if plant_unit in table and tag_unit in table:
            return table[plant_unit] / table[tag_unit]
    raise ValueError(f"cannot convert {plant_unit!r} to {tag_unit!r}")


def bind_tags(config: LineConfig) -> list[TagBinding]:
    """One binding per config tag; raises ValueError naming every tag the plant cannot serve."""
    bindings: list[TagBinding] = []
    problems: list[str] = []
    for tag in config.tags:
        info = SIGNALS.get(tag.name)
        if info is None:
            problems.append(f"{tag.name}: the simulator has no such signal")
            continue
        try:
            bindings.append(TagBinding(tag.name, tag.name, unit_factor(info.unit, tag.unit)))
        except ValueError as exc:
            problems.append(f"{tag.name}: {exc}")
    if problems:
        raise ValueError(
            "config tags the simulator cannot serve:\n  "
            + "\n  ".join(problems)
            + f"\nknown signals: {sorted(SIGNALS)}"
        )
    return bindings


def _tag_values(bindings: list[TagBinding], measured: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in bindings:
        v = measured.get(b.signal)
        if v is not None:  # a sensor effect may drop a reading (dropout): then it is not published
            out[b.tag] = v * b.factor
    return out


async def run_simulator(
    config: LineConfig,
    *,
    seed: int,
    speed: float,
    hours: float | None,
    truth_path: Path | None,
    start: datetime = DEFAULT_START,
    publish_hz: float = 10.0,
    stop: asyncio.Event | None = None,
    plant_params: PlantParams | None = None,
    sensors: SensorLayer | None = None,
    truth_record_every_s: float = 60.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Simulate the line until `hours` of plant time have passed, `stop` is set, or cancelled.

    `speed` is plant seconds per wall second. `ready` (if given) is set once the servers are
    up and the first values are published. The OPC-UA setpoints are served by the first
    OPC-UA driver of the config.
    """
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError("speed must be a positive number")
    if not publish_hz > 0:
        raise ValueError("publish_hz must be positive")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if hours is not None and hours < 0:
        raise ValueError("hours must be >= 0")

    bindings = bind_tags(config)
    plant = Plant(plant_params, seed=seed)
    sensor_layer = sensors if sensors is not None else SensorLayer.default(seed=seed)
    t0_epoch = start.timestamp()
    steps_per_tick = speed / publish_hz / plant.dt_s
    total_steps = None if hours is None else round(hours * 3600.0 / plant.dt_s)

    opcua_drivers = [n for n, d in config.drivers.items() if isinstance(d, OpcUaDriver)]
    servers: list[SimOpcUaServer] = []
    for i, name in enumerate(opcua_drivers):
        with_setpoints = i == 0
        servers.append(
            SimOpcUaServer(
                config,
                name,
                known_signals=SIGNALS,
                setpoints=plant.setpoint_specs if with_setpoints else None,
                initial_setpoints=plant.setpoints() if with_setpoints else None,
                on_setpoint=plant.set_setpoint if with_setpoints else None,
                initial_time=start,
                # Like many PLCs: a write must carry the bare value, no timestamps.
                refuse_write_timestamps=True,
            )
        )
    mqtt = SimMqttPublisher(config, known_signals=SIGNALS)
    by_driver = {
        name: [b for b in bindings if config.tags[config.tag_index(b.tag)].driver == name]
        for name in config.drivers
    }

    async def publish() -> None:
        t_epoch = t0_epoch + plant.t_s
        measured = sensor_layer.measure(plant.signals(), t_epoch)
        t_dt = start + timedelta(seconds=plant.t_s)
        for server in servers:
            await server.publish(_tag_values(by_driver[server.driver_name], measured), t_dt)
        mqtt.publish(_tag_values(bindings, measured), t_epoch)

    truth: TruthRecorder | None = None
    mqtt_task: asyncio.Task[None] | None = None
    try:
        if truth_path is not None:
            truth = TruthRecorder(
                truth_path,
                plant,
                start=start,
                window_h=config.yield_.window_h,
                record_every_s=truth_record_every_s,
            )
        for server in servers:
            await server.start()
        mqtt_task = asyncio.create_task(mqtt.run(), name="mqtt-sim")
        await publish()
        log.info(
            "simulator running: OPC-UA %s, MQTT %s, speed %gx, seed %d, plant start %s, truth %s",
            ", ".join(s.url for s in servers) or "-",
            ", ".join(mqtt.endpoints()) or "-",
            speed,
            seed,
            start.isoformat(),
            truth_path or "-",
        )
        if ready is not None:
            ready.set()

        observer = truth.observe if truth is not None else None
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        behind_logged = False
        tick = 0
        while total_steps is None or plant.steps < total_steps:
            if stop is not None and stop.is_set():
                break
            tick += 1
            due = math.floor(tick * steps_per_tick + 1e-9)
            if total_steps is not None:
                due = min(due, total_steps)
            if due > plant.steps:
                plant.advance(due - plant.steps, observer)
                await publish()
            delay = wall0 + tick / publish_hz - loop.time()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    # Pacing, not synchronisation: wake early only if asked to stop.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                if not behind_logged and -delay > max(1.0, 2.0 / publish_hz):
                    log.warning(
                        "simulator cannot keep up with %gx (%.1f s behind): running at full speed",
                        speed,
                        -delay,
                    )
                    behind_logged = True
                await asyncio.sleep(0)  # let the servers answer clients between ticks
        log.info("simulator stopped at plant time %s", (start + timedelta(seconds=plant.t_s)).isoformat())
    finally:
        if mqtt_task is not None:
            mqtt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mqtt_task
        for server in servers:
            await server.stop()
        if truth is not None:
            truth.close()


__all__ = ["DEFAULT_START", "TagBinding", "bind_tags", "run_simulator", "unit_factor"]
