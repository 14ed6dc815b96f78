"""N2 inerting of the shredder chamber: O2 (two analyser locations), N2 flow, overpressure.

O2 is a first-order purge toward the floor the N2 supply holds, tau = V / Q_N2 (3 m³ at
40 Nm³/h: 4.5 min), with a step ingress of air at every airlock cycle: a sawtooth around
~1 vol % in normal feeding. In purge mode (after a stop or trip, or while O2 is high) the N2
flow doubles. An air-ingress fault (event) drives O2 toward its peak and drops the chamber
overpressure while it lasts. Analyser B sits a little further from the inlet: it sees the
chamber O2 plus a small fixed offset and its own small local fluctuation (the true location
difference; the analysers' own T90 and noise belong to the sensor layer). A sample-line fault can add a true
offset at either analyser's location (event).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulators.process.common import Normals, ar1, lag


@dataclass(frozen=True, slots=True)
class InertingParams:
    chamber_volume_m3: float = 3.0
    n2_normal_nm3h: float = 40.0
    n2_purge_nm3h: float = 80.0
    n2_tau_s: float = 10.0
    o2_floor_vol_pct: float = 0.4
    o2_ingress_vol_pct: float = 0.3  # step per airlock cycle
    o2_ingress_sigma_rel: float = 0.2
    o2_noise_vol_pct: float = 0.02
    o2_noise_tau_s: float = 30.0
    analyser_b_offset_vol_pct: float = 0.02
    analyser_b_sigma_vol_pct: float = 0.01
    analyser_b_tau_s: float = 10.0
    press_base_mbar: float = 2.0
    press_per_nm3h: float = 0.08
    press_tau_s: float = 5.0
    leak_press_mbar: float = 0.3
    ingress_tau_s: float = 15.0
    gas_temp_ambient_c: float = 25.0
    gas_temp_c_per_tph: float = 8.0
    gas_temp_tau_s: float = 120.0

    def __post_init__(self) -> None:
        if self.chamber_volume_m3 <= 0 or self.n2_normal_nm3h <= 0 or self.n2_purge_nm3h <= 0:
            raise ValueError("inerting: chamber volume and N2 flows must be positive")


class Inerting:
    def __init__(self, p: InertingParams, dt_s: float, noise: Normals) -> None:
        self.p = p
        self.dt_s = dt_s
        self._noise = noise
        self._a_n2 = lag(dt_s, p.n2_tau_s)
        self._ar_b = ar1(dt_s, p.analyser_b_tau_s, p.analyser_b_sigma_vol_pct)
        self._a_press = lag(dt_s, p.press_tau_s)
        self._a_ingress = lag(dt_s, p.ingress_tau_s)
        self._a_gas = lag(dt_s, p.gas_temp_tau_s)
        self._ar = ar1(dt_s, p.o2_noise_tau_s, p.o2_noise_vol_pct)
        # Start in the periodic steady state of normal feeding (cycle ~2 min).
        tau = p.chamber_volume_m3 * 3600.0 / p.n2_normal_nm3h
        self.o2 = p.o2_floor_vol_pct + p.o2_ingress_vol_pct / (1.0 - math.exp(-120.0 / tau)) * 0.7
        self._dev = 0.0
        self._dev_b = 0.0
        self.n2_flow = p.n2_normal_nm3h
        self.n2_total_nm3 = 0.0
        self.press_mbar = p.press_base_mbar + p.press_per_nm3h * p.n2_normal_nm3h
        self.gas_temp_c = p.gas_temp_ambient_c + p.gas_temp_c_per_tph * 1.7
        self.ingress_peak = 0.0
        self.ingress_left = 0  # steps of an air-ingress fault still to run
        self.offset_a = 0.0
        self.offset_b = 0.0

    def step(self, cycled: bool, purge: bool, tph: float) -> None:
        p, dt = self.p, self.dt_s
        target = p.n2_purge_nm3h if purge else p.n2_normal_nm3h
        self.n2_flow += (target - self.n2_flow) * self._a_n2
        self.n2_total_nm3 += self.n2_flow * dt / 3600.0
        tau = p.chamber_volume_m3 * 3600.0 / self.n2_flow
        self.o2 += (p.o2_floor_vol_pct - self.o2) * (1.0 - math.exp(-dt / tau))
        if cycled:
            self.o2 += p.o2_ingress_vol_pct * max(0.0, 1.0 + p.o2_ingress_sigma_rel * self._noise.next())
        press_target = p.press_base_mbar + p.press_per_nm3h * self.n2_flow
        if self.ingress_left > 0:
            self.ingress_left -= 1
            self.o2 += (self.ingress_peak - self.o2) * self._a_ingress
            press_target = p.leak_press_mbar
        self.press_mbar += (press_target - self.press_mbar) * self._a_press
        phi, c = self._ar
        self._dev = phi * self._dev + c * self._noise.next()
        phi, c = self._ar_b
        self._dev_b = phi * self._dev_b + c * self._noise.next()
        self.gas_temp_c += (p.gas_temp_ambient_c + p.gas_temp_c_per_tph * tph - self.gas_temp_c) * self._a_gas

    @property
    def o2_a(self) -> float:
        return max(self.o2 + self._dev + self.offset_a, 0.0)

    @property
    def o2_b(self) -> float:
        return max(self.o2 + self._dev + self._dev_b + self.p.analyser_b_offset_vol_pct + self.offset_b, 0.0)


__all__ = ["Inerting", "InertingParams"]
