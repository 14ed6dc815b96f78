"""Agitated vacuum dryer with condenser: tanks-in-series transport, first-order evaporation.

Transport: N equal, perfectly mixed tanks per lot slot (array [tank x lot slot x component]).
Each step a fraction a = N dt / mean_residence of every tank moves on (a discrete geometric
residence per tank, so the mean residence is exactly `mean_residence_s`); a hold-up swing
scales a down and up (the discharge screw slower / faster) so the hold-up swings while the
long-run mean residence stays the same.

Evaporation: each volatile class evaporates at k = k_max x (agitator / ref)^0.3 x
p_sat(T) / (p_sat(T) + p), p_sat from Clausius-Clapeyron about the class's normal boiling point
(lumped solvents DMC/EMC/DEC ~105 °C, EC ~248 °C), T the product temperature. Higher jacket
temperature (hotter product) or lower pressure evaporate more, so less electrolyte reaches the
black mass; EC evaporates slowly (10-20 % of the fill stays). The product temperature lags
toward the jacket temperature minus an approach that grows with the evaporative load and
shrinks with agitator speed (better heat transfer). The agitator changes heat and mass
transfer and the torque (which rises with hold-up and speed), not the residence time.

Condenser: the vapour is condensed at `cond.temp` (coolant plus a rise with vapour load); the
uncondensed slip (2 % at the coolant temperature, x e per 10 K warmer) leaves as `vent`.
Condensate leaves the plant as an output when it condenses (the tank content is a signal: it
is pumped out, in one step, when it reaches `tank_pumpout_kg`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulators.process.common import lag
from simulators.process.material import EC, SOLVENT

Range = tuple[float, float]
_R = 8.314e-3  # kJ/(mol K)


@dataclass(frozen=True, slots=True)
class DryerParams:
    n_tanks: int = 4
    mean_residence_s: float = 5400.0
    jacket_temp_sp_c: float = 80.0
    jacket_temp_sp_range_c: Range = (40.0, 100.0)
    jacket_tau_s: float = 600.0
    ambient_c: float = 20.0
    press_sp_mbar: float = 100.0
    press_sp_range_mbar: Range = (20.0, 300.0)
    press_tau_s: float = 60.0
    agitator_speed_sp_rpm: float = 20.0
    agitator_speed_sp_range_rpm: Range = (5.0, 40.0)
    agitator_tau_s: float = 10.0
    agitator_ref_rpm: float = 20.0
    agitator_rated_kw: float = 30.0
    nominal_holdup_kg: float = 2550.0  # 1.7 t/h x 90 min: torque and swing reference
    product_tau_s: float = 900.0
    product_approach_c: float = 6.0
    evap_cooling_c_per_kgph: float = 0.03
    k_max_per_s: float = 1.6e-3
    solvent_boil_c: float = 105.0
    solvent_dh_kj_mol: float = 35.0
    ec_boil_c: float = 248.0
    ec_dh_kj_mol: float = 55.0
    latent_kj_per_kg: float = 400.0
    cp_kj_per_kg_k: float = 1.0
    heat_loss_kw_per_k: float = 0.1
    vac_base_kw: float = 8.0
    vac_kw_per_ln: float = 6.0
    vac_vapour_ref_kgph: float = 300.0
    coolant_c: float = -12.0
    cond_c_per_kgph: float = 0.03
    cond_tau_s: float = 60.0
    cond_slip: float = 0.02
    cond_slip_scale_c: float = 10.0
    tank_pumpout_kg: float = 1800.0

    def __post_init__(self) -> None:
        if self.n_tanks < 1:
            raise ValueError("dryer: n_tanks must be >= 1")
        if self.mean_residence_s <= 0 or self.nominal_holdup_kg <= 0:
            raise ValueError("dryer: mean_residence_s and nominal_holdup_kg must be positive")


def _p_sat_mbar(t_c: float, boil_c: float, dh_kj_mol: float) -> float:
    return 1013.25 * math.exp(dh_kj_mol / _R * (1.0 / (boil_c + 273.15) - 1.0 / (t_c + 273.15)))


class Dryer:
    def __init__(self, p: DryerParams, dt_s: float, n_slots: int, n_components: int) -> None:
        self.p = p
        self.dt_s = dt_s
        self.a0 = p.n_tanks * dt_s / p.mean_residence_s
        if self.a0 > 1.0:
            raise ValueError("dryer: mean residence per tank must be at least one step")
        self.D = np.zeros((p.n_tanks, n_slots, n_components), dtype=np.float64)
        self._fac = np.ones(n_components, dtype=np.float64)  # per-component keep factor
        self._kv = np.zeros(2, dtype=np.float64)  # evaporated fractions of (solvent, EC)
        self._a_jacket = lag(dt_s, p.jacket_tau_s)
        self._a_press = lag(dt_s, p.press_tau_s)
        self._a_agit = lag(dt_s, p.agitator_tau_s)
        self._a_prod = lag(dt_s, p.product_tau_s)
        self._a_cond = lag(dt_s, p.cond_tau_s)
        self.jacket_c = p.jacket_temp_sp_c
        self.press_mbar = p.press_sp_mbar
        self.agitator_rpm = p.agitator_speed_sp_rpm
        self.vapour_kgph = 180.0  # steady state of nominal feeding (initial condition only)
        self.product_c = p.jacket_temp_sp_c - self._approach()
        self.cond_c = p.coolant_c + p.cond_c_per_kgph * self.vapour_kgph
        self.heat_permissive = True
        self.heat_kw = 0.0
        self.tank_kg = 0.0
        self.pumpouts = 0
        self.pumped_kg = 0.0
        self.slip = p.cond_slip

    def _approach(self) -> float:
        p = self.p
        h = math.sqrt(max(self.agitator_rpm, 1.0) / p.agitator_ref_rpm)
        return (p.product_approach_c + p.evap_cooling_c_per_kgph * self.vapour_kgph) / h

    def grow(self, n_slots: int) -> None:
        d = self.D
        self.D = np.concatenate([d, np.zeros((d.shape[0], n_slots - d.shape[1], d.shape[2]))], axis=1)

    def rate_constants(self) -> tuple[float, float]:
        """Per-step evaporated fractions of (solvent, EC) at the current state."""
        p = self.p
        t, pr = self.product_c, self.press_mbar
        boost = p.k_max_per_s * (max(self.agitator_rpm, 1.0) / p.agitator_ref_rpm) ** 0.3
        ps = _p_sat_mbar(t, p.solvent_boil_c, p.solvent_dh_kj_mol)
        pe = _p_sat_mbar(t, p.ec_boil_c, p.ec_dh_kj_mol)
        dt = self.dt_s
        return (
            1.0 - math.exp(-boost * ps / (ps + pr) * dt),
            1.0 - math.exp(-boost * pe / (pe + pr) * dt),
        )

    def step_controls(
        self, jacket_sp: float, press_sp: float, agitator_sp: float, heat_max_mbar: float
    ) -> None:
        p = self.p
        self.heat_permissive = self.press_mbar < heat_max_mbar
        target = jacket_sp if self.heat_permissive else p.ambient_c
        self.jacket_c += (target - self.jacket_c) * self._a_jacket
        self.press_mbar += (press_sp - self.press_mbar) * self._a_press
        self.agitator_rpm += (agitator_sp - self.agitator_rpm) * self._a_agit
        self.product_c += (self.jacket_c - self._approach() - self.product_c) * self._a_prod
        self.cond_c += (p.coolant_c + p.cond_c_per_kgph * self.vapour_kgph - self.cond_c) * self._a_cond
        self.slip = min(1.0, p.cond_slip * math.exp((self.cond_c - p.coolant_c) / p.cond_slip_scale_c))

    def step_material(self, a: float, flush: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Move, evaporate and discharge one step. Returns (discharge [slot x component],
        evaporated per slot). Slots in `flush` discharge all they still hold.

        Per tank: a fraction `a` of the content moves on, then the volatiles left evaporate
        their per-step fraction, so content = moved + kept + evaporated exactly."""
        D = self.D
        ks, ke = self.rate_constants()
        keep = 1.0 - a
        self._fac[SOLVENT] = keep * (1.0 - ks)
        self._fac[EC] = keep * (1.0 - ke)
        self._fac[:SOLVENT] = keep
        self._kv[0] = keep * ks
        self._kv[1] = keep * ke
        ev_slot = D[:, :, SOLVENT : EC + 1].sum(axis=0) @ self._kv
        out = D * a
        D *= self._fac
        D[1:] += out[:-1]
        discharge = out[-1]
        if flush is not None:
            discharge[flush] += D[:, flush, :].sum(axis=0)
            D[:, flush, :] = 0.0
        return discharge, ev_slot

    def condense(self, vapour_kg: float) -> tuple[float, float]:
        """Split the step's vapour into (condensate, vent) and fill the tank."""
        self.vapour_kgph = vapour_kg * 3600.0 / self.dt_s
        cond = vapour_kg * (1.0 - self.slip)
        self.tank_kg += cond
        if self.tank_kg >= self.p.tank_pumpout_kg:
            self.pumped_kg += self.tank_kg
            self.tank_kg = 0.0
            self.pumpouts += 1
        return cond, vapour_kg - cond

    def holdup_kg(self) -> float:
        return float(self.D.sum())

    def torque_pct(self, holdup_kg: float) -> float:
        p = self.p
        return (
            15.0
            + 55.0
            * holdup_kg
            / p.nominal_holdup_kg
            * (max(self.agitator_rpm, 1.0) / p.agitator_ref_rpm) ** 0.2
        )

    def agitator_kw(self, holdup_kg: float) -> float:
        return self.p.agitator_rated_kw * self.torque_pct(holdup_kg) / 100.0 * self.agitator_rpm / 40.0

    def vac_pump_kw(self) -> float:
        p = self.p
        return p.vac_base_kw + p.vac_kw_per_ln * math.log(1013.25 / self.press_mbar) * (
            1.0 + self.vapour_kgph / p.vac_vapour_ref_kgph
        )

    def heating_kw(self, inflow_kgph: float) -> float:
        """Jacket heat duty: latent heat of the vapour, sensible heat of the charge, losses."""
        if not self.heat_permissive:
            return 0.0
        p = self.p
        q = (
            p.latent_kj_per_kg * self.vapour_kgph / 3600.0
            + p.cp_kj_per_kg_k * inflow_kgph / 3600.0 * max(self.product_c - p.ambient_c, 0.0)
            + p.heat_loss_kw_per_k * max(self.jacket_c - p.ambient_c, 0.0)
        )
        return q


__all__ = ["Dryer", "DryerParams"]
