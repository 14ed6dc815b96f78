"""Guarded setpoint writes end to end: MQTT command -> guard -> OPC-UA write -> read-back -> result.

Everything is real: the simulator's asyncua server (whose own counters say whether a write
request ever reached a setpoint), mosquitto, the gateway's runtime with the shipped line config
(control switched on, plus two test setpoints whose interlocks are false or stale), and the
`linegate command` client. Each rejection class is shown to write nothing to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.command_client import Command, send_command
from gateway.commands import CommandStep
from gateway.composition import build_control, build_runtime
from gateway.config import LineConfig, parse_config
from gateway.control_service import GuardedControl
from gateway.ports import PipelineUpdate
from gateway.runtime import Runtime
from simulators.local_config import localize_config_text
from simulators.local_services import Mosquitto, free_port
from simulators.opcua_server import SimOpcUaServer
from simulators.runner import run_simulator
from simulators.scenario import Scenario, load_scenario, parse_scenario

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "line1.toml"
FEED = "shr.feed_rate_sp"
KEY_ENV = "LINEGATE_TEST_SIGNER_KEY"
KEY = b"a-test-key-for-the-signer"
# Plant seconds per wall second: the 60 s O2 hold takes 2 s.
SPEED = 30.0

TEST_ADDITIONS = f"""
# The PLC's feed trip as a tag, and as a third feed-rate interlock (the S12 test watches it).
[[tags]]
name = "il.feed_trip"
driver = "plc"
node_id = "ns=2;s=il.feed_trip"
unit = "1"
range = [0, 1]
[tags.monitoring]
trigger = "status_value_timestamp"

[[control.setpoints."shr.feed_rate_sp".interlocks]]
tag = "il.feed_trip"
op = "=="
value = 0

[control.operators.signer]
roles = ["operator"]
key_env = "{KEY_ENV}"

# Test-only interlocks: one never true at normal O2, one whose input can never be fresh enough.
[[control.setpoints."ac.air_vel_sp".interlocks]]
tag = "shr.o2_a"
op = ">"
value = 5.0
[[control.setpoints."bag.target_mass_sp".interlocks]]
tag = "gas.h2"
op = "<"
value = 1000
fresh_s = 0.001
"""


def line_text(tmp_path: Path, opcua_port: int, mqtt_port: int, *, enabled: bool, dry_run: bool) -> str:
    text = localize_config_text(
        CONFIG.read_text(encoding="utf-8"),
        opcua_port=opcua_port,
        mqtt_port=mqtt_port,
        influx_url=None,
        state_dir=tmp_path,
    )
    for key, on in (("enabled", enabled), ("dry_run", dry_run)):
        old = f"\n{key} = false "
        assert old in text, f"the shipped [control] table lost its {key} line"
        text = text.replace(old, f"\n{key} = {'true' if on else 'false'} ", 1)
    return text + TEST_ADDITIONS


@dataclass
class Plant:
    config: LineConfig
    runtime: Runtime
    control: GuardedControl
    server: SimOpcUaServer
    feed_rate: list[tuple[float, float]] = field(default_factory=list)  # (plant t, t/h) seen by the gateway

    def writes(self) -> tuple[int, int]:
        """Write requests that reached a setpoint: (applied, refused by the server)."""
        return self.server.setpoint_writes, self.server.setpoint_rejections

    async def send(
        self,
        setpoint: str,
        value: float,
        *,
        operator: str = "operator",
        step: CommandStep = CommandStep.SET,
        request_id: str = "",
        issued_at: float | None = None,
        key: bytes | None = None,
    ) -> dict[str, Any]:
        cmd = Command(setpoint, value, operator, step, request_id, issued_at)
        return await send_command(self.config, cmd, key=key, timeout_s=15)

    async def current(self, setpoint: str) -> float:
        assert self.control.writer is not None
        reading = await self.control.writer.read(self.config.control.setpoints[setpoint].node_id)
        assert reading.value is not None, reading.detail
        return float(reading.value)

    def feed_interlocks_hold(self) -> bool:
        return all(
            s.holds for s in self.control.interlocks.status(self.config.control.setpoints[FEED].interlocks)
        )


async def wait_until(what: str, pred: Callable[[], bool], deadline_s: float) -> None:
    """Poll `pred` every 50 ms (interlock state changes on runtime ticks: no finer event)."""
    end = time.monotonic() + deadline_s
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_plant(
    tmp_path: Path,
    mosquitto: Mosquitto,
    *,
    enabled: bool = True,
    dry_run: bool = False,
    scenario: Scenario | None = None,
    wait_for_interlocks: bool = True,
) -> AsyncIterator[Plant]:
    port = free_port()
    text = line_text(tmp_path, port, mosquitto.port, enabled=enabled, dry_run=dry_run)
    config = parse_config(tomllib.loads(text), "test line")
    servers: list[SimOpcUaServer] = []
    stop, ready = asyncio.Event(), asyncio.Event()
    sim = asyncio.create_task(
        run_simulator(
            config,
            seed=5,
            speed=SPEED,
            hours=None,
            truth_path=None,
            stop=stop,
            ready=ready,
            scenario=scenario,
            servers_out=servers,
        )
    )
    control = build_control(config)
    runtime = build_runtime(config, control)
    run: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(ready.wait(), 30)
        run = asyncio.create_task(runtime.run())
        plant = Plant(config, runtime, control, servers[0])
        feed_tag = config.tag_index("bw_feed.rate")

        def collect(update: PipelineUpdate) -> None:
            s = update.samples
            for t, v in zip(s.t[s.tag == feed_tag], s.value[s.tag == feed_tag], strict=True):
                plant.feed_rate.append((float(t), float(v)))

        runtime.add_listener(collect)
        await asyncio.wait_for(runtime.ready.wait(), 60)
        await wait_until("the command channel", lambda: runtime.health["commands"].connected, 30)
        if wait_for_interlocks:
            await wait_until("the feed interlocks to hold", plant.feed_interlocks_hold, 30)
        yield plant
    finally:
        runtime.stop()
        if run is not None:
            await asyncio.wait_for(run, 30)
        stop.set()
        await asyncio.wait_for(sim, 30)
        await control.aclose()


@pytest.fixture(autouse=True)
def signer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY.decode())


def audit_records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def test_accepted_feed_rate_is_read_back_and_moves_the_throughput(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with running_plant(tmp_path, mosquitto) as plant:
        before = await plant.current(FEED)
        target = round(before - 0.2, 2)
        sent_at = plant.runtime.pipeline.t_plant
        result = await plant.send(FEED, target)
        assert result["status"] == "accepted", result
        assert result["readback"] == pytest.approx(target, abs=0.03)
        assert result["previous"] == pytest.approx(before)
        assert plant.writes() == (1, 0)
        assert await plant.current(FEED) == pytest.approx(target, abs=0.03)

        # Within min_interval_s of that write, the next one is refused: nothing reaches the server.
        too_soon = await plant.send(FEED, target + 0.05)
        assert (too_soon["status"], too_soon["code"]) == ("rejected", "too_soon")
        assert plant.writes() == (1, 0)

        # The simulated feeder follows: the belt weigher (3 % noise) averages near the new rate.
        def settled() -> bool:
            after = [v for t, v in plant.feed_rate if t > sent_at + 300]
            return len(after) >= 30 and abs(sum(after[-30:]) / 30 - target) < 0.05

        await wait_until(f"the measured feed rate to settle near {target} t/h", settled, 60)


REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("not allowlisted", {"setpoint": "shr.speed_sp", "value": 20.0}, "not_allowlisted"),
    ("out of range", {"setpoint": FEED, "value": 2.5}, "out_of_range"),
    ("step too large", {"setpoint": FEED, "value": "current-0.5"}, "step_too_large"),
    ("interlock false", {"setpoint": "ac.air_vel_sp", "value": 6.0}, "interlock_false"),
    ("interlock input stale", {"setpoint": "bag.target_mass_sp", "value": 800.0}, "interlock_stale"),
    ("expired", {"setpoint": FEED, "value": "current-0.05", "age_s": 120.0}, "expired"),
    (
        "bad signature",
        {"setpoint": FEED, "value": "current-0.05", "operator": "signer", "key": b"wrong"},
        "bad_signature",
    ),
    ("unsigned", {"setpoint": FEED, "value": "current-0.05", "operator": "signer"}, "bad_signature"),
    ("wrong role", {"setpoint": "dry.press_sp", "value": 150.0, "step": CommandStep.ARM}, "wrong_role"),
    ("unknown operator", {"setpoint": FEED, "value": "current-0.05", "operator": "mallory"}, "wrong_role"),
    (
        "execute without arm",
        {"setpoint": "dry.press_sp", "value": 150.0, "operator": "shift-lead", "step": CommandStep.EXECUTE},
        "not_armed",
    ),
    (
        "critical without two steps",
        {"setpoint": "dry.press_sp", "value": 150.0, "operator": "shift-lead"},
        "not_armed",
    ),
]


async def test_every_rejection_class_writes_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_plant(tmp_path, mosquitto) as plant:
        current = await plant.current(FEED)
        for what, spec, code in REJECTIONS:
            value = spec["value"]
            if isinstance(value, str):
                value = round(current + float(value.removeprefix("current")), 2)
            issued_at = time.time() - spec["age_s"] if "age_s" in spec else None
            result = await plant.send(
                spec["setpoint"],
                value,
                operator=spec.get("operator", "operator"),
                step=spec.get("step", CommandStep.SET),
                issued_at=issued_at,
                key=spec.get("key"),
            )
            assert (result["status"], result["code"]) == ("rejected", code), (what, result)
            assert plant.writes() == (0, 0), f"{what}: a write reached the server"

        # A replayed request id gets the first decision again and writes nothing, even with
        # another value; the audit trail records the replay.
        first = await plant.send(FEED, 2.5, request_id="replay-me")
        again = await plant.send(FEED, round(current - 0.05, 2), request_id="replay-me")
        assert (first["status"], again["status"], again["duplicate"]) == ("rejected", "rejected", True)
        assert again["code"] == "out_of_range"
        assert plant.writes() == (0, 0)

        # A correctly signed command from the same operator goes through.
        issued = time.time()
        value = round(current - 0.05, 2)
        good = await plant.send(FEED, value, operator="signer", issued_at=issued, key=KEY)
        assert good["status"] == "accepted", good
        assert plant.writes() == (1, 0)
    records = audit_records(tmp_path)
    assert [r["decision"] for r in records].count("duplicate") == 1


async def test_control_disabled_writes_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_plant(tmp_path, mosquitto, enabled=False) as plant:
        result = await plant.send(FEED, 1.6)
        assert (result["status"], result["code"]) == ("rejected", "control_disabled")
        assert plant.writes() == (0, 0)
        assert plant.control.writer is None  # disabled control never even opens a session


async def test_dry_run_reports_and_writes_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_plant(tmp_path, mosquitto, dry_run=True) as plant:
        current = await plant.current(FEED)
        result = await plant.send(FEED, round(current - 0.1, 2))
        assert result["status"] == "dry_run", result
        assert "nothing written" in result["reason"]
        assert plant.writes() == (0, 0)
        assert await plant.current(FEED) == current


async def test_critical_setpoint_needs_arm_then_execute(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_plant(tmp_path, mosquitto) as plant:
        current = await plant.current("dry.press_sp")
        target = current - 20.0
        armed = await plant.send("dry.press_sp", target, operator="shift-lead", step=CommandStep.ARM)
        assert armed["status"] == "armed", armed
        assert plant.writes() == (0, 0)
        # Another value than the armed one is refused; the arm stays for the right execute.
        other = await plant.send("dry.press_sp", target - 5, operator="shift-lead", step=CommandStep.EXECUTE)
        assert (other["status"], other["code"]) == ("rejected", "not_armed")
        done = await plant.send("dry.press_sp", target, operator="shift-lead", step=CommandStep.EXECUTE)
        assert done["status"] == "accepted", done
        assert done["readback"] == pytest.approx(target)
        assert plant.writes() == (1, 0)


async def test_linegate_command_cli_against_a_running_gateway(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running_plant(tmp_path, mosquitto) as plant:
        current = await plant.current("scr.vib_freq_sp")
        config_path = tmp_path / "line.toml"
        config_path.write_text(
            line_text(tmp_path, 4840, mosquitto.port, enabled=True, dry_run=False), encoding="utf-8"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "command",
            "--config",
            str(config_path),
            "--operator",
            "operator",
            "scr.vib_freq_sp",
            str(current + 1.0),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["status"] == "accepted"
        assert result["readback"] == pytest.approx(current + 1.0)
        assert plant.writes() == (1, 0)

        # Rejected: exit status 3, the reason printed.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "command",
            "--config",
            str(config_path),
            "scr.vib_freq_sp",
            "99",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 3
        assert json.loads(out)["code"] in ("out_of_range", "wrong_role")
        assert plant.writes() == (1, 0)


async def test_audit_log_one_record_per_command_in_order_and_replays_refused_after_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    ids = [f"audit-{i}" for i in range(5)]
    async with running_plant(tmp_path, mosquitto) as plant:
        jacket = await plant.current("dry.jacket_temp_sp")
        # Accepted and rejected in turn; each accepted one on a setpoint not written before.
        sent = [
            ("bag.target_mass_sp", 700.0),  # rejected: stale interlock
            ("scr.vib_freq_sp", 30.0),
            ("shr.feed_rate_sp", 5.0),  # rejected: out of range
            ("dry.jacket_temp_sp", jacket + 1.0),
            ("ac.air_vel_sp", 6.0),  # rejected: interlock false
        ]
        results = [await plant.send(sp, v, request_id=rid) for rid, (sp, v) in zip(ids, sent, strict=True)]
        assert [r["status"] for r in results] == ["rejected", "accepted", "rejected", "accepted", "rejected"]
        writes = plant.writes()
    records = audit_records(tmp_path)
    assert [r["request_id"] for r in records] == ids
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["decision"] for r in records] == [r["status"] for r in results]
    accepted = records[1]
    assert (accepted["operator"], accepted["written"], accepted["readback"]) == ("operator", 30.0, 30.0)
    assert accepted["previous"] is not None
    assert not math.isnan(accepted["previous"])

    # A restarted gateway remembers: the same request id is refused, even with a fresh issue time.
    async with running_plant(tmp_path, mosquitto, wait_for_interlocks=False) as plant:
        before = plant.writes()
        replay = await plant.send("scr.vib_freq_sp", 30.0, request_id=ids[1])
        assert (replay["status"], replay["code"]) == ("rejected", "replayed"), replay
        assert plant.writes() == before == (0, 0)
    records = audit_records(tmp_path)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["code"] == "replayed"
    assert writes == (2, 0)


def s12_early() -> Scenario:
    """S12 with its O2 ingress at plant minute 6 instead of hour 6 (same physics, shorter wait)."""
    s12 = load_scenario("S12")
    data = s12.model_dump(mode="json")
    for event in data["events"]:
        event["at_h"] = 0.1
    return parse_scenario(data, "S12 (early)")


async def test_s12_feed_writes_rejected_while_tripped_accepted_after_recovery(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with running_plant(tmp_path, mosquitto, scenario=s12_early(), wait_for_interlocks=False) as plant:
        trip = plant.config.tag_index("il.feed_trip")
        last = plant.runtime.pipeline.last_value
        await wait_until("the PLC's feed trip, seen by the gateway", lambda: last[trip] == 1.0, 60)
        current = await plant.current(FEED)
        tripped = await plant.send(FEED, round(current - 0.05, 2))
        assert (tripped["status"], tripped["code"]) == ("rejected", "interlock_false"), tripped
        assert plant.writes() == (0, 0)

        await wait_until("the trip reset", lambda: last[trip] == 0.0, 120)
        await wait_until("O2 below 2 % for 60 s on both analysers", plant.feed_interlocks_hold, 120)
        recovered = await plant.send(FEED, round(current - 0.05, 2))
        assert recovered["status"] == "accepted", recovered
        assert plant.writes() == (1, 0)
