"""Is the published +-2 sigma band honest? Coverage of the yield's band over many seeds.

domain.md section 4 asks for 90-98 % coverage of +-2 sigma and a root mean square of error /
sigma near 1. A window's error is dominated by each weigher's span error, which the simulator
draws once per seed (as a plant's weighers carry one calibration error each), so the figures
of one run are not independent trials: one seed is about one trial. Three seeds of the
accuracy report cannot tell a band of the right width from one twice too wide; this module
judges many short runs instead, each seed weighted equally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simulators.accuracy import HorizonScore, RunRecord
from simulators.accuracy_verdict import COVERAGE, clopper_pearson, rolling_score

Scorer = Callable[[Sequence[RunRecord]], HorizonScore]


@dataclass(frozen=True, slots=True)
class SeedCalibration:
    """One run's 4 h figures: how many, the share inside +-2 sigma, error/sigma's mean and RMS."""

    seed: int
    n: int
    coverage: float
    bias_pp: float
    z_rms: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """The band's calibration over runs of several seeds, each seed one trial."""

    seeds: list[SeedCalibration]
    coverage: float  # mean of the seeds' coverages
    ci_low: float  # 95 % Clopper-Pearson interval of the coverage, one trial per seed
    ci_high: float
    z_rms: float  # RMS of error/sigma, each seed weighted equally

    @property
    def passed(self) -> bool:
        """The coverage's interval overlaps 90-98 % and the RMS of error/sigma is 0.5-1.5."""
        lo, hi = COVERAGE
        return self.ci_low <= hi and self.ci_high >= lo and 0.5 <= self.z_rms <= 1.5

    def lines(self, horizon: str = "4 h") -> list[str]:
        out = [
            f"| seed | {horizon} figures | inside ±2σ | bias (pp) | rms(e/σ) |",
            "|---:|---:|---:|---:|---:|",
        ]
        out += [
            f"| {s.seed} | {s.n} | {s.coverage:.0%} | {s.bias_pp:+.3f} | {s.z_rms:.2f} |" for s in self.seeds
        ]
        lo, hi = COVERAGE
        out.append("")
        out.append(
            f"{horizon}: coverage {self.coverage:.1%} over {len(self.seeds)} seeds (95 % CI "
            f"{self.ci_low:.0%}-{self.ci_high:.0%}; target {lo:.0%}-{hi:.0%}), rms(e/σ) {self.z_rms:.2f} "
            f"(target ~1): {'pass' if self.passed else 'FAIL'}"
        )
        return out


def _seed(r: RunRecord, score: HorizonScore) -> SeedCalibration:
    return SeedCalibration(r.seed, score.n, score.coverage, score.bias_pp, score.z_rms)


def calibrate(runs: Sequence[RunRecord], score: Scorer = rolling_score) -> Calibration:
    """The band's calibration over `runs` (one per seed; a run without a scored figure is left
    out), of the figures `score` picks (default the 4 h rolling yield; `shift_score` for shifts)."""
    per_seed = [_seed(r, score([r])) for r in runs]
    scored = [s for s in per_seed if s.n > 0 and math.isfinite(s.z_rms)]
    if not scored:
        return Calibration([], math.nan, 0.0, 1.0, math.nan)
    coverage = sum(s.coverage for s in scored) / len(scored)
    ci_low, ci_high = clopper_pearson(round(coverage * len(scored)), len(scored))
    z_rms = math.sqrt(sum(s.z_rms**2 for s in scored) / len(scored))
    return Calibration(scored, coverage, ci_low, ci_high, z_rms)
