"""OPC-UA input: one session per configured driver, supervised; subscriptions and polling.

One `run` is one session: connect (secured as configured), create the monitored items in
batches over as many subscriptions as the tag count calls for, poll the tags whose filter the
server refused (or that are configured to be polled), then consume notifications until
something fails. Failure is any of: the heartbeat (a read of the server's clock) not answered
in time, a subscription silent past its keep-alive, asyncua reporting the connection lost, a
connection error. `run` then raises `RetryableError` and the runtime calls it again after a
backoff with jitter, which opens a new session and recreates everything. asyncua's own
auto-reconnect is not used: one recovery path, ours, counted in `connection_losses`.

Nothing is silent: on loss every tag is marked stale at once; notifications that asyncua's
bounded iterator queue discarded are counted (`dropped_overflow`: produced, by the observer
hook, minus consumed minus still queued); repeats of a value already passed on are dropped so
a stale tag stays stale until its source really updates it; a node the server refuses is
isolated and reported by node id and status while the rest keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription
from asyncua.observer import Observer

from drivers.opcua_monitoring import (
    FILTER_REFUSED,
    ClientFilter,
    chunks,
    item_request,
    monitoring_of,
    sampling_ms,
)
from drivers.opcua_polling import PolledTag, Poller
from drivers.opcua_publish_decoder import FastReading
from drivers.opcua_publish_path import FastPublishPath
from drivers.opcua_session import CONNECTION_ERRORS, describe, open_session
from drivers.opcua_values import LatestSeen, Reading, epoch_seconds, reading_of, stamped_now
from gateway.config import OpcUaDriver
from gateway.errors import FatalDriverError, RetryableError
from gateway.ports import BoundTag, SampleSink

log = logging.getLogger(__name__)

CURRENT_TIME = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
# A subscription sends at least a keep-alive this often (wall seconds) when nothing changes ...
KEEPALIVE_S = 2.0
# ... and is declared silent after this many keep-alive periods without any publish response.
SILENT_SUBSCRIPTION_PERIODS = 3


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
        self.received = 0  # notifications consumed (data changes and status changes)
        self.samples = 0  # samples passed to the sink
        self.subscriptions = 0
        self.polled: list[str] = []  # tag names being polled, and why in the log
        self.bad_nodes: dict[str, str] = {}  # node id -> status name
        self.server_clock_offset_s: float | None = None  # server clock minus ours
        self._counter = _NotificationCounter()
        self._dropped_before = 0  # overflow counted in earlier sessions
        self._queues: list[asyncio.Queue[Any]] = []
        self._latest = LatestSeen()
        self._consumed_this_session = 0
        self._poll_reads_before = 0
        self._dropped_logged = 0
        self._poller: Poller | None = None
        self.tags_by_index = {bt.index: bt for bt in tags}
        self._sink: SampleSink | None = None
        self._fast: FastPublishPath | None = None
        self._fast_before = (0, 0)  # (fast, generic) publish responses of earlier sessions
        self.unknown_handles = 0  # notifications for a client handle we never asked for

    @property
    def dropped_overflow(self) -> int:
        """Notifications asyncua's bounded queues discarded because we fell behind (all sessions)."""
        return self._dropped_before + self._dropped_now()

    @property
    def poll_reads(self) -> int:
        """Read requests the poller has made (all sessions)."""
        return self._poll_reads_before + (self._poller.reads if self._poller else 0)

    @property
    def repeats_dropped(self) -> int:
        return self._latest.repeats_dropped

    def _dropped_now(self) -> int:
        queued = sum(q.qsize() for q in self._queues)
        return max(0, self._counter.produced - self._consumed_this_session - queued)

    def _mark_stale(self) -> None:
        if self._sink is not None:
            self._sink.mark_stale([bt.index for bt in self.tags])

    async def _on_connection_lost(self, exc: Exception) -> None:
        # asyncua noticed first (socket closed): flag the tags now, the consumers will raise.
        log.warning("opcua %s: connection lost (%s); tags stale until it is back", self.name, describe(exc))
        self._mark_stale()

    async def run(self, sink: SampleSink, on_connected: Callable[[], None]) -> None:
        self._sink = sink
        self._counter = _NotificationCounter()
        self._consumed_this_session = 0
        self._queues = []
        try:
            async with open_session(self.settings, self.name) as client:
                client.uaclient.observer = self._counter
                client.connection_lost_callback = self._on_connection_lost
                try:
                    await self._serve(client, sink, on_connected)
                except BaseException:
                    self._mark_stale()  # now, not after the session is torn down
                    raise
        except CONNECTION_ERRORS as exc:
            raise RetryableError(f"opcua {self.name}: {describe(exc)}") from exc
        finally:
            self._dropped_before += self._dropped_now()
            self._poll_reads_before = self.poll_reads
            self._poller = None
            self._fast_before = self.publish_responses
            self._fast = None
            self._queues = []
            self._counter = _NotificationCounter()
            self._consumed_this_session = 0
            if self.connected:
                self.connection_losses += 1
            self.connected = False
            self._mark_stale()

    async def _serve(self, client: Client, sink: SampleSink, on_connected: Callable[[], None]) -> None:
        subs, polled = await self._monitor(client)
        if len(self.bad_nodes) == len(self.tags):
            raise FatalDriverError(f"opcua {self.name}: every node was refused: {self.bad_nodes}")
        self.polled = [self.tags_by_index[p.index].tag.name for p in polled]
        self.subscriptions = len(subs)
        self._fast = FastPublishPath.install(client, subs, lambda readings: self._deliver(sink, readings))
        self.connected = True
        on_connected()
        jobs: list[Coroutine[Any, Any, None]] = [self._heartbeat(client, subs)]
        jobs += [self._consume(sub, sink) for sub in subs]
        if polled:
            poller = Poller(
                client,
                polled,
                items_per_call=self.settings.items_per_call,
                deliver=lambda k, r: self._put(sink, k, r),
                on_bad_node=lambda pt, status: self._refused(
                    str(pt.node_id.to_string()), self.tags_by_index[pt.index], status
                ),
            )
            self._poller = poller
            jobs.append(poller.run())
        await _until_first_failure(jobs)
        raise RetryableError(f"opcua {self.name}: session ended")

    async def _monitor(self, client: Client) -> tuple[list[Subscription], list[PolledTag]]:
        """Create subscriptions and monitored items; return them and the tags to poll."""
        s = self.settings
        self.bad_nodes = {}
        polled: list[PolledTag] = []
        to_subscribe: list[BoundTag] = []
        for bt in self.tags:
            if monitoring_of(bt).mode == "poll":
                polled.append(self._polled(bt))
            else:
                to_subscribe.append(bt)
        subs: list[Subscription] = []
        for group in chunks(to_subscribe, s.max_items_per_subscription):
            sub = await client.create_subscription(
                self._subscription_parameters(),
                queue_maxsize=s.queue_maxsize,
                overflow=OverflowPolicy.DROP_OLDEST,
            )
            subs.append(sub)
            assert sub._event_queue is not None  # iterator mode; only its length is read
            self._queues.append(sub._event_queue)
            for batch in chunks(group, s.items_per_call):
                results = await sub.create_monitored_items([item_request(bt, s) for bt in batch])
                for bt, res in zip(batch, results, strict=True):
                    if not isinstance(res, ua.StatusCode):
                        continue
                    if res.value in FILTER_REFUSED:
                        log.warning(
                            "opcua %s: tag %s: the server refused its filter (%s); polling it instead",
                            self.name,
                            bt.tag.name,
                            res.name,
                        )
                        polled.append(self._polled(bt))
                    else:
                        self._refused(bt.tag.node_id or "", bt, res.name)
        return subs, polled

    def _polled(self, bt: BoundTag) -> PolledTag:
        assert bt.tag.node_id is not None
        interval_s = sampling_ms(monitoring_of(bt), self.settings) / 1000
        return PolledTag(
            bt.index, ua.NodeId.from_string(bt.tag.node_id), max(interval_s, 0.01), ClientFilter.of(bt)
        )

    def _refused(self, node_id: str, bt: BoundTag, status: str) -> None:
        self.bad_nodes[node_id] = status
        log.error(
            "opcua %s: node %s (tag %s) refused: %s; the other tags go on",
            self.name,
            node_id,
            bt.tag.name,
            status,
        )
        if self._sink is not None:
            self._sink.mark_stale([bt.index])

    def _subscription_parameters(self) -> ua.CreateSubscriptionParameters:
        interval = self.settings.publishing_interval_ms
        return ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedLifetimeCount=10_000,
            RequestedMaxKeepAliveCount=max(1, math.ceil(KEEPALIVE_S * 1000 / interval)),
            MaxNotificationsPerPublish=10_000,
            PublishingEnabled=True,
            Priority=0,
        )

    async def _consume(self, sub: Subscription, sink: SampleSink) -> None:
        async for event in sub:
            self.received += 1
            self._consumed_this_session += 1
            if isinstance(event, DataChangeEvent):
                item = event.data.monitored_item
                self._put(sink, item.ClientHandle, reading_of(item.Value))
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if not status.is_good():
                    raise RetryableError(
                        f"opcua {self.name}: subscription {sub.subscription_id}: {status.name}"
                    )
                log.info("opcua %s: subscription status %s", self.name, status.name)
        raise RetryableError(f"opcua {self.name}: subscription {sub.subscription_id} closed")

    def _deliver(self, sink: SampleSink, readings: list[FastReading]) -> None:
        """Data changes read by the fast publish path (asyncua's queue is bypassed: nothing to
        overflow; the sink counts what it cannot take)."""
        self.received += len(readings)
        known = self.tags_by_index
        for handle, t, value, quality, status in readings:
            if handle not in known:
                self._unknown_handle(handle)
                continue
            if t is None:
                t, quality = stamped_now(quality)
            self._put(sink, handle, Reading(t, value, quality, status))

    def _unknown_handle(self, handle: int) -> None:
        self.unknown_handles += 1
        if self.unknown_handles == 1 or self.unknown_handles % 1000 == 0:
            log.warning(
                "opcua %s: %d notification(s) for client handle(s) we never asked for (latest %d); ignored",
                self.name,
                self.unknown_handles,
                handle,
            )

    @property
    def publish_responses(self) -> tuple[int, int]:
        """(read by the fast path, decoded by asyncua) publish responses, all sessions."""
        fast, generic = self._fast_before
        if self._fast is not None:
            fast += self._fast.fast_responses
            generic += self._fast.generic_responses
        return fast, generic

    def _put(self, sink: SampleSink, index: int, r: Reading) -> None:
        if self._latest.is_repeat(index, r):
            return
        self.samples += 1
        sink.put(index, r.t, r.value, r.quality, r.status)

    async def _heartbeat(self, client: Client, subs: list[Subscription]) -> None:
        """Read the server's clock; a read not answered in time, or a silent subscription, is a loss."""
        s = self.settings
        params = ua.ReadParameters(
            NodesToRead=[ua.ReadValueId(NodeId=CURRENT_TIME, AttributeId=ua.AttributeIds.Value)]
        )
        while True:
            try:
                async with asyncio.timeout(s.heartbeat_timeout_s):
                    (dv,) = await client.uaclient.read(params)
            except TimeoutError:
                raise RetryableError(
                    f"opcua {self.name}: heartbeat not answered within {s.heartbeat_timeout_s:g} s "
                    "(server frozen or network down)"
                ) from None
            server_now = epoch_seconds(dv.Value.Value if dv.Value is not None else None)
            if server_now is not None:
                self.server_clock_offset_s = server_now - datetime.now(UTC).timestamp()
            dropped = self.dropped_overflow
            if dropped > self._dropped_logged:
                log.warning(
                    "opcua %s: %d notifications lost so far: the gateway fell behind and asyncua's queue "
                    "(queue_maxsize %d) overflowed",
                    self.name,
                    dropped,
                    s.queue_maxsize,
                )
                self._dropped_logged = dropped
            for sub in subs:
                if sub.is_stale(SILENT_SUBSCRIPTION_PERIODS):
                    raise RetryableError(
                        f"opcua {self.name}: subscription {sub.subscription_id} sent nothing, not even a "
                        f"keep-alive, for {SILENT_SUBSCRIPTION_PERIODS} keep-alive periods"
                    )
            await asyncio.sleep(s.heartbeat_s)

    def stats(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "connection_losses": self.connection_losses,
            "received": self.received,
            "samples": self.samples,
            "dropped_overflow": self.dropped_overflow,
            "repeats_dropped": self.repeats_dropped,
            "unknown_handles": self.unknown_handles,
            "publish_fast": self.publish_responses[0],
            "publish_generic": self.publish_responses[1],
            "subscriptions": self.subscriptions,
            "polled": len(self.polled),
            "bad_nodes": dict(self.bad_nodes),
            "server_clock_offset_s": self.server_clock_offset_s,
        }


async def _until_first_failure(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run the jobs together; when the first one ends (they should not), cancel the rest and
    re-raise its exception as is (no ExceptionGroup: the runtime reads RetryableError)."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        exc = t.exception()
        if exc is not None:
            raise exc
