"""Material bookkeeping vocabulary: components, output streams, feed types and lots.

Every parcel of material is a vector over `COMPONENTS` (kg). A lot is drawn from a feed type
and carries its own true split (fractions over the components, summing to 1). Output streams
are named as in `Plant.totals_kg()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Component vector carried through every stage. "coating" is the black-mass-forming active
# material (cathode + anode coating, binder, carbon); "solvent" lumps the volatile electrolyte
# solvents (DMC/EMC/DEC with the dissolved salt); "ec" is the low-volatile part (EC etc.).
COMPONENTS: tuple[str, ...] = ("coating", "al_foil", "cu_foil", "steel", "plastics", "solvent", "ec")
COATING, AL_FOIL, CU_FOIL, STEEL, PLASTICS, SOLVENT, EC = range(7)
N_COMPONENTS = len(COMPONENTS)

# Output streams; the index is the column of the per-lot ledger.
STREAMS: tuple[str, ...] = ("black_mass", "fe", "alcu", "plastics", "dust", "condensate", "vent")
S_BM, S_FE, S_ALCU, S_PL, S_DUST, S_COND, S_VENT = range(7)
N_STREAMS = len(STREAMS)

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class FeedType:
    """A kind of feed material and the ranges its lots draw their true split from.

    Fractions are of the lot's wet mass, drawn uniformly per lot; the coating is the remainder.
    `electrolyte` is the whole fill, `ec_share` the low-volatile part of it. `soc` is the
    residual state of charge (0-1) that drives gas release in the shredder. `discrete` feeds
    come as items (modules) through the airlock, the others as a continuous, surging belt.
    `code` is the number published as `feed.type`. `weight` is the share of lots in the mix.
    """

    name: str
    code: int
    weight: float
    discrete: bool
    electrolyte: Range
    ec_share: Range
    al_foil: Range
    cu_foil: Range
    steel: Range
    plastics: Range
    soc: Range
    specific_energy_kwh_per_t: float
    item_mass_kg: Range = (20.0, 60.0)

    def __post_init__(self) -> None:
        ranges = (self.electrolyte, self.ec_share, self.al_foil, self.cu_foil, self.steel, self.plastics)
        for r in (*ranges, self.soc):
            if not 0.0 <= r[0] <= r[1] <= 1.0:
                raise ValueError(f"feed type {self.name}: fraction range {r} is not within [0, 1]")
        others = self.electrolyte[1] + self.al_foil[1] + self.cu_foil[1] + self.steel[1] + self.plastics[1]
        if others >= 1.0:
            raise ValueError(f"feed type {self.name}: the non-coating maxima add up to {others} >= 1")
        if self.weight < 0 or self.code < 1:
            raise ValueError(f"feed type {self.name}: weight must be >= 0 and code >= 1")
        if not 0 < self.item_mass_kg[0] <= self.item_mass_kg[1]:
            raise ValueError(f"feed type {self.name}: bad item mass range {self.item_mass_kg}")


# domain.md §1.3. The splits are assumed; with the default separation they give lot wet yields
# of about 38-48 % (modules), 50-58 % (cells) and 65-75 % (electrode scrap), and the mix's
# mean wet yield is about 45 %. `feed.type` codes: 1, 2, 3 (0 = nothing fed yet).
DEFAULT_FEED_MIX: tuple[FeedType, ...] = (
    FeedType(
        "eol_nmc_module",
        code=1,
        weight=0.88,
        discrete=True,
        electrolyte=(0.10, 0.15),
        ec_share=(0.10, 0.20),
        al_foil=(0.06, 0.08),
        cu_foil=(0.08, 0.11),
        steel=(0.16, 0.22),
        plastics=(0.04, 0.06),
        soc=(0.0, 0.15),
        specific_energy_kwh_per_t=50.0,
    ),
    FeedType(
        "production_scrap_cell",
        code=2,
        weight=0.08,
        discrete=False,
        electrolyte=(0.05, 0.15),
        ec_share=(0.10, 0.20),
        al_foil=(0.06, 0.08),
        cu_foil=(0.09, 0.12),
        steel=(0.05, 0.10),
        plastics=(0.03, 0.05),
        soc=(0.05, 0.30),
        specific_energy_kwh_per_t=35.0,
    ),
    FeedType(
        "coated_electrode_scrap",
        code=3,
        weight=0.04,
        discrete=False,
        electrolyte=(0.0, 0.0),
        ec_share=(0.0, 0.0),
        al_foil=(0.09, 0.13),
        cu_foil=(0.10, 0.14),
        steel=(0.0, 0.0),
        plastics=(0.0, 0.01),
        soc=(0.0, 0.0),
        specific_energy_kwh_per_t=20.0,
    ),
)


@dataclass(frozen=True, slots=True)
class Lot:
    """One lot of feed with its own true split (fractions over COMPONENTS, summing to 1)."""

    index: int
    lot_id: str
    feed_type: FeedType
    mass_kg: float
    split: tuple[float, ...]
    soc: float

    @property
    def electrolyte_fraction(self) -> float:
        return self.split[SOLVENT] + self.split[EC]


def draw_lot(index: int, feed_type: FeedType, mass_range_t: Range, rng: np.random.Generator) -> Lot:
    """A lot of `feed_type` with its planned mass and its true split, drawn from `rng`."""
    mass_kg = 1000.0 * float(rng.uniform(*mass_range_t))
    u = rng.uniform(size=7).tolist()

    def pick(r: Range, x: float) -> float:
        return r[0] + (r[1] - r[0]) * x

    electrolyte = pick(feed_type.electrolyte, u[0])
    ec = electrolyte * pick(feed_type.ec_share, u[1])
    split = [0.0] * N_COMPONENTS
    split[SOLVENT] = electrolyte - ec
    split[EC] = ec
    split[AL_FOIL] = pick(feed_type.al_foil, u[2])
    split[CU_FOIL] = pick(feed_type.cu_foil, u[3])
    split[STEEL] = pick(feed_type.steel, u[4])
    split[PLASTICS] = pick(feed_type.plastics, u[5])
    split[COATING] = 1.0 - sum(split)
    soc = pick(feed_type.soc, u[6])
    return Lot(index, f"L{index + 1:05d}", feed_type, mass_kg, tuple(split), soc)


__all__ = [
    "AL_FOIL",
    "COATING",
    "COMPONENTS",
    "CU_FOIL",
    "DEFAULT_FEED_MIX",
    "EC",
    "N_COMPONENTS",
    "N_STREAMS",
    "PLASTICS",
    "SOLVENT",
    "STEEL",
    "STREAMS",
    "S_ALCU",
    "S_BM",
    "S_COND",
    "S_DUST",
    "S_FE",
    "S_PL",
    "S_VENT",
    "FeedType",
    "Lot",
    "draw_lot",
]
