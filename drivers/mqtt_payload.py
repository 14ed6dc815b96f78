"""Decoding of MQTT sensor payloads: a pure function from bytes to a sample or a rejection.

Kept apart from the driver so it can be unit-tested and fuzzed without a broker. Payloads come
from retrofit IoT devices we do not control, so every byte string must end as either a
`Decoded` sample or a `Rejection` with a reason the driver counts; nothing here raises.

Two shapes, chosen per tag (`Tag.payload`):

* ``json``: a UTF-8 JSON object ``{"value": <number>, "ts": <epoch seconds>}`` with an optional
  ``"quality": "good" | "uncertain" | "bad"`` (default good). A source that knows its reading is
  bad may send ``"value": null`` together with ``"quality": "bad"``. Unknown extra keys are
  ignored so devices can add fields without breaking the gateway.
* ``number``: a bare ASCII decimal number such as ``12.5`` or ``-3e2``. Such payloads carry no
  source timestamp, so the receive wall time stands in for it and the sample is UNCERTAIN.

Range checks are not done here: the pipeline owns them (it flags out-of-range readings BAD).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from gateway.config import Tag
from gateway.samples import Quality

RejectReason = Literal["oversized", "malformed", "non_finite", "bad_timestamp"]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = ("oversized", "malformed", "non_finite", "bad_timestamp")

# Plausible source timestamps: 2000-01-01T00:00:00Z .. 2100-01-01T00:00:00Z. Anything outside is
# a device with an unset clock (1970), a unit mix-up (milliseconds) or garbage.
TS_MIN: Final = 946_684_800.0
TS_MAX: Final = 4_102_444_800.0

_QUALITIES: Final[dict[str, Quality]] = {
    "good": Quality.GOOD,
    "uncertain": Quality.UNCERTAIN,
    "bad": Quality.BAD,
}

# A bare number as devices write it. Stricter than float(), which would also take "1_000",
# Unicode digits and "0x1p3"-like oddities a sensor never means to send.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE: Final = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_WHITESPACE: Final = " \t\r\n"


@dataclass(frozen=True, slots=True)
class Decoded:
    """A sample ready for the bus: value (NaN only when the source said bad), time, quality."""

    value: float
    t: float
    quality: Quality


@dataclass(frozen=True, slots=True)
class Rejection:
    """A payload the gateway refuses; `reason` is the counter key, `detail` goes to the log."""

    reason: RejectReason
    detail: str


def decode_payload(payload: bytes, tag: Tag, max_bytes: int, now: float) -> Decoded | Rejection:
    """Decode one message for `tag`. `now` is the receive wall time (epoch seconds).

    Never raises: every input yields a `Decoded` or a `Rejection`.
    """
    if len(payload) > max_bytes:
        return Rejection("oversized", f"{len(payload)} bytes > max_payload_bytes {max_bytes}")
    if tag.payload == "number":
        return _decode_number(payload, now)
    return _decode_json(payload)


def _decode_number(payload: bytes, now: float) -> Decoded | Rejection:
    try:
        text = payload.decode("ascii").strip(_WHITESPACE)
    except UnicodeDecodeError:
        return Rejection("malformed", "bare-number payload is not ASCII")
    if _NON_FINITE.fullmatch(text):
        return Rejection("non_finite", f"value {text!r} is not finite")
    if not _NUMBER.fullmatch(text):
        return Rejection("malformed", f"not a number: {_preview(text)}")
    value = float(text)
    if not math.isfinite(value):
        # A huge exponent ("1e999") parses to inf.
        return Rejection("non_finite", f"value {_preview(text)} overflows a float")
    return Decoded(value, now, Quality.UNCERTAIN)


def _decode_json(payload: bytes) -> Decoded | Rejection:
    try:
        # Decode explicitly: json.loads(bytes) would also guess UTF-16/32, which we do not accept.
        text = payload.decode("utf-8")
        obj = json.loads(text)
    except UnicodeDecodeError:
        return Rejection("malformed", "payload is not UTF-8")
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays blow the parser's stack well below max_bytes.
        return Rejection("malformed", f"not JSON: {_preview(str(exc))}")
    if not isinstance(obj, dict):
        return Rejection("malformed", f"expected a JSON object, got {type(obj).__name__}")

    quality = Quality.GOOD
    if "quality" in obj:
        q = obj["quality"]
        if not isinstance(q, str) or q not in _QUALITIES:
            return Rejection("malformed", f"quality must be one of {sorted(_QUALITIES)}, got {_preview(q)}")
        quality = _QUALITIES[q]

    if "value" not in obj:
        return Rejection("malformed", "missing key 'value'")
    raw = obj["value"]
    if raw is None and quality is Quality.BAD:
        value = math.nan  # the source itself says there is no valid reading
    elif _is_number(raw):
        try:
            value = float(raw)
        except OverflowError:  # an integer literal too large for a float
            return Rejection("non_finite", "value overflows a float")
        if not math.isfinite(value):
            return Rejection("non_finite", f"value {raw!r} is not finite")
    else:
        return Rejection("malformed", f"value must be a number, got {_type_name(raw)}")

    if "ts" not in obj:
        return Rejection("bad_timestamp", "missing key 'ts'")
    ts = obj["ts"]
    if not _is_number(ts):
        return Rejection("bad_timestamp", f"ts must be epoch seconds (a number), got {_type_name(ts)}")
    try:
        t = float(ts)
    except OverflowError:
        return Rejection("bad_timestamp", "ts overflows a float")
    if not TS_MIN <= t < TS_MAX:  # also false for NaN
        hint = " (milliseconds? ts must be in seconds)" if TS_MIN * 1e3 <= t < TS_MAX * 1e3 else ""
        return Rejection("bad_timestamp", f"ts {t!r} outside 2000..2100{hint}")
    return Decoded(value, t, quality)


def _is_number(x: object) -> bool:
    # bool is an int subclass; `true` is not a reading.
    return isinstance(x, int | float) and not isinstance(x, bool)


def _type_name(x: object) -> str:
    return "null" if x is None else type(x).__name__


def _preview(x: object, limit: int = 60) -> str:
    s = repr(x) if not isinstance(x, str) else x
    return s if len(s) <= limit else s[:limit] + "..."
