"""`linegate check-config` accepts the example and rejects broken files, naming key and reason.

Each broken file is the shipped example with one defect, so the cases follow the example as it
changes; every substitution must hit, or the case itself fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "line1.toml"

CASES = {
    "unknown_key": (
        ("qos = 1\nmax_payload_bytes", "qos = 1\nmax_payload_byte"),
        "drivers.iot.max_payload_byte",
        "unknown key",
    ),
    "range_inverted": (("range = [0, 400]", "range = [400, 0]"), "tags[4].range", "must be below max"),
    "unknown_driver": (
        ('driver = "plc"\nnode_id = "ns=2;s=shr.power"', 'driver = "plcc"\nnode_id = "ns=2;s=shr.power"'),
        "tags[4] (shr.power).driver",
        "no driver named 'plcc'",
    ),
    "window_too_short": (
        ("window_h = 4.0 ", "window_h = 2.0 "),
        "yield.window_h",
        "shorter than twice the transport delay",
    ),
    "two_feed_streams": (
        ('unit = "t/h"\nrange = [0, 3]', 'unit = "t/h"\nrange = [0, 3]\nrole = "feed"\nkind = "rate"'),
        "tags",
        "exactly one tag must have role = 'feed' (found 2)",
    ),
    "mass_unit_wrong": (
        ('unit = "t"\nrange = [0, 1e9]\nrole = "feed"', 'unit = "kWh"\nrange = [0, 1e9]\nrole = "feed"'),
        "tags[0].unit",
        "not a mass total unit",
    ),
    "bad_opcua_url": (
        ('url = "opc.tcp://127.0.0.1:4840/linegate/sim"', 'url = "http://127.0.0.1:4840"'),
        "drivers.plc.url",
        "should match pattern",
    ),
    "missing_node_id": (
        ('node_id = "ns=2;s=dry.mass"\n', ""),
        "tags[10] (dry.mass).node_id",
        "required for OPC-UA driver 'plc'",
    ),
    "toml_syntax": (("[yield]", "[yield"), "(syntax)", "Expected ']'"),
    "wrong_type": (("tick_ms = 250", 'tick_ms = "fast"'), "runtime.tick_ms", "valid integer"),
    "kind_on_signal": (
        ('unit = "kW"\nrange = [0, 400]', 'unit = "kW"\nrange = [0, 400]\nkind = "rate"'),
        "tags[4].kind",
        "only feed and black_mass streams have a kind",
    ),
}


def _broken(tmp_path: Path, name: str) -> Path:
    (old, new), _, _ = CASES[name]
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text, f"case {name} no longer matches the example config"
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.stream_tag("feed").name == "bw_feed.total"
    assert config.stream_tag("black_mass").name == "bm.total"
    assert abs(config.line.nameplate.tonnes_per_hour - 1.6875) < 1e-9


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_config_names_key_and_reason(tmp_path: Path, name: str) -> None:
    path = _broken(tmp_path, name)
    _, key, reason = CASES[name]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [k for k, _ in info.value.problems] == [key]
    assert reason in info.value.problems[0][1]
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["unknown_key", "range_inverted", "window_too_short"])
def test_check_config_command_exit_codes(tmp_path: Path, name: str) -> None:
    path = _broken(tmp_path, name)
    _, key, reason = CASES[name]
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert str(path) in bad.stderr
    assert key in bad.stderr
    assert reason in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.problems[0][0] == "(file)"


# -- [control] ------------------------------------------------------------------------------------


def _control_problem(tmp_path: Path, old: str, new: str) -> list[tuple[str, str]]:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "line.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


def test_shipped_control_is_off_and_lists_the_setpoints() -> None:
    control = load_config(EXAMPLE).control
    assert control.enabled is False
    assert control.driver == "plc"
    feed = control.setpoints["shr.feed_rate_sp"]
    assert (feed.range, feed.max_step) == ((0.0, 2.0), 0.2)
    assert {(il.tag, il.op, il.value, il.hold_s) for il in feed.interlocks} == {
        ("shr.o2_a", "<", 2.0, 60.0),
        ("shr.o2_b", "<", 2.0, 60.0),
    }


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        (
            'node_id = "ns=2;s=shr.feed_rate_sp"',
            'node_id = "ns=2;s=shr.o2_a"',
            "control.setpoints.shr.feed_rate_sp.node_id",
            "is the input tag 'shr.o2_a'",
        ),
        ('tag = "shr.o2_b"', 'tag = "shr.o2_c"', "interlocks[1].tag", "no tag named 'shr.o2_c'"),
        (
            'driver = "plc"               # the OPC-UA',
            'driver = "iot"               # the OPC-UA',
            "control.driver",
            "not an OPC-UA driver",
        ),
        ("range = [0.0, 2.0]", "range = [2.0, 0.0]", "range", "must be below max"),
        ("max_step = 0.2", "max_step = 5.0", "max_step", "larger than the whole range"),
        ('op = "<"', 'op = "=<"', "op", "Input should be"),
    ],
)
def test_control_limits_are_checked_when_the_config_loads(
    tmp_path: Path, old: str, new: str, key: str, reason: str
) -> None:
    problems = _control_problem(tmp_path, old, new)
    assert any(key in k and reason in r for k, r in problems), problems


def test_enabled_control_needs_an_operator_for_every_setpoint(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("enabled = false ", "enabled = true ", 1)
    text += '\n[control.setpoints."x.y_sp"]\nnode_id = "ns=2;s=x"\nunit = "1"\nrange = [0, 1]\nroles = ["nobody"]\n'
    path = tmp_path / "line.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert any("x.y_sp.roles" in k and "no operator" in r for k, r in exc.value.problems), exc.value.problems
