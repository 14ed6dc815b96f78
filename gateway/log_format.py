"""The daemon's log lines: one JSON event per line, with levels journald understands, and a
brake on faults that repeat.

Under systemd, stdout/stderr go to journald; a `<N>` prefix (syslog priority) sets each line's
level there, and the JSON after it keeps the fields machine-readable (`journalctl -o cat | jq`).
A broken PLC or broker makes the same warning every few seconds for hours: `RepeatFilter` lets
the first through, counts the repeats for a while, and then says how many it held back, so the
journal stays readable and nothing goes unmentioned.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

# syslog priorities by logging level, for journald's SyslogLevelPrefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
# Numbers (retry counts, ports, durations) differ between repeats of one fault.
_NUMBERS = re.compile(r"\d+(\.\d+)?")


class JsonLineFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg"[, "exc"]}` on one line; `journald_prefix` adds `<N>`."""

    def __init__(self, journald_prefix: bool = False) -> None:
        super().__init__()
        self.journald_prefix = journald_prefix

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)  # newlines stay escaped in JSON
        suppressed = getattr(record, "suppressed", None)
        if suppressed:
            event["suppressed"] = suppressed
        line = json.dumps(event, ensure_ascii=False, default=str)
        if self.journald_prefix:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


class RepeatFilter(logging.Filter):
    """Per message shape (logger, level, text with numbers blanked): the first record passes;
    repeats within `interval_s` after it are dropped and counted; the first one after that
    passes with `suppressed` = how many were held back (and the text says so)."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._window: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (opened, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        key = (record.name, record.levelno, _NUMBERS.sub("#", record.getMessage()))
        now = self.clock()
        opened, held = self._window.get(key, (-float("inf"), 0))
        if now - opened < self.interval_s:
            self._window[key] = (opened, held + 1)
            return False
        self._window[key] = (now, 0)
        if held:
            record.suppressed = held
            record.msg = (
                f"{record.getMessage()} ({held} similar held back in the last {self.interval_s:.0f} s)"
            )
            record.args = None
        if len(self._window) > 10_000:  # a flood of distinct messages must not grow this forever
            self._window.clear()
        return True
