"""InfluxDB line protocol for everything the gateway historises: the schema lives here.

Every timestamp is plant time (the source timestamp) in ms, except the control audit's, which
is the wall-clock time of the decision. Series tags common to all points: `line`, `site`.
Every point also carries the int field `seq` when `sequence_field` is on: its acceptance number
in the durable buffer, contiguous and never reused, so a gap (loss) or a repeat is visible in
InfluxDB itself (the README's "Historian schema" has the same tables for users).

- `signal`, one point per conditioned sample: tag `tag` (the config tag name); fields `value`
  (float; omitted when NaN/inf, the point then carries only its quality), `quality` (string:
  good | uncertain | bad | stale).
- `kpi`, one point per yield figure: tags `kpi` (yield_rolling | yield_shift | yield_shift_final
  | yield_lot), `basis` (wet | dry | electrolyte_free); fields `value`, `uncertainty` (percent
  and 2-sigma percentage points, omitted when not computable), `coverage` (0..1), `quality`,
  `window_h`, `covered_h`, `delay_min`, `feed_t`, `black_mass_t`, and `shift` or `lot` (string
  label) on those horizons.
- `kpi` with tag `kpi=operations`: fields `specific_energy_kwh_per_t`, `nitrogen_nm3_per_t`,
  `condensate_kg_per_t`, `availability`, `performance`, `oee`, `ev_equivalents`, `feed_t`,
  `coverage`, `quality`.
- `flow`: fields `feed_tph`, `black_mass_tph`, `feed_vs_nameplate` (each omitted when unknown).
- `alarm`, one point per raise or clear: tags `kind`, `subject`, `severity`; fields `id`,
  `event` (raised | cleared), `active` (int 1 | 0), `text`.
- `control_audit`, one point per control decision: tags `setpoint`, `decision`, `request_id`;
  fields `seq_audit` (int, the audit log's own number), `operator`, `reason`, `code`, `value`,
  `previous`, `written`, `readback`.
- `gateway`, the gateway's own metrics every `runtime.metrics_interval_s` (wall clock): fields `tick_ms`,
  `latency_ms`, `pipeline_ms`, `tick_errors`, `samples_in`, `samples_out`, `dropped_bus`,
  `dropped_out_of_order`, `rejected_range`, `bus_depth`, `queue_<output>`, `queue_<output>_dropped`,
  `alarms_active`, `drivers_connected`, `drivers_total`,
  `cpu_percent`, `rss_mb`, `buffer_points`, `buffer_bytes`, `buffer_age_s`,
  `buffer_dropped_points`, `buffer_replayed_points`, `influx_written_points`,
  `influx_rejected_points`.
- `driver`, per driver at the same cadence: tags `driver`, `kind`; fields `connected` (int 0|1),
  `connects`, `failures` (int).

A point is identified by its series key and timestamp, so writing a batch again (after a write
whose answer was lost, or a replay after a crash) overwrites the same points: never a duplicate.
The reverse matters as much: two different points with the same key would overwrite each other.
So the encoder keeps each series' newest millisecond and never emits a second point there:
- a sample at or before its tag's newest one (a PLC re-sending its last value after a
  reconnect, a polled value whose source time did not move) is a repeat and is not written
  again (counted in `repeats_skipped`; the pipeline still sees it, for the stuck detectors);
- a figure (yield, KPIs, flows) is re-computed every tick but its time is its window's end: it
  is written once per window step, as the step completes (the MQTT topics carry every tick's);
- an alarm transition, a metrics sample or an audit record at a taken millisecond moves to the
  next free one, so a raise and its clear at one plant instant both stay on record.
The self-metrics (`gateway`, `driver`) are stamped with the gateway's wall clock: they describe
the gateway, not the plant, and must keep moving when every plant clock stands still.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gateway.alarms import AlarmEvent
from gateway.config import LineConfig
from gateway.kpis import KpiFigures
from gateway.ports import FlowFigure, PipelineUpdate, YieldFigure
from gateway.samples import Quality
from gateway.self_metrics import GatewayMetrics

_QUALITY_LABELS = tuple(q.label for q in Quality)
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def escape_tag(value: str) -> str:
    """Escape a tag key or value (also valid for the measurement) per the line protocol."""
    return value.translate(_TAG_ESCAPES)


def _tag(value: str) -> str:
    # An empty tag value is invalid line protocol; "-" stands for "none".
    return escape_tag(value) if value else "-"


_LINE_BREAKS = str.maketrans({"\n": " ", "\r": " "})


def _string_field(value: str) -> str:
    # A line break would end the point in the middle of its fields (an operator's reason, an
    # alarm text): it becomes a space.
    return '"' + value.translate(_LINE_BREAKS).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quality_label(code: int) -> str:
    return _QUALITY_LABELS[code] if 0 <= code < len(_QUALITY_LABELS) else Quality.BAD.label


def _float(x: float | None) -> str | None:
    """Line-protocol float, or None when InfluxDB could not store it (None, NaN, inf)."""
    if x is None:
        return None
    x = float(x)
    return repr(x) if math.isfinite(x) else None


def _ms(t: float) -> int:
    return round(t * 1000.0)


def _float_fields(*pairs: tuple[str, float | None]) -> list[str]:
    """`key=value` line-protocol fields, leaving out the values InfluxDB could not store."""
    fields: list[str] = []
    for key, x in pairs:
        text = _float(x)
        if text is not None:
            fields.append(f"{key}={text}")
    return fields


def _flow_fields(flow: FlowFigure) -> list[str]:
    return _float_fields(
        ("feed_tph", flow.feed_tph),
        ("black_mass_tph", flow.black_mass_tph),
        ("feed_vs_nameplate", flow.feed_vs_nameplate),
    )


def _yield_figures(update: PipelineUpdate) -> list[tuple[str, YieldFigure]]:
    """(kpi tag, figure) of every yield figure in an update: rolling, running shift, ended shifts."""
    out = [] if update.yield_rolling is None else [("yield_rolling", update.yield_rolling)]
    if update.yield_shift is not None:
        out.append(("yield_shift", update.yield_shift))
    out += [("yield_shift_final", f) for f in update.shifts_completed]
    out += [("yield_lot", f) for f in update.lots_completed]
    return out


def with_sequence(lines: list[str], first_seq: int) -> list[str]:
    """Each line with the int field `seq` = first_seq + its index, before its timestamp.

    Every line this module makes ends in ` <timestamp>`, and the timestamp is the only part
    after the last space (string fields may hold spaces, but they come before it)."""
    out: list[str] = []
    append = out.append
    for i, line in enumerate(lines):
        cut = line.rfind(" ")
        append(f"{line[:cut]},seq={first_seq + i}i{line[cut:]}")
    return out


def series_tags(config: LineConfig) -> str:
    """The tags every point of this line carries (`line=...,site=...`)."""
    return f"line={escape_tag(config.line.name)},site={escape_tag(config.line.site)}"


class InfluxLineEncoder:
    """PipelineUpdate -> line-protocol lines (ms timestamps), per the module's schema."""

    def __init__(self, config: LineConfig, sequence_field: bool = True) -> None:
        self.series = series_tags(config)  # the line and site tags of every point
        self._signal_prefix: dict[str, str] = {}
        self.sequence_field = sequence_field
        # Samples without a usable time (never expected): not storable, so counted here.
        self.unstorable_points = 0
        self.repeats_skipped = 0
        # Series key (the line's text up to its fields) -> newest millisecond written there.
        self._newest_ms: dict[str, int] = {}

    def _fresh(self, series: str, ms: int) -> bool:
        """Claim `ms` in `series` if it is newer than anything written there (see module doc)."""
        if ms <= self._newest_ms.get(series, -(2**63)):
            return False
        self._newest_ms[series] = ms
        return True

    def _next_free(self, series: str, ms: int) -> int:
        """`ms`, or the first millisecond after the newest one written in `series`."""
        ms = max(ms, self._newest_ms.get(series, -(2**63)) + 1)
        self._newest_ms[series] = ms
        return ms

    def encode(self, update: PipelineUpdate, first_seq: int) -> list[str]:
        """The durable buffer's encoder: the update's lines, numbered from `first_seq`."""
        lines = self.lines(update)
        return with_sequence(lines, first_seq) if self.sequence_field else lines

    def lines(self, update: PipelineUpdate) -> list[str]:
        out = self._signal_lines(update)
        for kpi, fig in _yield_figures(update):
            line = self._kpi_line(kpi, fig)
            if self._fresh(line[: line.index(" ")], _ms(fig.t)):
                out.append(line)
        if update.kpis is not None and self._fresh("kpi=operations", _ms(update.kpis.t_end)):
            out.append(self._operations_line(update.kpis))
        if update.flows is not None:
            fields = _flow_fields(update.flows)
            if fields and self._fresh("flow", _ms(update.flows.t)):
                out.append(f"flow,{self.series} {','.join(fields)} {_ms(update.flows.t)}")
        out.extend(self._alarm_line(event) for event in update.alarm_events)
        out.extend(self._audit_line(rec) for rec in update.control_audit)
        if update.metrics is not None:
            out += self._metrics_lines(update.metrics)
        return out

    def _alarm_line(self, event: AlarmEvent) -> str:
        a = event.alarm
        tags = f"kind={_tag(a.kind)},subject={_tag(a.subject)},severity={_tag(a.severity.value)}"
        fields = (
            f"id={_string_field(a.id)},event={_string_field('raised' if event.active else 'cleared')},"
            f"active={int(event.active)}i,text={_string_field(a.text)}"
        )
        series = f"alarm,{tags}"
        return f"alarm,{self.series},{tags} {fields} {self._next_free(series, _ms(event.t))}"

    def _audit_line(self, rec: dict[str, Any]) -> str:
        tags = ",".join(
            f"{key}={_tag(str(rec.get(key) or ''))}" for key in ("setpoint", "decision", "request_id")
        )
        # `seq_audit`: the audit log's own number (`seq` is the buffer's, on every point).
        fields = [f"seq_audit={int(rec['seq'])}i"]
        fields += [
            f"{key}={_string_field(str(rec[key]))}" for key in ("operator", "reason", "code") if rec.get(key)
        ]
        fields += _float_fields(
            *((key, rec.get(key)) for key in ("value", "previous", "written", "readback"))
        )
        ms = self._next_free(f"control_audit,{tags}", _ms(float(rec["decided_at_epoch"])))
        return f"control_audit,{self.series},{tags} {','.join(fields)} {ms}"

    def _metrics_lines(self, m: GatewayMetrics) -> list[str]:
        ms = self._next_free("gateway", _ms(m.t))
        ints = ",".join(f"{key}={int(value)}i" for key, value in m.counters().items())
        floats = _float_fields(*m.gauges().items())
        out = [f"gateway,{self.series} {','.join([ints, *floats])} {ms}"]
        for d in m.drivers:
            tags = f"driver={_tag(d.name)},kind={_tag(d.kind)}"
            fields = f"connected={int(d.connected)}i,connects={d.connects}i,failures={d.failures}i"
            out.append(f"driver,{self.series},{tags} {fields} {self._next_free(f'driver,{tags}', ms)}")
        return out

    def _signal_lines(self, update: PipelineUpdate) -> list[str]:
        samples = update.samples
        if len(samples) == 0:
            return []
        t, value, tag, quality = samples.t, samples.value, samples.tag, samples.quality
        finite = np.isfinite(t)
        if not finite.all():
            self.unstorable_points += int((~finite).sum())
            t, value, tag, quality = t[finite], value[finite], tag[finite], quality[finite]
        # Bulk conversion to Python scalars first: per-element numpy access is ~10x slower.
        ts = np.rint(t * 1000.0).astype(np.int64).tolist()
        values = value.tolist()
        tags = tag.tolist()
        qualities = quality.tolist()
        names = update.tag_names
        newest = self._newest_ms
        out: list[str] = []
        append = out.append
        for i, ms, v, q in zip(tags, ts, values, qualities, strict=True):
            name = names[i] if 0 <= i < len(names) else str(i)
            prefix = self._signal_prefix.get(name)
            if prefix is None:
                prefix = self._signal_prefix[name] = f"signal,{self.series},tag={escape_tag(name)} "
            if ms <= newest.get(prefix, -(2**63)):
                self.repeats_skipped += 1
                continue
            newest[prefix] = ms
            label = _quality_label(q)
            if math.isfinite(v):
                append(f'{prefix}value={v!r},quality="{label}" {ms}')
            else:
                append(f'{prefix}quality="{label}" {ms}')
        return out

    def _operations_line(self, k: KpiFigures) -> str:
        fields = _float_fields(
            ("specific_energy_kwh_per_t", k.specific_energy_kwh_per_t),
            ("nitrogen_nm3_per_t", k.nitrogen_nm3_per_t),
            ("condensate_kg_per_t", k.condensate_kg_per_t),
            ("availability", k.availability),
            ("performance", k.performance),
            ("oee", k.oee),
            ("ev_equivalents", k.ev_equivalents_window),
            ("feed_t", k.feed_t_window),
            ("coverage", k.coverage),
        )
        fields.append(f"quality={_string_field('good' if k.good else 'uncertain')}")
        return f"kpi,kpi=operations,{self.series} {','.join(fields)} {_ms(k.t_end)}"

    def _kpi_line(self, kpi: str, fig: YieldFigure) -> str:
        fields = _float_fields(
            ("value", None if fig.value is None else fig.value * 100.0),
            ("uncertainty", None if fig.uncertainty is None else fig.uncertainty * 100.0),
            ("coverage", fig.coverage),
            ("window_h", fig.window_h),
            ("covered_h", fig.covered_h),
            ("delay_min", fig.delay_min),
            ("feed_t", fig.feed_t),
            ("black_mass_t", fig.black_mass_t),
        )
        fields.append(f"quality={_string_field(_quality_label(int(fig.quality)))}")
        if fig.horizon in ("shift", "lot"):
            fields.append(f"{fig.horizon}={_string_field(fig.label)}")
        tags = f"basis={escape_tag(fig.basis)},kpi={kpi},{self.series}"
        return f"kpi,{tags} {','.join(fields)} {_ms(fig.t)}"
