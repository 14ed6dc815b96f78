"""The sensor layer: turns the plant's true signals into what the instruments report.

It is separate from the truth and seeded independently of the plant (its own seed-sequence
domain), so the same process can be measured by differently-behaving instruments.

A `SensorLayer` is an ordered list of effects applied in place to a dict of values, one call
per measurement instant. The defaults are:

1. `WeigherEffect` – each belt weigher has a fixed span error (drawn per seed, 1-sigma 0.4 %,
   i.e. within class 1) applied to its rate and to the *increments* of its totalizer, so the
   totalizer stays monotone;
2. `GaussianNoise` – white noise per signal, relative to the reading and/or absolute;
3. `Floor` – instruments do not report below their lower limit (0 for masses, flows, ppm);
4. `Quantise` – display resolution (1 kg = 0.001 t on totalizers).

Later issues add lag, drift, spikes, stuck-at, dropouts (an effect may delete a key: that
signal is then not published this time), clock skew and totalizer rollover as further
effects, each with its own seeded stream, inserted into the list in the order they act.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from simulators.plant import SENSOR_DOMAIN, seeded_stream

# Sensor random streams, by purpose; the index is part of the seed, never reorder.
_STREAM_SPAN, _STREAM_NOISE = range(2)


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """Static behaviour of one instrument channel (1-sigma figures, in the signal's unit)."""

    noise_rel: float = 0.0  # white noise, fraction of the reading
    noise_abs: float = 0.0  # white noise, absolute
    quantum: float = 0.0  # resolution of the reported value; 0 = none
    floor: float | None = 0.0  # lowest reportable value; None = no limit


@dataclass(frozen=True, slots=True)
class WeigherSpec:
    """A belt weigher: one device reporting `<device>.rate` and `<device>.total`."""

    device: str
    span_sigma_rel: float = 0.004  # per-seed span error, N(0, 0.4 %): a class-1 weigher
    span_clip_sigmas: float = 4.0  # a drawn span beyond this is clipped (calibration would catch it)


# Noise per domain.md §2 (1-sigma). FS-based figures are converted with the config ranges:
# dry.press_abs 0.25 % of 1013 mbar, dry.mass 0.1 % of 5000 kg, cond.tank_mass 0.2 % of 2000 kg.
DEFAULT_SENSOR_SPECS: dict[str, SensorSpec] = {
    "bw_feed.total": SensorSpec(quantum=0.001),  # span error only (WeigherEffect); 1 kg display
    "bw_feed.rate": SensorSpec(noise_rel=0.03),
    "shr.power": SensorSpec(noise_rel=0.01),
    "shr.current": SensorSpec(noise_rel=0.01),
    "shr.o2_a": SensorSpec(noise_abs=0.05),
    "shr.o2_b": SensorSpec(noise_abs=0.05),
    "dry.jacket_temp": SensorSpec(noise_abs=0.3, floor=None),
    "dry.press_abs": SensorSpec(noise_abs=2.5),
    "dry.mass": SensorSpec(noise_abs=5.0),
    "cond.tank_mass": SensorSpec(noise_abs=4.0),
    "bm.rate": SensorSpec(noise_rel=0.03),
    "bm.total": SensorSpec(quantum=0.001),
    "gas.h2": SensorSpec(noise_abs=5.0),
    "gas.voc": SensorSpec(noise_rel=0.05),
    "therm.hotspot_max": SensorSpec(noise_abs=2.0, floor=None),
}

DEFAULT_WEIGHERS: tuple[WeigherSpec, ...] = (WeigherSpec("bw_feed"), WeigherSpec("bm"))


class SensorEffect(Protocol):
    """One measurement effect, applied in place to the values of one measurement instant.

    `t` is plant time (epoch seconds). An effect may change values, and may delete a key to
    model a missing reading; it keeps whatever state it needs between calls.
    """

    def apply(self, t: float, values: dict[str, float]) -> None: ...


class WeigherEffect:
    """Span error of belt weighers, applied to the rate and to the totalizer's increments.

    The measured totalizer integrates the true increments times (1 + span); a negative true
    increment (which the plant never produces) would be ignored, so the output is monotone.
    """

    def __init__(self, weighers: Iterable[WeigherSpec], rng: np.random.Generator) -> None:
        self.span: dict[str, float] = {}
        for w in weighers:
            z = float(rng.standard_normal())
            z = max(-w.span_clip_sigmas, min(w.span_clip_sigmas, z))
            self.span[w.device] = w.span_sigma_rel * z
        self._last_true: dict[str, float] = {}
        self._measured: dict[str, float] = {}

    def apply(self, t: float, values: dict[str, float]) -> None:
        for device, span in self.span.items():
            gain = 1.0 + span
            rate_key, total_key = f"{device}.rate", f"{device}.total"
            if rate_key in values:
                values[rate_key] *= gain
            true_total = values.get(total_key)
            if true_total is None:
                continue
            last = self._last_true.get(total_key)
            if last is None:
                measured = true_total * gain
            else:
                measured = self._measured[total_key] + max(true_total - last, 0.0) * gain
            self._last_true[total_key] = true_total
            self._measured[total_key] = measured
            values[total_key] = measured


class GaussianNoise:
    """White noise per signal: sigma = sqrt(noise_abs^2 + (noise_rel * reading)^2).

    One block of normals per call, assigned in the spec's fixed order, keeps it deterministic
    and cheap.
    """

    def __init__(self, specs: Mapping[str, SensorSpec], rng: np.random.Generator) -> None:
        self._names = [n for n, s in specs.items() if s.noise_rel > 0 or s.noise_abs > 0]
        self._abs = [specs[n].noise_abs for n in self._names]
        self._rel = [specs[n].noise_rel for n in self._names]
        self._rng = rng

    def apply(self, t: float, values: dict[str, float]) -> None:
        z = self._rng.standard_normal(len(self._names)).tolist()
        for name, a, r, zi in zip(self._names, self._abs, self._rel, z, strict=True):
            v = values.get(name)
            if v is None:
                continue
            values[name] = v + zi * math.sqrt(a * a + (r * v) * (r * v))


class Floor:
    """Clip readings at the instrument's lower limit (no negative masses, flows, ppm)."""

    def __init__(self, specs: Mapping[str, SensorSpec]) -> None:
        self._floors = {n: s.floor for n, s in specs.items() if s.floor is not None}

    def apply(self, t: float, values: dict[str, float]) -> None:
        for name, lo in self._floors.items():
            v = values.get(name)
            if v is not None and v < lo:
                values[name] = lo


class Quantise:
    """Round to the instrument's resolution. Rounding is monotone, so totals stay monotone."""

    def __init__(self, specs: Mapping[str, SensorSpec]) -> None:
        self._quanta = {n: s.quantum for n, s in specs.items() if s.quantum > 0}

    def apply(self, t: float, values: dict[str, float]) -> None:
        for name, q in self._quanta.items():
            v = values.get(name)
            if v is not None:
                values[name] = round(v / q) * q


class SensorLayer:
    """An ordered list of effects; `measure` runs them on a copy of the true signals."""

    def __init__(self, effects: list[SensorEffect]) -> None:
        self.effects = effects

    @classmethod
    def default(
        cls,
        *,
        seed: int,
        specs: Mapping[str, SensorSpec] | None = None,
        weighers: Iterable[WeigherSpec] = DEFAULT_WEIGHERS,
    ) -> SensorLayer:
        s = DEFAULT_SENSOR_SPECS if specs is None else specs
        return cls(
            [
                WeigherEffect(weighers, seeded_stream(seed, SENSOR_DOMAIN, _STREAM_SPAN)),
                GaussianNoise(s, seeded_stream(seed, SENSOR_DOMAIN, _STREAM_NOISE)),
                Floor(s),
                Quantise(s),
            ]
        )

    def measure(self, true_signals: Mapping[str, float], t: float) -> dict[str, float]:
        """Measured values at plant time `t` (epoch seconds); the input is not modified."""
        values = dict(true_signals)
        for effect in self.effects:
            effect.apply(t, values)
        return values


__all__ = [
    "DEFAULT_SENSOR_SPECS",
    "DEFAULT_WEIGHERS",
    "Floor",
    "GaussianNoise",
    "Quantise",
    "SensorEffect",
    "SensorLayer",
    "SensorSpec",
    "WeigherEffect",
    "WeigherSpec",
]
