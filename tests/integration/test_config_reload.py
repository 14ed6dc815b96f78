"""SIGHUP reload on the real gateway process (as `systemctl reload` sends it).

A valid new config changes what the gateway does (a new tag is published) without losing a
point: the historian's sequence numbers stay contiguous across the reload. An invalid one is
refused with its problems in the log, and the gateway runs on, on the old config.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto
from tests.integration.historian_ledger import (
    buffer_path,
    check_ledger,
    fast_metrics,
    metrics,
    spool_stats,
    wait_first_points,
    workdir,
)
from tests.integration.line_run import running_line, wait_for

pytestmark = pytest.mark.integration

NEW_TAG = """
[[tags]]
name = "shr.power_check"
description = "Shredder drive power, a second reading for the reload test"
driver = "plc"
node_id = "ns=2;s=shr.power"
unit = "kW"
range = [0, 400]
"""


def test_sighup_applies_a_valid_config_refuses_a_broken_one_and_loses_no_point(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB, influx_proxy: InfluxV2CompatProxy
) -> None:
    with running_line(
        workdir(tmp_path), mosquitto, influxdb, influx_proxy, speed=120.0, edit_config=fast_metrics
    ) as run:
        wait_first_points(run)
        original = run.config_path.read_text(encoding="utf-8")
        run.config_path.write_text(original + NEW_TAG, encoding="utf-8")
        run.gateway.send_signal(signal.SIGHUP)
        wait_for(
            lambda: run.topics.on("signals/shr.power_check"), 60, "the new tag published after the reload"
        )
        wait_for(lambda: run.notify.count("READY=1") >= 2, 30, "READY=1 from the reloaded runtime")
        assert run.notify.count("RELOADING=1") == 1
        assert run.notify.count("STOPPING=1") == 0

        # A broken file: refused, the reason logged, the gateway keeps running on what it had.
        run.config_path.write_text(original.replace('driver = "plc"', 'driver = "plcc"', 1), encoding="utf-8")
        seen = len(metrics(run))
        run.gateway.send_signal(signal.SIGHUP)

        def refusal() -> list[dict[str, object]]:
            events = [json.loads(x) for x in run.gateway_log.read_text().splitlines() if x.startswith("{")]
            return [e for e in events if "refused" in str(e["msg"])]

        (event,) = wait_for(refusal, 30, "the refusal in the log")
        assert event["level"] == "error"
        assert "no driver named 'plcc'" in str(event["msg"])
        before = metrics(run)[-1]["samples_in"]
        wait_for(
            lambda: metrics(run, seen) and metrics(run)[-1]["samples_in"] > before,
            30,
            "samples still coming in",
        )
        assert run.notify.count("RELOADING=1") == 1
        assert run.topics.on("signals/shr.power_check")
    stats = spool_stats(buffer_path(run))
    assert stats.pending_points == 0
    # One numbering across both runtimes, every number in InfluxDB once.
    check_ledger(influxdb, stats.next_seq - 1)
