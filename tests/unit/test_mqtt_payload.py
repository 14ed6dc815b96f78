"""The MQTT payload decoder: accepted shapes, every rejection reason, and a fuzz test."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mqtt_payload import REJECT_REASONS, TS_MAX, TS_MIN, Decoded, Rejection, decode_payload
from gateway.config import Tag
from gateway.samples import Quality

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z, the receive wall time
TS = 1_714_564_795.25
MAX = 4096

JSON_TAG = Tag(name="gas.h2", driver="iot", unit="ppm", range=(0, 1000), topic="p/h2", payload="json")
NUMBER_TAG = Tag(name="gas.voc", driver="iot", unit="ppm", range=(0, 2000), topic="p/voc", payload="number")


def decode(payload: bytes, tag: Tag = JSON_TAG, max_bytes: int = MAX) -> Decoded | Rejection:
    return decode_payload(payload, tag, max_bytes, NOW)


def reason(payload: bytes, tag: Tag = JSON_TAG, max_bytes: int = MAX) -> str:
    result = decode(payload, tag, max_bytes)
    assert isinstance(result, Rejection), f"{payload!r} was accepted as {result}"
    assert result.detail  # every rejection explains itself for the log
    return result.reason


# -- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"value": 12.5, "ts": 1714564795.25}', Decoded(12.5, TS, Quality.GOOD)),
        (b'{"value": 12, "ts": 1714564795}', Decoded(12.0, 1714564795.0, Quality.GOOD)),
        (b'{"ts": 1714564795.25, "value": -3e2}', Decoded(-300.0, TS, Quality.GOOD)),
        (b'{"value": 1, "ts": 1714564795.25, "quality": "uncertain"}', Decoded(1.0, TS, Quality.UNCERTAIN)),
        (b'{"value": 1, "ts": 1714564795.25, "quality": "bad"}', Decoded(1.0, TS, Quality.BAD)),
        (b'{"value": 1, "ts": 1714564795.25, "quality": "good"}', Decoded(1.0, TS, Quality.GOOD)),
        # Extra keys are ignored: devices may add fields.
        (b'{"value": 7, "ts": 1714564795.25, "unit": "ppm", "seq": 9}', Decoded(7.0, TS, Quality.GOOD)),
        (b' \n{"value": 7, "ts": 1714564795.25}\n', Decoded(7.0, TS, Quality.GOOD)),
        # Out of the tag's engineering range is not the decoder's business: the pipeline flags it.
        (b'{"value": 1e6, "ts": 1714564795.25}', Decoded(1e6, TS, Quality.GOOD)),
    ],
)
def test_good_json(payload: bytes, expected: Decoded) -> None:
    assert decode(payload) == expected


def test_json_bad_quality_may_carry_null_value() -> None:
    result = decode(b'{"value": null, "ts": 1714564795.25, "quality": "bad"}')
    assert isinstance(result, Decoded)
    assert math.isnan(result.value)
    assert (result.t, result.quality) == (TS, Quality.BAD)


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"12.5", 12.5), (b"-3", -3.0), (b"+4e2", 400.0), (b".5", 0.5), (b"7.", 7.0), (b" 42\r\n", 42.0)],
)
def test_good_number(payload: bytes, value: float) -> None:
    # No source timestamp: the receive time stands in and the sample is only UNCERTAIN.
    assert decode(payload, NUMBER_TAG) == Decoded(value, NOW, Quality.UNCERTAIN)


def test_limit_is_inclusive() -> None:
    payload = b'{"value": 1, "ts": 1714564795.25}'
    assert isinstance(decode(payload, max_bytes=len(payload)), Decoded)
    assert reason(payload, max_bytes=len(payload) - 1) == "oversized"


# -- rejected ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe{}",  # not UTF-8
        '{"value": 1, "ts": 1714564795}'.encode("utf-16"),  # json.loads(bytes) would accept it
        b'\xef\xbb\xbf{"value": 1, "ts": 1714564795}',  # UTF-8 BOM
        b"{value: 1}",
        b'{"value": 1, "ts": 1714564795',  # truncated
        b"12.5",  # a bare number where JSON is configured
        b"[1, 1714564795]",
        b'"text"',
        b"null",
        b'{"ts": 1714564795}',  # no value
        b'{"value": "12.5", "ts": 1714564795}',  # a string is not a number
        b'{"value": true, "ts": 1714564795}',  # bool is not a number
        b'{"value": [1], "ts": 1714564795}',
        b'{"value": {"v": 1}, "ts": 1714564795}',
        b'{"value": null, "ts": 1714564795}',  # null only together with quality "bad"
        b'{"value": null, "ts": 1714564795, "quality": "uncertain"}',
        b'{"value": 1, "ts": 1714564795, "quality": "GOOD"}',
        b'{"value": 1, "ts": 1714564795, "quality": 0}',
        b'{"value": 1, "ts": 1714564795, "quality": null}',
        b"[" * 3000 + b"]" * 3000,  # nesting that exhausts the parser's recursion
        b'{"a":' * 1500 + b"1" + b"}" * 1500,
    ],
)
def test_malformed_json(payload: bytes) -> None:
    assert reason(payload, max_bytes=10_000) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [b"", b"abc", b"1,5", b"1_000", b"0x10", b"1e", b"--1", b"1 2", "١٢".encode(), b"\xff", b"true", b"."],
)
def test_malformed_number(payload: bytes) -> None:
    assert reason(payload, NUMBER_TAG) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"value": NaN, "ts": 1714564795}',
        b'{"value": Infinity, "ts": 1714564795}',
        b'{"value": -Infinity, "ts": 1714564795}',
        b'{"value": 1e999, "ts": 1714564795}',
        b'{"value": ' + b"9" * 400 + b', "ts": 1714564795}',  # an int too big for a float
    ],
)
def test_non_finite_json(payload: bytes) -> None:
    assert reason(payload) == "non_finite"


@pytest.mark.parametrize("payload", [b"nan", b"NaN", b"-inf", b"Infinity", b"+INF", b"1e999", b"-1e400"])
def test_non_finite_number(payload: bytes) -> None:
    assert reason(payload, NUMBER_TAG) == "non_finite"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"value": 1}',
        b'{"value": 1, "ts": null}',
        b'{"value": 1, "ts": "2024-05-01T12:00:00Z"}',
        b'{"value": 1, "ts": true}',
        b'{"value": 1, "ts": NaN}',
        b'{"value": 1, "ts": Infinity}',
        b'{"value": 1, "ts": 0}',  # device clock never set
        b'{"value": 1, "ts": 946684799.9}',  # just before 2000
        b'{"value": 1, "ts": 4102444800}',  # 2100-01-01 is already outside
        b'{"value": 1, "ts": 1714564795250}',  # milliseconds
        b'{"value": 1, "ts": -1714564795}',
        b'{"value": 1, "ts": ' + b"9" * 400 + b"}",
    ],
)
def test_bad_timestamp(payload: bytes) -> None:
    assert reason(payload) == "bad_timestamp"


def test_bad_timestamp_names_milliseconds() -> None:
    result = decode(b'{"value": 1, "ts": 1714564795250}')
    assert isinstance(result, Rejection)
    assert "milliseconds" in result.detail


def test_timestamp_bounds() -> None:
    for ts in (TS_MIN, TS_MAX - 0.001):
        assert isinstance(decode(json.dumps({"value": 1, "ts": ts}).encode()), Decoded)


@pytest.mark.parametrize("tag", [JSON_TAG, NUMBER_TAG])
def test_oversized_checked_before_decoding(tag: Tag) -> None:
    assert reason(b"1" * 65, tag, max_bytes=64) == "oversized"
    assert reason(b"\xff" * 100_000, tag, max_bytes=4096) == "oversized"


# -- fuzz -------------------------------------------------------------------------------------


def _check_result(result: Decoded | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS
        assert isinstance(result.detail, str)
        return
    assert isinstance(result, Decoded)
    assert isinstance(result.quality, Quality)
    assert math.isfinite(result.t)
    # NaN only ever comes from a source that declared its own reading bad.
    assert math.isfinite(result.value) or result.quality is Quality.BAD


@settings(max_examples=500, deadline=None)
@given(payload=st.binary(max_size=300), is_json=st.booleans(), max_bytes=st.integers(16, 400))
def test_arbitrary_bytes_never_raise(payload: bytes, is_json: bool, max_bytes: int) -> None:
    _check_result(decode(payload, JSON_TAG if is_json else NUMBER_TAG, max_bytes))


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(
    obj=st.dictionaries(
        st.sampled_from(["value", "ts", "quality", "x"]) | st.text(max_size=6),
        _json_values | st.sampled_from(["good", "uncertain", "bad"]),
        max_size=5,
    )
)
def test_json_shaped_objects_never_raise(obj: dict[str, object]) -> None:
    # Arbitrary bytes rarely form JSON; near-miss objects reach the shape checks.
    _check_result(decode(json.dumps(obj).encode(), JSON_TAG, 100_000))
