"""Fault events for the sensor layer: the event catalogue, parameter validation, fault records.

A scenario injects an instrument fault with `SensorLayer.apply_event(kind, params, t)`; this
module turns (kind, params, t) into a `Fault`: which signals, from when to when, with which
validated parameters. Every mistake (unknown kind, unknown or missing parameter, a value out
of range) is a ValueError that names the event and the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_REQUIRED = object()

# Checks: a predicate on a number and the phrase used when it fails.
_CHECKS: dict[str, tuple[Any, str]] = {
    "pos": (lambda v: v > 0, "> 0"),
    "nonneg": (lambda v: v >= 0, ">= 0"),
    "finite": (lambda v: True, "finite"),
    "prob": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "rel": (lambda v: v > -1, "> -1"),
}

# kind -> {parameter: (default or _REQUIRED, check)}; every event also takes `signal` or
# `signals` (a name or a list of names).
EVENT_PARAMS: dict[str, dict[str, tuple[Any, str]]] = {
    "sensor.spikes": {
        "probability": (_REQUIRED, "prob"),  # per published sample
        "sigma_mult_min": (10.0, "pos"),
        "sigma_mult_max": (50.0, "pos"),
        "tail_alpha": (1.0, "pos"),  # Pareto shape of |magnitude| on [min, max]; smaller = heavier
        "sigma": (None, "pos"),  # absolute sigma; default: the channel's noise sigma
        "sigma_rel": (0.01, "pos"),  # fallback when the channel has no noise: fraction of |reading|
        "duration_s": (None, "pos"),
    },
    "sensor.dropout": {"duration_s": (None, "pos")},
    "sensor.dropouts": {
        "rate_per_h": (_REQUIRED, "pos"),  # Poisson starts
        "mean_length_s": (_REQUIRED, "pos"),  # lognormal lengths with this mean
        "length_sigma": (1.0, "nonneg"),  # sigma of ln(length)
        "duration_s": (None, "pos"),
    },
    "sensor.stuck": {
        "duration_s": (None, "pos"),
        "value": (None, "finite"),  # stuck at this value instead of the last reported one
        "freeze_timestamp": (False, "bool"),  # the source timestamp stops too (frozen data)
    },
    "sensor.zero_drift": {
        "ramp_per_h": (0.0, "finite"),
        "duration_h": (None, "pos"),  # length of the ramp; the offset reached then persists
        "offset": (0.0, "finite"),  # a zero step at the start (zero bias)
    },
    "sensor.span_drift": {
        "total_rel": (_REQUIRED, "rel"),
        "over_h": (0.0, "nonneg"),  # 0 = a span step
    },
    "sensor.clock_skew": {"offset_s": (_REQUIRED, "finite"), "duration_s": (None, "pos")},
    "sensor.rollover": {"modulus": (_REQUIRED, "pos")},
    "sensor.reset": {},
    "sensor.lag": {"t90_s": (_REQUIRED, "nonneg"), "duration_s": (None, "pos")},
    "sensor.noise": {
        "noise_rel": (None, "nonneg"),
        "noise_abs": (None, "nonneg"),
        "duration_s": (None, "pos"),
    },
}

# Which signal kinds an event may target ("device" = a belt weigher device name).
EVENT_KINDS: dict[str, frozenset[str]] = {
    "sensor.spikes": frozenset({"analog"}),
    "sensor.noise": frozenset({"analog"}),
    "sensor.lag": frozenset({"analog"}),
    "sensor.zero_drift": frozenset({"analog", "total", "device"}),
    "sensor.span_drift": frozenset({"analog", "total", "device"}),
    "sensor.rollover": frozenset({"total", "counter"}),
    "sensor.reset": frozenset({"total", "counter"}),
    "sensor.dropout": frozenset({"analog", "total", "counter", "state", "id"}),
    "sensor.dropouts": frozenset({"analog", "total", "counter", "state", "id"}),
    "sensor.stuck": frozenset({"analog", "total", "counter", "state", "id"}),
    "sensor.clock_skew": frozenset({"analog", "total", "counter", "state", "id"}),
}


@dataclass(slots=True)
class Fault:
    """One injected fault: `kind` acts on `signals` over [start, end) (end None = until the end).

    Drifts, rollovers and resets persist once started (an instrument does not un-drift), so
    their `end` is None; `params` keeps the validated parameters (ramp lengths are there).
    `parent` names the process a generated fault came from (a dropout of `sensor.dropouts`).
    """

    kind: str
    signals: tuple[str, ...]
    start: float
    end: float | None
    params: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None

    def active(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "signals": list(self.signals),
            "start": self.start,
            "end": self.end,
            "params": dict(self.params),
        }
        if self.parent is not None:
            out["parent"] = self.parent
        return out


def _signals(kind: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    if ("signal" in params) == ("signals" in params):
        raise ValueError(f"{kind}: give exactly one of 'signal' or 'signals' (a name or a list of names)")
    raw = params["signal"] if "signal" in params else params["signals"]
    names = (raw,) if isinstance(raw, str) else raw
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"{kind}: 'signal' must be a name or a non-empty list of names, got {raw!r}")
    for n in names:
        if not isinstance(n, str) or not n:
            raise ValueError(f"{kind}: signal names must be non-empty strings, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind}: a signal is listed twice in {list(names)}")
    return tuple(names)


def _value(kind: str, name: str, value: Any, check: str) -> Any:
    if check == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{kind}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{kind}: {name} must be a number, got {value!r}")
    v = float(value)
    ok, phrase = _CHECKS[check]
    if not math.isfinite(v) or not ok(v):
        raise ValueError(f"{kind}: {name} must be {phrase}, got {value!r}")
    return v


def parse_event(kind: str, params: Mapping[str, Any], t: float) -> Fault:
    """Validate an event and build its fault record (not yet bound to any effect)."""
    if kind not in EVENT_PARAMS:
        raise ValueError(f"unknown sensor event {kind!r} (known: {', '.join(sorted(EVENT_PARAMS))})")
    if not isinstance(params, Mapping):
        raise ValueError(f"{kind}: params must be a mapping, got {type(params).__name__}")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ValueError(f"{kind}: the start time must be a finite number (epoch seconds), got {t!r}")
    schema = EVENT_PARAMS[kind]
    unknown = sorted(set(params) - set(schema) - {"signal", "signals"})
    if unknown:
        raise ValueError(
            f"{kind}: unknown parameter(s) {', '.join(unknown)} "
            f"(known: signal, {', '.join(schema) or '(none)'})"
        )
    signals = _signals(kind, params)
    values: dict[str, Any] = {}
    for name, (default, check) in schema.items():
        if name in params and params[name] is not None:
            values[name] = _value(kind, name, params[name], check)
        elif default is _REQUIRED:
            raise ValueError(f"{kind}: missing parameter {name!r}")
        else:
            values[name] = default
    _cross_check(kind, values)
    start = float(t)
    duration = values.get("duration_s")
    end = None if duration is None else start + duration
    return Fault(kind, signals, start, end, values)


def _cross_check(kind: str, v: dict[str, Any]) -> None:
    if kind == "sensor.spikes" and v["sigma_mult_max"] < v["sigma_mult_min"]:
        raise ValueError(f"{kind}: sigma_mult_max must be >= sigma_mult_min")
    if kind == "sensor.zero_drift":
        if v["ramp_per_h"] == 0 and v["offset"] == 0:
            raise ValueError(f"{kind}: give a non-zero ramp_per_h (with duration_h) or offset")
        if v["ramp_per_h"] != 0 and v["duration_h"] is None:
            raise ValueError(f"{kind}: a ramp needs duration_h (how long the zero keeps drifting)")
    if kind == "sensor.noise":
        if v["noise_rel"] is None and v["noise_abs"] is None:
            raise ValueError(f"{kind}: give noise_rel and/or noise_abs")
        v["noise_rel"] = v["noise_rel"] or 0.0
        v["noise_abs"] = v["noise_abs"] or 0.0


__all__ = ["EVENT_KINDS", "EVENT_PARAMS", "Fault", "parse_event"]
