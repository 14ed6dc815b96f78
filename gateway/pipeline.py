"""The signal pipeline: one `tick` turns a bus batch into a `PipelineUpdate` for the outputs.

It owns the per-tag and per-stream state arrays the numba kernels update in place, and turns
the kernels' numbers into typed figures with quality. Per tick: despike (Hampel chain, spikes
confirmed when lone), condition (range, order), accumulate the balance totalizers onto the
plant-time rings, run the fault monitor (detectors, delay estimate, the feed weigher paired
with the airlock scale), then read the rolling, shift and lot yields off the rings with the
feed reconciled to the scale where it can be. A yield is GOOD only when its windows are
covered by good data to `min_coverage` and both balance tags are currently good and not stuck;
otherwise it is UNCERTAIN (or BAD with no value when it cannot be computed at all).

A tick hands the outputs the tags that changed as columns (`SignalColumns`), never one Python
object per tag: at 1,000 tags those objects took some 40 times as long as the kernels.
"""

from __future__ import annotations

import math

import numpy as np

from gateway import conditioning, detectors, kernels
from gateway.alarms import Severity, alarm_id
from gateway.config import LineConfig
from gateway.fault_monitor import FaultMonitor
from gateway.kpis import KpiConfig, KpiFigures, KpiTracker
from gateway.lot_yield import LotFigure, LotTracker
from gateway.ports import FlowFigure, PipelineUpdate, SampleColumns, SignalColumns, SignalState, YieldFigure
from gateway.samples import Quality, SampleBatch
from gateway.shift_yield import ShiftYieldTracker, window_totals
from gateway.spike_confirmation import SpikeConfirmation
from gateway.weigher_reference import fill_pair_rings

FEED = 0
BLACK_MASS = 1
# Ring rows of the feed reference check: cumulative belt and scale mass of the batch pairs.
PAIR_BELT = 2
PAIR_REF = 3
# The feed of a window is reconciled to the scale only when pairs cover this share of it.
MIN_PAIRED_SHARE = 0.5
# Flows shown to operators average the newest few minutes of the balance totals.
FLOW_AVERAGING_S = 300.0
_NO_SPIKES = (np.zeros(0, np.int64), np.zeros(0))
# A lot fed for less than this many transport delays gets an UNCERTAIN figure.
MIN_LOT_DELAYS = 2
# A delay estimate may move the windows up to this multiple of the configured delay.
MAX_DELAY_FACTOR = 3


class YieldPipeline:
    def __init__(self, config: LineConfig) -> None:
        self.config = config
        y = config.yield_
        tags = config.tags
        n = len(tags)
        self.tag_names = [t.name for t in tags]
        self.tag_units = [t.unit for t in tags]
        self.lo = np.array([t.range[0] for t in tags], np.float64)
        self.hi = np.array([t.range[1] for t in tags], np.float64)
        self.tag_stream = np.full(n, kernels.NO_STREAM, np.int64)
        self.tag_kind = np.zeros(n, np.int64)
        self.tag_scale = np.ones(n, np.float64)
        self.tag_modulus = np.zeros(n, np.float64)
        self.tag_max_rate = np.full(n, np.inf)
        for i, t in enumerate(tags):
            if t.role != "signal":
                self.tag_stream[i] = FEED if t.role == "feed" else BLACK_MASS
                self.tag_kind[i] = kernels.KIND_TOTAL if t.kind == "total" else kernels.KIND_RATE
                self.tag_scale[i] = t.to_tonnes
                if t.rollover is not None:
                    self.tag_modulus[i] = t.rollover * t.to_tonnes
                if t.max_rate is not None:
                    self.tag_max_rate[i] = t.max_rate * t.to_tonnes
        self.feed_tag = config.tag_index(config.stream_tag("feed").name)
        self.bm_tag = config.tag_index(config.stream_tag("black_mass").name)
        self.sigma_feed = config.stream_tag("feed").sigma_rel
        self.sigma_bm = config.stream_tag("black_mass").sigma_rel

        self.last_t = np.full(n, -np.inf)
        self.last_value = np.full(n, np.nan)
        self.last_quality = np.full(n, int(Quality.STALE), np.int8)
        self.counters = np.zeros((n, 3), np.int64)
        # Samples each tag has had accepted (seen minus dropped) as of the last tick: a tag whose
        # count moved changed in a tick, found in O(tags) rather than by sorting the samples.
        self._accepted = np.zeros(n, np.int64)

        self.bin_s = y.bin_s
        self.window_bins = max(1, round(y.window_h * 3600 / y.bin_s))
        self.delay_bins = round(y.transport_delay_min * 60 / y.bin_s)
        # The windows follow the delay estimate when the configured one is found wrong; the
        # rings hold enough history for an estimate up to MAX_DELAY_FACTOR x the configured one.
        self.monitor = FaultMonitor(config, (self.feed_tag, self.bm_tag))
        self.max_delay_bins = MAX_DELAY_FACTOR * self.delay_bins
        self.average_bins = max(1, round(config.detectors.delay_average_h * 3600 / y.bin_s))
        self.flow_bins = max(1, round(FLOW_AVERAGING_S / y.bin_s))
        self.shift = ShiftYieldTracker(config, FEED, BLACK_MASS, self.sigma_bm, self.feed_estimate)
        margin = max(self.flow_bins, self.average_bins, round(3600 / y.bin_s))
        ring = max(self.window_bins, self.shift.shift_bins) + self.max_delay_bins + margin
        self.st_last_t = np.full(2, np.nan)
        self.st_last_raw = np.zeros(2)
        self.st_last_q = np.zeros(2, np.int8)
        self.st_cum = np.zeros(2)
        # Per stream: totalizer rollovers, resets, implausible jumps (see accumulate_streams).
        self.st_events = np.zeros((2, 3), np.int64)
        self.ring_cum = np.zeros((4, ring))
        self.ring_good = np.zeros((4, ring), np.bool_)
        self.ring_head = np.full(4, -1, np.int64)
        self.ring_first = np.zeros(4, np.int64)
        self.t_plant = math.nan
        self.ticks = 0
        # Despiking (Hampel) of the tags that ask for it, in the fused conditioning chain.
        chain = [
            conditioning.TagConditioning(
                window=t.despike.window,
                n_sigma=t.despike.sigmas,
                s_floor=t.despike.floor,
                s_floor_rel=t.despike.floor_rel,
                max_gap_s=y.max_gap_s,
            )
            if t.despike is not None
            else conditioning.TagConditioning()
            for t in tags
        ]
        self.despiking = any(t.despike is not None for t in tags)
        self.chain_params = conditioning.ChainParams.from_tags(chain)
        self.chain_state = conditioning.ChainState.new(n, max(1, self.chain_params.window_capacity))
        self.spike_confirmation = SpikeConfirmation(self.chain_params)
        self.kpis = kpi_tracker(config)
        self._kpi_feed_seen = 0.0  # the feed stream's cumulative mass at the last KPI update
        self.lot_tag = None if y.lot_tag is None else config.tag_index(y.lot_tag)
        plug_s = y.rtd_plug_min * 60.0
        self.lots = LotTracker(y.bin_s, plug_s, y.transport_delay_min * 60.0 - plug_s, y.rtd_tanks)
        # (tag, time) of the spikes confirmed in the last tick.
        self.last_spikes: tuple[np.ndarray, np.ndarray] = _NO_SPIKES

    def warm_up(self) -> None:
        """Compile (or load from the on-disk cache) every kernel before the service says ready.

        A scratch pipeline ticks both balance streams twice, a few grid bins apart: one sample
        per stream only starts it, and `recent_rate` runs only once a stream has grid intervals.
        Argument types are those of a real tick, so no kernel compiles again on live data.
        """
        detectors.warm_up()
        scratch = YieldPipeline(self.config)
        balance_tags = np.array([self.feed_tag, self.bm_tag], np.int32)
        for t in (1.0, 1.0 + 3 * self.bin_s):
            scratch.tick(
                SampleBatch(
                    tag=balance_tags,
                    t=np.full(2, t),
                    value=np.zeros(2),
                    quality=np.zeros(2, np.int8),
                    status=np.zeros(2, np.uint32),
                )
            )

    def tick(self, batch: SampleBatch, arrival: float | None = None) -> PipelineUpdate:
        """One tick over a drained batch; `arrival` is when it arrived, in the time base of the
        source timestamps (None: unknown; the clock-skew check then skips this batch)."""
        self.ticks += 1
        self._despike(batch)
        cq = kernels.condition_batch(
            batch.tag,
            batch.t,
            batch.value,
            batch.quality,
            self.lo,
            self.hi,
            self.last_t,
            self.last_value,
            self.last_quality,
            self.counters,
        )
        kernels.accumulate_streams(
            batch.tag,
            batch.t,
            batch.value,
            cq,
            self.tag_stream,
            self.tag_kind,
            self.tag_scale,
            self.tag_modulus,
            self.tag_max_rate,
            self.bin_s,
            self.config.yield_.max_gap_s,
            self.st_last_t,
            self.st_last_raw,
            self.st_last_q,
            self.st_cum,
            self.st_events,
            self.ring_cum,
            self.ring_good,
            self.ring_head,
            self.ring_first,
        )
        samples = self._kept_samples(batch, cq)
        if len(samples):
            newest = float(samples.t.max())
            if not math.isnan(newest) and (math.isnan(self.t_plant) or newest > self.t_plant):
                self.t_plant = newest
        feed_rate = kernels.recent_rate(
            self.ring_cum, self.ring_head, self.ring_first, FEED, self.average_bins, self.bin_s
        )
        self.monitor.observe(
            batch.tag,
            batch.t,
            batch.value,
            cq,
            self.last_spikes,
            arrival,
            self.t_plant,
            self.last_value,
            self.last_quality,
            self.st_events,
            float(feed_rate),
        )
        self.delay_bins = min(self.max_delay_bins, round(self.monitor.delay_s() / self.bin_s))
        ref = self.monitor.reference
        if ref is not None and self.ring_head[FEED] >= self.ring_first[FEED]:
            fill_pair_rings(
                self.ring_cum,
                self.ring_head,
                self.ring_first,
                (PAIR_BELT, PAIR_REF),
                (ref.pair_belt_t, ref.pair_ref_t),
                int(self.ring_head[FEED]),
            )
        lots = self._lots(batch, cq)
        kpis = self._kpis(batch, cq)
        shift_running, shifts_completed = self.shift.update(
            self.ring_cum,
            self.ring_good,
            self.ring_head,
            self.ring_first,
            self._inputs_good(),
            self.delay_bins,
        )
        return PipelineUpdate(
            t_plant=self.t_plant,
            signals=self._changed_signals(),
            samples=samples,
            yield_rolling=self._yield(),
            flows=self._flows(),
            tag_names=self.tag_names,
            yield_shift=shift_running,
            shifts_completed=shifts_completed,
            lots_completed=lots,
            kpis=kpis,
        )

    def _kpis(self, batch: SampleBatch, cq: np.ndarray) -> KpiFigures | None:
        """Feed the tick to the KPI tracker; its figures (None without [kpis] or a sample yet)."""
        if self.kpis is None or not math.isfinite(self.t_plant):
            return None
        feed_now = float(self.st_cum[FEED])
        self.kpis.update(
            self.t_plant,
            batch.tag,
            batch.t,
            batch.value,
            cq,
            feed_now - self._kpi_feed_seen,
            self.monitor.running,
        )
        self._kpi_feed_seen = feed_now
        return self.kpis.figures(self.t_plant)

    def _lots(self, batch: SampleBatch, cq: np.ndarray) -> list[YieldFigure]:
        """Feed lot changes to the lot tracker; the lots it closes out, as yield figures."""
        if self.lot_tag is None:
            return []
        mine = np.flatnonzero((batch.tag == self.lot_tag) & (cq <= Quality.UNCERTAIN))
        for i in mine[np.argsort(batch.t[mine], kind="stable")]:
            self.lots.observe_lot(float(batch.t[i]), float(batch.value[i]))
        closed = self.lots.update(
            self.ring_cum, self.ring_head, self.ring_first, FEED, BLACK_MASS, self.delay_bins * self.bin_s
        )
        return [self._lot_figure(lot) for lot in closed]

    def _lot_figure(self, lot: LotFigure) -> YieldFigure:
        feed_t, sigma_feed = lot.feed_t, self.sigma_feed
        start, end = round(lot.t_start / self.bin_s), round(lot.t_end / self.bin_s)
        if lot.value is not None and lot.feed_t > 0:
            feed_t, sigma_feed = self.feed_estimate(end, end - start, lot.feed_t)
        value = lot.black_mass_t / feed_t if lot.value is not None and feed_t > 0 else None
        # GOOD only for a lot fed into a running line (its start a whole residence-time horizon
        # after the black-mass stream began: a lot filling an empty dryer comes out late and
        # spread, beyond what the model knows) and fed for at least twice the delay (the rule
        # for windows): a shorter lot's figure is mostly the residence-time model's say-so.
        started = self.ring_first[BLACK_MASS] * self.bin_s
        settled = lot.t_start >= started + self.lots.rtd.horizon_bins * self.bin_s
        long_enough = lot.t_end - lot.t_start >= MIN_LOT_DELAYS * self.delay_bins * self.bin_s
        good = value is not None and lot.complete and settled and long_enough
        return YieldFigure(
            t=lot.t_end,
            value=value,
            uncertainty=None if value is None else 2.0 * value * math.hypot(sigma_feed, self.sigma_bm),
            quality=Quality.GOOD if good else (Quality.UNCERTAIN if value is not None else Quality.BAD),
            coverage=1.0 if good else 0.0,
            window_h=(lot.t_end - lot.t_start) / 3600.0,
            covered_h=(lot.t_end - lot.t_start) / 3600.0,
            delay_min=self.delay_bins * self.bin_s / 60.0,
            basis=self.config.yield_.basis,
            feed_t=feed_t,
            black_mass_t=lot.black_mass_t,
            horizon="lot",
            label=f"{lot.lot_id:.0f}",
            final=True,
        )

    def _despike(self, batch: SampleBatch) -> None:
        """Run the Hampel chain on the despiked tags and confirm spikes one sample late.

        Values are not edited: the balance runs on totalizers, which are never despiked, and a
        reading shown to operators stays what the instrument said; spikes are counted, alarmed
        when frequent, and listed for the tick (`last_spikes`)."""
        if not self.despiking or not len(batch):
            self.last_spikes = _NO_SPIKES
            return
        out = conditioning.condition(
            self.chain_params, self.chain_state, batch.tag, batch.t, batch.value, batch.quality
        )
        self.last_spikes = self.spike_confirmation.update(batch.tag, batch.t, batch.value, out.flags)

    def feed_estimate(self, end_bin: int, length: int, belt_t: float) -> tuple[float, float]:
        """(feed mass, its 1-sigma relative) over grid intervals (end-length, end].

        With a feed reference (the airlock scale), the belt's mass is reconciled to the scale by
        the ratio of the batch pairs in the same interval, when they cover MIN_PAIRED_SHARE of
        it: the belt's span error and any drift since calibration drop out. Otherwise the belt
        weigher's own reading and class."""
        ref = self.monitor.reference
        if ref is None or length <= 0:
            return belt_t, self.sigma_feed
        pb = window_totals(
            self.ring_cum, self.ring_good, self.ring_head, self.ring_first, PAIR_BELT, end_bin, length
        )
        pr = window_totals(
            self.ring_cum, self.ring_good, self.ring_head, self.ring_first, PAIR_REF, end_bin, length
        )
        if pb is None or pr is None or pb[0] <= 0 or pb[0] < MIN_PAIRED_SHARE * belt_t:
            return belt_t, self.sigma_feed
        return belt_t * pr[0] / pb[0], self.config.detectors.reference_sigma_rel

    def _inputs_good(self) -> bool:
        """Both balance inputs read GOOD now and neither is stuck."""
        return bool(
            self.last_quality[self.feed_tag] == Quality.GOOD
            and self.last_quality[self.bm_tag] == Quality.GOOD
            and not self.monitor.balance_suspect()
        )

    def alarm_conditions(self, y: YieldFigure | None) -> dict[str, tuple[str, str, Severity, str]]:
        """The alarm conditions that hold after this tick (see `gateway.alarms.AlarmBoard`)."""
        out: dict[str, tuple[str, str, Severity, str]] = {}
        for k in np.flatnonzero(self.last_quality >= Quality.BAD):
            name = self.tag_names[k]
            if self.last_quality[k] == Quality.STALE:
                if np.isfinite(self.last_t[k]):  # never reported: not stale, just not started
                    out[alarm_id("tag_stale", name)] = (
                        "tag_stale",
                        name,
                        Severity.WARNING,
                        f"{name}: no fresh data",
                    )
            else:
                out[alarm_id("tag_bad", name)] = ("tag_bad", name, Severity.WARNING, f"{name}: bad quality")
        if y is not None and y.covered_h >= y.window_h and y.quality is not Quality.GOOD:
            out[alarm_id("yield_uncertain", "yield_rolling")] = (
                "yield_uncertain",
                "yield_rolling",
                Severity.WARNING,
                f"rolling yield not trustworthy: coverage {y.coverage:.0%}, inputs not all good",
            )
        out.update(self.monitor.conditions())
        return out

    def signal_states(self) -> list[SignalState]:
        """Latest state of every tag that has reported at least once."""
        return list(self._latest_of(np.flatnonzero(np.isfinite(self.last_t))))

    def _kept_samples(self, batch: SampleBatch, cq: np.ndarray) -> SampleColumns:
        """The tick's samples minus those dropped out of order, with their conditioned quality."""
        dropped = cq == kernels.DROPPED_OUT_OF_ORDER
        if not dropped.any():
            # The usual case: share the batch's columns rather than copy them. The bus drains
            # fresh arrays every tick, so nothing writes to them afterwards.
            return SampleColumns(batch.tag, batch.t, batch.value, cq)
        keep = ~dropped
        return SampleColumns(batch.tag[keep], batch.t[keep], batch.value[keep], cq[keep])

    def _changed_signals(self) -> SignalColumns:
        """Latest state of the tags that accepted a sample this tick (condition_batch counts them)."""
        accepted = self.counters[:, 0] - self.counters[:, 2]
        changed = np.flatnonzero(accepted != self._accepted)
        self._accepted = accepted
        return self._latest_of(changed)

    def _latest_of(self, tags: np.ndarray) -> SignalColumns:
        # Fancy indexing copies, so the snapshot stays as it is while later ticks move on.
        return SignalColumns(
            tag=tags,
            t=self.last_t[tags],
            value=self.last_value[tags],
            quality=self.last_quality[tags],
            names=self.tag_names,
            units=self.tag_units,
        )

    def _yield(self) -> YieldFigure | None:
        y = self.config.yield_
        end, length, feed_t, bm_t, cov_f, cov_bm = kernels.window_yield(
            self.ring_cum,
            self.ring_good,
            self.ring_head,
            self.ring_first,
            FEED,
            BLACK_MASS,
            self.window_bins,
            self.delay_bins,
        )
        if end == 0 and length == 0:
            return None
        coverage = min(cov_f, cov_bm)
        value: float | None = None
        uncertainty: float | None = None
        if length > 0 and feed_t > 0:
            feed_t, sigma_feed = self.feed_estimate(int(end) - self.delay_bins, int(length), float(feed_t))
            value = float(bm_t / feed_t)
            uncertainty = 2.0 * value * math.hypot(sigma_feed, self.sigma_bm)
        inputs_good = self._inputs_good()
        if value is None:
            quality = Quality.BAD
        elif coverage >= y.min_coverage and inputs_good:
            quality = Quality.GOOD
        else:
            quality = Quality.UNCERTAIN
        return YieldFigure(
            t=float(end) * self.bin_s,
            value=value,
            uncertainty=uncertainty,
            quality=quality,
            coverage=float(coverage),
            window_h=y.window_h,
            covered_h=float(length) * self.bin_s / 3600.0,
            delay_min=self.delay_bins * self.bin_s / 60.0,
            basis=y.basis,
            feed_t=float(feed_t),
            black_mass_t=float(bm_t),
        )

    def _flows(self) -> FlowFigure | None:
        if (
            self.ring_head[FEED] < self.ring_first[FEED]
            and self.ring_head[BLACK_MASS] < self.ring_first[BLACK_MASS]
        ):
            return None
        feed = kernels.recent_rate(
            self.ring_cum, self.ring_head, self.ring_first, FEED, self.flow_bins, self.bin_s
        )
        bm = kernels.recent_rate(
            self.ring_cum, self.ring_head, self.ring_first, BLACK_MASS, self.flow_bins, self.bin_s
        )
        nameplate = self.config.line.nameplate
        feed_v = None if math.isnan(feed) else float(feed)
        bm_v = None if math.isnan(bm) else float(bm)
        vs = None
        if feed_v is not None and nameplate.basis == "feed":
            vs = feed_v / nameplate.tonnes_per_hour
        elif bm_v is not None and nameplate.basis == "black_mass":
            vs = bm_v / nameplate.tonnes_per_hour
        t = float(max(self.ring_head[FEED], self.ring_head[BLACK_MASS])) * self.bin_s
        return FlowFigure(t=t, feed_tph=feed_v, black_mass_tph=bm_v, feed_vs_nameplate=vs)


def kpi_tracker(config: LineConfig) -> KpiTracker | None:
    """The KPI tracker the [kpis] section asks for (None: no KPI inputs configured)."""
    k = config.kpis
    if not (k.energy_tags or k.nitrogen_tag or k.condensate_tag):
        return None

    def factor(name: str, units: dict[str, float]) -> float:
        return units.get(config.tags[config.tag_index(name)].unit, 1.0)

    return KpiTracker(
        KpiConfig(
            nameplate_tph=config.line.nameplate.tonnes_per_hour,
            energy_tags=[
                (config.tag_index(n), factor(n, {"kWh": 1.0, "MWh": 1000.0})) for n in k.energy_tags
            ],
            nitrogen_tag=None if k.nitrogen_tag is None else config.tag_index(k.nitrogen_tag),
            condensate_tag=None if k.condensate_tag is None else config.tag_index(k.condensate_tag),
            condensate_factor=1.0
            if k.condensate_tag is None
            else factor(k.condensate_tag, {"kg": 1.0, "t": 1000.0}),
            tank_drop_kg=k.tank_drop_kg,
            window_s=config.yield_.window_h * 3600.0,
            planned=k.planned,
            ev_pack_t=k.ev_pack_t,
        )
    )
