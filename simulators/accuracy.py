"""Scores the gateway's yield pipeline against the simulator's ground truth, offline.

One run = one scenario and seed: the plant, its sensor layer and the truth recorder run in
plant time exactly as `linegate simulate` runs them, but instead of serving the readings over
OPC-UA and MQTT they go straight into the gateway's own `YieldPipeline` as sample batches (the
same code the daemon runs; only the network is skipped, so a day of plant time takes seconds).
Tags are bound to plant signals as the simulator binds them (`simulators.runner.bind_tags`).
Silence is judged on plant time (the daemon judges it on wall time; offline they are the same
clock). The published figures are then compared with the truth record:

- per horizon (4 h rolling, shift): error e = published - true in percentage points, over the
  figures the gateway published as GOOD; bias, RMSE, P95 and max |e|; coverage of the
  published +-2 sigma band; availability (share of figures published GOOD);
- per injected fault (truth `event` records): the delay to the first alarm of the kind that
  should catch it; alarms raised on fault-free runs count as false alarms.
"""

from __future__ import annotations

import math
import tempfile
import tomllib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import LineConfig, parse_config
from gateway.pipeline import YieldPipeline
from gateway.ports import YieldFigure
from gateway.samples import Quality, SampleBatch
from gateway.silence_watch import SilenceWatch
from simulators.plant import Plant
from simulators.runner import (
    DEFAULT_START,
    ScenarioClock,
    _scenario_header,
    bind_tags,
    check_scenario,
    plant_params_for,
)
from simulators.scenario import Scenario, load_scenario
from simulators.sensors import SensorLayer
from simulators.truth import TruthRecorder, read_truth

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config" / "line1.toml"


@dataclass(frozen=True, slots=True)
class Published:
    """One figure as the gateway published it (plant time of its window end)."""

    t: float
    value: float
    uncertainty: float | None
    quality: Quality


@dataclass
class RunRecord:
    """Everything one offline run produced, for scoring."""

    scenario: str
    seed: int
    hours: float
    # The gateway's yield settings in this run (the windows the figures describe).
    window_h: float = 4.0
    delay_s: float = 0.0
    bin_s: float = 10.0
    max_gap_s: float = 120.0
    rolling: list[Published] = field(default_factory=list)
    shifts: list[Published] = field(default_factory=list)
    # Closed-out lots: (lot number, published figure, feed tonnes the gateway assigned to it).
    lots: list[tuple[int, Published, float]] = field(default_factory=list)
    truth_lots: list[dict[str, Any]] = field(default_factory=list)
    # (plant time, alarm kind, source) of every alarm raised, in order.
    alarms: list[tuple[float, str, str]] = field(default_factory=list)
    # Spikes the sensor layer injected on configured tags, and samples the gateway flagged as
    # spikes: (plant time, tag name) each.
    spikes_injected: list[tuple[float, str]] = field(default_factory=list)
    spikes_flagged: list[tuple[float, str]] = field(default_factory=list)
    despiked_tags: list[str] = field(default_factory=list)
    truth_rows: list[dict[str, Any]] = field(default_factory=list)
    truth_shifts: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def gateway_config(
    transport_delay_min: float, base: Path = DEFAULT_CONFIG, rollover: dict[str, float] | None = None
) -> LineConfig:
    """The shipped line config, without outputs or control, with the scenario's delay.

    A configured delay too long for the configured window (S8 sets it 50 % too long) gets the
    window widened to whole hours, as an engineer would have to for the config to load."""
    data = tomllib.loads(base.read_text(encoding="utf-8"))
    data.pop("outputs", None)
    data.pop("control", None)
    y = data["yield"]
    y["transport_delay_min"] = transport_delay_min
    y["window_h"] = max(float(y.get("window_h", 4.0)), math.ceil(2 * transport_delay_min / 60))
    for tag in data["tags"]:
        if tag["name"] in (rollover or {}):
            tag["rollover"] = rollover[tag["name"]]  # type: ignore[index]
    return parse_config(data, str(base))


def run(
    scenario: Scenario,
    *,
    seed: int,
    hours: float | None = None,
    measure_every_s: float = 2.0,
    tick_every_s: float = 10.0,
    config_path: Path = DEFAULT_CONFIG,
) -> RunRecord:
    """Run one scenario offline through the gateway pipeline and collect what it published."""
    params = plant_params_for(scenario, None)
    check_scenario(scenario, params, broker=None)
    plant = Plant(params, seed=seed)
    sensors = SensorLayer.default(seed=seed)
    hours = hours if hours is not None else scenario.hours
    header = _scenario_header(scenario, plant)
    config = gateway_config(
        float(header["gateway_transport_delay_min"]),  # type: ignore[arg-type]
        config_path,
        dict(scenario.gateway.rollover),
    )
    bindings = bind_tags(config)
    index = [(config.tag_index(b.tag), b.signal, b.factor) for b in bindings]
    pipeline = YieldPipeline(config)
    silence = SilenceWatch(config)
    y = config.yield_
    record = RunRecord(scenario.id, seed, hours, y.window_h, y.transport_delay_min * 60, y.bin_s, y.max_gap_s)
    record.despiked_tags = [t.name for t in config.tags if t.despike is not None]
    served = {b.signal for b in bindings}
    t0 = DEFAULT_START.timestamp()
    total = round(hours * 3600.0 / plant.dt_s)
    every = max(1, round(measure_every_s / plant.dt_s))
    per_tick = max(1, round(tick_every_s / measure_every_s))
    active: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        truth_path = Path(tmp) / "truth.jsonl"
        with TruthRecorder(
            truth_path,
            plant,
            start=DEFAULT_START,
            window_h=config.yield_.window_h,
            shift_h=config.yield_.shift_h,
            shift_start_hour=config.yield_.shift_start.hour + config.yield_.shift_start.minute / 60,
            scenario=header,
        ) as truth:
            clock = ScenarioClock(plant, sensors, scenario, t0_epoch=t0, truth=truth)
            cols: list[tuple[int, float, float]] = []
            n_measured = 0
            while plant.steps < total:
                clock.advance_to(min(total, plant.steps + every))
                now = t0 + plant.t_s
                readings = sensors.measure_timed(plant.signals(), now)
                record.spikes_injected += [
                    (sp.t, sp.signal) for sp in sensors.drain_spikes() if sp.signal in served
                ]
                for k, signal, factor in index:
                    got = readings.get(signal)
                    if got is not None:
                        cols.append((k, got[1], got[0] * factor))
                n_measured += 1
                if n_measured % per_tick:
                    continue
                _tick(pipeline, silence, cols, now, record, active)
                cols = []
            truth.close(plant)
        _, record.truth_rows = read_truth(truth_path, "window")
        _, record.truth_shifts = read_truth(truth_path, "shift")
        _, record.events = read_truth(truth_path, "event")
        _, record.truth_lots = read_truth(truth_path, "lot")
    return record


def _run_named(job: tuple[str, int, float]) -> RunRecord:
    name, seed, hours = job
    return run(load_scenario(name), seed=seed, hours=hours)


def run_many(jobs: Sequence[tuple[str, int, float]], workers: int) -> list[RunRecord]:
    """`run` for each (scenario name, seed, hours), in `workers` processes, in the jobs' order."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_named, jobs))


def _tick(
    pipeline: YieldPipeline,
    silence: SilenceWatch,
    cols: list[tuple[int, float, float]],
    now: float,
    record: RunRecord,
    active: set[str],
) -> None:
    if cols:
        arr = np.array(cols, dtype=np.float64)
        tag = arr[:, 0].astype(np.int32)
        batch = SampleBatch(
            tag=tag,
            t=arr[:, 1].copy(),
            value=arr[:, 2].copy(),
            quality=np.zeros(len(tag), np.int8),
            status=np.zeros(len(tag), np.uint32),
        )
    else:
        batch = SampleBatch.empty()
    silence.observe(batch, now)
    # Offline, plant time is the arrival clock: samples arrive when they were measured.
    update = pipeline.tick(batch, arrival=now)
    spike_tag, spike_t = pipeline.last_spikes
    record.spikes_flagged += [
        (float(t), pipeline.tag_names[k]) for k, t in zip(spike_tag, spike_t, strict=True)
    ]
    stale = silence.overdue(now, pipeline.last_quality)
    if len(stale):
        # As the runtime does: the mark goes through the pipeline like a sample.
        pipeline.tick(
            SampleBatch(
                tag=stale.astype(np.int32),
                t=pipeline.last_t[stale].copy(),
                value=np.full(len(stale), math.nan),
                quality=np.full(len(stale), int(Quality.STALE), np.int8),
                status=np.zeros(len(stale), np.uint32),
            )
        )
    y = update.yield_rolling
    if y is not None and y.value is not None and y.covered_h >= y.window_h:
        record.rolling.append(_published(y))
    record.shifts += [_published(f) for f in update.shifts_completed if f.value is not None]
    record.lots += [
        (int(f.label), _published(f), f.feed_t) for f in update.lots_completed if f.value is not None
    ]
    conditions = pipeline.alarm_conditions(y)
    for aid, (kind, source, _sev, _text) in conditions.items():
        if aid not in active:
            record.alarms.append((now, kind, source))
    active.clear()
    active.update(conditions)


def _published(y: YieldFigure) -> Published:
    assert y.value is not None
    return Published(y.t, y.value, y.uncertainty, y.quality)


# --- scoring ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HorizonScore:
    """Errors of one horizon's GOOD figures against truth, in percentage points of yield."""

    n: int
    availability: float  # share of figures that were GOOD
    bias_pp: float
    rmse_pp: float
    p95_pp: float
    max_pp: float
    coverage: float  # share of GOOD figures whose +-2 sigma band holds the truth
    # Root mean square of error / sigma, about zero: ~1 when the band is honest. Not the std
    # about the sample mean: the weighers' span errors are drawn once per seed, so a few seeds
    # share a bias the band must cover, and subtracting the sample mean would hide it.
    z_rms: float

    def as_row(self) -> dict[str, float]:
        return {
            "n": self.n,
            "availability": self.availability,
            "bias_pp": self.bias_pp,
            "rmse_pp": self.rmse_pp,
            "p95_pp": self.p95_pp,
            "max_pp": self.max_pp,
            "coverage": self.coverage,
            "z_rms": self.z_rms,
        }


def score_series(published: Sequence[Published], truth: Sequence[float | None]) -> HorizonScore:
    """Score figures against the true value of each (`truth[i]` for `published[i]`; None: unknown)."""
    errors: list[float] = []
    sigmas: list[float] = []
    good = 0
    for p, true in zip(published, truth, strict=True):
        if p.quality is not Quality.GOOD:
            continue
        good += 1
        if true is None:
            continue
        errors.append((p.value - true) * 100.0)
        sigmas.append((p.uncertainty or 0.0) * 100.0 / 2.0)
    if not errors:
        return HorizonScore(0, good / max(1, len(published)), *(math.nan,) * 6)
    e = np.array(errors)
    s = np.array(sigmas)
    inside = np.abs(e) <= 2.0 * s
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, e / s, np.nan)
    return HorizonScore(
        n=len(e),
        availability=good / len(published),
        bias_pp=float(e.mean()),
        rmse_pp=float(np.sqrt((e**2).mean())),
        p95_pp=float(np.percentile(np.abs(e), 95)),
        max_pp=float(np.abs(e).max()),
        coverage=float(inside.mean()),
        z_rms=float(np.sqrt(np.nanmean(z**2))) if np.isfinite(z).any() else math.nan,
    )


def truth_lookup(rows: Sequence[dict[str, Any]], key: str = "yield_rolling") -> Any:
    """`truth_at(t)`: the truth row's value at exactly plant time t (rows every record_every_s),
    interpolated between the two neighbouring rows otherwise."""
    times = np.array([r["t"] for r in rows], np.float64)
    values = np.array([np.nan if r[key] is None else r[key] for r in rows], np.float64)

    def at(t: float) -> float | None:
        i = int(np.searchsorted(times, t))
        if i < len(times) and times[i] == t:
            v = values[i]
        elif 0 < i < len(times):
            w = (t - times[i - 1]) / (times[i] - times[i - 1])
            v = values[i - 1] * (1 - w) + values[i] * w
        else:
            return None
        return None if math.isnan(v) else float(v)

    return at
