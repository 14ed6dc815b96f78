"""Guarded control: the command handler that decides, writes, reads back and audits.

For each operator command: read the setpoint's current value (and EURange) from the controller,
ask the pure guard (`gateway.write_guard.decide`) with the live interlock status and the
history, then, if accepted, write it (typed, no timestamps) and read it back, or only report it
in dry-run mode. Every decision is appended to the audit log (fsynced) before its result goes
back to the operator, and queued for the historian. The history the guard needs (request ids
seen, last write per setpoint, armed critical changes) is rebuilt from the audit log on start,
so a restart forgets nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.audit_log import AuditLog
from gateway.commands import CommandRequest, CommandResult, CommandStatus, CommandStep
from gateway.control_config import Control
from gateway.interlock_monitor import InterlockMonitor
from gateway.setpoint_port import SetpointWriter
from gateway.write_guard import (
    Armed,
    Decision,
    History,
    LastWrite,
    LiveState,
    Rejection,
    Verdict,
    decide,
    request_problem,
)

log = logging.getLogger(__name__)

# Audit records waiting for the historian; beyond this the oldest are dropped (the file keeps all).
PENDING_AUDIT_MAX = 10_000


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GuardedControl:
    """A `CommandHandler` that writes setpoints only when the guard allows it."""

    def __init__(
        self,
        control: Control,
        writer: SetpointWriter | None,
        interlocks: InterlockMonitor,
        audit: AuditLog,
        keys: Mapping[str, bytes],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.writer = writer
        self.interlocks = interlocks
        self.audit = audit
        self.keys = dict(keys)
        self.clock = clock
        self.pending_audit: deque[dict[str, Any]] = deque(maxlen=PENDING_AUDIT_MAX)
        self._seen: set[str] = set()
        self._last_write: dict[str, LastWrite] = {}
        self._armed: dict[str, Armed] = {}
        self._lock = asyncio.Lock()
        self._restore(audit.loaded)

    def _restore(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            rid, sp = rec.get("request_id"), rec.get("setpoint")
            if isinstance(rid, str) and rid:
                self._seen.add(rid)
            if not isinstance(sp, str):
                continue
            at = rec.get("decided_at_epoch")
            if not isinstance(at, int | float):
                continue
            if rec.get("written") is not None:
                self._last_write[sp] = LastWrite(float(rec["written"]), float(at))
            if rec.get("decision") == CommandStatus.ARMED:
                self._armed[sp] = Armed(rid, rec.get("operator") or "", float(rec["value"]), float(at))
            elif rec.get("step") == CommandStep.EXECUTE and rec.get("code") != Rejection.NOT_ARMED:
                self._armed.pop(sp, None)
        if records:
            log.info(
                "control: audit log %s: %d records, %d request ids, last writes for %s",
                self.audit.path,
                len(records),
                len(self._seen),
                sorted(self._last_write) or "none",
            )

    async def handle(self, request: CommandRequest) -> CommandResult:
        async with self._lock:
            return await self._handle(request)

    async def _handle(self, r: CommandRequest) -> CommandResult:
        c = self.control
        sp = c.setpoints.get(r.setpoint)
        # Read-only views, not copies: the guard is pure, and the lock keeps them still.
        history = History(self._seen, self._last_write, self._armed)
        live = LiveState(current=None, current_problem="not read", interlocks=())
        now = self.clock()
        decision = request_problem(r, c, history, self.keys, now)
        if decision is None:
            # Only a command that passes every request check costs a read of the controller.
            live = await self._live(r.setpoint)
            now = self.clock()
            decision = decide(r, c, live, history, self.keys, now)
        self._seen.add(r.request_id)
        written: float | None = None
        readback: float | None = None
        write_status: str | None = None
        if decision.verdict is Verdict.REJECT:
            status, reason, code = CommandStatus.REJECTED, decision.reason, decision.rejection
        elif decision.verdict is Verdict.ARM:
            self._armed[r.setpoint] = Armed(r.request_id, r.operator or "", r.value, now)
            status, reason, code = CommandStatus.ARMED, decision.reason, None
        elif c.dry_run:
            status, code = CommandStatus.DRY_RUN, None
            reason = f"dry run: would write {r.value:g} (now {_fmt(live.current)}); nothing written"
        else:
            assert sp is not None
            status, reason, code, written, readback, write_status = await self._write(
                r, sp.node_id, sp.tolerance
            )
            now = self.clock()
        if r.step is CommandStep.EXECUTE and decision.rejection is not Rejection.NOT_ARMED:
            self._armed.pop(r.setpoint, None)
        if written is not None:
            self._last_write[r.setpoint] = LastWrite(written, now)
        result = CommandResult(
            request_id=r.request_id,
            setpoint=r.setpoint,
            status=status,
            reason=reason,
            value=r.value,
            readback=readback,
            decided_at=now,
            code=str(code) if code is not None else None,
            previous=live.current,
        )
        self._audit(r, result, decision, written, write_status, sp.node_id if sp is not None else None)
        return result

    async def _live(self, setpoint: str) -> LiveState:
        sp = self.control.setpoints[setpoint]
        statuses = self.interlocks.status(sp.interlocks)
        if self.writer is None:
            return LiveState(None, "no writer configured", statuses)
        reading = await self.writer.read(sp.node_id)
        value = float(reading.value) if reading.value is not None else None
        return LiveState(value, None if value is not None else reading.detail, statuses, reading.eurange)

    async def _write(
        self, r: CommandRequest, node_id: str, tolerance: float | None
    ) -> tuple[CommandStatus, str, str | None, float | None, float | None, str | None]:
        if self.writer is None:
            return CommandStatus.FAILED, "no writer configured", "disconnected", None, None, None
        outcome = await self.writer.write(node_id, r.value, tolerance=tolerance)
        written = float(outcome.written) if outcome.written is not None else None
        readback = float(outcome.read_back) if outcome.read_back is not None else None
        if outcome.ok:
            return CommandStatus.ACCEPTED, outcome.detail, None, written, readback, outcome.status
        code = str(outcome.failure) if outcome.failure is not None else "failed"
        return CommandStatus.FAILED, outcome.detail, code, written, readback, outcome.status

    def _audit(
        self,
        r: CommandRequest,
        result: CommandResult,
        decision: Decision,
        written: float | None,
        write_status: str | None,
        node_id: str | None,
    ) -> None:
        self._append(
            result,
            request_id=r.request_id,
            operator=r.operator,
            node_id=node_id,
            step=str(r.step),
            issued_at=_iso(r.issued_at),
            received_at=_iso(r.received_at),
            signed=r.signature is not None,
            previous=result.previous,
            decision=str(result.status),
            code=result.code,
            guard=decision.reason,
            written=written,
            write_status=write_status,
        )
        level = (
            logging.INFO
            if result.status in (CommandStatus.ACCEPTED, CommandStatus.ARMED)
            else logging.WARNING
        )
        log.log(
            level,
            "control: %s %s := %g by %s: %s (%s)",
            r.request_id,
            r.setpoint,
            r.value,
            r.operator,
            result.status,
            result.reason,
        )

    def note(self, result: CommandResult) -> None:
        """Audit a result the transport decided (malformed, or a duplicate request id)."""
        self._append(
            result,
            request_id=result.request_id or None,
            # A duplicate repeats an earlier decision; it is not one itself.
            decision="duplicate" if result.duplicate else str(result.status),
            first_decision=str(result.status) if result.duplicate else None,
            code="duplicate" if result.duplicate else "malformed",
            duplicate=result.duplicate,
            written=None,
        )

    def _append(self, result: CommandResult, **fields: Any) -> None:
        """One audit record: what every record says about a result, then `fields`."""
        record = {
            "at": _iso(result.decided_at),
            "decided_at_epoch": result.decided_at,
            "setpoint": result.setpoint,
            "value": result.value,
            "reason": result.reason,
            "readback": result.readback,
            "dry_run": self.control.dry_run,
            **fields,
        }
        self.pending_audit.append(self.audit.append(record))

    async def aclose(self) -> None:
        """Close the controller session and the audit log (at shutdown)."""
        if self.writer is not None:
            await self.writer.aclose()
        self.audit.close()

    def drain_audit(self) -> list[dict[str, Any]]:
        """Audit records not yet handed to the historian (oldest first)."""
        out = list(self.pending_audit)
        self.pending_audit.clear()
        return out


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:g}"


__all__ = ["GuardedControl"]
