"""Pure logic of the OPC-UA input: client-side filter, repeat suppression, value mapping; silence watch."""

from __future__ import annotations

import math
import tomllib
from datetime import UTC, datetime

import numpy as np
from asyncua import ua

from drivers.opcua_monitoring import ClientFilter, data_change_filter
from drivers.opcua_values import LatestSeen, Reading, reading_of
from gateway.config import OpcUaMonitoring, parse_config
from gateway.samples import Quality, SampleBatch
from gateway.silence_watch import SilenceWatch
from tests.opcua_helpers import CONFIG


def r(t: float, v: float, status: int = 0) -> Reading:
    return Reading(t, v, Quality.GOOD, status)


def test_absolute_deadband_compares_with_the_last_reported_value() -> None:
    f = ClientFilter("status_value", "absolute", 1.0)
    passed = [v for i, v in enumerate([10.0, 10.6, 11.2, 11.9, 12.3]) if f.passes(r(i, v))]
    # 11.2 is 0.6 from 10.6 but 1.2 from the last reported 10.0; a slow ramp is not lost.
    assert passed == [10.0, 11.2, 12.3]


def test_status_change_always_passes_and_status_trigger_ignores_values() -> None:
    f = ClientFilter("status", "none", 0.0)
    assert f.passes(r(0, 1.0))
    assert not f.passes(r(1, 2.0))
    assert f.passes(r(2, 2.0, status=ua.StatusCodes.BadSensorFailure))


def test_timestamp_trigger_passes_a_new_source_time_with_the_same_value() -> None:
    f = ClientFilter("status_value_timestamp", "none", 0.0)
    assert f.passes(r(0, 1.0))
    assert not f.passes(r(0, 1.0))
    assert f.passes(r(1, 1.0))


def test_nan_to_number_is_a_change() -> None:
    f = ClientFilter("status_value", "absolute", 5.0)
    assert f.passes(r(0, math.nan))
    assert f.passes(r(1, 1.0))


def test_server_filter_is_only_sent_when_it_differs_from_the_default() -> None:
    assert data_change_filter(OpcUaMonitoring()) is None
    flt = data_change_filter(OpcUaMonitoring(deadband="absolute", deadband_value=0.5))
    assert flt is not None
    assert (flt.DeadbandType, flt.DeadbandValue, flt.Trigger) == (1, 0.5, ua.DataChangeTrigger.StatusValue)


def test_repeats_are_dropped_but_any_difference_passes() -> None:
    seen = LatestSeen()
    assert not seen.is_repeat(1, r(5, 2.0))
    assert seen.is_repeat(1, r(5, 2.0))
    assert not seen.is_repeat(2, r(5, 2.0))  # another tag
    assert not seen.is_repeat(1, r(5, 2.0, status=ua.StatusCodes.UncertainLastUsableValue))
    assert not seen.is_repeat(1, r(6, 2.0))
    assert seen.repeats_dropped == 1


def test_reading_maps_status_time_and_non_numbers() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    good = reading_of(ua.DataValue(ua.Variant(3.5), SourceTimestamp=t))
    assert good == Reading(t.timestamp(), 3.5, Quality.GOOD, 0)
    text = reading_of(ua.DataValue(ua.Variant("jam"), SourceTimestamp=t))
    assert text.quality == Quality.BAD
    assert math.isnan(text.value)
    untimed = reading_of(ua.DataValue(ua.Variant(1.0)))
    assert untimed.quality == Quality.UNCERTAIN
    server_time = reading_of(ua.DataValue(ua.Variant(1.0), ServerTimestamp=t))
    assert server_time.t == t.timestamp()


def test_silence_watch_flags_only_tags_past_their_period() -> None:
    data = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    data["tags"][0]["stale_after_s"] = 5.0  # an OPC-UA tag, overriding the driver's 30 s
    config = parse_config(data)
    watch = SilenceWatch(config)
    n = len(config.tags)
    iot = [i for i, t in enumerate(config.tags) if t.driver == "iot"]
    assert np.isinf(watch.stale_after[iot]).all()  # MQTT driver: no silence check by default
    quality = np.zeros(n, np.int8)
    watch.observe(batch(list(range(n))), now=100.0)
    assert list(watch.overdue(104.0, quality)) == []
    assert list(watch.overdue(106.0, quality)) == [0]
    quality[0] = Quality.STALE
    # 100 s of silence: every other OPC-UA tag is past the driver's 30 s, except one with its own 300 s.
    long = [i for i, t in enumerate(config.tags) if t.stale_after_s == 300]
    assert long
    assert list(watch.overdue(200.0, quality)) == [i for i in range(1, n) if i not in iot and i not in long]
    # The watch's own STALE marks coming back through the bus are not arrivals.
    watch.observe(batch([0], quality=Quality.STALE), now=300.0)
    assert watch.last_arrival[0] == 100.0


def batch(tags: list[int], quality: Quality = Quality.GOOD) -> SampleBatch:
    k = len(tags)
    return SampleBatch(
        tag=np.array(tags, np.int32),
        t=np.ones(k),
        value=np.ones(k),
        quality=np.full(k, int(quality), np.int8),
        status=np.zeros(k, np.uint32),
    )
