"""The historian's line protocol: alarms, self-metrics, sequence numbers, Retry-After parsing.

Signals, KPIs and flows are read back from a real InfluxDB in
tests/integration/test_influx_output.py; these are the pure encoding rules beside it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest

from drivers.influx_lines import InfluxLineEncoder, with_sequence
from drivers.influx_output import retry_after_s
from gateway.alarms import Alarm, AlarmEvent, Severity
from gateway.config import LineConfig, load_config
from gateway.ports import SampleColumns
from gateway.self_metrics import BufferMetrics, DriverMetrics, GatewayMetrics
from tests.builders import pipeline_update, yield_figure

LINE_TOML = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
T0 = 1_700_000_000.0
SERIES = "line=line1,site=winston-salem"


@pytest.fixture(scope="module")
def config() -> LineConfig:
    return load_config(LINE_TOML)


def test_alarm_events_become_points_with_kind_subject_and_severity_as_tags(config: LineConfig) -> None:
    alarm = Alarm(
        "stuck_sensor:bw_feed.rate", "stuck_sensor", "bw_feed.rate", Severity.ALARM, 'flat "30 s"', T0
    )
    update = replace(
        pipeline_update(t_plant=T0 + 5),
        alarm_events=[AlarmEvent(alarm, True, T0), AlarmEvent(alarm, False, T0 + 5)],
    )
    raised, cleared = InfluxLineEncoder(config, sequence_field=False).lines(update)
    tags = f"alarm,{SERIES},kind=stuck_sensor,subject=bw_feed.rate,severity=alarm"
    assert raised == (
        f'{tags} id="stuck_sensor:bw_feed.rate",event="raised",active=1i,text="flat \\"30 s\\"" 1700000000000'
    )
    assert cleared.startswith(f'{tags} id="stuck_sensor:bw_feed.rate",event="cleared",active=0i,')
    assert cleared.endswith(" 1700000005000")


def test_metrics_make_one_gateway_point_and_one_point_per_driver(config: LineConfig) -> None:
    metrics = GatewayMetrics(
        t=T0,
        tick_ms=0.85,
        tick_errors=0,
        samples_in=1234,
        alarms_active=2,
        cpu_percent=float("nan"),  # not measurable yet: the field is left out, not written as NaN
        rss_mb=210.5,
        buffer=BufferMetrics(points=17, bytes=2048, age_s=3.5, dropped_points=4, replayed_points=9),
        drivers=[DriverMetrics("plc", "input", True, 3, 0), DriverMetrics("influxdb", "output", False, 1, 2)],
    )
    update = replace(pipeline_update(t_plant=T0), metrics=metrics)
    gateway, plc, influx = InfluxLineEncoder(config, sequence_field=False).lines(update)
    assert gateway.startswith(f"gateway,{SERIES} ")
    fields = dict(f.split("=", 1) for f in gateway.split(" ")[1].split(","))
    assert fields["samples_in"] == "1234i"
    assert (fields["drivers_connected"], fields["drivers_total"]) == ("1i", "2i")
    assert (fields["buffer_points"], fields["buffer_dropped_points"], fields["buffer_replayed_points"]) == (
        "17i",
        "4i",
        "9i",
    )
    assert (fields["tick_ms"], fields["rss_mb"], fields["buffer_age_s"]) == ("0.85", "210.5", "3.5")
    assert "cpu_percent" not in fields
    assert plc == f"driver,{SERIES},driver=plc,kind=input connected=1i,connects=3i,failures=0i 1700000000000"
    assert influx.startswith(f"driver,{SERIES},driver=influxdb,kind=output connected=0i,")


def test_sequence_numbers_go_before_the_timestamp_even_after_strings_with_spaces() -> None:
    lines = ['alarm,line=a text="two words",active=1i 1000', "signal,tag=x value=1.0 2000"]
    assert with_sequence(lines, 41) == [
        'alarm,line=a text="two words",active=1i,seq=41i 1000',
        "signal,tag=x value=1.0,seq=42i 2000",
    ]


def test_encode_numbers_every_line_from_the_first_sequence_number(config: LineConfig) -> None:
    alarm = Alarm("tag_bad:x", "tag_bad", "x", Severity.WARNING, "bad", T0)
    update = replace(
        pipeline_update(t_plant=T0),
        alarm_events=[AlarmEvent(alarm, True, T0), AlarmEvent(alarm, False, T0 + 1)],
    )
    lines = InfluxLineEncoder(config, sequence_field=True).encode(update, 100)
    assert [line.rsplit(" ", 1)[0].rsplit(",", 1)[1] for line in lines] == ["seq=100i", "seq=101i"]
    assert InfluxLineEncoder(config, sequence_field=False).encode(update, 100)[0].find("seq=") == -1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s({"Retry-After": "7"}) == 7.0
    when = datetime.fromtimestamp(T0 + 30, UTC)
    assert retry_after_s({"Retry-After": format_datetime(when, usegmt=True)}, now=T0) == pytest.approx(30.0)
    assert retry_after_s({"Retry-After": format_datetime(when, usegmt=True)}, now=T0 + 60) == 0.0
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None
    assert retry_after_s(None) is None


def test_a_line_break_in_a_text_cannot_split_the_point(config: LineConfig) -> None:
    alarm = Alarm("tag_bad:x", "tag_bad", "x", Severity.WARNING, 'two\nlines \\ and "quotes"\r', T0)
    update = replace(pipeline_update(t_plant=T0), alarm_events=[AlarmEvent(alarm, True, T0)])
    (line,) = InfluxLineEncoder(config, sequence_field=False).lines(update)
    assert "\n" not in line
    assert "\r" not in line
    assert 'text="two lines \\\\ and \\"quotes\\" "' in line


def test_repeated_samples_and_figures_are_written_once_alarms_move_to_a_free_millisecond(
    config: LineConfig,
) -> None:

    def tick(t: float, alarm_events: list[AlarmEvent]) -> list[str]:
        samples = SampleColumns(
            tag=np.array([0, 0], np.int32),
            t=np.array([T0, T0 + 1.0]),
            value=np.array([1.0, 2.0]),
            quality=np.zeros(2, np.int8),
        )
        u = pipeline_update(
            t_plant=t, samples=samples, tag_names=["a"], yield_rolling=yield_figure(t=T0 + 10)
        )
        return encoder.lines(replace(u, alarm_events=alarm_events))

    encoder = InfluxLineEncoder(config, sequence_field=False)
    alarm = Alarm("tag_bad:a", "tag_bad", "a", Severity.WARNING, "bad", T0)
    first = tick(T0 + 10, [AlarmEvent(alarm, True, T0 + 10)])
    # The same two samples again (a re-delivery), the same window's figure, and the alarm's clear
    # at the very same plant instant.
    second = tick(T0 + 10, [AlarmEvent(alarm, False, T0 + 10)])
    assert [x.split(",")[0] for x in first] == ["signal", "signal", "kpi", "alarm"]
    assert [x.split(",")[0] for x in second] == ["alarm"]
    assert first[-1].endswith(" 1700000010000")
    assert second[-1].endswith(" 1700000010001")
    assert encoder.repeats_skipped == 2
