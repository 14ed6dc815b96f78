"""The write guard `decide`: every rejection class, the accept paths (write, arm, execute), the order
of the checks, the boundary of every limit, signatures, roles, the two-step rule of critical
setpoints, and properties: no random value or current is ever written outside the range or the
step limit, and no request (however malformed its time or signature) makes `decide` raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.command_signing import sign
from gateway.commands import CommandRequest, CommandStep
from gateway.control_config import Control
from gateway.interlock_monitor import InterlockStatus
from gateway.write_guard import Armed, Decision, History, LastWrite, LiveState, Rejection, Verdict, decide

NOW = 1_767_600_000.0
SP = "shr.feed_rate_sp"
OTHER_SP = "shr.speed_sp"
KEYS: dict[str, bytes] = {"jdoe": b"jdoe-signing-key", "kim": b"kim-signing-key"}
POWER_ON: dict[str, object] = {"tag": "shr.power", "op": ">", "value": 10.0, "hold_s": 5.0}
DOOR_SHUT: dict[str, object] = {"tag": "shr.door", "op": "==", "value": 1.0}
OPERATORS: dict[str, dict[str, object]] = {
    "jdoe": {"roles": ["shift_lead"], "key_env": "LINEGATE_KEY_JDOE"},  # signs; may write
    "kim": {"roles": ["viewer"], "key_env": "LINEGATE_KEY_KIM"},  # signs; may not write
    "bob": {"roles": ["operator", "shift_lead"]},  # no key; may write
    "amy": {"roles": ["viewer"]},  # no key; may not write
}


# -- builders -------------------------------------------------------------------------------------


def control(
    *,
    enabled: bool = True,
    require_signature: bool = False,
    max_age_s: float = 30.0,
    max_clock_skew_s: float = 5.0,
    arm_window_s: float = 30.0,
    **setpoint: object,
) -> Control:
    """Control with SP (0..2.5 t/h, max step 0.5, one interlock; overridden by `setpoint`)."""
    sp: dict[str, object] = {
        "node_id": "ns=2;s=shr.feed_rate_sp",
        "unit": "t/h",
        "range": [0.0, 2.5],
        "max_step": 0.5,
        "roles": ["shift_lead"],
        "interlocks": [POWER_ON],
        **setpoint,
    }
    return Control.model_validate(
        {
            "enabled": enabled,
            "driver": "plc",
            "max_age_s": max_age_s,
            "max_clock_skew_s": max_clock_skew_s,
            "arm_window_s": arm_window_s,
            "require_signature": require_signature,
            "operators": OPERATORS,
            "setpoints": {
                SP: sp,
                OTHER_SP: {
                    "node_id": "ns=2;s=shr.speed_sp",
                    "unit": "rpm",
                    "range": [0, 1500],
                    "roles": ["shift_lead"],
                },
            },
        }
    )


def request(
    *,
    request_id: str = "r-1",
    setpoint: str = SP,
    value: float = 1.5,
    operator: str | None = "jdoe",
    issued_at: float | None = NOW,
    step: CommandStep = CommandStep.SET,
    signed: bool = True,
    key: bytes | None = None,
    signature: str | None = None,
) -> CommandRequest:
    """A command, signed with `key` or the operator's key from KEYS unless `signature` is given."""
    if signature is None and signed and operator is not None and issued_at is not None:
        k = key if key is not None else KEYS.get(operator)
        if k is not None:
            signature = sign(k, request_id, setpoint, value, operator, issued_at, step)
    return CommandRequest(
        request_id=request_id,
        setpoint=setpoint,
        value=value,
        operator=operator,
        issued_at=issued_at,
        received_at=NOW,
        step=step,
        signature=signature,
    )


def statuses(
    c: Control, setpoint: str = SP, *, stale: Sequence[int] = (), false: Sequence[int] = ()
) -> list[InterlockStatus]:
    """The status of each interlock of `setpoint`: holding, unless its index is in stale/false."""
    out: list[InterlockStatus] = []
    for i, il in enumerate(c.setpoints[setpoint].interlocks):
        if i in stale:
            out.append(InterlockStatus(il, False, True, f"{il.tag}: stale, no good sample for 9 s"))
        elif i in false:
            out.append(InterlockStatus(il, False, False, f"{il.tag} = 0, needs {il.op} {il.value:g}"))
        else:
            out.append(InterlockStatus(il, True, False, f"{il.text()}: holds"))
    return out


def live(
    c: Control,
    setpoint: str = SP,
    *,
    current: float | None = 1.4,
    problem: str | None = None,
    eurange: tuple[float, float] | None = None,
    stale: Sequence[int] = (),
    false: Sequence[int] = (),
) -> LiveState:
    return LiveState(current, problem, statuses(c, setpoint, stale=stale, false=false), eurange)


def run(
    r: CommandRequest,
    c: Control,
    lv: LiveState | None = None,
    history: History | None = None,
    keys: Mapping[str, bytes] = KEYS,
    now: float = NOW,
) -> Decision:
    return decide(r, c, lv if lv is not None else live(c, r.setpoint), history or History(), keys, now)


def last_write(ago_s: float, value: float = 1.4) -> History:
    return History(last_write={SP: LastWrite(value, NOW - ago_s)})


def armed(
    *, ago_s: float = 10.0, operator: str = "jdoe", value: float = 1.5, request_id: str = "r-arm"
) -> History:
    return History(
        seen_request_ids=frozenset({request_id}),
        armed={SP: Armed(request_id, operator, value, NOW - ago_s)},
    )


def assert_rejected(d: Decision, rejection: Rejection, fragment: str) -> None:
    assert d.verdict is Verdict.REJECT, d
    assert d.rejection is rejection, d
    assert fragment in d.reason, d.reason


def assert_write(d: Decision) -> None:
    assert d.verdict is Verdict.WRITE, d
    assert d.rejection is None
    assert d.reason == "all checks passed"


# -- one test per rejection class -----------------------------------------------------------------


def _only(rejection: Rejection) -> Decision:
    """A command that is fine except for the one defect that earns `rejection`."""
    c = control()
    match rejection:
        case Rejection.CONTROL_DISABLED:
            return run(request(), control(enabled=False))
        case Rejection.NOT_ALLOWLISTED:
            return run(request(setpoint="shr.knife_sp"), c, live(c))
        case Rejection.REPLAYED:
            return run(request(), c, history=History(seen_request_ids=frozenset({"r-1"})))
        case Rejection.EXPIRED:
            return run(request(issued_at=NOW - 60.0), c)
        case Rejection.BAD_SIGNATURE:
            return run(replace(request(value=1.5), value=1.6), c)
        case Rejection.WRONG_ROLE:
            return run(request(operator="amy"), c)
        case Rejection.NOT_ARMED:
            return run(request(), control(critical=True))
        case Rejection.CONFIG_MISMATCH:
            return run(request(), c, live(c, eurange=(0.0, 2.0)))
        case Rejection.OUT_OF_RANGE:
            return run(request(value=2.6), c, live(c, current=2.4))
        case Rejection.CURRENT_UNKNOWN:
            return run(request(), c, live(c, current=None, problem="read timed out"))
        case Rejection.STEP_TOO_LARGE:
            return run(request(value=1.5), c, live(c, current=0.5))
        case Rejection.TOO_SOON:
            return run(request(), control(min_interval_s=10.0), history=last_write(5.0))
        case Rejection.RATE_TOO_HIGH:
            return run(request(value=1.8), control(max_rate_per_min=0.6), history=last_write(30.0))
        case Rejection.INTERLOCK_FALSE:
            return run(request(), c, live(c, false=[0]))
        case Rejection.INTERLOCK_STALE:
            return run(request(), c, live(c, stale=[0]))
    raise AssertionError(f"no case for {rejection}")


REASONS: dict[Rejection, str] = {
    Rejection.CONTROL_DISABLED: "control disabled",
    Rejection.NOT_ALLOWLISTED: "shr.knife_sp is not a writable setpoint",
    Rejection.REPLAYED: "request id 'r-1' was already used",
    Rejection.EXPIRED: "expired: issued 60.0 s ago, limit 30 s",
    Rejection.BAD_SIGNATURE: "signature does not match",
    Rejection.WRONG_ROLE: "operator 'amy' (roles ['viewer']) may not change shr.feed_rate_sp",
    Rejection.NOT_ARMED: "is critical: send step 'arm'",
    Rejection.CONFIG_MISMATCH: "configured range [0, 2.5] is not inside the node's EURange [0, 2]",
    Rejection.OUT_OF_RANGE: "2.6 t/h is outside [0, 2.5] t/h",
    Rejection.CURRENT_UNKNOWN: "current value of shr.feed_rate_sp unknown (read timed out)",
    Rejection.STEP_TOO_LARGE: "step 0.5 -> 1.5 is 1 t/h, more than 0.5",
    Rejection.TOO_SOON: "last write 5.0 s ago; at least 10 s between writes",
    Rejection.RATE_TOO_HIGH: "0.4 t/h in 30.0 s is 0.8 t/h/min, more than 0.6",
    Rejection.INTERLOCK_FALSE: "interlock shr.power > 10 for 5 s not met: shr.power = 0",
    Rejection.INTERLOCK_STALE: "interlock shr.power > 10 for 5 s not met: shr.power: stale",
}


def test_every_rejection_class_has_a_case() -> None:
    assert set(REASONS) == set(Rejection)


@pytest.mark.parametrize("rejection", list(Rejection), ids=[r.value for r in Rejection])
def test_each_rejection_class_alone(rejection: Rejection) -> None:
    assert_rejected(_only(rejection), rejection, REASONS[rejection])


# -- accept paths ---------------------------------------------------------------------------------


def test_valid_signed_set_is_written() -> None:
    assert_write(run(request(), control()))


def test_set_without_limits_or_interlocks_is_written() -> None:
    c = control()
    assert_write(run(request(setpoint=OTHER_SP, value=1200.0), c, live(c, OTHER_SP, current=0.0)))


def test_critical_arm_is_armed_not_written() -> None:
    d = run(request(step=CommandStep.ARM), control(critical=True, arm_window_s=20.0))
    assert d.verdict is Verdict.ARM
    assert d.rejection is None
    assert "execute within 20 s" in d.reason


def test_critical_execute_within_window_is_written() -> None:
    r = request(request_id="r-2", step=CommandStep.EXECUTE)
    assert_write(run(r, control(critical=True), history=armed(ago_s=10.0)))


def test_critical_execute_at_exactly_the_arm_window_is_written() -> None:
    r = request(request_id="r-2", step=CommandStep.EXECUTE)
    assert_write(run(r, control(critical=True, arm_window_s=30.0), history=armed(ago_s=30.0)))


def test_arm_is_subject_to_every_later_check() -> None:
    c = control(critical=True)
    arm = request(step=CommandStep.ARM, value=2.6)
    assert_rejected(run(arm, c, live(c, current=2.4)), Rejection.OUT_OF_RANGE, "outside")
    arm = request(step=CommandStep.ARM)
    assert_rejected(run(arm, c, live(c, current=0.1)), Rejection.STEP_TOO_LARGE, "more than 0.5")
    assert_rejected(run(arm, c, live(c, false=[0])), Rejection.INTERLOCK_FALSE, "not met")


def test_execute_is_subject_to_every_later_check() -> None:
    c = control(critical=True)
    ex = request(request_id="r-2", step=CommandStep.EXECUTE)
    assert_rejected(run(ex, c, live(c, stale=[0]), armed()), Rejection.INTERLOCK_STALE, "stale")


# -- order of the checks --------------------------------------------------------------------------


def _disabled_beats_everything() -> Decision:
    r = request(setpoint="shr.knife_sp", operator=None, issued_at=None)
    seen = History(seen_request_ids=frozenset({"r-1"}))
    return run(r, control(enabled=False), LiveState(None, None, ()), seen)


def _not_allowlisted_beats_expired() -> Decision:
    return run(request(setpoint="shr.knife_sp", issued_at=NOW - 3600), control(), LiveState(None, None, ()))


def _replay_beats_expiry() -> Decision:
    seen = History(seen_request_ids=frozenset({"r-1"}))
    return run(request(issued_at=NOW - 3600), control(), history=seen)


def _expiry_beats_signature() -> Decision:
    return run(request(issued_at=NOW - 3600, signature="00" * 32), control())


def _signature_beats_role() -> Decision:
    return run(request(operator="kim", signature="00" * 32), control())


def _role_beats_two_step() -> Decision:
    return run(request(operator="amy"), control(critical=True))


def _two_step_beats_config_mismatch() -> Decision:
    c = control(critical=True)
    return run(request(), c, live(c, eurange=(0.0, 1.0)))


def _config_mismatch_beats_range() -> Decision:
    c = control()
    return run(request(value=9.0), c, live(c, eurange=(0.0, 1.0)))


def _range_beats_current_unknown() -> Decision:
    c = control()
    return run(request(value=9.0), c, live(c, current=None, problem="read failed"))


def _current_unknown_beats_interlocks() -> Decision:
    c = control()
    return run(request(), c, live(c, current=None, problem="read failed", stale=[0]))


def _step_beats_too_soon() -> Decision:
    c = control(min_interval_s=60.0)
    return run(request(value=2.0), c, live(c, current=0.1), last_write(1.0))


def _too_soon_beats_rate() -> Decision:
    return run(
        request(value=1.9), control(min_interval_s=60.0, max_rate_per_min=0.1), history=last_write(1.0)
    )


def _rate_beats_interlocks() -> Decision:
    c = control(max_rate_per_min=0.1)
    return run(request(value=1.9), c, live(c, false=[0]), last_write(60.0))


def _stale_beats_false() -> Decision:
    c = control(interlocks=[POWER_ON, DOOR_SHUT])
    return run(request(), c, live(c, false=[0], stale=[1]))


ORDER: list[tuple[Callable[[], Decision], Rejection, str]] = [
    (_disabled_beats_everything, Rejection.CONTROL_DISABLED, "control disabled"),
    (_not_allowlisted_beats_expired, Rejection.NOT_ALLOWLISTED, "not a writable setpoint"),
    (_replay_beats_expiry, Rejection.REPLAYED, "already used"),
    (_expiry_beats_signature, Rejection.EXPIRED, "expired"),
    (_signature_beats_role, Rejection.BAD_SIGNATURE, "signature does not match"),
    (_role_beats_two_step, Rejection.WRONG_ROLE, "may not change"),
    (_two_step_beats_config_mismatch, Rejection.NOT_ARMED, "is critical"),
    (_config_mismatch_beats_range, Rejection.CONFIG_MISMATCH, "EURange"),
    (_range_beats_current_unknown, Rejection.OUT_OF_RANGE, "outside"),
    (_current_unknown_beats_interlocks, Rejection.CURRENT_UNKNOWN, "read failed"),
    (_step_beats_too_soon, Rejection.STEP_TOO_LARGE, "more than 0.5"),
    (_too_soon_beats_rate, Rejection.TOO_SOON, "between writes"),
    (_rate_beats_interlocks, Rejection.RATE_TOO_HIGH, "t/h/min"),
    (_stale_beats_false, Rejection.INTERLOCK_STALE, "interlock shr.door == 1 not met: shr.door: stale"),
]


@pytest.mark.parametrize(
    ("case", "rejection", "fragment"), ORDER, ids=[case.__name__.strip("_") for case, _, _ in ORDER]
)
def test_check_order(case: Callable[[], Decision], rejection: Rejection, fragment: str) -> None:
    assert_rejected(case(), rejection, fragment)


def test_interlock_false_only_names_the_first_false_one() -> None:
    c = control(interlocks=[POWER_ON, DOOR_SHUT])
    d = run(request(), c, live(c, false=[1]))
    assert_rejected(d, Rejection.INTERLOCK_FALSE, "interlock shr.door == 1 not met")


def test_missing_interlock_status_is_stale() -> None:
    c = control(interlocks=[POWER_ON, DOOR_SHUT])
    short = LiveState(1.4, None, statuses(c)[:1])
    assert_rejected(run(request(), c, short), Rejection.INTERLOCK_STALE, "interlock status missing")


# -- boundaries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_value_exactly_at_the_range_limits_is_written(value: float) -> None:
    c = control(max_step=None)
    assert_write(run(request(value=value), c, live(c, current=1.25)))


@pytest.mark.parametrize("value", [-1e-9, 2.5 + 1e-9, math.inf, -math.inf, math.nan])
def test_value_just_outside_the_range_is_rejected(value: float) -> None:
    c = control(max_step=None)
    assert_rejected(run(request(value=value), c, live(c, current=1.25)), Rejection.OUT_OF_RANGE, "outside")


def test_step_exactly_max_step_is_written() -> None:
    c = control(max_step=0.5)
    assert_write(run(request(value=1.5), c, live(c, current=1.0)))
    assert_write(run(request(value=0.5), c, live(c, current=1.0)))


def test_step_just_above_max_step_is_rejected() -> None:
    c = control(max_step=0.5)
    d = run(request(value=1.5 + 1e-6), c, live(c, current=1.0))
    assert_rejected(d, Rejection.STEP_TOO_LARGE, "more than 0.5")
    d = run(request(value=0.5 - 1e-6), c, live(c, current=1.0))
    assert_rejected(d, Rejection.STEP_TOO_LARGE, "more than 0.5")


def test_float_rounding_does_not_trip_the_step_limit() -> None:
    assert abs(0.4 - 0.1) > 0.3  # 0.30000000000000004: the guard must not see this as too large
    c = control(max_step=0.3)
    assert_write(run(request(value=0.4), c, live(c, current=0.1)))


def test_float_rounding_does_not_trip_the_rate_limit() -> None:
    c = control(max_step=None, max_rate_per_min=0.3)
    assert_write(run(request(value=0.4), c, live(c, current=0.1), last_write(60.0, value=0.1)))


def test_issued_at_exactly_max_age_is_accepted_older_is_expired() -> None:
    c = control(max_age_s=30.0)
    assert_write(run(request(issued_at=NOW - 30.0), c))
    d = run(request(issued_at=NOW - 30.001), c)
    assert_rejected(d, Rejection.EXPIRED, "expired: issued 30.0 s ago, limit 30 s")


def test_future_issued_at_within_clock_skew_is_accepted_beyond_is_rejected() -> None:
    c = control(max_clock_skew_s=5.0)
    assert_write(run(request(issued_at=NOW + 5.0), c))
    d = run(request(issued_at=NOW + 5.01), c)
    assert_rejected(d, Rejection.EXPIRED, "s in the future (clock skew limit 5 s)")


def test_missing_issued_at_is_expired() -> None:
    d = run(request(operator="bob", issued_at=None), control())
    assert_rejected(d, Rejection.EXPIRED, "no issued_at")


@pytest.mark.parametrize("issued_at", [math.nan, math.inf, -math.inf])
def test_non_finite_issued_at_is_expired(issued_at: float) -> None:
    # bob needs no signature, so nothing but the expiry check stands between this and a write.
    d = run(request(operator="bob", issued_at=issued_at), control())
    assert d.rejection is Rejection.EXPIRED, d
    assert "expired" in d.reason or "future" in d.reason or "not a time" in d.reason
    # jdoe's commands are signed: the guard must still answer, not raise.
    d = run(request(issued_at=issued_at, signature="00" * 32), control())
    assert d.rejection is Rejection.EXPIRED, d


def test_min_interval_boundary() -> None:
    c = control(min_interval_s=10.0)
    assert_write(run(request(), c, history=last_write(10.0)))
    assert_rejected(run(request(), c, history=last_write(9.99)), Rejection.TOO_SOON, "at least 10 s")


def test_min_interval_applies_only_to_the_same_setpoint() -> None:
    c = control(min_interval_s=10.0)
    other = History(last_write={OTHER_SP: LastWrite(100.0, NOW - 1.0)})
    assert_write(run(request(), c, history=other))


def test_write_before_the_last_write_by_the_clock_is_too_soon() -> None:
    # The wall clock stepped back: "elapsed" is negative, never a licence to write.
    assert_rejected(run(request(), control(), history=last_write(-5.0)), Rejection.TOO_SOON, "ago")


def test_rate_is_computed_over_the_time_since_the_last_write() -> None:
    c = control(max_step=None, max_rate_per_min=1.0)
    r = request(value=1.9)  # 0.5 t/h from the current 1.4
    assert_write(run(r, c, history=last_write(30.0)))  # 1.0 t/h/min: at the limit
    assert_write(run(r, c, history=last_write(600.0)))
    d = run(r, c, history=last_write(29.0))
    assert_rejected(d, Rejection.RATE_TOO_HIGH, "0.5 t/h in 29.0 s is 1.03448 t/h/min, more than 1")
    # The rate is from the controller's current value, not from the last written value.
    assert_write(run(r, c, live(c, current=1.9), last_write(1.0, value=0.0)))


def test_rate_is_not_limited_without_a_previous_write() -> None:
    c = control(max_step=None, max_rate_per_min=0.01)
    assert_write(run(request(value=2.5), c, live(c, current=0.0)))


def test_unchanged_value_passes_the_rate_limit_at_once() -> None:
    c = control(max_rate_per_min=0.01)
    assert_write(run(request(value=1.4), c, history=last_write(0.0)))


# -- signatures -----------------------------------------------------------------------------------


def test_uppercase_hex_signature_is_accepted() -> None:
    r = request()
    assert r.signature is not None
    assert_write(run(replace(r, signature=r.signature.upper()), control()))


@pytest.mark.parametrize(
    "field",
    ["value", "setpoint", "step", "issued_at", "request_id"],
)
def test_tampered_field_is_a_bad_signature(field: str) -> None:
    r = request()
    tampered = {
        "value": replace(r, value=1.6),
        "setpoint": replace(r, setpoint=OTHER_SP),
        "step": replace(request(step=CommandStep.ARM), step=CommandStep.SET),
        "issued_at": replace(r, issued_at=NOW - 1.0),
        "request_id": replace(r, request_id="r-99"),
    }[field]
    c = control()
    d = run(tampered, c, live(c, tampered.setpoint))
    assert_rejected(d, Rejection.BAD_SIGNATURE, "signature does not match")


def test_signature_made_with_another_key_is_bad() -> None:
    d = run(request(key=b"someone-else"), control())
    assert_rejected(d, Rejection.BAD_SIGNATURE, "signature does not match")


@pytest.mark.parametrize(
    "signature", ["", "zz" * 32, "é" * 64, "00" * 32 + "\n"], ids=["empty", "not_hex", "non_ascii", "newline"]
)
def test_malformed_signature_is_bad_not_an_error(signature: str) -> None:
    d = run(request(signature=signature), control())
    assert_rejected(d, Rejection.BAD_SIGNATURE, "signature does not match")


def test_unsigned_command_from_keyed_operator_is_bad_signature() -> None:
    d = run(request(signed=False), control())
    assert_rejected(d, Rejection.BAD_SIGNATURE, "unsigned")


def test_operator_with_key_env_but_no_key_is_bad_signature() -> None:
    d = run(request(), control(), keys={"kim": KEYS["kim"]})
    assert_rejected(d, Rejection.BAD_SIGNATURE, "no signing key available for operator 'jdoe'")


def test_require_signature_refuses_operator_without_key() -> None:
    c = control(require_signature=True)
    d = run(request(operator="bob"), c)
    assert_rejected(d, Rejection.BAD_SIGNATURE, "no signing key available for operator 'bob'")
    # A key for bob in the environment (without key_env) is used once signatures are required.
    assert_write(run(request(operator="bob", key=b"bob-key"), c, keys={**KEYS, "bob": b"bob-key"}))
    assert_write(run(request(), c))


def test_require_signature_refuses_unknown_operator() -> None:
    d = run(request(operator="mallory"), control(require_signature=True))
    assert_rejected(d, Rejection.BAD_SIGNATURE, "unknown operator 'mallory': no key to verify")


def test_operator_without_key_needs_no_signature() -> None:
    assert_write(run(request(operator="bob"), control()))


# -- roles ----------------------------------------------------------------------------------------


def test_unknown_operator_is_wrong_role() -> None:
    d = run(request(operator="mallory"), control())
    assert_rejected(d, Rejection.WRONG_ROLE, "unknown operator 'mallory'")


def test_missing_operator_is_wrong_role() -> None:
    d = run(request(operator=None), control())
    assert_rejected(d, Rejection.WRONG_ROLE, "no operator")
    d = run(request(operator=None), control(require_signature=True))
    assert_rejected(d, Rejection.WRONG_ROLE, "no operator")


def test_role_not_in_setpoint_roles_is_wrong_role() -> None:
    d = run(request(operator="kim"), control())  # correctly signed, but a viewer
    assert_rejected(d, Rejection.WRONG_ROLE, "operator 'kim' (roles ['viewer']) may not change")


def test_one_matching_role_of_several_is_enough() -> None:
    assert_write(run(request(operator="bob"), control(roles=["maintenance", "shift_lead"])))


# -- two steps ------------------------------------------------------------------------------------


def test_critical_setpoint_refuses_plain_set() -> None:
    d = run(request(), control(critical=True, arm_window_s=45.0))
    assert_rejected(d, Rejection.NOT_ARMED, "send step 'arm', then 'execute' within 45 s")


def test_execute_without_arm_is_not_armed() -> None:
    d = run(request(step=CommandStep.EXECUTE), control(critical=True))
    assert_rejected(d, Rejection.NOT_ARMED, "execute without a preceding arm of shr.feed_rate_sp")


def test_execute_of_an_arm_of_another_setpoint_is_not_armed() -> None:
    other = History(armed={OTHER_SP: Armed("r-arm", "jdoe", 1.5, NOW - 1.0)})
    d = run(request(step=CommandStep.EXECUTE), control(critical=True), history=other)
    assert_rejected(d, Rejection.NOT_ARMED, "without a preceding arm")


def test_execute_after_the_arm_window_is_not_armed() -> None:
    ex = request(request_id="r-2", step=CommandStep.EXECUTE)
    d = run(ex, control(critical=True, arm_window_s=30.0), history=armed(ago_s=30.5))
    assert_rejected(d, Rejection.NOT_ARMED, "the arm (r-arm) expired 0.5 s ago")


def test_execute_by_another_operator_is_not_armed() -> None:
    ex = request(request_id="r-2", operator="bob", step=CommandStep.EXECUTE)
    d = run(ex, control(critical=True), history=armed(operator="jdoe"))
    assert_rejected(d, Rejection.NOT_ARMED, "armed by 'jdoe', not by 'bob'")


def test_execute_with_another_value_is_not_armed() -> None:
    ex = request(request_id="r-2", value=1.6, step=CommandStep.EXECUTE)
    d = run(ex, control(critical=True), history=armed(value=1.5))
    assert_rejected(d, Rejection.NOT_ARMED, "armed for 1.5, execute says 1.6")


@pytest.mark.parametrize("step", [CommandStep.ARM, CommandStep.EXECUTE])
def test_non_critical_setpoint_refuses_arm_and_execute(step: CommandStep) -> None:
    d = run(request(step=step), control(critical=False), history=armed())
    assert_rejected(d, Rejection.NOT_ARMED, f"is not critical: send step 'set', not '{step.value}'")


# -- current value and EURange --------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [{"max_step": 0.5}, {"max_step": None, "max_rate_per_min": 1.0}],
    ids=["max_step", "max_rate"],
)
def test_unknown_current_is_refused_when_step_or_rate_is_limited(limits: dict[str, object]) -> None:
    c = control(**limits)
    d = run(request(), c, live(c, current=None, problem="BadNodeIdUnknown"))
    assert_rejected(
        d, Rejection.CURRENT_UNKNOWN, "unknown (BadNodeIdUnknown); step and rate cannot be checked"
    )


@pytest.mark.parametrize("current", [math.nan, math.inf])
def test_non_finite_current_is_unknown(current: float) -> None:
    c = control()
    assert_rejected(run(request(), c, live(c, current=current)), Rejection.CURRENT_UNKNOWN, "(no value)")


def test_unknown_current_is_fine_without_step_or_rate_limit() -> None:
    c = control(max_step=None, max_rate_per_min=None)
    assert_write(run(request(), c, live(c, current=None, problem="not read")))
    assert_write(run(request(), c, live(c, current=None, problem="not read"), last_write(1.0)))


@pytest.mark.parametrize("eurange", [(0.1, 2.5), (0.0, 2.4), (1.0, 2.0)])
def test_eurange_narrower_than_the_configured_range_is_a_mismatch(eurange: tuple[float, float]) -> None:
    c = control()
    d = run(request(), c, live(c, eurange=eurange))
    assert_rejected(d, Rejection.CONFIG_MISMATCH, "configured range [0, 2.5] is not inside")


@pytest.mark.parametrize("eurange", [(0.0, 2.5), (-10.0, 10.0)])
def test_eurange_equal_or_wider_is_fine(eurange: tuple[float, float]) -> None:
    c = control()
    assert_write(run(request(), c, live(c, eurange=eurange)))


# -- properties -----------------------------------------------------------------------------------

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(FLOATS, st.floats(-1.0, 3.5)),
    current=st.one_of(st.none(), FLOATS, st.floats(-1.0, 3.5)),
    max_step=st.one_of(st.none(), st.floats(1e-6, 2.5)),
    max_rate=st.one_of(st.none(), st.floats(1e-6, 100.0)),
    last_ago=st.one_of(st.none(), st.floats(-10.0, 1e4)),
)
def test_never_writes_outside_range_or_step(
    value: float,
    current: float | None,
    max_step: float | None,
    max_rate: float | None,
    last_ago: float | None,
) -> None:
    c = control(max_step=max_step, max_rate_per_min=max_rate)
    history = last_write(last_ago) if last_ago is not None else History()
    d = run(request(value=value), c, live(c, current=current), history)
    assert d.verdict in (Verdict.WRITE, Verdict.REJECT)
    if d.verdict is Verdict.WRITE:
        assert 0.0 <= value <= 2.5
        if max_step is not None:
            assert current is not None
            assert math.isfinite(current)
            # The guard forgives a rounding error of 1e-9 relative, nothing more.
            assert abs(value - current) <= max_step + 1e-9 * max(1.0, max_step)


@settings(max_examples=300, deadline=None)
@given(
    issued_at=st.one_of(
        st.none(), st.sampled_from([math.nan, math.inf, -math.inf]), FLOATS, st.floats(NOW - 100, NOW + 100)
    ),
    signature=st.one_of(
        st.none(), st.text(max_size=80), st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)
    ),
    operator=st.one_of(st.none(), st.sampled_from([*sorted(OPERATORS), "mallory"]), st.text(max_size=10)),
    step=st.sampled_from(list(CommandStep)),
    require_signature=st.booleans(),
)
@example(issued_at=math.nan, signature=None, operator="bob", step=CommandStep.SET, require_signature=False)
@example(issued_at=NOW, signature="é" * 64, operator="jdoe", step=CommandStep.SET, require_signature=False)
def test_never_raises_and_only_writes_fresh_signed_commands(
    issued_at: float | None,
    signature: str | None,
    operator: str | None,
    step: CommandStep,
    require_signature: bool,
) -> None:
    c = control(require_signature=require_signature)
    r = request(operator=operator, issued_at=issued_at, step=step, signature=signature, signed=False)
    d = run(r, c)
    if d.verdict is not Verdict.REJECT:
        assert issued_at is not None
        assert math.isfinite(issued_at)
        assert -5.0 <= NOW - issued_at <= 30.0
        assert operator in ("jdoe", "bob")
        if operator == "jdoe" or require_signature:
            # Only a real signature passes, and random text is not one.
            pytest.fail(f"accepted an unsigned or randomly signed command: {r}")
