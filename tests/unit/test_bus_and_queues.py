"""The sample bus and output queues are bounded, keep order, and count what they drop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.bus import SampleBus
from gateway.output_queue import OutputQueue
from gateway.samples import Quality


def test_bus_drains_in_order_and_empties() -> None:
    bus = SampleBus(8)
    for i in range(5):
        bus.put(i % 2, 100.0 + i, float(i), Quality.GOOD, status=i)
    batch = bus.drain()
    np.testing.assert_array_equal(batch.t, 100.0 + np.arange(5))
    np.testing.assert_array_equal(batch.status, np.arange(5))
    assert len(bus) == 0
    assert len(bus.drain()) == 0


def test_bus_overflow_drops_oldest_and_counts() -> None:
    bus = SampleBus(4)
    for i in range(10):
        bus.put(0, float(i), float(i), Quality.GOOD)
    batch = bus.drain()
    np.testing.assert_array_equal(batch.value, [6.0, 7.0, 8.0, 9.0])
    assert bus.dropped_oldest == 6
    assert bus.accepted == 10


def test_output_queue_commit_survives_drops_in_between() -> None:
    q: OutputQueue[str] = OutputQueue(capacity=5)
    for s in "abc":
        q.put(s)
    items, token = q.peek(2)
    assert items == ["a", "b"]
    # While a and b are being delivered, new items push the queue over capacity.
    for s in "defg":
        q.put(s)
    assert q.dropped_items == 2  # a and b were the oldest
    q.commit(token)
    items, _ = q.peek(10)
    assert items == ["c", "d", "e", "f", "g"]


def test_output_queue_weights() -> None:
    q: OutputQueue[int] = OutputQueue(capacity=10)
    q.put(1, weight=4)
    q.put(2, weight=4)
    q.put(3, weight=4)
    assert q.dropped_weight == 4
    assert q.weight == 8
    assert q.peek(5)[0] == [2]
    assert q.peek(8)[0] == [2, 3]


async def test_output_queue_wait_wakes_on_put() -> None:
    q: OutputQueue[int] = OutputQueue(capacity=3)
    waiter = asyncio.create_task(q.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.put(7)
    await asyncio.wait_for(waiter, 1.0)


def test_bus_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SampleBus(0)


async def test_output_queue_wait_for_weight_wakes_on_the_put_that_reaches_it() -> None:
    q: OutputQueue[int] = OutputQueue(capacity=10)
    item_waiter = asyncio.create_task(q.wait())
    weight_waiter = asyncio.create_task(q.wait_for_weight(5, timeout=60.0))
    await asyncio.sleep(0)
    q.put(1, weight=2)
    await asyncio.wait_for(item_waiter, 1.0)  # the two waiters share one wake-up event
    await asyncio.sleep(0)  # let the weight waiter see 2 < 5 and go back to sleep
    assert not weight_waiter.done()
    q.put(2, weight=3)
    await asyncio.wait_for(weight_waiter, 1.0)  # long before its 60 s timeout


async def test_output_queue_wait_for_weight_returns_at_the_timeout_without_raising() -> None:
    q: OutputQueue[int] = OutputQueue(capacity=10)
    q.put(1, weight=2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await q.wait_for_weight(5, timeout=0.05)
    assert loop.time() - start >= 0.05 - 0.001  # asyncio may fire a timer a clock tick early
    await asyncio.wait_for(q.wait_for_weight(2, timeout=60.0), 1.0)  # already there: no wait


async def test_output_queue_wait_for_weight_passes_a_cancel_through() -> None:
    q: OutputQueue[int] = OutputQueue(capacity=10)
    waiter = asyncio.create_task(q.wait_for_weight(5, timeout=60.0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
