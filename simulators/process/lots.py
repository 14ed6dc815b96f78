"""Lot bookkeeping: which lot occupies which slot of the per-stage arrays, and the ledger.

Every stage holds its material per lot slot, so the mass of each lot in every stage, and what
it has delivered to each output stream, is exact. A slot is taken when a lot is drawn and freed
("retired") once the lot is closed (fully fed) and none of it is left anywhere in the plant; its
numbers then move to a plain record. Slots grow in blocks when more lots are in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulators.process.material import (
    COMPONENTS,
    N_COMPONENTS,
    N_STREAMS,
    S_BM,
    S_COND,
    S_DUST,
    S_FE,
    S_VENT,
    SOLVENT,
    STREAMS,
    Lot,
)


@dataclass(frozen=True, slots=True)
class LotRecord:
    """One lot's truth: planned mass, true split, what was fed, where it went, what is left.

    `out_kg` has the keys of `Plant.totals_kg()` minus "feed"; fed_kg = sum(out_kg) +
    remaining_kg up to rounding. Times are plant seconds (None until it happens). `complete`:
    the lot is closed (fully fed, or cut short by a lot change) and remaining_kg <= 1e-9 fed_kg.
    """

    index: int
    lot_id: str
    feed_type: str
    mass_kg: float
    split: dict[str, float]
    fed_kg: float
    out_kg: dict[str, float]
    remaining_kg: float
    t_first_in_s: float | None
    t_last_in_s: float | None
    t_last_out_s: float | None
    complete: bool


class LotBook:
    def __init__(self, n_slots: int, flash_fraction: float) -> None:
        if n_slots < 2:
            raise ValueError("lot_slots must be >= 2")
        self.n_slots = n_slots
        self._flash = flash_fraction
        self.slot_lot: list[int] = [-1] * n_slots
        self.lot_ids: list[str] = [""] * n_slots  # by slot, for bag records
        self.slot_of: dict[int, int] = {}  # active lot index -> slot
        self.lots: list[Lot] = []
        self.fed: list[float] = []
        self.t_first_in: list[float | None] = []
        self.t_last_in: list[float | None] = []
        self.closed: list[bool] = []
        self._final_out: dict[int, list[float]] = {}
        self._final_last_out: dict[int, float | None] = {}
        # Per slot: the split entering the shredder ring (after the solvent flash), the flashed
        # fraction of the fed mass, the output ledger and the time of the last output.
        self.split_post = np.zeros((n_slots, N_COMPONENTS), dtype=np.float64)
        self.flash_frac = [0.0] * n_slots
        self.out = np.zeros((n_slots, N_STREAMS), dtype=np.float64)
        self.last_out = np.full(n_slots, -1.0, dtype=np.float64)
        self.on_grow: list[Callable[[int], None]] = []
        # Per-step deliveries are accumulated cheaply and folded into `out` on demand (the
        # routing is linear, so folding the summed dryer discharge through it is exact).
        self.acc_discharge = np.zeros((n_slots, N_COMPONENTS), dtype=np.float64)
        self.acc_bm = np.zeros(n_slots, dtype=np.float64)
        self.acc_ev = np.zeros(n_slots, dtype=np.float64)
        self.acc_ev_slip = np.zeros(n_slots, dtype=np.float64)

    def add(self, lot: Lot) -> int:
        """Register a newly drawn lot; returns its slot."""
        if lot.index != len(self.lots):
            raise RuntimeError("lots must be added in index order")
        self.lots.append(lot)
        self.fed.append(0.0)
        self.t_first_in.append(None)
        self.t_last_in.append(None)
        self.closed.append(False)
        try:
            slot = self.slot_lot.index(-1)
        except ValueError:
            slot = self.n_slots
            self._grow(self.n_slots * 2)
        self.slot_lot[slot] = lot.index
        self.lot_ids[slot] = lot.lot_id
        self.slot_of[lot.index] = slot
        split = list(lot.split)
        flash = split[SOLVENT] * self._flash
        split[SOLVENT] -= flash
        rest = 1.0 - flash
        self.split_post[slot] = [x / rest for x in split]
        self.flash_frac[slot] = flash
        self.out[slot] = 0.0
        self.last_out[slot] = -1.0
        return slot

    def _grow(self, n: int) -> None:
        extra = n - self.n_slots
        self.slot_lot += [-1] * extra
        self.lot_ids += [""] * extra
        self.flash_frac += [0.0] * extra
        self.split_post = np.concatenate([self.split_post, np.zeros((extra, N_COMPONENTS))])
        self.out = np.concatenate([self.out, np.zeros((extra, N_STREAMS))])
        self.last_out = np.concatenate([self.last_out, np.full(extra, -1.0)])
        self.acc_discharge = np.concatenate([self.acc_discharge, np.zeros((extra, N_COMPONENTS))])
        self.acc_bm = np.concatenate([self.acc_bm, np.zeros(extra)])
        self.acc_ev = np.concatenate([self.acc_ev, np.zeros(extra)])
        self.acc_ev_slip = np.concatenate([self.acc_ev_slip, np.zeros(extra)])
        self.n_slots = n
        for f in self.on_grow:
            f(n)

    def fold(self, routing_bins: np.ndarray) -> None:
        """Book the accumulated deliveries into `out`; `routing_bins` is the [component x
        (fe, alcu, plastics, dust)] routing in force while they accumulated."""
        out = self.out
        out[:, S_FE : S_DUST + 1] += self.acc_discharge @ routing_bins
        out[:, S_BM] += self.acc_bm
        out[:, S_COND] += self.acc_ev - self.acc_ev_slip
        out[:, S_VENT] += self.acc_ev_slip
        self.acc_discharge[:] = 0.0
        self.acc_bm[:] = 0.0
        self.acc_ev[:] = 0.0
        self.acc_ev_slip[:] = 0.0

    def close(self, lot: Lot) -> None:
        self.closed[lot.index] = True

    def retire(self, slot: int) -> None:
        """The lot in `slot` has left the plant completely: keep its numbers, free the slot.
        Call `fold` first."""
        i = self.slot_lot[slot]
        self._final_out[i] = self.out[slot].tolist()
        lo = float(self.last_out[slot])
        self._final_last_out[i] = lo if lo >= 0.0 else None
        del self.slot_of[i]
        self.slot_lot[slot] = -1
        self.lot_ids[slot] = ""
        self.out[slot] = 0.0

    def record(self, index: int, remaining_by_slot: np.ndarray | None) -> LotRecord:
        lot = self.lots[index]
        slot = self.slot_of.get(index)
        if slot is None:
            out = self._final_out[index]
            last_out = self._final_last_out[index]
            remaining = 0.0
        else:
            out = self.out[slot].tolist()
            lo = float(self.last_out[slot])
            last_out = lo if lo >= 0.0 else None
            remaining = 0.0 if remaining_by_slot is None else float(remaining_by_slot[slot])
        fed = self.fed[index]
        return LotRecord(
            index=index,
            lot_id=lot.lot_id,
            feed_type=lot.feed_type.name,
            mass_kg=lot.mass_kg,
            split=dict(zip(COMPONENTS, lot.split, strict=True)),
            fed_kg=fed,
            out_kg=dict(zip(STREAMS, out, strict=True)),
            remaining_kg=remaining,
            t_first_in_s=self.t_first_in[index],
            t_last_in_s=self.t_last_in[index],
            t_last_out_s=last_out,
            complete=self.closed[index] and remaining <= 1e-9 * fed,
        )


__all__ = ["LotBook", "LotRecord"]
