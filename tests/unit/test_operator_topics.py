"""The operator topic contract (`drivers.operator_topics`): topic names, exact payload bytes and
the publish-on-change rule.

Pure functions, so no broker: each payload is compared byte for byte, which pins the compact
JSON, the key order, null for missing numbers, the timestamp format and the rounding at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.operator_topics import (
    DELETE_RETAINED,
    alarm_event_payload,
    alarm_events_topic,
    alarm_payload,
    alarm_topic,
    base_topic,
    birth_payload,
    command_filter,
    command_result_payload,
    command_result_topic,
    command_setpoint,
    event_messages,
    flow_payloads,
    iso_ms,
    shutdown_payload,
    signal_payload,
    signal_payloads,
    signal_row_payload,
    signal_topic,
    significant_change,
    status_topic,
    update_messages,
    will_payload,
    yield_payload,
)
from gateway.alarms import Alarm, AlarmEvent, Severity
from gateway.commands import CommandResult, CommandStatus
from gateway.config import LineConfig, MqttOutput, Outputs, load_config
from gateway.ports import FlowFigure, PipelineUpdate, SampleColumns, SignalColumns, SignalRow, SignalState
from gateway.samples import Quality
from tests.builders import pipeline_update, yield_figure

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "line1.toml")
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
BASE = "linegate/winston-salem/preprocessing/line1"


def with_outputs(config: LineConfig, outputs: Outputs) -> LineConfig:
    return config.model_copy(update={"outputs": outputs})


def test_topics_are_built_from_the_config() -> None:
    assert base_topic(CONFIG) == BASE
    uns = with_outputs(CONFIG, Outputs(mqtt=MqttOutput(prefix="acme/uns")))
    assert base_topic(uns) == "acme/uns/winston-salem/preprocessing/line1"
    assert base_topic(with_outputs(CONFIG, Outputs())) == BASE  # no MQTT output: default prefix
    assert base_topic(uns, "x") == "x/winston-salem/preprocessing/line1"  # an explicit prefix wins
    assert status_topic(BASE) == f"{BASE}/status"
    assert signal_topic(BASE, "gas.h2") == f"{BASE}/signals/gas.h2"


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (T0, "2024-05-01T12:00:00.000Z"),
        (T0 + 0.125, "2024-05-01T12:00:00.125Z"),
        (T0 - 0.0004, "2024-05-01T12:00:00.000Z"),  # rounded, not truncated
        (T0 + 59.9996, "2024-05-01T12:01:00.000Z"),  # the rounding carries into the minute
        (-0.5, "1969-12-31T23:59:59.500Z"),
    ],
)
def test_iso_ms(t: float, text: str) -> None:
    assert iso_ms(t) == text


@pytest.mark.parametrize("t", [math.nan, math.inf, 1e20])
def test_iso_ms_refuses_times_that_are_no_date(t: float) -> None:
    with pytest.raises(ValueError, match="time"):
        iso_ms(t)


def test_status_payloads() -> None:
    assert birth_payload(T0 + 0.25) == (
        b'{"state":"online","since":"2024-05-01T12:00:00.250Z","gateway":"linegate"}'
    )
    assert will_payload() == b'{"state":"offline"}'
    assert shutdown_payload() == b'{"state":"offline","reason":"shutdown"}'


def test_signal_payloads() -> None:
    # Values are not rounded; NaN becomes null; a unit outside ASCII stays UTF-8.
    assert signal_payload(SignalState("shr.o2_a", "vol%", T0, 0.1234567, Quality.UNCERTAIN)) == (
        b'{"value":0.1234567,"unit":"vol%","quality":"uncertain","timestamp":"2024-05-01T12:00:00.000Z"}'
    )
    assert signal_payload(SignalState("shr.power", "kW", T0, math.nan, Quality.BAD)) == (
        b'{"value":null,"unit":"kW","quality":"bad","timestamp":"2024-05-01T12:00:00.000Z"}'
    )
    assert signal_payload(SignalState("dry.jacket_temp", "°C", T0 - 30, 71.25, Quality.STALE)) == (
        '{"value":71.25,"unit":"°C","quality":"stale","timestamp":"2024-05-01T11:59:30.000Z"}'.encode()
    )
    # An unusable plant time shows as null rather than failing the whole update.
    assert signal_payload(SignalState("gas.h2", "ppm", math.nan, 5.5, Quality.GOOD)) == (
        b'{"value":5.5,"unit":"ppm","quality":"good","timestamp":null}'
    )


def test_yield_payload_in_percent_and_rounded() -> None:
    figure = yield_figure(
        t=T0 + 0.5,
        value=0.123456,  # 12.3456 % -> 3 decimals
        uncertainty=0.0004,  # 0.04 pp
        coverage=0.123456,  # 4 decimals
        covered_h=3.14159,  # 3 decimals
        delay_min=95.456,  # 2 decimals
        feed_t=6.6,
        black_mass_t=2.72164,
    )
    assert yield_payload(figure) == (
        b'{"value":12.346,"unit":"%","quality":"good","timestamp":"2024-05-01T12:00:00.500Z",'
        b'"uncertainty":0.04,"uncertainty_kind":"2sigma","basis":"wet","window_h":4.0,'
        b'"covered_h":3.142,"coverage":0.1235,"delay_min":95.46,"feed_t":6.6,"black_mass_t":2.722}'
    )


def test_yield_payload_shows_missing_numbers_as_null() -> None:
    figure = yield_figure(t=T0, value=math.nan, uncertainty=None, quality=Quality.BAD, feed_t=math.inf)
    assert yield_payload(figure) == (
        b'{"value":null,"unit":"%","quality":"bad","timestamp":"2024-05-01T12:00:00.000Z",'
        b'"uncertainty":null,"uncertainty_kind":"2sigma","basis":"wet","window_h":4.0,'
        b'"covered_h":4.0,"coverage":0.97,"delay_min":95.0,"feed_t":null,"black_mass_t":2.722}'
    )


def test_flow_payloads_take_their_quality_from_having_a_value() -> None:
    flows = FlowFigure(t=T0, feed_tph=1.234567, black_mass_tph=math.nan, feed_vs_nameplate=1.65 / 1.6875)
    assert flow_payloads(flows) == {
        "kpi/feed_rate": (
            b'{"value":1.2346,"unit":"t/h","quality":"good","timestamp":"2024-05-01T12:00:00.000Z",'
            b'"vs_nameplate":0.9778}'
        ),
        "kpi/black_mass_rate": (
            b'{"value":null,"unit":"t/h","quality":"bad","timestamp":"2024-05-01T12:00:00.000Z"}'
        ),
    }


def test_update_messages_name_every_topic_an_update_sets() -> None:
    signal = SignalState("gas.h2", "ppm", T0, 5.5, Quality.GOOD)
    figure = yield_figure(t=T0)
    flows = FlowFigure(t=T0, feed_tph=1.65, black_mass_tph=None, feed_vs_nameplate=None)
    update = pipeline_update(t_plant=T0, signals=[signal], yield_rolling=figure, flows=flows)
    assert update_messages(update, BASE) == {
        f"{BASE}/signals/gas.h2": signal_payload(signal),
        f"{BASE}/kpi/yield_rolling": yield_payload(figure),
        f"{BASE}/kpi/feed_rate": flow_payloads(flows)["kpi/feed_rate"],
        f"{BASE}/kpi/black_mass_rate": flow_payloads(flows)["kpi/black_mass_rate"],
    }
    assert update_messages(pipeline_update(t_plant=T0), BASE) == {}


def test_signal_topics_of_a_pipeline_tick_come_from_its_columns_byte_for_byte() -> None:
    # A pipeline tick hands its changed tags over as columns over the config's tag list.
    index = {name: CONFIG.tag_index(name) for name in ("gas.h2", "shr.power", "dry.jacket_temp")}
    order = sorted(index, key=index.__getitem__)
    rows = {
        "gas.h2": (T0, 5.5, Quality.GOOD),
        "shr.power": (T0 - 0.25, math.nan, Quality.BAD),
        "dry.jacket_temp": (T0 - 30, 71.25, Quality.STALE),
    }
    columns = SignalColumns(
        tag=np.array([index[n] for n in order], np.int64),
        t=np.array([rows[n][0] for n in order]),
        value=np.array([rows[n][1] for n in order]),
        quality=np.array([rows[n][2] for n in order], np.int8),
        names=[t.name for t in CONFIG.tags],
        units=[t.unit for t in CONFIG.tags],
    )
    update = PipelineUpdate(
        t_plant=T0, signals=columns, samples=SampleColumns.empty(), yield_rolling=None, flows=None
    )
    assert update_messages(update, BASE) == {
        f"{BASE}/signals/gas.h2": (
            b'{"value":5.5,"unit":"ppm","quality":"good","timestamp":"2024-05-01T12:00:00.000Z"}'
        ),
        f"{BASE}/signals/shr.power": (
            b'{"value":null,"unit":"kW","quality":"bad","timestamp":"2024-05-01T11:59:59.750Z"}'
        ),
        f"{BASE}/signals/dry.jacket_temp": (
            '{"value":71.25,"unit":"°C","quality":"stale","timestamp":"2024-05-01T11:59:30.000Z"}'.encode()
        ),
    }
    # The same bytes as the objects the columns stand for.
    assert update_messages(update, BASE) == {
        signal_topic(BASE, s.name): signal_payload(s)
        for s in pipeline_update(t_plant=T0, signals=columns).signals
    }


def test_signal_row_payload_refuses_an_unknown_quality_as_signal_payload_did() -> None:
    with pytest.raises(ValueError, match="Quality"):
        signal_row_payload(("gas.h2", "ppm", T0, 5.5, 9))
    with pytest.raises(ValueError, match="Quality"):
        signal_payloads([("gas.h2", "ppm", T0, 5.5, 9)])


# Plant times: ordinary ones, the edges of what numpy formats like iso_ms (years 1000 and 9999),
# times before and beyond them, and times that are no date at all.
PLANT_TIMES = st.one_of(
    st.floats(T0 - 1e6, T0 + 1e6),
    st.floats(-1e12, 1e12),
    st.sampled_from([-30_610_224_000.0, -30_610_224_000.0005, 253_402_300_799.999, 253_402_300_799.9996]),
    st.sampled_from([-62_135_596_800.0, 253_402_300_800.0, -0.0005, 0.0005, -1.5]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SIGNAL_ROWS = st.tuples(
    st.text(max_size=3),
    st.one_of(st.sampled_from(["ppm", "°C", "vol%", ""]), st.text(max_size=4)),
    PLANT_TIMES,
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, 1e16, 1e-7, 0.1 + 0.2])),
    st.sampled_from([0, 1, 2, 3]),
)


@given(st.lists(SIGNAL_ROWS, max_size=20))
@settings(max_examples=300, deadline=None)
def test_signal_payloads_equal_the_one_by_one_payloads_byte_for_byte(rows: list[SignalRow]) -> None:
    try:
        want = [signal_row_payload(row) for row in rows]
    except (ValueError, OverflowError, UnicodeEncodeError) as exc:
        # A time too large to hold in ms, a unit no UTF-8 can carry: both refuse it alike.
        with pytest.raises(type(exc)):
            signal_payloads(rows)
        return
    assert signal_payloads(rows) == want


# -- alarms ---------------------------------------------------------------------------------------

ALARM = Alarm(
    "tag_stale:shr.power", "tag_stale", "shr.power", Severity.WARNING, "shr.power: no fresh data", T0
)


def test_alarm_topics_keep_the_colon_and_refuse_what_is_no_level() -> None:
    assert alarm_topic(BASE, "tag_stale:shr.power") == f"{BASE}/alarms/active/tag_stale:shr.power"
    assert alarm_events_topic(BASE) == f"{BASE}/alarms/events"
    for bad in ("", "a/b", "a+", "#", "a\x00"):
        with pytest.raises(ValueError, match="alarm id"):
            alarm_topic(BASE, bad)


def test_alarm_payloads() -> None:
    assert alarm_payload(ALARM) == (
        b'{"id":"tag_stale:shr.power","kind":"tag_stale","subject":"shr.power","severity":"warning",'
        b'"text":"shr.power: no fresh data","since":"2024-05-01T12:00:00.000Z"}'
    )
    assert alarm_event_payload(AlarmEvent(ALARM, active=True, t=T0)) == (
        b'{"event":"raised","id":"tag_stale:shr.power","kind":"tag_stale","subject":"shr.power",'
        b'"severity":"warning","text":"shr.power: no fresh data","since":"2024-05-01T12:00:00.000Z",'
        b'"timestamp":"2024-05-01T12:00:00.000Z"}'
    )
    assert alarm_event_payload(AlarmEvent(ALARM, active=False, t=T0 + 90.5)).startswith(
        b'{"event":"cleared",'
    )
    assert alarm_event_payload(AlarmEvent(ALARM, active=False, t=T0 + 90.5)).endswith(
        b'"timestamp":"2024-05-01T12:01:30.500Z"}'
    )


def test_update_messages_hold_active_alarms_and_delete_cleared_ones() -> None:
    other = Alarm("driver_down:iot", "driver_down", "iot", Severity.ALARM, "input driver iot down", T0)
    update = pipeline_update(t_plant=T0 + 5)
    update.alarm_events.append(AlarmEvent(other, active=False, t=T0 + 5))
    update.active_alarms.append(ALARM)
    assert update_messages(update, BASE) == {
        f"{BASE}/alarms/active/driver_down:iot": DELETE_RETAINED,
        f"{BASE}/alarms/active/tag_stale:shr.power": alarm_payload(ALARM),
    }
    assert DELETE_RETAINED == b""  # an empty retained publish deletes the retained message
    assert event_messages(update) == [alarm_event_payload(AlarmEvent(other, active=False, t=T0 + 5))]


# -- commands -------------------------------------------------------------------------------------


def test_command_topics() -> None:
    assert command_filter(BASE) == f"{BASE}/commands/+/set"
    assert command_result_topic(BASE, "shr.feed_rate_sp") == f"{BASE}/commands/shr.feed_rate_sp/result"
    assert command_setpoint(BASE, f"{BASE}/commands/shr.feed_rate_sp/set") == "shr.feed_rate_sp"
    for topic in (
        f"{BASE}/commands/x/result",
        f"{BASE}/commands//set",
        "other/commands/x/set",
        f"{BASE}/x/set",
    ):
        assert command_setpoint(BASE, topic) is None


def test_command_result_payload() -> None:
    result = CommandResult("r-1", "shr.feed_rate_sp", CommandStatus.ACCEPTED, "ok", 1.5, 1.49, False, T0)
    assert command_result_payload(result, now=T0 + 9) == (
        b'{"request_id":"r-1","setpoint":"shr.feed_rate_sp","status":"accepted","reason":"ok",'
        b'"value":1.5,"readback":1.49,"duplicate":false,"decided_at":"2024-05-01T12:00:00.000Z",'
        b'"code":null,"previous":null}'
    )
    unknown = CommandResult("", "x", CommandStatus.REJECTED, "malformed command: payload: not JSON")
    assert command_result_payload(unknown, now=T0 + 0.25) == (
        b'{"request_id":null,"setpoint":"x","status":"rejected","reason":"malformed command: payload: not JSON",'
        b'"value":null,"readback":null,"duplicate":false,"decided_at":"2024-05-01T12:00:00.250Z",'
        b'"code":null,"previous":null}'
    )


# -- publish on change ----------------------------------------------------------------------------

G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


@pytest.mark.parametrize(
    ("sent", "new", "deadband", "changed"),
    [
        ((10.0, G), (10.0, G), 0.0, False),  # same value: not even a zero deadband republishes
        ((10.0, G), (10.000001, G), 0.0, True),  # any change at 0
        ((10.0, G), (11.0, G), 1.0, False),  # exactly the deadband: not more than it
        ((10.0, G), (11.0001, G), 1.0, True),
        ((10.0, G), (8.9, G), 1.0, True),  # either direction
        ((10.0, G), (10.0, U), 1.0, True),  # quality always counts
        ((10.0, B), (math.nan, B), 1.0, True),  # a value disappearing
        ((math.nan, B), (math.nan, B), 0.0, False),
        ((math.nan, B), (3.0, B), 5.0, True),  # a value appearing
    ],
)
def test_significant_change(
    sent: tuple[float, Quality], new: tuple[float, Quality], deadband: float, changed: bool
) -> None:
    assert significant_change(*sent, *new, deadband) is changed
