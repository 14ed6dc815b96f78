"""The setpoint writer's pure rules: value checks, typing to the DataType, status mapping, read-back."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from asyncua import ua

from drivers.opcua_writer import Refused, as_number, coerce, failure_for_status, readback_matches
from gateway.setpoint_port import WriteFailure

VT = ua.VariantType


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, np.float64("nan"), "1.5", None, [1.0], b"1"]
)
def test_non_numbers_and_non_finite_values_are_invalid(value: object) -> None:
    with pytest.raises(Refused) as info:
        as_number(value)
    assert info.value.failure == WriteFailure.INVALID_VALUE


def test_numbers_become_plain_python_numbers() -> None:
    assert as_number(True) is True
    n = as_number(np.int16(7))
    assert n == 7
    assert type(n) is int
    f = as_number(np.float32(0.5))
    assert f == 0.5
    assert type(f) is float


def test_float_node_gets_the_value_rounded_to_32_bits() -> None:
    written = coerce(85.3, VT.Float)
    assert written == struct.unpack("<f", struct.pack("<f", 85.3))[0]
    assert written != 85.3
    assert coerce(85, VT.Float) == 85.0
    assert isinstance(coerce(85, VT.Float), float)


def test_double_node_takes_ints_and_floats_unchanged() -> None:
    assert coerce(85.3, VT.Double) == 85.3
    v = coerce(3, VT.Double)
    assert v == 3.0
    assert type(v) is float


@pytest.mark.parametrize(("value", "vtype"), [(1e39, VT.Float), (-1e39, VT.Float), (10**400, VT.Double)])
def test_values_beyond_the_float_range_are_type_mismatch(value: float, vtype: ua.VariantType) -> None:
    with pytest.raises(Refused) as info:
        coerce(value, vtype)
    assert info.value.failure == WriteFailure.TYPE_MISMATCH
    assert "range" in info.value.reason


def test_integer_nodes_take_integral_values_in_range() -> None:
    v = coerce(12.0, VT.Int16)
    assert v == 12
    assert type(v) is int
    assert coerce(-128, VT.SByte) == -128
    assert coerce(2**64 - 1, VT.UInt64) == 2**64 - 1


@pytest.mark.parametrize(
    ("value", "vtype", "why"),
    [
        (12.5, VT.Int32, "fraction"),
        (-1, VT.UInt16, "range"),
        (256, VT.Byte, "range"),
        (2.0**31, VT.Int32, "range"),
        (-129.0, VT.SByte, "range"),
    ],
)
def test_integer_nodes_refuse_fractions_and_out_of_type_range(
    value: float, vtype: ua.VariantType, why: str
) -> None:
    with pytest.raises(Refused) as info:
        coerce(value, vtype)
    assert info.value.failure == WriteFailure.TYPE_MISMATCH
    assert why in info.value.reason


def test_boolean_node_takes_bools_and_exactly_zero_or_one() -> None:
    assert coerce(True, VT.Boolean) is True
    assert coerce(0, VT.Boolean) is False
    assert coerce(1.0, VT.Boolean) is True
    for bad in (2, 0.5, -1):
        with pytest.raises(Refused) as info:
            coerce(bad, VT.Boolean)
        assert info.value.failure == WriteFailure.TYPE_MISMATCH


@pytest.mark.parametrize("vtype", [VT.Double, VT.Float, VT.Int32])
def test_a_bool_is_never_written_to_a_numeric_node(vtype: ua.VariantType) -> None:
    with pytest.raises(Refused) as info:
        coerce(True, vtype)
    assert info.value.failure == WriteFailure.TYPE_MISMATCH


@pytest.mark.parametrize("vtype", [VT.String, VT.DateTime, VT.ExtensionObject, VT.Variant])
def test_non_numeric_datatypes_are_type_mismatch(vtype: ua.VariantType) -> None:
    with pytest.raises(Refused) as info:
        coerce(1.0, vtype)
    assert info.value.failure == WriteFailure.TYPE_MISMATCH
    assert vtype.name in info.value.reason


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        ("BadOutOfRange", WriteFailure.OUT_OF_RANGE),
        ("BadTypeMismatch", WriteFailure.TYPE_MISMATCH),
        ("BadNotWritable", WriteFailure.NOT_WRITABLE),
        ("BadWriteNotSupported", WriteFailure.NOT_WRITABLE),
        ("BadUserAccessDenied", WriteFailure.ACCESS_DENIED),
        ("BadNodeIdUnknown", WriteFailure.BAD_NODE),
        ("BadNodeIdInvalid", WriteFailure.BAD_NODE),
        ("BadTimeout", WriteFailure.TIMEOUT),
        ("BadSessionIdInvalid", WriteFailure.DISCONNECTED),
        ("BadSecureChannelClosed", WriteFailure.DISCONNECTED),
        ("BadInternalError", WriteFailure.SERVER_REJECTED),
        ("BadTooManyOperations", WriteFailure.SERVER_REJECTED),
    ],
)
def test_status_codes_map_to_precise_failures(status: str, failure: WriteFailure) -> None:
    assert failure_for_status(getattr(ua.StatusCodes, status)) == failure


def test_readback_defaults_relative_for_floats_exact_for_integers_and_bools() -> None:
    assert readback_matches(80.0, 80.00000001, VT.Double, None)
    assert not readback_matches(1.72, 1.7, VT.Double, None)
    assert readback_matches(0.0, 0.0, VT.Double, None)
    assert not readback_matches(0.0, 1e-9, VT.Double, None)
    assert readback_matches(5, 5, VT.Int32, None)
    assert not readback_matches(5, 6, VT.Int32, None)
    assert readback_matches(True, True, VT.Boolean, None)
    assert not readback_matches(True, False, VT.Boolean, None)
    # A bool read back from a numeric node (or the reverse) is not a confirmation.
    assert not readback_matches(1, True, VT.Int32, None)
    assert not readback_matches(1.0, "1.0", VT.Double, None)
    assert not readback_matches(1.0, math.nan, VT.Double, None)


def test_readback_tolerance_is_absolute() -> None:
    assert readback_matches(1.72, 1.7, VT.Double, 0.05)
    assert not readback_matches(1.72, 1.7, VT.Double, 0.01)
    assert readback_matches(10, 11, VT.Int32, 1.0)
    assert not readback_matches(80.0, 80.00000001, VT.Double, 0.0)
