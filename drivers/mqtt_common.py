"""Shared MQTT client plumbing for the MQTT input and operator output drivers.

The one place the MQTT connection options (host, login, client id, keepalive), the mapping of
aiomqtt errors onto the gateway's retry classes and the Python 3.11 lost-cancel guard live, so
both drivers connect, fail and stop the same way. Also: rate-limited warnings, because a broker
or a sensor gone wrong can otherwise flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from typing import Any, Final

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from gateway.config import MqttConnection
from gateway.errors import FatalDriverError, LinegateError, RetryableError

# At most one log line per topic per this many seconds; counters carry the full numbers.
LOG_INTERVAL_S: Final = 60.0

# CONNACK codes that retrying cannot fix: MQTT 3.1.1 (2, 4, 5) and their MQTT 5 equivalents.
_FATAL_CONNACK: Final = frozenset({2, 4, 5, 133, 134, 135})


def client_options(conn: MqttConnection, default_identifier: str) -> dict[str, Any]:
    """Keyword arguments for `aiomqtt.Client` from a connection config.

    Raises `FatalDriverError` when the password's environment variable is missing: the gateway
    should refuse to start rather than retry a login that cannot succeed.
    """
    password: str | None = None
    if conn.password_env is not None:
        password = os.environ.get(conn.password_env)
        if password is None:
            raise FatalDriverError(
                f"MQTT {conn.host}:{conn.port}: environment variable {conn.password_env} "
                "(connection.password_env) is not set"
            )
        if conn.username is None:
            raise FatalDriverError(
                f"MQTT {conn.host}:{conn.port}: connection.password_env is set but connection.username is not"
            )
    return {
        "hostname": conn.host,
        "port": conn.port,
        "username": conn.username,
        "password": password,
        "identifier": conn.client_id or default_identifier,
        "keepalive": conn.keepalive_s,
    }


def wrap_mqtt_error(exc: aiomqtt.MqttError, what: str) -> LinegateError:
    """Map an aiomqtt error to the gateway's retry classes; the caller raises it `from exc`."""
    if isinstance(exc, MqttConnectError):
        code = getattr(exc.rc, "value", exc.rc)
        if code in _FATAL_CONNACK:
            return FatalDriverError(f"{what}: broker refused the connection: {exc}")
    return RetryableError(f"{what}: {exc}")


def raise_if_cancel_swallowed() -> None:
    """Re-raise a cancellation that aiomqtt lost; call after each awaited aiomqtt operation.

    aiomqtt waits for CONNACK, SUBACK and PUBACK with `asyncio.wait_for`, which on Python 3.11
    returns the result instead of raising when the cancel and the acknowledgement arrive in the
    same loop iteration (CPython gh-86296, fixed in 3.12). The task would then run on forever
    after the runtime cancelled it. The task still counts the request (`cancelling()`), so
    honour it here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def random_identifier(name: str) -> str:
    """A client id for a driver without a configured one; random so two gateways on one broker
    never take over each other's session."""
    return f"linegate-{name}-{secrets.token_hex(4)}"


class RateLimitedLog:
    """Logs a warning per key at most once per `interval_s`, with the number suppressed since."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            self._logger.warning(msg + " (%d similar suppressed)", *args, suppressed)
        else:
            self._logger.warning(msg, *args)
