"""InfluxDB output: each pipeline update becomes line protocol, written through the v2 write API.

Works with InfluxDB 2.x/3.x directly and with 1.x behind config/influxdb-v2-compat.nginx.conf.
Writes are synchronous (in a worker thread), gzip-compressed, at millisecond precision; a batch
leaves the queue only once InfluxDB accepted it.

Schema (every timestamp is plant time, i.e. the source timestamp, in ms):

- measurement `signal`, one point per conditioned sample:
  tags `line`, `site`, `tag` (the config tag name);
  fields `value` (float; omitted when the sample's value is NaN or infinite, so the point then
  carries only its quality), `quality` (string: good | uncertain | bad | stale).
- measurement `kpi`, one point per rolling-yield figure:
  tags `line`, `site`, `kpi` (= "yield_rolling"), `basis` (e.g. "wet");
  fields `value` (float, percent), `uncertainty` (float, 2-sigma, percentage points) - both
  omitted when not computable -, `coverage` (float 0..1, share of the window backed by good
  data), `quality` (string), `window_h`, `covered_h` (window length and how much of it has data),
  `delay_min` (transport delay), `feed_t`, `black_mass_t` (masses in the window, t).
- measurement `flow`, one point per flow figure:
  tags `line`, `site`; fields `feed_tph`, `black_mass_tph` (t/h), `feed_vs_nameplate` (fraction
  of nameplate); a field is omitted when unknown, the point when all three are.

- measurement `control_audit`, one point per control decision (wall-clock time of the
  decision, not plant time): tags `line`, `site`, `setpoint`, `decision` (accepted | rejected |
  failed | armed | dry_run | duplicate), `request_id`; fields `seq` (int, the audit log's),
  `operator`, `reason`, `code` (strings), `value`, `previous`, `written`, `readback` (floats,
  omitted when unknown).

A point is identified by its series key (measurement + tags) and timestamp, so a batch that is
written again after an unconfirmed write overwrites the same points instead of duplicating them.

Errors: connection failures, 5xx, 429 and 404 (database or bucket missing: may be created while
we wait) raise `RetryableError` and leave the batch queued; 401/403 raise `FatalDriverError`.
Any other 4xx means InfluxDB refuses the batch itself (a field type conflict, say): it is logged,
counted in `rejected_points` and dropped, so one poison batch cannot block the queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import urllib3.exceptions
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from gateway.config import InfluxOutput, LineConfig
from gateway.errors import FatalDriverError, RetryableError
from gateway.kpis import KpiFigures
from gateway.output_queue import OutputQueue
from gateway.ports import FlowFigure, PipelineUpdate, YieldFigure
from gateway.samples import Quality

log = logging.getLogger(__name__)

HTTP_TIMEOUT_MS = 10_000
# Distinct rejection reasons logged at WARNING; repeats go to DEBUG so a bad stream can't flood.
_MAX_LOGGED_REASONS = 100
# Fallback token: InfluxDB 1.x behind the proxy ignores it; 2.x answers 401 and we say why.
_DUMMY_TOKEN = "linegate-no-token"

_QUALITY_LABELS = tuple(q.label for q in Quality)
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_DROPPED = re.compile(r"dropped=(\d+)")


def escape_tag(value: str) -> str:
    """Escape a tag key or value (also valid for the measurement) per the line protocol."""
    return value.translate(_TAG_ESCAPES)


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


def points_in(update: PipelineUpdate) -> int:
    """Points `update` makes in InfluxDB: the weight it carries in the output queue."""
    n = len(update.samples) + len(_yield_figures(update)) + (update.kpis is not None)
    if update.flows is not None and _flow_fields(update.flows):
        n += 1
    return n + len(update.control_audit)


class InfluxOutputDriver:
    """The historian output (see the module docstring for schema and error policy)."""

    name = "influxdb"

    def __init__(self, settings: InfluxOutput, config: LineConfig) -> None:
        self.settings = settings
        self._series_tags = f"line={escape_tag(config.line.name)},site={escape_tag(config.line.site)}"
        self._signal_prefix: dict[str, str] = {}
        self._logged_reasons: set[str] = set()
        self.written_points = 0
        self.rejected_points = 0
        self.write_errors = 0

    @staticmethod
    def weight(update: PipelineUpdate) -> int:
        return points_in(update)

    # -- line protocol ----------------------------------------------------------------------
    def lines(self, update: PipelineUpdate) -> list[str]:
        """Line-protocol lines (ms timestamps) for one update."""
        out = self._signal_lines(update)
        out += [self._kpi_line(kpi, fig) for kpi, fig in _yield_figures(update)]
        if update.kpis is not None:
            out.append(self._operations_line(update.kpis))
        if update.flows is not None:
            fields = _flow_fields(update.flows)
            if fields:
                out.append(f"flow,{self._series_tags} {','.join(fields)} {_ms(update.flows.t)}")
        out.extend(self._audit_line(rec) for rec in update.control_audit)
        return out

    def _audit_line(self, rec: dict[str, Any]) -> str:
        tags = ",".join(
            f"{key}={escape_tag(str(rec.get(key) or '-'))}" for key in ("setpoint", "decision", "request_id")
        )
        fields = [f"seq={int(rec['seq'])}i"]
        fields += [
            f"{key}={_string_field(str(rec[key]))}" for key in ("operator", "reason", "code") if rec.get(key)
        ]
        fields += _float_fields(
            *((key, rec.get(key)) for key in ("value", "previous", "written", "readback"))
        )
        return f"control_audit,{self._series_tags},{tags} {','.join(fields)} {_ms(float(rec['decided_at_epoch']))}"

    def _signal_lines(self, update: PipelineUpdate) -> list[str]:
        samples = update.samples
        if len(samples) == 0:
            return []
        t, value, tag, quality = samples.t, samples.value, samples.tag, samples.quality
        finite = np.isfinite(t)
        if not finite.all():
            # A sample without a usable time cannot be stored; count it rather than crash (a
            # replayed batch counts it again: acceptable for a should-never-happen case).
            self.rejected_points += int((~finite).sum())
            t, value, tag, quality = t[finite], value[finite], tag[finite], quality[finite]
        # Bulk conversion to Python scalars first: per-element numpy access is ~10x slower.
        ts = np.rint(t * 1000.0).astype(np.int64).tolist()
        values = value.tolist()
        tags = tag.tolist()
        qualities = quality.tolist()
        names = update.tag_names
        out: list[str] = []
        append = out.append
        for i, ms, v, q in zip(tags, ts, values, qualities, strict=True):
            name = names[i] if 0 <= i < len(names) else str(i)
            prefix = self._signal_prefix.get(name)
            if prefix is None:
                prefix = self._signal_prefix[name] = f"signal,{self._series_tags},tag={escape_tag(name)} "
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
        return f"kpi,kpi=operations,{self._series_tags} {','.join(fields)} {_ms(k.t_end)}"

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
        tags = f"basis={escape_tag(fig.basis)},kpi={kpi},{self._series_tags}"
        return f"kpi,{tags} {','.join(fields)} {_ms(fig.t)}"

    # -- delivery ---------------------------------------------------------------------------
    def _token(self) -> str:
        env = self.settings.token_env
        if env is None:
            return _DUMMY_TOKEN
        token = os.environ.get(env)
        if not token:
            raise FatalDriverError(f"influxdb: environment variable {env} (token_env) is not set")
        return token

    async def run(self, queue: OutputQueue[PipelineUpdate], on_connected: Callable[[], None]) -> None:
        url = self.settings.url
        client = InfluxDBClient(
            url=url, token=self._token(), org=self.settings.org, enable_gzip=True, timeout=HTTP_TIMEOUT_MS
        )
        try:
            try:
                # version() is a GET /ping that raises (ping() only answers False).
                await asyncio.to_thread(client.version)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise RetryableError(f"influxdb: {url} does not answer /ping: {_reason(exc)}") from exc
            write_api = client.write_api(write_options=SYNCHRONOUS)
            on_connected()
            batch_size = self.settings.batch_size
            while True:
                await queue.wait()
                # Give a batch up to flush_interval_ms to fill, so points are not sent one by one.
                await queue.wait_for_weight(batch_size, self.settings.flush_interval_ms / 1000.0)
                items, token = queue.peek(batch_size)
                lines = [line for update in items for line in self.lines(update)]
                for start in range(0, len(lines), batch_size):
                    await self._write(write_api, lines[start : start + batch_size])
                queue.commit(token)
        finally:
            client.close()

    async def _write(self, write_api: WriteApi, lines: list[str]) -> None:
        try:
            await asyncio.to_thread(
                write_api.write,
                bucket=self.settings.bucket,
                org=self.settings.org,
                record="\n".join(lines),
                write_precision=WritePrecision.MS,
            )
        except ApiException as exc:
            self.write_errors += 1
            status = int(exc.status or 0)
            reason = _reason(exc)
            if status in (401, 403):
                raise FatalDriverError(f"influxdb: {self.settings.url} refused the token: {reason}") from exc
            if status == 0 or status == 404 or status == 429 or status >= 500:
                raise RetryableError(f"influxdb: write failed: {reason}") from exc
            self._reject(status, reason, len(lines))
            return
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.write_errors += 1
            raise RetryableError(f"influxdb: write to {self.settings.url} failed: {_reason(exc)}") from exc
        self.written_points += len(lines)

    def _reject(self, status: int, reason: str, points: int) -> None:
        # A partial write stored the good points; InfluxDB says how many it dropped.
        m = _DROPPED.search(reason) if "partial write" in reason else None
        dropped = min(points, int(m.group(1))) if m else points
        self.rejected_points += dropped
        self.written_points += points - dropped
        key = f"{status} {reason}"
        if key not in self._logged_reasons and len(self._logged_reasons) < _MAX_LOGGED_REASONS:
            self._logged_reasons.add(key)
            log.warning("influxdb rejected %d of %d points (HTTP %d): %s", dropped, points, status, reason)
        else:
            log.debug("influxdb rejected %d of %d points (HTTP %d): %s", dropped, points, status, reason)


def _reason(exc: BaseException) -> str:
    """The server's own message when there is one (1.x: {"error"}, 2.x: {"message"})."""
    if isinstance(exc, ApiException):
        body = exc.body
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("error") or text)
        return f"HTTP {exc.status}: {text.strip() or exc.reason}"
    return f"{type(exc).__name__}: {exc}"
