"""The PLC's feed interlocks (authoritative; the gateway never overrides them).

Trip causes, checked every step in this order (the first one names the trip):
    1 O2 at analyser A >= 3.0 vol %      2 O2 at analyser B >= 3.0 vol %
    3 |O2 A - O2 B| > 0.5 vol %          4 H2 >= 25 % LEL (10,000 ppm)
    5 HF >= 3 ppm                         6 hottest spot rising > 1 °C/s
    7 shredder drive fault
A trip stops the feeder at once (material already in the line keeps moving), latches
`il.feed_trip` = 1 with `il.trip_reason` = the cause, and restarts the purge (`il.purge_done`
= 0). A line stop also clears `il.purge_done`.

Purge: runs while the line is started or a trip is latched, with N2 at purge flow; done after
`purge_s` seconds.

Permissive (`il.feed_permissive`): no trip cause present AND both O2 < 2.0 vol % continuously
for >= 60 s AND purge done AND chamber overpressure > +1 mbar AND downstream (dryer and
separation) running. A latched trip resets by itself on the first step the permissive holds
(so: O2 < 2.0 for 60 s after the cause cleared, and the purge done). The feeder runs when the
line is started, no trip is latched and the permissive holds; it then ramps up to its setpoint.
Setpoints written meanwhile are kept and take effect then.

Dryer heating permissive (`il.dryer_heat_permissive`): absolute pressure < 300 mbar; without
it the jacket heating is off.
"""

from __future__ import annotations

from dataclasses import dataclass

NONE, O2_A_HIGH, O2_B_HIGH, O2_DISAGREE, H2_HIGH, HF_HIGH, DTDT_HIGH, SHREDDER_FAULT = range(8)
TRIP_REASONS: dict[int, str] = {
    NONE: "none",
    O2_A_HIGH: "O2 analyser A >= trip limit",
    O2_B_HIGH: "O2 analyser B >= trip limit",
    O2_DISAGREE: "O2 analysers disagree",
    H2_HIGH: "H2 >= 25 % LEL",
    HF_HIGH: "HF >= trip limit",
    DTDT_HIGH: "hot-spot dT/dt above limit",
    SHREDDER_FAULT: "shredder drive fault",
}


@dataclass(frozen=True, slots=True)
class InterlockParams:
    o2_trip_vol_pct: float = 3.0
    o2_permissive_vol_pct: float = 2.0
    o2_permissive_hold_s: float = 60.0
    o2_disagree_vol_pct: float = 0.5
    h2_trip_ppm: float = 10_000.0  # 25 % of the 4 vol % LEL
    hf_trip_ppm: float = 3.0
    dtdt_trip_c_per_s: float = 1.0
    press_min_mbar: float = 1.0
    purge_s: float = 300.0
    dryer_heat_max_mbar: float = 300.0


class Interlocks:
    def __init__(self, p: InterlockParams, dt_s: float) -> None:
        self.p = p
        self.dt_s = dt_s
        # The line starts in steady production: purged, permissive, not tripped.
        self.line_started = True
        self.tripped = False
        self.reason = NONE
        self.purge_done = True
        self._purge_s = p.purge_s
        self._o2_ok_s = p.o2_permissive_hold_s
        self.permissive = True
        self.trips = 0

    @property
    def feed_enabled(self) -> bool:
        return self.line_started and not self.tripped and self.permissive

    @property
    def purging(self) -> bool:
        """N2 at purge flow: a trip is latched, or the line is started and not yet purged."""
        return self.tripped or (self.line_started and not self.purge_done)

    def stop_line(self) -> None:
        self.line_started = False
        self.purge_done = False
        self._purge_s = 0.0

    def start_line(self) -> None:
        self.line_started = True

    def step(
        self, o2_a: float, o2_b: float, h2: float, hf: float, dtdt: float, press: float, fault: bool
    ) -> None:
        p, dt = self.p, self.dt_s
        cause = NONE
        if o2_a >= p.o2_trip_vol_pct:
            cause = O2_A_HIGH
        elif o2_b >= p.o2_trip_vol_pct:
            cause = O2_B_HIGH
        elif abs(o2_a - o2_b) > p.o2_disagree_vol_pct:
            cause = O2_DISAGREE
        elif h2 >= p.h2_trip_ppm:
            cause = H2_HIGH
        elif hf >= p.hf_trip_ppm:
            cause = HF_HIGH
        elif dtdt > p.dtdt_trip_c_per_s:
            cause = DTDT_HIGH
        elif fault:
            cause = SHREDDER_FAULT
        if cause != NONE and not self.tripped:
            self.tripped = True
            self.reason = cause
            self.trips += 1
            self.purge_done = False
            self._purge_s = 0.0
        if o2_a < p.o2_permissive_vol_pct and o2_b < p.o2_permissive_vol_pct:
            self._o2_ok_s += dt
        else:
            self._o2_ok_s = 0.0
        if not self.purge_done and (self.line_started or self.tripped):
            self._purge_s += dt
            if self._purge_s >= p.purge_s - 1e-9:
                self.purge_done = True
        self.permissive = (
            cause == NONE
            and self._o2_ok_s >= p.o2_permissive_hold_s - 1e-9
            and self.purge_done
            and press > p.press_min_mbar
        )
        if self.tripped and self.permissive:
            self.tripped = False
            self.reason = NONE


__all__ = [
    "DTDT_HIGH",
    "H2_HIGH",
    "HF_HIGH",
    "NONE",
    "O2_A_HIGH",
    "O2_B_HIGH",
    "O2_DISAGREE",
    "SHREDDER_FAULT",
    "TRIP_REASONS",
    "InterlockParams",
    "Interlocks",
]
