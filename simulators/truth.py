"""The truth record: true totals and the true rolling yield, as JSON Lines.

The first line is a header; then one row every `record_every_s` plant seconds, starting with a
row at the start (all totals zero). Every row is flushed as it is written, so a test can read
the file while the simulator runs. Formatting is deterministic: the same seed and start give a
byte-identical file (keys in fixed order, floats as Python's shortest round-trip repr).

Row fields (masses in tonnes, `t` in epoch seconds of plant time):
    t, feed_total_t, black_mass_total_t, coarse_total_t, condensate_total_t, holdup_t,
    yield_rolling, lot
with feed_total_t = black_mass_total_t + coarse_total_t + condensate_total_t + holdup_t
(condensate counts all condensed electrolyte, whether still in the tank or pumped out).

`yield_rolling` at time t is true BM out over (t-W, t] divided by true feed in over
(t-W-tau, t-tau], tau being the plant's true transport delay; null until W + tau has elapsed
(or while no feed came in over that window). The recorder observes the plant after every step
and keeps the cumulative totals of the last W + tau in ring buffers, so the windows are exact
even when tau is not a multiple of the recording interval.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from simulators.plant import Plant

YIELD_DEFINITION = (
    "yield_rolling = true BM out over (t-W, t] / true feed in over (t-W-tau, t-tau], "
    "tau = true transport delay"
)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class TruthRecorder:
    """Writes the truth file for one plant run; call `observe(plant)` after every plant step."""

    def __init__(
        self,
        path: Path | str,
        plant: Plant,
        *,
        start: datetime,
        window_h: float = 4.0,
        record_every_s: float = 60.0,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        dt = plant.dt_s
        self._window_steps = _whole_steps(window_h * 3600.0, dt, "window_h")
        self._tau_steps = _whole_steps(plant.transport_delay_s, dt, "transport delay")
        self._record_steps = _whole_steps(record_every_s, dt, "record_every_s")
        if plant.steps != 0:
            raise ValueError("attach the truth recorder before the plant's first step")
        self.path = Path(path)
        self.start = start
        self._t0 = start.timestamp()
        self._dt = dt
        # Cumulative totals by step, long enough to look back W + tau (feed) and W (BM).
        self._feed_ring = np.zeros(self._window_steps + self._tau_steps + 1, dtype=np.float64)
        self._bm_ring = np.zeros(self._window_steps + 1, dtype=np.float64)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8", newline="\n")
        header = {
            "kind": "header",
            "seed": plant.seed,
            "basis": "wet",
            "window_h": window_h,
            "transport_delay_s": plant.transport_delay_s,
            "start": _iso(start),
            "definition": YIELD_DEFINITION,
            "record_every_s": record_every_s,
        }
        self._write(header)
        self.observe(plant)  # the row at the start

    def _write(self, obj: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("truth recorder is closed")
        self._file.write(_dumps(obj) + "\n")
        self._file.flush()

    def observe(self, plant: Plant) -> None:
        k = plant.steps
        self._feed_ring[k % len(self._feed_ring)] = plant.feed_in_kg
        self._bm_ring[k % len(self._bm_ring)] = plant.bm_out_kg
        if k % self._record_steps:
            return
        w, tau = self._window_steps, self._tau_steps
        y: float | None = None
        if k >= w + tau:
            nf = len(self._feed_ring)
            feed = self._feed_ring[(k - tau) % nf] - self._feed_ring[(k - tau - w) % nf]
            bm = plant.bm_out_kg - self._bm_ring[(k - w) % len(self._bm_ring)]
            if feed > 0.0:
                y = float(bm / feed)
        self._write(
            {
                "t": self._t0 + k * self._dt,
                "feed_total_t": plant.feed_in_kg / 1000.0,
                "black_mass_total_t": plant.bm_out_kg / 1000.0,
                "coarse_total_t": plant.coarse_out_kg / 1000.0,
                "condensate_total_t": plant.condensate_kg / 1000.0,
                "holdup_t": plant.holdup_kg() / 1000.0,
                "yield_rolling": y,
                "lot": plant.lot.lot_id,
            }
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TruthRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _whole_steps(seconds: float, dt_s: float, name: str) -> int:
    n = round(seconds / dt_s)
    if n < 1 or abs(n * dt_s - seconds) > 1e-9 * max(1.0, seconds):
        raise ValueError(f"{name}: {seconds} s is not a positive whole number of {dt_s} s plant steps")
    return n


def read_truth(path: Path | str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Header and rows of a truth file. A last line still being written (no newline) is skipped."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # whatever follows the last newline is incomplete (or empty)
    if not complete:
        raise ValueError(f"{path}: no header yet")
    header = json.loads(complete[0])
    if header.get("kind") != "header":
        raise ValueError(f"{path}: first line is not a truth header")
    rows = [json.loads(line) for line in complete[1:] if line]
    return header, rows


def truth_yield_at(rows: Sequence[dict[str, Any]], t: float) -> float | None:
    """`yield_rolling` of the last row at or before plant time `t` (None if none or not yet known)."""
    times = [r["t"] for r in rows]
    i = bisect.bisect_right(times, t) - 1
    if i < 0:
        return None
    value = rows[i]["yield_rolling"]
    return None if value is None else float(value)


__all__ = ["YIELD_DEFINITION", "TruthRecorder", "read_truth", "truth_yield_at"]
