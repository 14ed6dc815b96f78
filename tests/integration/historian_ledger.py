"""The historian's ledger for line-run tests: the gateway's metrics on MQTT, its durable buffer
file, and the `seq` numbers in InfluxDB that prove every accepted point arrived exactly once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.durable_spool import DurableSpool, SpoolStats
from simulators.local_services import InfluxDB
from tests.integration.line_run import INFLUX_DATABASE, LineRun, wait_for

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def fast_metrics(text: str) -> str:
    """Metrics every wall second (the tests follow the buffer through them)."""
    text, n = re.subn(r"(?m)^\[runtime\]\n", "[runtime]\nmetrics_interval_s = 1\n", text)
    assert n == 1
    return text


def metrics(run: LineRun, since: int = 0) -> list[dict[str, Any]]:
    """The gateway's status/metrics messages, from message number `since` of the recorder on."""
    return run.topics.on("status/metrics")[since:]


def latest(run: LineRun) -> dict[str, Any] | None:
    m = metrics(run)
    return m[-1] if m else None


def workdir(tmp_path: Path) -> Path:
    """The run's directory (config, logs, buffer) under the test's tmp_path."""
    work = tmp_path / "run"
    work.mkdir()
    return work


def buffer_path(run: LineRun) -> Path:
    """Where `localize_config_text` put the run's durable buffer."""
    return run.config_path.with_name("influxdb-buffer.sqlite")


def spool_stats(path: Path) -> SpoolStats:
    spool = DurableSpool[object](path, lambda _u, _s: [])
    try:
        return spool.stats()
    finally:
        spool.close()


def read_ledger(influx: InfluxDB) -> dict[SeriesKey, list[tuple[int, int]]]:
    """(measurement, tags) -> [(time ms, seq)] in time order, for every point in the database."""
    body = influx.query('SELECT "seq" FROM /.*/ GROUP BY *', INFLUX_DATABASE, epoch="ms")
    out: dict[SeriesKey, list[tuple[int, int]]] = {}
    for result in body.get("results", []):
        for series in result.get("series", []):
            key = (series["name"], tuple(sorted(series.get("tags", {}).items())))
            out[key] = [(int(t), int(seq)) for t, seq in series["values"]]
    return out


def check_ledger(influx: InfluxDB, accepted: int, missing_ok: set[int] | None = None) -> set[int]:
    """Every accepted point exactly once, in order per series; returns the missing numbers
    (only those in `missing_ok` may be)."""
    ledger = read_ledger(influx)
    seqs = [seq for points in ledger.values() for _, seq in points]
    if len(seqs) != len(set(seqs)):
        where: dict[int, list[str]] = {}
        for (name, tags), points in ledger.items():
            for ms, seq in points:
                where.setdefault(seq, []).append(f"{name} {dict(tags)} @{ms}")
        twice = {seq: places for seq, places in sorted(where.items()) if len(places) > 1}
        shown = "\n".join(f"  seq {seq}: {places}" for seq, places in list(twice.items())[:10])
        raise AssertionError(f"{len(twice)} sequence numbers are in InfluxDB twice, e.g.:\n{shown}")
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


def wait_metrics(run: LineRun, predicate: Any, timeout: float, what: str, since: int = 0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        m = metrics(run, since)
        return m[-1] if m and predicate(m[-1]) else None

    return wait_for(check, timeout, what, explain=lambda: f"last metrics: {latest(run)}")


def wait_first_points(run: LineRun) -> None:
    """Until InfluxDB has confirmed the run's first signals (the historian path is up)."""
    wait_metrics(run, lambda m: m["buffer"]["written_points"] > 500, 90, "the first signals in InfluxDB")
