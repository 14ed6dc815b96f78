"""The sample bus: a bounded, columnar buffer between input drivers and the pipeline.

Drivers `put` one sample at a time (Python objects stop here); the pipeline `drain`s a whole
tick's batch as numpy arrays. Capacity is fixed at start. When the pipeline falls behind and
the buffer is full, the oldest sample is overwritten (policy `drop_oldest`, counted in
`dropped_oldest`): for process signals the newest value is the one worth keeping, and
totalizers lose no mass when an intermediate reading is dropped.

Not thread-safe by design: every driver runs on the one asyncio loop.
"""

from __future__ import annotations

import numpy as np

from gateway.samples import Quality, SampleBatch


class SampleBus:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("bus capacity must be at least 1")
        self.capacity = capacity
        self._tag = np.empty(capacity, np.int32)
        self._t = np.empty(capacity, np.float64)
        self._value = np.empty(capacity, np.float64)
        self._quality = np.empty(capacity, np.int8)
        self._status = np.empty(capacity, np.uint32)
        self._start = 0  # index of the oldest sample
        self._count = 0
        self.accepted = 0
        self.dropped_oldest = 0

    def __len__(self) -> int:
        return self._count

    def put(self, tag: int, t: float, value: float, quality: Quality | int, status: int = 0) -> None:
        if self._count == self.capacity:
            # Full: overwrite the oldest slot and move the start past it.
            i = self._start
            self._start = (self._start + 1) % self.capacity
            self.dropped_oldest += 1
        else:
            i = (self._start + self._count) % self.capacity
            self._count += 1
        self._tag[i] = tag
        self._t[i] = t
        self._value[i] = value
        self._quality[i] = int(quality)
        self._status[i] = status
        self.accepted += 1

    def drain(self) -> SampleBatch:
        """Return every buffered sample, oldest first, and empty the bus."""
        n = self._count
        if n == 0:
            return SampleBatch.empty()
        idx = (self._start + np.arange(n)) % self.capacity
        batch = SampleBatch(
            tag=self._tag[idx],
            t=self._t[idx],
            value=self._value[idx],
            quality=self._quality[idx],
            status=self._status[idx],
        )
        self._start = 0
        self._count = 0
        return batch
