"""Energy submeters (kWh totals) of the line's main consumers."""

from __future__ import annotations


class EnergyMeters:
    """Integrates drive and heating powers: shredder, dryer (jacket heat + agitator), vacuum
    pump, fans (air classifier and ventilation)."""

    __slots__ = ("dry_kwh", "fans_kwh", "shr_kwh", "vac_kwh")

    def __init__(self) -> None:
        self.shr_kwh = 0.0
        self.dry_kwh = 0.0
        self.vac_kwh = 0.0
        self.fans_kwh = 0.0

    def add(self, dt_s: float, shr_kw: float, dry_kw: float, vac_kw: float, fans_kw: float) -> None:
        h = dt_s / 3600.0
        self.shr_kwh += shr_kw * h
        self.dry_kwh += dry_kw * h
        self.vac_kwh += vac_kw * h
        self.fans_kwh += fans_kw * h


__all__ = ["EnergyMeters"]
