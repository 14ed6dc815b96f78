"""The sensor effects: each models one thing an instrument does to the true signal.

An effect is applied in place to the values of one measurement instant (`apply`); effects that
also change the reading's source timestamp implement `apply_timed`. Effects that take injected
faults implement `handles(kind, signal)` and `add_fault(fault, signal)`; a fault acts while
`fault.active(t)`. Effects with state (lag, hold, delay, drift, totals) advance it with the plant
time since their last call, so results depend on the publish cadence only where the physics
does: a sample-and-hold, a transport delay and a lag are exact for an input held between calls;
spikes are drawn per published sample; a random walk is exact at any cadence.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from simulators.sensor_events import Fault
from simulators.sensor_specs import (
    STREAM_DRIFT,
    STREAM_DROPOUTS,
    STREAM_NOISE_SIGNAL,
    STREAM_SPIKES,
    Draws,
    SensorSpec,
    SpecBook,
    Streams,
    WeigherSpec,
)

_LN10 = math.log(10.0)
_DRIFT_KINDS = frozenset({"sensor.zero_drift", "sensor.span_drift"})


class SensorEffect(Protocol):
    """One measurement effect, applied in place to the values of one measurement instant.

    `t` is plant time (epoch seconds). An effect may change values, and may delete a key to
    model a missing reading; it keeps whatever state it needs between calls.
    """

    def apply(self, t: float, values: dict[str, Any]) -> None: ...


class TimedEffect(SensorEffect, Protocol):
    """An effect that may also set a reading's source timestamp (`stamps[name]`; absent = t)."""

    def apply_timed(self, t: float, values: dict[str, Any], stamps: dict[str, float]) -> None: ...


class FaultHandler(Protocol):
    """An effect that takes injected faults."""

    def handles(self, kind: str, signal: str) -> bool: ...

    def add_fault(self, fault: Fault, signal: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SpikeRecord:
    """One injected spike (ground truth for spike-detection scoring)."""

    t: float
    signal: str
    delta: float  # added to the reading, signal units
    sigma_mult: float  # |delta| / sigma


def _as_book(specs: SpecBook | Mapping[str, SensorSpec]) -> SpecBook:
    return specs if isinstance(specs, SpecBook) else SpecBook(specs)


class _Faults:
    """Faults per signal name, in the order they were added (later ones override)."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Fault]] = {}

    def add(self, name: str, fault: Fault) -> None:
        faults = self.by_name.setdefault(name, [])
        if not any(f is fault for f in faults):  # the same event naming rate and total of a device
            faults.append(fault)

    def latest(self, name: str, t: float) -> Fault | None:
        for f in reversed(self.by_name.get(name, ())):
            if f.active(t):
                return f
        return None


def _drift(faults: Iterable[Fault], t: float) -> tuple[float, float]:
    """(gain factor, zero offset) of the active drift faults at t."""
    gain, zero = 1.0, 0.0
    for f in faults:
        if not f.active(t):
            continue
        p = f.params
        if f.kind == "sensor.span_drift":
            length = p["over_h"] * 3600.0
            frac = 1.0 if length <= 0 else min((t - f.start) / length, 1.0)
            gain *= 1.0 + p["total_rel"] * frac
        else:
            zero += p["offset"]
            if p["ramp_per_h"]:
                zero += p["ramp_per_h"] * min(t - f.start, p["duration_h"] * 3600.0) / 3600.0
    return gain, zero


class _RandomWalk:
    """A zero random walk, 1-sigma `sigma` per sqrt(hour); exact at any call cadence."""

    __slots__ = ("_draws", "_t", "sigma", "value")

    def __init__(self, sigma: float, rng: np.random.Generator) -> None:
        self.sigma = sigma
        self._draws = Draws(rng)
        self._t: float | None = None
        self.value = 0.0

    def at(self, t: float) -> float:
        if self._t is not None and t > self._t:
            self.value += self.sigma * math.sqrt((t - self._t) / 3600.0) * self._draws.normal()
        if self._t is None or t > self._t:
            self._t = t
        return self.value


class WeigherEffect:
    """Belt weighers: span and zero errors acting consistently on the rate and the totalizer.

    Each device has a fixed span error drawn per seed; injected span drift multiplies it and
    injected zero drift (in the rate's unit, t/h) adds to the rate. The totalizer integrates the
    true increments times the gain plus the zero offset over time (both by the trapezoid rule
    between calls), and never decreases. A stopped belt (`<device>.speed` <= 0, when the plant reports it) neither
    shows nor integrates its zero error, as a real integrator multiplies load by belt speed.
    """

    def __init__(
        self,
        weighers: Iterable[WeigherSpec],
        rng: np.random.Generator,
        streams: Streams | None = None,
    ) -> None:
        specs = list(weighers)
        self.span: dict[str, float] = {}
        for w in specs:
            z = float(rng.standard_normal())
            z = max(-w.span_clip_sigmas, min(w.span_clip_sigmas, z))
            self.span[w.device] = w.span_sigma_rel * z
        self.devices = frozenset(self.span)
        self._rw: dict[str, _RandomWalk] = {}
        for w in specs:
            if w.zero_rw > 0:
                if streams is None:
                    raise ValueError(f"weigher {w.device}: a zero random walk needs the layer's streams")
                self._rw[w.device] = _RandomWalk(w.zero_rw, streams.stream(STREAM_DRIFT, w.device))
        self._faults = _Faults()
        self._last_true: dict[str, float] = {}
        self._measured: dict[str, float] = {}
        self._last_t: dict[str, float] = {}
        self._last_zero: dict[str, float] = {}
        self._last_gain: dict[str, float] = {}

    def device_of(self, signal: str) -> str | None:
        if signal in self.span:
            return signal
        device, _, leaf = signal.rpartition(".")
        return device if device in self.span and leaf in ("rate", "total") else None

    def handles(self, kind: str, signal: str) -> bool:
        return kind in _DRIFT_KINDS and self.device_of(signal) is not None

    def add_fault(self, fault: Fault, signal: str) -> None:
        device = self.device_of(signal)
        assert device is not None  # the layer asked handles() first
        self._faults.add(device, fault)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for device, span in self.span.items():
            gain = 1.0 + span
            zero = 0.0
            faults = self._faults.by_name.get(device)
            if faults:
                g, zero = _drift(faults, t)
                if g != 1.0:
                    gain *= g
            rw = self._rw.get(device)
            if rw is not None:
                zero += rw.at(t)
            speed = values.get(f"{device}.speed")
            if speed is not None and speed <= 0:
                zero = 0.0
            rate_key, total_key = f"{device}.rate", f"{device}.total"
            if rate_key in values:
                values[rate_key] *= gain
                if zero:
                    values[rate_key] += zero
            true_total = values.get(total_key)
            if true_total is None:
                continue
            last = self._last_true.get(total_key)
            if last is None:
                measured = true_total * gain
            else:
                # Trapezoid in the gain too; for a constant gain 0.5 * (g + g) is exactly g.
                inc = max(true_total - last, 0.0) * (0.5 * (gain + self._last_gain[device]))
                zero_before = self._last_zero.get(device, 0.0)
                if zero or zero_before:
                    dt_h = max(t - self._last_t[device], 0.0) / 3600.0
                    inc = max(inc + 0.5 * (zero + zero_before) * dt_h, 0.0)
                measured = self._measured[total_key] + inc
            self._last_true[total_key] = true_total
            self._measured[total_key] = measured
            self._last_t[device] = t
            self._last_zero[device] = zero
            self._last_gain[device] = gain
            values[total_key] = measured


class BiasDrift:
    """Zero/span bias and drift of any other analog signal or totalizer.

    Analog: reading * (1 + span_bias) * span_drift(t) + zero_bias + zero_drift(t) + random walk.
    Totalizer: the same gain acts on its increments and the zero terms are a rate error in the
    total's unit per hour, integrated over time; the reported total never decreases.
    """

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec], streams: Streams) -> None:
        self._book = _as_book(specs)
        self._streams = streams
        self._faults = _Faults()
        self._relevant: dict[str, bool] = {}
        self._rw: dict[str, _RandomWalk] = {}
        # Totalizer state: last true value, accumulated error, time, zero, gain, output.
        self._tot: dict[str, list[float]] = {}

    def handles(self, kind: str, signal: str) -> bool:
        return kind in _DRIFT_KINDS and self._book.is_numeric(signal)

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)
        self._relevant[signal] = True

    def _is_relevant(self, name: str) -> bool:
        rel = self._relevant.get(name)
        if rel is None:
            s = self._book.spec(name)
            rel = self._book.is_numeric(name) and bool(s.zero_bias or s.span_bias or s.drift_rw)
            self._relevant[name] = rel
        return rel

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, v in values.items():
            if not self._is_relevant(name):
                continue
            spec = self._book.spec(name)
            gain, zero = _drift(self._faults.by_name.get(name, ()), t)
            gain *= 1.0 + spec.span_bias
            zero += spec.zero_bias
            if spec.drift_rw > 0:
                rw = self._rw.get(name)
                if rw is None:
                    rw = self._rw[name] = _RandomWalk(spec.drift_rw, self._streams.stream(STREAM_DRIFT, name))
                zero += rw.at(t)
            if self._book.kind(name) == "total":
                values[name] = self._total(name, v, t, gain, zero)
            elif gain != 1.0 or zero:
                values[name] = v * gain + zero

    def _total(self, name: str, v: float, t: float, gain: float, zero: float) -> float:
        st = self._tot.get(name)
        if st is None:
            err = v * self._book.spec(name).span_bias
            self._tot[name] = [v, err, t, zero, gain, v + err]
            return v + err
        last, err, t_last, zero_before, gain_before, out_before = st
        dt_h = max(t - t_last, 0.0) / 3600.0
        err += max(v - last, 0.0) * (0.5 * (gain + gain_before) - 1.0) + 0.5 * (zero + zero_before) * dt_h
        out = v + err
        if out < out_before:
            out = out_before
            err = out - v
        self._tot[name] = [v, err, t, zero, gain, out]
        return out


class TransportDelay:
    """A pure delay: the reading at t is the input at t - delay_s (the latest one not newer)."""

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec]) -> None:
        self._book = _as_book(specs)
        self._buf: dict[str, deque[tuple[float, Any]]] = {}

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, v in values.items():
            delay = self._book.spec(name).delay_s
            if delay <= 0:
                continue
            buf = self._buf.setdefault(name, deque())
            buf.append((t, v))
            while len(buf) >= 2 and buf[1][0] <= t - delay:
                buf.popleft()
            values[name] = buf[0][1]


class Lag:
    """First-order lag with time constant T90 / ln 10 (90 % of a step after T90).

    Exact for an input that holds its value from one call to the next (the previous call's
    input acts over the interval): y += (x_prev - y) * (1 - exp(-dt / tau)), so a step seen at
    call k gives the same response at any cadence. The state starts at the first reading, so a
    lag switched on mid-run starts from the current value.
    """

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec]) -> None:
        self._book = _as_book(specs)
        self._faults = _Faults()
        self._state: dict[str, tuple[float, float, float]] = {}  # output, input, time

    def handles(self, kind: str, signal: str) -> bool:
        return kind == "sensor.lag" and self._book.kind(signal) == "analog"

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, x in values.items():
            t90 = self._book.spec(name).t90_s
            if name in self._faults.by_name:
                f = self._faults.latest(name, t)
                if f is not None:
                    t90 = f.params["t90_s"]
            if t90 <= 0:
                if self._state:
                    self._state.pop(name, None)
                continue
            st = self._state.get(name)
            y, t_now = x, t
            if st is not None:
                y, x_before, t_last = st
                if t > t_last:
                    y += (x_before - y) * -math.expm1(-(t - t_last) * _LN10 / t90)
                else:
                    t_now = t_last
            self._state[name] = (y, x, t_now)
            values[name] = y


class GaussianNoise:
    """White noise per signal: sigma = sqrt(noise_abs^2 + (noise_rel * reading)^2).

    The names in `block` (the original default signals) share one block of normals per call
    from `rng`, in that fixed order, drawn every call; every other noisy signal has its own
    stream, so adding or changing noise on one signal never changes another's draws.
    """

    def __init__(
        self,
        specs: SpecBook | Mapping[str, SensorSpec],
        rng: np.random.Generator,
        streams: Streams,
        block: Sequence[str] = (),
    ) -> None:
        self._book = _as_book(specs)
        self._rng = rng
        self._streams = streams
        self._block = tuple(block)
        self._in_block = frozenset(self._block)
        self._faults = _Faults()
        self._draws: dict[str, Draws] = {}

    def handles(self, kind: str, signal: str) -> bool:
        return kind == "sensor.noise" and self._book.kind(signal) == "analog"

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)

    def sigma(self, name: str, v: float, t: float) -> float:
        """The channel's noise sigma at reading v, including any injected noise change."""
        f = self._faults.latest(name, t) if name in self._faults.by_name else None
        if f is not None:
            a, r = f.params["noise_abs"], f.params["noise_rel"]
        else:
            spec = self._book.spec(name)
            a, r = spec.noise_abs, spec.noise_rel
        return math.sqrt(a * a + (r * v) * (r * v))

    def apply(self, t: float, values: dict[str, Any]) -> None:
        if self._block:
            z = self._rng.standard_normal(len(self._block)).tolist()
            for name, zi in zip(self._block, z, strict=True):
                v = values.get(name)
                if v is None or not self._book.is_numeric(name):
                    continue
                s = self.sigma(name, v, t)
                if s > 0:
                    values[name] = v + zi * s
        for name, v in values.items():
            if name in self._in_block or self._book.kind(name) != "analog":
                continue
            if not (self._book.spec(name).has_noise or name in self._faults.by_name):
                continue
            s = self.sigma(name, v, t)
            if s > 0:
                d = self._draws.get(name)
                if d is None:
                    d = self._draws[name] = Draws(self._streams.stream(STREAM_NOISE_SIGNAL, name))
                values[name] = v + d.normal() * s


class SampleHold:
    """The instrument updates every hold_s (on a grid of epoch multiples) and holds in between.

    The held reading keeps the source timestamp of its sample instant.
    """

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec]) -> None:
        self._book = _as_book(specs)
        self._held: dict[str, tuple[Any, float, float]] = {}

    def apply(self, t: float, values: dict[str, Any]) -> None:
        self.apply_timed(t, values, {})

    def apply_timed(self, t: float, values: dict[str, Any], stamps: dict[str, float]) -> None:
        for name, v in values.items():
            hold = self._book.spec(name).hold_s
            if hold <= 0:
                continue
            st = self._held.get(name)
            if st is None or t >= st[2] or t < st[1]:
                st = (v, t, (math.floor(t / hold) + 1.0) * hold)
                self._held[name] = st
            values[name] = st[0]
            stamps[name] = st[1]


class Spikes:
    """Bernoulli spikes per published sample, heavy-tailed magnitude between two sigma multiples.

    |spike| = m * sigma with m from a Pareto(tail_alpha) truncated to [sigma_mult_min,
    sigma_mult_max]; the sign is +/- with equal odds. Sigma is the event's `sigma`, else the
    channel's noise sigma at the reading, else `sigma_rel` * |reading|. Each sample draws three
    uniforms from the signal's own stream whether it spikes or not.
    """

    def __init__(
        self,
        specs: SpecBook | Mapping[str, SensorSpec],
        streams: Streams,
        noise: GaussianNoise | None,
        log_size: int = 100_000,
    ) -> None:
        self._book = _as_book(specs)
        self._streams = streams
        self._noise = noise
        self._faults = _Faults()
        self._draws: dict[str, Draws] = {}
        self.log: deque[SpikeRecord] = deque(maxlen=log_size)

    def handles(self, kind: str, signal: str) -> bool:
        return kind == "sensor.spikes" and self._book.kind(signal) == "analog"

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)
        if signal not in self._draws:
            self._draws[signal] = Draws(self._streams.stream(STREAM_SPIKES, signal))

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, faults in self._faults.by_name.items():
            v = values.get(name)
            if v is None:
                continue
            d = self._draws[name]
            for f in faults:
                if not f.active(t):
                    continue
                u, u_mag, u_sign = d.uniform(), d.uniform(), d.uniform()
                p = f.params
                if u >= p["probability"]:
                    continue
                sigma = p["sigma"]
                if sigma is None:
                    sigma = self._noise.sigma(name, v, t) if self._noise is not None else 0.0
                    if sigma <= 0:
                        sigma = p["sigma_rel"] * abs(v)
                lo, hi, alpha = p["sigma_mult_min"], p["sigma_mult_max"], p["tail_alpha"]
                mult = lo / (1.0 - u_mag * (1.0 - (lo / hi) ** alpha)) ** (1.0 / alpha)
                delta = mult * sigma if u_sign < 0.5 else -mult * sigma
                if delta == 0.0:
                    # A reading of exactly 0 with no noise gives a spike of 0: nothing reaches
                    # the reading, so nothing is logged as injected (the draws are still spent,
                    # so the other spikes stay where the seed puts them).
                    continue
                v += delta
                self.log.append(SpikeRecord(t, name, delta, mult))
            values[name] = v


class Floor:
    """Clip readings at the instrument's lower limit (no negative masses, flows, ppm)."""

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec]) -> None:
        self._book = _as_book(specs)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, v in values.items():
            lo = self._book.spec(name).floor
            if lo is not None and self._book.is_numeric(name) and v < lo:
                values[name] = lo


class Quantise:
    """Round to the instrument's resolution. Rounding is monotone, so totals stay monotone."""

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec]) -> None:
        self._book = _as_book(specs)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, v in values.items():
            q = self._book.spec(name).quantum
            if q > 0 and self._book.is_numeric(name):
                values[name] = round(v / q) * q


class Totalizer:
    """Totalizer display: rollover at a modulus (spec or `sensor.rollover`) and `sensor.reset`.

    The reported value is (reading - base) wrapped into [0, modulus), re-quantised; a reset sets
    base to the reading at the first call at or after the reset time, so it shows 0 then and the
    increments stay exact. Counters work the same way (integers stay integers).
    """

    def __init__(self, specs: SpecBook | Mapping[str, SensorSpec]) -> None:
        self._book = _as_book(specs)
        self._faults = _Faults()
        self._base: dict[str, Any] = {}
        self._done: set[tuple[int, str]] = set()  # (id(reset), signal) already applied

    def handles(self, kind: str, signal: str) -> bool:
        return kind in ("sensor.rollover", "sensor.reset") and self._book.kind(signal) in ("total", "counter")

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        for name, v in values.items():
            spec = self._book.spec(name)
            faults = self._faults.by_name.get(name)
            if not faults and spec.modulus <= 0:
                continue
            modulus = spec.modulus
            for f in faults or ():
                if not f.active(t):
                    continue
                if f.kind == "sensor.reset":
                    if (id(f), name) not in self._done:
                        self._done.add((id(f), name))
                        self._base[name] = v
                else:
                    modulus = f.params["modulus"]
            base = self._base.get(name, 0)
            if modulus <= 0 and not base:
                continue
            d = v - base
            if modulus > 0:
                d -= modulus * math.floor(d / modulus)
            if spec.quantum > 0:
                d = round(d / spec.quantum) * spec.quantum
            if modulus > 0 and d >= modulus - 0.5 * spec.quantum:
                d = 0.0 if spec.quantum > 0 else d - modulus
            if isinstance(v, int) and not isinstance(v, bool):
                d = round(d)
            values[name] = d


class Stuck:
    """Stuck-at: over the fault window the reading stays at the last reported value (or the
    event's `value`); with `freeze_timestamp` its source timestamp stops as well."""

    def __init__(self) -> None:
        self._faults = _Faults()
        self._last: dict[str, tuple[Any, float]] = {}
        self._held: dict[tuple[int, str], tuple[Any, float]] = {}

    def handles(self, kind: str, signal: str) -> bool:
        return kind == "sensor.stuck"

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        self.apply_timed(t, values, {})

    def apply_timed(self, t: float, values: dict[str, Any], stamps: dict[str, float]) -> None:
        for name in self._faults.by_name:
            if name not in values:
                continue
            f = self._faults.latest(name, t)
            if f is None:
                self._last[name] = (values[name], stamps.get(name, t))
                continue
            key = (id(f), name)
            held = self._held.get(key)
            if held is None:
                last = self._last.get(name, (values[name], stamps.get(name, t)))
                held = last if f.params["value"] is None else (f.params["value"], last[1])
                self._held[key] = held
            values[name] = held[0]
            if f.params["freeze_timestamp"]:
                stamps[name] = held[1]


class _DropoutProcess:
    """Poisson dropout starts over a fault window with lognormal lengths, generated lazily in
    time order, so the schedule does not depend on when it is asked for."""

    def __init__(self, fault: Fault, signal: str, draws: Draws) -> None:
        self.fault = fault
        self._signal = signal
        self._draws = draws
        p = fault.params
        self._rate_per_s = p["rate_per_h"] / 3600.0
        self._sigma = p["length_sigma"]
        self._mu = math.log(p["mean_length_s"]) - 0.5 * self._sigma**2
        self.children: list[Fault] = []
        self._next = fault.start + self._gap()
        self._cursor = 0
        self._live: list[Fault] = []
        self._t_last = -math.inf

    def _gap(self) -> float:
        return -math.log1p(-self._draws.uniform()) / self._rate_per_s

    def until(self, t: float) -> None:
        end = self.fault.end
        while self._next <= t and (end is None or self._next < end):
            length = math.exp(self._mu + self._sigma * self._draws.normal())
            self.children.append(
                Fault(
                    "sensor.dropout",
                    (self._signal,),
                    self._next,
                    self._next + length,
                    {"duration_s": length},
                    parent=self.fault.kind,
                )
            )
            self._next += self._gap()

    def active(self, t: float) -> bool:
        self.until(t)
        if t < self._t_last:
            return any(c.active(t) for c in self.children)
        self._t_last = t
        while self._cursor < len(self.children) and self.children[self._cursor].start <= t:
            self._live.append(self.children[self._cursor])
            self._cursor += 1
        self._live = [c for c in self._live if c.active(t)]
        return bool(self._live)


class Dropout:
    """Missing readings: the key is removed for the instant (not published). Single windows
    (`sensor.dropout`) and Poisson processes of them (`sensor.dropouts`)."""

    def __init__(self, streams: Streams) -> None:
        self._streams = streams
        self._windows = _Faults()
        self._processes: dict[str, list[_DropoutProcess]] = {}

    def handles(self, kind: str, signal: str) -> bool:
        return kind in ("sensor.dropout", "sensor.dropouts")

    def add_fault(self, fault: Fault, signal: str) -> None:
        if fault.kind == "sensor.dropout":
            self._windows.add(signal, fault)
            return
        procs = self._processes.setdefault(signal, [])
        rng = self._streams.stream(STREAM_DROPOUTS, signal, len(procs))
        procs.append(_DropoutProcess(fault, signal, Draws(rng)))

    def generated_faults(self, t: float) -> list[Fault]:
        """The dropouts of the Poisson processes that are active at t."""
        out: list[Fault] = []
        for procs in self._processes.values():
            for proc in procs:
                proc.until(t)
                out.extend(c for c in proc.children if c.active(t))
        return out

    def _out(self, name: str, t: float) -> bool:
        if any(f.active(t) for f in self._windows.by_name.get(name, ())):
            return True
        # Every process is advanced (no short-circuit), so their state never depends on others.
        return any([p.active(t) for p in self._processes.get(name, ())])

    def apply(self, t: float, values: dict[str, Any]) -> None:
        self.apply_timed(t, values, {})

    def apply_timed(self, t: float, values: dict[str, Any], stamps: dict[str, float]) -> None:
        for name in dict.fromkeys([*self._windows.by_name, *self._processes]):
            if name in values and self._out(name, t):
                del values[name]
                stamps.pop(name, None)


class ClockSkew:
    """The source clock of a group of signals is off by offset_s: only timestamps change."""

    def __init__(self) -> None:
        self._faults = _Faults()

    def handles(self, kind: str, signal: str) -> bool:
        return kind == "sensor.clock_skew"

    def add_fault(self, fault: Fault, signal: str) -> None:
        self._faults.add(signal, fault)

    def apply(self, t: float, values: dict[str, Any]) -> None:
        return None  # values are untouched; see apply_timed

    def apply_timed(self, t: float, values: dict[str, Any], stamps: dict[str, float]) -> None:
        for name, faults in self._faults.by_name.items():
            if name not in values:
                continue
            offset = sum(f.params["offset_s"] for f in faults if f.active(t))
            if offset:
                stamps[name] = stamps.get(name, t) + offset


__all__ = [
    "BiasDrift",
    "ClockSkew",
    "Dropout",
    "FaultHandler",
    "Floor",
    "GaussianNoise",
    "Lag",
    "Quantise",
    "SampleHold",
    "SensorEffect",
    "SpikeRecord",
    "Spikes",
    "Stuck",
    "TimedEffect",
    "Totalizer",
    "TransportDelay",
    "WeigherEffect",
]
