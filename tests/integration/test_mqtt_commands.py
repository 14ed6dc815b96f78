"""The MQTT command channel against the shared real mosquitto.

Each test has its own topic prefix and client ids, and removes the channel's persistent session
from the broker when it is done. The handlers here are real `CommandHandler` implementations
(deny-all, or accept-and-record); the broker is never mocked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.mqtt_commands import MqttCommandChannel
from drivers.operator_topics import iso_ms
from gateway.commands import CommandLedger, CommandRequest, CommandResult, CommandStatus, ControlDisabled
from gateway.config import LineConfig
from tests.mqtt_helpers import (
    BrokerAddress,
    Subscriber,
    base_of,
    command,
    eventually,
    forget_sessions,
    mqtt_line_config,
    payload,
    publish,
    running_service,
)

pytestmark = pytest.mark.integration

SETPOINT = "shr.feed_rate_sp"
RESULT_KEYS = [
    "request_id",
    "setpoint",
    "status",
    "reason",
    "value",
    "readback",
    "duplicate",
    "decided_at",
    "code",
    "previous",
]


class Accepting:
    """A handler that accepts every command and reads back its value, recording each call."""

    def __init__(self) -> None:
        self.calls: list[CommandRequest] = []
        self.noted: list[CommandResult] = []

    def note(self, result: CommandResult) -> None:
        self.noted.append(result)

    async def handle(self, request: CommandRequest) -> CommandResult:
        self.calls.append(request)
        return CommandResult(
            request_id=request.request_id,
            setpoint=request.setpoint,
            status=CommandStatus.ACCEPTED,
            reason="written and read back",
            value=request.value,
            readback=request.value,
            decided_at=time.time(),
        )


class Exploding:
    """A handler that breaks its contract by raising."""

    def note(self, result: CommandResult) -> None:
        pass

    async def handle(self, request: CommandRequest) -> CommandResult:
        raise RuntimeError("boom")


@pytest.fixture
async def prefix(mosquitto: BrokerAddress) -> AsyncIterator[str]:
    name = f"cmd-{uuid.uuid4().hex[:10]}"
    yield name
    await forget_sessions(mosquitto, f"{name}-out-commands")


def channel_for(broker: BrokerAddress, prefix: str, handler: object) -> tuple[MqttCommandChannel, LineConfig]:
    config = mqtt_line_config(broker, prefix)
    assert config.outputs.mqtt is not None
    return MqttCommandChannel(config.outputs.mqtt, config, handler, CommandLedger()), config  # type: ignore[arg-type]


def set_topic(prefix: str, setpoint: str = SETPOINT) -> str:
    return f"{base_of(prefix)}/commands/{setpoint}/set"


def result_topic(prefix: str, setpoint: str = SETPOINT) -> str:
    return f"{base_of(prefix)}/commands/{setpoint}/result"


async def test_control_disabled_answers_every_command_rejected(mosquitto: BrokerAddress, prefix: str) -> None:
    channel, _ = channel_for(mosquitto, prefix, ControlDisabled())
    assert channel.identifier == f"{prefix}-out-commands"
    before = time.time()
    async with (
        Subscriber(mosquitto, f"{base_of(prefix)}/commands/#") as sub,
        running_service(channel),
    ):
        await publish(mosquitto, [(set_topic(prefix), command("r-1", 1.55, operator="jdoe"))])
        await eventually(lambda: len(sub.on(result_topic(prefix))) == 1, "the result")
    (message,) = sub.on(result_topic(prefix))
    assert not message.retain
    result = sub.json_on(result_topic(prefix))[0]
    assert list(result) == RESULT_KEYS
    assert result | {"decided_at": None} == {
        "request_id": "r-1",
        "setpoint": SETPOINT,
        "status": "rejected",
        "reason": "control disabled: this gateway does not write setpoints",
        "value": 1.55,
        "readback": None,
        "duplicate": False,
        "decided_at": None,
        "code": "control_disabled",
        "previous": None,
    }
    assert iso_ms(before - 1) <= result["decided_at"] <= iso_ms(time.time())
    assert (channel.received, channel.executed, channel.duplicates, channel.malformed) == (1, 1, 0, 0)


async def test_a_repeated_request_id_is_answered_from_the_ledger(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    handler = Accepting()
    channel, _ = channel_for(mosquitto, prefix, handler)
    async with Subscriber(mosquitto, result_topic(prefix)) as sub, running_service(channel):
        issued = "2026-01-05T12:00:00+01:00"
        await publish(
            mosquitto, [(set_topic(prefix), command("r-1", 2.0, operator="jdoe", issued_at=issued))]
        )
        await publish(mosquitto, [(set_topic(prefix), command("r-1", 3.0))])  # same id, other value
        await publish(mosquitto, [(set_topic(prefix), command("r-2", 4.0, issued_at=1767614400))])
        await eventually(lambda: len(sub.on(result_topic(prefix))) == 3, "three results")
    first, again, other = sub.json_on(result_topic(prefix))
    assert [c.request_id for c in handler.calls] == ["r-1", "r-2"]
    assert (handler.calls[0].operator, handler.calls[0].issued_at) == ("jdoe", 1767610800.0)
    assert handler.calls[1].issued_at == 1767614400.0
    assert (first["status"], first["readback"], first["duplicate"]) == ("accepted", 2.0, False)
    # The first result again, word for word but for the flag: value 2.0, not the resent 3.0.
    assert again == first | {"duplicate": True}
    assert (other["request_id"], other["value"], other["duplicate"]) == ("r-2", 4.0, False)
    assert (channel.executed, channel.duplicates) == (2, 1)


async def test_malformed_commands_are_refused_and_counted(mosquitto: BrokerAddress, prefix: str) -> None:
    handler = Accepting()
    channel, _ = channel_for(mosquitto, prefix, handler)
    answered = [
        (command("m-1", value=None), "value: not a number"),
        (json.dumps({"request_id": "m-2"}).encode(), "value: missing"),
        (b'{"request_id": "m-3", "value": NaN}', "value: not finite"),
        (b'{"request_id": "m-4", "value": 1e999}', "value: not finite"),
        (command("m-5", value=True), "value: not a number"),
        (command("m-6", value="1.5"), "value: not a number"),
        (command("m-7", issued_at="yesterday"), "issued_at: not ISO 8601"),
        (command("m-8", issued_at="2026-01-05T12:00:00"), "issued_at: not ISO 8601"),  # no zone
        (command("m-9", operator=7), "operator: must be a string"),
        (command("m-10", ttl=5), "payload: unknown key 'ttl'"),
    ]
    # No request id the sender could recognise, and no response topic: counted, never answered.
    unanswered = [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        command(None),
        command("x" * 129),
        json.dumps({"request_id": 7, "value": 1}).encode(),
        b"[" * 3000 + b"]" * 3000,  # nesting deeper than the JSON parser's recursion limit
        b"{" + b" " * 5000 + b"}",  # larger than a command can be
    ]
    async with Subscriber(mosquitto, f"{base_of(prefix)}/commands/#") as sub, running_service(channel):
        await publish(mosquitto, [(set_topic(prefix), p) for p, _ in answered])
        await publish(mosquitto, [(set_topic(prefix), p) for p in unanswered])
        # A bad setpoint name is still answered on its own result topic (a valid topic level).
        await publish(mosquitto, [(set_topic(prefix, "Bad Name"), command("m-11"))])
        await eventually(lambda: channel.received == len(answered) + len(unanswered) + 1, "every message")
        await eventually(lambda: len(sub.on(result_topic(prefix))) == len(answered), "the answers")
        await eventually(
            lambda: len(sub.on(result_topic(prefix, "Bad Name"))) == 1, "the bad setpoint's answer"
        )
    results = sub.json_on(result_topic(prefix))
    for result, (_, reason) in zip(results, answered, strict=True):
        assert result["status"] == "rejected"
        assert result["reason"].startswith(f"malformed command: {reason}"), result
        assert result["duplicate"] is False
    assert [r["request_id"] for r in results] == [f"m-{i}" for i in range(1, 11)]
    assert sub.json_on(result_topic(prefix, "Bad Name"))[0]["reason"].startswith(
        "malformed command: setpoint:"
    )
    assert handler.calls == []
    assert (channel.executed, channel.malformed) == (0, len(answered) + len(unanswered) + 1)
    assert channel.ignored == {"retained": 0, "unexpected_topic": 0, "queue_overflow": 0}


async def test_a_retained_command_acts_once_and_is_never_replayed(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    handler = Accepting()
    channel, _ = channel_for(mosquitto, prefix, handler)
    try:
        async with Subscriber(mosquitto, result_topic(prefix)) as sub:
            async with running_service(channel):
                # Delivered live (retain flag cleared by the broker): an ordinary command.
                await publish(mosquitto, [(set_topic(prefix), command("kept", 1.0))], retain=True)
                await eventually(lambda: len(sub.on(result_topic(prefix))) == 1, "its result")
            # On every later subscribe the broker replays it with the retain flag: ignored, counted.
            async with running_service(channel):
                await eventually(lambda: channel.ignored["retained"] == 1, "the replayed retained command")
        assert [c.request_id for c in handler.calls] == ["kept"]
        assert len(sub.on(result_topic(prefix))) == 1
        assert (channel.received, channel.executed, channel.malformed) == (2, 1, 0)
    finally:
        await publish(mosquitto, [(set_topic(prefix), b"")], retain=True)  # delete the retained command


async def test_mqtt5_response_topic_and_correlation_data(mosquitto: BrokerAddress, prefix: str) -> None:
    handler = Accepting()
    channel, _ = channel_for(mosquitto, prefix, handler)
    reply_topic = f"{prefix}/hmi/replies/{uuid.uuid4().hex[:6]}"
    v5 = aiomqtt.ProtocolVersion.V5

    def request_properties(response_topic: str, correlation: bytes | None) -> Properties:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        return props

    async with (
        Subscriber(mosquitto, reply_topic, f"{base_of(prefix)}/commands/#", protocol=v5) as sub,
        running_service(channel),
    ):
        assert channel.protocol == "5"
        # No request_id: the correlation data (hex) is the request id.
        await publish(
            mosquitto,
            [(set_topic(prefix), command(None, 1.25))],
            protocol=v5,
            properties=request_properties(reply_topic, b"\x00\x01hmi"),
        )
        # A request_id of its own wins; the correlation data is still echoed.
        await publish(
            mosquitto,
            [(set_topic(prefix), command("own-id", 1.5))],
            protocol=v5,
            properties=request_properties(reply_topic, b"corr-2"),
        )
        # Malformed, without any request id: answered on the response topic all the same.
        await publish(
            mosquitto,
            [(set_topic(prefix), b"{broken")],
            protocol=v5,
            properties=request_properties(reply_topic, None),
        )
        # A response topic inside the gateway's own tree is refused: the answer goes to .../result.
        await publish(
            mosquitto,
            [(set_topic(prefix), command("hijack", 9.0))],
            protocol=v5,
            properties=request_properties(f"{base_of(prefix)}/status", b"x"),
        )
        await eventually(lambda: len(sub.on(reply_topic)) == 3, "three replies on the response topic")
        await eventually(
            lambda: len(sub.on(result_topic(prefix))) == 1, "the refused response topic's answer"
        )
    first, second, broken = sub.on(reply_topic)
    correlations = [getattr(m.properties, "CorrelationData", None) for m in (first, second, broken)]
    assert correlations == [b"\x00\x01hmi", b"corr-2", None]
    a, b, c = (json.loads(payload(m)) for m in (first, second, broken))
    assert (a["request_id"], a["status"], a["readback"]) == (b"\x00\x01hmi".hex(), "accepted", 1.25)
    assert (b["request_id"], b["status"]) == ("own-id", "accepted")
    assert (c["request_id"], c["status"], c["reason"]) == (
        None,
        "rejected",
        "malformed command: payload: not JSON",
    )
    refused = sub.json_on(result_topic(prefix))[0]
    assert (refused["request_id"], refused["status"]) == ("hijack", "rejected")
    assert "inside the gateway's own topic tree" in refused["reason"]
    assert [c.request_id for c in handler.calls] == [b"\x00\x01hmi".hex(), "own-id"]
    assert sub.on(f"{base_of(prefix)}/status") == []


async def test_commands_sent_while_away_are_delivered_after_reconnect(
    mosquitto: BrokerAddress, prefix: str
) -> None:
    handler = Accepting()
    channel, _ = channel_for(mosquitto, prefix, handler)
    async with running_service(channel):
        pass  # the first connect creates the persistent session and its subscription
    async with Subscriber(mosquitto, result_topic(prefix)) as sub:
        # The gateway is away: the broker queues these QoS 1 commands in the channel's session.
        await publish(mosquitto, [(set_topic(prefix), command("away-1", 1.0))])
        await publish(mosquitto, [(set_topic(prefix), command("away-2", 2.0))])
        async with running_service(channel):  # the same object, as the runtime reconnects it
            await eventually(lambda: len(sub.on(result_topic(prefix))) == 2, "the queued commands' results")
            # A QoS 1 redelivery of the first (simulated by resending its id) is not run again.
            await publish(mosquitto, [(set_topic(prefix), command("away-1", 1.0))])
            await eventually(lambda: len(sub.on(result_topic(prefix))) == 3, "the duplicate's result")
    assert [c.request_id for c in handler.calls] == ["away-1", "away-2"]
    assert [r["duplicate"] for r in sub.json_on(result_topic(prefix))] == [False, False, True]


async def test_a_raising_handler_is_recorded_as_failed(mosquitto: BrokerAddress, prefix: str) -> None:
    channel, _ = channel_for(mosquitto, prefix, Exploding())
    async with Subscriber(mosquitto, result_topic(prefix)) as sub, running_service(channel):
        await publish(mosquitto, [(set_topic(prefix), command("e-1"))])
        await publish(mosquitto, [(set_topic(prefix), command("e-1"))])
        await eventually(lambda: len(sub.on(result_topic(prefix))) == 2, "two results")
    failed, again = sub.json_on(result_topic(prefix))
    assert (failed["status"], again["status"], again["duplicate"]) == ("failed", "failed", True)
    assert "boom" in failed["reason"]
    assert channel.executed == 1  # whether it wrote is unknown: it is never tried a second time
