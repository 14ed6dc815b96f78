"""The whole line on real services: simulator (asyncua server + MQTT publisher) -> `linegate run`
-> real mosquitto and real InfluxDB 1.6 behind the shipped nginx v2 proxy.

Both programs run as child processes, as in production. The gateway gets a notify socket, so
READY=1, WATCHDOG=1 and STOPPING=1 are read as systemd would. Plant time runs 600x faster than
the wall clock, so the 4 h window (+ 95 min delay) fills in well under a minute.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto
from simulators.truth import read_truth
from tests.integration.line_run import ROOT, LineRun, check_alive, liveness, running_line, wait_for

pytestmark = pytest.mark.integration

SPEED = 600.0


@pytest.fixture(scope="module")
def line(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
) -> Iterator[LineRun]:
    with running_line(
        tmp_path_factory.mktemp("line"), mosquitto, influxdb, influx_proxy, speed=SPEED, seed=3
    ) as run:
        yield run


def test_ready_after_drivers_connect_then_watchdog_pings(line: LineRun) -> None:
    wait_for(lambda: line.notify.count("READY=1"), 60, "READY=1 on the notify socket")
    check_alive(line)
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
            f"\nsimulator log:\n{line.simulator_log.read_text()[-2000:]}"
        )

    # Generous: a loaded CI box runs the simulator slower than 600x; the wait ends when the
    # yields arrive, and ends before the test's own timeout so that the explanation is printed.
    wait_for(lambda: len(full_good()) >= 10, 240, "ten GOOD full-window yields", explain=explain)
    check_alive(line)
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


def linegate_status(line: LineRun) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "status", "--config", str(line.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def test_linegate_status_reads_the_running_gateway(line: LineRun) -> None:
    # The first metrics come one interval after the start; the status needs them.
    m = wait_for(lambda: line.topics.on("status/metrics"), 30, "the gateway's metrics")[-1]
    # What the gateway took in and handed on, what it dropped and why, how full its queues are.
    assert m["samples_in"] >= m["samples_out"] > 0
    assert set(m["dropped"]) == {"bus_full", "out_of_order", "out_of_range"}
    assert set(m["queues"]) == {"mqtt", "influxdb"}
    assert m["pipeline_ms"] <= m["tick_ms"]
    done = linegate_status(line)
    # OK, or WARNING when a detector's alarm happens to be up in this run; never worse.
    assert done.returncode in (0, 1), done.stdout + done.stderr
    head, *rest = done.stdout.splitlines()
    assert head.startswith(f"linegate line1: {'OK' if done.returncode == 0 else 'WARNING'}: ONLINE since ")
    assert any(r.startswith("drivers: plc up") and "influxdb up" in r for r in rest), done.stdout


def test_sigterm_stops_cleanly_with_offline_status(line: LineRun) -> None:
    check_alive(line)
    liveness.clear()  # the gateway is about to stop on purpose
    line.gateway.send_signal(signal.SIGTERM)
    assert line.gateway.wait(30) == 0, line.gateway_log.read_text()[-3000:]
    assert line.notify.count("STOPPING=1") == 1
    status = wait_for(
        lambda: [p for p in line.topics.on("status") if p["state"] == "offline"], 10, "offline status"
    )
    assert status[-1].get("reason") == "shutdown"
    # Not on a terminal, the daemon logs one JSON event per line (journald reads the same).
    events = [json.loads(x) for x in line.gateway_log.read_text().splitlines() if x.strip()]
    assert events
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)
    assert any(e["msg"] == "ready: all drivers connected" for e in events)
    done = linegate_status(line)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("linegate line1: CRITICAL: OFFLINE")
    assert "gateway offline: shutdown" in done.stdout
