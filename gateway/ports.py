"""Contracts between the core and the drivers: what an input or output driver must do.

The runtime owns retry, backoff, counters and health. A driver's `run` connects, calls
`on_connected()` once it is ready, then works until it is cancelled or its peer goes away, in
which case it raises `RetryableError` (or `FatalDriverError` when retrying cannot help). The
runtime calls `run` again after a backoff; the driver object, and any state it keeps (latest
values to republish, for instance), lives across those calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import numpy as np

from gateway.alarms import Alarm, AlarmEvent
from gateway.config import Tag
from gateway.kpis import KpiFigures
from gateway.samples import Quality, SampleBatch
from gateway.self_metrics import GatewayMetrics


class SampleSink(Protocol):
    """Where input drivers put samples (the runtime hands each driver one, backed by the bus)."""

    def put(self, tag: int, t: float, value: float, quality: Quality | int, status: int = 0) -> None: ...

    def mark_stale(self, tags: Sequence[int]) -> None:
        """The source of these tags went away: their latest values are no longer current."""
        ...


@dataclass(frozen=True, slots=True)
class BoundTag:
    """A config tag together with its index in the bus and pipeline arrays."""

    index: int
    tag: Tag


class InputDriver(Protocol):
    name: str

    async def run(self, sink: SampleSink, on_connected: Callable[[], None]) -> None:
        """Connect, call `on_connected`, then put samples into `sink` until cancelled.

        Raises `RetryableError` when the connection is lost or cannot be made.
        """
        ...


@dataclass(frozen=True, slots=True)
class SignalState:
    """Latest conditioned value of one tag at the end of a tick."""

    name: str
    unit: str
    t: float  # plant time, epoch seconds (source timestamp)
    value: float
    quality: Quality


# One signal as plain Python scalars: (name, unit, t, value, quality code). What per-tag
# publishers read instead of a `SignalState`, which costs an object (and an enum) per tag.
SignalRow = tuple[str, str, float, float, int]


@dataclass(frozen=True, slots=True, eq=False)
class SignalColumns(Sequence[SignalState]):
    """Latest state of the tags that changed in a tick, columnar: what the pipeline hands out.

    Row i is tag `tag[i]` (an index into `names` and `units`) with its newest t, value and
    quality. A tick builds only these arrays; as a `Sequence[SignalState]` it makes a
    `SignalState` for a row only when one is asked for. Publishers that go tag by tag read
    `rows()` instead. The arrays are a snapshot: later ticks do not change them.
    """

    tag: np.ndarray  # int64 tag index, ascending
    t: np.ndarray  # float64, plant time of the tag's newest sample
    value: np.ndarray  # float64
    quality: np.ndarray  # int8, Quality codes
    names: Sequence[str]  # tag index -> name
    units: Sequence[str]  # tag index -> unit

    def __len__(self) -> int:
        return int(self.tag.shape[0])

    @overload
    def __getitem__(self, i: int) -> SignalState: ...

    @overload
    def __getitem__(self, i: slice) -> list[SignalState]: ...

    def __getitem__(self, i: int | slice) -> SignalState | list[SignalState]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k = int(self.tag[i])
        return SignalState(
            name=self.names[k],
            unit=self.units[k],
            t=float(self.t[i]),
            value=float(self.value[i]),
            quality=Quality(int(self.quality[i])),
        )

    def __iter__(self) -> Iterator[SignalState]:
        for name, unit, t, value, quality in self.rows():
            yield SignalState(name, unit, t, value, Quality(quality))

    def rows(self) -> list[SignalRow]:
        """Every row as Python scalars, converted column by column (no per-row numpy access)."""
        names, units = self.names, self.units
        return [
            (names[k], units[k], t, value, quality)
            for k, t, value, quality in zip(
                self.tag.tolist(), self.t.tolist(), self.value.tolist(), self.quality.tolist(), strict=True
            )
        ]

    @staticmethod
    def empty() -> SignalColumns:
        return SignalColumns(
            tag=np.empty(0, np.int64),
            t=np.empty(0, np.float64),
            value=np.empty(0, np.float64),
            quality=np.empty(0, np.int8),
            names=(),
            units=(),
        )


@dataclass(frozen=True, slots=True)
class YieldFigure:
    """Black-mass yield over a window ending at `t` (plant time): the rolling window or a shift."""

    t: float
    value: float | None  # mass fraction, BM / feed; None when it cannot be computed
    uncertainty: float | None  # 2-sigma, same unit as value
    quality: Quality
    coverage: float  # fraction of the window backed by good data (the worse of the two streams)
    window_h: float  # length of the full window
    covered_h: float  # how much of the window has data at all (less while it is still filling)
    delay_min: float
    basis: str
    feed_t: float  # feed mass in the (delay-shifted) window
    black_mass_t: float  # black-mass out in the window
    horizon: str = "rolling"  # "rolling" (window_h ending at t), "shift" or "lot"
    label: str = ""  # shift: its local start, ISO 8601; lot: the lot number
    final: bool = True  # shift: False while the shift is still running


@dataclass(frozen=True, slots=True)
class FlowFigure:
    """Mass flows over the last few minutes, from the balance streams."""

    t: float
    feed_tph: float | None
    black_mass_tph: float | None
    feed_vs_nameplate: float | None  # fraction of nameplate


@dataclass(frozen=True, slots=True)
class SampleColumns:
    """Every sample of a tick after conditioning (for the historian), columnar."""

    tag: np.ndarray  # int32
    t: np.ndarray  # float64
    value: np.ndarray  # float64
    quality: np.ndarray  # int8

    def __len__(self) -> int:
        return int(self.tag.shape[0])

    @staticmethod
    def empty() -> SampleColumns:
        # The pipeline slices these columns out of a bus batch, so borrow the batch's dtypes
        # rather than spell them out a second time.
        batch = SampleBatch.empty()
        return SampleColumns(tag=batch.tag, t=batch.t, value=batch.value, quality=batch.quality)


@dataclass(frozen=True, slots=True)
class PipelineUpdate:
    """What one pipeline tick hands to every output."""

    t_plant: float  # newest plant time seen
    # Tags that changed this tick, latest value each: a `SignalColumns` from the pipeline (no
    # objects built), any sequence of `SignalState` from elsewhere (tests, tools).
    signals: Sequence[SignalState]
    samples: SampleColumns
    yield_rolling: YieldFigure | None
    flows: FlowFigure | None
    # The running shift's yield so far, and the final figure of every shift that ended this tick.
    yield_shift: YieldFigure | None = None
    shifts_completed: list[YieldFigure] = field(default_factory=list)
    # Lots whose black mass has left the line (modelled tail < 1 %), closed out this tick.
    lots_completed: list[YieldFigure] = field(default_factory=list)
    # Operator KPIs over the rolling window (None without a [kpis] section).
    kpis: KpiFigures | None = None
    tag_names: list[str] = field(default_factory=list)  # index -> name, for `samples`
    alarm_events: list[AlarmEvent] = field(default_factory=list)  # raised or cleared this tick
    active_alarms: list[Alarm] = field(default_factory=list)  # everything active after it
    # Control audit records decided since the last tick (see gateway.control_service), for the
    # historian; the audit log file holds them already.
    control_audit: list[dict[str, Any]] = field(default_factory=list)
    # The gateway's own metrics, on one tick every `runtime.metrics_interval_s` (else None).
    metrics: GatewayMetrics | None = None

    def signal_rows(self) -> list[SignalRow]:
        """`signals` as plain rows; from the columns directly when the pipeline built them."""
        if isinstance(self.signals, SignalColumns):
            return self.signals.rows()
        return [(s.name, s.unit, s.t, s.value, int(s.quality)) for s in self.signals]


class UpdateSink(Protocol):
    """What the runtime puts each tick's update into for one output: an in-memory
    `OutputQueue`, or a durable buffer (`gateway.durable_spool.DurableSpool`) that encodes the
    update and keeps it on disk until delivered."""

    def put(self, item: PipelineUpdate, weight: int = 1) -> None: ...

    def __len__(self) -> int: ...


class OutputDriver(Protocol):
    name: str

    # `queue` is the binding's sink: an OutputQueue of updates, or the durable spool of an
    # output that must not lose data (its items are then the encoded lines).
    async def run(self, queue: Any, on_connected: Callable[[], None]) -> None:
        """Connect, call `on_connected`, then deliver what `queue` holds until cancelled.

        An item leaves the queue (`queue.commit`) only once it was delivered, so a lost
        connection (`RetryableError`) loses nothing that the queue still holds.
        """
        ...


class Service(Protocol):
    """Anything else the runtime keeps running and reconnecting (the MQTT command channel)."""

    name: str

    async def run(self, on_connected: Callable[[], None]) -> None:
        """Connect, call `on_connected`, then serve until cancelled; `RetryableError` on loss."""
        ...
