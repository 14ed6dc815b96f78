"""Command signatures (round trip; every field covered; malformed signatures are invalid, not
errors) and the audit log (seq 1, 2, 3 across restarts; each record on disk when `append`
returns; a torn last line cut off on reopen; a damaged line in the middle refused by line number).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.audit_log import AuditLog
from gateway.command_signing import sign, signature_valid, signed_text
from gateway.commands import CommandRequest, CommandStep

KEY = b"jdoe-signing-key"
ISSUED = 1_767_600_000.25


def signed_request(**fields: object) -> CommandRequest:
    r = CommandRequest(
        request_id="r-0142",
        setpoint="shr.feed_rate_sp",
        value=1.55,
        operator="jdoe",
        issued_at=ISSUED,
        received_at=ISSUED + 0.1,
        step=CommandStep.ARM,
    )
    r = replace(r, **fields)  # type: ignore[arg-type]
    assert r.operator is not None
    assert r.issued_at is not None
    return replace(r, signature=sign(KEY, r.request_id, r.setpoint, r.value, r.operator, r.issued_at, r.step))


# -- signing --------------------------------------------------------------------------------------


def test_signed_text_layout() -> None:
    text = signed_text("r-0142", "shr.feed_rate_sp", 1.55, "jdoe", ISSUED, CommandStep.ARM)
    assert text == b"linegate-command-v1\nr-0142\nshr.feed_rate_sp\n1.55\njdoe\n1767600000250\narm"
    # An int value and a str step sign the same as the float and the enum.
    assert signed_text("r", "sp", 2, "op", 1.0, "set") == signed_text(
        "r", "sp", 2.0, "op", 1.0, CommandStep.SET
    )


def test_signature_is_lowercase_hex_sha256() -> None:
    sig = sign(KEY, "r-0142", "shr.feed_rate_sp", 1.55, "jdoe", ISSUED)
    assert len(sig) == 64
    assert sig == sig.lower()
    int(sig, 16)


def test_round_trip() -> None:
    assert signature_valid(KEY, signed_request())


def test_uppercase_signature_is_valid() -> None:
    r = signed_request()
    assert r.signature is not None
    assert signature_valid(KEY, replace(r, signature=r.signature.upper()))


@pytest.mark.parametrize(
    ("field", "changed"),
    [
        ("request_id", "r-0143"),
        ("setpoint", "shr.speed_sp"),
        ("value", 1.56),
        ("value", 1.55 + 1e-12),
        ("operator", "kim"),
        ("issued_at", ISSUED + 0.001),
        ("step", CommandStep.EXECUTE),
    ],
)
def test_every_field_is_covered(field: str, changed: object) -> None:
    r = signed_request()
    assert not signature_valid(KEY, replace(r, **{field: changed}))  # type: ignore[arg-type]


def test_received_at_is_not_covered() -> None:
    # The gateway stamps received_at itself; the operator's client cannot sign it.
    assert signature_valid(KEY, replace(signed_request(), received_at=ISSUED + 9.0))


def test_issue_time_is_signed_to_the_millisecond() -> None:
    r = signed_request()
    assert signature_valid(KEY, replace(r, issued_at=ISSUED + 0.0004))
    assert not signature_valid(KEY, replace(r, issued_at=ISSUED + 0.0006))


def test_another_key_is_invalid() -> None:
    assert not signature_valid(b"other-key", signed_request())


@pytest.mark.parametrize(
    "fields",
    [{"signature": None}, {"operator": None}, {"issued_at": None}],
    ids=["no_signature", "no_operator", "no_issued_at"],
)
def test_missing_parts_are_invalid(fields: dict[str, object]) -> None:
    assert not signature_valid(KEY, replace(signed_request(), **fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "signature",
    ["", "xyz", "é" * 64, "0" * 63, "0" * 65, " " + "0" * 64],
    ids=["empty", "not_hex", "non_ascii", "short", "long", "space"],
)
def test_malformed_signature_is_invalid_not_an_error(signature: str) -> None:
    assert not signature_valid(KEY, replace(signed_request(), signature=signature))


# -- audit log ------------------------------------------------------------------------------------


@contextmanager
def opened(path: Path) -> Iterator[AuditLog]:
    log = AuditLog(path)
    try:
        yield log
    finally:
        log.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_new_log_is_empty_and_starts_at_seq_1(tmp_path: Path) -> None:
    path = tmp_path / "state" / "control" / "audit.jsonl"  # parent directories are created
    with opened(path) as log:
        assert log.loaded == []
        assert log.next_seq == 1
        assert path.exists()


def test_records_get_seq_1_2_3(tmp_path: Path) -> None:
    with opened(tmp_path / "audit.jsonl") as log:
        written = [log.append({"request_id": f"r-{i}", "status": "rejected"}) for i in range(3)]
    assert [w["seq"] for w in written] == [1, 2, 3]
    assert written[0] == {"seq": 1, "request_id": "r-0", "status": "rejected"}
    assert lines(tmp_path / "audit.jsonl") == written


def test_each_append_is_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with opened(path) as log:
        for i in range(1, 4):
            rec = log.append({"request_id": f"r-{i}", "value": i * 0.5})
            # Read through a fresh file object, while the log still holds its descriptor open.
            data = path.read_bytes()
            assert data.endswith(b"\n")
            assert len(data.splitlines()) == i
            assert json.loads(data.splitlines()[-1]) == rec


def test_reopen_continues_seq_and_loads_earlier_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with opened(path) as log:
        first = [log.append({"request_id": "r-1"}), log.append({"request_id": "r-2"})]
    with opened(path) as log:
        assert log.loaded == first
        assert log.next_seq == 3
        third = log.append({"request_id": "r-3"})
    assert third["seq"] == 3
    with opened(path) as log:
        assert log.loaded == [*first, third]
        assert [r["request_id"] for r in log.loaded] == ["r-1", "r-2", "r-3"]
        assert log.next_seq == 4


def test_torn_last_line_is_cut_off_on_reopen(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    with opened(path) as log:
        earlier = [log.append({"request_id": f"r-{i}"}) for i in range(1, 4)]
    intact = path.read_bytes()
    torn = b'{"seq":4,"request_id":"r-4","sta'
    with path.open("ab") as fh:
        fh.write(torn)
    with caplog.at_level(logging.WARNING, logger="gateway.audit_log"), opened(path) as log:
        assert log.loaded == earlier
        assert log.next_seq == 4
        assert path.read_bytes() == intact  # the torn bytes are gone, nothing else touched
        fourth = log.append({"request_id": "r-4b"})
    assert fourth["seq"] == 4
    assert f"cutting off {len(torn)} bytes" in caplog.text
    assert lines(path) == [*earlier, fourth]


def test_torn_line_that_happens_to_be_valid_json_is_still_cut(tmp_path: Path) -> None:
    # Without its newline the record never completed: it was not fsynced as a whole.
    path = tmp_path / "audit.jsonl"
    with opened(path) as log:
        log.append({"request_id": "r-1"})
    with path.open("ab") as fh:
        fh.write(b'{"seq":2}')
    with opened(path) as log:
        assert len(log.loaded) == 1
        assert log.next_seq == 2


@pytest.mark.parametrize(
    "bad",
    [b"this is not json", b'["seq", 2]', b'{"request_id": "r-2"}', b"", b"\xff\xfe"],
    ids=["not_json", "not_an_object", "no_seq", "empty_line", "not_utf8"],
)
def test_damaged_line_in_the_middle_is_refused(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    with opened(path) as log:
        for i in range(1, 4):
            log.append({"request_id": f"r-{i}"})
    good = path.read_bytes().splitlines()
    damaged = b"\n".join([good[0], bad, good[2]]) + b"\n"
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match=r"line 2 is not an audit record") as err:
        AuditLog(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == damaged  # a damaged log is never rewritten


def test_record_that_cannot_be_written_does_not_use_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with opened(path) as log:
        log.append({"request_id": "r-1"})
        with pytest.raises(ValueError, match="Out of range float values"):
            log.append({"request_id": "r-2", "value": math.nan})
        assert log.append({"request_id": "r-3"})["seq"] == 2
    assert [r["seq"] for r in lines(path)] == [1, 2]


def test_close_is_idempotent(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    log.close()
