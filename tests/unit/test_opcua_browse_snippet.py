"""The pure half of `linegate browse`: tag names from browse paths, and the TOML it prints."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime

import pytest

from drivers.opcua_browse import (
    BrowseReport,
    FoundVariable,
    SkippedVariable,
    format_snippet,
    tag_name,
    tag_names,
    toml_string,
)
from gateway.config import TAG_NAME, Tag

NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("shr", "power"), "shr.power"),
        (("bw_feed", "total"), "bw_feed.total"),
        (("Line2", "MotorSpeed"), "line2.motor_speed"),
        (("PLC 1", "DB.Line", "Temp [°C]"), "plc_1.db_line.temp_c"),
        (("Temperatur Ölbad",), "temperatur_olbad"),
        (("1st stage", "2nd"), "t_1st_stage.2nd"),
        (("%%%", "flow"), "flow"),
        (("%%%",), "tag"),
        ((), "tag"),
        (("__x__", "--y--"), "x.y"),
    ],
)
def test_tag_name_from_browse_path(path: tuple[str, ...], expected: str) -> None:
    name = tag_name(path)
    assert name == expected
    assert re.match(TAG_NAME, name)


def test_tag_names_are_unique_in_order() -> None:
    paths = [("a", "Speed"), ("a", "speed"), ("a", "SPEED!"), ("a", "speed_2"), ("b", "speed")]
    assert tag_names(paths) == ["a.speed", "a.speed_2", "a.speed_3", "a.speed_2_2", "b.speed"]


@pytest.mark.parametrize(
    "text", ["plain", 'quote " back \\ slash', "new\nline\ttab\r", "nul\x00 del\x7f", "°C µm"]
)
def test_toml_string_round_trips(text: str) -> None:
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def report(*variables: FoundVariable, skipped: tuple[SkippedVariable, ...] = ()) -> BrowseReport:
    return BrowseReport(
        url="opc.tcp://plc:4840",
        security="None/None, anonymous",
        server="Vendor PLC\n[[tags]]",  # server text is untrusted: a newline must not escape the comment
        root="i=85",
        root_name="Objects",
        depth=6,
        nodes_visited=10,
        namespaces=["http://opcfoundation.org/UA/", "urn:plc", "urn:plc:line"],
        variables=list(variables),
        skipped=list(skipped),
    )


def test_complete_variables_give_valid_tags() -> None:
    var = FoundVariable(
        node_id="ns=2;s=shr.power",
        namespace_index=2,
        path=("shr", "power"),
        data_type="Double",
        description="Shredder drive power",
        unit="kW",
        range=(0.0, 1e9),
    )
    text = format_snippet(report(var), driver="plc", now=NOW)
    data = tomllib.loads(text)
    assert list(data) == ["tags"]  # the header and the hints are comments only
    (table,) = data["tags"]
    tag = Tag.model_validate(table)
    assert (tag.name, tag.node_id, tag.unit, tag.range) == ("shr.power", "ns=2;s=shr.power", "kW", (0.0, 1e9))
    assert "# date:      2026-01-05T06:00:00Z" in text
    assert "#   ns=2 is urn:plc:line" in text
    assert "# server:    Vendor PLC [[tags]]" in text
    assert text.rstrip().endswith("linegate check-config YOUR_LINE.toml")


def test_missing_unit_and_range_are_todo_lines_the_loader_refuses() -> None:
    var = FoundVariable(
        node_id="ns=1;i=7",
        namespace_index=1,
        path=("Motor", "Speed"),
        data_type="Int32",
        unit_problem="the server gives no EngineeringUnits property",
        range_problem="EURange unreadable (BadUserAccessDenied)",
    )
    text = format_snippet(report(var), driver="iot-2", now=NOW)
    (table,) = tomllib.loads(text)["tags"]
    assert table == {"name": "motor.speed", "driver": "iot-2", "node_id": "ns=1;i=7"}
    with pytest.raises(ValueError, match="Field required"):
        Tag.model_validate(table)
    assert "# TODO unit: the server gives no EngineeringUnits property" in text
    assert "# TODO range: EURange unreadable (BadUserAccessDenied)" in text
    assert "1 numeric variables, 0 with unit and range, 1 with TODO lines" in text


def test_skipped_variables_are_counted_and_listed_with_a_limit() -> None:
    labels = [
        SkippedVariable(f"ns=1;i={i}", ("Line", f"Label{i}"), "data type String is not a numeric type")
        for i in range(45)
    ]
    skipped = (SkippedVariable("ns=1;i=99", ("Line", "Run\nning"), "data type Boolean: on/off"), *labels)
    text = format_snippet(report(skipped=skipped), driver="plc", now=NOW)
    assert tomllib.loads(text) == {}
    assert "# skipped:   46 variables" in text
    assert "#   45 x data type String is not a numeric type" in text
    assert "#   1 x data type Boolean: on/off" in text
    assert "#   - ns=1;i=99 (Line/Run ning): data type Boolean: on/off" in text
    assert "#   - ns=1;i=38 (Line/Label38)" in text
    assert "ns=1;i=39 " not in text  # beyond the 40 listed; counted above
    assert "#   - ... and 6 more" in text
