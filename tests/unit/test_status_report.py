"""`linegate status`'s verdict from retained payloads (the MQTT side runs in the end-to-end test)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.status_report import StatusSnapshot, Verdict, assess

NOW = 1_800_000_000.0
ONLINE = {"state": "online", "since": "2027-01-15T08:00:00.000Z", "gateway": "linegate"}


def metrics(age_s: float = 2.0, influx_up: bool = True, backlog_s: float = 0.0) -> dict[str, Any]:
    ts = datetime.fromtimestamp(NOW - age_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "timestamp": ts,
        "tick_ms": 0.9,
        "tick_errors": 0,
        "samples_in": 1000,
        "alarms_active": 0,
        "cpu_percent": 4.0,
        "rss_mb": 200.0,
        "buffer": {"points": 10, "bytes": 1000, "age_s": backlog_s, "dropped_points": 0},
        "drivers": [
            {"name": "plc", "kind": "input", "connected": True, "connects": 1, "failures": 0},
            {"name": "influxdb", "kind": "output", "connected": influx_up, "connects": 1, "failures": 3},
        ],
    }


def judge(snap: StatusSnapshot) -> tuple[Verdict, str]:
    verdict, lines = assess(snap, now=NOW, metrics_interval_s=10.0, line="line1")
    return verdict, "\n".join(lines)


def test_a_healthy_gateway_is_ok_and_says_what_runs() -> None:
    verdict, text = judge(StatusSnapshot(ONLINE, metrics()))
    assert verdict is Verdict.OK
    assert text.startswith("linegate line1: OK: ONLINE since 2027-01-15T08:00:00.000Z")
    assert "plc up" in text
    assert "influxdb up" in text


def test_a_driver_down_an_alarm_or_a_backlog_is_a_warning() -> None:
    assert judge(StatusSnapshot(ONLINE, metrics(influx_up=False)))[0] is Verdict.WARNING
    assert judge(StatusSnapshot(ONLINE, metrics(backlog_s=600)))[0] is Verdict.WARNING
    alarm = {"id": "span_drift:bw_feed.total", "severity": "alarm", "text": "drift"}
    verdict, text = judge(StatusSnapshot(ONLINE, metrics(), {alarm["id"]: alarm}))
    assert verdict is Verdict.WARNING
    assert "! alarm span_drift:bw_feed.total" in text
    # Warnings alone (a stale gas sensor) leave the gateway OK.
    warning = {"id": "tag_stale:gas.h2", "severity": "warning", "text": "no fresh data"}
    assert judge(StatusSnapshot(ONLINE, metrics(), {warning["id"]: warning}))[0] is Verdict.OK


def test_offline_or_silent_is_critical_and_nothing_retained_is_unknown() -> None:
    verdict, text = judge(StatusSnapshot({"state": "offline", "reason": "shutdown"}, metrics()))
    assert verdict is Verdict.CRITICAL
    assert "gateway offline: shutdown" in text
    verdict, text = judge(StatusSnapshot({"state": "offline"}, None))
    assert verdict is Verdict.CRITICAL
    assert "Last Will" in text
    # Online by its retained birth, but its metrics stopped: hung, or killed without a Will.
    verdict, text = judge(StatusSnapshot(ONLINE, metrics(age_s=45)))
    assert verdict is Verdict.CRITICAL
    assert "not reporting" in text
    assert judge(StatusSnapshot())[0] is Verdict.UNKNOWN
