"""A config reload hands the historian's encoder and durable buffer from one runtime to the next.

What the old runtime had in flight when it was cancelled is replayed by the new one; the old
write may still land afterwards. InfluxDB keeps one point per (series, time), so this is safe
exactly when every sequence number names one (series, time) and the replay is byte-identical.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from drivers.influx_lines import InfluxLineEncoder
from gateway.alarms import Alarm, AlarmEvent, Severity
from gateway.config import LineConfig, load_config
from gateway.durable_spool import DurableSpool
from gateway.ports import PipelineUpdate
from tests.builders import pipeline_update

LINE_TOML = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def config() -> LineConfig:
    return load_config(LINE_TOML)


def alarm_update(k: int) -> PipelineUpdate:
    """One tick carrying one alarm raise: one point, at plant time T0 + k."""
    alarm = Alarm(f"stuck_sensor:t{k}", "stuck_sensor", f"t{k}", Severity.ALARM, "flat", T0)
    return replace(pipeline_update(t_plant=T0 + k), alarm_events=[AlarmEvent(alarm, True, T0 + k)])


def point_key(line: str) -> tuple[str, str, int]:
    """(series key, timestamp, seq) of a line this encoder wrote."""
    series = line[: line.index(" ")]
    seq = int(line.split(",seq=")[1].split("i ")[0])
    return series, line.rsplit(" ", 1)[1], seq


def test_a_cancelled_write_replayed_after_reload_names_every_point_once(
    tmp_path: Path, config: LineConfig
) -> None:
    path = tmp_path / "buffer.sqlite"
    encoder = InfluxLineEncoder(config, sequence_field=True)
    old = DurableSpool[PipelineUpdate](path, encoder.encode)
    for k in range(3):
        old.put(alarm_update(k))
    in_flight, _token = old.peek(10)  # the write thread is still sending this when cancelled
    old.put(alarm_update(3))  # the old runtime's last tick at shutdown
    old.close()

    new = DurableSpool[PipelineUpdate](path, encoder.encode)  # the carried encoder, reopened
    new.put(alarm_update(4))
    delivered: list[str] = []
    while len(new):
        lines, token = new.peek(2)
        delivered += lines
        new.commit(token)
    new.close()

    assert set(in_flight) <= set(delivered), "the replay must be the very lines that were in flight"
    influx: dict[tuple[str, str], int] = {}
    for line in [*delivered, *in_flight]:  # the old thread's write lands last
        series, ms, seq = point_key(line)
        influx[series, ms] = seq
    seqs = sorted(influx.values())
    assert seqs == list(range(1, 6)), f"every number once, none lost: {influx}"
