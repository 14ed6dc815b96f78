"""Opening an asyncua client session from an `OpcUaDriver` config: security, identity, timeouts.

Every OPC-UA user in the gateway (the input driver, the setpoint writer, `linegate browse`)
connects through `open_session`, so security and error mapping are the same everywhere. Errors
come out as gateway errors: `RetryableError` for what may heal (server down, certificate not
trusted yet: `linegate certs trust` fixes it without a restart), `FatalDriverError` for
configuration that retrying cannot fix.

We never use asyncua's `auto_reconnect`: the gateway's own supervisor (the runtime's retry
with backoff and jitter) decides when to reconnect and recreates the subscriptions, so a lost
session is one code path, counted, and never silent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from asyncua import Client, ua

from drivers.opcua_security import configure_security
from gateway.config import OpcUaDriver
from gateway.errors import FatalDriverError, RetryableError

log = logging.getLogger(__name__)

# What asyncua raises when a server is unreachable, hangs, or closes the connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError, ua.UaError)
# The server refused who we are: retrying with the same config and environment cannot help.
IDENTITY_REFUSALS: tuple[type[BaseException], ...] = (
    ua.uaerrors.BadUserAccessDenied,
    ua.uaerrors.BadIdentityTokenRejected,
    ua.uaerrors.BadIdentityTokenInvalid,
)


def make_client(settings: OpcUaDriver) -> Client:
    # watchdog_intervall: asyncua's own keep-alive; our heartbeat is the one that decides.
    return Client(
        settings.url, timeout=settings.request_timeout_s, watchdog_intervall=max(settings.heartbeat_s, 1.0)
    )


@contextlib.asynccontextmanager
async def open_session(settings: OpcUaDriver, who: str) -> AsyncIterator[Client]:
    """A connected, secured client; disconnected on exit whatever happened."""
    client = make_client(settings)
    await configure_security(client, settings, who)
    try:
        await client.connect()
    except IDENTITY_REFUSALS as exc:
        with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
            await client.disconnect()
        raise FatalDriverError(
            f"opcua {who}: {settings.url} refused our identity ({settings.security.identity}): {describe(exc)}"
        ) from exc
    except CONNECTION_ERRORS as exc:
        with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):
            await client.disconnect()
        raise RetryableError(f"opcua {who}: cannot connect to {settings.url}: {describe(exc)}") from exc
    try:
        yield client
    finally:
        try:
            await client.disconnect()
        except (*CONNECTION_ERRORS, RuntimeError) as exc:  # the server may already be gone
            log.debug("opcua %s: disconnect: %s", who, exc)


def describe(exc: BaseException) -> str:
    """A one-line reason: the status name for OPC-UA errors, else the exception's text."""
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__} ({exc})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
