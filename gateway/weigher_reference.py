"""The feed belt weigher checked against the airlock's static scale, batch by batch.

Discrete feed is weighed on the airlock platform scale before each batch crosses the belt
weigher, and the PLC totalizes that scale. When the scale's totalizer steps up (a new batch
weighed), the batch before it has fully crossed the belt, so between two consecutive steps
the belt weigher must have counted what the scale weighed: a pair (belt mass, scale mass)
per batch, exact up to the instruments. Pairs feed the drift detector and, summed over a
window, give the belt's current ratio to the scale: the reconciliation corrects the window's
feed by it (domain.md section 3: static item weighing makes the belt weigher redundant).

A pair is not formed across a stretch without steps longer than `max_pair_s` (a
continuous-feed lot, which the scale does not weigh, or a stop), nor kept when its ratio is
implausible (a lot change sends the rest of a batch back to the store: weighed, never belted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gateway.samples import Quality


@dataclass(frozen=True, slots=True)
class BatchPair:
    t: float  # plant time of the closing boundary (the next batch weighed)
    belt_t: float
    ref_t: float
    # Plant time of the opening boundary: equal to the previous pair's `t` while batches chain
    # (then the boundaries' display and timing errors cancel in a sum of pairs), later after a gap.
    t_start: float = math.nan


class WeigherReference:
    def __init__(
        self,
        belt_tag: int,
        ref_tag: int,
        belt_to_t: float,
        ref_to_t: float,
        max_pair_s: float = 300.0,
        ratio_band: tuple[float, float] = (0.8, 1.25),
        max_belt_age_s: float = 10.0,
    ) -> None:
        self.belt_tag = belt_tag
        self.ref_tag = ref_tag
        self.belt_to_t = belt_to_t
        self.ref_to_t = ref_to_t
        self.max_pair_s = max_pair_s
        self.ratio_band = ratio_band
        # A boundary needs the belt's reading at that instant: one older than this (the belt
        # weigher dropped out) leaves the boundary unknown, and no pair spans it.
        self.max_belt_age_s = max_belt_age_s
        self._belt_t = -math.inf
        self._belt = math.nan  # latest belt reading (t)
        self._ref = math.nan  # latest scale reading (t)
        self._boundary: tuple[float, float, float] | None = None  # (t, belt, ref before the step)
        # Cumulative masses of the accepted pairs: what the rings store per grid boundary.
        self.pair_belt_t = 0.0
        self.pair_ref_t = 0.0
        self.pairs = 0
        self.rejected = 0

    def observe(self, tag: np.ndarray, t: np.ndarray, value: np.ndarray, cq: np.ndarray) -> list[BatchPair]:
        """One tick's samples; returns the pairs closed in it (in time order)."""
        mine = ((tag == self.belt_tag) | (tag == self.ref_tag)) & (cq <= Quality.UNCERTAIN)
        if not mine.any():
            return []
        idx = np.flatnonzero(mine)
        # Time order, belt before scale at the same instant: the belt reading at the step is the
        # one that closes the batch before it.
        idx = idx[np.lexsort((tag[idx] == self.ref_tag, t[idx]))]
        out: list[BatchPair] = []
        # Python scalars: a loop indexing numpy arrays pays for a numpy scalar per access.
        for k, ti, v in zip(tag[idx].tolist(), t[idx].tolist(), value[idx].tolist(), strict=True):
            if k == self.belt_tag:
                self._belt = v * self.belt_to_t
                self._belt_t = ti
                continue
            ref = v * self.ref_to_t
            stepped = math.isfinite(self._ref) and ref > self._ref
            if stepped and ti - self._belt_t > self.max_belt_age_s:
                self._boundary = None
            elif stepped and math.isfinite(self._belt):
                pair = self._close(ti, self._ref)
                if pair is not None:
                    out.append(pair)
            self._ref = ref
        return out

    def _close(self, t: float, ref_before: float) -> BatchPair | None:
        prev = self._boundary
        self._boundary = (t, self._belt, ref_before)
        if prev is None:
            return None
        t0, belt0, ref0 = prev
        belt, ref = self._belt - belt0, ref_before - ref0
        lo, hi = self.ratio_band
        if t - t0 > self.max_pair_s or ref <= 0 or not lo <= belt / ref <= hi:
            self.rejected += 1
            return None
        self.pairs += 1
        self.pair_belt_t += belt
        self.pair_ref_t += ref
        return BatchPair(t, belt, ref, t0)


def fill_pair_rings(
    ring_cum: np.ndarray,
    ring_head: np.ndarray,
    ring_first: np.ndarray,
    rows: tuple[int, int],
    values: tuple[float, float],
    head: int,
) -> None:
    """Write the cumulative pair masses at every grid boundary up to `head` not written yet
    (a step function: pairs close between boundaries and count from the next one on)."""
    nb = ring_cum.shape[1]
    for row, v in zip(rows, values, strict=True):
        if ring_head[row] < ring_first[row]:  # first call: start where the feed stream starts
            ring_first[row] = head
            ring_head[row] = head - 1
        lo = max(ring_head[row] + 1, head - nb + 1)
        if head >= lo:
            ring_cum[row, np.arange(lo, head + 1) % nb] = v
            ring_head[row] = head
            ring_first[row] = max(ring_first[row], head - nb + 1)
