"""Helpers for OPC-UA driver tests: the example line's PLC tags on a local port, a recording sink."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config import LineConfig, parse_config
from gateway.ports import BoundTag
from gateway.samples import Quality

CONFIG = Path(__file__).resolve().parents[1] / "config" / "line1.toml"


def plc_config(
    port: int,
    *,
    driver: dict[str, Any] | None = None,
    monitoring: dict[str, dict[str, Any]] | None = None,
    extra_tags: list[dict[str, Any]] | None = None,
) -> LineConfig:
    """config/line1.toml with the PLC on `port`, only its OPC-UA driver, and overrides."""
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    plc = data["drivers"]["plc"]
    plc["url"] = f"opc.tcp://127.0.0.1:{port}/linegate/sim"
    plc.update(driver or {})
    data["drivers"] = {"plc": plc}
    data["tags"] = [t for t in data["tags"] if t["driver"] == "plc"] + list(extra_tags or [])
    for tag in data["tags"]:
        if tag["name"] in (monitoring or {}):
            tag["monitoring"] = monitoring[tag["name"]]  # type: ignore[index]
    data.pop("outputs", None)
    return parse_config(data, str(CONFIG))


def bound_tags(config: LineConfig) -> list[BoundTag]:
    return [BoundTag(i, t) for i, t in enumerate(config.tags)]


@dataclass
class Sample:
    tag: int
    t: float
    value: float
    quality: int
    status: int


@dataclass
class RecordingSink:
    """A SampleSink that keeps everything and wakes waiters on every change."""

    samples: list[Sample] = field(default_factory=list)
    stale_marks: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, tag: int, t: float, value: float, quality: Quality | int, status: int = 0) -> None:
        self.samples.append(Sample(tag, t, value, int(quality), status))
        self.changed.set()

    def mark_stale(self, tags: list[int] | Any) -> None:
        self.stale_marks.extend(tags)
        self.changed.set()

    def of(self, tag: int) -> list[Sample]:
        return [s for s in self.samples if s.tag == tag]

    async def wait_for(self, what: str, pred: Callable[[], bool], deadline_s: float = 10.0) -> None:
        """Wait (event-driven: woken by every put or stale mark) until `pred()` holds."""
        deadline = time.monotonic() + deadline_s
        while not pred():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=left)
            except TimeoutError:
                continue
