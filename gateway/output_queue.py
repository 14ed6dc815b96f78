"""A bounded queue in front of each output, owned by the runtime so it outlives reconnects.

Items carry a weight (points for the historian, 1 for latest-state outputs); the capacity is in
weight units. When full, the oldest items are dropped and counted (`dropped_items`,
`dropped_weight`). A consumer `peek`s a prefix, delivers it, then `commit`s it: a failure between
the two leaves everything in the queue for the next attempt.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class OutputQueue(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[tuple[int, T, int]] = deque()  # (sequence, item, weight)
        self._next_seq = 0
        self._weight = 0
        self._ready = asyncio.Event()
        self.dropped_items = 0
        self.dropped_weight = 0
        self.delivered_items = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        return self._weight

    def put(self, item: T, weight: int = 1) -> None:
        weight = max(1, weight)
        self._items.append((self._next_seq, item, weight))
        self._next_seq += 1
        self._weight += weight
        # Always keep the newest item, even if it alone exceeds the capacity.
        while self._weight > self.capacity and len(self._items) > 1:
            _, _, w = self._items.popleft()
            self._weight -= w
            self.dropped_items += 1
            self.dropped_weight += w
        self._ready.set()

    async def wait(self) -> None:
        """Return once the queue holds at least one item."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()

    # ASYNC109 would have callers wrap us in asyncio.timeout, but here running out of time is
    # the normal end of the wait, not an error to catch.
    async def wait_for_weight(self, weight: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the queue's total weight is at least `weight`, or after `timeout` seconds,
        whichever comes first (a timeout is not an error: the caller then takes what there is).

        Woken by `put`, so a batch that fills early goes out at once and no loop polls the queue.
        """
        try:
            async with asyncio.timeout(timeout):
                while self._weight < weight:
                    # Clearing is safe with other waiters: `set` has already woken them.
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            pass

    def peek(self, max_weight: int) -> tuple[list[T], int]:
        """The oldest items whose weights add up to at most `max_weight` (at least one item),
        and a token to `commit` them with once delivered."""
        out: list[T] = []
        total = 0
        last_seq = -1
        for seq, item, w in self._items:
            if out and total + w > max_weight:
                break
            out.append(item)
            total += w
            last_seq = seq
        return out, last_seq

    def commit(self, token: int) -> None:
        """Remove the items a `peek` returned with `token`: they were delivered. Items dropped
        for capacity in between are not counted twice."""
        while self._items and self._items[0][0] <= token:
            _, _, w = self._items.popleft()
            self._weight -= w
            self.delivered_items += 1
