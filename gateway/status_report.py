"""`linegate status`: judge a running gateway from what it publishes, and say so on one screen.

The gateway keeps its state in retained MQTT topics (`status`, `status/metrics`,
`alarms/active/<id>`); a client that connects gets all of them at once. This module turns those
payloads into a verdict with monitoring-style exit codes and a short text. It is pure: the
MQTT side is `drivers.status_client`.

Exit codes (as Nagios/Icinga checks read them):
    0 OK        online, metrics fresh, every driver connected, no active alarm of severity alarm
    1 WARNING   online, but a driver is down, an alarm-severity alarm is active, or the
                historian buffer holds more than a minute of backlog
    2 CRITICAL  offline (clean stop or Last Will), or the metrics are stale (a hung gateway)
    3 UNKNOWN   nothing to judge: no broker, no status retained, or a bad config
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any


class Verdict(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# Metrics older than this many of their intervals mean the gateway no longer reports.
STALE_INTERVALS = 3
BACKLOG_WARN_S = 60.0


@dataclass
class StatusSnapshot:
    """The retained payloads read from the broker (None: not there)."""

    status: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)


def _epoch(ts: object) -> float | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def assess(
    snap: StatusSnapshot, *, now: float, metrics_interval_s: float, line: str
) -> tuple[Verdict, list[str]]:
    """The verdict and the lines to print for it."""
    if snap.status is None:
        return Verdict.UNKNOWN, [
            f"linegate {line}: UNKNOWN: no status retained on the broker (never started?)"
        ]
    state = snap.status.get("state")
    problems: list[tuple[Verdict, str]] = []
    if state != "online":
        why = snap.status.get("reason") or "connection lost (Last Will)"
        problems.append((Verdict.CRITICAL, f"gateway offline: {why}"))
    body: list[str] = []
    m = snap.metrics
    if m is None:
        problems.append((Verdict.WARNING, "no metrics published yet"))
    else:
        at = _epoch(m.get("timestamp"))
        age = now - at if at is not None else float("inf")
        limit = STALE_INTERVALS * metrics_interval_s
        if state == "online" and age > limit:
            problems.append(
                (Verdict.CRITICAL, f"metrics {age:.0f} s old (> {limit:.0f} s): the gateway is not reporting")
            )
        body.append(
            f"metrics {age:.0f} s old: tick {m.get('tick_ms')} ms, {m.get('tick_errors')} tick errors, "
            f"{m.get('samples_in')} samples in, CPU {m.get('cpu_percent')} %, RSS {m.get('rss_mb')} MiB"
        )
        drivers = m.get("drivers") or []
        parts = []
        for d in drivers:
            up = bool(d.get("connected"))
            parts.append(
                f"{d.get('name')} {'up' if up else 'DOWN'} ({d.get('connects')} connects, {d.get('failures')} failures)"
            )
            if not up and state == "online":
                problems.append((Verdict.WARNING, f"driver {d.get('name')} ({d.get('kind')}) down"))
        body.append("drivers: " + (", ".join(parts) if parts else "none reported"))
        b = m.get("buffer") or {}
        body.append(
            f"historian buffer: {b.get('points', 0)} points ({b.get('bytes', 0) / 2**20:.1f} MiB), oldest "
            f"{b.get('age_s', 0)} s; dropped {b.get('dropped_points', 0)}, replayed {b.get('replayed_points', 0)}, "
            f"written {b.get('written_points', 0)}, rejected {b.get('rejected_points', 0)}"
        )
        if (b.get("age_s") or 0) > BACKLOG_WARN_S:
            problems.append((Verdict.WARNING, f"historian backlog {b.get('age_s')} s old"))
    severe = [a for a in snap.alarms.values() if a.get("severity") != "warning"]
    for a in severe:
        problems.append((Verdict.WARNING, f"alarm {a.get('id')}"))
    body.append(f"alarms active: {len(snap.alarms)} ({len(severe)} of severity alarm)")
    body += [
        f"  [{a.get('severity')}] {a.get('id')}: {a.get('text')}"
        for a in sorted(snap.alarms.values(), key=lambda a: str(a.get("id")))
    ]
    verdict = max((v for v, _ in problems), default=Verdict.OK)
    since = f" since {snap.status['since']}" if state == "online" and "since" in snap.status else ""
    head = f"linegate {line}: {verdict.name}: {str(state).upper()}{since}"
    return verdict, [head, *(f"  ! {text}" for _, text in problems), *body]
