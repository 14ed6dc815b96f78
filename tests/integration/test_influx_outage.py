"""Store-and-forward to InfluxDB through a real gateway, simulator, broker and database.

The gateway and the simulator run as processes (as `linegate run` and `linegate simulate`)
against a private InfluxDB 1.6 behind the shipped nginx v2 proxy, which these tests stop, start
and starve. Every point carries `seq`, its acceptance number in the durable buffer, so the
ledger is in InfluxDB itself: after each run the numbers 1..N (N = the buffer's last accepted
point) must all be there exactly once, and increasing with time in every series.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto
from tests.integration.historian_ledger import (
    SeriesKey,
    buffer_path,
    check_ledger,
    fast_metrics,
    latest,
    metrics,
    spool_stats,
    wait_first_points,
    wait_metrics,
    workdir,
)
from tests.integration.line_run import INFLUX_DATABASE, LineRun, running_line, spawn_cli, wait_for

pytestmark = pytest.mark.integration

SPEED = 120.0  # 30 min of plant time is 15 s of wall time
OUTAGE_S = 30 * 60.0  # plant seconds


@pytest.fixture
def private_influx(tmp_path: Path) -> Iterator[tuple[InfluxDB, InfluxV2CompatProxy]]:
    # Its own InfluxDB: these tests stop and start it.
    with InfluxDB(workdir=tmp_path / "influxdb") as influx, InfluxV2CompatProxy(influx) as proxy:
        influx.create_database(INFLUX_DATABASE)
        yield influx, proxy


def _plant_now(run: LineRun) -> float:
    """The newest plant time on the operator topics (the metrics carry the wall clock)."""
    stamps = [
        p["timestamp"]
        for t, p, retained in list(run.topics.messages)
        if "/signals/" in t and p and not retained
    ]
    newest = max(stamps, default=None)
    return datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp() if newest else -1.0


_UNESCAPE = re.compile(r"\\(.)")
_SPLIT = re.compile(r"(?<!\\),")


def _line_key(line: str) -> tuple[SeriesKey, int, int]:
    """(series, time ms, seq) of one line-protocol line as the encoder writes it."""
    head = re.match(r"((?:[^ \\]|\\.)+) ", line)
    assert head is not None, line
    name, *pairs = _SPLIT.split(head.group(1))
    tags = tuple(sorted(tuple(_UNESCAPE.sub(r"\1", x) for x in p.split("=", 1)) for p in pairs))
    seq = re.search(r",seq=(\d+)i \d+$", line)
    assert seq is not None, line
    return (_UNESCAPE.sub(r"\1", name), tags), int(line.rsplit(" ", 1)[1]), int(seq.group(1))  # type: ignore[return-value]


def _pending(path: Path) -> list[tuple[SeriesKey, int, int]]:
    """Every point still in the buffer file (read straight from SQLite, as a forensic tool would)."""
    with closing(sqlite3.connect(path)) as db:
        bodies = [body for (body,) in db.execute("SELECT body FROM records ORDER BY seq0")]
    return [_line_key(line) for body in bodies for line in body.split("\n")]


def _holds_later(influx: InfluxDB, key: SeriesKey, ms: int, seq: int) -> bool:
    """InfluxDB holds a point of series `key` at `ms` with a newer number than `seq`."""
    name, tags = key
    where = " AND ".join([f"time = {ms}ms", *(f"\"{k}\" = '{v}'" for k, v in tags)])
    rows = influx.rows(f'SELECT "seq" FROM "{name}" WHERE {where}', INFLUX_DATABASE)
    return any(r["seq"] > seq for r in rows)


def test_a_30_minute_outage_loses_and_repeats_nothing(
    tmp_path: Path, mosquitto: Mosquitto, private_influx: tuple[InfluxDB, InfluxV2CompatProxy]
) -> None:
    influx, proxy = private_influx
    with running_line(
        workdir(tmp_path), mosquitto, influx, proxy, speed=SPEED, edit_config=fast_metrics
    ) as run:
        wait_first_points(run)
        influx.stop(keep_workdir=True)
        down_at = _plant_now(run)
        wait_for(
            lambda: _plant_now(run) >= down_at + OUTAGE_S,
            120,
            "30 minutes of plant time with InfluxDB down",
            explain=lambda: f"plant time {_plant_now(run) - down_at:.0f} s after the stop",
        )
        during = latest(run) or {}
        assert during["buffer"]["points"] > 0
        assert during["buffer"]["age_s"] > 0
        assert any(d["name"] == "influxdb" and not d["connected"] for d in during["drivers"])
        influx.start()
        after = wait_metrics(
            run,
            lambda m: m["buffer"]["points"] == 0 and m["buffer"]["replayed_points"] > 0,
            120,
            "the backlog replayed",
        )
        assert after["buffer"]["dropped_points"] == 0
    # The gateway has stopped (SIGTERM) with InfluxDB up: it flushed what it still held.
    stats = spool_stats(buffer_path(run))
    assert stats.pending_points == 0
    assert stats.accepted_points == stats.next_seq - 1 > during["buffer"]["points"]
    check_ledger(influx, stats.next_seq - 1)


def test_sigkill_with_a_full_buffer_loses_nothing_accepted(
    tmp_path: Path, mosquitto: Mosquitto, private_influx: tuple[InfluxDB, InfluxV2CompatProxy]
) -> None:
    influx, proxy = private_influx
    with running_line(
        workdir(tmp_path), mosquitto, influx, proxy, speed=SPEED, edit_config=fast_metrics
    ) as run:
        wait_first_points(run)
        influx.stop(keep_workdir=True)
        wait_metrics(run, lambda m: m["buffer"]["points"] >= 2_000, 120, "a buffer of 2,000 points")
        run.gateway.kill()  # SIGKILL: no flush, no goodbye
        run.gateway.wait(10)
        held = spool_stats(buffer_path(run))
        assert held.pending_points >= 2_000
        before = _pending(buffer_path(run))
        assert [seq for _, _, seq in before] == list(range(before[0][2], held.next_seq))
        influx.start()
        seen = len(metrics(run))
        run.gateway = spawn_cli(
            ["run", "--config", str(run.config_path)], run.gateway_log.with_name("gateway2.log")
        )
        wait_metrics(
            run,
            lambda m: m["buffer"]["points"] == 0 and m["buffer"]["replayed_points"] >= held.pending_points,
            120,
            "the restarted gateway to replay the buffer",
            since=seen,
        )
    stats = spool_stats(buffer_path(run))
    assert stats.pending_points == 0
    assert stats.next_seq - 1 > held.next_seq - 1
    # The one legitimate gap: the restarted gateway receives each tag's current value again (an
    # OPC UA subscription's first notification, a retained MQTT message), with the source time
    # the killed one had already stored; InfluxDB keeps one point there, with the newer number.
    missing = check_ledger(influx, stats.next_seq - 1, missing_ok=set(range(1, stats.next_seq)))
    held_points = {seq: (key, ms) for key, ms, seq in before}
    assert missing <= held_points.keys(), "a point delivered before the kill is missing"
    assert len(missing) <= len({key for key, _, _ in before})  # at most one per series
    for seq in missing:
        assert _holds_later(influx, *held_points[seq], seq), f"seq {seq} {held_points[seq]} lost"


def test_the_disk_cap_drops_the_oldest_counts_alarms_and_runs_on(
    tmp_path: Path, mosquitto: Mosquitto, private_influx: tuple[InfluxDB, InfluxV2CompatProxy]
) -> None:
    influx, proxy = private_influx

    def small_buffer(text: str) -> str:
        return fast_metrics(
            text.replace("buffer_max_mb = 1024", "buffer_max_mb = 0.1"),
        )

    with running_line(
        workdir(tmp_path), mosquitto, influx, proxy, speed=SPEED, edit_config=small_buffer
    ) as run:
        wait_first_points(run)
        influx.stop(keep_workdir=True)
        full = wait_metrics(run, lambda m: m["buffer"]["dropped_points"] > 0, 120, "the cap to drop points")
        wait_for(
            lambda: [e for e in run.topics.on("alarms/events") if e["id"] == "buffer_dropped:influxdb"],
            30,
            "the buffer_dropped alarm",
        )
        # Still ticking and taking samples while it drops.
        wait_metrics(run, lambda m: m["samples_in"] > full["samples_in"] + 100, 30, "samples still coming in")
        assert full["buffer"]["bytes"] <= 0.1 * 2**20 * 1.2
        influx.start()
        wait_metrics(run, lambda m: m["buffer"]["points"] == 0, 120, "the rest replayed")
    stats = spool_stats(buffer_path(run))
    missing = check_ledger(influx, stats.next_seq - 1, missing_ok=set(range(1, stats.next_seq)))
    # Exactly the counted points are missing, and they are the oldest of the outage: one block.
    assert len(missing) == stats.dropped_points > 0
    assert max(missing) - min(missing) + 1 == len(missing)
