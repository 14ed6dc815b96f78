"""Deterministic process model of the preprocessing line, stepped in plant time.

The model carries the material as a small component vector (black-mass-forming solids,
electrolyte, coarse: foils/steel/plastics) through the stages of the dry route:

    feed belt -> shredder (pure delay) -> conveyor -> vacuum dryer (plug flow; the volatile
    electrolyte evaporates to the condensate tank) -> sieve (BM solids and the residual
    electrolyte to the black-mass stream, coarse to the coarse stream) -> BM conveyor ->
    BM belt weigher.

Everything here is the TRUTH: the sensor layer (`simulators.sensors`) adds measurement errors
on top, and `simulators.truth` records the true totals. Mass is conserved by construction:
at every step

    feed_in_total = bm_out_total + coarse_out_total + condensate_total + holdup

where holdup is the mass in transit in all delay lines. Internally masses are kg and times
seconds; `signals()` converts to the units of config/line1.toml (t, t/h, kg, ...).

Randomness comes from independent, seeded streams (one per purpose: feed surging, lot draws,
O2, gas, thermal), so adding a new random process later does not change the others.

Performance: one step is a few dozen scalar operations and ring-buffer writes (numpy arrays
with integer heads); a 24 h day at dt = 1 s (86,400 steps) runs in a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

# Indices of the component vector carried through every stage.
BM_SOLIDS, ELECTROLYTE, COARSE = 0, 1, 2
COMPONENTS: tuple[str, ...] = ("bm_solids", "electrolyte", "coarse")

# Seed-sequence domains: the plant and the sensor layer draw from disjoint stream families
# of the same user seed, so they are independent yet reproducible from one number.
PLANT_DOMAIN = 0
SENSOR_DOMAIN = 1

# Plant random streams, by purpose; the index is part of the seed, never reorder.
_STREAM_FEED, _STREAM_LOTS, _STREAM_O2, _STREAM_GAS, _STREAM_THERMAL = range(5)


def seeded_stream(seed: int, domain: int, index: int) -> np.random.Generator:
    """An independent generator for (seed, domain, index); stable across numpy versions."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(domain, index))))


class _Normals:
    """Standard normals drawn in blocks: per-call `rng.standard_normal()` costs ~1 µs, a block
    amortises that, and the sequence does not depend on how the caller chunks its steps."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng = rng
        self._buf: list[float] = rng.standard_normal(block).tolist()
        self._i = 0

    def next(self) -> float:
        i = self._i
        if i == len(self._buf):
            self._buf = self._rng.standard_normal(len(self._buf)).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


# ---------------------------------------------------------------------------------------------
# Feed: lots drawn from a mix of feed types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeedType:
    """A kind of feed material and the ranges its lots draw their true mass split from.

    `bm_fraction` is the black-mass-forming solids (coating, fines) as a fraction of lot mass;
    `electrolyte_fraction` the electrolyte fill. The rest is coarse (foils, steel, plastics).
    Both are drawn uniformly per lot. `weight` is the relative frequency in the mix.
    """

    name: str
    bm_fraction: tuple[float, float]
    electrolyte_fraction: tuple[float, float]
    weight: float


# domain.md §1.3. Weighted toward EoL modules so that the mean wet yield (solids plus the
# residual electrolyte that reports to the black mass) is about 45 %.
DEFAULT_FEED_MIX: tuple[FeedType, ...] = (
    FeedType("eol_nmc_module", (0.38, 0.46), (0.10, 0.15), 0.90),
    FeedType("production_scrap_cell", (0.50, 0.60), (0.10, 0.15), 0.07),
    FeedType("coated_electrode_scrap", (0.65, 0.80), (0.0, 0.005), 0.03),
)


@dataclass(frozen=True, slots=True)
class Lot:
    """One lot of feed with its own true mass split."""

    index: int
    lot_id: str
    feed_type: str
    mass_kg: float
    bm_fraction: float
    electrolyte_fraction: float

    @property
    def coarse_fraction(self) -> float:
        return 1.0 - self.bm_fraction - self.electrolyte_fraction


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetpointSpec:
    """A writable setpoint: its unit, safe range (inclusive) and description.

    How the simulated PLC holds it, as real ones do: `datatype` is the OPC-UA DataType of the
    tag, "Double" (an LREAL) or "Float" (a REAL, 32 bits: a client must write a Float variant).
    `counts_per_unit`, if set, is the PLC's integer scaling: the value is kept as a whole
    number of 1/counts_per_unit units (20: steps of 0.05), so a written value reads back
    rounded to that step (`stored`).
    """

    name: str
    unit: str
    low: float
    high: float
    description: str
    datatype: Literal["Double", "Float"] = "Double"
    counts_per_unit: int | None = None

    def __post_init__(self) -> None:
        if self.datatype not in ("Double", "Float"):
            raise ValueError(f"setpoint {self.name}: datatype must be Double or Float")
        if self.counts_per_unit is not None and self.counts_per_unit < 1:
            raise ValueError(f"setpoint {self.name}: counts_per_unit must be a positive integer")

    def stored(self, value: float) -> float:
        """What the PLC keeps when `value` is written: rounded to its integer scaling."""
        if self.counts_per_unit is None or not math.isfinite(value):
            return value
        # round-half-even like IEC 61131-3 REAL_TO_INT; dividing the count gives the nearest
        # double to the step (34 / 20 == 1.7, where 34 * 0.05 == 1.7000000000000002).
        return round(value * self.counts_per_unit) / self.counts_per_unit


@dataclass(frozen=True, slots=True)
class SignalInfo:
    """Unit and meaning of one true signal returned by `Plant.signals()`."""

    unit: str
    description: str


SIGNALS: dict[str, SignalInfo] = {
    "bw_feed.total": SignalInfo("t", "cumulative feed mass (feed belt weigher totalizer)"),
    "bw_feed.rate": SignalInfo("t/h", "feed mass flow"),
    "shr.power": SignalInfo("kW", "shredder drive power"),
    "shr.current": SignalInfo("A", "shredder drive current"),
    "shr.o2_a": SignalInfo("vol%", "shredder chamber O2 (analyser A sees this true value)"),
    "shr.o2_b": SignalInfo("vol%", "shredder chamber O2 (analyser B sees this true value)"),
    "dry.jacket_temp": SignalInfo("°C", "dryer jacket temperature"),
    "dry.press_abs": SignalInfo("mbar", "dryer absolute pressure"),
    "dry.mass": SignalInfo("kg", "dryer hold-up"),
    "cond.tank_mass": SignalInfo("kg", "condensate tank content"),
    "bm.rate": SignalInfo("t/h", "black-mass flow at the BM belt weigher"),
    "bm.total": SignalInfo("t", "cumulative black mass out"),
    "gas.h2": SignalInfo("ppm", "hydrogen at the shredder off-gas"),
    "gas.voc": SignalInfo("ppm", "volatile organics at the shredder off-gas"),
    "therm.hotspot_max": SignalInfo("°C", "hottest spot on the shredder outlet belt"),
}


@dataclass(frozen=True, slots=True)
class PlantParams:
    """Engineering parameters of the model. Defaults follow domain.md (assumed values there)."""

    # Integration step in plant seconds; every delay must be a whole number of steps.
    dt_s: float = 1.0

    # --- feed ---
    feed_rate_sp_tph: float = 1.7  # initial feed-rate setpoint: 13,500 t/yr over 8,000 h
    feed_rate_sp_range_tph: tuple[float, float] = (0.0, 2.0)
    # Surging of the scrap belt: AR(1) relative deviation, 1-sigma 10 % (so ±20 % is the 2-sigma
    # band), correlation time 60 s. The rate is clipped at zero.
    feed_surge_sigma_rel: float = 0.10
    feed_surge_tau_s: float = 60.0
    # The feeder follows its setpoint with a first-order lag (vibratory feeder / belt drive).
    feeder_tau_s: float = 20.0
    lot_mass_t: tuple[float, float] = (2.0, 8.0)
    feed_mix: tuple[FeedType, ...] = DEFAULT_FEED_MIX

    # --- transport: pure delays (plug flow), seconds ---
    shredder_delay_s: float = 30.0
    conveyor_delay_s: float = 60.0
    dryer_delay_s: float = 5400.0  # mean residence 90 min
    bm_conveyor_delay_s: float = 60.0

    # --- dryer / condensate ---
    # Fraction of the electrolyte that evaporates in the dryer (the rest, mostly EC, stays:
    # domain.md says 10-20 % of the fill remains).
    evaporated_fraction: float = 0.85
    # Evaporation happens at this many equally spaced points along the dryer, each taking the
    # same fraction of what is left: a discretised first-order decay with residence age.
    evaporation_zones: int = 6
    # Where the residual electrolyte goes at the sieve: it is soaked into the porous coating,
    # so by default all of it reports to the black mass (and shows up later as the BM volatile
    # content / LOD); 0.0 would send it with the coarse.
    residual_electrolyte_to_bm: float = 1.0
    condensate_pumpout_kg: float = 1800.0  # the tank is pumped empty when it reaches this
    jacket_temp_sp_c: float = 80.0
    jacket_temp_sp_range_c: tuple[float, float] = (40.0, 100.0)
    jacket_tau_s: float = 600.0  # thermal time constant of jacket + charge
    press_sp_mbar: float = 100.0
    press_sp_range_mbar: tuple[float, float] = (20.0, 300.0)
    press_tau_s: float = 60.0  # vacuum loop closed-loop time constant

    # --- shredder drive ---
    shredder_idle_kw: float = 35.0
    shredder_specific_energy_kwh_per_t: float = 40.0
    motor_voltage_v: float = 400.0  # 3-phase line voltage
    motor_power_factor: float = 0.85

    # --- inerting: O2 held in band by the N2 purge (AR(1) about the mean, clipped to band) ---
    o2_mean_vol_pct: float = 1.1
    o2_sigma_vol_pct: float = 0.1
    o2_tau_s: float = 300.0  # N2 purge time constant (V/Q ≈ 4-5 min)
    o2_band_vol_pct: tuple[float, float] = (0.8, 1.5)

    # --- gas detection: proportional to the electrolyte passing the shredder ---
    h2_base_ppm: float = 2.0
    h2_ppm_per_kgph_electrolyte: float = 0.1
    voc_base_ppm: float = 5.0
    voc_ppm_per_kgph_electrolyte: float = 0.5
    gas_sigma_rel: float = 0.10  # process fluctuation of the release, relative, AR(1)
    gas_tau_s: float = 120.0

    # --- thermal camera on the shredder outlet belt ---
    hotspot_ambient_c: float = 30.0
    hotspot_c_per_tph: float = 5.0
    hotspot_sigma_c: float = 1.0
    hotspot_tau_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.dt_s > 0:
            raise ValueError("dt_s must be positive")
        for name in ("shredder_delay_s", "conveyor_delay_s", "dryer_delay_s", "bm_conveyor_delay_s"):
            _steps(getattr(self, name), self.dt_s, name)
        if not 0.0 <= self.evaporated_fraction < 1.0:
            raise ValueError("evaporated_fraction must be in [0, 1)")
        if not 0.0 <= self.residual_electrolyte_to_bm <= 1.0:
            raise ValueError("residual_electrolyte_to_bm must be in [0, 1]")
        if not 1 <= self.evaporation_zones <= _steps(self.dryer_delay_s, self.dt_s, "dryer_delay_s"):
            raise ValueError("evaporation_zones must be between 1 and the dryer length in steps")
        if not self.feed_mix or any(ft.weight <= 0 for ft in self.feed_mix):
            raise ValueError("feed_mix needs at least one feed type, all weights positive")
        for ft in self.feed_mix:
            if not (0 <= ft.bm_fraction[0] <= ft.bm_fraction[1] and ft.electrolyte_fraction[0] >= 0):
                raise ValueError(f"feed type {ft.name}: bad fraction range")
            if ft.bm_fraction[1] + ft.electrolyte_fraction[1] > 1.0:
                raise ValueError(f"feed type {ft.name}: BM + electrolyte can exceed 1")
        if not 0 < self.lot_mass_t[0] <= self.lot_mass_t[1]:
            raise ValueError("lot_mass_t must be a positive (min, max)")
        if self.condensate_pumpout_kg <= 0:
            raise ValueError("condensate_pumpout_kg must be positive")

    @property
    def transport_delay_s(self) -> float:
        """True feed-to-BM-weigher delay: the sum of all plug-flow delays (the sieve is instant)."""
        return self.dt_s * (
            _steps(self.shredder_delay_s, self.dt_s, "shredder_delay_s")
            + _steps(self.conveyor_delay_s, self.dt_s, "conveyor_delay_s")
            + _steps(self.dryer_delay_s, self.dt_s, "dryer_delay_s")
            + _steps(self.bm_conveyor_delay_s, self.dt_s, "bm_conveyor_delay_s")
        )

    def setpoint_specs(self) -> dict[str, SetpointSpec]:
        return {
            # The feeder's PLC scales the setpoint to whole counts of 0.05 t/h.
            "shr.feed_rate_sp": SetpointSpec(
                "shr.feed_rate_sp",
                "t/h",
                *self.feed_rate_sp_range_tph,
                "Feed rate setpoint",
                counts_per_unit=20,
            ),
            # A REAL tag in the dryer's PLC, as many are.
            "dry.jacket_temp_sp": SetpointSpec(
                "dry.jacket_temp_sp",
                "°C",
                *self.jacket_temp_sp_range_c,
                "Dryer jacket temperature setpoint",
                datatype="Float",
            ),
            "dry.press_sp": SetpointSpec(
                "dry.press_sp", "mbar", *self.press_sp_range_mbar, "Dryer absolute pressure setpoint"
            ),
        }

    def expected_mean_yield(self) -> float:
        """Mean true wet BM yield of the feed mix (weights as mass shares; lots are equal in
        expected mass), with the residual electrolyte split as configured."""
        total_w = sum(ft.weight for ft in self.feed_mix)
        residual = (1.0 - self.evaporated_fraction) * self.residual_electrolyte_to_bm
        return (
            sum(
                ft.weight * (0.5 * sum(ft.bm_fraction) + residual * 0.5 * sum(ft.electrolyte_fraction))
                for ft in self.feed_mix
            )
            / total_w
        )


def _steps(delay_s: float, dt_s: float, name: str) -> int:
    n = round(delay_s / dt_s)
    if n < 1 or abs(n * dt_s - delay_s) > 1e-9 * max(1.0, delay_s):
        raise ValueError(f"{name}: {delay_s} s is not a positive whole number of {dt_s} s steps")
    return n


# ---------------------------------------------------------------------------------------------
# Transport
# ---------------------------------------------------------------------------------------------
class DelayLine:
    """Plug-flow transport as a ring buffer: what enters at step k leaves at step k + n.

    Each slot holds the component vector that entered in one step and the index of the lot
    that contributed most of it (lot ages and per-lot yield build on this later).
    """

    __slots__ = ("buf", "head", "lot", "n", "name")

    def __init__(self, name: str, delay_s: float, dt_s: float) -> None:
        self.name = name
        self.n = _steps(delay_s, dt_s, name)
        self.buf = np.zeros((self.n, len(COMPONENTS)), dtype=np.float64)
        self.lot = np.full(self.n, -1, dtype=np.int64)
        # `head` is the oldest slot: the one that leaves on the next push.
        self.head = 0

    def push(self, m0: float, m1: float, m2: float, lot: int) -> tuple[float, float, float, int]:
        """Insert this step's inflow and return the outflow (the slot that entered n steps ago)."""
        h = self.head
        o0, o1, o2 = self.buf[h].tolist()
        olot = int(self.lot[h])
        self.buf[h] = (m0, m1, m2)
        self.lot[h] = lot
        self.head = h + 1 if h + 1 < self.n else 0
        return o0, o1, o2, olot

    def slot_index(self, age_steps: int) -> int:
        """Buffer index of the parcel that entered `age_steps` pushes ago (1 = newest, n = oldest)."""
        return (self.head - age_steps) % self.n

    def holdup_kg(self) -> float:
        return float(self.buf.sum())

    def holdup_components_kg(self) -> np.ndarray:
        return self.buf.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# The plant
# ---------------------------------------------------------------------------------------------
class Plant:
    """The line's true state, advanced in steps of `params.dt_s` plant seconds."""

    def __init__(self, params: PlantParams | None = None, *, seed: int) -> None:
        p = params if params is not None else PlantParams()
        self.params = p
        self.seed = seed
        self.dt_s = p.dt_s
        self.steps = 0

        self._setpoint_specs = p.setpoint_specs()
        self._sp: dict[str, float] = {
            "shr.feed_rate_sp": p.feed_rate_sp_tph,
            "dry.jacket_temp_sp": p.jacket_temp_sp_c,
            "dry.press_sp": p.press_sp_mbar,
        }
        for name, value in self._sp.items():
            self._check_setpoint(name, value)

        self._feed_noise = _Normals(seeded_stream(seed, PLANT_DOMAIN, _STREAM_FEED))
        self._lot_rng = seeded_stream(seed, PLANT_DOMAIN, _STREAM_LOTS)
        self._o2_noise = _Normals(seeded_stream(seed, PLANT_DOMAIN, _STREAM_O2))
        self._gas_noise = _Normals(seeded_stream(seed, PLANT_DOMAIN, _STREAM_GAS))
        self._thermal_noise = _Normals(seeded_stream(seed, PLANT_DOMAIN, _STREAM_THERMAL))

        dt = p.dt_s
        # First-order lag and AR(1) coefficients, precomputed once: the step uses only these.
        self._a_feeder = 1.0 - math.exp(-dt / p.feeder_tau_s)
        self._a_jacket = 1.0 - math.exp(-dt / p.jacket_tau_s)
        self._a_press = 1.0 - math.exp(-dt / p.press_tau_s)
        self._ar_surge = _ar1(dt, p.feed_surge_tau_s, p.feed_surge_sigma_rel)
        self._ar_o2 = _ar1(dt, p.o2_tau_s, p.o2_sigma_vol_pct)
        self._ar_gas = _ar1(dt, p.gas_tau_s, p.gas_sigma_rel)
        self._ar_hot = _ar1(dt, p.hotspot_tau_s, p.hotspot_sigma_c)

        self.shredder = DelayLine("shredder_delay_s", p.shredder_delay_s, dt)
        self.conveyor = DelayLine("conveyor_delay_s", p.conveyor_delay_s, dt)
        self.dryer = DelayLine("dryer_delay_s", p.dryer_delay_s, dt)
        self.bm_conveyor = DelayLine("bm_conveyor_delay_s", p.bm_conveyor_delay_s, dt)
        self.stages: tuple[DelayLine, ...] = (self.shredder, self.conveyor, self.dryer, self.bm_conveyor)
        self.transport_delay_s = p.transport_delay_s

        # Evaporation points along the dryer (ages in steps) and the fraction of the remaining
        # electrolyte each takes, so that exactly `evaporated_fraction` has gone at the exit.
        n_dry, k = self.dryer.n, p.evaporation_zones
        self._evap_ages: tuple[int, ...] = tuple(round(i * n_dry / k) for i in range(1, k + 1))
        self._evap_frac = 1.0 - (1.0 - p.evaporated_fraction) ** (1.0 / k)

        # Dynamic state (true values).
        self._feeder_tph = p.feed_rate_sp_tph  # the line starts with the feeder at setpoint
        self._surge = 0.0
        self._o2_dev = 0.0
        self._gas_dev = 0.0
        self._hot_dev = 0.0
        self._jacket_c = p.jacket_temp_sp_c
        self._press_mbar = p.press_sp_mbar
        self.feed_rate_tph = 0.0
        self.bm_rate_tph = 0.0

        # Cumulative true totals, kg.
        self.feed_in_kg = 0.0
        self.feed_in_components_kg = [0.0, 0.0, 0.0]
        self.bm_out_kg = 0.0
        self.coarse_out_kg = 0.0
        self.condensate_kg = 0.0  # all electrolyte condensed: tank content + pumped out
        self.condensate_pumped_kg = 0.0
        self.tank_kg = 0.0
        self.pumpouts = 0
        # Running hold-ups for the per-step signals; `holdup_kg()` sums the buffers exactly.
        self._shr_mass = 0.0
        self._shr_electrolyte = 0.0
        self._dry_mass = 0.0

        self.lots: list[Lot] = []
        self._lot = self._new_lot()
        self._lot_left_kg = self._lot.mass_kg

    # --- setpoints ---------------------------------------------------------------------------
    @property
    def setpoint_specs(self) -> dict[str, SetpointSpec]:
        return dict(self._setpoint_specs)

    def setpoints(self) -> dict[str, float]:
        return dict(self._sp)

    def set_setpoint(self, name: str, value: float) -> None:
        """Change a setpoint; raises KeyError for an unknown name, ValueError when out of range."""
        self._check_setpoint(name, value)
        self._sp[name] = float(value)

    def _check_setpoint(self, name: str, value: float) -> None:
        spec = self._setpoint_specs.get(name)
        if spec is None:
            raise KeyError(f"unknown setpoint {name!r}; known: {sorted(self._setpoint_specs)}")
        v = float(value)
        if not (math.isfinite(v) and spec.low <= v <= spec.high):
            raise ValueError(f"{name}: {value} {spec.unit} is outside [{spec.low}, {spec.high}]")

    # --- lots --------------------------------------------------------------------------------
    @property
    def lot(self) -> Lot:
        """The lot currently on the feed belt."""
        return self._lot

    def _new_lot(self) -> Lot:
        p, rng = self.params, self._lot_rng
        weights = np.array([ft.weight for ft in p.feed_mix], dtype=np.float64)
        ft = p.feed_mix[int(rng.choice(len(weights), p=weights / weights.sum()))]
        mass_kg = 1000.0 * float(rng.uniform(*p.lot_mass_t))
        bm = float(rng.uniform(*ft.bm_fraction))
        el = float(rng.uniform(*ft.electrolyte_fraction))
        index = len(self.lots)
        lot = Lot(index, f"L{index + 1:05d}", ft.name, mass_kg, bm, el)
        self.lots.append(lot)
        return lot

    # --- dynamics ----------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Plant seconds since the start (a product, not a running sum: no drift)."""
        return self.steps * self.dt_s

    def step(self) -> None:
        """Advance the plant by one dt."""
        dt = self.dt_s

        # Feed: feeder lag toward the setpoint, AR(1) surging on top, clipped at zero.
        sp = self._sp["shr.feed_rate_sp"]
        self._feeder_tph += (sp - self._feeder_tph) * self._a_feeder
        phi, c = self._ar_surge
        self._surge = phi * self._surge + c * self._feed_noise.next()
        rate = self._feeder_tph * (1.0 + self._surge)
        if rate < 0.0:
            rate = 0.0
        m = rate * dt / 3.6  # t/h -> kg per step
        self.feed_rate_tph = rate

        # Split the step's mass over lots; the coarse share is the remainder so the three
        # components add up to exactly what was fed.
        f_bm = f_el = f_co = 0.0
        lot = self._lot
        lot_tag, lot_tag_kg = lot.index, 0.0
        left = m
        while left > 0.0:
            take = left if left <= self._lot_left_kg else self._lot_left_kg
            b = take * lot.bm_fraction
            e = take * lot.electrolyte_fraction
            f_bm += b
            f_el += e
            f_co += take - b - e
            if take > lot_tag_kg:
                lot_tag, lot_tag_kg = lot.index, take
            left -= take
            self._lot_left_kg -= take
            if self._lot_left_kg <= 0.0:
                lot = self._lot = self._new_lot()
                self._lot_left_kg = lot.mass_kg
        fed = f_bm + f_el + f_co
        self.feed_in_kg += fed
        fc = self.feed_in_components_kg
        fc[0] += f_bm
        fc[1] += f_el
        fc[2] += f_co

        # Shredder -> conveyor -> dryer.
        s0, s1, s2, slot = self.shredder.push(f_bm, f_el, f_co, lot_tag)
        self._shr_mass += fed - (s0 + s1 + s2)
        self._shr_electrolyte += f_el - s1
        c0, c1, c2, clot = self.conveyor.push(s0, s1, s2, slot)
        d0, d1, d2, dlot = self.dryer.push(c0, c1, c2, clot)

        # Evaporation inside the dryer at fixed residence ages.
        buf, frac, evap = self.dryer.buf, self._evap_frac, 0.0
        head, n_dry = self.dryer.head, self.dryer.n
        for age in self._evap_ages:
            i = head - age
            if i < 0:
                i += n_dry
            e = buf[i, 1]
            if e > 0.0:
                d = float(e) * frac
                buf[i, 1] = e - d
                evap += d
        self._dry_mass += (c0 + c1 + c2) - (d0 + d1 + d2) - evap
        self.condensate_kg += evap
        self.tank_kg += evap
        if self.tank_kg >= self.params.condensate_pumpout_kg:
            # Pump-out empties the tank in one go (it takes minutes; the step is what matters).
            self.condensate_pumped_kg += self.tank_kg
            self.tank_kg = 0.0
            self.pumpouts += 1

        # Sieve: solids and the residual electrolyte's BM share to black mass, rest to coarse.
        to_bm = d1 * self.params.residual_electrolyte_to_bm
        self.coarse_out_kg += d2 + (d1 - to_bm)
        b0, b1, b2, _ = self.bm_conveyor.push(d0, to_bm, 0.0, dlot)
        bm = b0 + b1 + b2
        self.bm_out_kg += bm
        self.bm_rate_tph = bm * 3.6 / dt

        # Slow process variables.
        self._jacket_c += (self._sp["dry.jacket_temp_sp"] - self._jacket_c) * self._a_jacket
        self._press_mbar += (self._sp["dry.press_sp"] - self._press_mbar) * self._a_press
        phi, c = self._ar_o2
        self._o2_dev = phi * self._o2_dev + c * self._o2_noise.next()
        phi, c = self._ar_gas
        self._gas_dev = phi * self._gas_dev + c * self._gas_noise.next()
        phi, c = self._ar_hot
        self._hot_dev = phi * self._hot_dev + c * self._thermal_noise.next()

        self.steps += 1

    def advance(self, n_steps: int, observer: Callable[[Plant], None] | None = None) -> None:
        """Run `n_steps` steps, calling `observer(self)` after each (the truth recorder)."""
        step = self.step
        if observer is None:
            for _ in range(n_steps):
                step()
        else:
            for _ in range(n_steps):
                step()
                observer(self)

    # --- outputs -----------------------------------------------------------------------------
    def holdup_kg(self) -> float:
        """Exact mass in transit in every stage (sums the buffers)."""
        return sum(s.holdup_kg() for s in self.stages)

    def balance_residual_kg(self) -> float:
        """feed_in - (bm + coarse + condensate + holdup): zero up to rounding."""
        return self.feed_in_kg - (self.bm_out_kg + self.coarse_out_kg + self.condensate_kg + self.holdup_kg())

    def signals(self) -> dict[str, float]:
        """True value of every signal, keyed by the tag names of config/line1.toml."""
        p = self.params
        shr_tph = self._shr_mass * 3.6 / p.shredder_delay_s  # mean throughput in the chamber
        el_kgph = max(self._shr_electrolyte, 0.0) * 3600.0 / p.shredder_delay_s
        power = p.shredder_idle_kw + p.shredder_specific_energy_kwh_per_t * shr_tph
        current = power * 1000.0 / (math.sqrt(3.0) * p.motor_voltage_v * p.motor_power_factor)
        lo, hi = p.o2_band_vol_pct
        o2 = min(max(p.o2_mean_vol_pct + self._o2_dev, lo), hi)
        gas = max(1.0 + self._gas_dev, 0.0)
        return {
            "bw_feed.total": self.feed_in_kg / 1000.0,
            "bw_feed.rate": self.feed_rate_tph,
            "shr.power": power,
            "shr.current": current,
            "shr.o2_a": o2,
            "shr.o2_b": o2,
            "dry.jacket_temp": self._jacket_c,
            "dry.press_abs": self._press_mbar,
            "dry.mass": max(self._dry_mass, 0.0),
            "cond.tank_mass": self.tank_kg,
            "bm.rate": self.bm_rate_tph,
            "bm.total": self.bm_out_kg / 1000.0,
            "gas.h2": (p.h2_base_ppm + p.h2_ppm_per_kgph_electrolyte * el_kgph) * gas,
            "gas.voc": (p.voc_base_ppm + p.voc_ppm_per_kgph_electrolyte * el_kgph) * gas,
            "therm.hotspot_max": p.hotspot_ambient_c + p.hotspot_c_per_tph * shr_tph + self._hot_dev,
        }


def _ar1(dt_s: float, tau_s: float, sigma: float) -> tuple[float, float]:
    """(phi, c) of x' = phi x + c z with stationary standard deviation `sigma`."""
    phi = math.exp(-dt_s / tau_s)
    return phi, sigma * math.sqrt(1.0 - phi * phi)


__all__ = [
    "COMPONENTS",
    "DEFAULT_FEED_MIX",
    "SIGNALS",
    "DelayLine",
    "FeedType",
    "Lot",
    "Plant",
    "PlantParams",
    "SetpointSpec",
    "SignalInfo",
    "seeded_stream",
]
