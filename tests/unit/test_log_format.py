"""The daemon's log lines: one JSON event each, journald priorities, repeats held back."""

from __future__ import annotations

import json
import logging
import sys

from gateway.log_format import JsonLineFormatter, RepeatFilter


def record(msg: str, *args: object, level: int = logging.WARNING, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("gateway.runtime", level, __file__, 1, msg, args, exc_info)


def test_one_json_event_per_line_even_with_a_traceback() -> None:
    line = JsonLineFormatter().format(record("input %s: %s", "plc", "connection\nrefused", exc=True))
    assert "\n" not in line
    event = json.loads(line)
    assert event["level"] == "warning"
    assert event["logger"] == "gateway.runtime"
    assert event["msg"] == "input plc: connection\nrefused"
    assert "RuntimeError: boom" in event["exc"]
    assert event["ts"].endswith("Z")


def test_journald_gets_the_syslog_priority_prefix() -> None:
    fmt = JsonLineFormatter(journald_prefix=True)
    assert fmt.format(record("x", level=logging.ERROR)).startswith("<3>{")
    assert fmt.format(record("x", level=logging.INFO)).startswith("<6>{")


def test_a_repeating_fault_is_logged_once_a_minute_with_the_count_held_back() -> None:
    now = [0.0]
    f = RepeatFilter(interval_s=60.0, clock=lambda: now[0])
    passed = []
    for i in range(30):  # a retry every 5 s for 150 s, its number in the text
        now[0] = i * 5.0
        r = record("output influxdb: retry %d in %.1f s", i, 2.0)
        if f.filter(r):
            passed.append((now[0], r.getMessage(), getattr(r, "suppressed", 0)))
    assert [t for t, _, _ in passed] == [0.0, 60.0, 120.0]
    assert passed[1][2] == 11
    assert passed[1][1].endswith("(11 similar held back in the last 60 s)")
    # A different fault is not held back by the first one's window.
    now[0] = 121.0
    assert f.filter(record("input plc: cannot connect"))
    # Debug lines are never held back.
    assert all(f.filter(record("tick", level=logging.DEBUG)) for _ in range(3))
