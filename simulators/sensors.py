"""The sensor layer: turns the plant's true signals into what the instruments report.

It is separate from the truth and seeded independently of the plant (its own seed-sequence
domain), so the same process can be measured by differently-behaving instruments.

A `SensorLayer` is an ordered list of effects (`simulators.sensor_effects`) applied in place to
a dict of values, one call per measurement instant. The default layer, in the order they act:

1. `WeigherEffect` – each belt weigher has a fixed span error (drawn per seed, 1-sigma 0.4 %,
   i.e. within class 1) applied to its rate and to the *increments* of its totalizer, so the
   totalizer stays monotone; injected zero/span drift acts on both the same way;
2. `BiasDrift` – zero/span bias and drift (random walk + ramp) of any other signal;
3. `TransportDelay`, `Lag` (T90: O2 analysers 10 s, gas detectors 60 s by default);
4. `GaussianNoise` – white noise per signal, relative to the reading and/or absolute;
5. `SampleHold`, `Spikes`;
6. `Floor` – instruments do not report below their lower limit (0 for masses, flows, ppm);
7. `Quantise` – display resolution (1 kg = 0.001 t on totalizers), then `Totalizer`
   (rollover at a modulus, reset to 0);
8. `Stuck`, `Dropout` (the key is removed: that signal is not published this time) and
   `ClockSkew` (only the source timestamp of `measure_timed` changes).

Background random faults are off: scenarios inject them with `apply_event`, which takes effect
over the event's window; `active_faults(t)` is the ground truth of what is injected when.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulators.plant import SENSOR_DOMAIN, SIGNALS, seeded_stream
from simulators.sensor_effects import (
    BiasDrift,
    ClockSkew,
    Dropout,
    FaultHandler,
    Floor,
    GaussianNoise,
    Lag,
    Quantise,
    SampleHold,
    SensorEffect,
    SpikeRecord,
    Spikes,
    Stuck,
    Totalizer,
    TransportDelay,
    WeigherEffect,
)
from simulators.sensor_events import EVENT_KINDS, EVENT_PARAMS, Fault, parse_event
from simulators.sensor_specs import (
    STREAM_NOISE,
    STREAM_SPAN,
    SensorSpec,
    SpecBook,
    Streams,
    WeigherSpec,
)

# Noise per domain.md §2 (1-sigma). FS-based figures are converted with the config ranges:
# dry.press_abs 0.25 % of 1013 mbar, dry.mass 0.1 % of 5000 kg, cond.tank_mass 0.2 % of 2000 kg,
# feed.item_mass 0.05 % of 600 kg, bins 0.25 % of 2000 kg, bag.net_mass 0.1 % of 1000 kg.
# A name the plant does not report is simply never seen.
DEFAULT_SENSOR_SPECS: dict[str, SensorSpec] = {
    "bw_feed.total": SensorSpec(quantum=0.001),  # span error only (WeigherEffect); 1 kg display
    "bw_feed.rate": SensorSpec(noise_rel=0.03),
    "shr.power": SensorSpec(noise_rel=0.01),
    "shr.current": SensorSpec(noise_rel=0.01),
    "shr.o2_a": SensorSpec(noise_abs=0.05, t90_s=10.0),
    "shr.o2_b": SensorSpec(noise_abs=0.05, t90_s=10.0),
    "dry.jacket_temp": SensorSpec(noise_abs=0.3, floor=None),
    "dry.press_abs": SensorSpec(noise_abs=2.5),
    "dry.mass": SensorSpec(noise_abs=5.0),
    "cond.tank_mass": SensorSpec(noise_abs=4.0),
    "bm.rate": SensorSpec(noise_rel=0.03),
    "bm.total": SensorSpec(quantum=0.001),
    "gas.h2": SensorSpec(noise_abs=5.0, t90_s=60.0),
    "gas.voc": SensorSpec(noise_rel=0.05, t90_s=60.0),
    "therm.hotspot_max": SensorSpec(noise_abs=2.0, floor=None),
    # Signals added with the full signal list (each has its own noise stream).
    "feed.item_mass": SensorSpec(noise_abs=0.3, quantum=0.1),
    "shr.torque_pct": SensorSpec(noise_rel=0.01),
    "shr.speed": SensorSpec(noise_rel=0.01),
    "n2.flow": SensorSpec(noise_rel=0.02),
    "shr.press": SensorSpec(noise_abs=0.2, floor=None),
    "shr.gas_temp": SensorSpec(noise_abs=0.3, floor=None),
    "gas.co": SensorSpec(noise_abs=2.0, t90_s=60.0),
    "gas.hf": SensorSpec(noise_abs=0.2, t90_s=60.0),
    "shr.outlet_temp_ir": SensorSpec(noise_abs=2.0, floor=None),
    "dry.product_temp": SensorSpec(noise_abs=0.3, floor=None),
    "dry.vac_pump_power": SensorSpec(noise_rel=0.01),
    "dry.agitator_speed": SensorSpec(noise_rel=0.01),
    "dry.agitator_torque": SensorSpec(noise_rel=0.01),
    "cond.temp": SensorSpec(noise_abs=0.3, floor=None),
    "scr.vib_freq": SensorSpec(noise_rel=0.01),
    "scr.amplitude": SensorSpec(noise_rel=0.01),
    "ac.air_vel": SensorSpec(noise_rel=0.01),
    "ecs.rotor_speed": SensorSpec(noise_rel=0.01),
    "mill.speed": SensorSpec(noise_rel=0.01),
    "bin_fe.mass": SensorSpec(noise_abs=5.0),
    "bin_alcu.mass": SensorSpec(noise_abs=5.0),
    "bin_pl.mass": SensorSpec(noise_abs=5.0),
    "dust.mass": SensorSpec(noise_abs=5.0),
    "bag.net_mass": SensorSpec(noise_abs=1.0, quantum=0.1),
    "bm.moisture": SensorSpec(noise_abs=0.2),
    # The reference the feed weigher is checked against at batch boundaries: exact but for its
    # 0.1 kg display. A static scale's ~0.05 % error is left out on purpose (no span_bias):
    # SensorSpec's is fixed, not drawn per seed, and the reference must not drift the check.
    "feed.scale_total": SensorSpec(quantum=0.1),
}

# The signals whose noise comes from the original single block of normals per call, in its
# original order: keeping it makes their readings identical to earlier versions for a seed.
LEGACY_NOISE_BLOCK: tuple[str, ...] = (
    "bw_feed.rate",
    "shr.power",
    "shr.current",
    "shr.o2_a",
    "shr.o2_b",
    "dry.jacket_temp",
    "dry.press_abs",
    "dry.mass",
    "cond.tank_mass",
    "bm.rate",
    "gas.h2",
    "gas.voc",
    "therm.hotspot_max",
)

DEFAULT_WEIGHERS: tuple[WeigherSpec, ...] = (WeigherSpec("bw_feed"), WeigherSpec("bm"))


def _fitting_defaults(
    specs: Mapping[str, SensorSpec], signals: Mapping[str, object]
) -> dict[str, SensorSpec]:
    """The built-in specs minus those that do not suit the kind the plant gives a signal."""
    out: dict[str, SensorSpec] = {}
    for name, spec in specs.items():
        try:
            SpecBook({name: spec}, signals)
        except ValueError:
            continue  # e.g. the plant reports it as a state: it gets no noise then
        out[name] = spec
    return out


class SensorLayer:
    """An ordered list of effects; `measure` runs them on a copy of the true signals.

    `book` gives signal kinds for event validation (default: inferred from names); `known`, if
    given, is the set of signal names an event may name (weigher device names are accepted too).
    """

    def __init__(
        self,
        effects: list[SensorEffect],
        *,
        book: SpecBook | None = None,
        known: Iterable[str] | None = None,
    ) -> None:
        self.effects = effects
        self._book = book if book is not None else SpecBook({})
        self._known = frozenset(known) if known is not None else None
        self._faults: list[Fault] = []

    @classmethod
    def default(
        cls,
        *,
        seed: int,
        specs: Mapping[str, SensorSpec] | None = None,
        weighers: Iterable[WeigherSpec] = DEFAULT_WEIGHERS,
        signals: Mapping[str, object] | None = None,
    ) -> SensorLayer:
        """The standard instrument set. `signals` (default: the plant's `SIGNALS`) maps names
        to `SignalInfo`-like objects or kind strings; it sets kinds, units and the names events
        may use. Explicit `specs` are checked against the kinds (ValueError if unsuitable)."""
        table: Mapping[str, object] = SIGNALS if signals is None else signals
        chosen = _fitting_defaults(DEFAULT_SENSOR_SPECS, table) if specs is None else specs
        book = SpecBook(chosen, table)
        streams = Streams(seed)
        noise = GaussianNoise(
            book, seeded_stream(seed, SENSOR_DOMAIN, STREAM_NOISE), streams, block=LEGACY_NOISE_BLOCK
        )
        effects: list[SensorEffect] = [
            WeigherEffect(weighers, seeded_stream(seed, SENSOR_DOMAIN, STREAM_SPAN), streams),
            BiasDrift(book, streams),
            TransportDelay(book),
            Lag(book),
            noise,
            SampleHold(book),
            Spikes(book, streams, noise),
            Floor(book),
            Quantise(book),
            Totalizer(book),
            Stuck(),
            Dropout(streams),
            ClockSkew(),
        ]
        return cls(effects, book=book, known=table.keys())

    # -- measuring -------------------------------------------------------------------------
    def _run(self, true_signals: Mapping[str, Any], t: float) -> tuple[dict[str, Any], dict[str, float]]:
        values = dict(true_signals)
        stamps: dict[str, float] = {}
        for effect in self.effects:
            timed = getattr(effect, "apply_timed", None)
            if timed is not None:
                timed(t, values, stamps)
            else:
                effect.apply(t, values)
        return values, stamps

    def measure(self, true_signals: Mapping[str, float], t: float) -> dict[str, float]:
        """Measured values at plant time `t` (epoch seconds); the input is not modified.

        A signal missing from the result is not reported this time (a dropout)."""
        return self._run(true_signals, t)[0]

    def measure_timed(self, true_signals: Mapping[str, float], t: float) -> dict[str, tuple[float, float]]:
        """Like `measure`, with each reading's source timestamp: (value, source epoch seconds).

        The source time is t, except under clock skew (t + offset), sample-and-hold (the time
        of the sample) and a stuck fault with `freeze_timestamp`."""
        values, stamps = self._run(true_signals, t)
        return {name: (v, stamps.get(name, t)) for name, v in values.items()}

    # -- fault injection -------------------------------------------------------------------
    def _devices(self) -> frozenset[str]:
        out: set[str] = set()
        for e in self.effects:
            out |= getattr(e, "devices", frozenset())
        return frozenset(out)

    def apply_event(self, kind: str, params: Mapping[str, Any], t: float) -> None:
        """Inject an instrument fault starting at plant epoch time `t` (see `EVENT_PARAMS`).

        Raises ValueError for an unknown kind, bad parameters, an unknown signal, or a signal
        the fault cannot act on (e.g. noise on a state); nothing is registered then."""
        fault = parse_event(kind, params, t)
        devices = self._devices()
        handlers = [e for e in self.effects if hasattr(e, "handles") and hasattr(e, "add_fault")]
        targets: list[tuple[FaultHandler, str]] = []
        for name in fault.signals:
            is_device = name in devices
            if self._known is not None and name not in self._known and not is_device:
                raise ValueError(f"{kind}: unknown signal {name!r}")
            sig_kind = "device" if is_device else self._book.kind(name)
            allowed = EVENT_KINDS[kind]
            if sig_kind not in allowed:
                article = "an" if sig_kind[0] in "aeiou" else "a"
                raise ValueError(
                    f"{kind} cannot act on {name!r}, {article} {sig_kind} signal "
                    f"(it acts on: {', '.join(sorted(allowed))})"
                )
            handler = next((h for h in handlers if h.handles(kind, name)), None)
            if handler is None:
                raise ValueError(f"{kind}: this sensor layer has no effect that handles {name!r}")
            targets.append((handler, name))
        for handler, name in targets:
            handler.add_fault(fault, name)
        self._faults.append(fault)

    @property
    def faults(self) -> list[Fault]:
        """Every injected fault, in the order injected (generated dropouts not included)."""
        return list(self._faults)

    def active_faults(self, t: float) -> list[dict[str, Any]]:
        """The faults acting at plant time t, as dicts (kind, signals, start, end, params[, parent]).

        Includes each dropout a `sensor.dropouts` process has generated that covers t."""
        out = [f.as_dict() for f in self._faults if f.active(t)]
        for e in self.effects:
            generated = getattr(e, "generated_faults", None)
            if generated is not None:
                out.extend(f.as_dict() for f in generated(t))
        return out

    def drain_spikes(self) -> list[SpikeRecord]:
        """The spikes injected since the last call (ground truth for spike-detection scoring)."""
        out: list[SpikeRecord] = []
        for e in self.effects:
            if isinstance(e, Spikes):
                out.extend(e.log)
                e.log.clear()
        return out


__all__ = [
    "DEFAULT_SENSOR_SPECS",
    "DEFAULT_WEIGHERS",
    "EVENT_PARAMS",
    "LEGACY_NOISE_BLOCK",
    "BiasDrift",
    "ClockSkew",
    "Dropout",
    "Fault",
    "Floor",
    "GaussianNoise",
    "Lag",
    "Quantise",
    "SampleHold",
    "SensorEffect",
    "SensorLayer",
    "SensorSpec",
    "SpikeRecord",
    "Spikes",
    "Stuck",
    "Totalizer",
    "TransportDelay",
    "WeigherEffect",
    "WeigherSpec",
]
