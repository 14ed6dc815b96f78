"""Scenarios: what happens to the simulated line and when, one TOML file each.

A scenario names a run (`id`, `title`, `hours`), the pass criterion the gateway is judged on
(domain.md section 4, kept for the record), optional plant parameter overrides, optional hints
for the gateway under test, and a list of timed events:

    id = "S6"
    title = "Zero drift +1 % Qmax over 8 h on the feed weigher"
    hours = 24
    criterion = "Alarm < 2 h; bias correction brings Y back within S0 limits"

    [plant]                       # PlantParams fields (numbers, strings, booleans)
    feed_rate_sp_tph = 1.7

    [gateway]                     # what the gateway under test should be configured with
    transport_delay_factor = 1.5  # S8: configured delay = 1.5 x the true one

    [[events]]
    at_h = 4.0                    # plant hours after the start
    kind = "sensor.zero_drift"    # process.* -> the plant, sensor.* -> the sensor layer,
    signal = "bw_feed.rate"       # comm.* -> the simulator's servers and publishers
    ramp_per_h = 0.003125
    duration_h = 8

Every key of an event other than `at_h` and `kind` is a parameter of that kind. Events are
checked when the scenario is loaded (each kind's handler validates its parameters on a
scratch plant and sensor layer), so a typo fails before anything starts. Times of process and
sensor events are plant time; comm events start at plant time but their `duration_s` is wall
seconds, because a gateway reconnects in wall time whatever the simulation speed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
EVENT_KIND = r"^(process|sensor|comm)\.[a-z][a-z0-9_]*$"
COMM_KINDS = ("comm.opcua_stop", "comm.mqtt_stop", "comm.broker_stop")


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the file and every problem named."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"scenario {source}: " + "; ".join(problems))


class Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    at_h: float = Field(ge=0)
    kind: Annotated[str, Field(pattern=EVENT_KIND)]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def target(self) -> Literal["process", "sensor", "comm"]:
        return self.kind.split(".", 1)[0]  # type: ignore[return-value]

    @model_validator(mode="after")
    def _check(self) -> Event:
        if self.target == "comm":
            if self.kind not in COMM_KINDS:
                raise ValueError(f"kind: unknown comm event {self.kind!r}; known: {', '.join(COMM_KINDS)}")
            extra = self.params
            if (
                set(extra) != {"duration_s"}
                or not isinstance(extra["duration_s"], int | float)
                or extra["duration_s"] <= 0
            ):
                raise ValueError(f"{self.kind}: takes exactly duration_s (wall seconds, > 0)")
        return self


class GatewayHints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Configured transport delay = this x the plant's true delay (S8: a wrongly configured tau).
    transport_delay_factor: float = Field(default=1.0, gt=0, le=10)
    # Totalizer wrap values the plant's engineer would configure on the gateway's tags (S11:
    # the PLC's feed totalizer wraps at 10 t), by tag name, in the tag's unit.
    rollover: dict[str, float] = {}


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    title: str
    description: str = ""
    hours: float = Field(default=24.0, gt=0, le=24 * 31)
    criterion: str = ""
    plant: dict[str, float | int | str | bool] = {}
    gateway: GatewayHints = GatewayHints()
    events: list[Event] = []

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        times = [e.at_h for e in self.events]
        if times != sorted(times):
            raise ValueError("events: list them in time order (at_h ascending)")
        late = [e.kind for e in self.events if e.at_h > self.hours]
        if late:
            raise ValueError(f"events: {late} start after the scenario's {self.hours} h")
        return self

    def events_for(self, target: str) -> list[Event]:
        return [e for e in self.events if e.target == target]


NOMINAL = Scenario(id="S0", title="Nominal steady line, mixed lots", hours=24.0)


def resolve(name_or_path: str) -> Path:
    """A scenario id (`S6`, looked up in simulators/scenarios/) or a path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    matches = sorted(SCENARIO_DIR.glob(f"{name_or_path}_*.toml")) + sorted(
        SCENARIO_DIR.glob(f"{name_or_path}.toml")
    )
    if len(matches) != 1:
        known = ", ".join(sorted(f.stem.split("_", 1)[0] for f in SCENARIO_DIR.glob("*.toml")))
        raise ScenarioError(name_or_path, [f"no such scenario (known: {known}; or give a .toml path)"])
    return matches[0]


def load_scenario(name_or_path: str) -> Scenario:
    """Parse and validate a scenario; raises ScenarioError naming every problem."""
    path = resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(str(path), [exc.strerror or str(exc)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), [f"syntax: {exc}"]) from None
    return parse_scenario(data, str(path))


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {'unknown key' if err['type'] == 'extra_forbidden' else msg}")
        raise ScenarioError(source, problems) from None


def available() -> list[Scenario]:
    return [load_scenario(str(p)) for p in sorted(SCENARIO_DIR.glob("*.toml"))]
