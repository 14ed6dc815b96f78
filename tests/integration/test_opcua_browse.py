"""`linegate browse` against real asyncua servers: the simulator's and a small one made here.

The simulator serves the example config's OPC-UA tags with EngineeringUnits and EURange from
that config, so a snippet that reproduces the config's units and ranges proves they were read
from the server. The small server carries what the simulator never has: untyped variables,
Booleans, strings, arrays, enumerations, derived numeric types, unreadable properties and
hostile browse names.
"""

from __future__ import annotations

import asyncio
import io
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua

from drivers.opcua_browse import browse_command
from gateway.config import LineConfig, Tag, parse_config
from simulators.local_services import free_port
from simulators.opcua_server import SimOpcUaServer, eu_information
from simulators.plant import SIGNALS, Plant

# The servers only answer reads and browses here: one of each serves the whole module
# (an asyncua server takes seconds to start).
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "line1.toml"
LINEGATE = ROOT / ".venv" / "bin" / "linegate"


@dataclass
class Browsed:
    code: int
    out: str
    err: str

    def tags(self) -> dict[str, dict[str, Any]]:
        data = tomllib.loads(self.out)  # the snippet must always be valid TOML
        tables: list[dict[str, Any]] = data.get("tags", [])
        names = [t["name"] for t in tables]
        assert len(names) == len(set(names)), names
        return {t["name"]: t for t in tables}


async def browse(
    capsys: pytest.CaptureFixture[str], url: str, *, root: str = "i=85", depth: int = 6
) -> Browsed:
    out = io.StringIO()
    code = await browse_command(url, security=None, root=root, depth=depth, driver="plc", out=out)
    err = capsys.readouterr().err
    return Browsed(code, out.getvalue(), err)


@dataclass
class Sim:
    config: LineConfig
    url: str
    plant: Plant


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim() -> AsyncIterator[Sim]:
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    data["drivers"]["plc"]["url"] = f"opc.tcp://127.0.0.1:{free_port()}/linegate/sim"
    config = parse_config(data, str(CONFIG))
    plant = Plant(seed=1)
    server = SimOpcUaServer(
        config,
        "plc",
        known_signals=SIGNALS,
        setpoints=plant.setpoint_specs,
        initial_setpoints=plant.setpoints(),
        on_setpoint=plant.set_setpoint,
    )
    async with server:
        yield Sim(config, server.url, plant)


def opcua_tags(config: LineConfig) -> list[Tag]:
    return [t for t in config.tags if config.drivers[t.driver].type == "opcua"]


async def test_snippet_reproduces_the_configs_opcua_tags_from_the_server(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await browse(capsys, sim.url)
    assert result.code == 0, result.err
    tags = result.tags()
    for table in tags.values():
        Tag.model_validate(table)  # every table is a valid tag as printed, no TODO left here
        assert table["driver"] == "plc"
    expected = opcua_tags(sim.config)
    assert len(expected) == 19  # the shipped config's PLC tags
    for tag in expected:
        got = tags.get(tag.name)
        assert got is not None, (tag.name, sorted(tags))
        assert got["node_id"] == tag.node_id
        assert got["unit"] == tag.unit
        assert tuple(got["range"]) == tag.range
        assert got["description"] == tag.description
    assert "ns=2 is urn:linegate:simulator" in result.out
    n = len(expected) + len(sim.plant.setpoint_specs)  # the tags and the writable setpoints
    assert f"found:     {n} numeric variables, {n} with unit and range, 0 with TODO" in result.out
    assert "linegate check-config" in result.out.splitlines()[-1]


async def test_snippet_tags_replace_the_configs_opcua_tags(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example config with its OPC-UA tags swapped for the snippet's still loads."""
    result = await browse(capsys, sim.url)
    assert result.code == 0, result.err
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    roles = {t["name"]: t for t in data["tags"] if "role" in t}
    kept = [t for t in data["tags"] if "node_id" not in t]
    browsed = []
    for name, table in result.tags().items():
        if name in roles:  # the mass-balance roles are the one thing a server cannot know
            table |= {k: roles[name][k] for k in ("role", "kind", "sigma_rel")}
        browsed.append(table)
    data["tags"] = kept + browsed
    config = parse_config(data, "combined")
    assert {t.name for t in opcua_tags(config)} >= {t.name for t in opcua_tags(sim.config)}
    assert config.stream_tag("feed").node_id == "ns=2;s=bw_feed.total"


async def test_setpoints_are_listed_with_their_units_and_ranges(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await browse(capsys, sim.url)
    tags = result.tags()
    specs = sim.plant.setpoint_specs
    assert set(specs) >= {"shr.feed_rate_sp", "dry.jacket_temp_sp", "dry.press_sp", "bag.target_mass_sp"}
    for name, spec in specs.items():
        got = tags.get(name)
        assert got is not None, (name, sorted(tags))
        assert got["node_id"] == f"ns=2;s={name}"
        assert got["unit"] == spec.unit
        assert tuple(got["range"]) == (spec.low, spec.high)


async def test_depth_limits_the_walk(sim: Sim, capsys: pytest.CaptureFixture[str]) -> None:
    # Objects -> asset objects -> variables: one level sees only the assets.
    shallow = await browse(capsys, sim.url, depth=1)
    assert shallow.code == 1
    assert shallow.tags() == {}
    assert "objects at the depth limit not expanded" in shallow.out
    assert sim.url in shallow.err
    assert "no numeric variables" in shallow.err
    enough = await browse(capsys, sim.url, depth=2)
    assert enough.code == 0
    assert len(enough.tags()) == len(opcua_tags(sim.config)) + len(sim.plant.setpoint_specs)


async def test_root_selects_a_subtree_and_names_are_relative_to_it(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await browse(capsys, sim.url, root="ns=2;s=shr", depth=1)
    assert result.code == 0, result.err
    tags = result.tags()
    assert sorted(tags) == ["current", "feed_rate_sp", "o2_a", "o2_b", "power"]
    assert tags["power"]["node_id"] == "ns=2;s=shr.power"
    assert tags["power"]["unit"] == "kW"
    # The portable form of the root names the namespace by URI.
    by_uri = await browse(capsys, sim.url, root="nsu=urn:linegate:simulator;s=shr", depth=1)
    assert by_uri.code == 0, by_uri.err
    assert by_uri.tags() == tags
    elsewhere = await browse(capsys, sim.url, root="nsu=urn:not:here;s=shr", depth=1)
    assert elsewhere.code == 1
    assert "namespace is not on this server" in elsewhere.err
    # A variable as the root is itself the one tag.
    single = await browse(capsys, sim.url, root="ns=2;s=dry.press_abs", depth=0)
    assert single.code == 0, single.err
    assert single.tags() == {
        "press_abs": {
            "name": "press_abs",
            "description": "Dryer absolute pressure",
            "driver": "plc",
            "node_id": "ns=2;s=dry.press_abs",
            "unit": "mbar",
            "range": [10.0, 1013.0],
        }
    }


async def test_unknown_root_and_bad_usage(sim: Sim, capsys: pytest.CaptureFixture[str]) -> None:
    missing = await browse(capsys, sim.url, root="ns=2;s=no_such_node")
    assert missing.code == 1
    assert "ns=2;s=no_such_node" in missing.err
    assert "BadNodeIdUnknown" in missing.err
    assert missing.out == ""
    for url, root, depth, fragment in [
        ("http://127.0.0.1:4840", "i=85", 6, "invalid server URL"),
        (sim.url, "Objects", 6, "invalid --root"),
        (sim.url, "i=85", -1, "--depth"),
    ]:
        bad = await browse(capsys, url, root=root, depth=depth)
        assert bad.code == 2, (url, root, depth)
        assert fragment in bad.err
        assert bad.out == ""


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(LINEGATE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_prints_a_snippet_and_fails_cleanly_without_a_server(sim: Sim) -> None:
    code, out, err = await run_cli("browse", sim.url)
    assert code == 0, err
    assert "[[tags]]" in out
    assert len(tomllib.loads(out)["tags"]) == len(opcua_tags(sim.config)) + len(sim.plant.setpoint_specs)
    assert "Traceback" not in err

    dead = f"opc.tcp://127.0.0.1:{free_port()}/linegate/sim"
    code, out, err = await run_cli("browse", dead)
    assert code == 1
    assert dead in err
    assert "Traceback" not in err
    assert out == ""


# ---------------------------------------------------------------------------------------------
# A small server with everything the simulator lacks
# ---------------------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plain_url() -> AsyncIterator[str]:
    url = f"opc.tcp://127.0.0.1:{free_port()}/plain"
    server = Server()
    await server.init()
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:test:plain")
    line = await server.nodes.objects.add_object(ua.NodeId("Line2", idx), ua.QualifiedName("Line2", idx))

    async def var(name: str, value: Any, vtype: ua.VariantType, datatype: int | None = None) -> Any:
        return await line.add_variable(
            ua.NodeId(f"Line2.{name}", idx),
            ua.QualifiedName(name, idx),
            ua.Variant(value, vtype),
            datatype=ua.NodeId(datatype) if datatype else None,
        )

    async def eu(node: Any, name: str, unit: str | None, rng: tuple[float, float] | None) -> None:
        if unit is not None:
            await node.add_property(
                ua.NodeId(f"Line2.{name}.EngineeringUnits", idx),
                ua.QualifiedName("EngineeringUnits", 0),
                ua.Variant(eu_information(unit), ua.VariantType.ExtensionObject),
                datatype=ua.NodeId(ua.ObjectIds.EUInformation),
            )
        if rng is not None:
            await node.add_property(
                ua.NodeId(f"Line2.{name}.EURange", idx),
                ua.QualifiedName("EURange", 0),
                ua.Variant(ua.Range(Low=rng[0], High=rng[1]), ua.VariantType.ExtensionObject),
                datatype=ua.NodeId(ua.ObjectIds.Range),
            )

    await var("MotorSpeed", 1200, ua.VariantType.Int32)  # no EU properties at all
    clash = await var("motor speed", 3.5, ua.VariantType.Float)  # same tag name once sanitised
    await eu(clash, "motor speed", "rpm", None)
    await var("Label", "lot 7", ua.VariantType.String)
    await var("Running", True, ua.VariantType.Boolean)
    temps = await var("Temps", [1.0, 2.0], ua.VariantType.Double)
    await temps.write_attribute(ua.AttributeIds.ValueRank, ua.DataValue(ua.Variant(1, ua.VariantType.Int32)))
    await var("State", 0, ua.VariantType.Int32, ua.ObjectIds.ServerState)  # an enumeration
    cycle = await var("CycleTime", 250.0, ua.VariantType.Double, ua.ObjectIds.Duration)
    await eu(cycle, "CycleTime", "ms", (0.0, 10_000.0))
    backwards = await var("Backwards", 1.0, ua.VariantType.Double)
    await eu(backwards, "Backwards", "bar", (5.0, 1.0))
    oil = await var("Temperatur Ölbad", 80.0, ua.VariantType.Double)
    await eu(oil, "Temperatur Ölbad", "°C", (0.0, 150.0))
    # Hostile text: a newline in a browse name and a description must not escape their line.
    evil = await var('Evil\n[[tags]]\nname = "x"', 1.0, ua.VariantType.Double)
    await evil.write_attribute(
        ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText('two\nlines "quoted"')))
    )
    await eu(evil, "Evil", "m", (0.0, 1.0))
    broken = await var("Broken", 1.0, ua.VariantType.Double)
    await eu(broken, "Broken", "m", (0.0, 1.0))
    await server.write_attribute_value(
        ua.NodeId("Line2.Broken.EURange", idx),
        ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)),
    )
    secret = await var("Secret", 1.0, ua.VariantType.Double)
    await secret.write_attribute(
        ua.AttributeIds.UserAccessLevel, ua.DataValue(ua.Variant(0, ua.VariantType.Byte))
    )
    # Tiny operation limits make every Read and Browse of the walk span several requests.
    for limit, value in (
        (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, 5),
        (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse, 3),
    ):
        await server.write_attribute_value(
            ua.NodeId(limit), ua.DataValue(ua.Variant(value, ua.VariantType.UInt32))
        )
    await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def test_missing_units_and_ranges_become_todo_lines(
    plain_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await browse(capsys, plain_url)
    assert result.code == 0, result.err
    tags = result.tags()
    assert sorted(tags) == [
        "line2.backwards",
        "line2.broken",
        "line2.cycle_time",
        "line2.evil_tags_name_x",
        "line2.motor_speed",
        "line2.motor_speed_2",
        "line2.temperatur_olbad",
    ]
    speed = tags["line2.motor_speed"]
    assert speed["node_id"] == "ns=2;s=Line2.MotorSpeed"
    assert "description" not in speed  # asyncua's default (the browse name) says nothing
    # Absent unit and range are commented out, so the table cannot load until filled in.
    assert "unit" not in speed
    assert "range" not in speed
    assert tags["line2.motor_speed_2"]["unit"] == "rpm"
    assert "range" not in tags["line2.motor_speed_2"]
    assert "range" not in tags["line2.backwards"]
    assert "range" not in tags["line2.broken"]
    for name in ("line2.motor_speed", "line2.backwards", "line2.broken"):
        with pytest.raises(ValueError, match="Field required"):
            Tag.model_validate(tags[name])
    lines = result.out.splitlines()
    block = lines[lines.index('node_id = "ns=2;s=Line2.MotorSpeed"') :][:5]
    assert block[1].startswith("# TODO unit: the server gives no EngineeringUnits property")
    assert block[2] == '# unit = "?"'
    assert block[3].startswith("# TODO range: the server gives no EURange property")
    assert block[4] == "# range = [?, ?]"
    assert "# TODO range: EURange [5.0, 1.0] is not a usable range" in result.out
    assert "# TODO range: EURange unreadable (BadSensorFailure)" in result.out
    assert "found:     7 numeric variables, 3 with unit and range, 4 with TODO lines" in result.out

    cycle = tags["line2.cycle_time"]
    assert (cycle["unit"], cycle["range"]) == ("ms", [0.0, 10000.0])
    assert "(Duration (Double))" in result.out
    assert tags["line2.temperatur_olbad"]["unit"] == "°C"
    assert tags["line2.evil_tags_name_x"]["description"] == 'two\nlines "quoted"'
    assert tags["line2.evil_tags_name_x"]["node_id"] == 'ns=2;s=Line2.Evil\n[[tags]]\nname = "x"'

    assert "skipped:   5 variables" in result.out
    for reason in (
        "ns=2;s=Line2.Label (Line2/Label): data type String is not a numeric type",
        "ns=2;s=Line2.Running (Line2/Running): data type Boolean: on/off, not a measurement",
        "ns=2;s=Line2.Temps (Line2/Temps): array (ValueRank 1)",
        "ns=2;s=Line2.State (Line2/State): data type ServerState (Enumeration): an enumeration",
        "ns=2;s=Line2.Secret (Line2/Secret): not readable by this session",
    ):
        assert reason in result.out, reason


async def test_snippet_from_small_server_fills_into_a_valid_tag(
    plain_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Filling in the TODO lines (uncommenting them with values) gives a valid tag."""
    result = await browse(capsys, plain_url, root="ns=2;s=Line2")
    assert result.code == 0, result.err
    filled = result.out.replace('# unit = "?"', 'unit = "rpm"').replace(
        "# range = [?, ?]", "range = [0, 3000]"
    )
    tags = {t["name"]: t for t in tomllib.loads(filled)["tags"]}
    assert Tag.model_validate(tags["motor_speed"]).unit == "rpm"
