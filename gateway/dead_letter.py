"""The dead-letter file: batches an output's server refused as malformed, kept with the reason.

A refused batch must neither block the buffer behind it nor vanish: it is appended here as one
JSON line ({"time", "output", "status", "reason", "points", "rejected", "lines"}) and the buffer
moves on. Someone can read why, fix the cause and replay the lines by hand. The file is capped:
past `max_bytes` it is rotated to `<path>.1` (one generation kept), so a poison stream cannot
fill the disk. Appends are flushed and fsynced; a write that fails is logged and counted, never
raised (the output must keep running).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class DeadLetterFile:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.records = 0  # appended by this process
        self.write_failures = 0

    def append(self, output: str, status: int, reason: str, lines: list[str], rejected: int) -> None:
        record = {
            "time": time.time(),
            "output": output,
            "status": status,
            "reason": reason,
            "points": len(lines),
            "rejected": rejected,
            "lines": lines,
        }
        text = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate_if_full(len(text.encode()))
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.write_failures += 1
            log.error("dead-letter file %s: cannot append (%s); %d lines lost", self.path, exc, len(lines))
            return
        self.records += 1

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size and size + incoming > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
