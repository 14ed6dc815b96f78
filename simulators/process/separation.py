"""Separation after the dryer, the BM belt weigher, the output bins and the big-bag filler.

Flowsheet (at the dryer discharge; the coarse products drop into their bins at once, the black
mass rides the BM conveyor to the BM belt weigher):

    magnet (steel -> Fe bin) -> zig-zag air classifier (light: separator/plastics and lifted
    foil -> plastics bin; entrained fine dust -> cyclone/filter -> dust bin) -> screen
    (Tromp cut ~1 mm: undersize -> black mass) -> eddy current on the oversize (Al/Cu foil and
    the coating still on it -> Al/Cu bin; the rest -> plastics/residue bin).

Routing of each component is a row of fractions over (black mass, Fe, Al/Cu, plastics, dust):
 * liberated coating (de-coating `liberation`, 94 %) passes the screen with the screen
   efficiency; unliberated coating stays on the foil and goes with it;
 * each component's undersize share `fines_*` after shredding/milling (foils 3-4 %, Cu more
   above 1750 rpm mill speed) passes with the screen efficiency;
 * residual electrolyte is soaked in the coating: `electrolyte_to_bm` goes to the black mass
   (wet basis), the rest splits between the foil and plastics products.
Directions: screen vibration frequency up -> screen efficiency up to a plateau (0.85 at 15 Hz,
0.98 above ~40 Hz) -> higher black-mass yield (slightly more foil fines in it too). Air velocity
up -> more plastics and foil lifted out before the screen (cleaner black mass, less Al/Cu and
plastics in it) but more fine coating entrained to the dust filter -> lower black-mass yield
and more dust.

Output points: black mass when it crosses the BM belt weigher (the bag filler is downstream,
outside the balance; its bag records are for lot assignment); Fe, Al/Cu, plastics and dust when
they drop into their bins. A bin's content is already output: emptying a full bin (at
`bin_empty_kg`) only resets its `*.mass` signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulators.process.common import lag, logistic
from simulators.process.material import (
    AL_FOIL,
    COATING,
    CU_FOIL,
    EC,
    N_COMPONENTS,
    PLASTICS,
    SOLVENT,
    STEEL,
)

Range = tuple[float, float]
# Columns of the routing matrix.
R_BM, R_FE, R_ALCU, R_PL, R_DUST = range(5)
BINS: tuple[str, ...] = ("bin_fe", "bin_alcu", "bin_pl", "dust")


@dataclass(frozen=True, slots=True)
class SeparationParams:
    bm_conveyor_s: float = 60.0
    vib_freq_sp_hz: float = 30.0
    vib_freq_sp_range_hz: Range = (15.0, 50.0)
    vib_tau_s: float = 5.0
    amplitude_mm_at_30hz: float = 4.0
    air_vel_sp_m_s: float = 6.0
    air_vel_sp_range_m_s: Range = (2.0, 10.0)
    air_tau_s: float = 10.0
    screen_eff_min: float = 0.85  # at the lowest frequency
    screen_eff_max: float = 0.98  # plateau
    screen_eff_scale_hz: float = 8.0
    liberation: float = 0.94
    fines_coating: float = 0.99
    fines_al: float = 0.04
    fines_cu: float = 0.03
    fines_steel: float = 0.005
    fines_plastics: float = 0.05
    mill_speed_rpm: float = 1500.0
    mill_cu_threshold_rpm: float = 1750.0
    magnet_eff: float = 0.97
    ecs_eff: float = 0.95
    ecs_rotor_rpm: float = 2000.0
    dust_entrain_at_6m_s: float = 0.015  # share of liberated coating, x (v / 6)^2
    plastics_lift_v50_m_s: float = 3.5
    plastics_lift_width_m_s: float = 0.7
    foil_lift_v50_m_s: float = 7.5
    foil_lift_width_m_s: float = 0.8
    electrolyte_to_bm: float = 0.9
    bin_empty_kg: tuple[float, float, float, float] = (1800.0, 1800.0, 1800.0, 1800.0)
    bag_target_kg: float = 800.0
    bag_target_range_kg: Range = (500.0, 1000.0)
    bag_change_s: float = 60.0
    fan_base_kw: float = 4.0
    fan_kw_at_6m_s: float = 12.0


def routing(p: SeparationParams, vib_hz: float, air_m_s: float) -> np.ndarray:
    """[component x (bm, fe, alcu, pl, dust)] fractions, each row summing to 1."""
    eta = p.screen_eff_max - (p.screen_eff_max - p.screen_eff_min) * math.exp(
        -(vib_hz - p.vib_freq_sp_range_hz[0]) / p.screen_eff_scale_hz
    )
    e_d = min(p.dust_entrain_at_6m_s * (air_m_s / 6.0) ** 2, 1.0)
    lift_pl = logistic((air_m_s - p.plastics_lift_v50_m_s) / p.plastics_lift_width_m_s)
    lift_f = logistic((air_m_s - p.foil_lift_v50_m_s) / p.foil_lift_width_m_s)
    cu_boost = 1.0 + max(0.0, (p.mill_speed_rpm - p.mill_cu_threshold_rpm) / 250.0)
    r = np.zeros((N_COMPONENTS, 5), dtype=np.float64)

    def foil(g: float) -> np.ndarray:
        heavy = 1.0 - lift_f
        bm = heavy * eta * g
        coarse = heavy - bm
        return np.array((bm, 0.0, coarse * p.ecs_eff, lift_f + coarse * (1.0 - p.ecs_eff), 0.0))

    al = foil(p.fines_al)
    cu = foil(min(p.fines_cu * cu_boost, 1.0))
    r[AL_FOIL] = al
    r[CU_FOIL] = cu
    lib = p.liberation
    passed = lib * (1.0 - e_d) * eta * p.fines_coating
    stuck = lib * (1.0 - e_d) - passed  # liberated but screened out: with the foil to the ECS
    r[COATING] = (1.0 - lib) * al + np.array(
        (passed, 0.0, stuck * p.ecs_eff, stuck * (1.0 - p.ecs_eff), lib * e_d)
    )
    rest = 1.0 - p.magnet_eff
    st_bm = rest * eta * p.fines_steel
    r[STEEL] = (st_bm, p.magnet_eff, 0.0, rest - st_bm, 0.0)
    heavy = 1.0 - lift_pl
    pl_bm = heavy * eta * p.fines_plastics
    r[PLASTICS] = (pl_bm, 0.0, 0.0, lift_pl + heavy - pl_bm, 0.0)
    eb = p.electrolyte_to_bm
    r[SOLVENT] = r[EC] = (eb, 0.0, (1.0 - eb) / 2.0, (1.0 - eb) / 2.0, 0.0)
    # Rounding: put each row's residue into its plastics/residue column so rows sum to 1.
    r[:, R_PL] += 1.0 - r.sum(axis=1)
    return r


class Separation:
    """Actuators, routing, bins and the bag filler (the BM conveyor is a LotDelay in the plant)."""

    def __init__(self, p: SeparationParams, dt_s: float) -> None:
        self.p = p
        self.dt_s = dt_s
        self._a_vib = lag(dt_s, p.vib_tau_s)
        self._a_air = lag(dt_s, p.air_tau_s)
        self.vib_hz = p.vib_freq_sp_hz
        self.air_m_s = p.air_vel_sp_m_s
        self._R_key = (self.vib_hz, self.air_m_s)
        self._set_routing(routing(p, self.vib_hz, self.air_m_s))
        self.bins = [0.0, 0.0, 0.0, 0.0]
        self.bin_empties = [0, 0, 0, 0]
        self._bag_change_steps = max(1, round(p.bag_change_s / dt_s))

    def _set_routing(self, r: np.ndarray) -> None:
        self.R = r
        self.r_bm = np.ascontiguousarray(r[:, R_BM])
        self.r_bins = np.ascontiguousarray(r[:, R_FE:])

    def step_controls(self, vib_sp: float, air_sp: float) -> bool:
        """Move the actuators; True if the routing is about to change (call `update_routing`
        after booking what went through the old one)."""
        self.vib_hz += (vib_sp - self.vib_hz) * self._a_vib
        self.air_m_s += (air_sp - self.air_m_s) * self._a_air
        # The routing follows the actuators, recomputed only when they moved noticeably.
        return (round(self.vib_hz, 3), round(self.air_m_s, 4)) != self._R_key

    def update_routing(self) -> None:
        self._R_key = (round(self.vib_hz, 3), round(self.air_m_s, 4))
        self._set_routing(routing(self.p, *self._R_key))

    def add_to_bins(self, masses: list[float]) -> None:
        bins, cap = self.bins, self.p.bin_empty_kg
        for i in range(4):
            v = bins[i] + masses[i]
            if v >= cap[i]:
                v = 0.0  # the full bin is swapped for an empty one (its content left the plant)
                self.bin_empties[i] += 1
            bins[i] = v

    @property
    def amplitude_mm(self) -> float:
        return min(6.0, max(2.0, self.p.amplitude_mm_at_30hz * (30.0 / max(self.vib_hz, 1.0)) ** 2))

    def fans_kw(self) -> float:
        p = self.p
        return p.fan_base_kw + p.fan_kw_at_6m_s * (self.air_m_s / 6.0) ** 3


__all__ = ["BINS", "R_ALCU", "R_BM", "R_DUST", "R_FE", "R_PL", "Separation", "SeparationParams", "routing"]
