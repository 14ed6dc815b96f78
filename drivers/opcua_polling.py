"""Polling: tags read with Read requests on a fixed cadence instead of a subscription.

For servers that refuse a tag's filter, or tags configured `mode = "poll"`. Tags are grouped
by interval; each group is read in batches of `items_per_call` on a drift-free schedule (a
slow read delays the next one, it does not cause a burst). Readings go through the tag's
`ClientFilter` (trigger and deadband) and then to `deliver`. A node the server refuses on
read is reported once and dropped from the poll until the next session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from asyncua import Client, ua

from drivers.opcua_monitoring import ClientFilter, chunks
from drivers.opcua_values import Reading, reading_of

log = logging.getLogger(__name__)

# Read results that mean "this node is wrong", not "this value is bad": stop polling it.
NODE_ERRORS = frozenset(
    {ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid, ua.StatusCodes.BadAttributeIdInvalid}
)


@dataclass
class PolledTag:
    index: int
    node_id: ua.NodeId
    interval_s: float
    filter: ClientFilter


class Poller:
    def __init__(
        self,
        client: Client,
        tags: list[PolledTag],
        *,
        items_per_call: int,
        deliver: Callable[[int, Reading], None],
        on_bad_node: Callable[[PolledTag, str], None],
    ) -> None:
        self._client = client
        self._items_per_call = items_per_call
        self._deliver = deliver
        self._on_bad_node = on_bad_node
        self._groups: dict[float, list[PolledTag]] = defaultdict(list)
        for pt in tags:
            self._groups[pt.interval_s].append(pt)
        self.reads = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for interval, group in self._groups.items():
                tg.create_task(self._poll(interval, group))

    async def _poll(self, interval: float, group: list[PolledTag]) -> None:
        next_at = time.monotonic()
        while group:
            for batch in list(chunks(group, self._items_per_call)):
                await self._read(batch, group)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    async def _read(self, batch: list[PolledTag], group: list[PolledTag]) -> None:
        params = ua.ReadParameters(
            NodesToRead=[
                ua.ReadValueId(NodeId=pt.node_id, AttributeId=ua.AttributeIds.Value) for pt in batch
            ],
            TimestampsToReturn=ua.TimestampsToReturn.Both,
        )
        results = await self._client.uaclient.read(params)
        self.reads += 1
        for pt, dv in zip(batch, results, strict=True):
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            if code in NODE_ERRORS:
                group.remove(pt)
                self._on_bad_node(pt, ua.StatusCode(code).name)
                continue
            reading = reading_of(dv)
            if pt.filter.passes(reading):
                self._deliver(pt.index, reading)
