"""MQTT over TLS against a real mosquitto: CA and certificates made here, client certificates required.

The PKI (tests/pki.py) is a CA, a server certificate for 127.0.0.1/localhost and a client
certificate; a second, unrelated CA plays the stranger. The broker is `Mosquitto(tls=...)` with
`require_certificate true`.

Refusals are `FatalDriverError`, as a refused login is: the broker rejecting our certificate (or
its absence), or our CA not verifying the broker's, gives the same answer to every identical
handshake, so retrying with backoff would only turn a configuration defect into an endless
reconnect loop. The runtime then stops that one driver and marks its tags STALE; the rest of the
gateway runs on.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from drivers.mqtt_input import MqttInputDriver
from gateway.config import MqttConnection, MqttTls, Tag
from gateway.config import MqttInputDriver as MqttInputSettings
from gateway.errors import FatalDriverError
from gateway.ports import BoundTag
from gateway.samples import Quality
from simulators.local_services import Mosquitto, MosquittoTls
from tests.mqtt_helpers import T0, ListSink, eventually, running
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.integration

# aiomqtt gives up on a CONNACK after 10 s; a refusal must be reported well before that.
PROMPT_S = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "linegate-test")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second PKI whose CA signed nothing the broker uses."""
    return make_pki(tmp_path_factory.mktemp("stranger"), "stranger")


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[Mosquitto]:
    # No probe certificate: readiness is the completed TLS handshake (the path for brokers that
    # require client certificates the fixture does not have).
    tls = MosquittoTls(pki.ca_file, pki.server_cert, pki.server_key, require_certificate=True)
    with Mosquitto(tls=tls) as broker:
        yield broker


def client_context(pki: Pki, with_certificate: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if with_certificate:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


def tls_driver(broker: Mosquitto, tls: MqttTls, topic: str) -> tuple[MqttInputDriver, BoundTag]:
    bound = BoundTag(1, Tag(name="gas.h2", driver="iot", unit="ppm", range=(0, 1000), topic=topic))
    settings = MqttInputSettings(
        type="mqtt", connection=MqttConnection(host=broker.host, port=broker.port, tls=tls), qos=1
    )
    return MqttInputDriver("iot", settings, [bound]), bound


async def receives_a_sample(
    broker: Mosquitto, driver: MqttInputDriver, bound: BoundTag, publisher_tls: ssl.SSLContext
) -> None:
    assert bound.tag.topic is not None
    sink = ListSink()
    connected = asyncio.Event()
    async with running(driver.run(sink, connected.set), connected):
        async with aiomqtt.Client(broker.host, broker.port, tls_context=publisher_tls) as pub:
            await pub.publish(bound.tag.topic, json.dumps({"value": 4.5, "ts": T0}).encode(), qos=1)
        await eventually(lambda: driver.accepted == 1, "the sample over TLS")
    assert [(s.tag, s.value, s.t, s.quality) for s in sink.samples] == [(bound.index, 4.5, T0, Quality.GOOD)]


async def test_connects_with_ca_and_client_certificate_and_receives(tls_broker: Mosquitto, pki: Pki) -> None:
    tls = MqttTls(ca_file=str(pki.ca_file), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    driver, bound = tls_driver(tls_broker, tls, f"tls-{uuid.uuid4().hex[:8]}/h2")
    await receives_a_sample(tls_broker, driver, bound, client_context(pki))
    assert driver.protocol == "5"


async def test_without_client_certificate_is_refused_promptly(tls_broker: Mosquitto, pki: Pki) -> None:
    # TLS 1.3: our side of the handshake completes, then the broker sends "certificate required"
    # and closes. paho only logs that; the connector catches it instead of waiting out aiomqtt's
    # 10 s CONNACK timeout, and names the alert.
    driver, _ = tls_driver(tls_broker, MqttTls(ca_file=str(pki.ca_file)), "tls/none")
    start = time.monotonic()
    with pytest.raises(FatalDriverError, match=r"(?i)certificate required") as err:
        await driver.run(ListSink(), lambda: pytest.fail("connected without a client certificate"))
    assert time.monotonic() - start < PROMPT_S
    assert isinstance(err.value.__cause__, aiomqtt.MqttError)


async def test_a_ca_that_did_not_sign_the_broker_is_refused(
    tls_broker: Mosquitto, pki: Pki, stranger: Pki
) -> None:
    # Our client certificate is fine; it is the broker we cannot verify.
    tls = MqttTls(ca_file=str(stranger.ca_file), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    driver, _ = tls_driver(tls_broker, tls, "tls/stranger")
    start = time.monotonic()
    with pytest.raises(FatalDriverError, match="certificate verify failed"):
        await driver.run(ListSink(), lambda: pytest.fail("connected to an unverified broker"))
    assert time.monotonic() - start < PROMPT_S


async def test_a_client_certificate_from_another_ca_is_refused(
    tls_broker: Mosquitto, pki: Pki, stranger: Pki
) -> None:
    tls = MqttTls(
        ca_file=str(pki.ca_file), cert_file=str(stranger.client_cert), key_file=str(stranger.client_key)
    )
    driver, _ = tls_driver(tls_broker, tls, "tls/foreign-cert")
    with pytest.raises(FatalDriverError, match=r"(?i)unknown ca"):
        await driver.run(ListSink(), lambda: pytest.fail("connected with a foreign client certificate"))


async def test_server_authenticated_tls_without_client_certificates(pki: Pki, tmp_path: Path) -> None:
    # The common deployment: TLS to authenticate the broker and encrypt, login by password or
    # none. The readiness probe here does a full MQTT CONNECT over TLS.
    tls = MosquittoTls(pki.ca_file, pki.server_cert, pki.server_key, require_certificate=False)
    with Mosquitto(workdir=tmp_path / "broker", tls=tls) as broker:
        driver, bound = tls_driver(broker, MqttTls(ca_file=str(pki.ca_file)), "tls/server-only/h2")
        await receives_a_sample(broker, driver, bound, client_context(pki, with_certificate=False))
