"""Operator KPIs: exact figures on a steady synthetic line, availability against stops, resets
and gaps that never invent energy, and the same figures however the stream is cut into ticks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kpis import KpiConfig, KpiFigures, KpiTracker
from gateway.samples import Quality

HOUR = 3600.0
T0 = 1_700_000_040.0  # a boundary of the 60 s grid; the line starts here
FEED_TPH = 1.7
# Tag indices into an imagined line config: three energy meters (one in MWh), N2, the
# condensate tank, and a tag the KPIs do not use.
E_SHRED, E_DRYER, E_VAC, N2, COND, OTHER = 3, 7, 4, 5, 9, 1
SHRED_KW, DRYER_KW, VAC_KW = 120.0, 100.0, 80.0  # 300 kW in all
N2_NM3H = 50.0
COND_KGH = 40.0
TICK_S = 10.0


def kpi_config(**overrides: object) -> KpiConfig:
    base: dict[str, object] = {
        "nameplate_tph": FEED_TPH,
        "energy_tags": [(E_SHRED, 1.0), (E_DRYER, 1000.0), (E_VAC, 1.0)],
        "nitrogen_tag": N2,
        "condensate_tag": COND,
    }
    return KpiConfig(**(base | overrides))  # type: ignore[arg-type]


def meter(per_hour: float, at_start: float = 0.0) -> Callable[[float], float]:
    """A totalizer counting `per_hour` from the line's start."""
    return lambda t: at_start + per_hour * (t - T0) / HOUR


def tank(emptied_at: list[float], start_kg: float = 500.0, heel_kg: float = 3.0) -> Callable[[float], float]:
    """The condensate tank filling at COND_KGH, emptied to its heel in an instant at each time."""

    def level(t: float) -> float:
        done = [e for e in emptied_at if e <= t]
        if not done:
            return start_kg + COND_KGH * (t - T0) / HOUR
        return heel_kg + COND_KGH * (t - done[-1]) / HOUR

    return level


def steady_readings(emptied_at: list[float] | None = None) -> dict[int, Callable[[float], float]]:
    return {
        E_SHRED: meter(SHRED_KW, 10_000.0),
        E_DRYER: meter(DRYER_KW / 1000.0, 5.0),  # an MWh meter
        E_VAC: meter(VAC_KW),
        N2: meter(N2_NM3H, 123.0),
        COND: tank(emptied_at or []),
        OTHER: meter(1e9),
    }


@dataclass
class Line:
    """A synthetic line read every TICK_S (unless `reports` says a tag is silent)."""

    readings: dict[int, Callable[[float], float]]
    running: Callable[[float], bool] = lambda t: True
    quality: Callable[[int, float], int] = lambda tag, t: int(Quality.GOOD)
    reports: Callable[[int, float], bool] = lambda tag, t: True
    idle_feed_tph: float = 0.0
    offset_s: dict[int, float] = field(default_factory=dict)  # a tag reads this long before the tick


def drive(tracker: KpiTracker, line: Line, t_from: float, t_to: float, tick_s: float = TICK_S) -> KpiFigures:
    """Tick from t_from to t_to (both ticks); the figures at the last tick."""
    ticks = round((t_to - t_from) / tick_s)
    for k in range(ticks + 1):
        t_now = t_from + k * tick_s
        tags = [tag for tag in line.readings if line.reports(tag, t_now)]
        t = np.array([t_now - line.offset_s.get(tag, 0.0) for tag in tags])
        running = line.running(t_now - tick_s / 2)
        tracker.update(
            t_now,
            np.array(tags, np.int32),
            t,
            np.array([line.readings[tag](ti) for tag, ti in zip(tags, t, strict=True)]),
            np.array([line.quality(tag, t_now) for tag in tags], np.int8),
            (FEED_TPH if running else line.idle_feed_tph) * tick_s / HOUR,
            running,
        )
    return tracker.figures(t_from + ticks * tick_s)


def fresh(**overrides: object) -> KpiTracker:
    return KpiTracker(kpi_config(**overrides))


# --- a steady line ---------------------------------------------------------------------------


def test_steady_line_gives_exact_figures_even_across_two_tank_emptyings() -> None:
    tracker = fresh()
    # Emptied between two readings, at 1.5 h and 3.2 h: both inside the window (1 h, 5 h].
    emptied = [T0 + 1.5 * HOUR + 5.0, T0 + 3.2 * HOUR + 5.0]
    fig = drive(tracker, Line(steady_readings(emptied)), T0, T0 + 5 * HOUR)

    assert fig.t_end == T0 + 5 * HOUR
    assert fig.feed_t_window == pytest.approx(4 * FEED_TPH, rel=1e-12)
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)  # 176.5
    assert fig.nitrogen_nm3_per_t == pytest.approx(N2_NM3H / FEED_TPH, rel=1e-9)  # 29.4
    # Each emptying's reading interval loses its 10 s of rise (0.11 kg) rather than invent it.
    made = COND_KGH * 4 - 2 * COND_KGH * TICK_S / HOUR
    assert fig.condensate_kg_per_t == pytest.approx(made / (4 * FEED_TPH), rel=1e-9)
    assert fig.condensate_kg_per_t == pytest.approx(23.5, abs=0.05)
    assert tracker.tank_emptyings == 2
    assert fig.availability == pytest.approx(1.0)
    assert fig.performance == pytest.approx(1.0)
    assert fig.oee == pytest.approx(1.0)
    assert fig.quality is None
    assert fig.oee_assumes_quality_1 is True
    assert fig.ev_equivalents_window == pytest.approx(4 * FEED_TPH / 0.3375)
    assert fig.coverage == 1.0
    assert fig.resets == 0
    assert fig.good is True


def test_readings_behind_the_ticks_do_not_make_the_newest_bin_look_empty() -> None:
    """Ticks every second, meters read every 10 s and a few seconds late: at every tick the
    window ends where all inputs have data, so the figures stay exact."""
    tracker = fresh(window_s=HOUR)
    offsets = {E_SHRED: 3.0, E_DRYER: 7.5, E_VAC: 0.0, N2: 9.0, COND: 4.0}
    line = Line(
        steady_readings(),
        offset_s=offsets,
        reports=lambda tag, t: round(t - T0) % 10 == 0,
    )
    drive(tracker, line, T0, T0 + 1.2 * HOUR, tick_s=1.0)
    for k in range(1, 130):
        fig = drive(tracker, line, T0 + 1.2 * HOUR + k, T0 + 1.2 * HOUR + k, tick_s=1.0)
        assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)
        assert fig.nitrogen_nm3_per_t == pytest.approx(N2_NM3H / FEED_TPH, rel=1e-9)
        assert fig.condensate_kg_per_t == pytest.approx(COND_KGH / FEED_TPH, rel=1e-9)
        assert fig.good


def test_level_noise_on_the_tank_cancels_and_an_emptying_counts_nothing() -> None:
    """Falls of up to tank_drop_kg are level noise and count as they are; a fall beyond it in
    one reading is an emptying."""
    emptied_at = T0 + 2 * HOUR + 5.0
    clean = tank([emptied_at])

    def level(t: float) -> float:
        # 16 kg falls every other reading: noise, under the 20 kg of an emptying.
        return clean(t) + 8.0 * (1 if round((t - T0) / TICK_S) % 2 else -1)

    tracker = fresh()
    fig = drive(tracker, Line(steady_readings() | {COND: level}), T0, T0 + 5 * HOUR)
    # The window's ends telescope (both read -8 kg); the emptying's interval counts nothing, so
    # its two readings' noise stays in the sum: -8 kg before it, +8 kg after.
    made = COND_KGH * 4 - COND_KGH * TICK_S / HOUR - 16.0
    assert fig.condensate_kg_per_t == pytest.approx(made / (4 * FEED_TPH), rel=1e-9)
    assert tracker.tank_emptyings == 1
    assert fig.good


def test_a_tank_that_only_falls_makes_no_condensate() -> None:
    tracker = fresh()
    draining = steady_readings() | {COND: lambda t: 1500.0 - 10.0 * (t - T0) / HOUR}
    fig = drive(tracker, Line(draining), T0, T0 + 5 * HOUR)
    assert fig.condensate_kg_per_t == 0.0
    assert tracker.tank_emptyings == 0


# --- availability and performance ------------------------------------------------------------


def stopped_2h_to_4h(t: float) -> bool:
    return not T0 + 2 * HOUR <= t < T0 + 4 * HOUR


@pytest.mark.parametrize(("planned", "availability"), [(1.0, 0.5), (0.8, 0.625)])
def test_a_line_stopped_half_the_window_halves_availability_not_performance(
    planned: float, availability: float
) -> None:
    tracker = fresh(planned=planned)
    fig = drive(tracker, Line(steady_readings(), running=stopped_2h_to_4h), T0, T0 + 5 * HOUR)
    assert fig.availability == pytest.approx(availability, rel=1e-9)
    assert fig.performance == pytest.approx(1.0, rel=1e-9)
    assert fig.oee == pytest.approx(availability, rel=1e-9)
    assert fig.feed_t_window == pytest.approx(2 * FEED_TPH, rel=1e-9)
    assert fig.ev_equivalents_window == pytest.approx(2 * FEED_TPH / 0.3375, rel=1e-9)


def test_performance_is_the_feed_rate_while_running_against_nameplate() -> None:
    tracker = fresh(nameplate_tph=2.0)
    fig = drive(tracker, Line(steady_readings(), running=stopped_2h_to_4h), T0, T0 + 5 * HOUR)
    assert fig.performance == pytest.approx(FEED_TPH / 2.0, rel=1e-9)
    assert fig.oee == pytest.approx(0.5 * FEED_TPH / 2.0, rel=1e-9)


def test_a_stopped_line_has_no_rates_per_tonne_and_no_performance() -> None:
    tracker = fresh()
    fig = drive(tracker, Line(steady_readings(), running=lambda t: False), T0, T0 + 5 * HOUR)
    assert fig.feed_t_window == 0.0
    assert fig.specific_energy_kwh_per_t is None
    assert fig.nitrogen_nm3_per_t is None
    assert fig.condensate_kg_per_t is None
    assert fig.performance is None
    assert fig.oee is None
    assert fig.availability == 0.0


def test_a_few_minutes_of_run_give_no_performance_however_much_feed_was_weighed() -> None:
    # Feed weighed all along while the shredder stayed under its activity threshold but for the
    # last 10 min: a tonne over minutes of run is no rate against nameplate.
    tracker = fresh()
    line = Line(steady_readings(), running=lambda t: t >= T0 + 5 * HOUR - 600, idle_feed_tph=FEED_TPH)
    fig = drive(tracker, line, T0, T0 + 5 * HOUR)
    assert fig.availability == pytest.approx(600 / (4 * HOUR), rel=0.05)
    assert fig.performance is None
    assert fig.oee is None
    # With 20 min of run it is the feed over the run time again, as it says.
    fig = drive(
        fresh(), Line(steady_readings(), running=lambda t: t >= T0 + 5 * HOUR - 1200), T0, T0 + 5 * HOUR
    )
    assert fig.performance == pytest.approx(1.0, rel=0.05)


def test_a_filling_window_is_not_good_and_availability_counts_only_the_tracked_part() -> None:
    tracker = fresh()
    fig = drive(tracker, Line(steady_readings()), T0, T0 + 2 * HOUR)
    assert fig.availability == pytest.approx(1.0)
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)
    # The first interval of each input is only partly tracked, so it is not counted.
    assert fig.coverage == pytest.approx((2 * 60 - 1) / 240)
    assert fig.good is False


def test_no_data_gives_no_figures() -> None:
    fig = fresh().figures(T0)
    assert fig.feed_t_window == 0.0
    assert fig.specific_energy_kwh_per_t is None
    assert fig.availability is None
    assert fig.coverage == 0.0
    assert fig.good is False


# --- resets, gaps, bad samples ----------------------------------------------------------------


def test_a_totalizer_reset_counts_nothing_for_its_interval_and_spoils_the_window() -> None:
    reset_at = T0 + 3 * HOUR + 5.0
    shred = meter(SHRED_KW, 10_000.0)
    readings = steady_readings() | {
        E_SHRED: lambda t: shred(t) if t < reset_at else SHRED_KW * (t - reset_at) / HOUR
    }
    tracker = fresh()
    fig = drive(tracker, Line(readings), T0, T0 + 5 * HOUR)
    # Neither the drop of 10,600 kWh nor the 5 s counted after the restart: one 10 s interval
    # of the shredder (0.33 kWh) is missing, nothing is invented.
    energy = fig.specific_energy_kwh_per_t * fig.feed_t_window
    assert energy == pytest.approx(300.0 * 4 - SHRED_KW * TICK_S / HOUR, rel=1e-9)
    assert fig.resets == 1
    assert fig.good is False
    assert tracker.resets == 1
    # Once the reset has left the window the figures are good and exact again.
    fig = drive(tracker, Line(readings), T0 + 5 * HOUR + TICK_S, T0 + 7 * HOUR + 60.0)
    assert fig.resets == 0
    assert fig.good is True
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)


def gap_line(gap_from: float, gap_to: float, stale_samples: bool) -> Line:
    """The vacuum pump's meter silent (or sending STALE samples) over [gap_from, gap_to)."""
    in_gap = lambda tag, t: tag == E_VAC and gap_from <= t < gap_to  # noqa: E731
    if stale_samples:
        return Line(steady_readings(), quality=lambda tag, t: int(Quality.STALE) if in_gap(tag, t) else 0)
    return Line(steady_readings(), reports=lambda tag, t: not in_gap(tag, t))


@pytest.mark.parametrize("stale_samples", [False, True])
def test_a_stale_gap_makes_the_figures_not_good_and_invents_no_energy(stale_samples: bool) -> None:
    gap_from, gap_to = T0 + 4 * HOUR + TICK_S, T0 + 4.5 * HOUR
    line = gap_line(gap_from, gap_to, stale_samples)
    tracker = fresh()
    # 20 minutes into the gap: the vacuum pump's energy since its last reading is not there yet.
    fig = drive(tracker, line, T0, T0 + 4 * HOUR + 20 * 60)
    energy = fig.specific_energy_kwh_per_t * fig.feed_t_window
    assert energy == pytest.approx(300.0 * 4 - VAC_KW * 20 / 60, rel=1e-9)
    assert fig.coverage >= 0.9  # the gap alone is too short to fail coverage...
    assert fig.good is False  # ...but an input is stale now
    # The first reading after the gap brings the gap's energy, spread across it: none lost,
    # none invented; the gap's 30 bins are not good, so coverage is 210/240.
    fig = drive(tracker, line, T0 + 4 * HOUR + 20 * 60 + TICK_S, gap_to)
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)
    assert fig.coverage == pytest.approx(210 / 240)
    assert fig.good is False


def test_a_short_closed_gap_keeps_the_figures_good_and_exact() -> None:
    tracker = fresh()
    fig = drive(tracker, gap_line(T0 + 3 * HOUR + TICK_S, T0 + 3 * HOUR + 300.0, False), T0, T0 + 5 * HOUR)
    assert fig.coverage == pytest.approx(235 / 240)
    assert fig.good is True
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)


def test_a_gap_longer_than_the_history_spreads_its_energy_over_the_gap() -> None:
    tracker = fresh()
    fig = drive(tracker, gap_line(T0 + HOUR + TICK_S, T0 + 6 * HOUR, False), T0, T0 + 6 * HOUR + 600.0)
    # The vacuum pump's 5 h delta is spread over the gap; the window holds its last 3 h 50 min.
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)
    assert fig.coverage == pytest.approx(10 / 240)
    assert fig.good is False


def test_bad_uncertain_and_foreign_samples() -> None:
    """A BAD reading is ignored (and the figures are not good while it is the latest), an
    UNCERTAIN one counts but its intervals are not good, other tags never count."""
    bad_at, uncertain_from = T0 + 4 * HOUR, T0 + 4.5 * HOUR
    lone_uncertain = T0 + 4.8 * HOUR + 20.0  # its two intervals lie inside one bin

    def quality(tag: int, t: float) -> int:
        if tag == E_SHRED and t == bad_at:
            return int(Quality.BAD)
        if tag == N2 and (uncertain_from <= t < uncertain_from + 10 * 60 or t == lone_uncertain):
            return int(Quality.UNCERTAIN)
        return int(Quality.GOOD)

    readings = steady_readings()
    shred = readings[E_SHRED]
    readings[E_SHRED] = lambda t: 1e12 if t == bad_at else shred(t)
    line = Line(readings, quality=quality)
    tracker = fresh()
    fig = drive(tracker, line, T0, bad_at)
    assert fig.good is False
    fig = drive(tracker, line, bad_at + TICK_S, T0 + 5 * HOUR)
    assert fig.specific_energy_kwh_per_t == pytest.approx(300.0 / FEED_TPH, rel=1e-9)
    assert fig.nitrogen_nm3_per_t == pytest.approx(N2_NM3H / FEED_TPH, rel=1e-9)
    # Ten minutes of UNCERTAIN N2 (and the interval into it): 11 bins not good; one more for
    # the lone UNCERTAIN reading, though the interval that ends its bin is good.
    assert fig.coverage == pytest.approx(228 / 240)
    assert fig.good is True


def test_out_of_order_and_repeated_samples_change_nothing() -> None:
    tracker, twin = fresh(), fresh()
    line = Line(steady_readings())
    drive(tracker, line, T0, T0 + HOUR)
    drive(twin, line, T0, T0 + HOUR)
    old = T0 + HOUR - 600.0
    tags = np.array([E_SHRED, E_SHRED, N2], np.int32)
    tracker.update(
        T0 + HOUR,
        tags,
        np.array([old, T0 + HOUR, T0 + HOUR]),
        np.array([0.0, 5.0, 0.0]),
        np.zeros(3, np.int8),
        0.0,
        True,
    )
    assert tracker.figures(T0 + HOUR) == twin.figures(T0 + HOUR)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="configured twice"):
        kpi_config(nitrogen_tag=E_SHRED)
    with pytest.raises(ValueError, match="unit factors must be > 0"):
        kpi_config(energy_tags=[(E_SHRED, 0.0)])
    with pytest.raises(ValueError, match="planned must be in"):
        kpi_config(planned=0.0)
    with pytest.raises(ValueError, match="window_s must be at least bin_s"):
        kpi_config(window_s=30.0)
    assert kpi_config().ev_pack_t == pytest.approx(0.3375)
    assert kpi_config().window_s == 4 * HOUR


# --- the same figures however the stream is cut into ticks ----------------------------------


@dataclass
class Step:
    """One 10 s step of a stream: its samples, the feed in it and whether the line ran."""

    t_now: float
    tag: np.ndarray
    t: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    feed_t: float
    running: bool


@dataclass(frozen=True)
class StreamSpec:
    """What a stream is made of (drawn small, so hypothesis can show it when a case fails)."""

    seed: int
    steps: int
    edges: tuple[int, ...]  # where the line starts, stops or changes rate
    running: tuple[bool, ...]  # per segment
    tph: tuple[float, ...]
    reset: int | None
    gap: tuple[int, int]  # the vacuum pump's meter silent over these steps
    uncertain: frozenset[int]
    emptied: frozenset[int]
    cut_share: float


@st.composite
def stream_specs(draw: st.DrawFn) -> StreamSpec:
    """A line with starts and stops, a totalizer reset, a silent meter, UNCERTAIN readings,
    tank emptyings and level noise, readings off the tick grid; and a random cut into ticks."""
    n = draw(st.integers(400, 720))  # 67 to 120 min of 10 s steps: past the 1 h window
    edges = tuple(sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=4)))))
    segments = len(edges) + 1
    gap_from = draw(st.integers(0, n - 1))
    return StreamSpec(
        seed=draw(st.integers(0, 2**32 - 1)),
        steps=n,
        edges=edges,
        running=tuple(draw(st.lists(st.booleans(), min_size=segments, max_size=segments))),
        tph=tuple(draw(st.lists(st.floats(0.5, 2.0), min_size=segments, max_size=segments))),
        reset=draw(st.none() | st.integers(1, n - 1)),
        gap=(gap_from, gap_from + draw(st.integers(0, 60))),
        uncertain=frozenset(draw(st.lists(st.integers(0, n - 1), max_size=5))),
        emptied=frozenset(draw(st.lists(st.integers(1, n - 1), max_size=3))),
        cut_share=draw(st.floats(0.02, 0.9)),
    )


def build_stream(spec: StreamSpec) -> tuple[list[Step], list[int]]:
    """The steps of a stream and the ends of its ticks."""
    rng = np.random.default_rng(spec.seed)
    n = spec.steps
    bounds = [0, *spec.edges, n]
    offsets = rng.uniform(0.0, 9.5, 4)
    shred = np.cumsum(rng.uniform(0.0, 1.0, n))
    if spec.reset is not None:
        shred[spec.reset :] -= shred[spec.reset - 1] - 0.01  # restarted from zero between readings
    vac = 50.0 + np.cumsum(rng.uniform(0.0, 0.5, n))
    nitrogen = np.cumsum(rng.uniform(0.0, 0.2, n))
    level = np.zeros(n)
    for k in range(1, n):
        level[k] = 2.0 if k in spec.emptied else level[k - 1] + rng.uniform(0.0, 0.3)
    level += rng.normal(0.0, 4.0, n)

    steps: list[Step] = []
    for k in range(n):
        seg = int(np.searchsorted(bounds, k, side="right")) - 1
        t_now = T0 + TICK_S * k
        silent = spec.gap[0] <= k < spec.gap[1]
        tags = [E_SHRED, N2, COND, OTHER] + ([] if silent else [E_VAC])
        values = [shred[k], nitrogen[k], level[k], 7.0] + ([] if silent else [vac[k]])
        t = [t_now - offsets[0], t_now - offsets[1], t_now - offsets[2], t_now, t_now - offsets[3]]
        q = [1 if k in spec.uncertain else 0] + [0] * 4
        running = spec.running[seg]
        steps.append(
            Step(
                t_now=t_now,
                tag=np.array(tags, np.int32),
                t=np.array(t[: len(tags)]),
                value=np.array(values),
                quality=np.array(q[: len(tags)], np.int8),
                feed_t=spec.tph[seg] * TICK_S / HOUR if running else 0.0,
                running=running,
            )
        )
    # Ticks end at random steps, and wherever the line starts, stops or changes rate (a tick
    # carries one running state and one feed rate). The first tick, which starts the clock, is
    # the first step in every cut.
    cuts = {k for k in range(1, n) if rng.random() < spec.cut_share} | set(spec.edges) | {1, n}
    return steps, sorted(cuts)


def feed_ticks(
    tracker: KpiTracker, steps: list[Step], cuts: list[int], by_tag: bool
) -> dict[int, KpiFigures]:
    """One tick per run of steps up to each cut; the figures after each tick."""
    out: dict[int, KpiFigures] = {}
    lo = 0
    for hi in cuts:
        part = steps[lo:hi]
        assert len({s.running for s in part}) == 1
        tag = np.concatenate([s.tag for s in part])
        # Samples of different tags may come in any order; each tag's stay in time order.
        order = np.argsort(tag, kind="stable") if by_tag else np.arange(len(tag))
        tracker.update(
            part[-1].t_now,
            tag[order],
            np.concatenate([s.t for s in part])[order],
            np.concatenate([s.value for s in part])[order],
            np.concatenate([s.quality for s in part])[order],
            sum(s.feed_t for s in part),
            part[0].running,
        )
        out[hi] = tracker.figures(part[-1].t_now)
        lo = hi
    return out


def assert_same(a: KpiFigures, b: KpiFigures) -> None:
    for f in dataclasses.fields(KpiFigures):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float) and isinstance(y, float):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (f.name, x, y)
        else:
            assert x == y, (f.name, x, y)


@given(stream_specs())
@settings(max_examples=25, deadline=None)
def test_any_cut_into_ticks_gives_the_same_figures(spec: StreamSpec) -> None:
    steps, cuts = build_stream(spec)
    one_step_ticks = feed_ticks(
        KpiTracker(kpi_config(window_s=HOUR)), steps, list(range(1, len(steps) + 1)), False
    )
    chunked = feed_ticks(KpiTracker(kpi_config(window_s=HOUR)), steps, cuts, False)
    regrouped = feed_ticks(KpiTracker(kpi_config(window_s=HOUR)), steps, cuts, True)
    for k in cuts:
        assert_same(chunked[k], one_step_ticks[k])
        assert_same(regrouped[k], chunked[k])
    last = one_step_ticks[len(steps)]
    assert last.coverage <= 1.0
    assert last.feed_t_window >= 0.0
