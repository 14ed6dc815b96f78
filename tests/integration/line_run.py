"""Run the whole line as child processes, as in production: the simulator (asyncua server + MQTT
publisher) and `linegate run` against real mosquitto and InfluxDB behind the v2 proxy.

Shared by the modules that need a live line (end-to-end checks, dashboards against real data):
each opens `running_line(...)` in its own module-scoped fixture. The gateway gets a systemd-style
notify socket, and a subscriber started before it records every operator topic.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.local_config import localize_config_text
from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "line1.toml"
BASE = "linegate/winston-salem/preprocessing/line1"
INFLUX_DATABASE = "linegate"

# Filled by `running_line`: each check raises at once when a child process died, so `wait_for`
# fails with the reason instead of waiting out a deadline for something that can no longer happen.
# A test that stops a child on purpose clears it first.
liveness: list[Callable[[], None]] = []


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
        for check in liveness:
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
        """This run's messages on `topic`. Retained ones are left out: the broker outlives a run,
        and what an earlier run (another scenario, another plant time) left retained there is
        not what this gateway says."""
        return [
            p
            for t, p, retained in list(self.messages)
            if t == f"{BASE}/{topic}" and p is not None and not retained
        ]

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

    @property
    def simulator_log(self) -> Path:
        return self.config_path.with_name("simulator.log")


def spawn_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`linegate ARGS` as a child process, stdout and stderr into `log`."""
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd stops a unit; SIGKILL when that is not heeded within 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def check_alive(run: LineRun) -> None:
    """Fail with the end of its log when the gateway or the simulator has exited."""
    assert run.gateway.poll() is None, "gateway died:\n" + run.gateway_log.read_text()[-3000:]
    assert run.simulator.poll() is None, "simulator died:\n" + run.simulator_log.read_text()[-3000:]


def fresh_database(influxdb: InfluxDB) -> None:
    """An empty `linegate` database: dropped and created again, then checked empty.

    Not `DROP SERIES`: one pytest worker runs several line tests against the same InfluxDB,
    every gateway numbers its points from 1, and InfluxDB 1.x has known cases of dropped
    series data surviving (influxdata/influxdb#8278, #10263); a leftover point would show as
    this run's sequence number stored twice."""
    influxdb.query(f'DROP DATABASE "{INFLUX_DATABASE}"')
    influxdb.create_database(INFLUX_DATABASE)
    left = influxdb.query("SHOW SERIES", INFLUX_DATABASE).get("results", [{}])[0].get("series")
    assert not left, f"the {INFLUX_DATABASE} database still holds series after it was dropped: {left}"


@contextmanager
def running_line(
    work: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
    *,
    speed: float,
    seed: int = 3,
    scenario: str | None = None,
    start: datetime | None = None,
    edit_config: Callable[[str], str] | None = None,
) -> Iterator[LineRun]:
    """The shipped line config pointed at the local services (then passed through `edit_config`),
    the simulator at `speed` and the gateway started on it, with an empty `linegate` database.
    Both children are stopped (SIGTERM) on exit."""
    text = localize_config_text(
        CONFIG.read_text(encoding="utf-8"),
        opcua_port=free_port(),
        mqtt_port=mosquitto.port,
        influx_url=influx_proxy.url,
        state_dir=work,
        speed=speed,
    )
    if edit_config is not None:
        text = edit_config(text)
    config_path = work / "line.toml"
    config_path.write_text(text, encoding="utf-8")
    truth_path = work / "truth.jsonl"
    fresh_database(influxdb)
    topics = TopicRecorder(mosquitto.host, mosquitto.port)
    notify = NotifyListener(work / "notify.sock")
    sim_args = ["simulate", "--config", str(config_path), "--speed", str(speed), "--seed", str(seed)]
    sim_args += ["--truth", str(truth_path)]
    if scenario is not None:
        sim_args += ["--scenario", scenario]
    if start is not None:
        sim_args += ["--start", start.isoformat()]
    simulator = spawn_cli(sim_args, work / "simulator.log")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    gateway_log = work / "gateway.log"
    gateway = spawn_cli(["run", "--config", str(config_path)], gateway_log, env)
    run = LineRun(
        config_path, truth_path, gateway, simulator, notify, topics, influxdb, mosquitto, gateway_log
    )
    liveness.append(lambda: check_alive(run))
    try:
        yield run
    finally:
        liveness.clear()
        stop_process(run.gateway)  # a test may have replaced it (a restart)
        stop_process(simulator)
        topics.close()
        notify.close()
