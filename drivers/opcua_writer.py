"""OPC-UA setpoint writes: typed to the node's DataType, checked, confirmed by a read-back.

`OpcUaSetpointWriter` implements the core's `gateway.setpoint_port.SetpointWriter`. It keeps
one session of its own (opened on the first write through `drivers.opcua_session`, kept
across writes, dropped on any connection error and reopened by the next write) and never
raises: every failure is a `WriteOutcome` with a `WriteFailure` reason (an exception nobody
foresaw is logged with its traceback and reported as `server_rejected`).

One write, step by step:

1. The value must be a finite number or a bool (`invalid_value` otherwise; nothing is sent
   and no session is opened).
2. The node's DataType is read once per session and cached, and so is its EURange property
   where it has one (AnalogItems do). A PLC program download can change both; a new session
   starts with an empty cache.
3. The value is converted to the DataType (`coerce`): Float/Double take any int or float
   (Float rounds to 32 bits, as a PLC REAL holds it); the integer types take an int, or a
   float with no fractional part, inside the type's range; Boolean takes a bool, or exactly
   0 or 1 (operator commands arrive as JSON numbers, which the command channel keeps apart
   from JSON true/false). A bool is never written to a numeric node: True as a feed rate is
   a bug upstream, not a request. Anything else is `type_mismatch`, refused locally.
4. A value outside the EURange is refused locally with `out_of_range` (defence in depth: the
   controller should refuse it too, and if it does that refusal is mapped the same way).
5. The value is written alone: one node per Write request (asyncua servers answer an
   exception in a value setter with a ServiceFault for the whole request, so one node per
   request keeps the reason attributable), as a DataValue carrying the value only: no
   Source-/ServerTimestamp and no StatusCode, which many PLCs refuse (BadWriteNotSupported).
6. After a Good write the value is read back and compared with the written value: within
   `tolerance` (absolute) if given, else relative 1e-6 for Float/Double and exact for
   integers and Boolean. Since Float values are rounded to 32 bits before sending, a REAL
   tag reads back exactly what was sent. A controller that quantises, clamps or overrides
   the value shows up as `readback_mismatch`.

A session found closed when a write starts (the server restarted since the last write) is
replaced before anything is sent. A write whose answer is lost is never retried here: it may
have been applied; the outcome says `timeout` or `disconnected` with `written` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import struct
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from asyncua import Client, Node, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.ua_utils import data_type_to_variant_type

from drivers.opcua_session import CONNECTION_ERRORS, describe, open_session
from gateway.config import OpcUaDriver
from gateway.errors import FatalDriverError, RetryableError
from gateway.setpoint_port import Number, SetpointReading, WriteFailure, WriteOutcome

log = logging.getLogger(__name__)

T = TypeVar("T")

VT = ua.VariantType
INTEGER_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    VT.SByte: (-(2**7), 2**7 - 1),
    VT.Byte: (0, 2**8 - 1),
    VT.Int16: (-(2**15), 2**15 - 1),
    VT.UInt16: (0, 2**16 - 1),
    VT.Int32: (-(2**31), 2**31 - 1),
    VT.UInt32: (0, 2**32 - 1),
    VT.Int64: (-(2**63), 2**63 - 1),
    VT.UInt64: (0, 2**64 - 1),
}
FLOATING = (VT.Float, VT.Double)
WRITABLE_TYPES = frozenset((VT.Boolean, *FLOATING, *INTEGER_RANGES))
DEFAULT_RELATIVE_TOLERANCE = 1e-6

_SC = ua.StatusCodes
STATUS_FAILURES: dict[int, WriteFailure] = {
    _SC.BadOutOfRange: WriteFailure.OUT_OF_RANGE,
    _SC.BadTypeMismatch: WriteFailure.TYPE_MISMATCH,
    _SC.BadNotWritable: WriteFailure.NOT_WRITABLE,
    _SC.BadWriteNotSupported: WriteFailure.NOT_WRITABLE,
    _SC.BadUserAccessDenied: WriteFailure.ACCESS_DENIED,
    _SC.BadNodeIdUnknown: WriteFailure.BAD_NODE,
    _SC.BadNodeIdInvalid: WriteFailure.BAD_NODE,
    # The node exists but has no Value attribute: it is an Object or a Method, not a tag.
    _SC.BadAttributeIdInvalid: WriteFailure.BAD_NODE,
    _SC.BadTimeout: WriteFailure.TIMEOUT,
    _SC.BadRequestTimeout: WriteFailure.TIMEOUT,
    # The session or channel is gone: the next write opens a new one.
    _SC.BadSessionIdInvalid: WriteFailure.DISCONNECTED,
    _SC.BadSessionClosed: WriteFailure.DISCONNECTED,
    _SC.BadSessionNotActivated: WriteFailure.DISCONNECTED,
    _SC.BadSecureChannelIdInvalid: WriteFailure.DISCONNECTED,
    _SC.BadSecureChannelClosed: WriteFailure.DISCONNECTED,
    _SC.BadConnectionClosed: WriteFailure.DISCONNECTED,
    _SC.BadServerNotConnected: WriteFailure.DISCONNECTED,
    _SC.BadNotConnected: WriteFailure.DISCONNECTED,
    _SC.BadCommunicationError: WriteFailure.DISCONNECTED,
}
# Failures after which the session cannot be trusted any more.
SESSION_FAILURES = frozenset((WriteFailure.DISCONNECTED, WriteFailure.TIMEOUT))


class Refused(Exception):
    """A value refused before anything was sent, with the reason."""

    def __init__(self, failure: WriteFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


def failure_for_status(code: int) -> WriteFailure:
    """The write failure a bad OPC-UA status code stands for."""
    return STATUS_FAILURES.get(code, WriteFailure.SERVER_REJECTED)


def status_name(code: int) -> str:
    return ua.StatusCode(code).name


def as_number(value: object) -> Number:
    """`value` as a plain bool, int or finite float; raises `Refused` (invalid_value)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):  # int and numpy integers
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise Refused(WriteFailure.INVALID_VALUE, f"{f} is not a finite number")
        return f
    raise Refused(WriteFailure.INVALID_VALUE, f"{value!r} is not a number or a bool")


def _float32(x: float) -> float:
    """`x` rounded to the nearest 32-bit float, as a Float node will hold it."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        raise Refused(WriteFailure.TYPE_MISMATCH, f"{x} is outside the Float range (±3.4e38)") from None


def coerce(value: Number, vtype: ua.VariantType) -> Number:
    """`value` (from `as_number`) converted for a node of `vtype`; raises `Refused`.

    See the module docstring for the rules; the result is what is sent.
    """
    name = vtype.name
    if vtype not in WRITABLE_TYPES:
        raise Refused(WriteFailure.TYPE_MISMATCH, f"the node's DataType {name} is not a number or Boolean")
    if vtype == VT.Boolean:
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise Refused(WriteFailure.TYPE_MISMATCH, f"{value} to a Boolean node: only a bool, 0 or 1")
    if isinstance(value, bool):
        raise Refused(WriteFailure.TYPE_MISMATCH, f"a bool ({value}) to a {name} node")
    if vtype in FLOATING:
        try:
            f = float(value)
        except OverflowError:
            raise Refused(WriteFailure.TYPE_MISMATCH, f"{value} is outside the {name} range") from None
        return _float32(f) if vtype == VT.Float else f
    low, high = INTEGER_RANGES[vtype]
    if isinstance(value, float):
        if not value.is_integer():
            raise Refused(WriteFailure.TYPE_MISMATCH, f"{value} has a fraction; the node is {name}")
        value = int(value)
    if not low <= value <= high:
        raise Refused(WriteFailure.TYPE_MISMATCH, f"{value} is outside the {name} range [{low}, {high}]")
    return value


def readback_matches(
    written: Number, read_back: object, vtype: ua.VariantType, tolerance: float | None
) -> bool:
    """Whether the value read back confirms the written one (see the module docstring)."""
    if isinstance(read_back, bool) != isinstance(written, bool):
        return False
    if not isinstance(read_back, int | float):
        return False
    if vtype == VT.Boolean:
        return read_back == written
    if not math.isfinite(read_back):
        return False
    diff = abs(read_back - written)
    if tolerance is not None:
        return diff <= tolerance
    if vtype in FLOATING:
        return diff <= DEFAULT_RELATIVE_TOLERANCE * max(abs(written), abs(read_back))
    return diff == 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the writer learned about a node once per session."""

    vtype: ua.VariantType
    datatype: str  # the DataType's name, e.g. "Float" or "Duration (Double)"
    eurange: tuple[float, float] | None


class _Failed(Exception):
    """A step of a write ended the write: its reason, status name and detail."""

    def __init__(self, failure: WriteFailure, status: str | None, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class _Draft:
    """What one write has got to so far; becomes the outcome."""

    node_id: str
    requested: Number
    written: Number | None = None
    datatype: str | None = None
    status: str | None = None
    read_back: Number | None = None

    def outcome(self, failure: WriteFailure | None, detail: str) -> WriteOutcome:
        return WriteOutcome(
            node_id=self.node_id,
            requested=self.requested,
            written=self.written,
            datatype=self.datatype,
            ok=failure is None,
            failure=failure,
            status=self.status,
            read_back=self.read_back,
            detail=detail,
        )


class OpcUaSetpointWriter:
    """Writes setpoints to one OPC-UA server over a session of its own (see module docstring)."""

    def __init__(self, name: str, settings: OpcUaDriver, *, check_eurange: bool = True) -> None:
        self.name = name
        self.settings = settings
        # False skips the local EURange check, leaving range checks to the server alone.
        self.check_eurange = check_eurange
        self.sessions_opened = 0
        self.writes_sent = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Client | None = None
        self._nodes: dict[str, NodeInfo] = {}
        # One write at a time: a session is opened or replaced by one writer only, and two
        # writes to one setpoint keep their order.
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop_session()

    async def __aenter__(self) -> OpcUaSetpointWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def write(self, node_id: str, value: Number, *, tolerance: float | None = None) -> WriteOutcome:
        draft = _Draft(node_id, value)
        try:
            number = as_number(value)
            if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
                raise Refused(
                    WriteFailure.INVALID_VALUE, f"tolerance {tolerance} is not a finite number >= 0"
                )
        except Refused as exc:
            return draft.outcome(exc.failure, f"refused before sending: {exc.reason}")
        try:
            nodeid = ua.NodeId.from_string(node_id)
        except (ua.UaStringParsingError, ValueError, TypeError):
            return draft.outcome(WriteFailure.BAD_NODE, f"{node_id!r} is not an OPC-UA node id")
        async with self._lock:
            try:
                outcome = await self._attempt(draft, nodeid, number, tolerance)
            except Exception as exc:  # the contract is an outcome, whatever asyncua raises
                log.exception("opcua %s writer: unexpected error writing %s", self.name, node_id)
                await self._drop_session(abandon=True)
                outcome = draft.outcome(
                    WriteFailure.SERVER_REJECTED, f"{node_id}: unexpected error: {describe(exc)}"
                )
        level = logging.INFO if outcome.ok else logging.WARNING
        log.log(level, "opcua %s writer: %s := %r: %s", self.name, node_id, value, outcome.detail)
        return outcome

    async def read(self, node_id: str) -> SetpointReading:
        """The node's current value, DataType and EURange over the writer's session."""
        try:
            nodeid = ua.NodeId.from_string(node_id)
        except (ua.UaStringParsingError, ValueError, TypeError):
            return SetpointReading(
                node_id, None, None, None, WriteFailure.BAD_NODE, f"{node_id!r} is not an OPC-UA node id"
            )
        async with self._lock:
            try:
                client = await self._session()
                node = client.get_node(nodeid)
                info = await self._node_info(client, node_id, node)
                value = await self._read_back(node, node_id, "reading its value")
            except _Failed as exc:
                return SetpointReading(node_id, None, None, None, exc.failure, exc.detail)
            except Exception as exc:  # the contract is a reading, whatever asyncua raises
                log.exception("opcua %s writer: unexpected error reading %s", self.name, node_id)
                await self._drop_session(abandon=True)
                return SetpointReading(
                    node_id,
                    None,
                    None,
                    None,
                    WriteFailure.SERVER_REJECTED,
                    f"{node_id}: unexpected error: {describe(exc)}",
                )
        return SetpointReading(node_id, value, info.datatype, info.eurange, None, f"{node_id} = {value!r}")

    async def _attempt(
        self, draft: _Draft, nodeid: ua.NodeId, number: Number, tolerance: float | None
    ) -> WriteOutcome:
        node_id = draft.node_id
        try:
            client = await self._session()
            node = client.get_node(nodeid)
            info = await self._node_info(client, node_id, node)
            draft.datatype = info.datatype
            try:
                typed = coerce(number, info.vtype)
                self._check_range(number, info)
            except Refused as exc:
                return draft.outcome(exc.failure, f"refused before sending: {exc.reason}")

            # Written from here on: a lost answer does not mean the value did not arrive.
            draft.written = typed
            status = await self._write(node, typed, info.vtype)
            draft.status = status.name
            if not status.is_good():
                failure = failure_for_status(status.value)
                if failure in SESSION_FAILURES:
                    await self._drop_session(abandon=True)
                return draft.outcome(failure, f"{node_id}: the server refused {typed!r}: {status.name}")

            read_back = await self._read_back(node, node_id)
            draft.read_back = read_back
        except _Failed as exc:
            detail = exc.detail
            if draft.written is not None and draft.status is None and exc.status is None:
                # Sent, never answered: the controller may well hold the new value.
                detail += "; the value may or may not have been applied"
            if exc.status is not None and draft.status is None:
                draft.status = exc.status
            return draft.outcome(exc.failure, detail)

        if not readback_matches(typed, read_back, info.vtype, tolerance):
            if tolerance is not None:
                allowed = f"±{tolerance}"
            else:
                allowed = "relative 1e-6" if info.vtype in FLOATING else "exact"
            return draft.outcome(
                WriteFailure.READBACK_MISMATCH,
                f"{node_id}: wrote {typed!r}, read back {read_back!r} (allowed: {allowed})",
            )
        return draft.outcome(None, f"{node_id}: wrote {typed!r} ({info.datatype}), read back {read_back!r}")

    # --- session -------------------------------------------------------------------------------
    async def _session(self) -> Client:
        if self._client is not None:
            if self._client.uaclient.state is UaClientState.CONNECTED:
                return self._client
            # The transport closed while we were idle (server restart, watchdog): start afresh.
            log.info("opcua %s writer: session to %s was lost; reopening", self.name, self.settings.url)
            await self._drop_session(abandon=True)
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(open_session(self.settings, f"{self.name} writer"))
        except (RetryableError, FatalDriverError) as exc:
            # Nothing to close: open_session cleans up after a failed connect.
            raise _Failed(WriteFailure.DISCONNECTED, None, f"no session: {exc}") from exc
        self._stack, self._client = stack, client
        self._nodes.clear()
        self.sessions_opened += 1
        log.info("opcua %s writer: session open to %s", self.name, self.settings.url)
        return client

    async def _drop_session(self, *, abandon: bool = False) -> None:
        """Close the session; `abandon`: it failed, so cut the socket first rather than wait
        a request timeout for a CloseSession a hung server will not answer."""
        stack, client = self._stack, self._client
        self._stack = self._client = None
        if abandon and client is not None:
            # Cut the socket at the protocol: `Client.disconnect_socket()` does nothing once
            # asyncua's watchdog has flagged the loss, and the CloseSession that open_session's
            # exit then sends would wait a full request timeout on a hung server.
            protocol = client.uaclient.protocol
            if protocol is not None and protocol.transport is not None:
                protocol.disconnect_socket()
        # What we knew about the nodes may change with the server's program (a new session).
        self._nodes.clear()
        if stack is not None:
            # open_session's exit already swallows the errors of closing a dead connection.
            await stack.aclose()

    async def _call(self, what: str, request: Awaitable[T]) -> T:
        """Await one request; an error becomes `_Failed`, dropping the session if it is dead."""
        try:
            return await request
        except ua.UaStatusCodeError as exc:
            failure = failure_for_status(exc.code)
            if failure in SESSION_FAILURES:
                await self._drop_session(abandon=True)
            raise _Failed(
                failure, status_name(exc.code), f"{what}: the server answered {status_name(exc.code)}"
            ) from exc
        except TimeoutError as exc:
            await self._drop_session(abandon=True)
            raise _Failed(
                WriteFailure.TIMEOUT, None, f"{what}: no answer within {self.settings.request_timeout_s} s"
            ) from exc
        except CONNECTION_ERRORS as exc:
            await self._drop_session(abandon=True)
            raise _Failed(WriteFailure.DISCONNECTED, None, f"{what}: {describe(exc)}") from exc

    # --- the steps -----------------------------------------------------------------------------
    async def _node_info(self, client: Client, node_id: str, node: Node) -> NodeInfo:
        info = self._nodes.get(node_id)
        if info is not None:
            return info
        dtype = await self._call(f"{node_id}: reading its DataType", node.read_data_type())
        if dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int) and 1 <= dtype.Identifier <= 25:
            vtype = ua.VariantType(dtype.Identifier)
            name = vtype.name
        else:
            # A derived type (Duration, an enumeration, a vendor's REAL): encode as its base.
            dnode = client.get_node(dtype)
            vtype = await self._call(
                f"{node_id}: resolving DataType {dtype}", data_type_to_variant_type(dnode)
            )
            browse = await self._call(f"{node_id}: reading DataType {dtype}", dnode.read_browse_name())
            name = f"{browse.Name} ({vtype.name})"
        info = NodeInfo(vtype, name, await self._eurange(node_id, node) if self.check_eurange else None)
        self._nodes[node_id] = info
        return info

    async def _eurange(self, node_id: str, node: Node) -> tuple[float, float] | None:
        try:
            prop = await node.get_child(ua.QualifiedName("EURange", 0))
            rng = await prop.read_value()
        except ua.UaStatusCodeError as exc:
            if failure_for_status(exc.code) in SESSION_FAILURES:
                await self._drop_session(abandon=True)
                raise _Failed(
                    failure_for_status(exc.code), status_name(exc.code), f"{node_id}: {describe(exc)}"
                ) from exc
            # BadNoMatch: no EURange property, the server alone checks the range.
            return None
        except TimeoutError as exc:
            await self._drop_session(abandon=True)
            raise _Failed(WriteFailure.TIMEOUT, None, f"{node_id}: reading its EURange timed out") from exc
        except CONNECTION_ERRORS as exc:
            await self._drop_session(abandon=True)
            raise _Failed(
                WriteFailure.DISCONNECTED, None, f"{node_id}: reading its EURange: {describe(exc)}"
            ) from exc
        low, high = getattr(rng, "Low", None), getattr(rng, "High", None)
        if not (
            isinstance(low, int | float)
            and isinstance(high, int | float)
            and math.isfinite(low)
            and math.isfinite(high)
            and low <= high
        ):
            log.warning(
                "opcua %s writer: %s has an unusable EURange %r; not checking it", self.name, node_id, rng
            )
            return None
        return float(low), float(high)

    @staticmethod
    def _check_range(value: Number, info: NodeInfo) -> None:
        if info.eurange is None or isinstance(value, bool):
            return
        low, high = info.eurange
        if not low <= value <= high:
            raise Refused(WriteFailure.OUT_OF_RANGE, f"{value} is outside the node's EURange [{low}, {high}]")

    async def _write(self, node: Node, typed: Number, vtype: ua.VariantType) -> ua.StatusCode:
        # Value only: no timestamps and no status, the combination every server must accept.
        dv = ua.DataValue(ua.Variant(typed, vtype), StatusCode=None)
        params = ua.WriteParameters(
            NodesToWrite=[ua.WriteValue(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value, Value=dv)]
        )
        self.writes_sent += 1
        # A refusal comes either as this item's status, or (asyncua servers, for an exception
        # in a value setter) as a ServiceFault of the whole request, raised by `_call`.
        results = await self._call(f"{node.nodeid.to_string()}: writing {typed!r}", node.write_params(params))
        if len(results) != 1:
            raise _Failed(
                WriteFailure.SERVER_REJECTED, None, f"the server answered {len(results)} results for 1 write"
            )
        return results[0]

    async def _read_back(
        self, node: Node, node_id: str, what: str = "written (Good) but the read-back"
    ) -> Number:
        try:
            dv = await self._call(f"{node_id}: {what}", node.read_data_value())
        except _Failed as exc:
            if exc.failure in SESSION_FAILURES:
                raise
            # E.g. BadNotReadable on a write-only tag: the write cannot be confirmed.
            raise _Failed(WriteFailure.READBACK_MISMATCH, None, exc.detail) from exc
        value = dv.Value.Value if dv.Value is not None else None
        if isinstance(value, bool | int | float):
            return value
        raise _Failed(WriteFailure.READBACK_MISMATCH, None, f"{node_id}: {what}: {value!r} is not a number")
