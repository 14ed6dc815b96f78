"""Small numeric helpers shared by the process models (no state of their own)."""

from __future__ import annotations

import math

import numpy as np


class Normals:
    """Standard normals drawn in blocks: per-call `rng.standard_normal()` costs ~1 µs, a block
    amortises that, and the sequence does not depend on how the caller chunks its steps."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng = rng
        self._buf: list[float] = rng.standard_normal(block).tolist()
        self._i = 0

    def next(self) -> float:
        i = self._i
        if i == len(self._buf):
            self._buf = self._rng.standard_normal(len(self._buf)).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


def ar1(dt_s: float, tau_s: float, sigma: float) -> tuple[float, float]:
    """(phi, c) of x' = phi x + c z with stationary standard deviation `sigma`."""
    phi = math.exp(-dt_s / tau_s)
    return phi, sigma * math.sqrt(1.0 - phi * phi)


def lag(dt_s: float, tau_s: float) -> float:
    """Fraction of the gap a first-order lag with time constant `tau_s` closes in one step."""
    return 1.0 - math.exp(-dt_s / tau_s) if tau_s > 0 else 1.0


def whole_steps(seconds: float, dt_s: float, name: str) -> int:
    """`seconds` as a positive whole number of `dt_s` steps; ValueError otherwise."""
    n = round(seconds / dt_s)
    if n < 1 or abs(n * dt_s - seconds) > 1e-9 * max(1.0, seconds):
        raise ValueError(f"{name}: {seconds} s is not a positive whole number of {dt_s} s steps")
    return n


def logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


__all__ = ["Normals", "ar1", "lag", "logistic", "whole_steps"]
