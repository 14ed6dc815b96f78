"""A tick's signals as columns (`gateway.ports.SignalColumns`) and the outputs that read them.

The pipeline hands its changed tags over as arrays; `SignalState` objects appear only when a
consumer asks for one. Every consumer must see exactly what it saw from a list of objects.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest

from drivers.mqtt_output import MqttOperatorOutput
from gateway.alarms import AlarmBoard, Severity
from gateway.config import load_config
from gateway.pipeline import YieldPipeline
from gateway.ports import PipelineUpdate, SampleColumns, SignalColumns, SignalState
from gateway.samples import Quality, SampleBatch
from gateway.terminal_view import TerminalView

if TYPE_CHECKING:
    from gateway.runtime import Runtime

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "line1.toml")
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
NAMES = ["a", "b", "c", "d"]
UNITS = ["ppm", "kW", "°C", "t"]


def _columns() -> SignalColumns:
    return SignalColumns(
        tag=np.array([0, 2, 3], np.int64),
        t=np.array([T0, T0 + 1.5, math.nan]),
        value=np.array([5.5, math.nan, -0.0]),
        quality=np.array([Quality.GOOD, Quality.BAD, Quality.STALE], np.int8),
        names=NAMES,
        units=UNITS,
    )


def _batch(tag: list[int], t: list[float], value: list[float], quality: list[int]) -> SampleBatch:
    return SampleBatch(
        tag=np.array(tag, np.int32),
        t=np.array(t),
        value=np.array(value),
        quality=np.array(quality, np.int8),
        status=np.zeros(len(tag), np.uint32),
    )


def _update(signals: SignalColumns | list[SignalState]) -> PipelineUpdate:
    return PipelineUpdate(
        t_plant=T0, signals=signals, samples=SampleColumns.empty(), yield_rolling=None, flows=None
    )


def test_columns_are_a_sequence_of_signal_states() -> None:
    columns = _columns()
    assert len(columns) == 3
    first = SignalState("a", "ppm", T0, 5.5, Quality.GOOD)
    assert columns[0] == first
    assert columns[-1].name == "d"
    assert columns[-1].quality is Quality.STALE
    assert math.copysign(1.0, columns[-1].value) == -1.0  # -0.0 stays -0.0
    assert [s.name for s in columns[1:]] == ["c", "d"]
    assert [s.name for s in columns] == ["a", "c", "d"]
    assert first in columns
    with pytest.raises(IndexError):
        columns[3]
    assert len(SignalColumns.empty()) == 0
    assert list(SignalColumns.empty()) == []


def test_rows_hold_the_same_data_as_the_objects_as_plain_python_scalars() -> None:
    rows = _columns().rows()
    assert [(n, u, q) for n, u, _, _, q in rows] == [("a", "ppm", 0), ("c", "°C", 2), ("d", "t", 3)]
    assert [type(x) for x in rows[0]] == [str, str, float, float, int]
    for row, state in zip(rows, _columns(), strict=True):
        assert repr(row) == repr((state.name, state.unit, state.t, state.value, int(state.quality)))


def test_an_update_gives_rows_from_columns_and_from_objects_alike() -> None:
    columns = _columns()
    assert repr(_update(columns).signal_rows()) == repr(_update(list(columns)).signal_rows())
    assert _update([]).signal_rows() == []


def test_the_mqtt_output_folds_a_pipeline_tick_as_it_folds_signal_objects() -> None:
    assert CONFIG.outputs.mqtt is not None
    pipeline = YieldPipeline(CONFIG)
    h2, power = CONFIG.tag_index("gas.h2"), CONFIG.tag_index("shr.power")
    ticks = [
        _batch([h2, power], [T0, T0], [5.0, 100.0], [0, 0]),
        _batch([h2, h2, power], [T0 + 1, T0 + 2, T0 + 1], [6.0, 7.25, 900.0], [0, 1, 0]),
        _batch([h2], [T0 + 2], [math.nan], [Quality.STALE]),  # the runtime's stale mark
    ]
    by_columns = MqttOperatorOutput(CONFIG.outputs.mqtt, CONFIG)
    by_objects = MqttOperatorOutput(CONFIG.outputs.mqtt, CONFIG)
    for batch in ticks:
        update = pipeline.tick(batch)
        assert isinstance(update.signals, SignalColumns)
        by_columns._fold(update)
        by_objects._fold(replace(update, signals=list(update.signals)))
        assert by_columns.latest == by_objects.latest
        assert by_columns.pending == by_objects.pending
    assert by_columns.bad_updates == 0
    signals = {t.split("/signals/")[1]: p for t, p in by_columns.latest.items() if "/signals/" in t}
    assert signals == {
        "gas.h2": b'{"value":null,"unit":"ppm","quality":"stale","timestamp":"2024-05-01T12:00:02.000Z"}',
        "shr.power": b'{"value":900.0,"unit":"kW","quality":"bad","timestamp":"2024-05-01T12:00:01.000Z"}',
    }


def test_the_terminal_view_shows_the_latest_row_of_each_tag() -> None:
    pipeline = YieldPipeline(CONFIG)
    out = io.StringIO()
    runtime = cast("Runtime", SimpleNamespace(health={}, alarms=AlarmBoard()))
    view = TerminalView(CONFIG, runtime, out, every_s=0.0)
    view.tty = True  # draw the full screen, signal rows included
    h2, power = CONFIG.tag_index("gas.h2"), CONFIG.tag_index("shr.power")
    view.on_update(pipeline.tick(_batch([h2, power], [T0, T0], [5.0, 100.0], [0, 0])))
    view.on_update(pipeline.tick(_batch([power], [T0 + 1], [900.0], [0])))
    screen = out.getvalue().split("\x1b[H\x1b[2J")[-1]
    plain = re.sub(r"\x1b\[\d+m", "", screen)
    rows = [line.split() for line in plain.splitlines() if line.startswith("  ")]
    # Config order (shr.power before gas.h2), each tag's newest value, unit and quality.
    assert rows == [["shr.power", "900.000", "kW", "bad"], ["gas.h2", "5.000", "ppm", "good"]]


def test_the_terminal_view_names_the_active_alarms_most_urgent_first() -> None:
    board = AlarmBoard()
    runtime = cast("Runtime", SimpleNamespace(health={}, alarms=board))
    out = io.StringIO()
    view = TerminalView(CONFIG, runtime, out, every_s=0.0)
    view.tty = False  # the one-line form, as in a log
    pipeline = YieldPipeline(CONFIG)
    power = CONFIG.tag_index("shr.power")
    view.on_update(pipeline.tick(_batch([power], [T0], [100.0], [0])))
    assert "| alarms: none |" in out.getvalue()
    board.update(
        {f"tag_bad:t{i}": ("tag_bad", f"t{i}", Severity.WARNING, "bad quality") for i in range(3)}
        | {"zero_drift:bw_feed.rate": ("zero_drift", "bw_feed.rate", Severity.ALARM, "re-zero")},
        T0,
    )
    view.on_update(pipeline.tick(_batch([power], [T0 + 1], [100.0], [0])))
    last = out.getvalue().splitlines()[-1]
    assert "alarms: alarm zero_drift:bw_feed.rate, warning tag_bad:t0, warning tag_bad:t1 +1 more |" in last
