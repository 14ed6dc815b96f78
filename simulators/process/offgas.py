"""Shredder off-gas detection and the thermal camera on the shredder outlet.

Gas release is proportional to the electrolyte passing the cutting zone: H2, CO and HF also
scale with the lot's residual state of charge (SOC / soc_ref), VOC with the electrolyte alone.
A slow AR(1) factor models the release's fluctuation. The thermal camera sees the outlet belt
warm with throughput and a hot-spot that grows with the reactive load (both through the
thermal lag of the material on the belt, `outlet_tau_s`); `therm.dTdt` is the
smoothed rate of change of the hottest spot. A hot-spot event (a cell going into thermal
runaway) pushes the hottest spot toward its peak within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulators.process.common import Normals, ar1, lag


@dataclass(frozen=True, slots=True)
class OffgasParams:
    release_tau_s: float = 20.0
    soc_ref: float = 0.1
    h2_base_ppm: float = 2.0
    h2_ppm_per_kgph: float = 0.6
    co_base_ppm: float = 1.0
    co_ppm_per_kgph: float = 0.3
    hf_base_ppm: float = 0.05
    hf_ppm_per_kgph: float = 0.003
    voc_base_ppm: float = 5.0
    voc_ppm_per_kgph: float = 2.0
    gas_sigma_rel: float = 0.10
    gas_tau_s: float = 120.0
    outlet_ambient_c: float = 25.0
    outlet_c_per_tph: float = 6.0
    outlet_tau_s: float = 120.0  # thermal mass of the material on the outlet belt
    hotspot_offset_c: float = 8.0
    hotspot_c_per_kgph: float = 0.03  # per kg/h of SOC-weighted electrolyte
    hotspot_sigma_c: float = 1.0
    hotspot_tau_s: float = 60.0
    event_rise_tau_s: float = 10.0
    event_decay_tau_s: float = 60.0
    dtdt_tau_s: float = 5.0


class Offgas:
    def __init__(self, p: OffgasParams, dt_s: float, gas_noise: Normals, thermal_noise: Normals) -> None:
        self.p = p
        self.dt_s = dt_s
        self._gas_noise = gas_noise
        self._thermal_noise = thermal_noise
        self._a = lag(dt_s, p.release_tau_s)
        self._a_outlet = lag(dt_s, p.outlet_tau_s)
        self._a_rise = lag(dt_s, p.event_rise_tau_s)
        self._a_decay = lag(dt_s, p.event_decay_tau_s)
        self._a_dtdt = lag(dt_s, p.dtdt_tau_s)
        self._ar_gas = ar1(dt_s, p.gas_tau_s, p.gas_sigma_rel)
        self._ar_hot = ar1(dt_s, p.hotspot_tau_s, p.hotspot_sigma_c)
        self.el_kgph = 0.0
        self.reactive_kgph = 0.0  # electrolyte x SOC / soc_ref
        self._gas_dev = 0.0
        self._hot_dev = 0.0
        self.bump_c = 0.0
        self.event_peak_c = 0.0
        self.event_left = 0
        self.outlet_c = p.outlet_ambient_c
        self._base_c = p.outlet_ambient_c
        self._reactive_slow = 0.0
        self.hotspot_c = p.outlet_ambient_c + p.hotspot_offset_c
        self.dtdt = 0.0

    def step(self, electrolyte_kg: float, soc: float, tph: float) -> None:
        p, dt = self.p, self.dt_s
        el = electrolyte_kg * 3600.0 / dt
        self.el_kgph += (el - self.el_kgph) * self._a
        self.reactive_kgph += (el * soc / p.soc_ref - self.reactive_kgph) * self._a
        phi, c = self._ar_gas
        self._gas_dev = phi * self._gas_dev + c * self._gas_noise.next()
        phi, c = self._ar_hot
        self._hot_dev = phi * self._hot_dev + c * self._thermal_noise.next()
        self._base_c += (p.outlet_ambient_c + p.outlet_c_per_tph * tph - self._base_c) * self._a_outlet
        self._reactive_slow += (self.reactive_kgph - self._reactive_slow) * self._a_outlet
        base = self._base_c
        self.outlet_c = base + 0.5 * self._hot_dev
        if self.event_left > 0:
            self.event_left -= 1
            self.bump_c += (self.event_peak_c - base - p.hotspot_offset_c - self.bump_c) * self._a_rise
        else:
            self.bump_c -= self.bump_c * self._a_decay
        hot = (
            base
            + p.hotspot_offset_c
            + p.hotspot_c_per_kgph * self._reactive_slow
            + self._hot_dev
            + self.bump_c
        )
        self.dtdt += ((hot - self.hotspot_c) / dt - self.dtdt) * self._a_dtdt
        self.hotspot_c = hot

    def _factor(self) -> float:
        return max(1.0 + self._gas_dev, 0.0)

    @property
    def h2_ppm(self) -> float:
        return (self.p.h2_base_ppm + self.p.h2_ppm_per_kgph * self.reactive_kgph) * self._factor()

    @property
    def co_ppm(self) -> float:
        return (self.p.co_base_ppm + self.p.co_ppm_per_kgph * self.reactive_kgph) * self._factor()

    @property
    def hf_ppm(self) -> float:
        return (self.p.hf_base_ppm + self.p.hf_ppm_per_kgph * self.reactive_kgph) * self._factor()

    @property
    def voc_ppm(self) -> float:
        return (self.p.voc_base_ppm + self.p.voc_ppm_per_kgph * self.el_kgph) * self._factor()


__all__ = ["Offgas", "OffgasParams"]
