"""OPC-UA input: one asyncua client session and subscription per configured driver.

asyncua's own supervisor (`auto_reconnect=True`) re-creates the session after a server
restart and restores the subscription; without it a client stays dead for good. On every loss
the driver marks its tags STALE so no last value passes as current, and counts the reconnect.
Notifications are read in iterator mode (half the CPU of handler mode) from a bounded queue
whose overflow is counted: produced (by the observer hook) minus consumed minus still queued.
A node the server refuses is reported by node id and status while the rest keeps running.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent
from asyncua.observer import Observer

from gateway.config import OpcUaDriver
from gateway.errors import FatalDriverError, RetryableError
from gateway.ports import BoundTag, SampleSink
from gateway.samples import Quality, quality_from_status_code

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_seconds(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    if ts.tzinfo is None:  # asyncua hands out naive UTC datetimes
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH).total_seconds()


class _NotificationCounter(Observer):
    def __init__(self) -> None:
        self.produced = 0

    def on_notification(self, subscription_id: int | None, event_count: int) -> None:
        self.produced += event_count


class OpcUaInputDriver:
    def __init__(self, name: str, settings: OpcUaDriver, tags: list[BoundTag]) -> None:
        self.name = name
        self.settings = settings
        self.tags = tags
        self.connected = False
        self.connection_losses = 0
        self.received = 0
        self.bad_nodes: dict[str, str] = {}
        self._counter = _NotificationCounter()
        self._queue_len: Callable[[], int] = lambda: 0
        self._sink: SampleSink | None = None

    @property
    def dropped_overflow(self) -> int:
        """Notifications asyncua's bounded queue discarded because we fell behind."""
        return max(0, self._counter.produced - self.received - self._queue_len())

    def _mark_stale(self) -> None:
        if self._sink is not None:
            self._sink.mark_stale([bt.index for bt in self.tags])

    async def _on_connection_lost(self, exc: Exception) -> None:
        self.connection_losses += 1
        self.connected = False
        log.warning("opcua %s: connection lost (%s); tags stale until it is back", self.name, exc)
        self._mark_stale()

    async def run(self, sink: SampleSink, on_connected: Callable[[], None]) -> None:
        self._sink = sink
        client = Client(self.settings.url, watchdog_intervall=self.settings.heartbeat_s)
        client.uaclient.observer = self._counter
        client.connection_lost_callback = self._on_connection_lost
        try:
            await client.connect(auto_reconnect=True)
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise RetryableError(f"opcua {self.name}: cannot connect to {self.settings.url}: {exc}") from exc
        try:
            sub = await client.create_subscription(
                self.settings.publishing_interval_ms,
                queue_maxsize=self.settings.queue_maxsize,
                overflow=OverflowPolicy.DROP_OLDEST,
            )
            queue = sub._event_queue  # bounded asyncio.Queue; only its length is read
            self._queue_len = (lambda: queue.qsize()) if queue is not None else (lambda: 0)
            by_node = await self._subscribe(client, sub)
            self.connected = True
            on_connected()
            async for event in sub:
                if isinstance(event, DataChangeEvent):
                    self.received += 1
                    if not self.connected:
                        self.connected = True
                        log.info("opcua %s: data flowing again", self.name)
                    index = by_node.get(event.node.nodeid.to_string())
                    if index is not None:
                        self._put(sink, index, event.data.monitored_item.Value)
                elif isinstance(event, StatusChangeEvent):
                    log.warning("opcua %s: subscription status %s", self.name, event.notification.Status)
            raise RetryableError(f"opcua {self.name}: subscription closed")
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise RetryableError(f"opcua {self.name}: {exc}") from exc
        finally:
            self.connected = False
            self._mark_stale()
            try:
                await client.disconnect()
            except (OSError, TimeoutError, ua.UaError, RuntimeError) as exc:
                log.debug("opcua %s: disconnect: %s", self.name, exc)

    async def _subscribe(self, client: Client, sub: object) -> dict[str, int]:
        nodes = []
        by_node: dict[str, int] = {}
        for bt in self.tags:
            assert bt.tag.node_id is not None  # guaranteed by config validation
            node = client.get_node(bt.tag.node_id)
            nodes.append(node)
            by_node[node.nodeid.to_string()] = bt.index
        # queuesize=1: latest-value semantics per publishing interval; totalizers lose no mass.
        results = await sub.subscribe_data_change(nodes, queuesize=1)  # type: ignore[attr-defined]
        for bt, res in zip(self.tags, results, strict=True):
            if isinstance(res, ua.StatusCode) and not res.is_good():
                self.bad_nodes[bt.tag.node_id or ""] = res.name
                log.error(
                    "opcua %s: node %s (tag %s) refused: %s", self.name, bt.tag.node_id, bt.tag.name, res.name
                )
        if len(self.bad_nodes) == len(self.tags):
            raise FatalDriverError(f"opcua {self.name}: every node was refused: {self.bad_nodes}")
        return by_node

    def _put(self, sink: SampleSink, index: int, dv: ua.DataValue) -> None:
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        t = _epoch_seconds(dv.SourceTimestamp) or _epoch_seconds(dv.ServerTimestamp)
        quality = quality_from_status_code(status)
        if t is None:
            # No timestamp at all: use our clock, but say the time is not the source's.
            t = datetime.now(UTC).timestamp()
            quality = max(quality, Quality.UNCERTAIN)
        raw = dv.Value.Value if dv.Value is not None else None
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
            quality = Quality.BAD
        sink.put(index, t, value, quality, status)
