"""The core's contract for writing a setpoint to a controller: one write, one typed outcome.

The write guard (issue 8) decides *whether* a setpoint may be written; a `SetpointWriter`
(the OPC-UA driver's `drivers.opcua_writer.OpcUaSetpointWriter`) does the write and reports
what happened as a `WriteOutcome`. A writer never raises for anything the controller or the
network does: every way a write can go wrong is a `WriteFailure` with a one-line `detail`.

`ok` means the controller accepted the value *and* reading it back gave the written value
(within the tolerance). Whether the value reached the controller at all can be read from
the outcome: `written is None` means nothing was sent (refused locally or no session);
`status == "Good"` with a failure means it was accepted but not confirmed by the read-back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

Number = float | int | bool


class WriteFailure(StrEnum):
    """Why a setpoint write did not succeed."""

    # The value is outside the node's EURange (refused here) or the server said BadOutOfRange.
    OUT_OF_RANGE = "out_of_range"
    # The value cannot be represented in the node's DataType, or the server said BadTypeMismatch.
    TYPE_MISMATCH = "type_mismatch"
    # BadNotWritable / BadWriteNotSupported: the node (or this kind of write) is not writable.
    NOT_WRITABLE = "not_writable"
    # BadUserAccessDenied: the node is writable, but not by this session's user.
    ACCESS_DENIED = "access_denied"
    # BadNodeIdUnknown / BadNodeIdInvalid, or a node id that does not parse.
    BAD_NODE = "bad_node"
    # The request was sent but not answered in time: it may or may not have been applied.
    TIMEOUT = "timeout"
    # No session to the server (down, unreachable, lost): nothing was applied by this write
    # unless `status` says the write itself was answered Good.
    DISCONNECTED = "disconnected"
    # The server accepted the write but reading it back gave another value (the controller
    # quantised, clamped or overrode it).
    READBACK_MISMATCH = "readback_mismatch"
    # Any other bad status from the server; `status` names it.
    SERVER_REJECTED = "server_rejected"
    # NaN, infinity or not a number at all: refused before anything is sent.
    INVALID_VALUE = "invalid_value"


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What one setpoint write did.

    `requested` is the caller's value, `written` the value actually sent after converting it
    to the node's DataType (None when nothing was sent), `datatype` that DataType's name
    (None when it was never learned). `status` is the OPC-UA status name of the write (None
    when the server never answered it), `read_back` the value read after a Good write.
    """

    node_id: str
    requested: Number
    written: Number | None
    datatype: str | None
    ok: bool
    failure: WriteFailure | None
    status: str | None
    read_back: Number | None
    detail: str


@dataclass(frozen=True, slots=True)
class SetpointReading:
    """A setpoint node's current value and what the controller says about it.

    `value` is None when it could not be read; `failure` and `detail` then say why.
    """

    node_id: str
    value: Number | None
    datatype: str | None
    eurange: tuple[float, float] | None
    failure: WriteFailure | None
    detail: str


class SetpointWriter(Protocol):
    """Writes one value to one controller node and reports the outcome; never raises."""

    async def aclose(self) -> None:
        """Close the session to the controller."""
        ...

    async def read(self, node_id: str) -> SetpointReading:
        """The node's current value, DataType and EURange (as far as known); never raises."""
        ...

    async def write(self, node_id: str, value: Number, *, tolerance: float | None = None) -> WriteOutcome:
        """Write `value` to `node_id`, read it back and compare.

        `tolerance` is the absolute difference the read-back may show; None means the
        writer's default for the node's type (relative 1e-6 for floating point, exact for
        integers and booleans).
        """
        ...


__all__ = ["Number", "SetpointReading", "SetpointWriter", "WriteFailure", "WriteOutcome"]
