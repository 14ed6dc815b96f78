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
import dataclasses
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from gateway.config import RATE_UNITS, TOTAL_UNITS, LineConfig, OpcUaDriver
from simulators.mqtt_publisher import SimMqttPublisher
from simulators.opcua_server import SimOpcUaServer
from simulators.plant import SIGNALS, Plant, PlantParams
from simulators.scenario import NOMINAL, Scenario, ScenarioError
from simulators.sensors import SensorLayer
from simulators.truth import TruthRecorder

# Fixed default start so that runs are reproducible (same seed + start -> same truth file).
DEFAULT_START = datetime(2026, 1, 5, 6, 0, 0, tzinfo=UTC)
# Each shutdown step (comm faults, MQTT publisher, each OPC-UA server) gets this long.
SHUTDOWN_STEP_S = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TagBinding:
    """A config tag fed from a plant signal, times `factor` for the unit conversion."""

    tag: str
    signal: str
    factor: float


# A state or count: the plant leaves the unit empty, a config may write "1" (UNECE C62).
DIMENSIONLESS = frozenset({"", "1"})


def unit_factor(plant_unit: str, tag_unit: str) -> float:
    """Factor from a plant unit to a tag unit; raises ValueError if they are not convertible."""
    if plant_unit == tag_unit:
        return 1.0
    if {plant_unit, tag_unit} <= DIMENSIONLESS:
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


def _tag_values(
    bindings: list[TagBinding], measured: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for b in bindings:
        m = measured.get(b.signal)
        if m is not None:  # a sensor effect may drop a reading (dropout): then it is not published
            out[b.tag] = (m[0] * b.factor, m[1])
    return out


class BrokerControl(Protocol):
    """A broker the simulator may stop and start (comm.broker_stop): the demo's and tests' mosquitto."""

    def stop(self, *, keep_workdir: bool = ...) -> None: ...
    def start(self) -> object: ...


def _event_step(at_h: float, dt_s: float) -> int:
    return round(at_h * 3600.0 / dt_s)


def check_scenario(
    scenario: Scenario, plant_params: PlantParams | None, *, broker: BrokerControl | None
) -> None:
    """Apply every event to a scratch plant and sensor layer so a bad parameter fails before the run."""
    problems: list[str] = []
    scratch = Plant(plant_params, seed=0)
    layer = SensorLayer.default(seed=0)
    for i, e in enumerate(scenario.events):
        try:
            if e.target == "process":
                scratch.apply_event(e.kind, e.params)
            elif e.target == "sensor":
                layer.apply_event(e.kind, e.params, e.at_h * 3600.0)
            elif e.kind == "comm.broker_stop" and broker is None:
                raise ValueError("needs a broker the simulator controls (linegate demo, the tests)")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"events[{i}] ({e.kind} at {e.at_h} h): {exc}")
    if problems:
        raise ScenarioError(scenario.id, problems)


def plant_params_for(scenario: Scenario | None, base: PlantParams | None = None) -> PlantParams | None:
    """PlantParams with the scenario's [plant] overrides; a field PlantParams lacks is an error."""
    if scenario is None or not scenario.plant:
        return base
    try:
        return dataclasses.replace(base or PlantParams(), **scenario.plant)
    except TypeError as exc:
        raise ScenarioError(scenario.id, [f"plant: {exc}"]) from None


class ScenarioClock:
    """Steps the plant to a target step, stopping at each scenario event's exact step to apply it.

    Process events go to the plant, sensor events to the sensor layer, both recorded in the
    truth; comm events are handed to `on_comm` (the servers are not this class's business).
    Because events are tied to plant steps, a run's truth is the same at any speed.
    """

    def __init__(
        self,
        plant: Plant,
        sensors: SensorLayer,
        scenario: Scenario | None,
        *,
        t0_epoch: float,
        truth: TruthRecorder | None = None,
        on_comm: Callable[[str, float], None] | None = None,
    ) -> None:
        self.plant = plant
        self.sensors = sensors
        self.scenario = scenario
        self.truth = truth
        self.t0_epoch = t0_epoch
        self.on_comm = on_comm
        events = scenario.events if scenario is not None else []
        self.pending = deque((_event_step(e.at_h, plant.dt_s), e) for e in events)

    def _apply_due(self) -> None:
        plant = self.plant
        while self.pending and self.pending[0][0] == plant.steps:
            _, e = self.pending.popleft()
            if self.truth is not None:
                self.truth.event(plant, e.kind, e.params)
            log.info("scenario: %s %s at plant %.2f h", e.kind, e.params, plant.t_s / 3600)
            if e.target == "process":
                plant.apply_event(e.kind, e.params)
            elif e.target == "sensor":
                self.sensors.apply_event(e.kind, e.params, self.t0_epoch + plant.t_s)
            elif self.on_comm is not None:
                self.on_comm(e.kind, float(e.params["duration_s"]))

    def advance_to(self, target: int) -> None:
        plant = self.plant
        observer = self.truth.observe if self.truth is not None else None
        self._apply_due()
        while plant.steps < target:
            stop_at = min(target, self.pending[0][0]) if self.pending else target
            if stop_at > plant.steps:
                plant.advance(stop_at - plant.steps, observer)
            self._apply_due()


def run_offline(
    scenario: Scenario | None,
    *,
    seed: int,
    hours: float | None = None,
    truth_path: Path,
    start: datetime = DEFAULT_START,
    window_h: float = 4.0,
    plant_params: PlantParams | None = None,
    measure_every_s: float | None = None,
) -> Plant:
    """Run a scenario without servers, as fast as the model goes; writes the truth record.

    With `measure_every_s` the sensor layer is also driven at that plant-time cadence (its
    state evolves as it would when served), else only the plant and the truth run. Comm events
    are recorded but have nothing to act on.
    """
    params = plant_params_for(scenario, plant_params)
    if scenario is not None:
        check_scenario(scenario, params, broker=_NO_BROKER)
    plant = Plant(params, seed=seed)
    sensors = SensorLayer.default(seed=seed)
    hours = hours if hours is not None else (scenario.hours if scenario is not None else 24.0)
    total = round(hours * 3600.0 / plant.dt_s)
    with TruthRecorder(
        truth_path, plant, start=start, window_h=window_h, scenario=_scenario_header(scenario, plant)
    ) as truth:
        clock = ScenarioClock(plant, sensors, scenario, t0_epoch=start.timestamp(), truth=truth)
        every = total if measure_every_s is None else max(1, round(measure_every_s / plant.dt_s))
        while plant.steps < total:
            clock.advance_to(min(total, plant.steps + every))
            if measure_every_s is not None:
                sensors.measure_timed(plant.signals(), start.timestamp() + plant.t_s)
        truth.close(plant)
    return plant


class _NoBroker:
    """Stands in for a broker offline: there is nothing to stop."""

    def stop(self, *, keep_workdir: bool = False) -> None: ...
    def start(self) -> object:
        return None


_NO_BROKER = _NoBroker()


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
    scenario: Scenario | None = None,
    broker: BrokerControl | None = None,
    servers_out: list[SimOpcUaServer] | None = None,
) -> None:
    """Simulate the line until `hours` of plant time have passed, `stop` is set, or cancelled.

    `speed` is plant seconds per wall second. `ready` (if given) is set once the servers are
    up and the first values are published. The OPC-UA setpoints are served by the first
    OPC-UA driver of the config. A `scenario`'s events are applied at their exact plant step,
    whatever the speed, so the truth record does not depend on wall-clock timing; its comm
    events stop a server or publisher for `duration_s` wall seconds.
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
    plant_params = plant_params_for(scenario, plant_params)
    if scenario is not None:
        check_scenario(scenario, plant_params, broker=broker)
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
    if servers_out is not None:
        # For tests: the servers' own counters prove what a client did (or did not) write.
        servers_out.extend(servers)
    mqtt = SimMqttPublisher(config, known_signals=SIGNALS)
    by_driver = {
        name: [b for b in bindings if config.tags[config.tag_index(b.tag)].driver == name]
        for name in config.drivers
    }
    down: set[str] = set()  # "opcua", "mqtt", "broker" while a comm fault holds them down
    comm_tasks: set[asyncio.Task[None]] = set()

    async def publish() -> None:
        t_epoch = t0_epoch + plant.t_s
        measured = sensor_layer.measure_timed(plant.signals(), t_epoch)
        for server in servers:
            if server.running:
                await server.publish_timed(_tag_values(by_driver[server.driver_name], measured))
        if "mqtt" not in down:
            mqtt.publish_timed(_tag_values(bindings, measured))

    truth: TruthRecorder | None = None
    mqtt_task: asyncio.Task[None] | None = None

    def start_mqtt() -> asyncio.Task[None]:
        return asyncio.create_task(mqtt.run(), name="mqtt-sim")

    async def comm_fault(kind: str, duration_s: float) -> None:
        nonlocal mqtt_task
        log.warning("scenario: %s for %g s (wall)", kind, duration_s)
        if kind == "comm.opcua_stop":
            down.add("opcua")
            for server in servers:
                await server.stop()
            await asyncio.sleep(duration_s)
            for server in servers:
                await server.start()
            down.discard("opcua")
        elif kind == "comm.mqtt_stop":
            down.add("mqtt")
            if mqtt_task is not None:
                mqtt_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await mqtt_task
            await asyncio.sleep(duration_s)
            mqtt_task = start_mqtt()
            down.discard("mqtt")
        elif kind == "comm.broker_stop" and broker is not None:
            await asyncio.to_thread(broker.stop, keep_workdir=True)
            await asyncio.sleep(duration_s)
            await asyncio.to_thread(broker.start)
        log.warning("scenario: %s over", kind)

    def on_comm(kind: str, duration_s: float) -> None:
        task = asyncio.create_task(comm_fault(kind, duration_s))
        comm_tasks.add(task)
        task.add_done_callback(comm_tasks.discard)

    try:
        if truth_path is not None:
            truth = TruthRecorder(
                truth_path,
                plant,
                start=start,
                window_h=config.yield_.window_h,
                record_every_s=truth_record_every_s,
                scenario=_scenario_header(scenario, plant),
            )
        clock = ScenarioClock(plant, sensor_layer, scenario, t0_epoch=t0_epoch, truth=truth, on_comm=on_comm)
        for server in servers:
            await server.start()
        mqtt_task = start_mqtt()
        clock.advance_to(0)  # events at hour 0
        await publish()
        log.info(
            "simulator running: OPC-UA %s, MQTT %s, speed %gx, seed %d, plant start %s, scenario %s, truth %s",
            ", ".join(s.url for s in servers) or "-",
            ", ".join(mqtt.endpoints()) or "-",
            speed,
            seed,
            start.isoformat(),
            scenario.id if scenario else "-",
            truth_path or "-",
        )
        if ready is not None:
            ready.set()

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
                clock.advance_to(due)
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
        # Every step is bounded: a simulator asked to stop must stop, even if a client library
        # does not finish cancelling; what did not finish is named in the log.
        if truth is not None:
            truth.close(plant)
        for task in list(comm_tasks):
            task.cancel()
        await _bounded("scenario comm faults", *comm_tasks)
        if mqtt_task is not None:
            mqtt_task.cancel()
            await _bounded("MQTT publisher", mqtt_task)
        for server in servers:
            await _bounded(f"OPC-UA server {server.url}", asyncio.ensure_future(server.stop()))


async def _bounded(what: str, *tasks: asyncio.Future[object], timeout_s: float = SHUTDOWN_STEP_S) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    if pending:
        log.error("shutdown: %s did not finish within %g s; left behind", what, timeout_s)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("shutdown: %s: %r", what, task.exception())


def _scenario_header(scenario: Scenario | None, plant: Plant) -> dict[str, object]:
    s = scenario or NOMINAL
    factor = s.gateway.transport_delay_factor
    return {
        "id": s.id,
        "title": s.title,
        "criterion": s.criterion,
        "events": len(s.events),
        # What the gateway under test should be configured with (S8: a wrong delay on purpose).
        "gateway_transport_delay_min": plant.transport_delay_s * factor / 60.0,
    }


__all__ = [
    "DEFAULT_START",
    "BrokerControl",
    "TagBinding",
    "bind_tags",
    "check_scenario",
    "plant_params_for",
    "run_simulator",
    "unit_factor",
]
