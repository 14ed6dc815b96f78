"""Plug-flow transport (conveyors, the shredder chamber) as ring buffers, exact per lot.

`ScalarDelay` carries one lot's mass per step (upstream of the dryer every parcel is a single
lot of known split). `LotDelay` carries a mass-per-lot-slot vector per step (downstream of the
dryer, where lots are mixed). What enters at step k leaves at step k + n.
"""

from __future__ import annotations

import numpy as np

from simulators.process.common import whole_steps


class ScalarDelay:
    """A pure delay of n steps for (mass, lot slot) parcels."""

    __slots__ = ("head", "mass", "n", "name", "slot")

    def __init__(self, name: str, delay_s: float, dt_s: float) -> None:
        self.name = name
        self.n = whole_steps(delay_s, dt_s, name)
        self.mass: list[float] = [0.0] * self.n
        self.slot: list[int] = [0] * self.n  # an empty parcel has mass 0 (its slot is moot)
        self.head = 0  # the oldest parcel: the one that leaves on the next push

    def push(self, m: float, slot: int) -> tuple[float, int]:
        """Insert this step's parcel, return the one that entered n pushes ago."""
        h = self.head
        out_m, out_slot = self.mass[h], self.slot[h]
        self.mass[h] = m
        self.slot[h] = slot
        self.head = h + 1 if h + 1 < self.n else 0
        return out_m, out_slot

    def holdup_kg(self) -> float:
        return sum(self.mass)

    def by_slot(self, n_slots: int) -> np.ndarray:
        """Mass held per lot slot."""
        return np.bincount(self.slot, weights=self.mass, minlength=n_slots)[:n_slots]


class LotDelay:
    """A pure delay of n steps for parcels given as mass per lot slot."""

    __slots__ = ("buf", "head", "n", "name")

    def __init__(self, name: str, delay_s: float, dt_s: float, n_slots: int) -> None:
        self.name = name
        self.n = whole_steps(delay_s, dt_s, name)
        self.buf = np.zeros((self.n, n_slots), dtype=np.float64)
        self.head = 0

    def push(self, parcel: np.ndarray) -> np.ndarray:
        """Insert this step's parcel (copied), return the one that entered n pushes ago."""
        h = self.head
        out = self.buf[h].copy()
        self.buf[h] = parcel
        self.head = h + 1 if h + 1 < self.n else 0
        return out

    def grow(self, n_slots: int) -> None:
        pad = n_slots - self.buf.shape[1]
        self.buf = np.concatenate([self.buf, np.zeros((self.n, pad))], axis=1)

    def holdup_kg(self) -> float:
        return float(self.buf.sum())

    def by_slot(self) -> np.ndarray:
        return self.buf.sum(axis=0)


__all__ = ["LotDelay", "ScalarDelay"]
