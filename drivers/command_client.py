"""The operator's side of the command channel: send one setpoint command, wait for its result.

Used by `linegate command` (and the tests). The result topic is subscribed before the command
is published, so a fast answer cannot be missed; the result is matched on the request id.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.mqtt_common import MqttConnector, payload_bytes, raise_if_cancel_swallowed
from drivers.operator_topics import COMMANDS, base_topic, command_result_topic
from gateway.command_signing import sign
from gateway.commands import CommandStep
from gateway.config import LineConfig


@dataclass(frozen=True, slots=True)
class Command:
    setpoint: str
    value: float
    operator: str
    step: CommandStep = CommandStep.SET
    request_id: str = ""  # empty: a fresh random id
    issued_at: float | None = None  # None: now


def command_payload(cmd: Command, key: bytes | None) -> dict[str, Any]:
    """The JSON object for `cmd`, signed with `key` when given."""
    request_id = cmd.request_id or f"cli-{secrets.token_hex(8)}"
    issued_at = cmd.issued_at if cmd.issued_at is not None else time.time()
    payload: dict[str, Any] = {
        "request_id": request_id,
        "value": cmd.value,
        "operator": cmd.operator,
        "issued_at": datetime.fromtimestamp(issued_at, UTC).isoformat(timespec="milliseconds"),
        "step": str(cmd.step),
    }
    if key is not None:
        # Sign what the gateway will parse: the issue time at millisecond resolution.
        parsed_at = datetime.fromisoformat(payload["issued_at"]).timestamp()
        payload["signature"] = sign(
            key, request_id, cmd.setpoint, cmd.value, cmd.operator, parsed_at, cmd.step
        )
    return payload


async def send_command(
    config: LineConfig, cmd: Command, *, key: bytes | None, timeout_s: float
) -> dict[str, Any]:
    """Publish `cmd` on its command topic and return the gateway's result payload.

    Raises `TimeoutError` when no result arrives in `timeout_s`, and the gateway's
    `RetryableError`/`FatalDriverError` when the broker cannot be used.
    """
    settings = config.outputs.mqtt
    if settings is None:
        raise ValueError("the config has no [outputs.mqtt]: there is no command channel")
    base = base_topic(config)
    payload = command_payload(cmd, key)
    connector = MqttConnector(settings.connection, f"linegate-command-{secrets.token_hex(4)}")
    async with connector.session("command client") as client:
        await client.subscribe(command_result_topic(base, cmd.setpoint), qos=1)
        raise_if_cancel_swallowed()
        await client.publish(f"{base}/{COMMANDS}/{cmd.setpoint}/set", json.dumps(payload), qos=1)
        raise_if_cancel_swallowed()
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                try:
                    result = json.loads(payload_bytes(message.payload))
                except ValueError:
                    continue
                if isinstance(result, dict) and result.get("request_id") == payload["request_id"]:
                    return result
    raise TimeoutError("the broker closed the subscription before a result arrived")


__all__ = ["Command", "command_payload", "send_command"]
