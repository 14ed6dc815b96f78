"""MQTT operator output: the line's live state as retained topics under an ISA-95 style tree.

Topic names and payloads come from `drivers.operator_topics` (the contract lives there). This
module adds the behaviour:

* Latest value wins. Pipeline updates are folded into `latest` (topic -> payload), which belongs
  to the driver object and so survives reconnects; an update leaves the queue once folded.
* Publish on change: a signal topic goes out again only when its quality changed or its value
  moved by more than the tag's `deadband` from the value last published (any change at 0). KPI
  and alarm topics go out when their payload changed.
* Each topic is published at most once per `min_interval_s` (wall time). A topic that changes
  faster is held back by a timer, never by a polling loop, and its newest payload goes out when
  its interval has passed: the last value always reaches the broker.
* Alarms: each active alarm is a retained topic; when it clears, an empty retained payload
  deletes it (a deletion of a topic the broker never got from us is skipped). Every transition
  is also one non-retained message on `<base>/alarms/events`, in order, outside the per-topic
  rate limit; events wait in a bounded backlog while the broker is away (overflow counted).
* On every (re)connect: the birth certificate on `<base>/status`, then every topic in `latest`
  once more (the broker may have restarted without persistence and lost its retained store),
  active alarms included. Deletions already acknowledged are not repeated: nothing is deleted
  blindly.
* Last Will `{"state": "offline"}` on `<base>/status`, retained, so a crash or a cut cable shows
  as offline. A clean stop (task cancelled) flushes held-back topics and events, then publishes
  `{"state": "offline", "reason": "shutdown"}` retained and disconnects (so no Will is sent).
* Publishes are pipelined: up to `PUBLISH_WINDOW` wait for their PUBACK at once, because one
  round trip per message would cap a QoS 1 output at a few thousand messages per second.
* Connecting (protocol fallback, TLS, login) is `drivers.mqtt_common.MqttConnector`, with a clean
  session: we subscribe to nothing and republish `latest` on every connect anyway.
  `aiomqtt.MqttError` becomes `RetryableError`, a refused login `FatalDriverError`. The broker
  going away is noticed even while idle, not only at the next publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import aiomqtt

from drivers.mqtt_common import (
    MqttConnector,
    RateLimitedLog,
    protocol_name,
    raise_if_cancel_swallowed,
    random_identifier,
)
from drivers.operator_topics import (
    DELETE_RETAINED,
    alarm_events_topic,
    alarm_state_messages,
    base_topic,
    birth_payload,
    event_messages,
    kpi_messages,
    metrics_payload,
    shutdown_payload,
    signal_payloads,
    signal_topic,
    significant_change,
    status_topic,
    will_payload,
)
from gateway.config import LineConfig, MqttOutput
from gateway.output_queue import OutputQueue
from gateway.ports import PipelineUpdate

log = logging.getLogger(__name__)

# Updates folded per peek; folding is cheap, the batch only bounds one synchronous stretch.
DRAIN_BATCH: Final = 256
# A clean stop waits at most this long for the final publishes before disconnecting anyway.
SHUTDOWN_TIMEOUT_S: Final = 2.0
# Publishes awaiting their acknowledgement at once (paho's max_inflight_messages too, whose
# default of 20 would hold the rest of a window back). Enough to hide the round trip: 256 measured
# no faster on loopback.
PUBLISH_WINDOW: Final = 64
# Alarm events kept while the broker is away; beyond this the oldest are dropped and counted.
# The retained alarm topics still show the current state after such a loss.
EVENT_BACKLOG: Final = 10_000

Message = tuple[str, bytes, bool]  # topic, payload, retain


class MqttOperatorOutput:
    """`OutputDriver` publishing signals, KPIs, alarms and gateway status for operators."""

    def __init__(self, settings: MqttOutput, config: LineConfig) -> None:
        self.name = "mqtt"
        self.settings = settings
        self.base = base_topic(config, settings.prefix)
        self.status_topic = status_topic(self.base)
        self.events_topic = alarm_events_topic(self.base)
        self.identifier = settings.connection.client_id or random_identifier("operator")
        self._connector = MqttConnector(settings.connection, self.identifier, persistent_session=False)
        self._deadband = {t.name: t.deadband for t in config.tags}
        # topic -> newest payload; survives reconnects so a new session can restore everything.
        # A cleared alarm's topic holds DELETE_RETAINED until the broker acknowledged it.
        self.latest: dict[str, bytes] = {}
        # What the broker was last given per topic, when, and which topics differ from `latest`
        # (a dict used as an insertion-ordered set, so topics go out in the order they changed).
        self._sent: dict[str, bytes] = {}
        self._sent_at: dict[str, float] = {}
        self._dirty: dict[str, None] = {}
        # Signal topics: (value, quality) of the newest state and of the one last published,
        # for the deadband.
        self._latest_state: dict[str, tuple[float, int]] = {}
        self._sent_state: dict[str, tuple[float, int]] = {}
        self._events: deque[bytes] = deque()
        self._log = RateLimitedLog(log)
        self.published = 0  # every acknowledged publish, status and republications included
        self.reconnect_republished = 0  # topics from `latest` republished after a (re)connect
        self.bad_updates = 0  # updates that could not be turned into payloads (logged, skipped)
        self.deadband_suppressed = 0  # signal updates not published: within the deadband
        self.events_published = 0
        self.events_dropped = 0  # alarm events lost to a full backlog while disconnected
        self.connects = 0
        self._closing = False  # True while the final publishes of a clean stop go out

    @property
    def pending(self) -> int:
        """Topics whose newest payload has not reached the broker yet, plus unsent events."""
        return len(self._dirty) + len(self._events)

    @property
    def protocol(self) -> str:
        """The MQTT version in use (after any fallback): "5" or "3.1.1"."""
        return protocol_name(self._connector.protocol)

    async def run(self, queue: OutputQueue[PipelineUpdate], on_connected: Callable[[], None]) -> None:
        conn = self.settings.connection
        what = f"mqtt output ({conn.host}:{conn.port})"
        will = aiomqtt.Will(self.status_topic, will_payload(), qos=self.settings.qos, retain=True)
        self._closing = False
        async with self._connector.session(what, will=will, max_inflight_messages=PUBLISH_WINDOW) as client:
            try:
                # aiomqtt logs a warning per publish while more than this many await their
                # PUBACK; a full window is our normal state, not a concern.
                client.pending_calls_threshold = PUBLISH_WINDOW
                self.connects += 1
                await self._publish_batch(client, [(self.status_topic, birth_payload(time.time()), True)])
                await self._republish_all(client)
                on_connected()
                await self._serve(client, queue)
            except asyncio.CancelledError:
                self._closing = True
                await self._say_goodbye(client, queue)
                raise

    # -- delivery --------------------------------------------------------------------------------

    async def _serve(self, client: aiomqtt.Client, queue: OutputQueue[PipelineUpdate]) -> None:
        watch = asyncio.create_task(self._watch_connection(client), name="mqtt-output-watch")
        try:
            while True:
                self._drain(queue)
                await self._publish_events(client)
                await self._publish_due(client, time.monotonic())
                if watch.done():
                    watch.result()  # raises the MqttError that ended the connection
                if len(queue) or self._events:
                    continue  # more arrived while we published
                delay = self._next_due_in(time.monotonic())
                waiter = asyncio.ensure_future(queue.wait())
                try:
                    # Sleep until new data, the next held-back topic falls due, or the link drops.
                    await asyncio.wait({waiter, watch}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if watch.done():
                    watch.result()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watch

    @staticmethod
    async def _watch_connection(client: aiomqtt.Client) -> None:
        # We subscribe to nothing, so the message stream only ever ends, by raising, when the
        # connection drops: a public way to notice a dead broker while there is nothing to send.
        async for _ in client.messages:
            pass

    def _drain(self, queue: OutputQueue[PipelineUpdate]) -> None:
        while len(queue):
            items, token = queue.peek(DRAIN_BATCH)
            for update in items:
                self._fold(update)
            queue.commit(token)

    def _fold(self, update: PipelineUpdate) -> None:
        try:
            # Rows, not SignalState objects: a pipeline tick hands its signals over as columns.
            rows = update.signal_rows()
            signals = [
                (signal_topic(self.base, row[0]), row, payload)
                for row, payload in zip(rows, signal_payloads(rows), strict=True)
            ]
            others = kpi_messages(update, self.base)
            others.update(alarm_state_messages(update, self.base))
            if update.metrics is not None:
                others[f"{self.status_topic}/metrics"] = metrics_payload(update.metrics)
            events = event_messages(update)
        except Exception:
            # A malformed update must not wedge the queue (it would be retried forever): skip it,
            # count it, say so.
            self.bad_updates += 1
            log.exception("mqtt output: could not build payloads for an update; skipped")
            return
        for topic, (name, _, _, value, quality), payload in signals:
            state = (value, quality)
            self.latest[topic] = payload
            self._latest_state[topic] = state
            sent = self._sent_state.get(topic)
            if sent is not None and not significant_change(*sent, *state, self._deadband.get(name, 0.0)):
                # What the broker holds is still within the deadband of the newest value.
                self._dirty.pop(topic, None)
                if self._sent.get(topic) != payload:
                    self.deadband_suppressed += 1
            else:
                self._dirty[topic] = None
        for topic, payload in others.items():
            self._set(topic, payload)
        for event in events:
            if len(self._events) >= EVENT_BACKLOG:
                self._events.popleft()
                self.events_dropped += 1
                self._log.warning("events", "mqtt output: alarm event backlog full, dropped the oldest")
            self._events.append(event)

    def _set(self, topic: str, payload: bytes) -> None:
        if payload == DELETE_RETAINED and topic not in self._sent:
            # The broker never got this topic from us: nothing to delete.
            self.latest.pop(topic, None)
            self._dirty.pop(topic, None)
            return
        self.latest[topic] = payload
        if self._sent.get(topic) == payload:
            self._dirty.pop(topic, None)  # back to what the broker already holds
        else:
            self._dirty[topic] = None

    async def _publish_events(self, client: aiomqtt.Client) -> None:
        while self._events:
            chunk = [self._events.popleft() for _ in range(min(PUBLISH_WINDOW, len(self._events)))]
            acked: set[int] = set()
            try:
                await self._publish_batch(client, [(self.events_topic, e, False) for e in chunk], acked.add)
            finally:
                # Whatever was not acknowledged goes back to the front, in order, for the next try.
                self._events.extendleft(reversed([e for i, e in enumerate(chunk) if i not in acked]))
                self.events_published += len(acked)

    async def _publish_due(self, client: aiomqtt.Client, now: float) -> None:
        interval = self.settings.min_interval_s
        due = [t for t in self._dirty if (at := self._sent_at.get(t)) is None or now - at >= interval]
        await self._send(client, due, now)

    def _next_due_in(self, now: float) -> float | None:
        """Seconds until the earliest held-back topic may go out; None when nothing waits."""
        if not self._dirty:
            return None
        interval = self.settings.min_interval_s
        due = min(self._sent_at.get(t, now - interval) + interval for t in self._dirty)
        return max(0.0, due - now)

    async def _republish_all(self, client: aiomqtt.Client) -> None:
        # Pending deletions go too: the broker may still hold the alarm they delete.
        topics = list(self.latest)
        await self._send(client, topics, time.monotonic())
        self.reconnect_republished += len(topics)

    async def _send(self, client: aiomqtt.Client, topics: Sequence[str], now: float) -> None:
        # Nothing folds into `latest` while this awaits (folding happens in the same task), so the
        # payloads captured here are still the newest when their acknowledgements arrive.
        messages = [(t, self.latest[t], True) for t in topics]

        def sent(i: int) -> None:
            topic, payload, _ = messages[i]
            self._sent_at[topic] = now
            self._dirty.pop(topic, None)
            if payload == DELETE_RETAINED:
                # Deleted: forgotten, so a reconnect does not delete it again.
                self._sent.pop(topic, None)
                self.latest.pop(topic, None)
                return
            self._sent[topic] = payload
            state = self._latest_state.get(topic)
            if state is not None:
                self._sent_state[topic] = state

        await self._publish_batch(client, messages, sent)

    async def _publish_batch(
        self,
        client: aiomqtt.Client,
        messages: Sequence[Message],
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        """Publish `messages` in order, up to `PUBLISH_WINDOW` awaiting acknowledgement at once.

        `on_acked(i)` runs for each acknowledged message. The first error is raised once the
        rest of its window has settled, so every acknowledgement is accounted for.
        """
        qos = self.settings.qos
        for start in range(0, len(messages), PUBLISH_WINDOW):
            chunk = messages[start : start + PUBLISH_WINDOW]
            # paho writes them to the socket in call order; only the waits for PUBACK overlap.
            results = await asyncio.gather(
                *(client.publish(t, p, qos=qos, retain=r) for t, p, r in chunk), return_exceptions=True
            )
            error: BaseException | None = None
            for i, result in enumerate(results):
                if result is None:
                    self.published += 1
                    if on_acked is not None:
                        on_acked(start + i)
                elif error is None:
                    error = result
            if error is not None:
                raise error
            if not self._closing:  # while saying goodbye the task is already being cancelled
                raise_if_cancel_swallowed()

    async def _say_goodbye(self, client: aiomqtt.Client, queue: OutputQueue[PipelineUpdate]) -> None:
        """On a clean stop: flush what is held back, then mark the gateway offline (retained)."""
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                self._drain(queue)
                await self._publish_events(client)
                await self._send(client, list(self._dirty), time.monotonic())
                await self._publish_batch(client, [(self.status_topic, shutdown_payload(), True)])
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._log.warning("shutdown", "mqtt output: could not publish the shutdown status: %s", exc)
