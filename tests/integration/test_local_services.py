"""The local services harness and the shipped nginx v2-compat config, against the real binaries.

The proxy tests write with influxdb-client (what the gateway uses) or with raw HTTP where the
exact URL encoding matters, then read back with InfluxQL straight from InfluxDB.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from simulators.local_services import (
    InfluxDB,
    InfluxV2CompatProxy,
    Mosquitto,
    free_port,
    mqtt_handshake,
)

pytestmark = pytest.mark.integration

DB = "linegate"
# 2023-11-14T22:13:20.123456789Z: every precision keeps a different number of its digits.
T_NS = 1_700_000_000_123_456_789
EPOCH_OF = {"s": "s", "ms": "ms", "us": "u", "ns": "ns"}
DIVISOR = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
PRECISION = {"s": WritePrecision.S, "ms": WritePrecision.MS, "us": WritePrecision.US, "ns": WritePrecision.NS}


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except urllib.error.URLError:
        return 0, b""  # nothing listening


def measurement() -> str:
    """A measurement name no other test writes, so tests share the session database safely."""
    return f"m_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(influx_proxy: InfluxV2CompatProxy) -> Iterator[InfluxDBClient]:
    with InfluxDBClient(url=influx_proxy.url, token="not-checked", org="any") as c:
        yield c


# -- mosquitto --------------------------------------------------------------------------------


def test_mosquitto_routes_a_message(mosquitto: Mosquitto) -> None:
    assert mqtt_handshake(mosquitto.host, mosquitto.port)
    got = threading.Event()
    received: list[bytes] = []

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object) -> None:
        c.subscribe("harness/t", qos=1)

    def on_subscribe(c: mqtt.Client, _u: object, _mid: int, _rc: list[mqtt.ReasonCode], _p: object) -> None:
        c.publish("harness/t", b"hello", qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.payload)
        got.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    try:
        assert got.wait(10), "no message came back through the broker"
    finally:
        c.disconnect()
        c.loop_stop()
    assert received == [b"hello"]


def test_stop_reaps_the_process_removes_the_dir_and_is_idempotent() -> None:
    broker = Mosquitto().start()
    pid, workdir = broker.pid, broker.workdir
    assert pid is not None
    assert workdir.is_dir()
    broker.stop()
    broker.stop()
    assert not broker.running
    assert not workdir.exists()
    assert not mqtt_handshake(broker.host, broker.port, timeout=0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie: the pid is gone


def test_missing_binary_names_the_install_script() -> None:
    class Nowhere(Mosquitto):
        binary = "linegate-no-such-broker"

    with pytest.raises(RuntimeError, match=r"linegate-no-such-broker.*scripts/install-system-deps"):
        Nowhere().start()


def test_failed_start_reports_the_log_tail() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = Mosquitto(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"(?is)mosquitto.*exited.*address already in use"):
            broker.start()
        assert not broker.running
        broker.stop()


def test_influxdb_restarts_on_the_same_port_with_its_data() -> None:
    with InfluxDB() as influx:
        url = influx.url
        influx.create_database("kept")
        status, _ = http("POST", f"{url}/write?db=kept&precision=s", b"m v=7 1700000000")
        assert status == 204
        influx.stop(keep_workdir=True)
        assert http("GET", f"{url}/ping")[0] == 0
        influx.start()
        assert influx.url == url
        assert influx.rows("SELECT v FROM m", "kept", epoch="s") == [{"time": 1700000000, "v": 7}]


# -- the nginx v2-compat proxy ----------------------------------------------------------------


@pytest.mark.parametrize("precision", ["s", "ms", "us", "ns"])
def test_precision_is_mapped_exactly(
    precision: str, client: InfluxDBClient, influxdb: InfluxDB, influx_proxy: InfluxV2CompatProxy
) -> None:
    m = measurement()
    ts = T_NS // DIVISOR[precision]
    client.write_api(write_options=SYNCHRONOUS).write(
        bucket=f"{DB}/autogen", record=f"{m} v=1 {ts}", write_precision=PRECISION[precision]
    )
    assert influxdb.rows(f"SELECT v FROM {m}", DB, epoch=EPOCH_OF[precision]) == [{"time": ts, "v": 1}]
    assert influxdb.rows(f"SELECT v FROM {m}", DB, epoch="ms")[0]["time"] == ts * DIVISOR[precision] // 10**6


@pytest.mark.parametrize(
    ("bucket", "rp"),
    [
        ("linegate", "autogen"),
        ("linegate/autogen", "autogen"),
        ("linegate%2Fautogen", "autogen"),
        ("linegate%2fautogen", "autogen"),
        ("linegate/keep", "keep"),
        ("linegate%2Fkeep", "keep"),
    ],
)
def test_bucket_forms_land_in_the_database_and_retention_policy(
    bucket: str, rp: str, influxdb: InfluxDB, influx_proxy: InfluxV2CompatProxy
) -> None:
    influxdb.query(f'CREATE RETENTION POLICY "keep" ON "{DB}" DURATION INF REPLICATION 1')
    m = measurement()
    status, body = http(
        "POST",
        f"{influx_proxy.url}/api/v2/write?org=any&bucket={bucket}&precision=ms",
        f"{m} v=2 1700000000123".encode(),
        {"Authorization": "Token some-v2-token"},
    )
    assert status == 204, body
    assert influxdb.rows(f'SELECT v FROM "{DB}"."{rp}"."{m}"', DB) == [{"time": 1700000000123, "v": 2}]
    other = "keep" if rp == "autogen" else "autogen"
    assert influxdb.rows(f'SELECT v FROM "{DB}"."{other}"."{m}"', DB) == []


def test_influxdb_client_bucket_with_rp_is_url_encoded_and_still_lands(
    client: InfluxDBClient, influxdb: InfluxDB
) -> None:
    influxdb.query(f'CREATE RETENTION POLICY "keep" ON "{DB}" DURATION INF REPLICATION 1')
    m = measurement()
    client.write_api(write_options=SYNCHRONOUS).write(
        bucket=f"{DB}/keep", record=f"{m} v=3 1700000000123", write_precision=WritePrecision.MS
    )
    assert influxdb.rows(f'SELECT v FROM "{DB}"."keep"."{m}"', DB) == [{"time": 1700000000123, "v": 3}]


def test_gzip_bodies_pass_through(influxdb: InfluxDB, influx_proxy: InfluxV2CompatProxy) -> None:
    m = measurement()
    lines = "\n".join(f"{m},k=p{i} v={i} {1700000000000 + i}" for i in range(500)).encode()
    status, body = http(
        "POST",
        f"{influx_proxy.url}/api/v2/write?bucket={DB}&precision=ms",
        gzip.compress(lines),
        {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"},
    )
    assert status == 204, body
    with InfluxDBClient(url=influx_proxy.url, token="x", org="any", enable_gzip=True) as gz:
        gz.write_api(write_options=SYNCHRONOUS).write(
            bucket=DB, record=f"{m},k=client v=-1 1700000001000", write_precision=WritePrecision.MS
        )
    rows = influxdb.rows(f"SELECT count(v) FROM {m}", DB)
    assert rows[0]["count"] == 501


def test_health_ping_and_query_pass_through(
    client: InfluxDBClient, influx_proxy: InfluxV2CompatProxy
) -> None:
    assert client.ping()
    assert client.version().startswith("1.")
    with pytest.deprecated_call():  # health() is deprecated in the client, yet still used by tools
        health = client.health()
    assert health.status == "pass"
    status, body = http("GET", f"{influx_proxy.url}/query?q=SHOW+DATABASES")
    assert status == 200
    assert [DB] in json.loads(body)["results"][0]["series"][0]["values"]


@pytest.mark.parametrize(
    ("method", "query", "status", "message"),
    [
        ("POST", "bucket=linegate&precision=h", 400, "precision must be"),
        ("POST", "org=x&precision=ms", 400, "bucket is required"),
        ("GET", "bucket=linegate", 405, "use POST"),
    ],
)
def test_bad_write_requests_get_v2_style_errors(
    method: str, query: str, status: int, message: str, influx_proxy: InfluxV2CompatProxy
) -> None:
    got, body = http(
        method, f"{influx_proxy.url}/api/v2/write?{query}", b"m v=1" if method == "POST" else None
    )
    assert got == status
    assert message in json.loads(body)["message"]


def test_proxy_reports_a_stopped_influxdb_and_recovers() -> None:
    with InfluxDB() as influx, InfluxV2CompatProxy(influx) as proxy:
        influx.create_database("d")
        influx.stop(keep_workdir=True)
        status, body = http("GET", f"{proxy.url}/health")
        assert (status, json.loads(body)["status"]) == (503, "fail")
        status, body = http("POST", f"{proxy.url}/api/v2/write?bucket=d&precision=s", b"m v=1 1700000000")
        assert status == 502
        assert "does not answer" in json.loads(body)["message"]
        influx.start()
        status, body = http("GET", f"{proxy.url}/health")
        assert (status, json.loads(body)["status"]) == (200, "pass")
        assert http("POST", f"{proxy.url}/api/v2/write?bucket=d&precision=s", b"m v=1 1700000000")[0] == 204


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
