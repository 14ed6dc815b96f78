"""The operator topic contract: MQTT topic names and JSON payloads, as pure functions.

The MQTT output driver and the command channel publish what these functions build; the README
and tests use them to state and check the contract. The tree follows the ISA-95
unified-namespace habit of `<prefix>/<site>/<area>/<line>/...`. State topics are retained, so a
dashboard that connects later sees the current state at once; events and command results are
not (a late subscriber must not take an old transition or answer for a new one).

    <base>/status                  {"state": "online", "since": ..., "gateway": "linegate"}
                                   {"state": "offline"}            (Last Will: the gateway died)
                                   {"state": "offline", "reason": "shutdown"}   (clean stop)
    <base>/signals/<tag name>      {"value", "unit", "quality", "timestamp"}
    <base>/kpi/yield_rolling       {"value" (%), "unit", "quality", "timestamp", "uncertainty" (pp,
                                    2 sigma), "uncertainty_kind", "basis", "window_h", "covered_h",
                                    "coverage", "delay_min", "feed_t", "black_mass_t"}
    <base>/kpi/yield_shift         the same for the running shift so far, plus "shift" (its local
                                   start, ISO 8601) and "final": false
    <base>/kpi/yield_shift_final   the last shift that ended ("final": true), once per shift
    <base>/kpi/yield_lot           the last lot closed out (its modelled tail < 1 %), with "lot"
    <base>/kpi/operations          over the rolling window: specific energy (kWh/t), N2 (Nm3/t),
                                   condensate (kg/t), availability, performance, OEE (quality
                                   assumed 1: no on-spec measurement yet), EV equivalents
    <base>/kpi/feed_rate           {"value" (t/h), "unit", "quality", "timestamp", "vs_nameplate"}
    <base>/kpi/black_mass_rate     {"value" (t/h), "unit", "quality", "timestamp"}
    <base>/status/metrics          the gateway's own metrics every runtime.metrics_interval_s:
                                   {"timestamp", "tick_ms", "latency_ms", "pipeline_ms", "tick_errors", "samples_in",
                                    "samples_out", "dropped": {"bus_full", "out_of_order",
                                    "out_of_range"}, "bus_depth", "queues": {<output>: {"depth",
                                    "dropped"}},
                                    "alarms_active", "cpu_percent", "rss_mb", "buffer": {"points",
                                    "bytes", "age_s", "dropped_points", "replayed_points",
                                    "written_points", "rejected_points", "refused_points"},
                                    "drivers": [{"name", "kind", "connected", "connects",
                                    "failures"}]}
    <base>/alarms/active/<id>      {"id", "kind", "subject", "severity", "text", "since"} while the
                                   alarm is active; an empty retained payload (which deletes the
                                   retained message) once it clears
    <base>/alarms/events           not retained, one per transition: {"event": "raised"|"cleared",
                                   "id", "kind", "subject", "severity", "text", "since", "timestamp"}
    <base>/commands/<setpoint>/set     operator -> gateway (see drivers.mqtt_commands)
    <base>/commands/<setpoint>/result  not retained: {"request_id", "setpoint", "status",
                                   "reason", "value", "readback", "duplicate", "decided_at"}

Conventions: `value` is null whenever there is no finite number to show (never NaN, which JSON
lacks); `quality` is one of good, uncertain, bad, stale; `timestamp` and an alarm's `since` are
plant time (the source timestamps the figure is computed from) as ISO 8601 UTC with
milliseconds and a `Z`, while the birth's `since` and a result's `decided_at` are the gateway's
wall clock. Alarm ids are `<kind>:<subject>` (`tag_stale:shr.power`); ':' is an ordinary
character in an MQTT topic level. Payloads are compact UTF-8 JSON.

A signal topic is published again only when the change is significant (`significant_change`):
its quality changed, or its value moved by more than the tag's `deadband` (any change when the
deadband is 0). The output driver compares with what it last published, so slow drift is
published once it adds up to more than the deadband.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import numpy as np

from gateway.alarms import Alarm, AlarmEvent
from gateway.commands import CommandResult
from gateway.config import LineConfig
from gateway.kpis import KpiFigures
from gateway.ports import FlowFigure, PipelineUpdate, SignalRow, SignalState, YieldFigure
from gateway.samples import Quality
from gateway.self_metrics import GatewayMetrics

GATEWAY: Final = "linegate"
DEFAULT_PREFIX: Final = "linegate"
STATUS: Final = "status"
YIELD_ROLLING: Final = "kpi/yield_rolling"
YIELD_SHIFT: Final = "kpi/yield_shift"  # the running shift so far
YIELD_SHIFT_FINAL: Final = "kpi/yield_shift_final"  # the last shift that ended
YIELD_LOT: Final = "kpi/yield_lot"  # the last lot closed out
OPERATIONS: Final = "kpi/operations"  # energy, N2, condensate per tonne; availability, OEE
FEED_RATE: Final = "kpi/feed_rate"
BLACK_MASS_RATE: Final = "kpi/black_mass_rate"
ALARMS_ACTIVE: Final = "alarms/active"
ALARM_EVENTS: Final = "alarms/events"
COMMANDS: Final = "commands"
# An empty retained publish deletes the broker's retained message on that topic (MQTT 3.3.1.3).
DELETE_RETAINED: Final = b""
# Quality code -> payload label, looked up once per signal instead of building the enum.
_QUALITY_LABELS: Final = {int(q): q.label for q in Quality}
# Plant times (ms) that numpy writes exactly as `iso_ms` does: years 1000 to 9999 (strftime does
# not zero-pad a year below 1000). Any other time goes through `iso_ms` itself.
_NUMPY_ISO_MS: Final = (-30_610_224_000_000, 253_402_300_799_999)
# Characters that may not appear inside one topic level we build from data.
_NOT_IN_LEVEL: Final = ("/", "+", "#", "\x00")


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


def alarm_topic(base: str, alarm_id: str) -> str:
    """`<base>/alarms/active/<alarm id>`. Raises `ValueError` for an id that is no single level."""
    _check_level(alarm_id, "alarm id")
    return f"{base}/{ALARMS_ACTIVE}/{alarm_id}"


def alarm_events_topic(base: str) -> str:
    return f"{base}/{ALARM_EVENTS}"


def command_filter(base: str) -> str:
    """The subscription for every setpoint's command topic, `<base>/commands/+/set`."""
    return f"{base}/{COMMANDS}/+/set"


def command_setpoint(base: str, topic: str) -> str | None:
    """The setpoint named by a command topic `<base>/commands/<setpoint>/set`, else None."""
    head = f"{base}/{COMMANDS}/"
    if not topic.startswith(head) or not topic.endswith("/set"):
        return None
    setpoint = topic[len(head) : -len("/set")]
    return setpoint if setpoint and "/" not in setpoint else None


def command_result_topic(base: str, setpoint: str) -> str:
    """`<base>/commands/<setpoint>/result`. Raises `ValueError` for a setpoint that is no level."""
    _check_level(setpoint, "setpoint")
    return f"{base}/{COMMANDS}/{setpoint}/result"


def _check_level(level: str, what: str) -> None:
    if not level or any(c in level for c in _NOT_IN_LEVEL):
        raise ValueError(f"{what} {level[:100]!r} cannot be one MQTT topic level")


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
    return signal_row_payload((s.name, s.unit, s.t, s.value, int(s.quality)))


def signal_row_payload(row: SignalRow) -> bytes:
    """`signal_payload` of one row of `PipelineUpdate.signal_rows()`: the same bytes, no objects.

    The reference for `signal_payloads`, which builds many at once.
    """
    _, unit, t, value, quality = row
    return _dump(
        {
            "value": _num(value),
            "unit": unit,
            "quality": _QUALITY_LABELS.get(quality) or Quality(quality).label,
            "timestamp": _ts(t),
        }
    )


def signal_payloads(rows: Sequence[SignalRow]) -> list[bytes]:
    """`signal_row_payload` of every row, byte for byte, for a whole tick at a time.

    json.dumps and a datetime per signal cost several microseconds each, which a 1,000-tag tick
    pays a thousand times: here the timestamps are formatted as one numpy column and each object
    is joined from its parts (a number by float repr, which is what json writes too).
    """
    stamps = _json_timestamps([row[2] for row in rows])
    units: dict[str, str] = {}
    out: list[bytes] = []
    for (_, unit, _, value, quality), stamp in zip(rows, stamps, strict=True):
        unit_json = units.get(unit)
        if unit_json is None:
            unit_json = units[unit] = json.dumps(unit, ensure_ascii=False)
        v = float(value)
        value_json = repr(v) if math.isfinite(v) else "null"
        label = _QUALITY_LABELS.get(quality) or Quality(quality).label
        out.append(
            f'{{"value":{value_json},"unit":{unit_json},"quality":"{label}","timestamp":{stamp}}}'.encode()
        )
    return out


def _json_timestamps(t: Sequence[float]) -> list[str]:
    """`_ts` of each time as JSON: a quoted ISO 8601 string, or null."""
    with np.errstate(over="ignore"):  # a time beyond float range in ms is iso_ms's to refuse
        ms = np.rint(np.asarray(t, np.float64) * 1000)  # as iso_ms: round half to even, in ms
    fast = (ms >= _NUMPY_ISO_MS[0]) & (ms <= _NUMPY_ISO_MS[1])  # False for NaN
    text = np.datetime_as_string(np.where(fast, ms, 0).astype(np.int64).astype("datetime64[ms]"), unit="ms")
    return [
        f'"{iso}Z"' if ok else json.dumps(_ts(x))
        for iso, ok, x in zip(text.tolist(), fast.tolist(), t, strict=True)
    ]


def yield_payload(y: YieldFigure) -> bytes:
    """A yield figure in percent; its uncertainty in percentage points (2 sigma). Shift figures
    also carry the shift (its local start) and whether it is final."""
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
            **({"shift": y.label, "final": y.final} if y.horizon == "shift" else {}),
            **({"lot": y.label} if y.horizon == "lot" else {}),
        }
    )


def operations_payload(k: KpiFigures) -> bytes:
    """The operator KPIs over the rolling window; quality good only when its inputs cover it."""
    return _dump(
        {
            "timestamp": _ts(k.t_end),
            "quality": "good" if k.good else "uncertain",
            "specific_energy_kwh_per_t": _num(k.specific_energy_kwh_per_t, 2),
            "nitrogen_nm3_per_t": _num(k.nitrogen_nm3_per_t, 3),
            "condensate_kg_per_t": _num(k.condensate_kg_per_t, 3),
            "availability": _num(k.availability, 4),
            "performance": _num(k.performance, 4),
            "oee": _num(k.oee, 4),
            "oee_assumes_quality_1": k.oee_assumes_quality_1,
            "ev_equivalents": _num(k.ev_equivalents_window, 1),
            "feed_t": _num(k.feed_t_window, 3),
            "coverage": _num(k.coverage, 4),
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


def alarm_payload(alarm: Alarm) -> bytes:
    """The retained state of an active alarm."""
    return _dump(_alarm_fields(alarm))


def alarm_event_payload(event: AlarmEvent) -> bytes:
    """One transition, raised or cleared; `timestamp` is when it happened (plant time)."""
    return _dump(
        {
            "event": "raised" if event.active else "cleared",
            **_alarm_fields(event.alarm),
            "timestamp": _ts(event.t),
        }
    )


def _alarm_fields(alarm: Alarm) -> dict[str, object]:
    return {
        "id": alarm.id,
        "kind": alarm.kind,
        "subject": alarm.subject,
        "severity": str(alarm.severity),
        "text": alarm.text,
        "since": _ts(alarm.since),
    }


def command_result_payload(result: CommandResult, *, request_id: str | None = None, now: float) -> bytes:
    """A command's result. `request_id` overrides the result's own (None for an unknown one,
    when a malformed command is answered on its MQTT 5 response topic); `now` stands in for a
    missing `decided_at` (wall time)."""
    decided = result.decided_at if result.decided_at is not None else now
    return _dump(
        {
            "request_id": request_id if request_id is not None else (result.request_id or None),
            "setpoint": result.setpoint,
            "status": str(result.status),
            "reason": result.reason,
            "value": _num(result.value),
            "readback": _num(result.readback),
            "duplicate": result.duplicate,
            "decided_at": _ts(decided),
            "code": result.code,
            "previous": _num(result.previous),
        }
    )


def significant_change(
    sent_value: float, sent_quality: Quality | int, value: float, quality: Quality | int, deadband: float
) -> bool:
    """Whether a signal moved enough since it was last published to be published again.

    A quality change always counts; so does a value appearing or disappearing (NaN). Otherwise
    the value must differ from the published one by more than `deadband` (by anything at 0).
    """
    if int(sent_quality) != int(quality):
        return True
    sent_nan, nan = math.isnan(sent_value), math.isnan(value)
    if sent_nan or nan:
        return sent_nan != nan
    if deadband <= 0:
        return value != sent_value
    return abs(value - sent_value) > deadband


def kpi_messages(update: PipelineUpdate, base: str) -> dict[str, bytes]:
    """The KPI topics one pipeline update sets (topic -> payload)."""
    out: dict[str, bytes] = {}
    if update.yield_rolling is not None:
        out[f"{base}/{YIELD_ROLLING}"] = yield_payload(update.yield_rolling)
    if update.yield_shift is not None:
        out[f"{base}/{YIELD_SHIFT}"] = yield_payload(update.yield_shift)
    for final in update.shifts_completed:
        out[f"{base}/{YIELD_SHIFT_FINAL}"] = yield_payload(final)
    for lot in update.lots_completed:
        out[f"{base}/{YIELD_LOT}"] = yield_payload(lot)
    if update.kpis is not None:
        out[f"{base}/{OPERATIONS}"] = operations_payload(update.kpis)
    if update.flows is not None:
        for suffix, payload in flow_payloads(update.flows).items():
            out[f"{base}/{suffix}"] = payload
    return out


def alarm_state_messages(update: PipelineUpdate, base: str) -> dict[str, bytes]:
    """Retained alarm state after an update: each active alarm, and a deletion for each cleared."""
    out: dict[str, bytes] = {}
    for event in update.alarm_events:
        if not event.active:
            out[alarm_topic(base, event.alarm.id)] = DELETE_RETAINED
    for alarm in update.active_alarms:
        out[alarm_topic(base, alarm.id)] = alarm_payload(alarm)
    return out


def event_messages(update: PipelineUpdate) -> list[bytes]:
    """The update's alarm transitions, in order, for `<base>/alarms/events` (not retained)."""
    return [alarm_event_payload(e) for e in update.alarm_events]


def metrics_payload(m: GatewayMetrics) -> bytes:
    b = m.buffer
    return _dump(
        {
            "timestamp": _ts(m.t),
            "tick_ms": _num(m.tick_ms, 3),
            "latency_ms": _num(m.latency_ms, 1),
            "pipeline_ms": _num(m.pipeline_ms, 3),
            "samples_out": m.samples_out,
            "dropped": {
                "bus_full": m.dropped_bus,
                "out_of_order": m.dropped_out_of_order,
                "out_of_range": m.rejected_range,
            },
            "bus_depth": m.bus_depth,
            "queues": {
                name: {"depth": d, "dropped": m.queue_dropped.get(name, 0)}
                for name, d in m.queue_depths.items()
            },
            "tick_errors": m.tick_errors,
            "samples_in": m.samples_in,
            "alarms_active": m.alarms_active,
            "cpu_percent": _num(m.cpu_percent, 1),
            "rss_mb": _num(m.rss_mb, 1),
            "buffer": {
                "points": b.points,
                "bytes": b.bytes,
                "age_s": _num(b.age_s, 1),
                "dropped_points": b.dropped_points,
                "replayed_points": b.replayed_points,
                "written_points": b.written_points,
                "rejected_points": b.rejected_points,
                "refused_points": b.refused_points,
            },
            "drivers": [
                {
                    "name": d.name,
                    "kind": d.kind,
                    "connected": d.connected,
                    "connects": d.connects,
                    "failures": d.failures,
                }
                for d in m.drivers
            ],
        }
    )


def update_messages(update: PipelineUpdate, base: str) -> dict[str, bytes]:
    """Every retained topic one pipeline update sets, with its payload (topic -> bytes).

    An empty payload (`DELETE_RETAINED`) deletes the topic's retained message.
    """
    rows = update.signal_rows()
    out = {signal_topic(base, row[0]): p for row, p in zip(rows, signal_payloads(rows), strict=True)}
    out.update(kpi_messages(update, base))
    out.update(alarm_state_messages(update, base))
    if update.metrics is not None:
        out[f"{status_topic(base)}/metrics"] = metrics_payload(update.metrics)
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
