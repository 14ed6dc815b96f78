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

import asyncio
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


# How long the server keeps our session after the connection drops. One minute: long enough to
# survive a network blip, short enough not to pile up sessions on a PLC (many allow only a few).
SESSION_TIMEOUT_MS = 60_000
# A polite CloseSession on the way out gets this long.
DISCONNECT_TIMEOUT_S = 2.0


def make_client(settings: OpcUaDriver) -> Client:
    # watchdog_intervall: asyncua's own probe (its timeout equals its period). Our heartbeat is
    # the one that decides, so asyncua's must not give up sooner than ours: on a busy machine a
    # 1 s probe ended healthy sessions.
    client = Client(
        settings.url,
        timeout=settings.request_timeout_s,
        watchdog_intervall=max(settings.heartbeat_timeout_s, 1.0),
    )
    client.session_timeout = SESSION_TIMEOUT_MS
    return client


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
    except asyncio.CancelledError:
        raise  # a stop: the server is fine, close the session politely below
    except BaseException:
        # The session failed (a hung or vanished server): a CloseSession would wait a whole
        # request timeout for an answer that will not come, so cut the socket first.
        abandon(client)
        raise
    finally:
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await client.disconnect()
        except (*CONNECTION_ERRORS, RuntimeError) as exc:  # the server may already be gone
            abandon(client)
            log.debug("opcua %s: disconnect: %s", who, describe(exc))


def abandon(client: Client) -> None:
    """Close the client's socket now. `Client.disconnect_socket()` does nothing once asyncua's
    own probe has flagged the loss, hence the protocol's."""
    protocol = client.uaclient.protocol
    if protocol is not None and protocol.transport is not None:
        protocol.disconnect_socket()


def describe(exc: BaseException) -> str:
    """A one-line reason: the status name for OPC-UA errors, else the exception's text."""
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__} ({exc})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
