"""Reads a gateway's retained state from its broker for `linegate status`.

Subscribes to `<base>/status`, `<base>/status/metrics` and `<base>/alarms/active/+`; the broker
sends the retained messages at once. Reading ends once status and metrics are in and the burst
has gone quiet for a moment, or at the timeout (what arrived by then is judged).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from drivers.mqtt_common import MqttConnector, payload_bytes, raise_if_cancel_swallowed
from drivers.operator_topics import ALARMS_ACTIVE, base_topic, status_topic
from gateway.config import LineConfig
from gateway.status_report import StatusSnapshot

# After status and metrics, the retained alarms follow within the same burst.
QUIET_S = 0.3


async def read_status(config: LineConfig, *, timeout_s: float) -> StatusSnapshot:
    """The retained state; raises the gateway's `RetryableError`/`FatalDriverError` when the
    broker cannot be used."""
    settings = config.outputs.mqtt
    if settings is None:
        raise ValueError("the config has no [outputs.mqtt]: the gateway publishes no status")
    base = base_topic(config)
    status, metrics = status_topic(base), f"{status_topic(base)}/metrics"
    alarms_prefix = f"{base}/{ALARMS_ACTIVE}/"
    snap = StatusSnapshot()
    connector = MqttConnector(settings.connection, f"linegate-status-{secrets.token_hex(4)}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with connector.session("status client") as client:
        for topic in (status, metrics, alarms_prefix + "+"):
            await client.subscribe(topic, qos=1)
            raise_if_cancel_swallowed()
        messages = aiter(client.messages)
        while True:
            complete = snap.status is not None and snap.metrics is not None
            wait = min(QUIET_S, deadline - loop.time()) if complete else deadline - loop.time()
            if wait <= 0:
                break
            try:
                message = await asyncio.wait_for(anext(messages), wait)
            except TimeoutError:
                if complete or loop.time() >= deadline:
                    break
                continue
            payload = _json(payload_bytes(message.payload))
            topic = str(message.topic)
            if payload is None:
                continue
            if topic == status:
                snap.status = payload
            elif topic == metrics:
                snap.metrics = payload
            elif topic.startswith(alarms_prefix):
                snap.alarms[topic.removeprefix(alarms_prefix)] = payload
    return snap


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


__all__ = ["read_status"]
