"""The MQTT payload decoder: accepted shapes, every rejection reason, paths, time formats, SenML,
and fuzz tests."""

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

JSON_TAG = Tag(name="gas.h2", driver="iot", unit="ppm", range=(-1000, 1000), topic="p/h2", payload="json")
NUMBER_TAG = Tag(
    name="gas.voc", driver="iot", unit="ppm", range=(-1000, 2000), topic="p/voc", payload="number"
)


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
        # The range is inclusive at both ends.
        (b'{"value": 1000, "ts": 1714564795.25}', Decoded(1000.0, TS, Quality.GOOD)),
        (b'{"value": -1000, "ts": 1714564795.25}', Decoded(-1000.0, TS, Quality.GOOD)),
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


# -- out of range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "tag"),
    [
        (b'{"value": 1e6, "ts": 1714564795.25}', JSON_TAG),
        (b'{"value": 1000.0001, "ts": 1714564795.25}', JSON_TAG),
        (b'{"value": -1e308, "ts": 1714564795.25}', JSON_TAG),
        (b'{"value": 1000, "ts": 1714564795.25, "quality": "bad"}', JSON_TAG),  # BAD, but still a number
        (b"2000.5", NUMBER_TAG),
        (b"-1001", NUMBER_TAG),
    ],
)
def test_out_of_range(payload: bytes, tag: Tag) -> None:
    tag = tag.model_copy(update={"range": (-1000.0, 999.0)}) if tag is JSON_TAG else tag
    result = decode(payload, tag)
    assert isinstance(result, Rejection)
    assert result.reason == "out_of_range"
    assert "outside range" in result.detail


def test_null_bad_value_is_not_range_checked() -> None:
    # NaN is "no reading", declared by the source: nothing to compare with the range.
    tag = JSON_TAG.model_copy(update={"range": (10.0, 20.0)})
    result = decode(b'{"value": null, "ts": 1714564795.25, "quality": "bad"}', tag)
    assert isinstance(result, Decoded)
    assert math.isnan(result.value)


# -- paths, time formats ----------------------------------------------------------------------


def json_tag(**changes: object) -> Tag:
    return Tag.model_validate({**JSON_TAG.model_dump(), **changes})


@pytest.mark.parametrize(
    ("changes", "payload", "expected"),
    [
        (
            {"value_path": "data.v", "time_path": "data.t", "quality_path": "data.q"},
            {"data": {"v": 3.5, "t": TS, "q": "uncertain"}},
            Decoded(3.5, TS, Quality.UNCERTAIN),
        ),
        (
            {"value_path": "readings.0.value", "time_path": "readings.0.ts"},
            {"readings": [{"value": 4, "ts": TS}, {"value": 5, "ts": TS + 1}]},
            Decoded(4.0, TS, Quality.GOOD),
        ),
        (
            {"value_path": "readings.1.value", "time_path": "meta.time"},
            {"readings": [{"value": 4}, {"value": 5}], "meta": {"time": TS}},
            Decoded(5.0, TS, Quality.GOOD),
        ),
        # A top-level array is addressed by index.
        ({"value_path": "0", "time_path": "1"}, [6, TS], Decoded(6.0, TS, Quality.GOOD)),
        # An object key that looks like an index is still a key.
        ({"value_path": "ch.0"}, {"ch": {"0": 7}, "ts": TS}, Decoded(7.0, TS, Quality.GOOD)),
        # No quality path: a "quality" key is just another ignored field.
        ({"quality_path": None}, {"value": 1, "ts": TS, "quality": 17}, Decoded(1.0, TS, Quality.GOOD)),
        ({"time_format": "epoch_ms"}, {"value": 1, "ts": 1714564795250}, Decoded(1.0, TS, Quality.GOOD)),
        (
            {"time_format": "iso8601"},
            {"value": 1, "ts": "2024-05-01T11:59:55.250Z"},
            Decoded(1.0, TS, Quality.GOOD),
        ),
        (
            {"time_format": "iso8601"},
            {"value": 1, "ts": "2024-05-01T13:59:55.25+02:00"},
            Decoded(1.0, TS, Quality.GOOD),
        ),
        (
            {"time_format": "iso8601"},
            {"value": 1, "ts": "20240501T115955.25Z"},
            Decoded(1.0, TS, Quality.GOOD),
        ),
        # No source time in the payload: the receive time stands in, and the sample is UNCERTAIN.
        ({"time_path": None}, {"value": 2, "ts": "ignored"}, Decoded(2.0, NOW, Quality.UNCERTAIN)),
        ({"time_path": None}, {"value": 2, "quality": "bad"}, Decoded(2.0, NOW, Quality.BAD)),
    ],
)
def test_paths_and_time_formats(changes: dict[str, object], payload: object, expected: Decoded) -> None:
    assert decode(json.dumps(payload).encode(), json_tag(**changes)) == expected


@pytest.mark.parametrize(
    ("changes", "payload", "why"),
    [
        ({"value_path": "data.v"}, {"data": {"x": 1}, "ts": TS}, ("malformed", "data.v")),
        ({"value_path": "data.v"}, {"data": 5, "ts": TS}, ("malformed", "data.v")),
        ({"value_path": "r.2.value"}, {"r": [{"value": 1}], "ts": TS}, ("malformed", "r.2.value")),
        ({"value_path": "r.x"}, {"r": [1], "ts": TS}, ("malformed", "r.x")),
        ({"value_path": "r.-1"}, {"r": [1], "ts": TS}, ("malformed", "r.-1")),
        ({"value_path": "r.1"}, {"r": [1, True], "ts": TS}, ("malformed", "r.1")),
        ({"quality_path": "q.s"}, {"value": 1, "ts": TS, "q": {"s": "fine"}}, ("malformed", "q.s")),
        ({"time_path": "meta.t"}, {"value": 1, "meta": {}}, ("bad_timestamp", "meta.t")),
        ({"time_format": "epoch_ms"}, {"value": 1, "ts": TS}, ("bad_timestamp", "seconds?")),
        ({"time_format": "epoch_ms"}, {"value": 1, "ts": "1714564795250"}, ("bad_timestamp", "number")),
        (
            {"time_format": "iso8601"},
            {"value": 1, "ts": "2024-05-01T12:00:00"},
            ("bad_timestamp", "timezone"),
        ),
        ({"time_format": "iso8601"}, {"value": 1, "ts": "2024-05-01"}, ("bad_timestamp", "timezone")),
        ({"time_format": "iso8601"}, {"value": 1, "ts": TS}, ("bad_timestamp", "ISO 8601")),
        ({"time_format": "iso8601"}, {"value": 1, "ts": "yesterday"}, ("bad_timestamp", "ISO 8601")),
        ({"time_format": "iso8601"}, {"value": 1, "ts": "2024-13-01T00:00:00Z"}, ("bad_timestamp", "ISO")),
        ({"time_format": "iso8601"}, {"value": 1, "ts": "1970-01-01T00:00:00Z"}, ("bad_timestamp", "2000")),
        (
            {"time_format": "iso8601"},
            {"value": 1, "ts": "9999-12-31T23:59:59-23:59"},
            ("bad_timestamp", "2000"),
        ),
        ({"time_format": "iso8601"}, {"value": 1, "ts": "0001-01-01T00:00:00+23:59"}, ("bad_timestamp", "")),
        (
            {"time_format": "iso8601"},
            {"value": 1, "ts": "２０２４-05-01T12:00:00Z"},
            ("bad_timestamp", "ISO"),
        ),
    ],
)
def test_path_and_time_rejections(changes: dict[str, object], payload: object, why: tuple[str, str]) -> None:
    result = decode(json.dumps(payload).encode(), json_tag(**changes))
    assert isinstance(result, Rejection), result
    assert (result.reason, why[1] in result.detail) == (why[0], True), result.detail


def test_config_refuses_empty_path_parts() -> None:
    for path in ("", "a..b", ".a", "a."):
        with pytest.raises(ValueError, match="value_path"):
            json_tag(value_path=path)


# -- SenML ------------------------------------------------------------------------------------

SENML_TAG = Tag(
    name="gas.co",
    driver="iot",
    unit="ppm",
    range=(0, 500),
    topic="p/senml",
    payload="senml",
    senml_name="dev1:co",
)
TEMP_TAG = Tag(name="dry.temp", driver="iot", unit="°C", range=(-50, 300), topic="p/temp", payload="senml")


def senml(pack: object, tag: Tag = SENML_TAG) -> Decoded | Rejection:
    return decode(json.dumps(pack).encode(), tag)


@pytest.mark.parametrize(
    ("pack", "expected"),
    [
        # RFC 8428 style: base name and time in the first record, names relative to them.
        (
            [{"bn": "dev1:", "bt": TS - 10, "bu": "ppm", "n": "h2", "v": 9}, {"n": "co", "v": 12.5, "t": 10}],
            Decoded(12.5, TS, Quality.GOOD),
        ),
        ([{"n": "dev1:co", "v": 3, "t": TS, "u": "ppm"}], Decoded(3.0, TS, Quality.GOOD)),
        # bv is added to v.
        ([{"bn": "dev1:", "bv": 100, "bt": TS}, {"n": "co", "v": -1.5}], Decoded(98.5, TS, Quality.GOOD)),
        # Several records for our name: the newest is the sample, wherever it sits in the pack.
        (
            [
                {"bn": "dev1:", "bt": TS},
                {"n": "co", "v": 1, "t": -2},
                {"n": "co", "v": 2},
                {"n": "co", "v": 3, "t": -1},
            ],
            Decoded(2.0, TS, Quality.GOOD),
        ),
        # A base name later in the pack applies from there on.
        (
            [{"bn": "other:", "n": "co", "v": 400, "t": TS}, {"bn": "dev1:", "n": "co", "v": 4, "t": TS}],
            Decoded(4.0, TS, Quality.GOOD),
        ),
        # Times below 2**28 are relative to now (RFC 8428 4.5.3): receive time plus t, UNCERTAIN.
        ([{"n": "dev1:co", "v": 5}], Decoded(5.0, NOW, Quality.UNCERTAIN)),
        ([{"n": "dev1:co", "v": 5, "t": -4.75}], Decoded(5.0, NOW - 4.75, Quality.UNCERTAIN)),
        ([{"bt": -10, "n": "dev1:co", "v": 5, "t": 5}], Decoded(5.0, NOW - 5, Quality.UNCERTAIN)),
        # Records for other sensors may carry anything, and unknown plain fields are ignored.
        (
            [{"n": "x", "vs": "text"}, {"n": "dev1:co", "v": 6, "t": TS, "ut": 60}],
            Decoded(6.0, TS, Quality.GOOD),
        ),
    ],
)
def test_senml_accepted(pack: object, expected: Decoded) -> None:
    assert senml(pack) == expected


def test_senml_defaults_to_the_tag_name_and_knows_celsius() -> None:
    assert senml([{"n": "dry.temp", "u": "Cel", "v": 71.5, "t": TS}], TEMP_TAG) == Decoded(
        71.5, TS, Quality.GOOD
    )
    result = senml([{"n": "dry.temp", "u": "K", "v": 344.65, "t": TS}], TEMP_TAG)
    assert isinstance(result, Rejection)
    assert (result.reason, "unit" in result.detail) == ("malformed", True)


@pytest.mark.parametrize(
    ("pack", "expected_reason"),
    [
        ({"n": "dev1:co", "v": 1}, "malformed"),  # a record, not a pack
        ([], "malformed"),
        ([{"n": "dev1:h2", "v": 1}], "malformed"),  # no record for us
        ([{"n": "dev1:co", "vb": True}], "malformed"),
        ([{"n": "dev1:co", "vs": "12"}], "malformed"),
        ([{"n": "dev1:co", "vd": "AQI="}], "malformed"),
        ([{"n": "dev1:co", "s": 10}], "malformed"),
        ([{"n": "dev1:co"}], "malformed"),
        ([{"n": "dev1:co", "v": "1"}], "malformed"),
        ([{"n": "dev1:co", "v": True}], "malformed"),
        ([{"n": "dev1:co", "v": 1, "u": "ppb"}], "malformed"),
        ([{"bu": "%", "n": "dev1:co", "v": 1}], "malformed"),
        ([{"n": "dev1:co", "v": 1, "u": 5}], "malformed"),
        ([{"bn": 7, "n": "co", "v": 1}], "malformed"),
        ([{"bu": None, "n": "dev1:co", "v": 1}], "malformed"),
        ([{"n": 1, "v": 1}], "malformed"),
        ([{"n": "dev1:co", "v": 1, "t": TS, "crit_": 1}], "malformed"),  # must-understand extension
        ([1, {"n": "dev1:co", "v": 1}], "malformed"),
        ([{"bv": "x", "n": "dev1:co", "v": 1}], "malformed"),
        ([{"n": "dev1:co", "v": float("nan")}], "non_finite"),
        ([{"n": "dev1:co", "v": float("inf")}], "non_finite"),
        ([{"bv": 1.7e308, "n": "dev1:co", "v": 1.7e308}], "non_finite"),
        ([{"n": "dev1:co", "v": 501, "t": TS}], "out_of_range"),
        ([{"n": "dev1:co", "v": 1, "t": "now"}], "bad_timestamp"),
        ([{"bt": None, "n": "dev1:co", "v": 1}], "bad_timestamp"),
        ([{"n": "dev1:co", "v": 1, "t": 2.0**28}], "bad_timestamp"),  # absolute, but 1978
        ([{"n": "dev1:co", "v": 1, "t": TS * 1000}], "bad_timestamp"),  # milliseconds
        ([{"n": "dev1:co", "v": 1, "t": -1e300}], "bad_timestamp"),
        ([{"bt": 1.7e308, "n": "dev1:co", "v": 1, "t": 1.7e308}], "bad_timestamp"),
    ],
)
def test_senml_rejected(pack: object, expected_reason: str) -> None:
    result = senml(pack)
    assert isinstance(result, Rejection), result
    assert result.detail
    assert result.reason == expected_reason, result.detail


def test_senml_huge_integer_value() -> None:
    payload = b'[{"n": "dev1:co", "v": ' + b"9" * 400 + b"}]"
    assert reason(payload, SENML_TAG) == "non_finite"


# -- fuzz -------------------------------------------------------------------------------------

ISO_PATH_TAG = json_tag(
    value_path="d.readings.0.v", time_path="d.time", time_format="iso8601", quality_path="d.q"
)
ALL_TAGS = [JSON_TAG, NUMBER_TAG, SENML_TAG, TEMP_TAG, ISO_PATH_TAG, json_tag(time_format="epoch_ms")]


def _check_result(result: Decoded | Rejection, tag: Tag) -> None:
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS
        assert isinstance(result.detail, str)
        return
    assert isinstance(result, Decoded)
    assert isinstance(result.quality, Quality)
    assert TS_MIN <= result.t < TS_MAX or result.t == NOW
    # NaN only ever comes from a source that declared its own reading bad.
    assert math.isfinite(result.value) or result.quality is Quality.BAD
    assert math.isnan(result.value) or tag.range[0] <= result.value <= tag.range[1]


@settings(max_examples=500, deadline=None)
@given(payload=st.binary(max_size=300), tag=st.sampled_from(ALL_TAGS), max_bytes=st.integers(16, 400))
def test_arbitrary_bytes_never_raise(payload: bytes, tag: Tag, max_bytes: int) -> None:
    _check_result(decode(payload, tag, max_bytes), tag)


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
    _check_result(decode(json.dumps(obj).encode(), JSON_TAG, 100_000), JSON_TAG)


_times = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([TS, TS * 1000, 0, -5, 2.0**28])
    | st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01T12:00:00", "2024-05-01T13:00:00+01:00", "x"])
)


@settings(max_examples=500, deadline=None)
@given(
    obj=st.fixed_dictionaries(
        {},
        optional={
            "d": st.fixed_dictionaries(
                {},
                optional={
                    "readings": st.lists(
                        st.fixed_dictionaries({}, optional={"v": _json_values | st.floats()}), max_size=3
                    )
                    | _json_values,
                    "time": _times | _json_values,
                    "q": st.sampled_from(["good", "uncertain", "bad"]) | _json_values,
                },
            )
            | _json_values,
            "value": st.floats() | _json_values,
            "ts": _times,
        },
    )
)
def test_path_shaped_objects_never_raise(obj: dict[str, object]) -> None:
    for tag in (ISO_PATH_TAG, JSON_TAG):
        _check_result(decode(json.dumps(obj).encode(), tag, 100_000), tag)


_senml_record = st.fixed_dictionaries(
    {},
    optional={
        "bn": st.sampled_from(["dev1:", "", "x"]) | _json_scalars,
        "bt": _times | _json_scalars,
        "bu": st.sampled_from(["ppm", "Cel", "K"]) | _json_scalars,
        "bv": st.floats() | _json_scalars,
        "n": st.sampled_from(["co", "dev1:co", "dry.temp", "h2"]) | _json_scalars,
        "u": st.sampled_from(["ppm", "Cel", "°C"]) | _json_scalars,
        "v": st.floats() | st.integers() | _json_scalars,
        "vs": st.text(max_size=5),
        "vb": st.booleans(),
        "t": _times | _json_scalars,
        "x_": st.integers(),
    },
)


@settings(max_examples=500, deadline=None)
@given(pack=st.lists(_senml_record | _json_values, max_size=5) | _json_values)
def test_senml_shaped_packs_never_raise(pack: object) -> None:
    for tag in (SENML_TAG, TEMP_TAG):
        _check_result(decode(json.dumps(pack).encode(), tag, 100_000), tag)
