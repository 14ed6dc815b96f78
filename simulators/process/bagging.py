"""Big-bag (FIBC) filler on load cells, downstream of the BM belt weigher.

The black mass is already output when it crosses the weigher; the filler only packs it. A bag
completes when its net mass reaches the target (`bag.target_mass_sp`): it gets exactly the
target, the excess of that step starts the next bag (the filler hopper buffers it), and
`bag.complete` shows 1 for `change_s` while the bag is swapped. Lowering the target below the
current net mass completes the bag at once with what it holds. Each bag records which lots it
holds (step-resolution FIFO), for per-lot yield by bags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class BagRecord:
    bag_id: int
    mass_kg: float
    t_complete_s: float
    lots_kg: dict[str, float]


class BagFiller:
    def __init__(self, n_slots: int, change_steps: int) -> None:
        self.bag_id = 1
        self.net_kg = 0.0
        self.by_slot = np.zeros(n_slots, dtype=np.float64)
        self.complete_left = 0
        self._change_steps = change_steps
        self.records: list[BagRecord] = []
        # Black mass in the open bag from lots whose slot was since released (by lot id).
        self._carry: dict[str, float] = {}

    def grow(self, n_slots: int) -> None:
        self.by_slot = np.concatenate([self.by_slot, np.zeros(n_slots - len(self.by_slot))])

    def release_slot(self, slot: int, lot_id: str) -> None:
        """The lot in `slot` has left the plant: keep its share of the open bag by lot id."""
        v = float(self.by_slot[slot])
        if v > 0.0:
            self._carry[lot_id] = self._carry.get(lot_id, 0.0) + v
            self.by_slot[slot] = 0.0

    def _complete(self, mass: float, slots: np.ndarray, t_s: float, lot_ids: list[str]) -> None:
        # Released lots came first (FIFO), so all of their share is in the completing bag.
        lots = self._carry
        self._carry = {}
        for i in np.flatnonzero(slots > 0.0).tolist():
            lots[lot_ids[i]] = lots.get(lot_ids[i], 0.0) + float(slots[i])
        self.records.append(BagRecord(self.bag_id, mass, t_s, lots))
        self.bag_id += 1
        self.complete_left = self._change_steps

    def step(
        self, m_kg: float, slot_kg: np.ndarray, target_kg: float, t_s: float, lot_ids: list[str]
    ) -> None:
        """Add this step's black mass (`slot_kg` per lot slot, summing to `m_kg`)."""
        if self.complete_left > 0:
            self.complete_left -= 1
        if self.net_kg > 0.0 and self.net_kg >= target_kg:  # target lowered below the content
            self._complete(self.net_kg, self.by_slot, t_s, lot_ids)
            self.net_kg = 0.0
            self.by_slot = np.zeros_like(self.by_slot)
        if m_kg <= 0.0:
            return
        net = self.net_kg + m_kg
        if net < target_kg:
            self.net_kg = net
            self.by_slot += slot_kg
            return
        excess = net - target_kg
        share = 1.0 - excess / m_kg  # of this step's mass, into the completing bag
        self._complete(target_kg, self.by_slot + slot_kg * share, t_s, lot_ids)
        self.net_kg = excess
        self.by_slot = slot_kg * (1.0 - share)


__all__ = ["BagFiller", "BagRecord"]
