"""Test data builders: the `gateway.ports` dataclasses an output driver consumes, with typical values.

Plain functions with keyword-only parameters: every field but the time has a plausible default, so
a test names only the fields it is about and keeps its type checking (no `**kwargs: Any`).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.ports import FlowFigure, PipelineUpdate, SampleColumns, SignalState, YieldFigure
from gateway.samples import Quality


def yield_figure(
    *,
    t: float,
    value: float | None = 0.41237,
    uncertainty: float | None = 0.0123,
    quality: Quality = Quality.GOOD,
    coverage: float = 0.97,
    window_h: float = 4.0,
    covered_h: float = 4.0,
    delay_min: float = 95.0,
    basis: str = "wet",
    feed_t: float = 6.6,
    black_mass_t: float = 2.72164,
) -> YieldFigure:
    """A rolling-yield figure; the defaults are a full, good 4 h window on the wet basis."""
    return YieldFigure(
        t=t,
        value=value,
        uncertainty=uncertainty,
        quality=quality,
        coverage=coverage,
        window_h=window_h,
        covered_h=covered_h,
        delay_min=delay_min,
        basis=basis,
        feed_t=feed_t,
        black_mass_t=black_mass_t,
    )


def pipeline_update(
    *,
    t_plant: float,
    signals: Sequence[SignalState] = (),
    samples: SampleColumns | None = None,
    yield_rolling: YieldFigure | None = None,
    flows: FlowFigure | None = None,
    tag_names: Sequence[str] = (),
) -> PipelineUpdate:
    """One pipeline tick's output; by default it carries nothing but its plant time."""
    return PipelineUpdate(
        t_plant=t_plant,
        signals=list(signals),
        samples=samples if samples is not None else SampleColumns.empty(),
        yield_rolling=yield_rolling,
        flows=flows,
        tag_names=list(tag_names),
    )
