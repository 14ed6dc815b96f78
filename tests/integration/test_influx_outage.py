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
from typing import Any

import pytest

from gateway.durable_spool import DurableSpool
from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto
from tests.integration.line_run import INFLUX_DATABASE, LineRun, running_line, spawn_cli, wait_for

pytestmark = pytest.mark.integration

SPEED = 120.0  # 30 min of plant time is 15 s of wall time
OUTAGE_S = 30 * 60.0  # plant seconds


def _fast_metrics(text: str, extra_influx: str = "") -> str:
    """Metrics every wall second (the tests follow the buffer through them)."""
    text, n = re.subn(r"(?m)^\[runtime\]\n", "[runtime]\nmetrics_interval_s = 1\n", text)
    assert n == 1
    if extra_influx:
        text, n = re.subn(r"(?m)^\[outputs\.influxdb\]\n", f"[outputs.influxdb]\n{extra_influx}\n", text)
        assert n == 1
    return text


@pytest.fixture
def private_influx(tmp_path: Path) -> Iterator[tuple[InfluxDB, InfluxV2CompatProxy]]:
    # Its own InfluxDB: these tests stop and start it.
    with InfluxDB(workdir=tmp_path / "influxdb") as influx, InfluxV2CompatProxy(influx) as proxy:
        influx.create_database(INFLUX_DATABASE)
        yield influx, proxy


def _metrics(run: LineRun, since: int = 0) -> list[dict[str, Any]]:
    """The gateway's status/metrics messages, from message number `since` of the recorder on."""
    return run.topics.on("status/metrics")[since:]


def _latest(run: LineRun) -> dict[str, Any] | None:
    m = _metrics(run)
    return m[-1] if m else None


def _plant_now(run: LineRun) -> float:
    """The newest plant time on the operator topics (the metrics carry the wall clock)."""
    stamps = [
        p["timestamp"]
        for t, p, retained in list(run.topics.messages)
        if "/signals/" in t and p and not retained
    ]
    newest = max(stamps, default=None)
    return datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp() if newest else -1.0


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "run"
    work.mkdir()
    return work


def _buffer_path(run: LineRun) -> Path:
    return run.config_path.with_name("influxdb-buffer.sqlite")


def _spool_stats(path: Path) -> Any:
    spool = DurableSpool[object](path, lambda _u, _s: [])
    try:
        return spool.stats()
    finally:
        spool.close()


SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
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


def _ledger(influx: InfluxDB) -> dict[SeriesKey, list[tuple[int, int]]]:
    """(measurement, tags) -> [(time ms, seq)] in time order, for every point in the database."""
    body = influx.query('SELECT "seq" FROM /.*/ GROUP BY *', INFLUX_DATABASE, epoch="ms")
    out: dict[SeriesKey, list[tuple[int, int]]] = {}
    for result in body.get("results", []):
        for series in result.get("series", []):
            key = (series["name"], tuple(sorted(series.get("tags", {}).items())))
            out[key] = [(int(t), int(seq)) for t, seq in series["values"]]
    return out


def _check_ledger(influx: InfluxDB, accepted: int, missing_ok: set[int] | None = None) -> set[int]:
    """Every accepted point exactly once, in order per series; returns the missing numbers
    (only those in `missing_ok` may be)."""
    ledger = _ledger(influx)
    seqs = [seq for points in ledger.values() for _, seq in points]
    assert len(seqs) == len(set(seqs)), "a sequence number is in InfluxDB twice"
    present = set(seqs)
    assert max(present) <= accepted, f"InfluxDB holds seq {max(present)} > {accepted} accepted"
    missing = set(range(1, accepted + 1)) - present
    assert missing <= (missing_ok or set()), (
        f"{len(missing)} accepted points missing, e.g. {sorted(missing)[:10]}"
    )
    for (name, tags), points in ledger.items():
        order = [seq for _, seq in points]
        assert order == sorted(order), f"{name} {dict(tags)}: sequence numbers out of time order"
    return missing


def _holds_later(influx: InfluxDB, key: SeriesKey, ms: int, seq: int) -> bool:
    """InfluxDB holds a point of series `key` at `ms` with a newer number than `seq`."""
    name, tags = key
    where = " AND ".join([f"time = {ms}ms", *(f"\"{k}\" = '{v}'" for k, v in tags)])
    rows = influx.rows(f'SELECT "seq" FROM "{name}" WHERE {where}', INFLUX_DATABASE)
    return any(r["seq"] > seq for r in rows)


def _wait_metrics(run: LineRun, predicate: Any, timeout: float, what: str, since: int = 0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        m = _metrics(run, since)
        return m[-1] if m and predicate(m[-1]) else None

    return wait_for(check, timeout, what, explain=lambda: f"last metrics: {_latest(run)}")


def test_a_30_minute_outage_loses_and_repeats_nothing(
    tmp_path: Path, mosquitto: Mosquitto, private_influx: tuple[InfluxDB, InfluxV2CompatProxy]
) -> None:
    influx, proxy = private_influx
    with running_line(
        _workdir(tmp_path), mosquitto, influx, proxy, speed=SPEED, edit_config=_fast_metrics
    ) as run:
        _wait_metrics(run, lambda m: m["buffer"]["written_points"] > 500, 90, "the first signals in InfluxDB")
        influx.stop(keep_workdir=True)
        down_at = _plant_now(run)
        wait_for(
            lambda: _plant_now(run) >= down_at + OUTAGE_S,
            120,
            "30 minutes of plant time with InfluxDB down",
            explain=lambda: f"plant time {_plant_now(run) - down_at:.0f} s after the stop",
        )
        during = _latest(run) or {}
        assert during["buffer"]["points"] > 0
        assert during["buffer"]["age_s"] > 0
        assert any(d["name"] == "influxdb" and not d["connected"] for d in during["drivers"])
        influx.start()
        after = _wait_metrics(
            run,
            lambda m: m["buffer"]["points"] == 0 and m["buffer"]["replayed_points"] > 0,
            120,
            "the backlog replayed",
        )
        assert after["buffer"]["dropped_points"] == 0
    # The gateway has stopped (SIGTERM) with InfluxDB up: it flushed what it still held.
    stats = _spool_stats(_buffer_path(run))
    assert stats.pending_points == 0
    assert stats.accepted_points == stats.next_seq - 1 > during["buffer"]["points"]
    _check_ledger(influx, stats.next_seq - 1)


def test_sigkill_with_a_full_buffer_loses_nothing_accepted(
    tmp_path: Path, mosquitto: Mosquitto, private_influx: tuple[InfluxDB, InfluxV2CompatProxy]
) -> None:
    influx, proxy = private_influx
    with running_line(
        _workdir(tmp_path), mosquitto, influx, proxy, speed=SPEED, edit_config=_fast_metrics
    ) as run:
        _wait_metrics(run, lambda m: m["buffer"]["written_points"] > 500, 90, "the first signals in InfluxDB")
        influx.stop(keep_workdir=True)
        _wait_metrics(run, lambda m: m["buffer"]["points"] >= 2_000, 120, "a buffer of 2,000 points")
        run.gateway.kill()  # SIGKILL: no flush, no goodbye
        run.gateway.wait(10)
        held = _spool_stats(_buffer_path(run))
        assert held.pending_points >= 2_000
        before = _pending(_buffer_path(run))
        assert [seq for _, _, seq in before] == list(range(before[0][2], held.next_seq))
        influx.start()
        seen = len(_metrics(run))
        run.gateway = spawn_cli(
            ["run", "--config", str(run.config_path)], run.gateway_log.with_name("gateway2.log")
        )
        _wait_metrics(
            run,
            lambda m: m["buffer"]["points"] == 0 and m["buffer"]["replayed_points"] >= held.pending_points,
            120,
            "the restarted gateway to replay the buffer",
            since=seen,
        )
    stats = _spool_stats(_buffer_path(run))
    assert stats.pending_points == 0
    assert stats.next_seq - 1 > held.next_seq - 1
    # The one legitimate gap: the restarted gateway receives each tag's current value again (an
    # OPC UA subscription's first notification, a retained MQTT message), with the source time
    # the killed one had already stored; InfluxDB keeps one point there, with the newer number.
    missing = _check_ledger(influx, stats.next_seq - 1, missing_ok=set(range(1, stats.next_seq)))
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
        return _fast_metrics(
            text.replace("buffer_max_mb = 1024", "buffer_max_mb = 0.1"),
        )

    with running_line(
        _workdir(tmp_path), mosquitto, influx, proxy, speed=SPEED, edit_config=small_buffer
    ) as run:
        _wait_metrics(run, lambda m: m["buffer"]["written_points"] > 500, 90, "the first signals in InfluxDB")
        influx.stop(keep_workdir=True)
        full = _wait_metrics(run, lambda m: m["buffer"]["dropped_points"] > 0, 120, "the cap to drop points")
        wait_for(
            lambda: [e for e in run.topics.on("alarms/events") if e["id"] == "buffer_dropped:influxdb"],
            30,
            "the buffer_dropped alarm",
        )
        # Still ticking and taking samples while it drops.
        _wait_metrics(
            run, lambda m: m["samples_in"] > full["samples_in"] + 100, 30, "samples still coming in"
        )
        assert full["buffer"]["bytes"] <= 0.1 * 2**20 * 1.2
        influx.start()
        _wait_metrics(run, lambda m: m["buffer"]["points"] == 0, 120, "the rest replayed")
    stats = _spool_stats(_buffer_path(run))
    missing = _check_ledger(influx, stats.next_seq - 1, missing_ok=set(range(1, stats.next_seq)))
    # Exactly the counted points are missing, and they are the oldest of the outage: one block.
    assert len(missing) == stats.dropped_points > 0
    assert max(missing) - min(missing) + 1 == len(missing)
