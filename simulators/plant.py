"""Deterministic process model of the preprocessing line (domain.md §1-2), stepped in plant time.

This is the TRUE process: the sensor layer (`simulators.sensors`) adds measurement errors on
top, and `simulators.truth` records the true totals. The stages (sub-models in
`simulators.process`):

    feeder (lots; modules as items through the airlock, scrap as a surging belt)
      -> feed belt weigher [FEED POINT]
      -> inerted shredder (30 s pure delay; jams and auto-reverse; a little solvent flashes
         off to the off-gas [VENT])
      -> conveyor (60 s pure delay)
      -> vacuum dryer (4 tanks in series, mean 90 min; solvents evaporate to the condenser
         [CONDENSATE when condensed, the uncondensed slip to VENT])
      -> separation at the dryer discharge (magnet, air classifier, screen, eddy current)
         [FE, ALCU, PLASTICS, DUST when they drop into their bins]
      -> BM conveyor (60 s pure delay) -> BM belt weigher [BLACK_MASS] -> big-bag filler.

Outputs leave the plant at the points in brackets; everything between the feed point and an
output point is hold-up: shredder chamber, conveyors, dryer charge, BM conveyor. Bin and bag
contents are output already; the condensate tank too. So at every step

    feed = black_mass + fe + alcu + plastics + dust + condensate + vent + holdup

up to float rounding (`balance_residual_kg()`). The true mean feed-to-BM-weigher delay is
30 + 60 + 5400 + 60 = 5550 s (`transport_delay_s`; the hold-up swing event modulates the dryer
residence around that mean).

Material is tracked as [lot slot x component] (components in `simulators.process.material`),
so each lot's mass in every stage and its deliveries to every output are exact
(`lot_ledger()`). Randomness comes from independent streams `seeded_stream(seed, PLANT_DOMAIN,
i)`, one per purpose (indices below; new ones are appended, never reordered).

Performance: a step is ~30 small numpy operations plus scalar Python; a 24 h day at dt = 1 s
(86,400 steps) runs in well under 15 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simulators.process.bagging import BagFiller, BagRecord
from simulators.process.common import Normals, whole_steps
from simulators.process.dryer import Dryer, DryerParams
from simulators.process.energy import EnergyMeters
from simulators.process.feed import Feeder, FeedParams
from simulators.process.inerting import Inerting, InertingParams
from simulators.process.interlocks import TRIP_REASONS, InterlockParams, Interlocks
from simulators.process.lots import LotBook, LotRecord
from simulators.process.material import (
    COMPONENTS,
    DEFAULT_FEED_MIX,
    N_COMPONENTS,
    S_BM,
    S_COND,
    S_DUST,
    S_FE,
    S_VENT,
    STREAMS,
    FeedType,
    Lot,
)
from simulators.process.offgas import Offgas, OffgasParams
from simulators.process.separation import Separation, SeparationParams
from simulators.process.shredder import ShredderDrive, ShredderParams
from simulators.process.transport import LotDelay, ScalarDelay

# Seed-sequence domains: the plant and the sensor layer draw from disjoint stream families
# of the same user seed, so they are independent yet reproducible from one number.
PLANT_DOMAIN = 0
SENSOR_DOMAIN = 1

# Plant random streams, by purpose; the index is part of the seed, never reorder.
_STREAM_FEED, _STREAM_LOTS, _STREAM_O2, _STREAM_GAS, _STREAM_THERMAL, _STREAM_JAM, _STREAM_ITEMS = range(7)


def seeded_stream(seed: int, domain: int, index: int) -> np.random.Generator:
    """An independent generator for (seed, domain, index); stable across numpy versions."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(domain, index))))


# ---------------------------------------------------------------------------------------------
# Setpoints and signals
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


SignalKind = Literal["analog", "total", "counter", "state", "id"]


@dataclass(frozen=True, slots=True)
class SignalInfo:
    """Unit and meaning of one true signal returned by `Plant.signals()`.

    `rate_s` is the nominal publish period in plant seconds (domain.md §2; None = on change or
    per event). `kind`: analog value, monotone total, event counter, state/boolean/code, or id.
    """

    unit: str
    description: str
    rate_s: float | None = 1.0
    kind: SignalKind = "analog"


def _s(unit: str, description: str, rate_s: float | None = 1.0, kind: SignalKind = "analog") -> SignalInfo:
    return SignalInfo(unit, description, rate_s, kind)


# Feed type codes published as `feed.type` (FeedType.code): 1 EoL NMC module,
# 2 production-scrap cells / jelly rolls, 3 coated electrode scrap.
SIGNALS: dict[str, SignalInfo] = {
    # --- feed ---
    "feed.item_mass": _s("kg", "last airlock batch on the platform scale (modules)", None),
    "feed.scale_total": _s(
        "kg", "airlock platform scale totalizer: cumulative mass of the batches weighed", 1.0, "total"
    ),
    "feed.lot_id": _s("", "number of the lot being fed (L00012 -> 12)", None, "id"),
    "feed.type": _s(
        "", "feed type code of the lot being fed (1 module, 2 cells, 3 electrode)", None, "state"
    ),
    "bw_feed.rate": _s("t/h", "feed mass flow at the feed belt weigher"),
    "bw_feed.total": _s("t", "cumulative feed (feed belt weigher totalizer)", 1.0, "total"),
    "bw_feed.speed": _s("m/s", "feed belt speed (runs while the line is started)"),
    # --- shredder ---
    "shr.power": _s("kW", "shredder drive power"),
    "shr.current": _s("A", "shredder drive current"),
    "shr.torque_pct": _s("%", "shredder torque, % of rated"),
    "shr.speed": _s("rpm", "shear shaft speed (magnitude; reverses during a jam)"),
    "shr.reverse_count": _s("", "auto-reverse count since start", None, "counter"),
    "shr.run": _s("", "shredder running (1) or stopped by a fault (0)", None, "state"),
    "shr.fault": _s("", "shredder drive fault (1) after failed reverses", None, "state"),
    # --- inerting ---
    "shr.o2_a": _s("vol%", "chamber O2 at analyser A (true)"),
    "shr.o2_b": _s("vol%", "chamber O2 at analyser B (true)"),
    "n2.flow": _s("Nm³/h", "N2 purge flow"),
    "n2.total": _s("Nm³", "cumulative N2", 10.0, "total"),
    "shr.press": _s("mbar", "chamber overpressure (gauge)"),
    "shr.gas_temp": _s("°C", "chamber gas temperature"),
    # --- gas and thermal ---
    "gas.h2": _s("ppm", "hydrogen at the shredder off-gas", 2.0),
    "gas.co": _s("ppm", "carbon monoxide at the shredder off-gas", 2.0),
    "gas.hf": _s("ppm", "hydrogen fluoride at the shredder off-gas", 2.0),
    "gas.voc": _s("ppm", "volatile organics at the shredder off-gas", 2.0),
    "shr.outlet_temp_ir": _s("°C", "shredder outlet belt temperature (IR)"),
    "therm.hotspot_max": _s("°C", "hottest spot on the shredder outlet belt"),
    "therm.dTdt": _s("°C/s", "rate of rise of the hottest spot"),
    # --- dryer and condenser ---
    "dry.jacket_temp": _s("°C", "dryer jacket temperature"),
    "dry.product_temp": _s("°C", "dryer product temperature"),
    "dry.press_abs": _s("mbar", "dryer absolute pressure"),
    "dry.vac_pump_power": _s("kW", "vacuum pump power"),
    "dry.agitator_speed": _s("rpm", "dryer agitator speed"),
    "dry.agitator_torque": _s("%", "dryer agitator torque, % of rated"),
    "dry.mass": _s("kg", "dryer hold-up (load cells)"),
    "cond.temp": _s("°C", "condenser temperature"),
    "cond.tank_mass": _s("kg", "condensate tank content"),
    # --- separation ---
    "scr.vib_freq": _s("Hz", "screen vibration frequency"),
    "scr.amplitude": _s("mm", "screen vibration amplitude"),
    "ac.air_vel": _s("m/s", "air classifier air velocity"),
    "ecs.rotor_speed": _s("rpm", "eddy-current separator rotor speed"),
    "mill.speed": _s("rpm", "granulator/mill speed"),
    "bin_fe.mass": _s("kg", "Fe (steel) bin content", 5.0),
    "bin_alcu.mass": _s("kg", "Al/Cu foil bin content", 5.0),
    "bin_pl.mass": _s("kg", "plastics/residue bin content", 5.0),
    "dust.mass": _s("kg", "filter dust bin content", 5.0),
    # --- black mass ---
    "bm.rate": _s("t/h", "black-mass flow at the BM belt weigher"),
    "bm.total": _s("t", "cumulative black mass out", 1.0, "total"),
    "bag.net_mass": _s("kg", "net mass in the big bag being filled"),
    "bag.id": _s("", "number of the bag being filled", None, "id"),
    "bag.complete": _s("", "1 while a completed bag is being swapped", None, "state"),
    # --- utilities ---
    "energy.shr": _s("kWh", "shredder energy", 10.0, "total"),
    "energy.dry": _s("kWh", "dryer energy (jacket heat and agitator)", 10.0, "total"),
    "energy.vac": _s("kWh", "vacuum pump energy", 10.0, "total"),
    "energy.fans": _s("kWh", "fan energy (air classifier, ventilation)", 10.0, "total"),
    # --- interlocks (the PLC's) ---
    "il.feed_permissive": _s("", "feed permissive (1 = conditions met)", None, "state"),
    "il.feed_trip": _s("", "feed trip latched (1)", None, "state"),
    "il.trip_reason": _s("", "trip reason code (0 none; see interlocks.TRIP_REASONS)", None, "state"),
    "il.purge_done": _s("", "N2 purge complete (1)", None, "state"),
    "il.dryer_heat_permissive": _s("", "dryer heating permitted (press < 300 mbar)", None, "state"),
}


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlantParams:
    """Engineering parameters of the model. Defaults follow domain.md (assumed values there)."""

    # Integration step in plant seconds; every delay must be a whole number of steps.
    dt_s: float = 1.0
    feed_rate_sp_tph: float = 1.7  # initial feed-rate setpoint: 13,500 t/yr over 8,000 h
    feed_rate_sp_range_tph: tuple[float, float] = (0.0, 2.0)
    feed_mix: tuple[FeedType, ...] = DEFAULT_FEED_MIX
    conveyor_delay_s: float = 60.0  # shredder discharge to dryer inlet
    shredder_flash_fraction: float = 0.01  # of the volatile solvent, flashed off in the shredder
    lot_slots: int = 16  # initial; grows when more lots are in flight
    lot_flush_kg: float = 1e-6  # a closed lot's last milligram in the dryer discharges at once
    sweep_s: float = 60.0  # how often finished lots are flushed and retired
    feed: FeedParams = field(default_factory=FeedParams)
    shredder: ShredderParams = field(default_factory=ShredderParams)
    inerting: InertingParams = field(default_factory=InertingParams)
    offgas: OffgasParams = field(default_factory=OffgasParams)
    dryer: DryerParams = field(default_factory=DryerParams)
    separation: SeparationParams = field(default_factory=SeparationParams)
    interlocks: InterlockParams = field(default_factory=InterlockParams)

    def __post_init__(self) -> None:
        if not self.dt_s > 0:
            raise ValueError("dt_s must be positive")
        if not self.feed_mix or any(ft.weight < 0 for ft in self.feed_mix):
            raise ValueError("feed_mix needs at least one feed type and no negative weights")
        if sum(ft.weight for ft in self.feed_mix) <= 0:
            raise ValueError("feed_mix weights must not all be zero")
        if len({ft.name for ft in self.feed_mix}) != len(self.feed_mix):
            raise ValueError("feed_mix names must be unique")
        if not 0.0 <= self.shredder_flash_fraction < 1.0:
            raise ValueError("shredder_flash_fraction must be in [0, 1)")
        _ = self.transport_delay_s  # validates every delay as whole steps

    @property
    def transport_delay_s(self) -> float:
        """True mean feed-to-BM-weigher delay: a whole number of steps."""
        dt = self.dt_s
        n = (
            whole_steps(self.shredder.residence_s, dt, "shredder.residence_s")
            + whole_steps(self.conveyor_delay_s, dt, "conveyor_delay_s")
            + whole_steps(self.dryer.mean_residence_s, dt, "dryer.mean_residence_s")
            + whole_steps(self.separation.bm_conveyor_s, dt, "separation.bm_conveyor_s")
        )
        return n * dt

    def setpoint_specs(self) -> dict[str, SetpointSpec]:
        d, s = self.dryer, self.separation
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
                *d.jacket_temp_sp_range_c,
                "Dryer jacket temperature setpoint",
                datatype="Float",
            ),
            "dry.press_sp": SetpointSpec(
                "dry.press_sp", "mbar", *d.press_sp_range_mbar, "Dryer absolute pressure setpoint"
            ),
            "dry.agitator_speed_sp": SetpointSpec(
                "dry.agitator_speed_sp",
                "rpm",
                *d.agitator_speed_sp_range_rpm,
                "Dryer agitator speed setpoint",
            ),
            "scr.vib_freq_sp": SetpointSpec(
                "scr.vib_freq_sp", "Hz", *s.vib_freq_sp_range_hz, "Screen vibration frequency setpoint"
            ),
            "ac.air_vel_sp": SetpointSpec(
                "ac.air_vel_sp", "m/s", *s.air_vel_sp_range_m_s, "Air classifier air velocity setpoint"
            ),
            "bag.target_mass_sp": SetpointSpec(
                "bag.target_mass_sp", "kg", *s.bag_target_range_kg, "Big-bag target net mass"
            ),
        }

    def initial_setpoints(self) -> dict[str, float]:
        d, s = self.dryer, self.separation
        return {
            "shr.feed_rate_sp": self.feed_rate_sp_tph,
            "dry.jacket_temp_sp": d.jacket_temp_sp_c,
            "dry.press_sp": d.press_sp_mbar,
            "dry.agitator_speed_sp": d.agitator_speed_sp_rpm,
            "scr.vib_freq_sp": s.vib_freq_sp_hz,
            "ac.air_vel_sp": s.air_vel_sp_m_s,
            "bag.target_mass_sp": s.bag_target_kg,
        }


# Process events the scenario runner can apply: kind -> {param: type}.
EVENTS: dict[str, dict[str, type]] = {
    "process.feed_rate": {"tph": float},
    "process.line_stop": {},
    "process.line_start": {},
    "process.lot_change": {"feed_type": str},
    "process.o2_ingress": {"peak_vol_pct": float, "duration_s": float},
    "process.o2_analyser_offset": {"analyser": str, "offset_vol_pct": float},
    "process.dryer_holdup_swing": {"amplitude_kg": float, "period_h": float},
    "process.jam": {},
    "process.hotspot": {"peak_c": float, "duration_s": float},
}


# ---------------------------------------------------------------------------------------------
# The plant
# ---------------------------------------------------------------------------------------------
class Plant:
    """The line's true state, advanced in steps of `params.dt_s` plant seconds."""

    def __init__(self, params: PlantParams | None = None, *, seed: int) -> None:
        p = params if params is not None else PlantParams()
        self.params = p
        self.seed = seed
        self.dt_s = dt = p.dt_s
        self.steps = 0
        self.transport_delay_s = p.transport_delay_s

        self._setpoint_specs = p.setpoint_specs()
        self._sp = p.initial_setpoints()
        for name, value in self._sp.items():
            self._check_setpoint(name, value)

        def stream(i: int) -> np.random.Generator:
            return seeded_stream(seed, PLANT_DOMAIN, i)

        self.book = LotBook(p.lot_slots, p.shredder_flash_fraction)
        k = p.lot_slots

        self.shredder_ring = ScalarDelay("shredder.residence_s", p.shredder.residence_s, dt)
        self.conveyor = ScalarDelay("conveyor_delay_s", p.conveyor_delay_s, dt)
        self.dryer = Dryer(p.dryer, dt, k, N_COMPONENTS)
        self.bm_conveyor = LotDelay("separation.bm_conveyor_s", p.separation.bm_conveyor_s, dt, k)
        # The same conveyor seen by component (for the black mass's true composition).
        self.bm_comp_conveyor = LotDelay(
            "separation.bm_conveyor_s", p.separation.bm_conveyor_s, dt, N_COMPONENTS
        )
        self._bm_components = np.zeros(N_COMPONENTS, dtype=np.float64)
        self.separation = Separation(p.separation, dt)
        self.filler = BagFiller(k, max(1, round(p.separation.bag_change_s / dt)))
        self.book.on_grow += [self.dryer.grow, self.bm_conveyor.grow, self.filler.grow]

        self.drive = ShredderDrive(p.shredder, dt, stream(_STREAM_JAM))
        self.inerting = Inerting(p.inerting, dt, Normals(stream(_STREAM_O2)))
        self.offgas = Offgas(p.offgas, dt, Normals(stream(_STREAM_GAS)), Normals(stream(_STREAM_THERMAL)))
        self.interlock = Interlocks(p.interlocks, dt)
        self.energy = EnergyMeters()

        # Cumulative true totals, kg (feed and each output stream).
        self.feed_in_kg = 0.0
        self._out = [0.0] * len(STREAMS)
        self.feed_rate_tph = 0.0
        self.bm_rate_tph = 0.0
        self._dry_in_kgph = 0.0
        self._a0 = self.dryer.a0
        self._swing_amp_kg = 0.0
        self._swing_period_s = 0.0
        self._swing_t0_s = 0.0
        self._flush: np.ndarray | None = None
        self._heat_max = p.interlocks.dryer_heat_max_mbar
        self._dry_holdup_cache = 0.0
        self._sweep_steps = max(1, round(p.sweep_s / dt))
        self._mix_by_name = {ft.name: ft for ft in p.feed_mix}

        self.feeder = Feeder(
            p.feed,
            p.feed_mix,
            dt,
            initial_rate_tph=p.feed_rate_sp_tph,
            surge_noise=Normals(stream(_STREAM_FEED)),
            lot_rng=stream(_STREAM_LOTS),
            item_rng=stream(_STREAM_ITEMS),
            on_new_lot=self.book.add,
            on_close_lot=self.book.close,
        )

    # --- setpoints ---------------------------------------------------------------------------
    @property
    def setpoint_specs(self) -> dict[str, SetpointSpec]:
        return dict(self._setpoint_specs)

    def setpoints(self) -> dict[str, float]:
        return dict(self._sp)

    def set_setpoint(self, name: str, value: float) -> None:
        """Change a setpoint; KeyError for an unknown name, ValueError when out of range. The
        PLC accepts writes while the feed is tripped; they act once the trip resets."""
        self._check_setpoint(name, value)
        self._sp[name] = float(value)

    def _check_setpoint(self, name: str, value: float) -> None:
        spec = self._setpoint_specs.get(name)
        if spec is None:
            raise KeyError(f"unknown setpoint {name!r}; known: {sorted(self._setpoint_specs)}")
        v = float(value)
        if not (math.isfinite(v) and spec.low <= v <= spec.high):
            raise ValueError(f"{name}: {value} {spec.unit} is outside [{spec.low}, {spec.high}]")

    # --- events ------------------------------------------------------------------------------
    def apply_event(self, kind: str, params: Mapping[str, float | str]) -> None:
        """Apply a process event from the next step on; ValueError for an unknown kind or bad
        parameters. Kinds and parameters: see `EVENTS` and the README."""
        spec = EVENTS.get(kind)
        if spec is None:
            raise ValueError(f"unknown process event {kind!r}; known: {sorted(EVENTS)}")
        extra = set(params) - set(spec)
        missing = set(spec) - set(params)
        if extra or missing:
            raise ValueError(
                f"{kind}: expected parameters {sorted(spec)}"
                + (f"; unexpected {sorted(extra)}" if extra else "")
                + (f"; missing {sorted(missing)}" if missing else "")
            )
        v: dict[str, float | str] = {}
        for key, typ in spec.items():
            raw = params[key]
            if typ is float:
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                    raise ValueError(f"{kind}: {key} must be a finite number, got {raw!r}")
                v[key] = float(raw)
            else:
                if not isinstance(raw, str):
                    raise ValueError(f"{kind}: {key} must be a string, got {raw!r}")
                v[key] = raw
        dt = self.dt_s
        if kind == "process.feed_rate":
            self.set_setpoint("shr.feed_rate_sp", float(v["tph"]))
        elif kind == "process.line_stop":
            self.interlock.stop_line()
        elif kind == "process.line_start":
            self.interlock.start_line()
        elif kind == "process.lot_change":
            name = str(v["feed_type"])
            if name == "mix":
                self.feeder.change_lot_type(None)
            elif name in self._mix_by_name:
                self.feeder.change_lot_type(self._mix_by_name[name])
            else:
                raise ValueError(
                    f"{kind}: unknown feed_type {name!r}; known: mix, {', '.join(self._mix_by_name)}"
                )
        elif kind == "process.o2_ingress":
            peak, dur = float(v["peak_vol_pct"]), float(v["duration_s"])
            if not (0.0 < peak <= 21.0 and dur > 0.0):
                raise ValueError(f"{kind}: need 0 < peak_vol_pct <= 21 and duration_s > 0")
            self.inerting.ingress_peak = peak
            self.inerting.ingress_left = max(1, round(dur / dt))
        elif kind == "process.o2_analyser_offset":
            which, off = str(v["analyser"]), float(v["offset_vol_pct"])
            if which not in ("a", "b") or abs(off) > 21.0:
                raise ValueError(f"{kind}: analyser must be 'a' or 'b' and |offset_vol_pct| <= 21")
            setattr(self.inerting, f"offset_{which}", off)
        elif kind == "process.dryer_holdup_swing":
            amp, period_h = float(v["amplitude_kg"]), float(v["period_h"])
            limit = 0.8 * self.params.dryer.nominal_holdup_kg
            if not (0.0 <= amp <= limit and period_h > 0.0):
                raise ValueError(f"{kind}: need 0 <= amplitude_kg <= {limit:g} and period_h > 0")
            self._swing_amp_kg = amp
            self._swing_period_s = period_h * 3600.0
            self._swing_t0_s = self.t_s
        elif kind == "process.jam":
            self.drive.jam()
        elif kind == "process.hotspot":
            peak, dur = float(v["peak_c"]), float(v["duration_s"])
            if not (0.0 < peak <= 1000.0 and dur > 0.0):
                raise ValueError(f"{kind}: need 0 < peak_c <= 1000 and duration_s > 0")
            self.offgas.event_peak_c = peak
            self.offgas.event_left = max(1, round(dur / dt))

    # --- lots --------------------------------------------------------------------------------
    @property
    def lot(self) -> Lot:
        """The lot being fed now (or next, if the feed is stopped)."""
        return self.feeder.lot

    @property
    def lots(self) -> list[Lot]:
        return list(self.book.lots)

    # --- dynamics ----------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Plant seconds since the start (a product, not a running sum: no drift)."""
        return self.steps * self.dt_s

    def step(self) -> None:
        """Advance the plant by one dt."""
        dt = self.dt_s
        t_end = (self.steps + 1) * dt
        book, out = self.book, self._out
        sp = self._sp
        il = self.interlock
        drive = self.drive

        # Feed: only while the interlocks allow it and the shredder turns forward.
        shredding = drive.running
        feeder = self.feeder
        lot = feeder.lot
        m = feeder.step(il.feed_enabled and shredding, sp["shr.feed_rate_sp"])
        lot = feeder.lot
        slot = book.slot_of[lot.index]
        self.feed_rate_tph = feeder.belt_tph
        el_in = 0.0
        if m > 0.0:
            i = lot.index
            self.feed_in_kg += m
            book.fed[i] += m
            if book.t_first_in[i] is None:
                book.t_first_in[i] = t_end
            book.t_last_in[i] = t_end
            flash = m * book.flash_frac[slot]
            if flash > 0.0:
                out[S_VENT] += flash
                book.out[slot, S_VENT] += flash
                book.last_out[slot] = t_end
            m_post = m - flash
            el_in = m * lot.electrolyte_fraction
        else:
            m_post = 0.0

        # Shredder chamber (frozen while jammed) -> conveyor.
        if shredding:
            m1, s1 = self.shredder_ring.push(m_post, slot)
        else:
            m1, s1 = 0.0, 0
        drive.step(m, lot.feed_type.specific_energy_kwh_per_t)
        m2, s2 = self.conveyor.push(m1, s1)

        # Dryer: controls, transport + evaporation, then this step's inflow.
        dryer = self.dryer
        dryer.step_controls(
            sp["dry.jacket_temp_sp"], sp["dry.press_sp"], sp["dry.agitator_speed_sp"], self._heat_max
        )
        a = self._a0
        if self._swing_amp_kg > 0.0:
            phase = 2.0 * math.pi * (t_end - self._swing_t0_s) / self._swing_period_s
            a /= max(0.2, 1.0 + self._swing_amp_kg / self.params.dryer.nominal_holdup_kg * math.sin(phase))
            if a > 1.0:
                a = 1.0
        discharge, ev_slot = dryer.step_material(a, self._flush)
        self._flush = None
        if m2 > 0.0:
            dryer.D[0, s2] += m2 * book.split_post[s2]
        self._dry_in_kgph = m2 * 3600.0 / dt
        vapour = float(ev_slot.sum())
        cond, vent = dryer.condense(vapour)
        out[S_COND] += cond
        out[S_VENT] += vent
        book.acc_ev += ev_slot
        book.acc_ev_slip += ev_slot * dryer.slip

        # Separation at the discharge: coarse products to their bins, BM onto its conveyor.
        sep = self.separation
        if sep.step_controls(sp["scr.vib_freq_sp"], sp["ac.air_vel_sp"]):
            book.fold(sep.r_bins)
            sep.update_routing()
        book.acc_discharge += discharge
        to_bins = (discharge.sum(axis=0) @ sep.r_bins).tolist()  # kg per bin this step
        out[S_FE] += to_bins[0]
        out[S_FE + 1] += to_bins[1]
        out[S_FE + 2] += to_bins[2]
        out[S_DUST] += to_bins[3]
        sep.add_to_bins(to_bins)
        disc_tot = discharge.sum(axis=0)
        self._bm_components += self.bm_comp_conveyor.push(disc_tot * sep.r_bm)
        bm_in = discharge @ sep.r_bm
        bm_slot = self.bm_conveyor.push(bm_in)
        bm = float(bm_slot.sum())
        out[S_BM] += bm
        book.acc_bm += bm_slot
        self.bm_rate_tph = bm * 3.6 / dt
        self.filler.step(bm, bm_slot, sp["bag.target_mass_sp"], t_end, book.lot_ids)
        book.last_out[(bm_in + bm_slot + ev_slot) > 0.0] = t_end

        # Chamber atmosphere, off-gas, thermal camera, then the interlocks on the new state.
        tph = drive.tph
        inert = self.inerting
        inert.step(feeder.cycled, il.purging, tph)
        og = self.offgas
        og.step(el_in, lot.soc, tph)
        il.step(inert.o2_a, inert.o2_b, og.h2_ppm, og.hf_ppm, og.dtdt, inert.press_mbar, drive.fault)

        if self.steps % 10 == 0:  # the agitator's power needs the hold-up: refreshed every 10 steps
            self._dry_holdup_cache = dryer.holdup_kg()
        hd = self._dry_holdup_cache
        self.energy.add(
            dt,
            drive.power_kw,
            dryer.heating_kw(self._dry_in_kgph) + dryer.agitator_kw(hd),
            dryer.vac_pump_kw(),
            sep.fans_kw(),
        )

        feeder.after_step()
        self.steps += 1
        if self.steps % self._sweep_steps == 0:
            self._sweep()

    def _remaining_by_slot(self) -> np.ndarray:
        n = self.book.n_slots
        return (
            self.shredder_ring.by_slot(n)
            + self.conveyor.by_slot(n)
            + self.dryer.D.sum(axis=(0, 2))
            + self.bm_conveyor.by_slot()
        )

    def _sweep(self) -> None:
        """Retire lots that have left the plant; flag closed lots down to their last
        milligram in the dryer (and gone from upstream) to discharge it next step."""
        book = self.book
        book.fold(self.separation.r_bins)
        n = book.n_slots
        upstream = self.shredder_ring.by_slot(n) + self.conveyor.by_slot(n)
        in_dryer = self.dryer.D.sum(axis=(0, 2))
        rest = upstream + in_dryer + self.bm_conveyor.by_slot()
        flush = np.zeros(n, dtype=bool)
        for slot, i in enumerate(book.slot_lot):
            if i < 0 or not book.closed[i]:
                continue
            if rest[slot] == 0.0:
                self.filler.release_slot(slot, book.lot_ids[slot])
                book.retire(slot)
            elif upstream[slot] == 0.0 and 0.0 < in_dryer[slot] < self.params.lot_flush_kg:
                flush[slot] = True
        if flush.any():
            self._flush = flush

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

    # --- truth -------------------------------------------------------------------------------
    def totals_kg(self) -> dict[str, float]:
        """Cumulative true masses, kg: feed (at the feed weigher) and every output stream."""
        return {"feed": self.feed_in_kg, **dict(zip(STREAMS, self._out, strict=True))}

    def holdup_kg(self) -> float:
        """All mass between the feed point and the output points (sums the stage arrays)."""
        return (
            self.shredder_ring.holdup_kg()
            + self.conveyor.holdup_kg()
            + self.dryer.holdup_kg()
            + self.bm_conveyor.holdup_kg()
        )

    def holdup_by_stage_kg(self) -> dict[str, float]:
        return {
            "shredder": self.shredder_ring.holdup_kg(),
            "conveyor": self.conveyor.holdup_kg(),
            "dryer": self.dryer.holdup_kg(),
            "bm_conveyor": self.bm_conveyor.holdup_kg(),
        }

    def balance_residual_kg(self) -> float:
        """feed - sum(outputs) - holdup: zero up to rounding."""
        return self.feed_in_kg - sum(self._out) - self.holdup_kg()

    def lot_ledger(self) -> list[LotRecord]:
        """Every lot drawn so far, in order (the last one may not have been fed yet)."""
        self.book.fold(self.separation.r_bins)
        rem = self._remaining_by_slot()
        return [self.book.record(i, rem) for i in range(len(self.book.lots))]

    def black_mass_composition_kg(self) -> dict[str, float]:
        """Cumulative true black mass at the BM weigher by component (wet basis: `solvent`
        and `ec` are its residual electrolyte, the volatile content a moisture/LOD test sees)."""
        return dict(zip(COMPONENTS, self._bm_components.tolist(), strict=True))

    def bags(self) -> list[BagRecord]:
        """Completed big bags, with the lots each holds."""
        return list(self.filler.records)

    def interlocks(self) -> dict[str, float]:
        il = self.interlock
        return {
            "il.feed_permissive": float(il.permissive),
            "il.feed_trip": float(il.tripped),
            "il.trip_reason": float(il.reason),
            "il.purge_done": float(il.purge_done),
            "il.dryer_heat_permissive": float(self.dryer.heat_permissive),
        }

    # Legacy names used by simulators.truth (feed = bm + coarse + condensate + holdup holds
    # with coarse = every other output, vent included).
    @property
    def bm_out_kg(self) -> float:
        return self._out[S_BM]

    @property
    def condensate_kg(self) -> float:
        return self._out[S_COND]

    @property
    def coarse_out_kg(self) -> float:
        o = self._out
        return o[S_FE] + o[S_FE + 1] + o[S_FE + 2] + o[S_DUST] + o[S_VENT]

    def signals(self) -> dict[str, float]:
        """True value of every signal in SIGNALS, in SIGNALS' units."""
        feeder, drive, inert, og, dryer, sep = (
            self.feeder,
            self.drive,
            self.inerting,
            self.offgas,
            self.dryer,
            self.separation,
        )
        holdup = dryer.holdup_kg()
        lot = feeder.lot
        started = self.interlock.line_started
        bins = sep.bins
        e = self.energy
        return {
            "feed.item_mass": feeder.item_mass_kg,
            "feed.scale_total": feeder.scale_total_kg,
            "feed.lot_id": float(lot.index + 1),
            "feed.type": float(lot.feed_type.code),
            "bw_feed.rate": self.feed_rate_tph,
            "bw_feed.total": self.feed_in_kg / 1000.0,
            "bw_feed.speed": self.params.feed.belt_speed_m_s if started else 0.0,
            "shr.power": drive.power_kw,
            "shr.current": drive.current_a,
            "shr.torque_pct": drive.torque_pct,
            "shr.speed": drive.speed_rpm,
            "shr.reverse_count": float(drive.reverse_count),
            "shr.run": 0.0 if drive.fault else 1.0,
            "shr.fault": 1.0 if drive.fault else 0.0,
            "shr.o2_a": inert.o2_a,
            "shr.o2_b": inert.o2_b,
            "n2.flow": inert.n2_flow,
            "n2.total": inert.n2_total_nm3,
            "shr.press": inert.press_mbar,
            "shr.gas_temp": inert.gas_temp_c,
            "gas.h2": og.h2_ppm,
            "gas.co": og.co_ppm,
            "gas.hf": og.hf_ppm,
            "gas.voc": og.voc_ppm,
            "shr.outlet_temp_ir": og.outlet_c,
            "therm.hotspot_max": og.hotspot_c,
            "therm.dTdt": og.dtdt,
            "dry.jacket_temp": dryer.jacket_c,
            "dry.product_temp": dryer.product_c,
            "dry.press_abs": dryer.press_mbar,
            "dry.vac_pump_power": dryer.vac_pump_kw(),
            "dry.agitator_speed": dryer.agitator_rpm,
            "dry.agitator_torque": dryer.torque_pct(holdup),
            "dry.mass": holdup,
            "cond.temp": dryer.cond_c,
            "cond.tank_mass": dryer.tank_kg,
            "scr.vib_freq": sep.vib_hz,
            "scr.amplitude": sep.amplitude_mm,
            "ac.air_vel": sep.air_m_s,
            "ecs.rotor_speed": sep.p.ecs_rotor_rpm,
            "mill.speed": sep.p.mill_speed_rpm,
            "bin_fe.mass": bins[0],
            "bin_alcu.mass": bins[1],
            "bin_pl.mass": bins[2],
            "dust.mass": bins[3],
            "bm.rate": self.bm_rate_tph,
            "bm.total": self._out[S_BM] / 1000.0,
            "bag.net_mass": self.filler.net_kg,
            "bag.id": float(self.filler.bag_id),
            "bag.complete": 1.0 if self.filler.complete_left > 0 else 0.0,
            "energy.shr": e.shr_kwh,
            "energy.dry": e.dry_kwh,
            "energy.vac": e.vac_kwh,
            "energy.fans": e.fans_kwh,
            **self.interlocks(),
        }


__all__ = [
    "COMPONENTS",
    "DEFAULT_FEED_MIX",
    "EVENTS",
    "PLANT_DOMAIN",
    "SENSOR_DOMAIN",
    "SIGNALS",
    "STREAMS",
    "TRIP_REASONS",
    "BagRecord",
    "FeedType",
    "Lot",
    "LotRecord",
    "Plant",
    "PlantParams",
    "SetpointSpec",
    "SignalInfo",
    "seeded_stream",
]
