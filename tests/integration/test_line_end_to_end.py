"""The whole line on real services: simulator (asyncua server + MQTT publisher) -> `linegate run`
-> real mosquitto and real InfluxDB 1.6 behind the shipped nginx v2 proxy.

Both programs run as child processes, as in production. The gateway gets a notify socket, so
READY=1, WATCHDOG=1 and STOPPING=1 are read as systemd would. Plant time runs 600x faster than
the wall clock, so the 4 h window (+ 95 min delay) fills in well under a minute.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.local_config import localize_config_text
from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto, free_port
from simulators.truth import read_truth

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEED = 600.0
BASE = "linegate/winston-salem/preprocessing/line1"


# Set by the `line` fixture: raises at once when a child process died, instead of waiting out
# a deadline for something that can no longer happen.
_liveness: list[Callable[[], None]] = []


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline,
    with what `explain` says about the state reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for check in _liveness:
            check()
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


@dataclass
class NotifyListener:
    """A systemd-style notify socket collecting the datagrams the gateway sends."""

    path: Path
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().splitlines())

    def count(self, line: str) -> int:
        return sum(1 for m in list(self.messages) if m == line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@dataclass
class TopicRecorder:
    """Every message on the operator topics, from a subscriber started before the gateway."""

    host: str
    port: int
    messages: list[tuple[str, dict[str, Any] | None, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-recorder")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"{BASE}/#", qos=1)
        self.client.connect(self.host, self.port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        # An empty retained payload deletes a topic (a cleared alarm): kept as None.
        self.messages.append((msg.topic, json.loads(msg.payload) if msg.payload else None, bool(msg.retain)))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [p for t, p, _ in list(self.messages) if t == f"{BASE}/{topic}" and p is not None]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class LineRun:
    config_path: Path
    truth_path: Path
    gateway: subprocess.Popen[bytes]
    simulator: subprocess.Popen[bytes]
    notify: NotifyListener
    topics: TopicRecorder
    influxdb: InfluxDB
    mosquitto: Mosquitto
    gateway_log: Path


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def line(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
) -> Iterator[LineRun]:
    work = tmp_path_factory.mktemp("line")
    text = localize_config_text(
        (ROOT / "config" / "line1.toml").read_text(encoding="utf-8"),
        opcua_port=free_port(),
        mqtt_port=mosquitto.port,
        influx_url=influx_proxy.url,
        state_dir=work,
        speed=SPEED,
    )
    config_path = work / "line.toml"
    config_path.write_text(text, encoding="utf-8")
    truth_path = work / "truth.jsonl"
    influxdb.query("DROP SERIES FROM /.*/", "linegate")
    topics = TopicRecorder(mosquitto.host, mosquitto.port)
    notify = NotifyListener(work / "notify.sock")
    simulator = _spawn(
        [
            "simulate",
            "--config",
            str(config_path),
            "--speed",
            str(SPEED),
            "--seed",
            "3",
            "--truth",
            str(truth_path),
        ],
        work / "simulator.log",
    )
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    gateway_log = work / "gateway.log"
    gateway = _spawn(["run", "--config", str(config_path)], gateway_log, env)
    run = LineRun(
        config_path, truth_path, gateway, simulator, notify, topics, influxdb, mosquitto, gateway_log
    )
    _liveness.append(lambda: _alive(run))
    try:
        yield run
    finally:
        _liveness.clear()
        _stop(gateway)
        _stop(simulator)
        topics.close()
        notify.close()


def _alive(run: LineRun) -> None:
    assert run.gateway.poll() is None, "gateway died:\n" + run.gateway_log.read_text()[-3000:]
    sim_log = run.config_path.with_name("simulator.log")
    assert run.simulator.poll() is None, "simulator died:\n" + sim_log.read_text()[-3000:]


def test_ready_after_drivers_connect_then_watchdog_pings(line: LineRun) -> None:
    wait_for(lambda: line.notify.count("READY=1"), 60, "READY=1 on the notify socket")
    _alive(line)
    ready_at = line.notify.messages.index("READY=1")
    # The status lines before READY say what the gateway was waiting for.
    assert any(m.startswith("STATUS=") for m in line.notify.messages[:ready_at])
    wait_for(lambda: line.notify.count("WATCHDOG=1") >= 3, 10, "three WATCHDOG=1 pings")


def test_operator_topics_carry_yield_with_unit_and_quality(line: LineRun) -> None:
    payloads = wait_for(lambda: line.topics.on("kpi/yield_rolling"), 90, "a yield on the operator topic")
    p = payloads[-1]
    assert p["unit"] == "%"
    assert p["quality"] in {"good", "uncertain", "bad"}
    assert p["basis"] == "wet"
    assert p["timestamp"].endswith("Z")
    status = wait_for(lambda: line.topics.on("status"), 10, "the status birth message")
    assert status[-1]["state"] == "online"
    signal_payload = wait_for(lambda: line.topics.on("signals/shr.power"), 10, "a signal topic")[-1]
    assert signal_payload["unit"] == "kW"
    assert signal_payload["quality"] == "good"


def _iso_to_epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(360)
def test_full_window_yield_tracks_simulator_truth(line: LineRun) -> None:
    def full_good() -> list[dict[str, Any]]:
        return [
            p
            for p in line.topics.on("kpi/yield_rolling")
            if p["quality"] == "good" and p["covered_h"] >= p["window_h"] - 1e-9
        ]

    # Window (4 h) + delay (95 min) at 600x is ~33 s of wall time; allow for start-up.
    def explain() -> str:
        yields = line.topics.on("kpi/yield_rolling")
        last = "\n".join(json.dumps(p) for p in yields[-5:])
        qualities = Counter(p["quality"] for p in yields)
        alarms = [json.dumps(p) for p in line.topics.on("alarms/events")][-10:]
        return (
            f"{len(yields)} yields published {dict(qualities)}, {len(full_good())} good over the full "
            f"window; the last:\n{last}\nthe last alarm events:\n"
            + "\n".join(alarms)
            + f"\ngateway log:\n{line.gateway_log.read_text()[-3000:]}"
            f"\nsimulator log:\n{line.config_path.with_name('simulator.log').read_text()[-2000:]}"
        )

    # Generous: a loaded CI box runs the simulator slower than 600x; the wait ends when the
    # yields arrive, and ends before the test's own timeout so that the explanation is printed.
    wait_for(lambda: len(full_good()) >= 10, 240, "ten GOOD full-window yields", explain=explain)
    _alive(line)
    _, rows = read_truth(line.truth_path)
    truth = [(r["t"], r["yield_rolling"]) for r in rows if r["yield_rolling"] is not None]
    compared = 0
    for p in full_good():
        t = _iso_to_epoch(p["timestamp"])
        earlier = [y for rt, y in truth if rt <= t]
        if not earlier:
            continue
        true_pct = earlier[-1] * 100
        assert abs(p["value"] - true_pct) <= 2.0, f"yield {p['value']:.2f} % vs truth {true_pct:.2f} % at {t}"
        # The published band is honest about the instrument classes.
        assert 0 < p["uncertainty"] < 3.0
        compared += 1
    assert compared >= 5


def test_points_land_in_influxdb(line: LineRun) -> None:
    def counts() -> dict[str, int]:
        rows = line.influxdb.rows('SELECT count("value") FROM "signal" GROUP BY "tag"', "linegate")
        return {r["tag"]: r["count"] for r in rows} if rows else {}

    wait_for(lambda: len(counts()) >= 15, 60, "signal points for all 15 tags in InfluxDB", interval=0.5)
    assert all(n > 0 for n in counts().values())
    kpi = wait_for(
        lambda: line.influxdb.rows(
            'SELECT "value", "uncertainty", "quality" FROM "kpi" WHERE "kpi" = \'yield_rolling\'', "linegate"
        ),
        60,
        "yield points in InfluxDB",
        interval=0.5,
    )
    assert any(r["value"] is not None and 20 < r["value"] < 90 for r in kpi)


def test_sigterm_stops_cleanly_with_offline_status(line: LineRun) -> None:
    _alive(line)
    _liveness.clear()  # the gateway is about to stop on purpose
    line.gateway.send_signal(signal.SIGTERM)
    assert line.gateway.wait(30) == 0, line.gateway_log.read_text()[-3000:]
    assert line.notify.count("STOPPING=1") == 1
    status = wait_for(
        lambda: [p for p in line.topics.on("status") if p["state"] == "offline"], 10, "offline status"
    )
    assert status[-1].get("reason") == "shutdown"
