"""MQTT command channel: operators' setpoint commands in, their results out.

The transport only. What a command does (and whether it may) is the `CommandHandler`'s business;
until guarded control exists that is `gateway.commands.ControlDisabled`, which refuses all.

Contract (topic names from `drivers.operator_topics`):

    <base>/commands/<setpoint>/set      QoS 1, not retained, from the operator's client:
        {"request_id": "r-0142", "value": 1.55, "operator": "jdoe", "issued_at": "2026-01-05T12:00:00Z"}
        request_id   string of 1 to 128 characters, unique per intended change (required, except
                     under MQTT 5 with CorrelationData: then the data's hex stands in for it)
        value        number, finite (required)
        operator     string up to 128 characters (optional)
        issued_at    ISO 8601 with a time zone, or epoch seconds (optional here; guarded
                     control refuses a command without it)
        step         "set" (default), or "arm" then "execute" for a critical setpoint
        signature    hex HMAC-SHA256 of the command (`gateway.command_signing`), required for
                     operators with a key
        Other keys are refused: a field this gateway does not understand (a future expiry, say)
        must not be silently ignored on a command.
    <base>/commands/<setpoint>/result   QoS 1, not retained, or the MQTT 5 ResponseTopic of the
        command (with its CorrelationData echoed):
        {"request_id": "r-0142", "setpoint": "shr.feed_rate_sp", "status": "rejected",
         "reason": "control disabled: ...", "value": 1.55, "readback": null, "duplicate": false,
         "decided_at": "2026-01-05T12:00:00.120Z"}

Behaviour:

* None runs twice. A request id found in the `CommandLedger` gets its stored result again
  (`duplicate: true`) without reaching the handler: a QoS 1 redelivery after a reconnect, or an
  operator pressing the button twice.
* Commands sent while the gateway is away are not lost: the connection has its own stable client
  id (`connection.client_id` + "-commands", else `linegate-<site>-<line>-commands`) and a
  persistent session, so the broker queues QoS 1 commands and delivers them after a reconnect.
  paho acknowledges a command when it arrives, before the handler runs, so a gateway crash
  between the two loses that command (at most once: the operator sees no result and may resend,
  under the same request id).
* Commands are handled one at a time, in arrival order: two writes to one setpoint keep their
  order.
* Every message is counted: `received`; `executed` (handler calls); `duplicates`; `malformed`
  (refused before the handler, answered with a `rejected` result when a reply address is known:
  a request id or a response topic, else only counted and logged); `ignored[reason]` for messages
  that are no command at all (a retained message, which the broker replays on every subscribe;
  a topic outside the command tree from an old session; an incoming-queue overflow).
* A response topic is used only when it is a valid topic outside the gateway's own tree (except
  `<base>/commands/...` result topics) and off every sensor input topic: otherwise any client
  could make the gateway publish onto its own state or into its own inputs. Such a command is
  refused, on the default result topic.
* Results wait in a bounded outbox until the broker acknowledges them, so a result decided just
  as the connection drops goes out after the reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.mqtt_common import (
    MqttConnector,
    RateLimitedLog,
    payload_bytes,
    protocol_name,
    raise_if_cancel_swallowed,
)
from drivers.operator_topics import (
    COMMANDS,
    base_topic,
    command_filter,
    command_result_payload,
    command_result_topic,
    command_setpoint,
)
from gateway.commands import (
    CommandHandler,
    CommandLedger,
    CommandRequest,
    CommandResult,
    CommandStatus,
    CommandStep,
)
from gateway.config import TAG_NAME, LineConfig, MqttOutput
from gateway.errors import FatalDriverError, RetryableError

log = logging.getLogger(__name__)

# A command is a few dozen bytes; anything this large is not one and is not parsed.
MAX_COMMAND_BYTES: Final = 4096
MAX_REQUEST_ID: Final = 128
MAX_OPERATOR: Final = 128
MAX_SETPOINT: Final = 128
# Commands buffered between paho and the handler. Commands are rare; a full queue means a flood,
# whose newest messages are dropped (and counted) rather than growing memory without bound.
INCOMING_QUEUE_SIZE: Final = 1_000
# Results waiting for the broker; beyond this the oldest are dropped and counted.
OUTBOX_SIZE: Final = 10_000
COMMAND_KEYS: Final = frozenset({"request_id", "value", "operator", "issued_at", "step", "signature"})
MAX_SIGNATURE: Final = 256
IGNORE_REASONS: Final = ("retained", "unexpected_topic", "queue_overflow")
_TAG_NAME: Final = re.compile(TAG_NAME)


# -- parsing (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Malformed:
    """Why a command was refused before the handler, and its request id if one was found."""

    reason: str
    request_id: str | None


def parse_command(
    payload: bytes, setpoint: str, received_at: float, correlation_id: str | None = None
) -> CommandRequest | Malformed:
    """Decode one command payload. Never raises: every problem is a `Malformed` with a reason.

    `correlation_id` (the hex of MQTT 5 CorrelationData) is the request id when the payload
    has none; the payload's own `request_id` wins when both are present.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        return Malformed(f"payload: larger than {MAX_COMMAND_BYTES} bytes", correlation_id)
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Malformed("payload: not JSON", correlation_id)
    if not isinstance(data, dict):
        return Malformed("payload: not a JSON object", correlation_id)
    request_id: str | None = correlation_id
    if "request_id" in data:
        raw = data["request_id"]
        if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_REQUEST_ID:
            return Malformed(f"request_id: must be a string of 1 to {MAX_REQUEST_ID} characters", None)
        request_id = raw
    if request_id is None:
        return Malformed("request_id: missing", None)
    if len(request_id) > MAX_REQUEST_ID:  # correlation data longer than 64 bytes
        return Malformed(f"request_id: correlation data longer than {MAX_REQUEST_ID // 2} bytes", None)
    if len(setpoint) > MAX_SETPOINT or not _TAG_NAME.match(setpoint):
        return Malformed(f"setpoint: {setpoint[:100]!r} is not a setpoint name", request_id)
    unknown = sorted(str(k) for k in data if k not in COMMAND_KEYS)
    if unknown:
        return Malformed(f"payload: unknown key {unknown[0][:50]!r}", request_id)
    if "value" not in data:
        return Malformed("value: missing", request_id)
    value = _number(data["value"])
    if value is None:
        return Malformed("value: not a number", request_id)
    if not math.isfinite(value):
        return Malformed("value: not finite", request_id)
    operator = data.get("operator")
    if operator is not None and (not isinstance(operator, str) or len(operator) > MAX_OPERATOR):
        return Malformed(f"operator: must be a string of at most {MAX_OPERATOR} characters", request_id)
    issued_at: float | None = None
    if data.get("issued_at") is not None:
        issued_at = _time(data["issued_at"])
        if issued_at is None:
            return Malformed("issued_at: not ISO 8601 with a time zone, nor finite epoch seconds", request_id)
    step = data.get("step", CommandStep.SET.value)
    if step not in {s.value for s in CommandStep}:
        return Malformed(f"step: must be one of {[s.value for s in CommandStep]}", request_id)
    signature = data.get("signature")
    if signature is not None and (not isinstance(signature, str) or not 1 <= len(signature) <= MAX_SIGNATURE):
        return Malformed(f"signature: must be a string of 1 to {MAX_SIGNATURE} characters", request_id)
    return CommandRequest(
        request_id=request_id,
        setpoint=setpoint,
        value=value,
        operator=operator,
        issued_at=issued_at,
        received_at=received_at,
        step=CommandStep(step),
        signature=signature,
    )


def _number(x: object) -> float | None:
    # JSON true/false arrive as bool, a subclass of int: not a number to write to a setpoint.
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        return float(x)
    except OverflowError:  # an integer literal beyond float range
        return math.inf


def _time(x: object) -> float | None:
    if isinstance(x, str):
        if len(x) > 64:
            return None
        try:
            parsed = datetime.fromisoformat(x)
        except ValueError:
            return None
        # A time without a zone is ambiguous by hours; refuse it rather than guess.
        return parsed.timestamp() if parsed.tzinfo is not None else None
    t = _number(x)
    return t if t is not None and math.isfinite(t) else None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+` one level, trailing `#` any levels, `$` topics not by wildcards)."""
    levels = topic_filter.split("/")
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(levels) == len(parts)


def response_topic_problem(topic: str, base: str, input_filters: list[str]) -> str | None:
    """Why the gateway must not publish a result on `topic`, or None when it may."""
    if not topic or any(c in topic for c in "+#\x00") or len(topic.encode("utf-8")) > 65535:
        return "not a valid topic name"
    if topic.startswith("$"):
        return "a broker system topic"
    if topic_matches(command_filter(base), topic):
        return "a command topic"
    if (topic == base or topic.startswith(base + "/")) and not topic.startswith(f"{base}/{COMMANDS}/"):
        return "inside the gateway's own topic tree"
    if any(topic_matches(f, topic) for f in input_filters):
        return "a sensor input topic"
    return None


def channel_identifier(settings: MqttOutput, config: LineConfig) -> str:
    """The command channel's client id: stable per line, so its persistent session is found again."""
    if settings.connection.client_id is not None:
        return f"{settings.connection.client_id}-commands"
    return f"linegate-{config.line.site}-{config.line.name}-commands"


# -- the channel -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    topic: str
    payload: bytes
    correlation: bytes | None


class MqttCommandChannel:
    """`gateway.ports.Service`: receives commands over MQTT, answers each with its result."""

    def __init__(
        self, settings: MqttOutput, config: LineConfig, handler: CommandHandler, ledger: CommandLedger
    ) -> None:
        self.name = "commands"
        self.settings = settings
        self.handler = handler
        self.ledger = ledger
        self.base = base_topic(config, settings.prefix)
        self.filter = command_filter(self.base)
        self.identifier = channel_identifier(settings, config)
        # `client_options` prefers the connection's client_id to the identifier it is given, and
        # the output already uses that id: a second client with it would take over its session.
        connection = settings.connection.model_copy(update={"client_id": self.identifier})
        self._connector = MqttConnector(connection, self.identifier, persistent_session=True)
        # Sensor input topics and route filters: a response topic there would feed our own inputs.
        self._input_filters = [t.topic for t in config.tags if t.topic is not None]
        for driver in config.drivers.values():
            if driver.type == "mqtt":
                self._input_filters += [r.topic for r in driver.routes]
        self._outbox: deque[_Reply] = deque()
        self._log = RateLimitedLog(log)
        self.received = 0
        self.executed = 0  # handler calls
        self.duplicates = 0  # answered from the ledger
        self.malformed = 0  # refused before the handler
        self.ignored: dict[str, int] = dict.fromkeys(IGNORE_REASONS, 0)
        self.replies = 0  # results acknowledged by the broker
        self.replies_dropped = 0  # results lost to a full outbox
        self.granted_qos: int | None = None

    @property
    def protocol(self) -> str:
        """The MQTT version in use (after any fallback): "5" or "3.1.1"."""
        return protocol_name(self._connector.protocol)

    @property
    def pending_replies(self) -> int:
        return len(self._outbox)

    async def run(self, on_connected: Callable[[], None]) -> None:
        conn = self.settings.connection
        what = f"mqtt command channel ({conn.host}:{conn.port})"
        session = self._connector.session(
            what, queue_type=self._queue_class(), max_queued_incoming_messages=INCOMING_QUEUE_SIZE
        )
        async with session as client:
            # Subscribed on every connect: after a broker restart without persistence the
            # session, and with it the subscription, is gone.
            granted = await client.subscribe(self.filter, qos=1)
            raise_if_cancel_swallowed()
            self._check_suback(granted)
            on_connected()
            await self._flush(client)  # results decided as the last connection dropped
            async for message in client.messages:
                await self.handle(client, message)
        # `client.messages` only ends by raising; be explicit should that ever change.
        raise RetryableError(f"{what}: message stream ended")

    async def handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Decide on one message and publish its result (if it gets one). Raises only
        `aiomqtt.MqttError` from publishing; the result then waits in the outbox."""
        self.received += 1
        now = time.time()
        topic = message.topic.value
        setpoint = command_setpoint(self.base, topic)
        if setpoint is None:
            self._ignore("unexpected_topic", "message on %r, which is no command topic", topic[:200])
            return
        if message.retain:
            # The broker replays a retained command on every subscribe: it is no new request.
            self._ignore("retained", "ignored a retained command on %r", topic[:200])
            return
        props = message.properties
        response_topic: str | None = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation: bytes | None = getattr(props, "CorrelationData", None) if props is not None else None
        correlation_id = bytes(correlation).hex() if correlation else None
        parsed = parse_command(payload_bytes(message.payload), setpoint, now, correlation_id)
        reply_to: str | None = None
        if response_topic is not None:
            problem = response_topic_problem(response_topic, self.base, self._input_filters)
            if problem is None:
                reply_to = response_topic
            else:
                request_id = parsed.request_id
                parsed = Malformed(f"response topic {response_topic[:100]!r} refused: {problem}", request_id)
        if isinstance(parsed, Malformed):
            self.malformed += 1
            self._log.warning(
                "malformed",
                "command on %s refused: %s (request id %s)",
                topic[:200],
                parsed.reason,
                parsed.request_id,
            )
            result = CommandResult(
                request_id=parsed.request_id or "",
                setpoint=setpoint,
                status=CommandStatus.REJECTED,
                reason=f"malformed command: {parsed.reason}",
                decided_at=now,
            )
            self._note(result)
            if reply_to is None and parsed.request_id is None:
                return  # nowhere the sender would recognise an answer: counted and logged only
        else:
            result = await self._decide(parsed)
        try:
            self._queue_reply(result, setpoint, reply_to, correlation)
        except ValueError as exc:  # a setpoint no result topic can name; brokers refuse such topics
            self._log.warning("reply", "command %s: no reply possible: %s", result.request_id, exc)
            return
        await self._flush(client)

    async def _decide(self, request: CommandRequest) -> CommandResult:
        stored = self.ledger.seen(request.request_id)
        if stored is not None:
            self.duplicates += 1
            self._note(stored)
            return stored
        self.executed += 1
        try:
            result = await self.handler.handle(request)
        except Exception as exc:
            # The contract says handlers do not raise; if one does, whether it wrote is unknown.
            # Recorded as failed all the same, so a resend cannot write a second time.
            log.exception("command %s: handler failed", request.request_id)
            result = CommandResult(
                request_id=request.request_id,
                setpoint=request.setpoint,
                status=CommandStatus.FAILED,
                reason=f"internal error: {exc!r}"[:500],
                value=request.value,
                decided_at=time.time(),
            )
        self.ledger.record(result)
        return result

    def _note(self, result: CommandResult) -> None:
        try:
            self.handler.note(result)
        except Exception:
            # The audit trail failing must be loud, but it cannot un-answer a command.
            log.exception("command %s: recording the result failed", result.request_id)

    def _queue_reply(
        self, result: CommandResult, setpoint: str, reply_to: str | None, correlation: bytes | None
    ) -> None:
        payload = command_result_payload(result, now=time.time())
        if reply_to is None:
            reply = _Reply(command_result_topic(self.base, setpoint), payload, None)
        else:
            reply = _Reply(reply_to, payload, bytes(correlation) if correlation else None)
        if len(self._outbox) >= OUTBOX_SIZE:
            self._outbox.popleft()
            self.replies_dropped += 1
            self._log.warning("outbox", "command results outbox full: dropped the oldest result")
        self._outbox.append(reply)

    async def _flush(self, client: aiomqtt.Client) -> None:
        while self._outbox:
            reply = self._outbox[0]
            properties = None
            if reply.correlation is not None:
                properties = Properties(PacketTypes.PUBLISH)
                properties.CorrelationData = reply.correlation
            await client.publish(reply.topic, reply.payload, qos=1, retain=False, properties=properties)
            raise_if_cancel_swallowed()
            self._outbox.popleft()
            self.replies += 1

    def _ignore(self, reason: str, msg: str, *args: object) -> None:
        self.ignored[reason] += 1
        self._log.warning(reason, "command channel: " + msg, *args)

    def _check_suback(self, granted: object) -> None:
        codes = list(granted) if isinstance(granted, list | tuple) else []
        code = getattr(codes[0], "value", codes[0]) if codes else None
        if isinstance(code, int) and code >= 0x80:
            # The broker's ACL refuses the subscription: no command can ever arrive.
            raise FatalDriverError(f"command channel: broker refused the subscription to {self.filter}")
        self.granted_qos = code if isinstance(code, int) else None
        if self.granted_qos == 0:
            self._log.warning(
                "qos", "command channel: broker granted QoS 0: commands sent while disconnected are lost"
            )

    def _queue_class(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        channel = self

        class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's incoming queue; a full one drops the newest command and counts it."""

            def put_nowait(self, item: aiomqtt.Message) -> None:
                if self.full():
                    channel.received += 1
                    channel._ignore("queue_overflow", "incoming queue full: dropped a command")
                    return
                super().put_nowait(item)

        return _CountingQueue
