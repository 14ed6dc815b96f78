"""The `[detectors]` and `[kpis]` sections of the line config: what the fault detectors and the
operator KPIs read.

Every detector is optional and off unless its inputs are named, so a line without a dryer
load cell or a shredder power reading still loads; cross-references to tags are checked by
`LineConfig` when the file loads.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from gateway.config_base import Model


class Detectors(Model):
    # The line counts as running while this tag reads above `activity_min` (a stuck value is
    # only a fault while the process moves; an idle line is not).
    activity_tag: str | None = None
    activity_min: float = 0.0
    # Tags watched for a stuck value: flat for `stuck_after_s` plant seconds (or 30 samples)
    # while the line runs.
    stuck_tags: list[str] = Field(default_factory=list)
    stuck_after_s: float = Field(default=30.0, gt=0)
    # A tag whose source clock is off from the others' by more than this raises clock_skew
    # (judged on arrival time, so only meaningful when plant time runs at wall speed). 0: off.
    clock_skew_s: float = Field(default=1.0, ge=0)
    # Delay re-estimation from the dryer's hold-up: tau = fixed_delay_min + hold-up / feed rate.
    # Without a hold-up tag the configured delay is used as it is.
    holdup_tag: str | None = None
    fixed_delay_min: float = Field(default=0.0, ge=0)
    # Re-estimate this often (plant seconds) from the last `delay_average_h` of data.
    delay_every_s: float = Field(default=600.0, gt=0)
    delay_average_h: float = Field(default=1.0, gt=0)
    # |tau_est - tau_cfg| beyond this fraction of tau_cfg raises wrong_delay, and the windows use
    # the estimate until the configuration is corrected.
    delay_tolerance: float = Field(default=0.2, gt=0, lt=1)
    # Totalizer rollover/reset alarms stay up this long after the event (plant seconds).
    totalizer_event_hold_s: float = Field(default=900.0, gt=0)
    # A totalizer of the feed weighed statically before the belt (the airlock platform scale):
    # batch by batch it checks the feed belt weigher for zero and span drift, and the yield's
    # feed is reconciled to it (then its uncertainty is `reference_sigma_rel`, 1 sigma).
    feed_reference_tag: str | None = None
    reference_sigma_rel: float = Field(default=0.001, gt=0, lt=0.5)
    # The drift CUSUM learns the noise of its belt-vs-scale blocks (30 min of chained batch
    # pairs) from the pairs themselves; this is the floor of that 1-sigma, relative to a
    # block's reference mass (a 1 kg display: about 0.3 kg in 0.85 t).
    drift_sigma_rel: float = Field(default=0.0003, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _check(self) -> Detectors:
        if self.stuck_tags and self.activity_tag is None:
            raise ValueError("activity_tag: stuck detection needs a tag that says the line runs")
        return self

    def tag_names(self) -> list[tuple[str, str]]:
        """(key, tag name) of every tag this section names, for the cross-check at load."""
        out = [
            ("activity_tag", self.activity_tag),
            ("holdup_tag", self.holdup_tag),
            ("feed_reference_tag", self.feed_reference_tag),
        ]
        out += [(f"stuck_tags[{i}]", t) for i, t in enumerate(self.stuck_tags)]
        return [(k, t) for k, t in out if t is not None]


class Kpis(Model):
    """Operator KPIs over the rolling window: energy, nitrogen and condensate per tonne of feed,
    availability, performance, OEE and electric-vehicle equivalents (gateway.kpis)."""

    # Energy totalizers (kWh or MWh) summed into the specific energy.
    energy_tags: list[str] = Field(default_factory=list)
    nitrogen_tag: str | None = None  # N2 totalizer, Nm3
    condensate_tag: str | None = None  # condensate tank mass (kg), emptied now and then
    # A fall of the tank larger than this between two readings is an emptying, not noise.
    tank_drop_kg: float = Field(default=50.0, gt=0)
    planned: float = Field(default=1.0, gt=0, le=1)  # share of the time the line is planned to run
    ev_pack_t: float = Field(default=13_500 / 40_000, gt=0)  # feed tonnes per electric vehicle

    def tag_names(self) -> list[tuple[str, str]]:
        out = [(f"energy_tags[{i}]", t) for i, t in enumerate(self.energy_tags)]
        out += [("nitrogen_tag", self.nitrogen_tag), ("condensate_tag", self.condensate_tag)]
        return [(k, t) for k, t in out if t is not None]
