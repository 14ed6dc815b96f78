"""The runtime: wires drivers -> bus -> pipeline -> outputs, and supervises all of it.

Retry with backoff and jitter, connection state and counters live here once, not in every
driver. A driver that raises `RetryableError` is restarted after a backoff; one that raises
`FatalDriverError` is stopped and its tags go STALE, while the rest keeps running. The pipeline
ticks on the wall clock; it works in plant time (source timestamps) inside.

Shutdown (`stop()`, wired to SIGINT/SIGTERM by the CLI): the last samples are ticked through,
outputs get a bounded time to drain their queues, then every task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from gateway.alarms import AlarmBoard, Severity, alarm_id
from gateway.bus import SampleBus
from gateway.config import LineConfig
from gateway.errors import FatalDriverError, RetryableError
from gateway.output_queue import OutputQueue
from gateway.pipeline import YieldPipeline
from gateway.ports import InputDriver, OutputDriver, PipelineUpdate, Service, UpdateSink
from gateway.samples import Quality, stale_mark_time
from gateway.self_metrics import BufferMetrics, CpuMeter, DriverMetrics, GatewayMetrics, rss_mb
from gateway.service_notifier import ServiceNotifier, watchdog_loop
from gateway.silence_watch import SilenceWatch

log = logging.getLogger(__name__)


@dataclass
class DriverHealth:
    name: str
    kind: str  # "input" or "output"
    connected: bool = False
    ever_connected: bool = False
    connects: int = 0
    failures: int = 0
    fatal: str | None = None
    last_error: str | None = None


@dataclass
class OutputBinding:
    driver: OutputDriver
    capacity: int  # of the in-memory queue, when no `sink` is given
    weight: Callable[[PipelineUpdate], int] = field(default=lambda _u: 1)
    # A durable buffer instead of the in-memory queue (the historian's), with its metrics.
    sink: UpdateSink | None = None
    buffer_metrics: Callable[[], BufferMetrics] | None = None


# A buffer that dropped or refused points keeps its alarm up this long after the last one.
BUFFER_ALARM_HOLD_S = 600.0


class _DropWatch:
    """Per buffer: has a lifetime counter grown within the last BUFFER_ALARM_HOLD_S?"""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._grew_at: dict[str, float] = {}

    def changed(self, name: str, count: int, now: float) -> bool:
        last = self._last.setdefault(name, count)  # counts from before this process: not news
        if count > last:
            self._last[name] = count
            self._grew_at[name] = now
        return now - self._grew_at.get(name, -math.inf) < BUFFER_ALARM_HOLD_S


class _DriverSink:
    """The sink one input driver sees: puts go to the bus; stale marks use the pipeline's last time."""

    def __init__(self, bus: SampleBus, pipeline: YieldPipeline, own_tags: Sequence[int]) -> None:
        self._bus = bus
        self._pipeline = pipeline
        self._own = frozenset(own_tags)
        self.put = bus.put

    def mark_stale(self, tags: Sequence[int]) -> None:
        for k in tags:
            if k not in self._own:
                continue
            t = self._pipeline.last_t[k]
            if math.isfinite(t):
                self._bus.put(k, stale_mark_time(float(t)), math.nan, Quality.STALE)


class Runtime:
    def __init__(
        self,
        config: LineConfig,
        inputs: dict[InputDriver, list[int]],
        outputs: list[OutputBinding],
        notifier: ServiceNotifier | None = None,
        services: list[Service] | None = None,
        pipeline: YieldPipeline | None = None,
    ) -> None:
        self.config = config
        self.bus = SampleBus(config.runtime.bus_capacity)
        # A reload that leaves the tags and the yield model alone hands over the running pipeline,
        # so its windows do not start from empty.
        self.pipeline = pipeline if pipeline is not None else YieldPipeline(config)
        self.silence = SilenceWatch(config)
        self.inputs = inputs
        self.outputs = outputs
        self.services = services or []
        self.queues: list[UpdateSink] = [
            b.sink if b.sink is not None else OutputQueue[PipelineUpdate](b.capacity) for b in outputs
        ]
        self.notifier = notifier or ServiceNotifier()
        self.health: dict[str, DriverHealth] = {}
        self.alarms = AlarmBoard()
        self.latest: PipelineUpdate | None = None
        self.last_tick_monotonic = 0.0
        self.tick_seconds = 0.0
        self.tick_errors = 0
        self.samples_in = 0
        self.latency_s = math.nan  # median source-to-tick latency of the last tick with samples
        self.pipeline_s = math.nan  # the pipeline's share of the last tick
        self.samples_out = 0
        self._cpu = CpuMeter()
        self._next_metrics_at = 0.0  # monotonic
        self._buffer_drops = _DropWatch()
        self._buffer_refusals = _DropWatch()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._reloading = False
        self._input_tasks: list[asyncio.Task[None]] = []
        self._output_tasks: list[asyncio.Task[None]] = []
        self._service_tasks: list[asyncio.Task[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[PipelineUpdate], None]] = []
        self._audit_sources: list[Callable[[], list[dict[str, Any]]]] = []

    def add_audit_source(self, source: Callable[[], list[dict[str, Any]]]) -> None:
        """Each tick, `source()`'s control audit records ride on the update to the outputs."""
        self._audit_sources.append(source)

    def add_listener(self, listener: Callable[[PipelineUpdate], None]) -> None:
        """Call `listener` with every tick's update (the demo's terminal view uses this)."""
        self._listeners.append(listener)

    def stop(self, *, reloading: bool = False) -> None:
        """End `run`; `reloading`: a new runtime takes over (systemd hears RELOADING=1, not
        STOPPING=1, and READY=1 again from the new one)."""
        self._reloading = reloading
        self._stop.set()

    def is_healthy(self) -> bool:
        """True while the pipeline ticks and every supervisor task is alive (the watchdog's test)."""
        tick_age = time.monotonic() - self.last_tick_monotonic
        ticking = tick_age < max(2.0, 5 * self.config.runtime.tick_ms / 1000)
        tasks = [*self._input_tasks, *self._output_tasks, *self._service_tasks, self._ticker]
        return ticking and all(t is not None and not t.done() for t in tasks)

    async def run(self) -> None:
        """Run until `stop()`; then drain outputs (bounded) and cancel everything."""
        self.notifier.status("compiling pipeline kernels")
        await asyncio.to_thread(self.pipeline.warm_up)
        self.notifier.status("connecting drivers")
        for driver in self.inputs:
            self.health[driver.name] = DriverHealth(driver.name, "input")
        for binding in self.outputs:
            self.health[binding.driver.name] = DriverHealth(binding.driver.name, "output")
        for service in self.services:
            self.health[service.name] = DriverHealth(service.name, "service")
        for driver, tags in self.inputs.items():
            sink = _DriverSink(self.bus, self.pipeline, tags)
            self._input_tasks.append(asyncio.create_task(self._supervise_input(driver, sink, tags)))
        for binding, queue in zip(self.outputs, self.queues, strict=True):
            self._output_tasks.append(asyncio.create_task(self._supervise_output(binding.driver, queue)))
        for service in self.services:
            h = self.health[service.name]
            attempt = partial(service.run, partial(self._driver_connected, h))
            self._service_tasks.append(asyncio.create_task(self._supervise(h, attempt, lambda: None)))
        self._ticker = asyncio.create_task(self._tick_loop())
        watchdog = asyncio.create_task(watchdog_loop(self.notifier, self.is_healthy, self._stop))
        try:
            await self._stop.wait()
        finally:
            if self._reloading:
                self.notifier.reloading()
            else:
                self.notifier.stopping()
            await self._shutdown()
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _shutdown(self, drain_timeout_s: float = 10.0) -> None:
        assert self._ticker is not None
        inputs_and_ticker = [*self._input_tasks, *self._service_tasks, self._ticker]
        for task in inputs_and_ticker:
            task.cancel()
        await asyncio.gather(*inputs_and_ticker, return_exceptions=True)
        try:
            self._tick_once()  # whatever the inputs put last still reaches the outputs
        except Exception:
            # A dead pipeline must not turn the stop into a crash: the outputs still drain.
            log.exception("the last tick at shutdown failed")
        deadline = time.monotonic() + drain_timeout_s
        while any(len(q) for q in self.queues) and time.monotonic() < deadline:
            if not any(h.connected for h in self.health.values() if h.kind == "output"):
                break
            await asyncio.sleep(0.05)  # polling queue lengths; outputs signal nothing on drain
        left = sum(len(q) for q in self.queues if isinstance(q, OutputQueue))
        if left:
            log.warning("shutdown: %d updates not delivered to outputs", left)
        kept = sum(len(q) for q in self.queues if not isinstance(q, OutputQueue))
        if kept:
            log.info("shutdown: %d updates kept in the durable buffer for the next start", kept)
        for task in self._output_tasks:
            task.cancel()
        await asyncio.gather(*self._output_tasks, return_exceptions=True)
        for queue in self.queues:
            close = getattr(queue, "close", None)
            if close is not None:  # a durable buffer: its file and lock, for the next runtime
                close()

    def _driver_connected(self, h: DriverHealth) -> None:
        h.connected = h.ever_connected = True
        h.connects += 1
        h.failures = 0
        log.info("%s %s connected", h.kind, h.name)
        waiting = [x.name for x in self.health.values() if not x.connected]
        if self.ready.is_set():
            return
        if waiting:
            self.notifier.status(f"waiting for {', '.join(waiting)}")
            return
        # READY only once every driver has connected (and the kernels were compiled before).
        self.ready.set()
        self.notifier.ready(f"running: {len(self.config.tags)} tags, {len(self.inputs)} inputs")
        log.info("ready: all drivers connected")

    def _backoff(self, failures: int) -> float:
        rt = self.config.runtime
        base = min(rt.backoff_max_s, rt.backoff_initial_s * 2 ** max(0, failures - 1))
        return base * random.uniform(0.8, 1.2)

    async def _supervise_input(self, driver: InputDriver, sink: _DriverSink, tags: list[int]) -> None:
        h = self.health[driver.name]
        await self._supervise(
            h, lambda: driver.run(sink, lambda: self._driver_connected(h)), lambda: sink.mark_stale(tags)
        )

    async def _supervise_output(self, driver: OutputDriver, queue: UpdateSink) -> None:
        h = self.health[driver.name]
        await self._supervise(h, lambda: driver.run(queue, lambda: self._driver_connected(h)), lambda: None)

    async def _supervise(
        self, h: DriverHealth, attempt: Callable[[], Awaitable[None]], on_down: Callable[[], None]
    ) -> None:
        """Run a driver's `run` again and again: backoff on RetryableError (and on a driver bug,
        logged with its traceback, so one faulty driver never takes the gateway down); stop
        that driver for good on FatalDriverError."""
        while True:
            try:
                await attempt()
                raise RetryableError("run() returned")
            except RetryableError as exc:
                h.last_error = str(exc)
                log.warning("%s %s: %s", h.kind, h.name, exc)
            except FatalDriverError as exc:
                h.connected = False
                h.fatal = h.last_error = str(exc)
                on_down()
                log.error("%s %s stopped: %s", h.kind, h.name, exc)
                # Stay alive (the watchdog counts supervisors): a restart cannot fix this.
                await self._stop.wait()
                return
            except Exception as exc:
                h.last_error = f"internal error: {exc!r}"
                log.exception("%s %s failed unexpectedly; restarting it", h.kind, h.name)
            h.connected = False
            h.failures += 1
            on_down()
            delay = self._backoff(h.failures)
            log.info("%s %s: retry %d in %.1f s", h.kind, h.name, h.failures, delay)
            await asyncio.sleep(delay)

    def _alarm_conditions(self, update: PipelineUpdate) -> dict[str, tuple[str, str, Severity, str]]:
        conditions = self.pipeline.alarm_conditions(update.yield_rolling)
        for h in self.health.values():
            # Only a driver that was up and went down (or was stopped) is an alarm; one still
            # connecting at start is reported through the service status instead.
            if h.fatal is not None or (h.ever_connected and not h.connected):
                text = f"{h.kind} driver {h.name} down: {h.fatal or h.last_error or 'connection lost'}"
                conditions[alarm_id("driver_down", h.name)] = ("driver_down", h.name, Severity.ALARM, text)
        conditions.update(self._buffer_conditions())
        return conditions

    def _buffer_metrics(self) -> list[tuple[str, BufferMetrics]]:
        return [(b.driver.name, b.buffer_metrics()) for b in self.outputs if b.buffer_metrics is not None]

    def _buffer_conditions(self) -> dict[str, tuple[str, str, Severity, str]]:
        """A durable buffer that dropped (caps) or could not store (disk) points lately."""
        out: dict[str, tuple[str, str, Severity, str]] = {}
        now = time.monotonic()
        for name, m in self._buffer_metrics():
            if self._buffer_drops.changed(name, m.dropped_points, now):
                text = (
                    f"{name} buffer full: oldest points dropped ({m.dropped_points} so far); the historian "
                    f"has been unreachable for {m.age_s / 3600:.1f} h or the buffer cap is too small"
                )
                out[alarm_id("buffer_dropped", name)] = ("buffer_dropped", name, Severity.ALARM, text)
            if self._buffer_refusals.changed(name, m.refused_points, now):
                text = (
                    f"{name} buffer cannot store points ({m.refused_points} refused): disk full or failing?"
                )
                out[alarm_id("buffer_refused", name)] = ("buffer_refused", name, Severity.ALARM, text)
        return out

    def _metrics(self, t: float, tick_s: float) -> GatewayMetrics:
        buffers = [m for _, m in self._buffer_metrics()]
        return GatewayMetrics(
            t=t,
            tick_ms=tick_s * 1000.0,
            tick_errors=self.tick_errors,
            samples_in=self.samples_in,
            latency_ms=self.latency_s * 1000.0,
            pipeline_ms=self.pipeline_s * 1000.0,
            samples_out=self.samples_out,
            dropped_bus=self.bus.dropped_oldest,
            dropped_out_of_order=int(self.pipeline.counters[:, 2].sum()),
            rejected_range=int(self.pipeline.counters[:, 1].sum()),
            bus_depth=len(self.bus),
            queue_depths={b.driver.name: len(q) for b, q in zip(self.outputs, self.queues, strict=True)},
            queue_dropped={
                b.driver.name: int(getattr(q, "dropped_items", 0))
                for b, q in zip(self.outputs, self.queues, strict=True)
            },
            alarms_active=len(self.alarms.active),
            cpu_percent=self._cpu.percent(),
            rss_mb=rss_mb(),
            buffer=buffers[0] if buffers else BufferMetrics(),
            drivers=[
                DriverMetrics(h.name, h.kind, h.connected, h.connects, h.failures)
                for h in self.health.values()
            ],
        )

    def _tick_once(self) -> None:
        started = time.perf_counter()
        batch = self.bus.drain()
        self.samples_in += len(batch)
        now = time.monotonic()
        self.silence.observe(batch, now)
        # Arrival is the wall clock: the clock-skew check compares it with source timestamps.
        arrival = time.time()
        if len(batch):
            # Source timestamp to this tick: the gateway's share of the end-to-end latency (it
            # includes the source's clock offset; meaningless when plant time runs faster).
            self.latency_s = float(np.median(arrival - batch.t))
        computed = time.perf_counter()
        update = self.pipeline.tick(batch, arrival=arrival)
        self.pipeline_s = time.perf_counter() - computed
        self.samples_out += len(update.samples)
        for k in self.silence.overdue(now, self.pipeline.last_quality):
            # Goes through the bus like a driver's mark, so it reaches the outputs next tick.
            log.warning(
                "tag %s: no update for %.0f s; flagged stale",
                self.config.tags[k].name,
                self.silence.stale_after[k],
            )
            self.bus.put(int(k), stale_mark_time(float(self.pipeline.last_t[k])), math.nan, Quality.STALE)
        t = update.t_plant if math.isfinite(update.t_plant) else time.time()
        events = self.alarms.update(self._alarm_conditions(update), t)
        audit = [rec for source in self._audit_sources for rec in source()]
        metrics = None
        if now >= self._next_metrics_at:
            self._next_metrics_at = now + self.config.runtime.metrics_interval_s
            metrics = self._metrics(time.time(), self.tick_seconds)
        update = replace(
            update,
            alarm_events=events,
            active_alarms=list(self.alarms.active.values()),
            control_audit=audit,
            metrics=metrics,
        )
        for binding, queue in zip(self.outputs, self.queues, strict=True):
            queue.put(update, binding.weight(update))
        self.latest = update
        self.tick_seconds = time.perf_counter() - started
        self.last_tick_monotonic = time.monotonic()
        for listener in self._listeners:
            listener(update)

    async def _tick_loop(self) -> None:
        period = self.config.runtime.tick_ms / 1000
        next_at = time.monotonic()
        while True:
            try:
                self._tick_once()
            except Exception:
                # A bug in one figure must not stop the data: log it and tick on. A tick that
                # fails leaves last_tick_monotonic behind, so ticks that keep failing stop the
                # watchdog's pings and systemd restarts the gateway.
                self.tick_errors += 1
                log.exception("pipeline tick failed (%d so far)", self.tick_errors)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks instead of bursting
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)
