"""InterlockMonitor: an interlock holds only after its condition held for `hold_s` of source time
on GOOD samples; any bad, uncertain, stale, NaN or condition-breaking sample (also inside a batch)
restarts the hold; no good sample within `fresh_s` of the (injected) clock makes it stale; and
identical interlocks of two setpoints share one state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from gateway.config import LineConfig, parse_config
from gateway.control_config import Interlock
from gateway.interlock_monitor import InterlockMonitor, InterlockStatus
from gateway.ports import SampleColumns
from gateway.samples import Quality
from tests.builders import pipeline_update

T0 = 1_767_600_000.0  # source (plant) time of the first sample
POWER_ON = {"tag": "shr.power", "op": ">", "value": 10.0, "hold_s": 5.0, "fresh_s": 5.0}
POWER_SANE = {"tag": "shr.power", "op": "<", "value": 200.0}
DOOR_SHUT = {"tag": "shr.door", "op": "==", "value": 1.0}
FAN_RUNNING = {"tag": "dry.fan", "op": "!=", "value": 0.0}


def _tag(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "driver": "plc",
        "node_id": f"ns=2;s={name}",
        "unit": "u",
        "range": [0, 1000],
        **extra,
    }


def _setpoint(name: str, interlocks: list[dict[str, object]]) -> dict[str, object]:
    return {
        "node_id": f"ns=2;s={name}",
        "unit": "u",
        "range": [0, 10],
        "roles": ["shift_lead"],
        "interlocks": interlocks,
    }


def line_config() -> LineConfig:
    return parse_config(
        {
            "line": {"name": "line1", "site": "plant", "area": "pre", "nameplate": {"capacity": 13500}},
            "drivers": {"plc": {"type": "opcua", "url": "opc.tcp://127.0.0.1:4840/sim"}},
            "tags": [
                _tag("feed.total", unit="t", role="feed", kind="total"),
                _tag("bm.total", unit="t", role="black_mass", kind="total"),
                _tag("shr.power"),
                _tag("shr.door"),
                _tag("dry.fan"),
            ],
            "yield": {"transport_delay_min": 60},
            "control": {
                "driver": "plc",
                "setpoints": {
                    "shr.feed_rate_sp": _setpoint("shr.feed_rate_sp", [POWER_ON, DOOR_SHUT]),
                    # POWER_ON again (an equal, separately parsed interlock), and one more on its tag.
                    "shr.speed_sp": _setpoint("shr.speed_sp", [POWER_ON, POWER_SANE]),
                    "dry.temp_sp": _setpoint("dry.temp_sp", [FAN_RUNNING]),
                },
            },
        }
    )


CONFIG = line_config()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _interlock(setpoint: str, index: int) -> Interlock:
    return CONFIG.control.setpoints[setpoint].interlocks[index]


POWER = _interlock("shr.feed_rate_sp", 0)
DOOR = _interlock("shr.feed_rate_sp", 1)
SANE = _interlock("shr.speed_sp", 1)
FAN = _interlock("dry.temp_sp", 0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monitor(clock: FakeClock) -> InterlockMonitor:
    return InterlockMonitor(CONFIG, clock=clock)


def feed(
    m: InterlockMonitor,
    tag: str | Sequence[str],
    t: Sequence[float],
    value: Sequence[float],
    quality: Sequence[int] | None = None,
) -> None:
    """One batch: source times `t` (seconds after T0), values, qualities (default all GOOD)."""
    n = len(t)
    names = [tag] * n if isinstance(tag, str) else list(tag)
    m.observe_samples(
        np.array([CONFIG.tag_index(x) for x in names], np.int32),
        np.asarray(t, np.float64) + T0,
        np.asarray(value, np.float64),
        np.asarray(quality if quality is not None else [Quality.GOOD] * n, np.int8),
    )


def status(m: InterlockMonitor, il: Interlock) -> InterlockStatus:
    (s,) = m.status([il])
    return s


def assert_status(s: InterlockStatus, *, holds: bool, stale: bool, why: str) -> None:
    assert (s.holds, s.stale) == (holds, stale), s
    assert why in s.why, s.why


# -- before any data ------------------------------------------------------------------------------


def test_no_good_sample_yet(monitor: InterlockMonitor) -> None:
    for il in (POWER, DOOR, SANE, FAN):
        assert_status(status(monitor, il), holds=False, stale=True, why="no good sample received yet")


def test_bad_samples_alone_are_no_good_sample(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [0, 1, 2], [20, math.nan, 20], [Quality.BAD, Quality.GOOD, Quality.UNCERTAIN])
    assert_status(status(monitor, POWER), holds=False, stale=True, why="no good sample received yet")


def test_empty_batch_changes_nothing(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [], [])
    assert_status(status(monitor, POWER), holds=False, stale=True, why="no good sample received yet")


# -- hold on source time --------------------------------------------------------------------------


def test_condition_must_hold_for_hold_s_of_source_time(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4], [20] * 5)
    assert_status(status(monitor, POWER), holds=False, stale=False, why="shr.power > 10 held 4 s of 5 s")
    feed(monitor, "shr.power", [5], [20])
    assert_status(status(monitor, POWER), holds=True, stale=False, why="holds (shr.power = 20)")


def test_hold_counts_source_time_not_the_clock(monitor: InterlockMonitor, clock: FakeClock) -> None:
    feed(monitor, "shr.power", [0], [20])
    clock.now += 4.9  # wall time passes, but no later sample: the hold has not grown
    assert_status(status(monitor, POWER), holds=False, stale=False, why="held 0 s of 5 s")
    feed(monitor, "shr.power", [5], [20])  # 5 s of plant time in one step of the clock
    assert status(monitor, POWER).holds


def test_zero_hold_holds_on_the_first_good_sample(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.door", [0], [1])
    assert_status(status(monitor, DOOR), holds=True, stale=False, why="shr.door == 1: holds")


def test_condition_false_is_false_not_stale(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [0, 10], [20, 5])
    assert_status(status(monitor, POWER), holds=False, stale=False, why="shr.power = 5, needs > 10")


BREAKS: dict[str, tuple[float, int]] = {
    "uncertain": (20.0, Quality.UNCERTAIN),
    "bad": (20.0, Quality.BAD),
    "stale": (20.0, Quality.STALE),
    "condition_false": (5.0, Quality.GOOD),
    "nan": (math.nan, Quality.GOOD),
}


@pytest.mark.parametrize("defect", list(BREAKS))
def test_one_defective_sample_inside_a_batch_restarts_the_hold(
    monitor: InterlockMonitor, defect: str
) -> None:
    t = list(range(11))  # 0..10 s: held 10 s if every sample were fine
    values = [20.0] * 11
    quality = [int(Quality.GOOD)] * 11
    values[6], quality[6] = BREAKS[defect]
    feed(monitor, "shr.power", t, values, quality)
    # The batch's last sample is fine, but the hold runs only from t = 7 s.
    assert_status(status(monitor, POWER), holds=False, stale=False, why="held 3 s of 5 s")
    feed(monitor, "shr.power", [11], [20])
    assert not status(monitor, POWER).holds
    feed(monitor, "shr.power", [12], [20])
    assert status(monitor, POWER).holds


def test_the_same_batch_without_a_defect_holds(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", list(range(11)), [20.0] * 11)
    assert status(monitor, POWER).holds


def test_hold_is_restarted_across_batches_too(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4, 5, 6], [20] * 7)
    assert status(monitor, POWER).holds
    feed(monitor, "shr.power", [7], [20], [Quality.UNCERTAIN])
    feed(monitor, "shr.power", [8, 9, 10], [20] * 3)
    assert_status(status(monitor, POWER), holds=False, stale=False, why="held 2 s of 5 s")


# -- latest sample not good, freshness ------------------------------------------------------------


@pytest.mark.parametrize("quality", [Quality.UNCERTAIN, Quality.BAD, Quality.STALE])
def test_latest_sample_not_good_is_stale(monitor: InterlockMonitor, quality: Quality) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4, 5, 6], [20] * 7)
    feed(monitor, "shr.power", [7], [20], [quality])
    assert_status(status(monitor, POWER), holds=False, stale=True, why=f"latest sample is {quality.label}")


def test_stale_when_no_good_sample_for_more_than_fresh_s(monitor: InterlockMonitor, clock: FakeClock) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4, 5], [20] * 6)
    clock.now += 5.0  # exactly fresh_s: still fresh
    assert status(monitor, POWER).holds
    clock.now += 0.5
    assert_status(status(monitor, POWER), holds=False, stale=True, why="stale, no good sample for")
    # After a silence longer than fresh_s the hold starts again from the next good sample:
    # nobody saw the condition hold in between.
    feed(monitor, "shr.power", [6], [20])
    assert_status(status(monitor, POWER), holds=False, stale=False, why="held 0 s of 5 s")
    feed(monitor, "shr.power", [7, 8, 9, 10, 11], [20] * 5)
    assert status(monitor, POWER).holds


def test_not_good_samples_do_not_keep_an_interlock_fresh(monitor: InterlockMonitor, clock: FakeClock) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4, 5], [20] * 6)
    clock.now += 3.0
    feed(monitor, "shr.power", [6], [20], [Quality.BAD])
    assert_status(status(monitor, POWER), holds=False, stale=True, why="latest sample is bad")
    clock.now += 2.5  # 5.5 s since the last GOOD sample, 2.5 s since the bad one
    assert_status(status(monitor, POWER), holds=False, stale=True, why="stale, no good sample for")


def test_freshness_is_per_tag(monitor: InterlockMonitor, clock: FakeClock) -> None:
    feed(monitor, ["shr.power", "shr.door"], [0, 0], [20, 1])
    clock.now += 4.0
    feed(monitor, "shr.door", [4], [1])
    clock.now += 3.0  # power: 7 s without a good sample; door: 3 s
    assert status(monitor, POWER).stale
    assert_status(status(monitor, DOOR), holds=True, stale=False, why="holds")


# -- NaN ------------------------------------------------------------------------------------------


def test_nan_value_is_not_good(monitor: InterlockMonitor, clock: FakeClock) -> None:
    # "!= 0" is true for NaN: only treating NaN as not good keeps this interlock from holding.
    feed(monitor, "dry.fan", [0], [3])
    assert status(monitor, FAN).holds
    feed(monitor, "dry.fan", [1], [math.nan])
    assert_status(status(monitor, FAN), holds=False, stale=True, why="not a number")
    clock.now += 5.5  # and a NaN did not refresh the tag: the last good sample is 5.5 s old
    assert_status(status(monitor, FAN), holds=False, stale=True, why="stale, no good sample for")


def test_infinite_value_is_not_good(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4, 5, 6], [20, 20, 20, 20, 20, 20, math.inf])
    s = status(monitor, POWER)
    assert not s.holds
    assert s.stale


# -- several interlocks, several tags -------------------------------------------------------------


def test_identical_interlocks_of_two_setpoints_share_state(monitor: InterlockMonitor) -> None:
    sp1 = CONFIG.control.setpoints["shr.feed_rate_sp"].interlocks
    sp2 = CONFIG.control.setpoints["shr.speed_sp"].interlocks
    assert sp1[0] == sp2[0]
    assert sp1[0] is not sp2[0]  # two parsed objects, one interlock
    assert len(monitor._interlocks) == 4  # POWER_ON once, POWER_SANE, DOOR_SHUT, FAN_RUNNING
    feed(monitor, "shr.power", [0, 1, 2, 3], [20] * 4)
    assert monitor.status(sp1[:1]) == monitor.status(sp2[:1])
    feed(monitor, "shr.power", [4, 5, 6, 7, 8, 9], [20, 20, 5, 20, 20, 20])
    assert monitor.status(sp1[:1]) == monitor.status(sp2[:1])
    assert "held 2 s of 5 s" in monitor.status(sp2[:1])[0].why  # restarted at t = 7 s


def test_interlocks_on_one_tag_are_independent(monitor: InterlockMonitor) -> None:
    feed(monitor, "shr.power", [0, 1, 2, 3, 4, 5], [250] * 6)
    assert status(monitor, POWER).holds
    assert_status(status(monitor, SANE), holds=False, stale=False, why="shr.power = 250, needs < 200")
    feed(monitor, "shr.power", [6], [150])
    assert status(monitor, SANE).holds
    assert status(monitor, POWER).holds  # 150 > 10 as well: its hold was never broken


def test_mixed_batch_goes_to_each_tag_in_order(monitor: InterlockMonitor) -> None:
    names = ["feed.total", "shr.power", "shr.door", "bm.total", "shr.power", "shr.door", "shr.power"]
    feed(monitor, names, [0, 0, 0, 1, 3, 3, 6], [1.0, 20, 1, 2.0, 20, 0, 20])
    assert status(monitor, POWER).holds
    assert_status(status(monitor, DOOR), holds=False, stale=False, why="shr.door = 0, needs == 1")
    assert [s.holds for s in monitor.status([POWER, DOOR, FAN])] == [True, False, False]


def test_observe_takes_a_pipeline_update(monitor: InterlockMonitor) -> None:
    power = CONFIG.tag_index("shr.power")
    samples = SampleColumns(
        tag=np.full(6, power, np.int32),
        t=T0 + np.arange(6, dtype=np.float64),
        value=np.full(6, 20.0),
        quality=np.zeros(6, np.int8),
    )
    monitor.observe(pipeline_update(t_plant=T0 + 5, samples=samples))
    assert status(monitor, POWER).holds
