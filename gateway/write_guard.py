"""The write guard: a pure function from (request, live state, limits, history) to a decision.

Deny by default. A command reaches the controller only if every check passes, in this order
(the first failure is the reason given):

    control disabled -> not allowlisted -> replayed request id -> expired (or no issue time,
    or issued in the future) -> bad signature -> unknown operator / wrong role -> two-step
    rules of critical setpoints -> configured range inside the node's EURange -> value in
    the configured range -> step from the current
    value -> minimum interval -> ramp rate -> interlocks (false, or their input stale)

Nothing here does I/O or reads a clock: the caller passes `now`, the controller's current
value and the interlocks' status, so every path is testable on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.command_signing import signature_valid
from gateway.commands import CommandRequest, CommandStep
from gateway.control_config import Control, Setpoint
from gateway.interlock_monitor import InterlockStatus


class Rejection(StrEnum):
    """Why the guard refused a command (the result's `code`)."""

    CONTROL_DISABLED = "control_disabled"
    NOT_ALLOWLISTED = "not_allowlisted"
    REPLAYED = "replayed"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ROLE = "wrong_role"
    NOT_ARMED = "not_armed"
    CONFIG_MISMATCH = "config_mismatch"
    OUT_OF_RANGE = "out_of_range"
    CURRENT_UNKNOWN = "current_unknown"
    STEP_TOO_LARGE = "step_too_large"
    TOO_SOON = "too_soon"
    RATE_TOO_HIGH = "rate_too_high"
    INTERLOCK_FALSE = "interlock_false"
    INTERLOCK_STALE = "interlock_stale"


class Verdict(StrEnum):
    WRITE = "write"
    ARM = "arm"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    rejection: Rejection | None = None

    @staticmethod
    def reject(rejection: Rejection, reason: str) -> Decision:
        return Decision(Verdict.REJECT, reason, rejection)


@dataclass(frozen=True, slots=True)
class LastWrite:
    value: float
    at: float  # wall clock, epoch s


@dataclass(frozen=True, slots=True)
class Armed:
    request_id: str
    operator: str
    value: float
    at: float  # wall clock, epoch s


@dataclass(frozen=True, slots=True)
class History:
    """What the guard remembers between commands (rebuilt from the audit log on start)."""

    seen_request_ids: AbstractSet[str] = frozenset()
    last_write: Mapping[str, LastWrite] = field(default_factory=dict)
    armed: Mapping[str, Armed] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the controller and the live signals say at decision time."""

    current: float | None  # the setpoint's value read from the controller just now
    current_problem: str | None  # why `current` is None
    interlocks: Sequence[InterlockStatus]
    # The node's EURange, when the controller publishes one.
    eurange: tuple[float, float] | None = None


def decide(
    request: CommandRequest,
    control: Control,
    live: LiveState,
    history: History,
    keys: Mapping[str, bytes],
    now: float,
) -> Decision:
    """Accept (write, or arm) or reject one command; see the module docstring for the order."""
    refused = request_problem(request, control, history, keys, now)
    if refused is not None:
        return refused
    r = request
    sp = control.setpoints[r.setpoint]
    lo, hi = sp.range
    if live.eurange is not None:
        elo, ehi = live.eurange
        if lo < elo or hi > ehi:
            # The config promises a range the controller does not have: fix the config first.
            return Decision.reject(
                Rejection.CONFIG_MISMATCH,
                f"configured range [{lo:g}, {hi:g}] is not inside the node's EURange [{elo:g}, {ehi:g}]",
            )
    if not lo <= r.value <= hi:
        return Decision.reject(
            Rejection.OUT_OF_RANGE, f"{r.value:g} {sp.unit} is outside [{lo:g}, {hi:g}] {sp.unit}"
        )
    limited = sp.max_step is not None or sp.max_rate_per_min is not None
    if limited and (live.current is None or not math.isfinite(live.current)):
        why = live.current_problem or "no value"
        return Decision.reject(
            Rejection.CURRENT_UNKNOWN,
            f"current value of {r.setpoint} unknown ({why}); step and rate cannot be checked",
        )
    step = abs(r.value - live.current) if live.current is not None else 0.0
    if sp.max_step is not None and step > sp.max_step + _eps(sp.max_step):
        return Decision.reject(
            Rejection.STEP_TOO_LARGE,
            f"step {live.current:g} -> {r.value:g} is {step:g} {sp.unit}, more than {sp.max_step:g}",
        )
    last = history.last_write.get(r.setpoint)
    if last is not None:
        elapsed = now - last.at
        if elapsed < sp.min_interval_s:
            return Decision.reject(
                Rejection.TOO_SOON,
                f"last write {elapsed:.1f} s ago; at least {sp.min_interval_s:g} s between writes",
            )
        if sp.max_rate_per_min is not None and step > 0:
            rate = step / max(elapsed, 1e-9) * 60.0
            if rate > sp.max_rate_per_min + _eps(sp.max_rate_per_min):
                return Decision.reject(
                    Rejection.RATE_TOO_HIGH,
                    f"{step:g} {sp.unit} in {elapsed:.1f} s is {rate:g} {sp.unit}/min, "
                    f"more than {sp.max_rate_per_min:g}",
                )
    if len(live.interlocks) != len(sp.interlocks):
        return Decision.reject(Rejection.INTERLOCK_STALE, "interlock status missing")
    failed = [s for s in live.interlocks if not s.holds]
    if failed:
        stale = [s for s in failed if s.stale]
        first = (stale or failed)[0]
        code = Rejection.INTERLOCK_STALE if stale else Rejection.INTERLOCK_FALSE
        return Decision.reject(code, f"interlock {first.interlock.text()} not met: {first.why}")
    if sp.critical and r.step is CommandStep.ARM:
        return Decision(Verdict.ARM, f"armed: execute within {control.arm_window_s:g} s")
    return Decision(Verdict.WRITE, "all checks passed")


def request_problem(
    request: CommandRequest,
    control: Control,
    history: History,
    keys: Mapping[str, bytes],
    now: float,
) -> Decision | None:
    """The rejection found from the request alone (enabled, allowlist, replay, expiry,
    signature, role, two steps), else None. Needs no I/O: a command refused here never makes
    the gateway read the controller."""
    r = request
    if not control.enabled:
        return Decision.reject(
            Rejection.CONTROL_DISABLED, "control disabled: this gateway writes no setpoints"
        )
    sp = control.setpoints.get(r.setpoint)
    if sp is None:
        return Decision.reject(Rejection.NOT_ALLOWLISTED, f"{r.setpoint} is not a writable setpoint")
    if r.request_id in history.seen_request_ids:
        return Decision.reject(Rejection.REPLAYED, f"request id {r.request_id!r} was already used")
    expired = _expiry_problem(r, control, now)
    if expired is not None:
        return Decision.reject(Rejection.EXPIRED, expired)
    auth = _auth_problem(r, control, sp, keys)
    if auth is not None:
        return auth
    two_step = _two_step_problem(r, control, sp, history, now)
    if two_step is not None:
        return Decision.reject(Rejection.NOT_ARMED, two_step)
    return None


def _eps(x: float) -> float:
    # Commands typed on a panel (0.1 + 0.2) must not fail a limit by a rounding error.
    return 1e-9 * max(1.0, abs(x))


def _expiry_problem(r: CommandRequest, control: Control, now: float) -> str | None:
    if r.issued_at is None:
        return "no issued_at: a command without an issue time cannot be checked for expiry"
    if not math.isfinite(r.issued_at):
        return f"issued_at {r.issued_at}: not a time, cannot be checked for expiry"
    age = now - r.issued_at
    if age > control.max_age_s:
        return f"expired: issued {age:.1f} s ago, limit {control.max_age_s:g} s"
    if -age > control.max_clock_skew_s:
        return f"issued {-age:.1f} s in the future (clock skew limit {control.max_clock_skew_s:g} s)"
    return None


def _auth_problem(
    r: CommandRequest, control: Control, sp: Setpoint, keys: Mapping[str, bytes]
) -> Decision | None:
    if r.operator is None:
        return Decision.reject(Rejection.WRONG_ROLE, "no operator: commands must name who issues them")
    op = control.operators.get(r.operator)
    key = keys.get(r.operator)
    if op is not None and (op.key_env is not None or control.require_signature):
        if key is None:
            return Decision.reject(
                Rejection.BAD_SIGNATURE, f"no signing key available for operator {r.operator!r}"
            )
        if r.signature is None:
            return Decision.reject(
                Rejection.BAD_SIGNATURE, "unsigned: this operator's commands must be signed"
            )
        if not signature_valid(key, r):
            return Decision.reject(Rejection.BAD_SIGNATURE, "signature does not match the command")
    elif op is None and control.require_signature:
        return Decision.reject(Rejection.BAD_SIGNATURE, f"unknown operator {r.operator!r}: no key to verify")
    if op is None:
        return Decision.reject(Rejection.WRONG_ROLE, f"unknown operator {r.operator!r}")
    if not set(op.roles) & set(sp.roles):
        return Decision.reject(
            Rejection.WRONG_ROLE,
            f"operator {r.operator!r} (roles {op.roles}) may not change {r.setpoint} (roles {sp.roles})",
        )
    return None


def _two_step_problem(
    r: CommandRequest, control: Control, sp: Setpoint, history: History, now: float
) -> str | None:
    if not sp.critical:
        if r.step is not CommandStep.SET:
            return f"{r.setpoint} is not critical: send step 'set', not {r.step.value!r}"
        return None
    if r.step is CommandStep.SET:
        return f"{r.setpoint} is critical: send step 'arm', then 'execute' within {control.arm_window_s:g} s"
    if r.step is CommandStep.ARM:
        return None
    armed = history.armed.get(r.setpoint)
    if armed is None:
        return f"execute without a preceding arm of {r.setpoint}"
    if now - armed.at > control.arm_window_s:
        return f"the arm ({armed.request_id}) expired {now - armed.at - control.arm_window_s:.1f} s ago"
    if armed.operator != r.operator:
        return f"armed by {armed.operator!r}, not by {r.operator!r}"
    if armed.value != r.value:
        return f"armed for {armed.value:g}, execute says {r.value:g}"
    return None


__all__ = [
    "Armed",
    "Decision",
    "History",
    "LastWrite",
    "LiveState",
    "Rejection",
    "Verdict",
    "decide",
    "request_problem",
]
