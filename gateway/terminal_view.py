"""The demo's live terminal view: yield, flows, active alarms, signal quality and driver health,
once a second.

On a terminal it redraws one screen; otherwise (a log, a pipe) it prints one summary line per
refresh. With the simulator's truth record at hand it shows the true yield beside ours.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.alarms import Alarm, Severity
from gateway.config import LineConfig
from gateway.ports import PipelineUpdate, SignalRow, YieldFigure
from gateway.samples import Quality

if TYPE_CHECKING:
    from gateway.runtime import Runtime

_COLOURS = {Quality.GOOD: "32", Quality.UNCERTAIN: "33", Quality.BAD: "31", Quality.STALE: "35"}


class _TruthTail:
    """Follows the simulator's truth record as it grows; keeps (t, yield) rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = None
        self._partial = ""
        self.rows: list[tuple[float, float | None]] = []

    def poll(self) -> None:
        if self._fh is None:
            if not self.path.exists():
                return
            self._fh = self.path.open(encoding="utf-8")
        chunk = self._fh.read()
        if not chunk:
            return
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for line in lines:
            row = json.loads(line)
            if "t" in row:
                self.rows.append((float(row["t"]), row.get("yield_rolling")))
        del self.rows[:-2000]

    def at(self, t: float) -> float | None:
        best = None
        for rt, y in self.rows:
            if rt <= t:
                best = y
        return best

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _q(q: Quality, tty: bool) -> str:
    return f"\x1b[{_COLOURS[q]}m{q.label:9}\x1b[0m" if tty else q.label


def _fmt(v: float | None, spec: str) -> str:
    return "   --" if v is None else format(v, spec)


# Alarms named on the one-line view; the rest are counted.
SHOWN_ALARMS = 3


def _by_urgency(active: dict[str, Alarm]) -> list[Alarm]:
    """ALARM before WARNING, then the oldest first."""
    return sorted(active.values(), key=lambda a: (a.severity is not Severity.ALARM, a.since, a.id))


class TerminalView:
    def __init__(
        self,
        config: LineConfig,
        runtime: Runtime,
        out: TextIO,
        truth_path: Path | None = None,
        every_s: float = 1.0,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.out = out
        self.tty = out.isatty()
        self.every_s = every_s
        self._last = 0.0
        self._truth = _TruthTail(truth_path) if truth_path is not None else None
        # Tag name -> its latest row; rows, not SignalState objects, since this runs every tick.
        self._signals: dict[str, SignalRow] = {}

    def on_update(self, update: PipelineUpdate) -> None:
        self._signals.update((row[0], row) for row in update.signal_rows())
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        if self._truth is not None:
            self._truth.poll()
        self.out.write(self.render(update))
        self.out.flush()

    def close(self) -> None:
        if self._truth is not None:
            self._truth.close()

    def _yield_line(self, y: YieldFigure | None) -> str:
        if y is None or y.value is None:
            return "black-mass yield: waiting for feed and black-mass totals"
        pct = y.value * 100
        unc = (y.uncertainty or 0.0) * 100
        line = (
            f"black-mass yield ({y.basis}, {y.window_h:g} h, delay {y.delay_min:g} min): "
            f"{pct:6.2f} % ± {unc:.2f} pp  {_q(y.quality, self.tty)}  coverage {y.coverage * 100:5.1f} %"
        )
        if y.covered_h < y.window_h:
            line += f"  (window filling: {y.covered_h:.1f} h of {y.window_h:g} h)"
        if self._truth is not None:
            true = self._truth.at(y.t)
            if true is not None:
                line += f"  | simulator truth {true * 100:6.2f} %"
        return line

    def render(self, update: PipelineUpdate) -> str:
        f = update.flows
        plant = _iso(update.t_plant) if update.t_plant == update.t_plant else "--"
        health = "  ".join(
            f"{h.name}:{'up' if h.connected else 'DOWN'}({h.connects})" for h in self.runtime.health.values()
        )
        flows = (
            f"feed {_fmt(f.feed_tph if f else None, '5.2f')} t/h "
            f"({_fmt(f.feed_vs_nameplate * 100 if f and f.feed_vs_nameplate is not None else None, '3.0f')} % of "
            f"nameplate {self.config.line.nameplate.tonnes_per_hour:.2f} t/h)   "
            f"black mass {_fmt(f.black_mass_tph if f else None, '5.2f')} t/h"
        )
        head = f"plant time {plant} UTC   drivers {health}"
        alarms = _by_urgency(self.runtime.alarms.active)
        if not self.tty:
            y = update.yield_rolling
            ys = "--" if y is None or y.value is None else f"{y.value * 100:.2f}% {y.quality.label}"
            true = self._truth.at(y.t) if self._truth is not None and y is not None else None
            if true is not None:
                ys += f" (truth {true * 100:.2f}%)"
            named = ", ".join(f"{a.severity.value} {a.id}" for a in alarms[:SHOWN_ALARMS])
            more = f" +{len(alarms) - SHOWN_ALARMS} more" if len(alarms) > SHOWN_ALARMS else ""
            return f"{plant} yield {ys} | {flows} | alarms: {named or 'none'}{more} | {health}\n"
        shown = [row for t in self.config.tags if (row := self._signals.get(t.name)) is not None]
        rows = [
            f"  {name:20} {value:12.3f} {unit:6} {_q(Quality(quality), True)}"
            for name, unit, _, value, quality in shown
        ]
        body = [
            f"linegate demo · line {self.config.line.name} · Ctrl-C to stop",
            head,
            "",
            self._yield_line(update.yield_rolling),
            flows,
            "",
            f"active alarms: {len(alarms) or 'none'}",
            *(f"  {a.severity.value:7} {a.id:32} since {_iso(a.since)}  {a.text}" for a in alarms),
            "",
            *rows,
        ]
        return "\x1b[H\x1b[2J" + "\n".join(body) + "\n"
