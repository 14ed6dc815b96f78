"""Stale-on-silence: flags a tag whose source has not updated it within its expected period.

A session that is down is reported by its driver (every tag stale at once). This catches the
other failure: a session that looks alive while one item, one subscription or one sensor has
gone quiet. Arrival is tracked per tick from the drained batch (vectorised, nothing per sample),
in wall time, because a silent source's own timestamps do not move. Periods come from
`LineConfig.stale_after_s` (tag, else driver); tags without one are never flagged this way.
"""

from __future__ import annotations

import math

import numpy as np

from gateway.config import LineConfig
from gateway.samples import Quality, SampleBatch


class SilenceWatch:
    def __init__(self, config: LineConfig) -> None:
        periods = [config.stale_after_s(t) for t in config.tags]
        self.stale_after = np.array([math.inf if p is None else p for p in periods], np.float64)
        # Wall (monotonic) time a fresh sample last arrived; NaN: never (not started, not stale).
        self.last_arrival = np.full(len(periods), np.nan)
        self.flagged = 0

    def observe(self, batch: SampleBatch, now: float) -> None:
        """Note the arrivals in a drained batch (the watch's own STALE marks are not arrivals)."""
        if len(batch):
            fresh = batch.tag[batch.quality != Quality.STALE]
            self.last_arrival[fresh] = now

    def overdue(self, now: float, last_quality: np.ndarray) -> np.ndarray:
        """Indices of tags silent past their period and not already stale."""
        with np.errstate(invalid="ignore"):
            late = (now - self.last_arrival) > self.stale_after
        idx = np.flatnonzero(late & (last_quality != Quality.STALE))
        self.flagged += len(idx)
        return idx
