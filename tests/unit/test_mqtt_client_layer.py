"""The MQTT client layer's pure parts: protocol fallback, client options, error classification.

The fallback from MQTT 5 to 3.1.1 is tested here as a pure decision only. A real broker that
refuses MQTT 5 is not available on these machines: the Debian mosquitto (2.0) speaks 5 and 3.1.1
and cannot be configured to refuse either, and the tests use no fake brokers. What a 3.1.1-only
broker sends back is pinned below through paho's own CONNACK decoder, so the codes the decision
keys on are the ones the client really reports.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt import ProtocolVersion
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import MQTTProtocolVersion

from drivers.mqtt_common import (
    PERSISTENT_SESSION_EXPIRY_S,
    REFUSED_PROTOCOL_VERSION,
    MqttTlsError,
    ProtocolSetting,
    client_options,
    connack_code,
    fallback_protocol,
    first_protocol,
    tls_context,
    tls_error_is_fatal,
    wrap_mqtt_error,
)
from gateway.config import MqttConnection, MqttTls
from gateway.errors import FatalDriverError, RetryableError
from tests.pki import make_pki

V5, V311 = ProtocolVersion.V5, ProtocolVersion.V311


def test_first_protocol() -> None:
    assert first_protocol("auto") is V5
    assert first_protocol("5") is V5
    assert first_protocol("3.1.1") is V311


@pytest.mark.parametrize("code", sorted(REFUSED_PROTOCOL_VERSION))
def test_auto_falls_back_once_on_a_refused_protocol_version(code: int) -> None:
    assert fallback_protocol("auto", V5, code) is V311
    # 3.1.1 is the floor: a refusal there stands.
    assert fallback_protocol("auto", V311, code) is None


@pytest.mark.parametrize("setting", ["5", "3.1.1"])
def test_a_forced_protocol_never_falls_back(setting: ProtocolSetting) -> None:
    for attempted in (V5, V311):
        for code in REFUSED_PROTOCOL_VERSION:
            assert fallback_protocol(setting, attempted, code) is None


@pytest.mark.parametrize("code", [None, 0, 2, 4, 5, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A])
def test_other_refusals_do_not_fall_back(code: int | None) -> None:
    # A bad login or a busy server would be refused in 3.1.1 just the same.
    assert fallback_protocol("auto", V5, code) is None


def test_a_3_1_1_broker_refusing_mqtt5_is_reported_as_0x84() -> None:
    # A 3.1.1-only broker answers an MQTT 5 CONNECT with the 3.1.1 CONNACK 20 02 00 01. paho,
    # speaking 5, decodes it as reason 0x84; aiomqtt raises MqttConnectError with that code.
    connack = paho_packet.decode_connack(0x20, b"\x00\x01", MQTTProtocolVersion.MQTTv5)
    assert connack.reason.value == 0x84
    code = connack_code(MqttConnectError(connack.reason))
    assert code == 0x84
    assert fallback_protocol("auto", V5, code) is V311


def test_connack_code_of_other_errors_is_none() -> None:
    assert connack_code(aiomqtt.MqttError("Operation timed out")) is None
    assert connack_code(MqttConnectError(4)) == 4


def test_client_options_per_protocol() -> None:
    conn = MqttConnection(host="broker", port=8883, client_id="gw1", keepalive_s=15)
    v5 = client_options(conn, "unused")
    assert v5["protocol"] is V5
    assert (v5["hostname"], v5["port"], v5["identifier"], v5["keepalive"]) == ("broker", 8883, "gw1", 15)
    # paho refuses clean_session under MQTT 5; clean_start is its counterpart.
    assert "clean_session" not in v5
    assert v5["clean_start"] is True
    assert "properties" not in v5
    assert v5["tls_context"] is None

    persistent = client_options(conn, "unused", persistent_session=True)
    assert persistent["clean_start"] is False
    # Without an expiry an MQTT 5 session ends at disconnect and nothing would be queued.
    assert persistent["properties"].SessionExpiryInterval == PERSISTENT_SESSION_EXPIRY_S

    old = client_options(conn, "unused", protocol=V311, persistent_session=True)
    assert old["protocol"] is V311
    assert old["clean_session"] is False
    assert "clean_start" not in old
    assert "properties" not in old

    forced = client_options(MqttConnection(protocol="3.1.1"), "linegate-x")
    assert (forced["protocol"], forced["clean_session"], forced["identifier"]) == (V311, True, "linegate-x")


def test_client_options_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEGATE_TEST_MQTT_PW", "s3cret")
    conn = MqttConnection(username="gw", password_env="LINEGATE_TEST_MQTT_PW")
    options = client_options(conn, "id")
    assert (options["username"], options["password"]) == ("gw", "s3cret")
    monkeypatch.delenv("LINEGATE_TEST_MQTT_PW")
    with pytest.raises(FatalDriverError, match="LINEGATE_TEST_MQTT_PW"):
        client_options(conn, "id")


def test_tls_context_from_config(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ca = pki.ca_file
    ctx = tls_context(MqttTls(ca_file=str(ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)))
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    relaxed = tls_context(MqttTls(ca_file=str(ca), check_hostname=False))
    # Not checking the name still verifies the chain.
    assert (relaxed.check_hostname, relaxed.verify_mode) == (False, ssl.CERT_REQUIRED)
    assert client_options(MqttConnection(tls=MqttTls(ca_file=str(ca))), "id")["tls_context"] is not None


def test_unusable_tls_files_are_fatal(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate", encoding="ascii")
    with pytest.raises(FatalDriverError, match="TLS files"):
        tls_context(MqttTls(ca_file=str(garbage)))
    # A certificate with somebody else's key.
    mismatched = MqttTls(
        ca_file=str(pki.ca_file), cert_file=str(pki.client_cert), key_file=str(pki.server_key)
    )
    with pytest.raises(FatalDriverError, match="TLS files"):
        tls_context(mismatched)


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason  # set by OpenSSL on real errors
    return exc


@pytest.mark.parametrize(
    ("cause", "fatal"),
    [
        (ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate"), True),
        (_ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), True),
        (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), True),
        (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), True),
        (_ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED"), True),
        (_ssl_error("UNEXPECTED_EOF_WHILE_READING"), False),  # a broker restarting mid-handshake
        (_ssl_error("WRONG_VERSION_NUMBER"), False),  # e.g. a plain listener on that port
    ],
)
def test_tls_error_classification(cause: ssl.SSLError, fatal: bool) -> None:
    assert tls_error_is_fatal(cause) is fatal
    # As MqttConnector raises it (cause) and as aiomqtt does for connect() errors (context only).
    ours = MqttTlsError(f"TLS: {cause}")
    ours.__cause__ = cause
    theirs = aiomqtt.MqttError(str(cause))
    theirs.__context__ = cause
    theirs.__suppress_context__ = True
    for exc in (ours, theirs):
        wrapped = wrap_mqtt_error(exc, "mqtt driver 'iot'")
        assert isinstance(wrapped, FatalDriverError if fatal else RetryableError)
        assert "mqtt driver 'iot'" in str(wrapped)


@pytest.mark.parametrize(
    ("code", "fatal"),
    [
        (1, True),
        (2, True),
        (3, False),
        (4, True),
        (5, True),
        (0x84, True),
        (0x86, True),
        (0x88, False),
        (0x89, False),
    ],
)
def test_connack_classification(code: int, fatal: bool) -> None:
    wrapped = wrap_mqtt_error(MqttConnectError(code), "x")
    assert isinstance(wrapped, FatalDriverError if fatal else RetryableError)


def test_other_errors_are_retryable() -> None:
    assert isinstance(
        wrap_mqtt_error(aiomqtt.MqttError("[Errno 111] Connection refused"), "x"), RetryableError
    )
