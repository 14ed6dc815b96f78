"""The operator topic contract (`drivers.operator_topics`): topic names and exact payload bytes.

Pure functions, so no broker: each payload is compared byte for byte, which pins the compact
JSON, the key order, null for missing numbers, the timestamp format and the rounding at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from drivers.operator_topics import (
    base_topic,
    birth_payload,
    flow_payloads,
    iso_ms,
    shutdown_payload,
    signal_payload,
    signal_topic,
    status_topic,
    update_messages,
    will_payload,
    yield_payload,
)
from gateway.config import LineConfig, MqttOutput, Outputs, load_config
from gateway.ports import FlowFigure, SignalState
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
