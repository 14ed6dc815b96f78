"""Static description of instrument channels for the sensor layer.

What an instrument does to a signal depends on two things: the signal's *kind* and the
channel's `SensorSpec`. Kinds follow the plant's `SignalInfo.kind` when it has one, else they
are inferred from the name:

- ``analog``: a measured quantity (rate, temperature, concentration ...); every effect applies;
- ``total``: a totalizer (monotone); span/zero errors act on its increments, it is quantised,
  it can roll over or be reset, but it gets no white noise, spikes or lag;
- ``counter``, ``state``, ``id``: discrete values (reverse count, run bit, lot id); they never
  get noise, drift, spikes or quantisation. Only stuck-at, dropouts and clock skew apply (and
  rollover/reset for counters).

Random streams: the sensor layer draws from its own seed-sequence domain; the stream index
says what a stream is for and, where a stream is per signal or per device, the name (CRC-32)
is part of the spawn key, so adding an effect to one signal never shifts another's draws.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from simulators.plant import SENSOR_DOMAIN

SignalKind = Literal["analog", "total", "counter", "state", "id"]
SIGNAL_KINDS: tuple[SignalKind, ...] = ("analog", "total", "counter", "state", "id")
NUMERIC_KINDS: frozenset[str] = frozenset({"analog", "total"})

# Sensor random streams, by purpose; the index is part of the seed: append, never reorder.
(
    STREAM_SPAN,  # per-seed span error of each belt weigher (one draw per device)
    STREAM_NOISE,  # the fixed block of white noise for the original default signals
    STREAM_NOISE_SIGNAL,  # white noise of any other signal, one stream per signal
    STREAM_DRIFT,  # zero random walk, one stream per signal or weigher device
    STREAM_SPIKES,  # spike draws, one stream per signal
    STREAM_DROPOUTS,  # Poisson dropout schedules, one stream per (signal, process number)
) = range(6)

# Default totalizer resolution by unit (1 kg on mass totals).
_TOTAL_QUANTA: dict[str, float] = {"t": 0.001, "kg": 1.0, "kWh": 0.1, "MWh": 0.0001, "Nm³": 0.1, "Nm3": 0.1}

_STATE_SUFFIXES = (".run", ".fault", ".complete", ".trip", ".ready", ".alarm", ".running")
_ID_SUFFIXES = (".id", "_id", ".type")


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """Static behaviour of one instrument channel (1-sigma figures, in the signal's unit)."""

    noise_rel: float = 0.0  # white noise, fraction of the reading
    noise_abs: float = 0.0  # white noise, absolute
    quantum: float = 0.0  # resolution of the reported value; 0 = none
    floor: float | None = 0.0  # lowest reportable value; None = no limit
    t90_s: float = 0.0  # first-order lag: time to 90 % of a step; 0 = none
    hold_s: float = 0.0  # sample-and-hold: the instrument updates every hold_s; 0 = continuous
    delay_s: float = 0.0  # transport delay (sample line, conveyor to the sensor); 0 = none
    zero_bias: float = 0.0  # fixed zero error, signal units (a totalizer: a rate error, units/h)
    span_bias: float = 0.0  # fixed span error, fraction of the reading
    drift_rw: float = 0.0  # zero random walk, 1-sigma per sqrt(hour), same units as zero_bias
    modulus: float = 0.0  # a totalizer wraps to 0 at this value; 0 = never

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if not math.isfinite(v):
                raise ValueError(f"SensorSpec.{f.name} must be finite, got {v!r}")
            if f.name not in ("floor", "zero_bias", "span_bias") and v < 0:
                raise ValueError(f"SensorSpec.{f.name} must be >= 0, got {v!r}")
        if self.span_bias <= -1.0:
            raise ValueError(f"SensorSpec.span_bias must be > -1, got {self.span_bias!r}")

    @property
    def has_noise(self) -> bool:
        return self.noise_rel > 0 or self.noise_abs > 0

    def value_effects(self) -> list[str]:
        """Names of the fields that change a value (everything but the floor)."""
        return [f.name for f in fields(self) if f.name != "floor" and getattr(self, f.name) != 0]


@dataclass(frozen=True, slots=True)
class WeigherSpec:
    """A belt weigher: one device reporting `<device>.rate` and `<device>.total`."""

    device: str
    span_sigma_rel: float = 0.004  # per-seed span error, N(0, 0.4 %): a class-1 weigher
    span_clip_sigmas: float = 4.0  # a drawn span beyond this is clipped (calibration would catch it)
    zero_rw: float = 0.0  # zero random walk of the rate, 1-sigma per sqrt(hour), rate units


def infer_kind(name: str) -> SignalKind:
    """The kind of a signal the plant did not describe, from naming conventions."""
    if name.endswith(".total") or name.startswith("energy."):
        return "total"
    if name.endswith(("_count", ".count")):
        return "counter"
    if name.startswith("il.") or name.endswith(_STATE_SUFFIXES):
        return "state"
    if name.endswith(_ID_SUFFIXES):
        return "id"
    return "analog"


def _info_kind(info: object) -> SignalKind | None:
    kind = info if isinstance(info, str) else getattr(info, "kind", None)
    if kind is None:
        return None
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"unknown signal kind {kind!r} (known: {', '.join(SIGNAL_KINDS)})")
    return kind  # type: ignore[return-value]


class SpecBook:
    """Resolves the kind and the effective spec of any signal name, caching the answer.

    `signals` maps names to a kind string or to an object with `kind`/`unit` attributes (the
    plant's `SignalInfo`); names it lacks get an inferred kind. A name without an explicit spec
    gets the default of its kind: analog -> no effect, no floor; total -> floor 0 and the unit's
    resolution (1 kg on mass totals); counter/state/id -> nothing.
    """

    def __init__(self, specs: Mapping[str, SensorSpec], signals: Mapping[str, object] | None = None) -> None:
        self._specs = dict(specs)
        self._signals: Mapping[str, object] = signals if signals is not None else {}
        self._kinds: dict[str, SignalKind] = {}
        self._resolved: dict[str, SensorSpec] = {}
        problems: list[str] = []
        for name, spec in self._specs.items():
            kind = self.kind(name)
            if kind in NUMERIC_KINDS:
                if kind == "total" and spec.has_noise:
                    problems.append(f"{name}: a totalizer gets no white noise (put it on the rate)")
                continue
            bad = spec.value_effects()
            if bad:
                problems.append(f"{name}: a {kind} signal cannot have {', '.join(bad)}")
        if problems:
            raise ValueError("invalid sensor specs:\n  " + "\n  ".join(problems))

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self._signals)

    def kind(self, name: str) -> SignalKind:
        kind = self._kinds.get(name)
        if kind is None:
            info = self._signals.get(name)
            kind = (_info_kind(info) if info is not None else None) or infer_kind(name)
            self._kinds[name] = kind
        return kind

    def is_numeric(self, name: str) -> bool:
        return self.kind(name) in NUMERIC_KINDS

    def spec(self, name: str) -> SensorSpec:
        spec = self._resolved.get(name)
        if spec is None:
            spec = self._specs.get(name) or self._default(name)
            self._resolved[name] = spec
        return spec

    def _default(self, name: str) -> SensorSpec:
        kind = self.kind(name)
        if kind == "total":
            unit = getattr(self._signals.get(name), "unit", "")
            return SensorSpec(quantum=_TOTAL_QUANTA.get(unit, 0.0), floor=0.0)
        return SensorSpec(floor=None)


class Streams:
    """Seeded generators of the sensor domain, keyed by purpose and optionally by names.

    `stream(index)` is `seeded_stream(seed, SENSOR_DOMAIN, index)`; extra keys (names are
    hashed with CRC-32, which is stable across runs and platforms) give each signal its own.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def stream(self, index: int, *keys: str | int) -> np.random.Generator:
        key = tuple(zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys)
        seq = np.random.SeedSequence(self.seed, spawn_key=(SENSOR_DOMAIN, index, *key))
        return np.random.Generator(np.random.PCG64(seq))


class Draws:
    """Standard normals and uniforms from one generator, drawn in blocks for speed.

    Deterministic for a given sequence of calls; each use in the layer takes only one of the two
    kinds from its generator, and then the values do not depend on the block size either.
    """

    __slots__ = ("_n", "_ni", "_rng", "_u", "_ui")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._n: list[float] = []
        self._ni = 0
        self._u: list[float] = []
        self._ui = 0

    def normal(self) -> float:
        if self._ni == len(self._n):
            self._n = self._rng.standard_normal(256).tolist()
            self._ni = 0
        self._ni += 1
        return self._n[self._ni - 1]

    def uniform(self) -> float:
        if self._ui == len(self._u):
            self._u = self._rng.random(256).tolist()
            self._ui = 0
        self._ui += 1
        return self._u[self._ui - 1]


__all__ = [
    "NUMERIC_KINDS",
    "SIGNAL_KINDS",
    "STREAM_DRIFT",
    "STREAM_DROPOUTS",
    "STREAM_NOISE",
    "STREAM_NOISE_SIGNAL",
    "STREAM_SPAN",
    "STREAM_SPIKES",
    "Draws",
    "SensorSpec",
    "SignalKind",
    "SpecBook",
    "Streams",
    "WeigherSpec",
    "infer_kind",
]
