"""Shared MQTT client plumbing for every MQTT client of the gateway.

The one place that knows how to connect to a configured broker (`MqttConnector`), so the sensor
input, the operator output and the command channel connect, fail and stop the same way:

* Protocol: MQTT 5 by default. With `connection.protocol = "auto"` a broker that refuses the
  protocol version (CONNACK 0x01 from a 3.1.1 broker, 0x84 from a 5 broker) is asked again at
  once with 3.1.1, and 3.1.1 is kept for the life of the connector (every later reconnect), so an
  old broker does not cost two connects per reconnect. `"5"` and `"3.1.1"` force one version. The
  decision is the pure function `fallback_protocol`.
* Sessions: `persistent_session` maps onto each protocol's own flags (3.1.1 clean_session; 5
  clean_start plus a Session Expiry Interval). paho refuses `clean_session` under MQTT 5, so
  callers pass `persistent_session` and never those flags themselves.
* TLS from `connection.tls`: the CA that verifies the broker, optionally our client certificate,
  hostname checking. The context is built at every connect, so renewed certificate files are
  picked up on the next reconnect without a restart.
* Login: username and the password from the environment variable `password_env`.
* Errors: `wrap_mqtt_error` maps aiomqtt errors onto the gateway's retry classes. Refusals that
  retrying with the same config cannot fix (bad login, client id, protocol version with no
  fallback left, a broker certificate our CA does not verify, a broker rejecting our client
  certificate) are `FatalDriverError`; everything else is `RetryableError`.

Also here: the Python 3.11 lost-cancel guard and rate-limited warnings, because a broker or a
sensor gone wrong can otherwise flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Literal

import aiomqtt
from aiomqtt import ProtocolVersion
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import MqttConnection, MqttTls
from gateway.errors import FatalDriverError, LinegateError, RetryableError

log = logging.getLogger(__name__)

ProtocolSetting = Literal["auto", "5", "3.1.1"]

# At most one log line per topic per this many seconds; counters carry the full numbers.
LOG_INTERVAL_S: Final = 60.0

# CONNACK codes meaning "this protocol version is not spoken here": 0x01 in a 3.1.1 CONNACK,
# 0x84 in a 5 one. paho reports a 3.1.1 broker's 0x01 answer to an MQTT 5 CONNECT as 0x84.
REFUSED_PROTOCOL_VERSION: Final = frozenset({0x01, 0x84})

# CONNACK codes that retrying cannot fix. MQTT 3.1.1: 1 protocol version, 2 client id, 4 bad
# login, 5 not authorised. MQTT 5: 0x84 protocol version, 0x85 client id, 0x86 bad login,
# 0x87 not authorised, 0x8A banned, 0x8C bad authentication method. (Server unavailable, busy,
# quota and rate limits stay retryable.) A protocol refusal only gets here when `auto` has no
# fallback left or the version was forced.
_FATAL_CONNACK: Final = frozenset({1, 2, 4, 5, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})

# TLS alerts by which a broker rejects our client certificate (OpenSSL reason names). Like a
# refused login, every identical handshake gets the same answer.
_FATAL_TLS_ALERTS: Final = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)

# MQTT 5 Session Expiry Interval for a persistent session: 0xFFFFFFFF is "never expires", which is
# what a 3.1.1 clean_session=False session does, so the protocol upgrade changes no semantics.
PERSISTENT_SESSION_EXPIRY_S: Final = 0xFFFFFFFF


class MqttTlsError(aiomqtt.MqttError):
    """The TLS layer failed while connecting; the `ssl.SSLError` is the `__cause__`.

    Raised by `MqttConnector` when the broker closes the TLS session before CONNACK (it refused
    our client certificate after a TLS 1.3 handshake): paho only logs that error, and aiomqtt
    would report a bare timeout 10 s later.
    """


# -- protocol choice (pure) ------------------------------------------------------------------------


def first_protocol(setting: ProtocolSetting) -> ProtocolVersion:
    """The protocol version of the first CONNECT for a `connection.protocol` setting."""
    return ProtocolVersion.V311 if setting == "3.1.1" else ProtocolVersion.V5


def fallback_protocol(
    setting: ProtocolSetting, attempted: ProtocolVersion, connack_code: int | None
) -> ProtocolVersion | None:
    """The protocol to try next after a refused CONNECT, or None when the refusal stands.

    Only `auto` falls back, only from 5 to 3.1.1, and only when the broker refused the protocol
    version itself; any other refusal (login, client id, ...) would be refused again in 3.1.1.
    """
    if setting == "auto" and attempted is ProtocolVersion.V5 and connack_code in REFUSED_PROTOCOL_VERSION:
        return ProtocolVersion.V311
    return None


def connack_code(exc: BaseException) -> int | None:
    """The CONNACK return/reason code of a refused connect, or None for any other error."""
    if not isinstance(exc, MqttConnectError):
        return None
    code = getattr(exc.rc, "value", exc.rc)
    return code if isinstance(code, int) else None


def protocol_name(protocol: ProtocolVersion) -> str:
    return {ProtocolVersion.V5: "5", ProtocolVersion.V311: "3.1.1"}.get(protocol, str(protocol))


# -- client options --------------------------------------------------------------------------------


def tls_context(tls: MqttTls, on_error: Callable[[ssl.SSLError], None] | None = None) -> ssl.SSLContext:
    """An `ssl.SSLContext` for `tls`: verify the broker with `ca_file`, present our certificate.

    `on_error` is told about every TLS error raised on sockets of this context (paho swallows
    those after the handshake). Raises `FatalDriverError` when a file cannot be loaded: the
    config names files this process cannot use, and retrying reads the same files.
    """
    try:
        # create_default_context: CERT_REQUIRED, TLS 1.2 minimum, the system's safe ciphers.
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        ctx.check_hostname = tls.check_hostname  # the chain is verified either way
        if tls.cert_file is not None:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise FatalDriverError(
            f"MQTT TLS files ({tls.ca_file}, {tls.cert_file}, {tls.key_file}): {exc}"
        ) from exc
    if on_error is not None:
        ctx.sslsocket_class = _recording_socket_class(on_error)
    return ctx


def client_options(
    conn: MqttConnection,
    default_identifier: str,
    *,
    protocol: ProtocolVersion | None = None,
    persistent_session: bool = False,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `aiomqtt.Client` from a connection config.

    `protocol` defaults to the config's first choice; `tls` to a context built from
    `conn.tls` (None without TLS). Session flags match the protocol (see the module docstring).
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
    if protocol is None:
        protocol = first_protocol(conn.protocol)
    if tls is None and conn.tls is not None:
        tls = tls_context(conn.tls)
    options: dict[str, Any] = {
        "hostname": conn.host,
        "port": conn.port,
        "username": conn.username,
        "password": password,
        "identifier": conn.client_id or default_identifier,
        "keepalive": conn.keepalive_s,
        "protocol": protocol,
        "tls_context": tls,
    }
    if protocol is ProtocolVersion.V5:
        # clean_start=False resumes the session; without an expiry interval an MQTT 5 session
        # would end at disconnect and the broker would queue nothing while we are away.
        options["clean_start"] = not persistent_session
        if persistent_session:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = PERSISTENT_SESSION_EXPIRY_S
            options["properties"] = properties
    else:
        options["clean_session"] = not persistent_session
    return options


# -- connecting ------------------------------------------------------------------------------------


class MqttConnector:
    """Connects aiomqtt clients for one configured connection, with protocol fallback and TLS.

    Keep one per driver object: it remembers the protocol the broker accepted across reconnects.
    """

    def __init__(self, conn: MqttConnection, identifier: str, *, persistent_session: bool = False) -> None:
        self.conn = conn
        self.identifier = identifier
        self.persistent_session = persistent_session
        self.protocol: ProtocolVersion = first_protocol(conn.protocol)
        self.fallbacks = 0  # times `auto` fell back to 3.1.1 (at most once per connector)

    @contextlib.asynccontextmanager
    async def connect(self, **client_kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
        """`async with connector.connect(will=...) as client:` a connected client.

        `client_kwargs` go to `aiomqtt.Client` (will, queue_type, ...), but not the options this
        class owns (host, login, protocol, session flags, TLS). Raises `aiomqtt.MqttError` like
        `aiomqtt.Client` does (and `FatalDriverError` for unusable TLS files or password env).
        """
        client = await self._connected_client(client_kwargs)
        try:
            yield client
        finally:
            await client.__aexit__(None, None, None)

    @contextlib.asynccontextmanager
    async def session(self, what: str, **client_kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
        """`connect`, with the error rules every MQTT client of the gateway follows.

        An `aiomqtt.MqttError` (connecting, or raised in the body) becomes the gateway's own
        error via `wrap_mqtt_error`, naming `what`. A cancel stays a cancel: when the disconnect
        that follows it fails, the cancel, not a retry, is what counts. The Python 3.11 lost
        cancel on connect is re-raised (`raise_if_cancel_swallowed`).
        """
        cancelled = False
        try:
            async with self.connect(**client_kwargs) as client:
                try:
                    raise_if_cancel_swallowed()
                    yield client
                except asyncio.CancelledError:
                    cancelled = True
                    raise
        except aiomqtt.MqttError as exc:
            if cancelled:
                raise asyncio.CancelledError from exc
            raise wrap_mqtt_error(exc, what) from exc

    async def _connected_client(self, client_kwargs: dict[str, Any]) -> aiomqtt.Client:
        loop = asyncio.get_running_loop()
        while True:
            tls_failed: asyncio.Future[ssl.SSLError] | None = None
            ctx = None
            if self.conn.tls is not None:
                tls_failed = loop.create_future()
                ctx = tls_context(self.conn.tls, _future_setter(loop, tls_failed))
            client = aiomqtt.Client(
                **client_options(
                    self.conn,
                    self.identifier,
                    protocol=self.protocol,
                    persistent_session=self.persistent_session,
                    tls=ctx,
                ),
                **client_kwargs,
            )
            try:
                await _enter(client, tls_failed)
            except MqttConnectError as exc:
                following = fallback_protocol(self.conn.protocol, self.protocol, connack_code(exc))
                if following is None:
                    raise
                log.warning(
                    "MQTT %s:%d refused protocol %s (%s); using %s from now on",
                    self.conn.host,
                    self.conn.port,
                    protocol_name(self.protocol),
                    exc,
                    protocol_name(following),
                )
                self.protocol = following
                self.fallbacks += 1
                continue
            # No lost-cancel check here: raising now would leak the connection. Callers check
            # first thing inside `async with`, where leaving disconnects.
            return client


async def _enter(client: aiomqtt.Client, tls_failed: asyncio.Future[ssl.SSLError] | None) -> None:
    """`client.__aenter__()`, cut short when the TLS layer fails before CONNACK."""
    if tls_failed is None:
        await client.__aenter__()
        return
    entering = asyncio.ensure_future(client.__aenter__())
    try:
        await asyncio.wait({entering, tls_failed}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # Cancelled: leave no connection behind, whether or not the CONNACK made it in time.
        if entering.done() and not entering.cancelled() and entering.exception() is None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        raise
    finally:
        if not entering.done():
            # The half-open client is dropped, never reused.
            entering.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await entering
    if not entering.cancelled() and entering.exception() is None:
        return
    if tls_failed.done():
        # The TLS error names the cause; aiomqtt's error would be a timeout or a bare string.
        raise MqttTlsError(f"TLS: {tls_failed.result()}") from tls_failed.result()
    entering.result()  # raises aiomqtt's error


def _future_setter(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[ssl.SSLError]
) -> Callable[[ssl.SSLError], None]:
    def record(exc: ssl.SSLError) -> None:
        def settle() -> None:
            if not fut.done():
                fut.set_result(exc)  # a result, not an exception: nobody may ever await it

        # The handshake runs in aiomqtt's executor thread, later reads on the loop's thread.
        loop.call_soon_threadsafe(settle)

    return record


def _recording_socket_class(record: Callable[[ssl.SSLError], None]) -> type[ssl.SSLSocket]:
    """An `SSLSocket` subclass reporting TLS errors to `record` before raising them as usual."""

    def note(exc: ssl.SSLError) -> None:
        # "Would block" is how a non-blocking TLS socket says "try again later", not a failure.
        if not isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError):
            record(exc)

    class _RecordingSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except ssl.SSLError as exc:
                note(exc)
                raise

        def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
            try:
                return super().recv(buflen, flags)
            except ssl.SSLError as exc:
                note(exc)
                raise

        def send(self, data: Any, flags: int = 0) -> int:
            try:
                return super().send(data, flags)
            except ssl.SSLError as exc:
                note(exc)
                raise

    return _RecordingSSLSocket


# -- errors ----------------------------------------------------------------------------------------


def tls_error_is_fatal(exc: ssl.SSLError) -> bool:
    """True when the handshake failed on trust: the same files give the same answer next time.

    Either we do not trust the broker (its certificate does not verify against our CA, or names
    another host) or the broker does not accept our client certificate (or its absence).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    return getattr(exc, "reason", None) in _FATAL_TLS_ALERTS


def _ssl_error_in_chain(exc: BaseException) -> ssl.SSLError | None:
    # aiomqtt re-raises connect() failures as MqttError(str(exc)) `from None`: the ssl error
    # survives only as __context__.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def wrap_mqtt_error(exc: aiomqtt.MqttError, what: str) -> LinegateError:
    """Map an aiomqtt error to the gateway's retry classes; the caller raises it `from exc`."""
    code = connack_code(exc)
    if code is not None and code in _FATAL_CONNACK:
        return FatalDriverError(f"{what}: broker refused the connection: {exc}")
    tls = _ssl_error_in_chain(exc)
    if tls is not None and tls_error_is_fatal(tls):
        return FatalDriverError(f"{what}: TLS refused: {tls}")
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


def payload_bytes(payload: object) -> bytes:
    """A message payload as bytes: paho hands out bytes, aiomqtt's type allows other shapes."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode("utf-8")
