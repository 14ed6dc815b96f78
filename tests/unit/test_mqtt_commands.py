"""The command channel's pure parts: command parsing, response-topic policy, topic matching."""

from __future__ import annotations

import json

import pytest

from drivers.mqtt_commands import (
    MAX_COMMAND_BYTES,
    Malformed,
    channel_identifier,
    parse_command,
    response_topic_problem,
    topic_matches,
)
from gateway.commands import CommandRequest
from gateway.config import MqttConnection, MqttOutput
from tests.mqtt_helpers import mqtt_line_config

SP = "shr.feed_rate_sp"
NOW = 1_767_614_400.0  # 2026-01-05T12:00:00Z
BASE = "linegate/site/area/line1"


def parse(body: object, correlation_id: str | None = None, setpoint: str = SP) -> CommandRequest | Malformed:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_command(raw, setpoint, NOW, correlation_id)


def test_a_complete_command() -> None:
    body = {"request_id": "r-1", "value": 1.55, "operator": "jdoe", "issued_at": "2026-01-05T11:59:58Z"}
    assert parse(body) == CommandRequest("r-1", SP, 1.55, "jdoe", NOW - 2, received_at=NOW)
    assert parse({"request_id": "r-1", "value": 2, "issued_at": NOW - 1.5}) == CommandRequest(
        "r-1", SP, 2.0, None, NOW - 1.5, received_at=NOW
    )
    assert (
        parse({"request_id": "r", "value": 0, "issued_at": "2026-01-05T12:00:00+01:00"}).issued_at
        == NOW - 3600
    )  # type: ignore[union-attr]


def test_correlation_data_stands_in_for_a_missing_request_id() -> None:
    assert parse({"value": 1.0}, correlation_id="00ff").request_id == "00ff"
    assert parse({"value": 1.0, "request_id": "own"}, correlation_id="00ff").request_id == "own"
    assert parse({"value": 1.0}) == Malformed("request_id: missing", None)
    assert parse({"value": 1.0}, correlation_id="ab" * 65) == Malformed(
        "request_id: correlation data longer than 64 bytes", None
    )


@pytest.mark.parametrize(
    ("body", "reason", "request_id"),
    [
        (b"{nope", "payload: not JSON", None),
        (b"\xff\xfe\x00", "payload: not JSON", None),
        (b"[" * 100_000, f"payload: larger than {MAX_COMMAND_BYTES} bytes", None),
        (b"[" * 4000, "payload: not JSON", None),  # deeper than the parser's recursion limit
        (b"42", "payload: not a JSON object", None),
        ({"request_id": "", "value": 1}, "request_id: must be a string of 1 to 128 characters", None),
        ({"request_id": "x" * 129, "value": 1}, "request_id: must be a string of 1 to 128 characters", None),
        ({"request_id": 5, "value": 1}, "request_id: must be a string of 1 to 128 characters", None),
        ({"request_id": "r"}, "value: missing", "r"),
        ({"request_id": "r", "value": None}, "value: not a number", "r"),
        ({"request_id": "r", "value": "1"}, "value: not a number", "r"),
        ({"request_id": "r", "value": False}, "value: not a number", "r"),
        ({"request_id": "r", "value": [1]}, "value: not a number", "r"),
        (b'{"request_id": "r", "value": Infinity}', "value: not finite", "r"),
        (b'{"request_id": "r", "value": -1e400}', "value: not finite", "r"),
        (b'{"request_id": "r", "value": 1' + b"0" * 400 + b"}", "value: not finite", "r"),
        (
            {"request_id": "r", "value": 1, "operator": 1},
            "operator: must be a string of at most 128 characters",
            "r",
        ),
        (
            {"request_id": "r", "value": 1, "operator": "o" * 129},
            "operator: must be a string of at most 128 characters",
            "r",
        ),
        (
            {"request_id": "r", "value": 1, "issued_at": "soon"},
            "issued_at: not ISO 8601 with a time zone, nor finite epoch seconds",
            "r",
        ),
        (
            {"request_id": "r", "value": 1, "issued_at": "2026-01-05T12:00:00"},
            "issued_at: not ISO 8601 with a time zone, nor finite epoch seconds",
            "r",
        ),
        (
            {"request_id": "r", "value": 1, "issued_at": True},
            "issued_at: not ISO 8601 with a time zone, nor finite epoch seconds",
            "r",
        ),
        ({"request_id": "r", "value": 1, "expires": 5}, "payload: unknown key 'expires'", "r"),
    ],
)
def test_malformed_commands_name_their_problem(body: object, reason: str, request_id: str | None) -> None:
    assert parse(body) == Malformed(reason, request_id)


def test_a_setpoint_that_is_no_name_is_refused_with_the_request_id() -> None:
    assert parse({"request_id": "r", "value": 1}, setpoint="Bad Name") == Malformed(
        "setpoint: 'Bad Name' is not a setpoint name", "r"
    )


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/x", "$SYS/x", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("hmi/replies/42", None),
        (f"{BASE}/commands/x/result", None),  # results may go to the command tree
        ("", "not a valid topic name"),
        ("hmi/+/x", "not a valid topic name"),
        ("hmi/#", "not a valid topic name"),
        ("$SYS/x", "a broker system topic"),
        (f"{BASE}/commands/x/set", "a command topic"),
        (f"{BASE}/status", "inside the gateway's own topic tree"),
        (f"{BASE}/signals/gas.h2", "inside the gateway's own topic tree"),
        (BASE, "inside the gateway's own topic tree"),
        ("plant/line1/gas/h2", "a sensor input topic"),
        ("plant/line1/vib/x", "a sensor input topic"),
    ],
)
def test_response_topic_policy(topic: str, problem: str | None) -> None:
    assert response_topic_problem(topic, BASE, ["plant/line1/gas/h2", "plant/+/vib/+"]) == problem


def test_channel_identifier_is_stable_per_line() -> None:
    class _Broker:
        host, port = "127.0.0.1", 1883

    config = mqtt_line_config(_Broker(), "p")
    assert config.outputs.mqtt is not None
    assert channel_identifier(config.outputs.mqtt, config) == "p-out-commands"
    assert (
        channel_identifier(MqttOutput(connection=MqttConnection()), config)
        == "linegate-test-site-line1-commands"
    )
