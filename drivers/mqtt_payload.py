"""Decoding of MQTT sensor payloads: a pure function from bytes to a sample or a rejection.

Kept apart from the driver so it can be unit-tested and fuzzed without a broker. Payloads come
from retrofit IoT devices we do not control, so every byte string must end as either a
`Decoded` sample or a `Rejection` with a reason the driver counts; nothing here raises.

Three shapes, chosen per tag (`Tag.payload`):

* ``json``: UTF-8 JSON. The value, the source time and the quality are found at the tag's dotted
  paths (`value_path`, `time_path`, `quality_path`; defaults ``value``, ``ts``, ``quality``), where
  a path part is an object key or a list index: ``readings.0.value``. The time is in
  `time_format`: ``epoch_s``, ``epoch_ms`` or ``iso8601`` (a string with a timezone; a naive time
  is refused, since guessing the zone shifts the plant's time axis by hours). With
  ``time_path = None`` the payload carries no time: the receive time stands in and the sample is
  UNCERTAIN. The quality, when present, is ``"good" | "uncertain" | "bad"`` (default good); a
  source that knows its reading is bad may send a null value together with quality bad. Unknown
  extra keys are ignored so devices can add fields without breaking the gateway.
* ``number``: a bare ASCII decimal number such as ``12.5`` or ``-3e2``. Such payloads carry no
  source timestamp, so the receive wall time stands in for it and the sample is UNCERTAIN.
* ``senml``: a SenML pack (RFC 8428, JSON): an array of records. Base fields ``bn``, ``bt``,
  ``bu``, ``bv`` apply to their record and every later one; a record's name is ``bn + n``, its time
  ``bt + t``, its value ``bv + v``. The record named `senml_name` (default: the tag name) is the
  sample; when a pack holds several records for it, the newest is. Per RFC 8428 a time below
  2**28 is relative to now (so a record without any time is "now"): the receive time plus it,
  UNCERTAIN. A record with ``vs``/``vb``/``vd`` instead of ``v`` is malformed for a numeric tag; a
  unit (``u`` or ``bu``) other than the tag's is malformed rather than silently mislabelled;
  fields ending in ``_`` are RFC 8428's must-understand extensions, which we do not.

A finite value outside the tag's `range` (inclusive) is rejected as ``out_of_range``: for an
MQTT sensor that is a fault, not a reading (the driver then marks the tag BAD, as for the other
rejections).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from gateway.config import Tag
from gateway.samples import Quality

RejectReason = Literal["oversized", "malformed", "non_finite", "bad_timestamp", "out_of_range"]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = (
    "oversized",
    "malformed",
    "non_finite",
    "bad_timestamp",
    "out_of_range",
)

# Plausible source timestamps: 2000-01-01T00:00:00Z .. 2100-01-01T00:00:00Z. Anything outside is
# a device with an unset clock (1970), a unit mix-up (milliseconds) or garbage.
TS_MIN: Final = 946_684_800.0
TS_MAX: Final = 4_102_444_800.0

# RFC 8428 section 4.5.3: SenML times below 2**28 s are relative to the current time.
SENML_RELATIVE_LIMIT: Final = 2.0**28

_QUALITIES: Final[dict[str, Quality]] = {
    "good": Quality.GOOD,
    "uncertain": Quality.UNCERTAIN,
    "bad": Quality.BAD,
}

# SenML unit names (RFC 8428 registry) that config files usually spell differently.
_SENML_UNIT_ALIASES: Final[dict[str, frozenset[str]]] = {
    "Cel": frozenset({"°C", "degC"}),
}

# A bare number as devices write it. Stricter than float(), which would also take "1_000",
# Unicode digits and "0x1p3"-like oddities a sensor never means to send.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE: Final = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# A list index in a dotted path; bounded so int() never meets a pathological digit string.
_INDEX: Final = re.compile(r"[0-9]{1,9}")
_WHITESPACE: Final = " \t\r\n"
_MISSING: Final = object()


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
        result = _decode_number(payload, now)
    elif tag.payload == "senml":
        result = _decode_senml(payload, tag, now)
    else:
        result = _decode_json(payload, tag, now)
    if isinstance(result, Decoded):
        return _check_range(result, tag)
    return result


def _check_range(sample: Decoded, tag: Tag) -> Decoded | Rejection:
    lo, hi = tag.range
    # NaN only comes with a source-declared BAD quality: there is no reading to range-check.
    if math.isfinite(sample.value) and not lo <= sample.value <= hi:
        return Rejection("out_of_range", f"value {sample.value!r} outside range [{lo:g}, {hi:g}] {tag.unit}")
    return sample


# -- number ----------------------------------------------------------------------------------------


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


# -- json ------------------------------------------------------------------------------------------


def _parse_json(payload: bytes) -> object | Rejection:
    try:
        # Decode explicitly: json.loads(bytes) would also guess UTF-16/32, which we do not accept.
        text = payload.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError:
        return Rejection("malformed", "payload is not UTF-8")
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays blow the parser's stack well below max_bytes.
        return Rejection("malformed", f"not JSON: {_preview(str(exc))}")


def _decode_json(payload: bytes, tag: Tag, now: float) -> Decoded | Rejection:
    obj = _parse_json(payload)
    if isinstance(obj, Rejection):
        return obj
    if not isinstance(obj, dict | list):
        return Rejection("malformed", f"expected a JSON object, got {_type_name(obj)}")

    quality = Quality.GOOD
    if tag.quality_path is not None:
        q = lookup(obj, tag.quality_path)
        if q is not _MISSING:
            if not isinstance(q, str) or q not in _QUALITIES:
                return Rejection(
                    "malformed", f"{tag.quality_path} must be one of {sorted(_QUALITIES)}, got {_preview(q)}"
                )
            quality = _QUALITIES[q]

    raw = lookup(obj, tag.value_path)
    if raw is _MISSING:
        return Rejection("malformed", f"missing {tag.value_path!r}")
    if raw is None and quality is Quality.BAD:
        value = math.nan  # the source itself says there is no valid reading
    else:
        number = _finite_number(raw, tag.value_path)
        if isinstance(number, Rejection):
            return number
        value = number

    if tag.time_path is None:
        # No source time at all: our clock stands in, so the sample cannot be better than UNCERTAIN.
        return Decoded(value, now, max(quality, Quality.UNCERTAIN))
    ts = lookup(obj, tag.time_path)
    if ts is _MISSING:
        return Rejection("bad_timestamp", f"missing {tag.time_path!r}")
    t = parse_time(ts, tag.time_format, tag.time_path)
    if isinstance(t, Rejection):
        return t
    return Decoded(value, t, quality)


def lookup(obj: object, path: str) -> object:
    """The value at a dotted path ("readings.0.value"), or `_MISSING` when there is none."""
    for part in path.split("."):
        if isinstance(obj, dict):
            if part not in obj:
                return _MISSING
            obj = obj[part]
        elif isinstance(obj, list) and _INDEX.fullmatch(part):
            index = int(part)
            if index >= len(obj):
                return _MISSING
            obj = obj[index]
        else:
            return _MISSING
    return obj


def _finite_number(raw: object, what: str) -> float | Rejection:
    if not _is_number(raw):
        return Rejection("malformed", f"{what} must be a number, got {_type_name(raw)}")
    try:
        value = float(raw)  # type: ignore[arg-type]  # _is_number checked int | float
    except OverflowError:  # an integer literal too large for a float
        return Rejection("non_finite", f"{what} overflows a float")
    if not math.isfinite(value):
        return Rejection("non_finite", f"{what} {raw!r} is not finite")
    return value


def parse_time(raw: object, time_format: str, what: str = "ts") -> float | Rejection:
    """A source timestamp in `time_format` as epoch seconds within 2000..2100, or a Rejection."""
    if time_format == "iso8601":
        return _parse_iso(raw, what)
    unit = "milliseconds" if time_format == "epoch_ms" else "seconds"
    if not _is_number(raw):
        return Rejection("bad_timestamp", f"{what} must be epoch {unit} (a number), got {_type_name(raw)}")
    try:
        t = float(raw)  # type: ignore[arg-type]  # _is_number checked int | float
    except OverflowError:
        return Rejection("bad_timestamp", f"{what} overflows a float")
    if time_format == "epoch_ms":
        t /= 1000.0
    if TS_MIN <= t < TS_MAX:  # also false for NaN
        return t
    hint = ""
    if time_format == "epoch_s" and TS_MIN * 1e3 <= t < TS_MAX * 1e3:
        hint = f" (milliseconds? {what} must be in seconds)"
    elif time_format == "epoch_ms" and TS_MIN <= t * 1e3 < TS_MAX:
        hint = f" (seconds? {what} must be in milliseconds)"
    return Rejection("bad_timestamp", f"{what} {raw!r} outside 2000..2100{hint}")


def _parse_iso(raw: object, what: str) -> float | Rejection:
    if not isinstance(raw, str):
        return Rejection("bad_timestamp", f"{what} must be an ISO 8601 string, got {_type_name(raw)}")
    if not raw.isascii():
        return Rejection("bad_timestamp", f"{what} is not an ISO 8601 time: {_preview(raw)}")
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        return Rejection("bad_timestamp", f"{what} is not an ISO 8601 time: {_preview(raw)}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        return Rejection("bad_timestamp", f"{what} {_preview(raw)} has no timezone (add Z or an offset)")
    try:
        t = dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return Rejection("bad_timestamp", f"{what} {_preview(raw)} is out of range")
    if not TS_MIN <= t < TS_MAX:
        return Rejection("bad_timestamp", f"{what} {_preview(raw)} outside 2000..2100")
    return t


# -- senml -----------------------------------------------------------------------------------------


def _decode_senml(payload: bytes, tag: Tag, now: float) -> Decoded | Rejection:
    pack = _parse_json(payload)
    if isinstance(pack, Rejection):
        return pack
    if not isinstance(pack, list) or not pack:
        return Rejection("malformed", f"a SenML pack is a non-empty JSON array, got {_type_name(pack)}")
    target = tag.senml_name or tag.name
    base_name, base_time, base_unit, base_value = "", 0.0, None, 0.0
    newest: Decoded | None = None
    for i, record in enumerate(pack):
        where = f"SenML record {i}"
        if not isinstance(record, dict):
            return Rejection("malformed", f"{where} is not an object")
        for key in record:
            if key.endswith("_"):
                return Rejection("malformed", f"{where} has must-understand field {_preview(key)}")
        # Base fields change every later record, so a bad one spoils the pack, not one record.
        if "bn" in record:
            if not isinstance(record["bn"], str):
                return Rejection("malformed", f"{where}: bn must be a string")
            base_name = record["bn"]
        if "bt" in record:
            bt = _finite_number(record["bt"], f"{where}: bt")
            if isinstance(bt, Rejection):
                return Rejection("bad_timestamp", bt.detail)
            base_time = bt
        if "bu" in record:
            if not isinstance(record["bu"], str):
                return Rejection("malformed", f"{where}: bu must be a string")
            base_unit = record["bu"]
        if "bv" in record:
            bv = _finite_number(record["bv"], f"{where}: bv")
            if isinstance(bv, Rejection):
                return bv
            base_value = bv
        name = record.get("n", "")
        if not isinstance(name, str):
            return Rejection("malformed", f"{where}: n must be a string")
        if base_name + name != target:
            continue
        sample = _senml_sample(record, where, base_time, base_unit, base_value, tag, now)
        if isinstance(sample, Rejection):
            return sample
        # Several records for our name (a batch): one message gives one sample, the newest.
        if newest is None or sample.t >= newest.t:
            newest = sample
    if newest is None:
        return Rejection("malformed", f"no SenML record named {_preview(target)}")
    return newest


def _senml_sample(
    record: dict[str, object],
    where: str,
    base_time: float,
    base_unit: str | None,
    base_value: float,
    tag: Tag,
    now: float,
) -> Decoded | Rejection:
    if "v" not in record:
        other = [k for k in ("vs", "vb", "vd", "s") if k in record]
        if other:
            return Rejection("malformed", f"{where} carries {other[0]}, not a numeric v")
        return Rejection("malformed", f"{where} has no value (v)")
    v = _finite_number(record["v"], f"{where}: v")
    if isinstance(v, Rejection):
        return v
    value = base_value + v
    if not math.isfinite(value):
        return Rejection("non_finite", f"{where}: bv + v overflows a float")

    unit = record.get("u", base_unit)
    if unit is not None:
        if not isinstance(unit, str):
            return Rejection("malformed", f"{where}: u must be a string")
        if unit != tag.unit and tag.unit not in _SENML_UNIT_ALIASES.get(unit, frozenset()):
            return Rejection(
                "malformed", f"{where}: unit {_preview(unit)} is not the tag's unit {tag.unit!r}"
            )

    t_rel = _finite_number(record.get("t", 0), f"{where}: t")
    if isinstance(t_rel, Rejection):
        return Rejection("bad_timestamp", t_rel.detail)
    t = base_time + t_rel
    quality = Quality.GOOD
    if t < SENML_RELATIVE_LIMIT:
        # Relative to "now" at the sender: our receive clock stands in for it.
        t += now
        quality = Quality.UNCERTAIN
    if not TS_MIN <= t < TS_MAX:
        return Rejection("bad_timestamp", f"{where}: time {t!r} outside 2000..2100")
    return Decoded(value, t, quality)


# -- helpers ---------------------------------------------------------------------------------------


def _is_number(x: object) -> bool:
    # bool is an int subclass; `true` is not a reading.
    return isinstance(x, int | float) and not isinstance(x, bool)


def _type_name(x: object) -> str:
    return "null" if x is None else type(x).__name__


def _preview(x: object, limit: int = 60) -> str:
    if isinstance(x, dict | list):
        # Never repr a container: parsed nesting close to the recursion limit would make repr
        # itself raise RecursionError, and a log line needs no more than the shape.
        return f"a JSON {'object' if isinstance(x, dict) else 'array'} of {len(x)}"
    s = repr(x) if not isinstance(x, str) else x
    return s if len(s) <= limit else s[:limit] + "..."
