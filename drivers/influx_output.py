"""InfluxDB output: delivers the durable buffer's lines through the v2 write API.

Works with InfluxDB 2.x/3.x directly and with 1.x behind config/influxdb-v2-compat.nginx.conf.
The runtime puts each tick's update into the output's `DurableSpool`, which encodes it
(`drivers.influx_lines`, the schema) and keeps it on disk; this driver writes the spool's lines
synchronously (in a worker thread), gzip-compressed, at millisecond precision, and a batch
leaves the spool only once InfluxDB accepted it. Points are idempotent (series key + source
timestamp), so writing a batch again never duplicates anything.

Errors:
- connection failures, 5xx, 404 (database or bucket missing: may be created while we wait), and
  429/503 without Retry-After raise `RetryableError` (the runtime reconnects with backoff);
- 429/503 with Retry-After: wait as long as the server asks (capped by `retry_after_max_s`),
  then write the same batch again, without tearing the connection down;
- 401/403 raise `FatalDriverError` (a restart cannot fix a token);
- any other 4xx: InfluxDB refuses the batch itself (a field type conflict, say). It goes to the
  dead-letter file with the reason, is counted in `rejected_points`, and leaves the spool, so
  one poison batch cannot block the points behind it.
A failed write marks everything pending as backlog: the spool then replays it interleaved with
live data, so dashboards show the present while the gap fills in.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import urllib3.exceptions
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from gateway.config import InfluxOutput
from gateway.dead_letter import DeadLetterFile
from gateway.durable_spool import DurableSpool
from gateway.errors import FatalDriverError, RetryableError

log = logging.getLogger(__name__)

HTTP_TIMEOUT_MS = 10_000
# Distinct rejection reasons logged at WARNING; repeats go to DEBUG so a bad stream can't flood.
_MAX_LOGGED_REASONS = 100
# Fallback token: InfluxDB 1.x behind the proxy ignores it; 2.x answers 401 and we say why.
_DUMMY_TOKEN = "linegate-no-token"
_DROPPED = re.compile(r"dropped=(\d+)")
_THROTTLED = (429, 503)


def retry_after_s(headers: Any, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None without one
    or when it cannot be read."""
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class InfluxOutputDriver:
    """The historian output (see the module docstring for the error policy)."""

    name = "influxdb"

    def __init__(self, settings: InfluxOutput, dead_letter: DeadLetterFile) -> None:
        self.settings = settings
        self.dead_letter = dead_letter
        self._logged_reasons: set[str] = set()
        self.written_points = 0
        self.rejected_points = 0
        self.write_errors = 0
        self.throttled = 0  # 429/503 answers that said when to come back

    def _token(self) -> str:
        env = self.settings.token_env
        if env is None:
            return _DUMMY_TOKEN
        token = os.environ.get(env)
        if not token:
            raise FatalDriverError(f"influxdb: environment variable {env} (token_env) is not set")
        return token

    async def run(self, spool: DurableSpool[Any], on_connected: Callable[[], None]) -> None:
        url = self.settings.url
        client = InfluxDBClient(
            url=url, token=self._token(), org=self.settings.org, enable_gzip=True, timeout=HTTP_TIMEOUT_MS
        )
        try:
            try:
                # version() is a GET /ping that raises (ping() only answers False).
                await asyncio.to_thread(client.version)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                spool.mark_backlog()
                raise RetryableError(f"influxdb: {url} does not answer /ping: {_reason(exc)}") from exc
            write_api = client.write_api(write_options=SYNCHRONOUS)
            on_connected()
            batch_size = self.settings.batch_size
            while True:
                await spool.wait()
                # Give a batch up to flush_interval_ms to fill, so points are not sent one by one.
                await spool.wait_for_weight(batch_size, self.settings.flush_interval_ms / 1000.0)
                lines, token = spool.peek(batch_size)
                for start in range(0, len(lines), batch_size):
                    await self._write(write_api, spool, lines[start : start + batch_size])
                spool.commit(token)
        finally:
            client.close()

    async def _write(self, write_api: WriteApi, spool: DurableSpool[Any], lines: list[str]) -> None:
        """Write one batch: return once InfluxDB has it (or refused it for good)."""
        while True:
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
                    raise FatalDriverError(
                        f"influxdb: {self.settings.url} refused the token: {reason}"
                    ) from exc
                wait = retry_after_s(exc.headers) if status in _THROTTLED else None
                if wait is not None:
                    # The server is up and said when to come back: honour it, keep the session.
                    self.throttled += 1
                    spool.mark_backlog()
                    wait = min(wait, self.settings.retry_after_max_s)
                    log.warning("influxdb: HTTP %d, retrying after %.1f s as asked", status, wait)
                    await asyncio.sleep(wait)
                    continue
                if status == 0 or status == 404 or status in _THROTTLED or status >= 500:
                    spool.mark_backlog()
                    raise RetryableError(f"influxdb: write failed: {reason}") from exc
                self._reject(status, reason, lines)
                return
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                self.write_errors += 1
                spool.mark_backlog()
                raise RetryableError(
                    f"influxdb: write to {self.settings.url} failed: {_reason(exc)}"
                ) from exc
            self.written_points += len(lines)
            return

    def _reject(self, status: int, reason: str, lines: list[str]) -> None:
        # A partial write stored the good points; InfluxDB says how many it dropped.
        points = len(lines)
        m = _DROPPED.search(reason) if "partial write" in reason else None
        dropped = min(points, int(m.group(1))) if m else points
        self.rejected_points += dropped
        self.written_points += points - dropped
        self.dead_letter.append(self.name, status, reason, lines, dropped)
        key = f"{status} {reason}"
        if key not in self._logged_reasons and len(self._logged_reasons) < _MAX_LOGGED_REASONS:
            self._logged_reasons.add(key)
            log.warning(
                "influxdb rejected %d of %d points (HTTP %d), kept in %s: %s",
                dropped,
                points,
                status,
                self.dead_letter.path,
                reason,
            )
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
