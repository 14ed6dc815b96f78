"""Operator commands: the request and result types, and the rule that none runs twice.

A transport (MQTT today) turns a message into a `CommandRequest`, hands it to a
`CommandHandler` and publishes the `CommandResult`. `CommandLedger` remembers recent request ids
with their results, so a redelivered or replayed request gets its first result again instead of
being executed a second time (QoS 1 redelivers after a reconnect; people press buttons twice).

Until the guarded control path exists, the only handler is `ControlDisabled`: deny by default.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol


class CommandStatus(StrEnum):
    ACCEPTED = "accepted"  # written and read back
    REJECTED = "rejected"  # refused before anything was written
    FAILED = "failed"  # a write was attempted and did not succeed
    ARMED = "armed"  # a critical setpoint's first step: nothing written, "execute" may follow
    DRY_RUN = "dry_run"  # would have been written; control runs in dry-run mode


class CommandStep(StrEnum):
    SET = "set"  # an ordinary setpoint change
    ARM = "arm"  # first step of a critical setpoint's change
    EXECUTE = "execute"  # second step: carries out the armed change


@dataclass(frozen=True, slots=True)
class CommandRequest:
    request_id: str
    setpoint: str
    value: float
    operator: str | None
    issued_at: float | None  # epoch s, as the operator's client stated it
    received_at: float  # epoch s, gateway wall clock
    step: CommandStep = CommandStep.SET
    signature: str | None = None  # hex HMAC-SHA256 of `gateway.command_signing.signed_text`


@dataclass(frozen=True, slots=True)
class CommandResult:
    request_id: str
    setpoint: str
    status: CommandStatus
    reason: str
    value: float | None = None
    readback: float | None = None
    duplicate: bool = False  # this is the stored result of an earlier, identical request id
    decided_at: float | None = None
    code: str | None = None  # machine-readable class of a rejection or failure
    previous: float | None = None  # the controller's value before the write, when read


class CommandHandler(Protocol):
    async def handle(self, request: CommandRequest) -> CommandResult:
        """Decide on (and, when accepted, carry out) one command. Must not raise."""
        ...

    def note(self, result: CommandResult) -> None:
        """Record a result the transport decided itself (a malformed command, a duplicate)."""
        ...


class ControlDisabled:
    """Deny every command: the gateway writes nothing until control is built and enabled."""

    async def handle(self, request: CommandRequest) -> CommandResult:
        return CommandResult(
            request_id=request.request_id,
            setpoint=request.setpoint,
            status=CommandStatus.REJECTED,
            reason="control disabled: this gateway does not write setpoints",
            value=request.value,
            decided_at=request.received_at,
            code="control_disabled",
        )

    def note(self, result: CommandResult) -> None:
        pass  # nothing is written, so there is nothing to audit


class CommandLedger:
    """Results of the most recent `capacity` request ids, oldest forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._results: OrderedDict[str, CommandResult] = OrderedDict()
        self.duplicates = 0

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._results

    def seen(self, request_id: str) -> CommandResult | None:
        """The stored result of an earlier request with this id, marked duplicate, or None."""
        first = self._results.get(request_id)
        if first is None:
            return None
        self.duplicates += 1
        return replace(first, duplicate=True)

    def record(self, result: CommandResult) -> None:
        self._results[result.request_id] = result
        while len(self._results) > self.capacity:
            self._results.popitem(last=False)
