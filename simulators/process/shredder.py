"""The inerted shredder's drive: power from throughput, jams and the PLC's auto-reverse.

Power = P_idle + e_spec x throughput (e_spec per feed type, domain.md §1.5), smoothed over the
material in the cutting zone. Jams come at random (a Poisson process whose rate rises with the
square of throughput relative to nameplate) or on demand. The PLC's sequence: torque spike and
stall (`spike_s`), reverse (`reverse_s`, `shr.reverse_count` + 1), then either the jam has
cleared (probability `p_clear` per reverse) and the rotor restarts forward (`restart_s`), or it
reverses again; after `max_reverses` failed reverses the drive faults (`shr.fault` = 1, run 0)
until it is cleared `fault_clear_s` later. While not running forward, nothing passes the
cutting zone and the feeder is held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulators.process.common import lag

RUN, SPIKE, REVERSE, RESTART, FAULT = range(5)


@dataclass(frozen=True, slots=True)
class ShredderParams:
    residence_s: float = 30.0  # cutting zone + discharge, a pure delay
    idle_kw: float = 35.0
    rated_kw: float = 160.0  # at rated speed and 100 % torque
    speed_rpm: float = 24.0  # shear shafts
    motor_voltage_v: float = 400.0
    motor_power_factor: float = 0.85
    throughput_tau_s: float = 10.0
    nominal_tph: float = 1.7
    jam_rate_per_h: float = 0.3  # at nominal throughput
    spike_s: float = 3.0
    spike_torque_pct: float = 140.0
    reverse_s: float = 8.0
    reverse_torque_pct: float = 90.0
    restart_s: float = 4.0
    p_clear: float = 0.85
    max_reverses: int = 3
    fault_clear_s: float = 600.0

    def __post_init__(self) -> None:
        if self.jam_rate_per_h < 0 or not 0 < self.p_clear <= 1 or self.max_reverses < 1:
            raise ValueError("shredder: jam_rate_per_h >= 0, 0 < p_clear <= 1, max_reverses >= 1")


class ShredderDrive:
    """Drive state, jam sequence and the electrical signals."""

    def __init__(self, p: ShredderParams, dt_s: float, rng: np.random.Generator) -> None:
        self.p = p
        self.dt_s = dt_s
        self._rng = rng
        self._a = lag(dt_s, p.throughput_tau_s)
        self._steps = {
            s: max(1, round(d / dt_s))
            for s, d in (
                (SPIKE, p.spike_s),
                (REVERSE, p.reverse_s),
                (RESTART, p.restart_s),
                (FAULT, p.fault_clear_s),
            )
        }
        self.state = RUN
        self._left = 0
        self._attempts = 0
        self._hazard = 0.0
        self._next_jam = float(rng.exponential())
        self.reverse_count = 0
        self.jams = 0
        self.faults = 0
        self.tph = 0.0  # smoothed throughput in the cutting zone
        self.load_kw = 0.0  # smoothed e_spec x throughput
        self.power_kw = p.idle_kw
        self.torque_pct = 100.0 * p.idle_kw / p.rated_kw
        self.speed_rpm = p.speed_rpm

    @property
    def running(self) -> bool:
        """Material passes the cutting zone (forward rotation)."""
        return self.state == RUN or self.state == RESTART

    @property
    def fault(self) -> bool:
        return self.state == FAULT

    def jam(self) -> None:
        """Force a jam now (ignored while a jam sequence or a fault is in progress)."""
        if self.state == RUN or self.state == RESTART:
            self._enter(SPIKE)
            self._attempts = 0
            self.jams += 1

    def _enter(self, state: int) -> None:
        self.state = state
        self._left = self._steps.get(state, 0)
        if state == REVERSE:
            self.reverse_count += 1
        elif state == FAULT:
            self.faults += 1

    def step(self, m_in_kg: float, e_spec_kwh_per_t: float) -> None:
        """Advance one step with `m_in_kg` entering the cutting zone."""
        p, dt = self.p, self.dt_s
        tph_in = m_in_kg * 3.6 / dt
        self.tph += (tph_in - self.tph) * self._a
        self.load_kw += (e_spec_kwh_per_t * tph_in - self.load_kw) * self._a
        st = self.state
        if st == RUN:
            x = self.tph / p.nominal_tph
            self._hazard += p.jam_rate_per_h / 3600.0 * dt * x * x
            if self._hazard >= self._next_jam:
                self._hazard = 0.0
                self._next_jam = float(self._rng.exponential())
                self.jam()
        else:
            self._left -= 1
            if self._left <= 0:
                if st == SPIKE:
                    self._enter(REVERSE)
                elif st == REVERSE:
                    self._attempts += 1
                    if float(self._rng.uniform()) < p.p_clear:
                        self._enter(RESTART)
                    elif self._attempts >= p.max_reverses:
                        self._enter(FAULT)
                    else:
                        self._enter(REVERSE)
                else:  # RESTART done, or the fault was cleared
                    self.state = RUN
        st = self.state
        if st in (RUN, RESTART):
            self.speed_rpm = p.speed_rpm
            self.power_kw = p.idle_kw + self.load_kw
            self.torque_pct = 100.0 * self.power_kw / p.rated_kw
        elif st == SPIKE:
            self.speed_rpm = 0.3 * p.speed_rpm
            self.torque_pct = p.spike_torque_pct
            self.power_kw = p.idle_kw + p.rated_kw * self.torque_pct / 100.0 * 0.3
        elif st == REVERSE:
            self.speed_rpm = 0.5 * p.speed_rpm  # magnitude; the rotor turns backwards
            self.torque_pct = p.reverse_torque_pct
            self.power_kw = p.idle_kw + p.rated_kw * self.torque_pct / 100.0 * 0.5
        else:
            self.speed_rpm = 0.0
            self.torque_pct = 0.0
            self.power_kw = 0.0

    @property
    def current_a(self) -> float:
        p = self.p
        return self.power_kw * 1000.0 / (math.sqrt(3.0) * p.motor_voltage_v * p.motor_power_factor)


__all__ = ["FAULT", "RESTART", "REVERSE", "RUN", "SPIKE", "ShredderDrive", "ShredderParams"]
