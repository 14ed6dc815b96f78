"""Reads OPC-UA publish responses that carry only scalar data changes straight from their bytes.

asyncua decodes every publish response into dataclasses (PublishResponse, DataChangeNotification,
MonitoredItemNotification, DataValue, Variant, datetimes) through its generic per-field decoder,
then wraps each item in an event object for a queue: about 30 µs per notification here, most of
the OPC-UA input's CPU. A PLC's publish responses are nearly always the same simple shape, so
this module reads that shape with precompiled `struct` layouts into plain tuples
(client handle, time, value, quality, status code): a few µs per notification.

Only the common case is read here: a Good response without diagnostics, string table or
additional header, whose notification data are DataChangeNotifications of scalar numbers or
booleans (or empty Variants), without picoseconds. Anything else (keep-alives, status changes,
events, arrays, strings, diagnostics, a structure this reader does not know) returns None and
the caller hands the untouched bytes to asyncua's own decoder, so the rare paths behave exactly
as before. The results equal `drivers.opcua_values.reading_of` on asyncua's decoding of the same
bytes (the tests hold them equal on generated responses).

Encoding: OPC UA Part 6, 5.2 (binary). DataValue fields follow asyncua's order; it differs from
the spec's only when picoseconds are present, which is why those go the generic way.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import timedelta

from asyncua import ua

from gateway.samples import Quality, quality_from_status_code

# OPC-UA DateTime: 100 ns ticks since 1601-01-01 UTC. asyncua keeps microseconds, clamps
# negative ticks to 1601 and anything past year 9999 to its maximum; so do we.
_TICKS_1601_TO_1970_US = 11_644_473_600_000_000
_MAX_TICKS = ua.uatypes.MAX_OPC_FILETIME
_MAX_US = (
    ua.uatypes.MAX_FILETIME_EPOCH_AS_UTC_DATETIME - ua.uatypes.FILETIME_EPOCH_AS_UTC_DATETIME
) // timedelta(microseconds=1)

_PUBLISH_RESPONSE_ID = ua.ObjectIds.PublishResponse_Encoding_DefaultBinary
_DATA_CHANGE_ID = ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary

# DataValue encoding mask bits.
_HAS_VALUE = 0x01
_HAS_STATUS = 0x02
_HAS_SOURCE_TS = 0x04
_HAS_SERVER_TS = 0x08
_KNOWN_SIMPLE = _HAS_VALUE | _HAS_STATUS | _HAS_SOURCE_TS | _HAS_SERVER_TS

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_HANDLE_MASK = struct.Struct("<IB")
_SUBSCRIPTION_HEAD = struct.Struct("<Ii")  # SubscriptionId, AvailableSequenceNumbers count
# ResponseHeader up to ServiceDiagnostics: Timestamp, RequestHandle, ServiceResult, diag mask.
_RESPONSE_HEADER = struct.Struct("<qIIB")
# NotificationMessage head: SequenceNumber, PublishTime, NotificationData count.
_MESSAGE_HEAD = struct.Struct("<Iqi")

# Scalar Variant built-in types that are numbers (or booleans), by type id: (layout, size).
_NUMERIC: dict[int, struct.Struct] = {
    1: struct.Struct("<?"),  # Boolean
    2: struct.Struct("<b"),  # SByte
    3: struct.Struct("<B"),  # Byte
    4: struct.Struct("<h"),  # Int16
    5: struct.Struct("<H"),  # UInt16
    6: struct.Struct("<i"),  # Int32
    7: struct.Struct("<I"),  # UInt32
    8: struct.Struct("<q"),  # Int64
    9: struct.Struct("<Q"),  # UInt64
    10: struct.Struct("<f"),  # Float
    11: struct.Struct("<d"),  # Double
}
_VARIANT_LAYOUT: list[struct.Struct | None] = [_NUMERIC.get(i) for i in range(64)]

# (client handle, time in epoch seconds, value, quality, status code); time None when the
# DataValue carried no timestamp at all (the caller stamps it with its clock, at best UNCERTAIN).
FastReading = tuple[int, float | None, float, Quality, int]


class NotSimple(Exception):
    """The response is not of the shape this reader handles (internal: becomes None)."""


@dataclass(frozen=True, slots=True)
class DataChanges:
    """One publish response's data changes, read the fast way."""

    subscription_id: int
    sequence_number: int
    readings: list[FastReading]


def _seconds(ticks: int) -> float:
    """DateTime ticks to epoch seconds, exactly as asyncua's datetime and our epoch_seconds give."""
    if ticks >= _MAX_TICKS:
        us = _MAX_US
    elif ticks < 0:
        us = 0
    else:
        us = ticks // 10
    return (us - _TICKS_1601_TO_1970_US) / 1_000_000


def _numeric_node_id(data: bytes, pos: int) -> tuple[int, int]:
    """A NodeId in namespace 0 with a numeric identifier: (identifier, next position)."""
    enc = data[pos]
    if enc == 0:  # two-byte
        return data[pos + 1], pos + 2
    if enc == 1:  # four-byte
        if data[pos + 1] != 0:
            raise NotSimple
        return _U16.unpack_from(data, pos + 2)[0], pos + 4
    if enc == 2:  # numeric
        if _U16.unpack_from(data, pos + 1)[0] != 0:
            raise NotSimple
        return _U32.unpack_from(data, pos + 3)[0], pos + 7
    raise NotSimple


def _data_change_items(data: bytes, pos: int, end: int, out: list[FastReading]) -> int:
    """The MonitoredItemNotifications of one DataChangeNotification body into `out`."""
    (count,) = _I32.unpack_from(data, pos)
    pos += 4
    layouts = _VARIANT_LAYOUT
    handle_mask = _HANDLE_MASK.unpack_from
    u32 = _U32.unpack_from
    i64 = _I64.unpack_from
    for _ in range(max(count, 0)):
        handle, mask = handle_mask(data, pos)
        pos += 5
        if mask & ~_KNOWN_SIMPLE:
            raise NotSimple  # picoseconds or unknown bits
        value = math.nan
        bad_value = True
        if mask & _HAS_VALUE:
            vtype = data[pos]
            pos += 1
            if vtype:
                layout = layouts[vtype] if vtype < 64 else None
                if layout is None:
                    raise NotSimple  # array, dimensions, or not a number
                value = float(layout.unpack_from(data, pos)[0])
                pos += layout.size
                bad_value = False
        status = 0
        if mask & _HAS_STATUS:
            (status,) = u32(data, pos)
            pos += 4
        t: float | None = None
        if mask & _HAS_SOURCE_TS:
            t = _seconds(i64(data, pos)[0])
            pos += 8
        if mask & _HAS_SERVER_TS:
            if t is None:
                t = _seconds(i64(data, pos)[0])
            pos += 8
        quality = Quality.BAD if bad_value else quality_from_status_code(status)
        out.append((handle, t, value, quality, status))
    (n_diag,) = _I32.unpack_from(data, pos)
    pos += 4
    if n_diag > 0 or pos != end:
        raise NotSimple
    return pos


def _decode(data: bytes) -> DataChanges | None:
    type_id, pos = _numeric_node_id(data, 0)
    if type_id != _PUBLISH_RESPONSE_ID:
        raise NotSimple
    _ts, _handle, service_result, diag_mask = _RESPONSE_HEADER.unpack_from(data, pos)
    pos += _RESPONSE_HEADER.size
    if service_result != 0 or diag_mask != 0:
        raise NotSimple
    (n_strings,) = _I32.unpack_from(data, pos)
    pos += 4
    if n_strings > 0:
        raise NotSimple
    header_type, pos = _numeric_node_id(data, pos)  # AdditionalHeader: must be null
    if header_type != 0 or data[pos] != 0:
        raise NotSimple
    pos += 1
    subscription_id, n_available = _SUBSCRIPTION_HEAD.unpack_from(data, pos)
    pos += (
        _SUBSCRIPTION_HEAD.size + 4 * max(n_available, 0) + 1
    )  # available sequence numbers, MoreNotifications
    sequence_number, _publish_time, n_data = _MESSAGE_HEAD.unpack_from(data, pos)
    pos += _MESSAGE_HEAD.size
    if n_data <= 0:
        return None  # a keep-alive: asyncua's path handles it (and keeps its bookkeeping)
    readings: list[FastReading] = []
    for _ in range(n_data):
        type_id, pos = _numeric_node_id(data, pos)
        if type_id != _DATA_CHANGE_ID or data[pos] != 1:
            raise NotSimple  # status change, events, or a body that is not a ByteString
        (length,) = _I32.unpack_from(data, pos + 1)
        pos += 5
        pos = _data_change_items(data, pos, pos + length, readings)
    (n_results,) = _I32.unpack_from(data, pos)
    pos += 4 + 4 * max(n_results, 0)
    (n_diag,) = _I32.unpack_from(data, pos)
    pos += 4
    if n_diag > 0 or pos != len(data):
        raise NotSimple
    return DataChanges(subscription_id, sequence_number, readings)


def decode_data_changes(data: bytes) -> DataChanges | None:
    """The data changes of a PublishResponse (its bytes from the TypeId on), or None when it is
    not the simple shape: then asyncua's decoder must read it."""
    try:
        return _decode(data)
    except (NotSimple, struct.error, IndexError):
        return None
