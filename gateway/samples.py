"""Sample and quality types shared by drivers, bus and pipeline.

Quality is data: it travels beside every value. Codes are small integers so they fit the
columnar arrays the numba pipeline works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

# A stale mark is stamped this long after the tag's last sample, not at it: the historian keys a
# point by series and millisecond, so a mark at the same time would overwrite that sample's
# quality (and its sequence number), and the last good value would read as stale.
STALE_MARK_AFTER_S = 0.001


def stale_mark_time(last_t: float) -> float:
    """Source time for a STALE mark on a tag whose newest sample is at `last_t`."""
    return last_t + STALE_MARK_AFTER_S


class Quality(IntEnum):
    """Quality of one sample or derived figure, ordered from best to worst."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2
    # No fresh data: the source is disconnected or silent. Worse than BAD because the
    # value shown is the last one known, not a current reading.
    STALE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# OPC-UA StatusCode severity lives in the top two bits: 00 good, 01 uncertain, 10/11 bad.
def quality_from_status_code(code: int) -> Quality:
    severity = (code >> 30) & 0b11
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Columnar samples drained from the bus for one pipeline tick.

    All arrays have the same length. `t` is plant time in seconds since the Unix epoch
    (source timestamps), `status` the source's raw status code (OPC-UA StatusCode or 0).
    """

    tag: np.ndarray  # int32 tag index into the config's tag list
    t: np.ndarray  # float64
    value: np.ndarray  # float64
    quality: np.ndarray  # int8, Quality codes
    status: np.ndarray  # uint32

    def __len__(self) -> int:
        return int(self.tag.shape[0])

    @staticmethod
    def empty() -> SampleBatch:
        return SampleBatch(
            tag=np.empty(0, np.int32),
            t=np.empty(0, np.float64),
            value=np.empty(0, np.float64),
            quality=np.empty(0, np.int8),
            status=np.empty(0, np.uint32),
        )
