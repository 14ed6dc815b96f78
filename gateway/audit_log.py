"""The control audit trail: one JSON line per command and decision, on disk before it counts.

Each record is appended and fsynced before the command's result is published, so what an
operator was told is always in the trail, also across a power cut. Records carry a sequence
number that continues across restarts. A line torn by a crash mid-write (only ever the last)
is cut off when the log is opened again, with a warning; nothing before it is touched.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class AuditLog:
    """Append-only JSONL file; `append` returns once the record is on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # What the file held when opened (the control service rebuilds its history from it).
        self.loaded: list[dict[str, Any]] = self._load()
        self.next_seq = (int(self.loaded[-1]["seq"]) + 1) if self.loaded else 1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # no newline: the last write was torn
            line = data[pos:nl]
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "seq" not in rec:
                    raise ValueError("not an audit record")
            except ValueError as exc:
                raise ValueError(
                    f"{self.path}: line {len(records) + 1} is not an audit record ({exc}); refusing to append to a damaged audit log"
                ) from exc
            records.append(rec)
            pos = good_end = nl + 1
        if good_end < len(data):
            log.warning(
                "audit log %s: cutting off %d bytes of a record torn by a crash",
                self.path,
                len(data) - good_end,
            )
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        return records

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write `record` (with the next `seq`) durably; returns it as written."""
        # The log numbers its records; a caller's own "seq" never overrides that.
        full = {"seq": self.next_seq, **{k: v for k, v in record.items() if k != "seq"}}
        line = json.dumps(full, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        written = 0
        while written < len(line):
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)
        self.next_seq += 1
        return full

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


__all__ = ["AuditLog"]
