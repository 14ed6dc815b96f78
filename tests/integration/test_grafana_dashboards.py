"""The shipped Grafana dashboards show data the first time they are opened.

Static checks (no services): each dashboard JSON loads, has a uid, unique panel ids, the `site` and
`line` variables, InfluxQL-only targets on the provisioned data source, and a unit on every panel
that the plausibility table below knows; the provisioning files point at the dashboards directory
and define that data source.

Live check: a real line (simulator with scenario S5 + `linegate run`, real mosquitto and InfluxDB
1.6 behind the nginx proxy) runs at 600x until a whole shift is in InfluxDB and one out-of-range
setpoint command has been rejected; then every panel target runs against that InfluxDB as Grafana
would send it ($timeFilter, $__interval, $site, $line substituted) and must return at least one
value, each plausible for the unit the panel declares. A panel whose query names a wrong field,
tag or measurement comes back empty and fails here, named.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from simulators.local_services import InfluxDB, InfluxV2CompatProxy, Mosquitto
from tests.integration.line_run import INFLUX_DATABASE, ROOT, LineRun, running_line, wait_for

integration = pytest.mark.integration

GRAFANA = ROOT / "config" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES_YAML = GRAFANA / "provisioning" / "datasources" / "linegate.yaml"
PROVIDERS_YAML = GRAFANA / "provisioning" / "dashboards" / "linegate.yaml"
ENV_FILE = GRAFANA / "linegate.env"
DATASOURCE_UID = "linegate-influxdb"
LINE_CONFIG = tomllib.loads((ROOT / "config" / "line1.toml").read_text(encoding="utf-8"))["line"]

SPEED = 600.0
# 2 h 40 min of plant time before the 06:00 shift change, so the gateway (connected some 15 plant
# minutes after the start) holds the feed from the shift's delay-shifted start (06:00 - 92.5 min)
# and the 06:00-14:00 shift closes with a final yield that has a value; a shift whose start the
# gateway missed closes BAD, without one. 14:00 is ~65 s of wall time at 600x.
PLANT_START = datetime(2026, 1, 5, 3, 20, tzinfo=UTC)
INTERVAL = "5m"
WALL_INTERVAL = "10s"
# Timestamped with the wall clock, not plant time (drivers/influx_lines.py): at 600x the two
# clocks are months apart, so these are queried over the test's wall-clock span instead.
WALL_CLOCK_MEASUREMENTS = ("control_audit", "gateway", "driver")
OUT_OF_RANGE_FEED = 5.0  # t/h; shr.feed_rate_sp allows 0..2
# (panel title, column) that this run legitimately leaves empty: a rejected command is never
# written, so it has no read-back. Every other column must show at least one value.
EMPTY_IN_THIS_RUN = {("Control audit", "readback")}

# Plausible values per Grafana unit id: (low, high), or None for text. A unit missing here fails
# the test, so a new panel forces a decision on what its values may be.
PLAUSIBLE: dict[str, tuple[float, float] | None] = {
    "percent": (0.0, 100.0),
    # Fractions: performance and feed vs nameplate run above 1 when the line beats nameplate.
    "percentunit": (0.0, 2.0),
    "celsius": (-50.0, 400.0),
    "pressurembar": (0.0, 1100.0),
    "masskg": (0.0, 1e6),
    "masst": (0.0, 1e6),
    "ppm": (0.0, 1e6),
    "suffix: t/h": (0.0, 20.0),
    "suffix: kWh/t": (0.0, 5000.0),
    "suffix: Nm³/t": (0.0, 5000.0),
    "ms": (0.0, 60_000.0),
    "s": (0.0, 1e8),
    "decmbytes": (0.0, 1e6),
    "bytes": (0.0, 1e13),
    "short": (0.0, 1e12),  # counts
    "cps": (0.0, 1e7),  # counts per second
    "bool_on_off": (0.0, 1.0),
    "none": (-1e12, 1e12),  # setpoint values, each in its own unit
    "string": None,
}


# -- the dashboards as files -------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    board = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(board, dict), f"{path.name}: not a JSON object"
    return board


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with targets, rows' nested panels included."""
    out: list[dict[str, Any]] = []
    for panel in board.get("panels", []):
        out.extend(p for p in [panel, *panel.get("panels", [])] if p.get("type") != "row")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _panel_cases() -> list[Any]:
    """(dashboard file name, panel) per data panel; a dashboard that does not load adds none (its
    own test fails instead of the whole module's collection)."""
    cases = []
    for path in dashboard_files():
        try:
            panels = data_panels(load_dashboard(path))
        except (ValueError, AssertionError):
            continue
        cases += [pytest.param(path.name, p, id=f"{path.stem}:{_slug(p.get('title', '?'))}") for p in panels]
    return cases


PANEL_CASES = _panel_cases()


def field_unit(panel: dict[str, Any], column: str) -> str | None:
    """The unit Grafana shows `column` in: a byName override's, else the panel default."""
    for o in panel["fieldConfig"].get("overrides", []):
        if o["matcher"] == {"id": "byName", "options": column}:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    return str(prop["value"])
    unit = panel["fieldConfig"]["defaults"].get("unit")
    return None if unit is None else str(unit)


def declared_units(panel: dict[str, Any]) -> list[str]:
    units = [panel["fieldConfig"]["defaults"].get("unit")]
    units += [
        p["value"]
        for o in panel["fieldConfig"].get("overrides", [])
        for p in o["properties"]
        if p["id"] == "unit"
    ]
    return units


# -- provisioning YAML: only flat `key: value` scalars are read (no YAML library in the venv) ----


def yaml_scalars(path: Path) -> dict[str, list[str]]:
    """Every `key: value` scalar in the file, by key, in order, comments and quotes removed."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_]+):\s+(\S.*)$", line)
        if m and not line.lstrip().startswith("#"):
            out.setdefault(m.group(1), []).append(m.group(2).strip().strip("\"'"))
    return out


def env_defaults() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def expand(value: str, env: dict[str, str]) -> str:
    """Grafana's provisioning expansion ($VAR, ${VAR}), from `env`."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env[m.group(1) or m.group(2)], value)


# -- static checks -----------------------------------------------------------------------------


def test_both_dashboards_are_shipped() -> None:
    assert [p.name for p in dashboard_files()] == ["gateway-health.json", "line-overview.json"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_loads_with_uid_unique_panel_ids_and_variables(path: Path) -> None:
    board = load_dashboard(path)
    assert board["uid"].startswith("linegate-")
    assert board["schemaVersion"] >= 36
    assert board.get("id") is None  # provisioned: Grafana assigns the id
    ids = [p["id"] for p in board["panels"]] + [q["id"] for p in board["panels"] for q in p.get("panels", [])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) >= {"site", "line"}
    for name in ("site", "line"):
        v = variables[name]
        assert v["type"] == "query"
        assert v["datasource"]["uid"] == DATASOURCE_UID
        assert v["query"].startswith(f'SHOW TAG VALUES FROM "signal" WITH KEY = "{name}"')
    assert "$site" in variables["line"]["query"]  # the line list follows the chosen site
    assert data_panels(board), f"{path.name} has no panels"


@pytest.mark.parametrize(("board_name", "panel"), PANEL_CASES)
def test_panel_targets_are_raw_influxql_with_grafana_macros(board_name: str, panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == DATASOURCE_UID
    assert panel["targets"], "a panel without queries"
    for t in panel["targets"]:
        q = t["query"]
        assert t["rawQuery"] is True, f"{t['refId']}: not a raw InfluxQL query"
        assert t.get("datasource", panel["datasource"])["uid"] == DATASOURCE_UID
        assert q.startswith("SELECT "), f"{t['refId']}: InfluxQL SELECT expected, got {q[:40]!r}"
        assert "from(bucket" not in q, "Flux is not InfluxQL"
        assert "|>" not in q, "Flux is not InfluxQL"
        for macro in ("$timeFilter", "$site", "$line"):
            assert macro in q, f"{t['refId']}: {macro} missing"
        if "GROUP BY time(" in q:
            assert "GROUP BY time($__interval)" in q
            assert re.search(r"fill\((none|null)\)", q), f"{t['refId']}: choose fill(none) or fill(null)"


@pytest.mark.parametrize(("board_name", "panel"), PANEL_CASES)
def test_panel_declares_a_known_unit(board_name: str, panel: dict[str, Any]) -> None:
    units = declared_units(panel)
    assert units[0], "fieldConfig.defaults.unit missing"
    unknown = [u for u in units if u not in PLAUSIBLE]
    assert not unknown, f"units {unknown} are not in PLAUSIBLE: decide their plausible range there"


def test_provisioning_points_at_the_dashboards_and_defines_their_datasource() -> None:
    env = env_defaults()
    ds = yaml_scalars(DATASOURCES_YAML)
    assert ds["apiVersion"] == ["1"]
    assert ds["uid"] == [DATASOURCE_UID]
    assert ds["type"] == ["influxdb"]
    assert ds["version"] == ["InfluxQL"]
    assert ds["dbName"] == [INFLUX_DATABASE]
    assert expand(ds["url"][0], env).startswith("http")
    providers = yaml_scalars(PROVIDERS_YAML)
    assert providers["type"] == ["file"]
    path = Path(expand(providers["path"][0], env))
    # Installed as a copy of this repository's dashboards directory (see the YAML's header).
    assert path.is_absolute()
    assert path.parts[-2:] == DASHBOARDS.parts[-2:]
    for board_path in dashboard_files():
        board = load_dashboard(board_path)
        uids = {p["datasource"]["uid"] for p in data_panels(board)}
        uids |= {v["datasource"]["uid"] for v in board["templating"]["list"]}
        assert uids == {DATASOURCE_UID}, f"{board_path.name} uses data sources {uids}"


def test_env_file_defaults_every_variable_the_provisioning_uses() -> None:
    env = env_defaults()
    used = set()
    for path in (DATASOURCES_YAML, PROVIDERS_YAML):
        for values in yaml_scalars(path).values():
            for v in values:
                used |= {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", v)}
    assert used, "the provisioning uses no environment variable"
    assert used <= set(env), f"no default for {sorted(used - set(env))} in {ENV_FILE.name}"


# -- the live run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """What the line left in InfluxDB, and the spans to query it over."""

    influxdb: InfluxDB
    plant_ms: tuple[int, int]
    wall_ms: tuple[int, int]
    command_result: dict[str, Any]


def _test_config(text: str) -> str:
    """The shipped config with control on and the feed rate reported on every server update."""
    # Shipped with control off, a command is rejected as control_disabled before any check; on,
    # the guard itself refuses the out-of-range value (and writes nothing).
    old = "\nenabled = false "
    assert old in text, "the shipped [control] table lost its enabled line"
    text = text.replace(old, "\nenabled = true ", 1)
    # With the shipped trigger (status_value) a frozen value sends no notification at all: it shows
    # as tag_stale after stale_after_s of wall time, which 600x squeezes S5's hour below. Reported on
    # every update (as a PLC scanning into the server does), it arrives flat: stuck_sensor.
    text, n = re.subn(
        r'(?m)(^name = "bw_feed\.rate"\n(?:(?!\[).*\n)*)',
        r'\g<1>[tags.monitoring]\ntrigger = "status_value_timestamp"\n\n',
        text,
        count=1,
    )
    assert n == 1, "the shipped config lost its bw_feed.rate tag"
    return text


def _send_out_of_range_command(run: LineRun) -> dict[str, Any]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "gateway.cli", "command", "--config", str(run.config_path)),
            *("--operator", "operator", "--timeout", "30", "shr.feed_rate_sp", str(OUT_OF_RANGE_FEED)),
        ],
        capture_output=True,
        timeout=90,
        cwd=ROOT,
    )
    assert proc.returncode == 3, f"exit {proc.returncode}: {proc.stdout!r} {proc.stderr.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _final_shift_yields(influxdb: InfluxDB) -> list[dict[str, Any]]:
    query = 'SELECT "value" FROM "kpi" WHERE "kpi" = \'yield_shift_final\' AND "value" > 0'
    return influxdb.rows(query, INFLUX_DATABASE)


def _audit_points(influxdb: InfluxDB) -> list[dict[str, Any]]:
    return influxdb.rows('SELECT "decision", "code" FROM "control_audit"', INFLUX_DATABASE)


@pytest.fixture(scope="module")
def run_data(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: Mosquitto,
    influxdb: InfluxDB,
    influx_proxy: InfluxV2CompatProxy,
) -> RunData:
    wall_start_ms = int(time.time() * 1000)
    with running_line(
        tmp_path_factory.mktemp("grafana"),
        mosquitto,
        influxdb,
        influx_proxy,
        speed=SPEED,
        seed=3,
        scenario="S5",
        start=PLANT_START,
        edit_config=_test_config,
    ) as run:
        wait_for(lambda: run.notify.count("READY=1"), 60, "READY=1 on the notify socket")
        command_result = _send_out_of_range_command(run)

        def explain() -> str:
            last = influxdb.rows('SELECT last("value") FROM "signal"', INFLUX_DATABASE)
            return (
                f"last signal at {last}, audit points {_audit_points(influxdb)}\n"
                f"gateway log:\n{run.gateway_log.read_text()[-3000:]}\n"
                f"simulator log:\n{run.simulator_log.read_text()[-2000:]}"
            )

        # A whole shift (06:00-14:00 plant time) closed with a value, and the rejection landed.
        wait_for(
            lambda: _final_shift_yields(influxdb) and _audit_points(influxdb),
            150,
            "a final shift yield and a control audit point in InfluxDB",
            interval=0.5,
            explain=explain,
        )
        last = influxdb.rows('SELECT last("value") FROM "signal"', INFLUX_DATABASE)
    # The line is stopped: every query below sees the same data.
    return RunData(
        influxdb=influxdb,
        plant_ms=(int(PLANT_START.timestamp() * 1000), int(last[0]["time"]) + 1000),
        wall_ms=(wall_start_ms, int(time.time() * 1000)),
        command_result=command_result,
    )


def grafana_query(query: str, data: RunData) -> str:
    """`query` as Grafana sends it for the run's time range and the shipped line's variables."""
    wall = any(f'FROM "{m}"' in query for m in WALL_CLOCK_MEASUREMENTS)
    lo, hi = data.wall_ms if wall else data.plant_ms
    # The run's wall span is a minute or so: Grafana would pick its 10 s minimum interval there.
    return (
        query.replace("$timeFilter", f"time >= {lo}ms and time <= {hi}ms")
        .replace("$__interval", WALL_INTERVAL if wall else INTERVAL)
        .replace("$site", LINE_CONFIG["site"])
        .replace("$line", LINE_CONFIG["name"])
    )


def series_columns(result: dict[str, Any]) -> dict[str, list[Any]]:
    """Values by column name (time left out) over every series of one statement's result."""
    out: dict[str, list[Any]] = {}
    for statement in result["results"]:
        for series in statement.get("series", []):
            for i, column in enumerate(series["columns"]):
                if column != "time":
                    out.setdefault(column, []).extend(row[i] for row in series["values"])
    return out


def implausible(values: list[Any], unit: str) -> list[Any]:
    """The non-null values that the unit's plausible range (or text) does not admit."""
    span = PLAUSIBLE[unit]
    present = [v for v in values if v is not None]
    if span is None:
        return [v for v in present if not (isinstance(v, str) and v)]
    lo, hi = span
    return [
        v
        for v in present
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi
    ]


@integration
def test_out_of_range_command_was_rejected_by_the_guard(run_data: RunData) -> None:
    result = run_data.command_result
    assert (result["status"], result["code"]) == ("rejected", "out_of_range"), result
    rows = _audit_points(run_data.influxdb)
    assert [(r["decision"], r["code"]) for r in rows] == [("rejected", "out_of_range")]


@integration
def test_variables_offer_the_configured_site_and_line(run_data: RunData) -> None:
    for path in dashboard_files():
        for v in load_dashboard(path)["templating"]["list"]:
            rows = series_columns(
                run_data.influxdb.query(grafana_query(v["query"], run_data), INFLUX_DATABASE)
            )
            expected = LINE_CONFIG["site"] if v["name"] == "site" else LINE_CONFIG["name"]
            assert rows.get("value") == [expected], f"{path.name} ${v['name']}: {rows}"


@integration
@pytest.mark.parametrize(("board_name", "panel"), PANEL_CASES)
def test_panel_shows_plausible_data(run_data: RunData, board_name: str, panel: dict[str, Any]) -> None:
    for t in panel["targets"]:
        query = grafana_query(t["query"], run_data)
        columns = series_columns(run_data.influxdb.query(query, INFLUX_DATABASE, epoch="ms"))
        assert columns, f"{t['refId']} returned no series: {query}"
        for column, values in columns.items():
            if (panel["title"], column) not in EMPTY_IN_THIS_RUN:
                assert any(v is not None for v in values), f"{t['refId']} column {column!r} is empty: {query}"
            unit = field_unit(panel, column)
            assert unit in PLAUSIBLE, f"{t['refId']} column {column!r}: unknown unit {unit!r}"
            bad = implausible(values, unit)
            assert not bad, f"{t['refId']} column {column!r} ({unit}): implausible {bad[:5]} from {query}"


@integration
def test_alarm_panel_shows_the_stuck_feed_rate_of_s5(run_data: RunData) -> None:
    board = load_dashboard(DASHBOARDS / "line-overview.json")
    (panel,) = [p for p in data_panels(board) if p["title"] == "Alarm events"]
    query = grafana_query(panel["targets"][0]["query"], run_data)
    columns = series_columns(run_data.influxdb.query(query, INFLUX_DATABASE))
    events = set(zip(columns["kind"], columns["subject"], columns["event"], strict=True))
    assert ("stuck_sensor", "bw_feed.rate", "raised") in events, sorted(events)
