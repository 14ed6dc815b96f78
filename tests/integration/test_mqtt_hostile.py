"""10,000 hostile payloads through a real mosquitto into a running `MqttInputDriver`.

Hypothesis draws the payloads, each hostile by construction for the tag whose topic it goes to
(JSON with default paths, bare number, SenML, JSON with nested paths and ISO 8601 times):
oversized, invalid UTF-8, JSON of the wrong shape, NaN/Infinity literals, booleans, values
outside the tag's range, bad or missing timestamps, broken SenML, deep nesting, numbers too big
for a float, plain garbage. They go out at QoS 1, so none is lost on the way, and the test then
holds the driver to: still running, nothing accepted, and every message counted as rejected,
with the same per-reason counts the pure decoder gives for the same payloads.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from typing import Final

import aiomqtt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drivers.mqtt_input import MqttInputDriver
from drivers.mqtt_payload import TS_MAX, TS_MIN, Rejection, decode_payload
from gateway.config import MqttConnection, Tag
from gateway.config import MqttInputDriver as MqttInputSettings
from gateway.ports import BoundTag
from gateway.samples import Quality
from tests.mqtt_helpers import BrokerAddress, ListSink, eventually, running

pytestmark = pytest.mark.integration

N_PAYLOADS: Final = 10_000
BATCH: Final = 50  # payloads per hypothesis example (one example holding all 10,000 would overrun)
MAX_BYTES: Final = 8192
PUBLISH_WINDOW: Final = 500  # QoS 1 publishes awaiting PUBACK at once
T0: Final = 1_714_564_800.0
ISO_T0: Final = "2024-05-01T12:00:00Z"
LO, HI = 0.0, 100.0

KINDS: Final = ("json", "number", "senml", "iso")


def hostile_tags(prefix: str) -> dict[str, BoundTag]:
    """One tag per payload shape, all ppm in 0..100, each on its own topic under `prefix`."""

    def tag(name: str, **shape: object) -> Tag:
        return Tag.model_validate(
            {
                "name": name,
                "driver": "iot",
                "unit": "ppm",
                "range": (LO, HI),
                "topic": f"{prefix}/{name}",
                **shape,
            }
        )

    return {
        "json": BoundTag(0, tag("h.json")),
        "number": BoundTag(1, tag("h.number", payload="number")),
        "senml": BoundTag(2, tag("h.senml", payload="senml", senml_name="dev:x")),
        "iso": BoundTag(3, tag("h.iso", value_path="d.v", time_path="d.t", time_format="iso8601")),
    }


# -- strategies: (kind, payload), every payload rejected by construction -----------------------

Hostile = tuple[str, bytes]


def _dumps(obj: object) -> bytes:
    # allow_nan: json.dumps writes NaN/Infinity literals, which Python's parser (and so the
    # decoder) accepts: exactly the literals a sloppy device sends.
    return json.dumps(obj, allow_nan=True).encode()


def good_object(kind: str, value: object = 50.0, ts: object = T0) -> object:
    """A payload shape the tag of `kind` accepts, with `value` and time `ts` substituted."""
    if kind == "json":
        return {"value": value, "ts": ts}
    if kind == "senml":
        return [{"bn": "dev:", "bt": ts}, {"n": "x", "v": value, "u": "ppm"}]
    return {"d": {"v": value, "t": ISO_T0 if ts == T0 else ts}}


json_kinds = st.sampled_from(["json", "senml", "iso"])
finite = st.floats(allow_nan=False, allow_infinity=False)
out_of_range = st.floats(max_value=LO - 1e-6, allow_nan=False, allow_infinity=False) | st.floats(
    min_value=HI + 1e-6, allow_nan=False, allow_infinity=False
)


@st.composite
def oversized(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    chunk = draw(st.binary(min_size=1, max_size=32))
    size = draw(st.integers(MAX_BYTES + 1, MAX_BYTES + 4000))
    body = _dumps(good_object(kind)) if kind != "number" else b"50"
    return kind, (body + chunk * (size // len(chunk) + 1))[:size]


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    body = _dumps(good_object(kind)) if kind != "number" else b"50"
    # A stray continuation byte, an overlong NUL, a UTF-16 surrogate, a byte UTF-8 never uses.
    bad = draw(st.sampled_from([b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xff", b"\xf8\x88\x80\x80\x80"]))
    at = draw(st.integers(0, len(body)))
    return kind, body[:at] + bad + body[at:]


@st.composite
def wrong_shape(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    scalars = st.none() | st.booleans() | finite | st.text(max_size=20)
    if kind == "senml":
        # Not an array, an empty one, records that are not objects.
        obj = draw(
            st.dictionaries(st.text(max_size=5), scalars, max_size=4)
            | st.just([])
            | st.lists(scalars, min_size=1, max_size=4)
        )
    elif kind == "number":
        return kind, draw(
            st.sampled_from([b"{}", b"[50]", b'"50"', b"12,5", b"0x10", b"1_000", b"--1", b"1e", b"", b" "])
        )
    else:
        # Scalars, arrays, or objects lacking the value key at the tag's path.
        no_value = st.dictionaries(
            st.text(max_size=5).filter(lambda k: k not in ("value", "d")), scalars, max_size=4
        )
        obj = draw(scalars | st.lists(scalars, max_size=4) | no_value)
    return kind, _dumps(obj)


@st.composite
def non_finite(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    if kind == "number":
        return kind, draw(
            st.sampled_from([b"nan", b"NaN", b"inf", b"-Infinity", b"+INF", b"1e400", b"-1e999"])
        )
    literal = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return kind, _dumps(good_object(kind, value=literal))


@st.composite
def booleans(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    if kind == "number":
        return kind, draw(st.sampled_from([b"true", b"false"]))
    return kind, _dumps(good_object(kind, value=draw(st.booleans())))


@st.composite
def outside_range(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    value = draw(out_of_range)
    if kind == "number":
        return kind, repr(value).encode()
    return kind, _dumps(good_object(kind, value=value))


@st.composite
def bad_timestamp(draw: st.DrawFn) -> Hostile:
    kind = draw(json_kinds)
    if kind == "iso":
        ts = draw(
            st.sampled_from(["2024-05-01T12:00:00", "2024-05-01", "yesterday", "", "1970-01-01T00:00:00Z"])
            | st.floats(TS_MIN, TS_MAX)
            | st.none()
        )
        return kind, _dumps(good_object(kind, ts=ts))
    if kind == "senml":
        # Absolute but before 2000 (2**28 s is 1978), in milliseconds, or not a number.
        ts = draw(st.floats(2.0**28, TS_MIN - 1) | st.just(T0 * 1000) | st.text(max_size=10) | st.booleans())
        return kind, _dumps(good_object(kind, ts=ts))
    missing = {"value": 50.0}
    ts = draw(st.floats(-1e12, TS_MIN - 1) | st.floats(TS_MAX, 1e15) | st.sampled_from([ISO_T0, None, True]))
    return kind, _dumps(draw(st.just(missing) | st.just({"value": 50.0, "ts": ts})))


@st.composite
def broken_senml(draw: st.DrawFn) -> Hostile:
    record = draw(
        st.sampled_from(
            [
                {"n": "dev:x", "vb": True},
                {"n": "dev:x", "vs": "50"},
                {"n": "dev:x", "vd": "AQI="},
                {"n": "dev:x", "s": 50},
                {"n": "dev:x"},
                {"n": "dev:x", "v": 50, "u": "Cel"},
                {"n": "dev:x", "v": 50, "t": T0, "crit_": 1},
                {"bn": 7, "n": "x", "v": 50},
                {"n": "dev:y", "v": 50},
                {"n": 5, "v": 50},
            ]
        )
    )
    others = draw(
        st.lists(st.fixed_dictionaries({"n": st.sampled_from(["a", "b"]), "v": finite}), max_size=3)
    )
    return "senml", _dumps([*others, record])


@st.composite
def deeply_nested(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    depth = draw(st.integers(1, 2500))
    if draw(st.booleans()):
        return kind, b"[" * depth + b"]" * depth
    depth = min(depth, 1300)  # 6 bytes a level: stay under MAX_BYTES
    return kind, b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def huge_numbers(draw: st.DrawFn) -> Hostile:
    kind = draw(st.sampled_from(KINDS))
    digits = draw(st.integers(310, 2000))
    literal = draw(st.sampled_from([b"1e400", b"-1e400", b"9" * digits, b"-" + b"9" * digits]))
    if kind == "number":
        return kind, literal
    placeholder = _dumps(good_object(kind, value=12345.5))
    return kind, placeholder.replace(b"12345.5", literal)


@st.composite
def garbage(draw: st.DrawFn) -> Hostile:
    # Leading 0xff: never UTF-8, never ASCII, whatever follows.
    return draw(st.sampled_from(KINDS)), b"\xff" + draw(st.binary(max_size=200))


@st.composite
def bad_quality(draw: st.DrawFn) -> Hostile:
    quality = draw(st.sampled_from(["GOOD", "excellent", "", 0, None, ["good"]]))
    return "json", _dumps({"value": 50.0, "ts": T0, "quality": quality})


hostile_payload = st.one_of(
    oversized(),
    invalid_utf8(),
    wrong_shape(),
    non_finite(),
    booleans(),
    outside_range(),
    bad_timestamp(),
    broken_senml(),
    deeply_nested(),
    huge_numbers(),
    garbage(),
    bad_quality(),
)


def draw_hostile_payloads(n: int) -> list[Hostile]:
    """`n` payloads drawn by hypothesis, deterministically (derandomize), in batches."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=n // BATCH + 20,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(hostile_payload, min_size=BATCH, max_size=BATCH))
    def collect(batch: list[Hostile]) -> None:
        drawn.extend(batch)

    while len(drawn) < n:
        collect()
    return drawn[:n]


# -- the test ----------------------------------------------------------------------------------


async def test_ten_thousand_hostile_payloads_are_all_rejected(mosquitto: BrokerAddress) -> None:
    prefix = f"hostile-{uuid.uuid4().hex[:10]}"
    tags = hostile_tags(prefix)
    payloads = draw_hostile_payloads(N_PAYLOADS)
    assert len(payloads) == N_PAYLOADS

    # What the pure decoder says about each payload: every one a rejection. This is a check of
    # the generator; the driver's counts below must then match it over the real broker.
    expected: Counter[str] = Counter()
    for kind, payload in payloads:
        result = decode_payload(payload, tags[kind].tag, MAX_BYTES, time.time())
        assert isinstance(result, Rejection), (
            f"generator produced an acceptable {kind} payload: {payload[:200]!r}"
        )
        expected[result.reason] += 1
    # Every hostile family reached the broker in numbers.
    assert set(expected) == {"oversized", "malformed", "non_finite", "bad_timestamp", "out_of_range"}

    settings_ = MqttInputSettings(
        type="mqtt",
        connection=MqttConnection(host=mosquitto.host, port=mosquitto.port),
        qos=1,
        max_payload_bytes=MAX_BYTES,
    )
    driver = MqttInputDriver("iot", settings_, list(tags.values()))
    sink = ListSink()
    connected = asyncio.Event()
    rejected_before = sum(driver.rejected.values())
    async with running(driver.run(sink, connected.set), connected) as task:
        async with aiomqtt.Client(
            mosquitto.host, mosquitto.port, max_inflight_messages=PUBLISH_WINDOW, timeout=30
        ) as pub:
            pub.pending_calls_threshold = PUBLISH_WINDOW + 1  # a full window is the plan, not a jam
            for start in range(0, N_PAYLOADS, PUBLISH_WINDOW):
                window = payloads[start : start + PUBLISH_WINDOW]
                await asyncio.gather(
                    *(pub.publish(tags[kind].tag.topic or "", payload, qos=1) for kind, payload in window)
                )
                # Flow control: QoS 1 is lossless per hop, but mosquitto holds at most
                # max_queued_messages (1000 by default) for a subscriber that lags and drops the
                # rest. Half a window outstanding before the next: at most 750 queued there.
                taken = start + len(window) // 2
                await eventually(
                    lambda taken=taken: driver.received >= taken or task.done(),
                    f"the driver to take {taken} messages",
                    within=30.0,
                )
        await eventually(
            lambda: sum(driver.rejected.values()) - rejected_before >= N_PAYLOADS or task.done(),
            f"{N_PAYLOADS} rejections",
            within=60.0,
        )
        assert not task.done(), "the driver task ended"

        # Still working: a good reading after the flood is accepted.
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(tags["json"].tag.topic or "", _dumps({"value": 42.0, "ts": T0}), qos=1)
        await eventually(lambda: driver.accepted == 1, "the good reading after the flood")
        assert not task.done()

    assert driver.received == N_PAYLOADS + 1
    assert sum(driver.rejected.values()) - rejected_before == N_PAYLOADS
    assert {reason: n for reason, n in driver.rejected.items() if n} == dict(expected)
    # Every rejection marked its tag BAD; the one good reading is the last sample.
    assert len(sink.samples) == N_PAYLOADS + 1
    assert all(s.quality is Quality.BAD and math.isnan(s.value) for s in sink.samples[:-1])
    assert (sink.samples[-1].value, sink.samples[-1].quality) == (42.0, Quality.GOOD)
