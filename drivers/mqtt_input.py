"""MQTT input driver: retrofit IoT sensors publishing to a broker, one exact topic per tag.

Every message is decoded by `drivers.mqtt_payload.decode_payload` and becomes one sample on the
bus. A payload the gateway refuses still becomes a sample: a BAD one (value NaN), so the pipeline
shows the tag as bad instead of silently keeping its last value. Nothing is dropped without a
count: `rejected[reason]` counts refusals per reason, `received` every message.

Connection behaviour:
* The client id is `connection.client_id` or `linegate-<driver>-<random hex>`, fixed for the life
  of the driver object so broker logs follow one gateway across reconnects.
* With a configured client id the session is persistent (clean_session False): at QoS 1 the broker
  then queues what sensors publish while the gateway restarts, and nothing is lost. A random id
  uses a clean session, because a persistent one would be orphaned on the broker at every start.
  A persistent session may still deliver topics from an older config: those are counted as
  `unexpected_topic`.
* `aiomqtt.MqttError` becomes `RetryableError`; a refused login or client id becomes
  `FatalDriverError`, since retrying with the same credentials cannot help.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
from drivers.mqtt_payload import REJECT_REASONS, Decoded, decode_payload
from gateway.config import MqttInputDriver as MqttInputSettings
from gateway.errors import FatalDriverError, RetryableError
from gateway.ports import BoundTag, SampleSink
from gateway.samples import Quality

log = logging.getLogger(__name__)

# Messages buffered between paho's socket callback and the decode loop. Decoding is synchronous
# and cheap, so this only fills when the event loop is starved; then the oldest are dropped and
# counted (`queue_overflow`), as the sample bus does: for sensor values the newest matter most.
INCOMING_QUEUE_SIZE: Final = 10_000

# Counter keys, all present from the start so dashboards see zeros rather than gaps.
DROP_REASONS: Final[tuple[str, ...]] = (
    *REJECT_REASONS,
    "unexpected_topic",  # a message on a topic no tag names (e.g. a persistent session's leftovers)
    "retained_untimed",  # a retained bare number: its age is unknown, so it is not a current reading
    "queue_overflow",  # dropped before decoding because the incoming queue was full
)


class MqttInputDriver:
    """`InputDriver` for a config driver of type `mqtt`."""

    def __init__(self, name: str, settings: MqttInputSettings, tags: list[BoundTag]) -> None:
        self.name = name
        self.settings = settings
        self.identifier = settings.connection.client_id or random_identifier(name)
        self._by_topic: dict[str, BoundTag] = {}
        for bound in tags:
            topic = bound.tag.topic
            problem = _topic_problem(topic)
            if problem is None and topic in self._by_topic:
                problem = f"topic also used by tag '{self._by_topic[topic].tag.name}'"
            if problem is not None or topic is None:
                raise FatalDriverError(f"mqtt driver '{name}': tag '{bound.tag.name}': {problem}")
            self._by_topic[topic] = bound
        # Plant time of each tag's last decoded sample: a rejected payload is stamped with it so
        # the BAD marker does not jump the tag's time axis to the (possibly skewed) local clock.
        self._last_t: dict[int, float] = {}
        self._log = RateLimitedLog(log)
        self.received = 0
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    async def run(self, sink: SampleSink, on_connected: Callable[[], None]) -> None:
        what = f"mqtt driver '{self.name}' ({self.settings.connection.host}:{self.settings.connection.port})"
        options = client_options(self.settings.connection, self.identifier)
        cancelled = False
        try:
            client = aiomqtt.Client(
                **options,
                clean_session=self.settings.connection.client_id is None,
                queue_type=self._queue_class(),
                max_queued_incoming_messages=INCOMING_QUEUE_SIZE,
            )
            async with client:
                try:
                    raise_if_cancel_swallowed()
                    if self._by_topic:
                        granted = await client.subscribe([(t, self.settings.qos) for t in self._by_topic])
                        raise_if_cancel_swallowed()
                        self._check_suback(granted)
                    on_connected()
                    async for message in client.messages:
                        self.handle(message.topic.value, message.payload, message.retain, sink)
                except asyncio.CancelledError:
                    cancelled = True
                    raise
        except aiomqtt.MqttError as exc:
            if cancelled:
                # The disconnect after a cancel failed; the cancel, not a retry, is what counts.
                raise asyncio.CancelledError from exc
            raise wrap_mqtt_error(exc, what) from exc
        # `client.messages` only ends by raising; be explicit should that ever change.
        raise RetryableError(f"{what}: message stream ended")

    def handle(self, topic: str, payload: object, retain: bool, sink: SampleSink) -> None:
        """Decode one message and put its sample (or a BAD marker) into `sink`. Never raises."""
        self.received += 1
        now = time.time()
        bound = self._by_topic.get(topic)
        if bound is None:
            self.rejected["unexpected_topic"] += 1
            # One log key for all strangers: a flood of distinct topics must not grow our memory.
            self._log.warning(
                "<unexpected>", "mqtt driver '%s': message on unconfigured topic %r", self.name, topic[:200]
            )
            return
        tag = bound.tag
        data = _as_bytes(payload)
        if retain and tag.payload == "number":
            self.rejected["retained_untimed"] += 1
            self._log.warning(
                topic,
                "mqtt driver '%s': ignored retained bare number on %s (tag %s): its age is unknown",
                self.name,
                topic,
                tag.name,
            )
            return
        result = decode_payload(data, tag, self.settings.max_payload_bytes, now)
        if isinstance(result, Decoded):
            self.accepted += 1
            self._last_t[bound.index] = result.t
            sink.put(bound.index, result.t, result.value, result.quality, status=0)
            return
        self.rejected[result.reason] += 1
        sink.put(bound.index, self._last_t.get(bound.index, now), math.nan, Quality.BAD, status=0)
        self._log.warning(
            topic,
            "mqtt driver '%s': rejected payload on %s (tag %s), %s: %s",
            self.name,
            topic,
            tag.name,
            result.reason,
            result.detail,
        )

    def _check_suback(self, granted: object) -> None:
        # SUBACK code 0x80 (or an MQTT 5 failure code) means the broker's ACL refused the topic:
        # the tag would never get data, and retrying with the same config cannot change that.
        codes = list(granted) if isinstance(granted, list | tuple) else []
        refused = [
            topic
            for topic, code in zip(self._by_topic, codes, strict=False)
            if getattr(code, "value", code) >= 0x80
        ]
        if refused:
            raise FatalDriverError(f"mqtt driver '{self.name}': broker refused subscriptions to {refused}")

    def _queue_class(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        driver = self

        class _DropOldestQueue(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's incoming queue, dropping (and counting) the oldest message when full."""

            def put_nowait(self, item: aiomqtt.Message) -> None:
                # aiomqtt would drop the newest and only log; we keep the newest and count.
                if self.full():
                    self.get_nowait()
                    driver.rejected["queue_overflow"] += 1
                    driver._log.warning(
                        "<overflow>", "mqtt driver '%s': incoming queue full, dropped oldest", driver.name
                    )
                super().put_nowait(item)

        return _DropOldestQueue


def _topic_problem(topic: str | None) -> str | None:
    if not topic:
        return "no topic"
    if "+" in topic or "#" in topic:
        return f"topic {topic!r} has a wildcard; a tag needs one exact topic"
    if "\x00" in topic:
        return "topic contains a NUL character"
    if len(topic.encode("utf-8")) > 65535:
        return "topic longer than MQTT allows"
    return None


def _as_bytes(payload: object) -> bytes:
    # paho hands us bytes; aiomqtt's type also allows these, so normalise rather than trust.
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode("utf-8")
