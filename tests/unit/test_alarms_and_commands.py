"""The alarm board's transitions and the command ledger's run-once rule (pure logic)."""

from __future__ import annotations

import asyncio

from gateway.alarms import AlarmBoard, Severity, alarm_id
from gateway.commands import CommandLedger, CommandRequest, CommandStatus, ControlDisabled


def _cond(*ids: str) -> dict[str, tuple[str, str, Severity, str]]:
    out = {}
    for i in ids:
        kind, subject = i.split(":", 1)
        out[i] = (kind, subject, Severity.WARNING, f"{subject} is {kind}")
    return out


def test_alarm_raised_once_then_cleared_once() -> None:
    board = AlarmBoard()
    a = alarm_id("tag_bad", "shr.power")
    raised = board.update(_cond(a), t=10.0)
    assert [(e.alarm.id, e.active, e.t) for e in raised] == [(a, True, 10.0)]
    assert board.update(_cond(a), t=11.0) == []  # still active: no new event
    assert board.active[a].since == 10.0
    cleared = board.update({}, t=12.0)
    assert [(e.alarm.id, e.active, e.t) for e in cleared] == [(a, False, 12.0)]
    assert board.active == {}


def test_alarm_events_are_ordered_cleared_then_raised() -> None:
    board = AlarmBoard()
    board.update(_cond("tag_bad:b", "tag_bad:a"), t=1.0)
    events = board.update(_cond("tag_bad:a", "tag_stale:c"), t=2.0)
    assert [(e.alarm.id, e.active) for e in events] == [("tag_bad:b", False), ("tag_stale:c", True)]


def _request(rid: str) -> CommandRequest:
    return CommandRequest(rid, "shr.feed_rate_sp", 1.5, "op1", None, received_at=100.0)


def test_control_disabled_rejects_everything() -> None:
    result = asyncio.run(ControlDisabled().handle(_request("r1")))
    assert result.status is CommandStatus.REJECTED
    assert "control disabled" in result.reason
    assert result.readback is None


def test_ledger_returns_first_result_marked_duplicate() -> None:
    ledger = CommandLedger(capacity=2)
    first = asyncio.run(ControlDisabled().handle(_request("r1")))
    assert ledger.seen("r1") is None
    ledger.record(first)
    again = ledger.seen("r1")
    assert again is not None
    assert again.duplicate
    assert again.reason == first.reason
    assert ledger.duplicates == 1


def test_ledger_forgets_oldest_beyond_capacity() -> None:
    ledger = CommandLedger(capacity=2)
    for rid in ("r1", "r2", "r3"):
        ledger.record(asyncio.run(ControlDisabled().handle(_request(rid))))
    assert "r1" not in ledger
    assert "r2" in ledger
    assert "r3" in ledger
