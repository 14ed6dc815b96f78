"""MQTT input driver: retrofit IoT sensors publishing to a broker.

Topics reach tags two ways:
* A tag's own `topic` (exact, no wildcards).
* The driver's `routes`: each route's wildcard filter is subscribed, and a matching topic goes to
  the tag named by the route's template, `{N}` filled with the topic level under the N-th `+`
  (`plant/+/gas/+` with `gas.{2}` sends `plant/l1/gas/h2` to `gas.h2`). Only tags of this driver
  declared without a topic are reachable by routes: a tag fed from two places would interleave two
  streams. A route match naming no such tag is counted as `unexpected_topic`, never guessed.
  Routes are tried in config order; the first naming a declared tag wins. A tag's own topic takes
  precedence over every route, and a topic a route filter already covers is not subscribed again
  (the broker would deliver the message twice, once per matching subscription).

Every message is decoded by `drivers.mqtt_payload.decode_payload` and becomes one sample on the
bus. A payload the gateway refuses still becomes a sample: a BAD one (value NaN), so the pipeline
shows the tag as bad instead of silently keeping its last value. Nothing is dropped without a
count: `rejected[reason]` counts refusals per reason, `received` every message.

Connection behaviour:
* Connecting (protocol 5 or 3.1.1 with fallback, TLS, login) is `drivers.mqtt_common.MqttConnector`.
* The client id is `connection.client_id` or `linegate-<driver>-<random hex>`, fixed for the life
  of the driver object so broker logs follow one gateway across reconnects.
* With a configured client id the session is persistent (3.1.1: clean_session False; 5:
  clean_start False and a session that never expires, as in 3.1.1): at QoS 1 the broker
  then queues what sensors publish while the gateway restarts, and nothing is lost. A random id
  uses a clean session, because a persistent one would be orphaned on the broker at every start.
  A persistent session may still deliver topics from an older config: those are counted as
  `unexpected_topic`.
* `aiomqtt.MqttError` becomes `RetryableError`; a refused login, client id, protocol version or
  certificate becomes `FatalDriverError`, since retrying with the same credentials cannot help.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Final

import aiomqtt

from drivers.mqtt_common import (
    MqttConnector,
    RateLimitedLog,
    payload_bytes,
    protocol_name,
    raise_if_cancel_swallowed,
    random_identifier,
)
from drivers.mqtt_payload import REJECT_REASONS, Decoded, decode_payload
from gateway.config import MqttInputDriver as MqttInputSettings
from gateway.config import TopicRoute
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
    # a topic no tag names: a route match naming no declared tag, a persistent session's leftovers
    "unexpected_topic",
    "retained_untimed",  # a retained bare number: its age is unknown, so it is not a current reading
    "queue_overflow",  # dropped before decoding because the incoming queue was full
)


class MqttInputDriver:
    """`InputDriver` for a config driver of type `mqtt`."""

    def __init__(self, name: str, settings: MqttInputSettings, tags: list[BoundTag]) -> None:
        self.name = name
        self.settings = settings
        self.identifier = settings.connection.client_id or random_identifier(name)
        # A configured client id gets a persistent session (see the module docstring).
        self._connector = MqttConnector(
            settings.connection, self.identifier, persistent_session=settings.connection.client_id is not None
        )
        self._by_topic: dict[str, BoundTag] = {}
        # Tags without a topic, by name: the only ones routes may reach.
        self._routed: dict[str, BoundTag] = {}
        for bound in tags:
            topic = bound.tag.topic
            if topic is None:
                self._routed[bound.tag.name] = bound
                continue
            problem = _topic_problem(topic)
            if problem is None and topic in self._by_topic:
                problem = f"topic also used by tag '{self._by_topic[topic].tag.name}'"
            if problem is not None:
                raise FatalDriverError(f"mqtt driver '{name}': tag '{bound.tag.name}': {problem}")
            self._by_topic[topic] = bound
        self._routes = list(settings.routes)
        for tag_name in self._routed:
            if not any(route_can_name(route, tag_name) for route in self._routes):
                raise FatalDriverError(
                    f"mqtt driver '{name}': tag '{tag_name}' has no topic, and no route's tag template "
                    f"can produce that name ({[r.tag for r in self._routes]})"
                )
        self._subscriptions = subscriptions(list(self._by_topic), [r.topic for r in self._routes])
        # Plant time of each tag's last decoded sample: a rejected payload is stamped with it so
        # the BAD marker does not jump the tag's time axis to the (possibly skewed) local clock.
        self._last_t: dict[int, float] = {}
        self._log = RateLimitedLog(log)
        self.received = 0
        self.accepted = 0
        self.routed = 0  # messages that reached their tag through a route (accepted or not)
        self.rejected: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    @property
    def topics(self) -> list[str]:
        """What the driver subscribes to: route filters and the exact topics they do not cover."""
        return list(self._subscriptions)

    @property
    def protocol(self) -> str:
        """The MQTT version in use (after any fallback): "5" or "3.1.1"."""
        return protocol_name(self._connector.protocol)

    async def run(self, sink: SampleSink, on_connected: Callable[[], None]) -> None:
        what = f"mqtt driver '{self.name}' ({self.settings.connection.host}:{self.settings.connection.port})"
        session = self._connector.session(
            what, queue_type=self._queue_class(), max_queued_incoming_messages=INCOMING_QUEUE_SIZE
        )
        async with session as client:
            if self._subscriptions:
                granted = await client.subscribe([(t, self.settings.qos) for t in self._subscriptions])
                raise_if_cancel_swallowed()
                self._check_suback(granted)
            on_connected()
            async for message in client.messages:
                self.handle(message.topic.value, message.payload, message.retain, sink)
        # `client.messages` only ends by raising; be explicit should that ever change.
        raise RetryableError(f"{what}: message stream ended")

    def handle(self, topic: str, payload: object, retain: bool, sink: SampleSink) -> None:
        """Decode one message and put its sample (or a BAD marker) into `sink`. Never raises."""
        self.received += 1
        now = time.time()
        bound = self._by_topic.get(topic)
        if bound is None:
            bound = self._route(topic)
            if bound is None:
                self.rejected["unexpected_topic"] += 1
                # One log key for all strangers: a flood of distinct topics must not grow our memory.
                self._log.warning(
                    "<unexpected>",
                    "mqtt driver '%s': message on %r, which names no declared tag",
                    self.name,
                    topic[:200],
                )
                return
            self.routed += 1
        tag = bound.tag
        data = payload_bytes(payload)
        if retain and tag.payload == "number":
            self.rejected["retained_untimed"] += 1
            self._log.warning(
                tag.name,
                "mqtt driver '%s': ignored retained bare number on %s (tag %s): its age is unknown",
                self.name,
                topic[:200],
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
        # Keyed by tag, not topic: routes let unboundedly many topics reach one tag.
        self._log.warning(
            tag.name,
            "mqtt driver '%s': rejected payload on %s (tag %s), %s: %s",
            self.name,
            topic[:200],
            tag.name,
            result.reason,
            result.detail,
        )

    def _route(self, topic: str) -> BoundTag | None:
        for route in self._routes:
            name = route_tag_name(route, topic)
            if name is not None and name in self._routed:
                return self._routed[name]
        return None

    def _check_suback(self, granted: object) -> None:
        # SUBACK code 0x80 (or an MQTT 5 failure code) means the broker's ACL refused the topic:
        # the tag would never get data, and retrying with the same config cannot change that.
        codes = list(granted) if isinstance(granted, list | tuple) else []
        refused = [
            topic
            for topic, code in zip(self._subscriptions, codes, strict=False)
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


# -- routes (pure) ---------------------------------------------------------------------------------

_TEMPLATE_REF: Final = re.compile(r"\{(\d+)\}")


def wildcard_segments(topic_filter: str, topic: str) -> list[str] | None:
    """The topic levels under the filter's `+` wildcards, in order; None when it does not match.

    MQTT matching: `+` is exactly one level (possibly empty), a trailing `#` any number of levels
    including none (`a/#` matches `a`), and a filter starting with a wildcard does not match a
    `$` topic (`$SYS/...`).
    """
    levels = topic_filter.split("/")
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return None
    plus: list[str] = []
    for i, level in enumerate(levels):
        if level == "#":
            return plus
        if i >= len(parts):
            return None
        if level == "+":
            plus.append(parts[i])
        elif level != parts[i]:
            return None
    return plus if len(levels) == len(parts) else None


def route_tag_name(route: TopicRoute, topic: str) -> str | None:
    """The tag name `route` gives `topic`, or None when the route's filter does not match it."""
    plus = wildcard_segments(route.topic, topic)
    if plus is None:
        return None
    # The config checked every {N} against the filter's `+` count.
    return _TEMPLATE_REF.sub(lambda m: plus[int(m.group(1)) - 1], route.tag)


def route_can_name(route: TopicRoute, tag_name: str) -> bool:
    """Whether some topic matching `route` could name `tag_name` (a level holds no / + #)."""
    pattern = "".join(
        "[^/+#]*" if i % 2 else re.escape(piece) for i, piece in enumerate(_TEMPLATE_REF.split(route.tag))
    )
    return re.fullmatch(pattern, tag_name) is not None


def subscriptions(topics: Sequence[str], filters: Sequence[str]) -> list[str]:
    """Route filters, then the exact topics no filter covers; each once, in config order.

    A topic matched by two subscriptions of one client may be delivered twice (mosquitto does),
    so an exact topic a filter covers gets no subscription of its own.
    """
    subs = list(dict.fromkeys(filters))
    subs += [t for t in topics if not any(wildcard_segments(f, t) is not None for f in subs)]
    return subs


def _topic_problem(topic: str) -> str | None:
    if not topic:
        return "empty topic"
    if "+" in topic or "#" in topic:
        return f"topic {topic!r} has a wildcard; a tag needs one exact topic"
    if "\x00" in topic:
        return "topic contains a NUL character"
    if len(topic.encode("utf-8")) > 65535:
        return "topic longer than MQTT allows"
    return None
