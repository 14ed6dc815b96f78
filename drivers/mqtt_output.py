"""MQTT operator output: the line's live state as retained topics under an ISA-95 style tree.

Topic names and payloads come from `drivers.operator_topics` (the contract lives there). This
module adds the behaviour:

* Latest value wins. Pipeline updates are folded into `latest` (topic -> payload), which belongs
  to the driver object and so survives reconnects; an update leaves the queue once folded.
* Each topic is published at most once per `min_interval_s` (wall time). A topic that changes
  faster is held back by a timer, never by a polling loop, and its newest payload goes out when
  its interval has passed: the last value always reaches the broker.
* Unchanged payloads are not republished while connected.
* On every (re)connect: the birth certificate on `<base>/status`, then every topic in `latest`
  once more (the broker may have restarted without persistence and lost its retained store).
* Last Will `{"state": "offline"}` on `<base>/status`, retained, so a crash or a cut cable shows
  as offline. A clean stop (task cancelled) flushes held-back topics, then publishes
  `{"state": "offline", "reason": "shutdown"}` retained and disconnects (so no Will is sent).
* `aiomqtt.MqttError` becomes `RetryableError`, a refused login `FatalDriverError`. The broker
  going away is noticed even while idle, not only at the next publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

import aiomqtt

from drivers.mqtt_common import (
    RateLimitedLog,
    client_options,
    raise_if_cancel_swallowed,
    random_identifier,
    wrap_mqtt_error,
)
from drivers.operator_topics import (
    base_topic,
    birth_payload,
    shutdown_payload,
    status_topic,
    update_messages,
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


class MqttOperatorOutput:
    """`OutputDriver` publishing signals, KPIs and gateway status for operators' dashboards."""

    def __init__(self, settings: MqttOutput, config: LineConfig) -> None:
        self.name = "mqtt"
        self.settings = settings
        self.base = base_topic(config, settings.prefix)
        self.status_topic = status_topic(self.base)
        self.identifier = settings.connection.client_id or random_identifier("operator")
        # topic -> newest payload; survives reconnects so a new session can restore everything.
        self.latest: dict[str, bytes] = {}
        # What the broker was last given per topic, when, and which topics differ from `latest`
        # (a dict used as an insertion-ordered set, so topics go out in the order they changed).
        self._sent: dict[str, bytes] = {}
        self._sent_at: dict[str, float] = {}
        self._dirty: dict[str, None] = {}
        self._log = RateLimitedLog(log)
        self.published = 0  # every acknowledged publish, status and republications included
        self.reconnect_republished = 0  # topics from `latest` republished after a (re)connect
        self.bad_updates = 0  # updates that could not be turned into payloads (logged, skipped)
        self.connects = 0
        self._closing = False  # True while the final publishes of a clean stop go out

    @property
    def pending(self) -> int:
        """Topics whose newest payload has not reached the broker yet."""
        return len(self._dirty)

    async def run(self, queue: OutputQueue[PipelineUpdate], on_connected: Callable[[], None]) -> None:
        conn = self.settings.connection
        what = f"mqtt output ({conn.host}:{conn.port})"
        will = aiomqtt.Will(self.status_topic, will_payload(), qos=self.settings.qos, retain=True)
        cancelled = False
        try:
            client = aiomqtt.Client(
                **client_options(conn, self.identifier),
                will=will,
                # Nothing to keep between sessions: we subscribe to nothing, and `latest` is
                # republished on every connect anyway.
                clean_session=True,
            )
            self._closing = False
            async with client:
                try:
                    raise_if_cancel_swallowed()
                    self.connects += 1
                    await self._publish(client, self.status_topic, birth_payload(time.time()))
                    await self._republish_all(client)
                    on_connected()
                    await self._serve(client, queue)
                except asyncio.CancelledError:
                    cancelled = True
                    self._closing = True
                    await self._say_goodbye(client, queue)
                    raise
        except aiomqtt.MqttError as exc:
            if cancelled:
                # The disconnect after a cancel failed; the cancel, not a retry, is what counts.
                raise asyncio.CancelledError from exc
            raise wrap_mqtt_error(exc, what) from exc

    # -- delivery --------------------------------------------------------------------------------

    async def _serve(self, client: aiomqtt.Client, queue: OutputQueue[PipelineUpdate]) -> None:
        watch = asyncio.create_task(self._watch_connection(client), name="mqtt-output-watch")
        try:
            while True:
                self._drain(queue)
                await self._publish_due(client, time.monotonic())
                if watch.done():
                    watch.result()  # raises the MqttError that ended the connection
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
            messages = update_messages(update, self.base)
        except Exception:
            # A malformed update must not wedge the queue (it would be retried forever): skip it,
            # count it, say so.
            self.bad_updates += 1
            log.exception("mqtt output: could not build payloads for an update; skipped")
            return
        for topic, payload in messages.items():
            self.latest[topic] = payload
            if self._sent.get(topic) == payload:
                self._dirty.pop(topic, None)  # back to what the broker already holds
            else:
                self._dirty[topic] = None

    async def _publish_due(self, client: aiomqtt.Client, now: float) -> None:
        interval = self.settings.min_interval_s
        for topic in list(self._dirty):
            sent_at = self._sent_at.get(topic)
            if sent_at is not None and now - sent_at < interval:
                continue
            await self._send(client, topic, now)

    def _next_due_in(self, now: float) -> float | None:
        """Seconds until the earliest held-back topic may go out; None when nothing waits."""
        if not self._dirty:
            return None
        interval = self.settings.min_interval_s
        due = min(self._sent_at.get(t, now - interval) + interval for t in self._dirty)
        return max(0.0, due - now)

    async def _republish_all(self, client: aiomqtt.Client) -> None:
        now = time.monotonic()
        for topic in list(self.latest):
            await self._send(client, topic, now)
            self.reconnect_republished += 1

    async def _send(self, client: aiomqtt.Client, topic: str, now: float) -> None:
        payload = self.latest[topic]
        await self._publish(client, topic, payload)
        self._sent[topic] = payload
        self._sent_at[topic] = now
        self._dirty.pop(topic, None)

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await client.publish(topic, payload, qos=self.settings.qos, retain=True)
        self.published += 1
        if not self._closing:  # while saying goodbye the task is already being cancelled
            raise_if_cancel_swallowed()

    async def _say_goodbye(self, client: aiomqtt.Client, queue: OutputQueue[PipelineUpdate]) -> None:
        """On a clean stop: flush what is held back, then mark the gateway offline (retained)."""
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                self._drain(queue)
                for topic in list(self._dirty):
                    await self._send(client, topic, time.monotonic())
                await self._publish(client, self.status_topic, shutdown_payload())
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._log.warning("shutdown", "mqtt output: could not publish the shutdown status: %s", exc)
