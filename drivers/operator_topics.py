"""The operator topic contract: MQTT topic names and JSON payloads, as pure functions.

The MQTT output driver publishes what these functions build; the README and tests use them to
state and check the contract. The tree follows the ISA-95 unified-namespace habit of
`<prefix>/<site>/<area>/<line>/...`; every topic is retained, so a dashboard that connects later
sees the current state at once.

    <base>/status                  {"state": "online", "since": ..., "gateway": "linegate"}
                                   {"state": "offline"}            (Last Will: the gateway died)
                                   {"state": "offline", "reason": "shutdown"}   (clean stop)
    <base>/signals/<tag name>      {"value", "unit", "quality", "timestamp"}
    <base>/kpi/yield_rolling       {"value" (%), "unit", "quality", "timestamp", "uncertainty" (pp,
                                    2 sigma), "uncertainty_kind", "basis", "window_h", "covered_h",
                                    "coverage", "delay_min", "feed_t", "black_mass_t"}
    <base>/kpi/feed_rate           {"value" (t/h), "unit", "quality", "timestamp", "vs_nameplate"}
    <base>/kpi/black_mass_rate     {"value" (t/h), "unit", "quality", "timestamp"}

Conventions: `value` is null whenever there is no finite number to show (never NaN, which JSON
lacks); `quality` is one of good, uncertain, bad, stale; `timestamp` is plant time (the source
timestamps the figure is computed from) as ISO 8601 UTC with milliseconds and a `Z`, while the
birth's `since` is the gateway's wall clock. Payloads are compact UTF-8 JSON.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Final

from gateway.config import LineConfig
from gateway.ports import FlowFigure, PipelineUpdate, SignalState, YieldFigure
from gateway.samples import Quality

GATEWAY: Final = "linegate"
DEFAULT_PREFIX: Final = "linegate"
STATUS: Final = "status"
YIELD_ROLLING: Final = "kpi/yield_rolling"
FEED_RATE: Final = "kpi/feed_rate"
BLACK_MASS_RATE: Final = "kpi/black_mass_rate"


def base_topic(config: LineConfig, prefix: str | None = None) -> str:
    """`<prefix>/<site>/<area>/<line>`; the prefix defaults to the config's MQTT output prefix."""
    if prefix is None:
        prefix = config.outputs.mqtt.prefix if config.outputs.mqtt is not None else DEFAULT_PREFIX
    line = config.line
    return f"{prefix}/{line.site}/{line.area}/{line.name}"


def status_topic(base: str) -> str:
    return f"{base}/{STATUS}"


def signal_topic(base: str, tag_name: str) -> str:
    # Tag names match `[a-z][a-z0-9_]*(\.[a-z0-9_]+)*`, so they never hold '/', '+' or '#'.
    return f"{base}/signals/{tag_name}"


def iso_ms(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. `2024-05-01T12:00:00.125Z`.

    Raises `ValueError` for a non-finite time or one outside the years 1..9999.
    """
    if not math.isfinite(t):
        raise ValueError(f"time {t!r} is not finite")
    # Round once, so 59.9996 s becomes the next minute rather than "59.1000". float() first:
    # round() of a numpy scalar would not return a Python int.
    ms = round(float(t) * 1000)
    try:
        whole = datetime.fromtimestamp(ms // 1000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"time {t!r} cannot be shown as a date") from exc
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def birth_payload(since: float) -> bytes:
    return _dump({"state": "online", "since": iso_ms(since), "gateway": GATEWAY})


def will_payload() -> bytes:
    return _dump({"state": "offline"})


def shutdown_payload() -> bytes:
    return _dump({"state": "offline", "reason": "shutdown"})


def signal_payload(s: SignalState) -> bytes:
    return _dump(
        {
            "value": _num(s.value),
            "unit": s.unit,
            "quality": Quality(s.quality).label,
            "timestamp": _ts(s.t),
        }
    )


def yield_payload(y: YieldFigure) -> bytes:
    """The rolling yield in percent; its uncertainty in percentage points (2 sigma)."""
    return _dump(
        {
            "value": _num(_scaled(y.value, 100.0), 3),
            "unit": "%",
            "quality": Quality(y.quality).label,
            "timestamp": _ts(y.t),
            "uncertainty": _num(_scaled(y.uncertainty, 100.0), 3),
            "uncertainty_kind": "2sigma",
            "basis": y.basis,
            "window_h": _num(y.window_h, 3),
            "covered_h": _num(y.covered_h, 3),
            "coverage": _num(y.coverage, 4),
            "delay_min": _num(y.delay_min, 2),
            "feed_t": _num(y.feed_t, 3),
            "black_mass_t": _num(y.black_mass_t, 3),
        }
    )


def flow_payloads(f: FlowFigure) -> dict[str, bytes]:
    """Payloads for the two flow KPIs, keyed by topic suffix (`FEED_RATE`, `BLACK_MASS_RATE`).

    The flows carry no quality of their own: a figure that could be computed is good, a missing
    one is bad.
    """
    feed = _num(f.feed_tph, 4)
    bm = _num(f.black_mass_tph, 4)
    ts = _ts(f.t)
    return {
        FEED_RATE: _dump(
            {
                "value": feed,
                "unit": "t/h",
                "quality": "good" if feed is not None else "bad",
                "timestamp": ts,
                "vs_nameplate": _num(f.feed_vs_nameplate, 4),
            }
        ),
        BLACK_MASS_RATE: _dump(
            {
                "value": bm,
                "unit": "t/h",
                "quality": "good" if bm is not None else "bad",
                "timestamp": ts,
            }
        ),
    }


def update_messages(update: PipelineUpdate, base: str) -> dict[str, bytes]:
    """Every retained topic one pipeline update sets, with its payload (topic -> bytes)."""
    out: dict[str, bytes] = {}
    for s in update.signals:
        out[signal_topic(base, s.name)] = signal_payload(s)
    if update.yield_rolling is not None:
        out[f"{base}/{YIELD_ROLLING}"] = yield_payload(update.yield_rolling)
    if update.flows is not None:
        for suffix, payload in flow_payloads(update.flows).items():
            out[f"{base}/{suffix}"] = payload
    return out


def _num(x: float | None, ndigits: int | None = None) -> float | None:
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, ndigits) if ndigits is not None else x


def _scaled(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor


def _ts(t: float) -> str | None:
    # Plant time comes from validated source timestamps; should one still be unusable, the
    # payload says "unknown" rather than the output failing.
    try:
        return iso_ms(t)
    except ValueError:
        return None


def _dump(obj: dict[str, object]) -> bytes:
    # allow_nan=False: JSON has no NaN; _num already turned non-finite numbers into null.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
