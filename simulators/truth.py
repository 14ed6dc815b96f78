"""The truth record: true flows, hold-up and yields per rolling window, lot and shift, as JSON Lines.

The first line is a header (seed, scenario, basis, definitions, the true transport delay).
Then records, each with a `kind`:

- `window`, every `record_every_s` plant seconds from the start: cumulative true totals per
  stream (tonnes), the hold-up, the balance residual, and `yield_rolling` (definition below);
- `lot`, once a lot has fully left the plant: its true split, mass fed, mass out per stream and
  its true yield (black mass out of that lot / lot mass fed), exact by lot attribution;
- `shift`, at each shift end (`shift_h`, aligned to `shift_start_hour` of the plant clock's
  UTC day): feed in, black mass out, hold-up at start and end, three yields (below); written once
  every lot fed during the shift has left the plant (or at the end of the run, flagged
  incomplete), so a shift's record can come a few hours after the shift;
- `event`, when a scenario event starts (plant, sensor or communication fault): ground truth for
  scoring detection.

Yields (wet basis: black mass as it leaves the sieve, residual electrolyte included):
- `yield_rolling` at t = true BM out over (t-W, t] / true feed in over (t-W-tau, t-tau], tau the
  true mean transport delay (the same definition the gateway computes from its measurements);
  null until W + tau has passed or with no feed in that window;
- shift `yield_window` = the same definition over the shift; `yield_raw` = BM out / feed in over
  the same interval (no delay: what a naive report shows); `yield_material` = the true yield of
  the material fed during the shift, from the lots it came from (lot yields weighted by the
  mass of each lot fed in the shift).

Conservation: feed = black_mass + fe + alcu + plastics + dust + condensate + vent + holdup at every
record, to 1e-9 relative (`residual_t` shows it). Every record is flushed as written, so a test
can read the file while the simulator runs. Formatting is deterministic: same seed, scenario and
start give a byte-identical file (keys in fixed order, floats as Python's shortest repr, records
tied to plant steps, never to wall time).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

YIELD_DEFINITION = (
    "yield_rolling = true BM out over (t-W, t] / true feed in over (t-W-tau, t-tau], "
    "tau = true mean transport delay"
)
OUTPUT_STREAMS: tuple[str, ...] = ("black_mass", "fe", "alcu", "plastics", "dust", "condensate", "vent")


class LotView(Protocol):
    """What the recorder reads of a lot (simulators.plant.LotRecord provides it)."""

    index: int
    lot_id: str
    feed_type: str
    fed_kg: float
    remaining_kg: float
    complete: bool
    out_kg: Mapping[str, float]
    split: Mapping[str, float]
    t_first_in_s: float | None
    t_last_in_s: float | None
    t_last_out_s: float | None


class PlantView(Protocol):
    """What the recorder reads of the plant."""

    seed: int
    dt_s: float
    steps: int
    transport_delay_s: float

    def totals_kg(self) -> dict[str, float]: ...
    def holdup_kg(self) -> float: ...
    def lot_ledger(self) -> Sequence[LotView]: ...


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _t(kg: float) -> float:
    return kg / 1000.0


@dataclass
class _Shift:
    start_step: int
    end_step: int
    feed_start_kg: float
    bm_start_kg: float
    holdup_start_kg: float
    fed_by_lot_start: dict[int, float]
    # Filled at the shift's end:
    feed_end_kg: float = math.nan
    bm_end_kg: float = math.nan
    holdup_end_kg: float = math.nan
    yield_window: float | None = None
    fed_in_shift: dict[int, float] = field(default_factory=dict)


class TruthRecorder:
    """Writes the truth file for one plant run; call `observe(plant)` after every plant step."""

    def __init__(
        self,
        path: Path | str,
        plant: PlantView,
        *,
        start: datetime,
        window_h: float = 4.0,
        record_every_s: float = 60.0,
        shift_h: float = 8.0,
        shift_start_hour: float = 6.0,
        scenario: Mapping[str, Any] | None = None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        dt = plant.dt_s
        self._window_steps = _whole_steps(window_h * 3600.0, dt, "window_h")
        self._tau_steps = _whole_steps(plant.transport_delay_s, dt, "transport delay")
        self._record_steps = _whole_steps(record_every_s, dt, "record_every_s")
        self._shift_steps = _whole_steps(shift_h * 3600.0, dt, "shift_h")
        if plant.steps != 0:
            raise ValueError("attach the truth recorder before the plant's first step")
        self.path = Path(path)
        self.start = start
        self._t0 = start.timestamp()
        self._dt = dt
        # Steps from the start to the first shift boundary of the plant clock.
        day_start = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        since = (self._t0 - (day_start + shift_start_hour * 3600.0)) % (shift_h * 3600.0)
        self._next_shift_step = round(((shift_h * 3600.0) - since) / dt) if since else self._shift_steps
        # Cumulative totals by step, long enough to look back W + tau (feed) and W (BM), or a
        # whole shift when that is longer.
        span = max(self._window_steps, self._shift_steps)
        self._feed_ring = np.zeros(span + self._tau_steps + 1, dtype=np.float64)
        self._bm_ring = np.zeros(span + 1, dtype=np.float64)
        self._written_lots: set[int] = set()
        self._lot_yield: dict[int, float] = {}
        self._pending_shifts: list[_Shift] = []
        self._shift = self._open_shift(plant, 0)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8", newline="\n")
        header: dict[str, Any] = {
            "kind": "header",
            "seed": plant.seed,
            "basis": "wet",
            "window_h": window_h,
            "transport_delay_s": plant.transport_delay_s,
            "start": _iso(start),
            "definition": YIELD_DEFINITION,
            "record_every_s": record_every_s,
            "shift_h": shift_h,
            "shift_start_hour": shift_start_hour,
            "streams": list(OUTPUT_STREAMS),
        }
        if scenario is not None:
            header["scenario"] = dict(scenario)
        self._write(header)
        self.observe(plant)  # the record at the start

    # --- writing -----------------------------------------------------------------------------
    def _write(self, obj: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("truth recorder is closed")
        self._file.write(_dumps(obj) + "\n")
        self._file.flush()

    def event(self, plant: PlantView, kind: str, params: Mapping[str, Any]) -> None:
        """Record a scenario event starting now (call it at the plant step it takes effect)."""
        self._write({"kind": "event", "t": self._time(plant.steps), "event": kind, "params": dict(params)})

    def _time(self, step: int) -> float:
        return self._t0 + step * self._dt

    # --- observing ---------------------------------------------------------------------------
    def observe(self, plant: PlantView) -> None:
        k = plant.steps
        totals = plant.totals_kg()
        feed, bm = totals["feed"], totals["black_mass"]
        self._feed_ring[k % len(self._feed_ring)] = feed
        self._bm_ring[k % len(self._bm_ring)] = bm
        if k == self._next_shift_step:
            self._close_shift(plant, k, totals)
        if k % self._record_steps:
            return
        holdup = plant.holdup_kg()
        outputs = sum(totals[s] for s in OUTPUT_STREAMS)
        record: dict[str, Any] = {"kind": "window", "t": self._time(k), "feed_total_t": _t(feed)}
        record.update({f"{s}_total_t": _t(totals[s]) for s in OUTPUT_STREAMS})
        record.update(
            {
                "holdup_t": _t(holdup),
                "residual_t": _t(feed - outputs - holdup),
                "yield_rolling": self._window_yield(k, k),
            }
        )
        self._write(record)
        self._write_completed_lots(plant)

    def _window_yield(self, k: int, end: int) -> float | None:
        """Delay-shifted window yield ending at step `end` over `end - start` steps (W by default)."""
        w, tau = self._window_steps, self._tau_steps
        if end < w + tau:
            return None
        nf = len(self._feed_ring)
        feed = self._feed_ring[(end - tau) % nf] - self._feed_ring[(end - tau - w) % nf]
        bm = self._bm_ring[end % len(self._bm_ring)] - self._bm_ring[(end - w) % len(self._bm_ring)]
        return float(bm / feed) if feed > 0.0 else None

    # --- lots ----------------------------------------------------------------------------------
    def _write_completed_lots(self, plant: PlantView) -> None:
        ledger = plant.lot_ledger()
        for lot in ledger:
            if lot.complete and lot.index not in self._written_lots:
                self._written_lots.add(lot.index)
                if lot.fed_kg <= 0:
                    continue  # closed before any of it was fed (a lot change at its start)
                y = lot.out_kg.get("black_mass", 0.0) / lot.fed_kg if lot.fed_kg > 0 else None
                if y is not None:
                    self._lot_yield[lot.index] = y
                self._write(
                    {
                        "kind": "lot",
                        "t": self._time(plant.steps),
                        "lot": lot.lot_id,
                        "feed_type": lot.feed_type,
                        "fed_t": _t(lot.fed_kg),
                        **{f"{s}_t": _t(lot.out_kg.get(s, 0.0)) for s in OUTPUT_STREAMS},
                        "yield": y,
                        "split": {c: lot.split[c] for c in sorted(lot.split)},
                        "t_first_in": self._plant_epoch(lot.t_first_in_s),
                        "t_last_in": self._plant_epoch(lot.t_last_in_s),
                        "t_last_out": self._plant_epoch(lot.t_last_out_s),
                    }
                )
        self._flush_shifts(ledger)

    def _plant_epoch(self, t_s: float | None) -> float | None:
        return None if t_s is None else self._t0 + t_s

    # --- shifts --------------------------------------------------------------------------------
    def _open_shift(self, plant: PlantView, k: int) -> _Shift:
        totals = plant.totals_kg()
        return _Shift(
            start_step=k,
            end_step=self._next_shift_step,
            feed_start_kg=totals["feed"],
            bm_start_kg=totals["black_mass"],
            holdup_start_kg=plant.holdup_kg(),
            fed_by_lot_start={lot.index: lot.fed_kg for lot in plant.lot_ledger()},
        )

    def _close_shift(self, plant: PlantView, k: int, totals: Mapping[str, float]) -> None:
        s = self._shift
        s.feed_end_kg, s.bm_end_kg, s.holdup_end_kg = totals["feed"], totals["black_mass"], plant.holdup_kg()
        full = k - s.start_step == self._shift_steps
        s.yield_window = self._shift_window_yield(k) if full else None
        for lot in plant.lot_ledger():
            fed = lot.fed_kg - s.fed_by_lot_start.get(lot.index, 0.0)
            if fed > 0:
                s.fed_in_shift[lot.index] = fed
        self._pending_shifts.append(s)
        self._next_shift_step = k + self._shift_steps
        self._shift = self._open_shift(plant, k)

    def _shift_window_yield(self, end: int) -> float | None:
        n, tau = self._shift_steps, self._tau_steps
        nf, nb = len(self._feed_ring), len(self._bm_ring)
        if end < n + tau:
            return None
        feed = self._feed_ring[(end - tau) % nf] - self._feed_ring[(end - tau - n) % nf]
        bm = self._bm_ring[end % nb] - self._bm_ring[(end - n) % nb]
        return float(bm / feed) if feed > 0 else None

    def _flush_shifts(self, ledger: Sequence[LotView], final: bool = False) -> None:
        complete = {lot.index for lot in ledger if lot.complete}
        while self._pending_shifts:
            s = self._pending_shifts[0]
            ready = all(i in complete for i in s.fed_in_shift)
            if not ready and not final:
                return
            self._pending_shifts.pop(0)
            fed = s.feed_end_kg - s.feed_start_kg
            material: float | None = None
            if ready and fed > 0:
                material = sum(self._lot_yield.get(i, 0.0) * m for i, m in s.fed_in_shift.items()) / sum(
                    s.fed_in_shift.values()
                )
            self._write(
                {
                    "kind": "shift",
                    "t": self._time(s.end_step),
                    "start": self._time(s.start_step),
                    "end": self._time(s.end_step),
                    "feed_in_t": _t(fed),
                    "black_mass_out_t": _t(s.bm_end_kg - s.bm_start_kg),
                    "holdup_start_t": _t(s.holdup_start_kg),
                    "holdup_end_t": _t(s.holdup_end_kg),
                    "yield_window": s.yield_window,
                    "yield_raw": (s.bm_end_kg - s.bm_start_kg) / fed if fed > 0 else None,
                    "yield_material": material,
                    "complete": ready,
                }
            )

    def close(self, plant: PlantView | None = None) -> None:
        """Close the file; given the plant, first write what is still pending (flagged incomplete)."""
        if self._file is None:
            return
        if plant is not None:
            self._write_completed_lots(plant)
            self._flush_shifts(plant.lot_ledger(), final=True)
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


def read_truth(path: Path | str, kind: str = "window") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Header and the records of one kind (default: the rolling-window rows).

    A last line still being written (no newline) is skipped.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # whatever follows the last newline is incomplete (or empty)
    if not complete:
        raise ValueError(f"{path}: no header yet")
    header = json.loads(complete[0])
    if header.get("kind") != "header":
        raise ValueError(f"{path}: first line is not a truth header")
    rows = [r for r in (json.loads(line) for line in complete[1:] if line) if r.get("kind") == kind]
    return header, rows


def truth_yield_at(rows: Sequence[dict[str, Any]], t: float) -> float | None:
    """`yield_rolling` of the last window row at or before plant time `t` (None if none or not yet known)."""
    times = [r["t"] for r in rows]
    i = bisect.bisect_right(times, t) - 1
    if i < 0:
        return None
    value = rows[i]["yield_rolling"]
    return None if value is None else float(value)


__all__ = ["OUTPUT_STREAMS", "YIELD_DEFINITION", "TruthRecorder", "read_truth", "truth_yield_at"]
