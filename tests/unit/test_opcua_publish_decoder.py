"""The fast publish-response reader against asyncua's own decoder, on generated responses.

For every response asyncua can encode, the fast reader either declines (None: asyncua's path
reads it) or gives exactly what `reading_of` gives on asyncua's decoding of the same bytes.
Simple responses (numbers, booleans, empty values, any status and timestamps) must not be
declined: that is the point of the fast path.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.opcua_publish_decoder import _seconds, decode_data_changes
from drivers.opcua_values import epoch_seconds, reading_of
from drivers.opcua_writer import INTEGER_RANGES
from gateway.samples import Quality

VT = ua.VariantType
STATUS_CODES = [0, ua.StatusCodes.UncertainLastUsableValue, ua.StatusCodes.BadSensorFailure, 0x00A80000]


def _float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


numeric_variants = st.one_of(
    st.booleans().map(lambda b: ua.Variant(b, VT.Boolean)),
    *[st.integers(lo, hi).map(lambda v, t=t: ua.Variant(v, t)) for t, (lo, hi) in INTEGER_RANGES.items()],
    st.floats(width=32, allow_nan=True).map(lambda v: ua.Variant(_float32(v), VT.Float)),
    st.floats(allow_nan=True).map(lambda v: ua.Variant(v, VT.Double)),
    st.just(ua.Variant()),  # empty (Null): no value, BAD
)
other_variants = st.one_of(
    st.text(max_size=5).map(lambda s: ua.Variant(s, VT.String)),
    st.lists(st.floats(allow_nan=False), max_size=3).map(lambda v: ua.Variant(v, VT.Double)),
    st.just(ua.Variant(datetime(2026, 1, 1, tzinfo=UTC), VT.DateTime)),
)
times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond))


@st.composite
def data_values(draw: st.DrawFn, variants: st.SearchStrategy[ua.Variant]) -> ua.DataValue:
    dv = ua.DataValue()
    if draw(st.booleans()):
        dv.Value = draw(variants)
    else:
        dv.Value = None
    dv.StatusCode = ua.StatusCode(draw(st.sampled_from(STATUS_CODES))) if draw(st.booleans()) else None
    dv.SourceTimestamp = draw(times) if draw(st.booleans()) else None
    dv.ServerTimestamp = draw(times) if draw(st.booleans()) else None
    return dv


def publish_response(items: list[list[tuple[int, ua.DataValue]]], sub_id: int = 7, seq: int = 3) -> bytes:
    resp = ua.PublishResponse()
    resp.Parameters.SubscriptionId = sub_id
    resp.Parameters.AvailableSequenceNumbers = [seq]
    resp.Parameters.NotificationMessage.SequenceNumber = seq
    resp.Parameters.NotificationMessage.PublishTime = datetime(2026, 11, 26, tzinfo=UTC)
    resp.Parameters.NotificationMessage.NotificationData = [
        ua.DataChangeNotification(
            MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=h, Value=dv) for h, dv in group]
        )
        for group in items
    ]
    return struct_to_binary(resp)


def asyncua_readings(data: bytes) -> list[tuple[int, Any]]:
    resp = struct_from_binary(ua.PublishResponse, Buffer(data))
    return [
        (item.ClientHandle, reading_of(item.Value))
        for notif in resp.Parameters.NotificationMessage.NotificationData
        for item in notif.MonitoredItems
    ]


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


item_lists = st.lists(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), data_values(numeric_variants)), max_size=8),
    min_size=1,
    max_size=3,
).filter(lambda groups: any(groups))


@settings(max_examples=300, deadline=None)
@given(item_lists, st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1))
def test_simple_responses_read_exactly_as_asyncua_reads_them(
    groups: list[list[tuple[int, ua.DataValue]]], sub_id: int, seq: int
) -> None:
    data = publish_response(groups, sub_id, seq)
    fast = decode_data_changes(data)
    assert fast is not None, "a simple response was declined"
    assert (fast.subscription_id, fast.sequence_number) == (sub_id, seq)
    expected = asyncua_readings(data)
    assert len(fast.readings) == len(expected)
    for (h, t, v, q, s), (h_ref, ref) in zip(fast.readings, expected, strict=True):
        assert h == h_ref
        assert same_value(v, ref.value)
        assert s == ref.status
        if t is None:  # no timestamp: reading_of stamped its own clock, at best UNCERTAIN
            assert max(q, Quality.UNCERTAIN) == ref.quality
        else:
            assert t == ref.t
            assert q == ref.quality


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 100), data_values(numeric_variants)), max_size=4),
    st.tuples(st.integers(0, 100), data_values(other_variants)).filter(lambda x: x[1].Value is not None),
)
def test_a_value_that_is_not_a_scalar_number_sends_the_response_to_asyncua(
    simple: list[tuple[int, ua.DataValue]], odd: tuple[int, ua.DataValue]
) -> None:
    assert decode_data_changes(publish_response([[*simple, odd]])) is None


def test_status_changes_keep_alives_and_picoseconds_go_to_asyncua() -> None:
    status = ua.PublishResponse()
    status.Parameters.SubscriptionId = 1
    status.Parameters.NotificationMessage.NotificationData = [
        ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))
    ]
    assert decode_data_changes(struct_to_binary(status)) is None
    keep_alive = ua.PublishResponse()
    keep_alive.Parameters.SubscriptionId = 1
    assert decode_data_changes(struct_to_binary(keep_alive)) is None
    dv = ua.DataValue(ua.Variant(1.0, VT.Double), SourceTimestamp=datetime(2026, 1, 1), SourcePicoseconds=5)
    assert decode_data_changes(publish_response([[(1, dv)]])) is None
    faulted = ua.PublishResponse()
    faulted.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadTooManyPublishRequests)
    faulted.Parameters.NotificationMessage.NotificationData = [ua.DataChangeNotification()]
    assert decode_data_changes(struct_to_binary(faulted)) is None


def test_a_truncated_or_padded_response_is_declined_not_misread() -> None:
    data = publish_response([[(1, ua.DataValue(ua.Variant(2.5, VT.Double)))] * 3])
    assert decode_data_changes(data) is not None
    for cut in range(len(data)):
        assert decode_data_changes(data[:cut]) is None
    assert decode_data_changes(data + b"\x00") is None


def test_a_non_bool_byte_in_a_boolean_reads_as_asyncua_reads_it() -> None:
    data = bytearray(publish_response([[(1, ua.DataValue(ua.Variant(True, VT.Boolean)))]]))
    at = bytes(data).index(bytes([0x03, 0x01, 0x01]))  # mask Value+Status, type Boolean, True
    data[at + 2] = 7
    fast = decode_data_changes(bytes(data))
    assert fast is not None
    assert fast.readings[0][2] == reading_of(asyncua_payload(bytes(data))).value == 1.0


def asyncua_payload(data: bytes) -> ua.DataValue:
    resp = struct_from_binary(ua.PublishResponse, Buffer(data))
    return resp.Parameters.NotificationMessage.NotificationData[0].MonitoredItems[0].Value


@pytest.mark.parametrize(
    "ticks",
    [
        -(10**9),
        -1,
        0,
        1,
        9,
        10,
        133_000_000_000_000_000,
        ua.uatypes.MAX_OPC_FILETIME - 1,
        ua.uatypes.MAX_OPC_FILETIME,
        2**63 - 1,
    ],
)
def test_datetime_ticks_become_the_seconds_asyncua_and_epoch_seconds_give(ticks: int) -> None:
    assert _seconds(ticks) == epoch_seconds(ua.win_epoch_to_datetime(ticks))


def test_epoch_conversion_is_exact_to_the_microsecond() -> None:
    t = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    assert _seconds(ua.datetime_to_win_epoch(t)) == (t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(
        seconds=1
    )
