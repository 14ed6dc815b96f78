"""The line config: one TOML file describes a line, loaded into typed, validated models.

Unknown keys are errors everywhere (`extra="forbid"`). Cross-field rules (ranges, drivers
named by tags, one feed and one black-mass stream, window longer than the delay) are checked
at load time, so a running gateway never discovers a config mistake. `load_config` turns every
problem into a `ConfigError` that names the file, the key path and the reason.
"""

from __future__ import annotations

import re
import tomllib
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, ValidationError, model_validator

from gateway.config_base import IDENT, TAG_NAME, Model
from gateway.control_config import Control
from gateway.detector_config import Detectors, Kpis
from gateway.errors import ConfigError

# Mass units the balance understands, as factors to tonnes (totals) or tonnes/hour (rates).
TOTAL_UNITS: dict[str, float] = {"t": 1.0, "kg": 1e-3}
RATE_UNITS: dict[str, float] = {"t/h": 1.0, "kg/h": 1e-3, "kg/s": 3.6}


class Nameplate(Model):
    capacity: float = Field(gt=0, description="Nameplate capacity per year, in `unit`.")
    unit: Literal["t", "short_ton"] = "t"
    basis: Literal["feed", "black_mass"] = "feed"
    hours_per_year: float = Field(default=8000.0, gt=0, le=8784)

    @property
    def tonnes_per_hour(self) -> float:
        factor = 0.90718474 if self.unit == "short_ton" else 1.0
        return self.capacity * factor / self.hours_per_year


class Line(Model):
    name: Annotated[str, Field(pattern=IDENT)]
    site: Annotated[str, Field(pattern=IDENT)]
    area: Annotated[str, Field(pattern=IDENT)]
    nameplate: Nameplate


class MqttTls(Model):
    # PEM files. The CA verifies the broker; a client certificate and key authenticate us.
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _check(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: give cert_file and key_file together, or neither")
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{key}: no such file: {path}")
        return self


class MqttConnection(Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    # Name of an environment variable holding the password: secrets stay out of config files.
    password_env: str | None = None
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # "auto" tries MQTT 5 and falls back to 3.1.1 when the broker refuses the protocol version.
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    tls: MqttTls | None = None


SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")


class OpcUaSecurity(Model):
    """How the session is secured and who we are to the server.

    Certificates live in a PKI directory (`pki_dir`, default `$STATE_DIRECTORY/pki`, else
    `~/.local/state/linegate/pki`): `own/` holds our application certificate (created on first
    run), `trusted/` the server certificates we accept, `rejected/` the ones we refused (an
    unknown server certificate lands there; `linegate certs trust` promotes it).
    """

    policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    identity: Literal["anonymous", "username", "certificate"] = "anonymous"
    username: str | None = None
    # Name of an environment variable holding the password: secrets stay out of config files.
    password_env: str | None = None
    pki_dir: str | None = None
    application_uri: str = "urn:linegate:gateway"
    # Warn this many days before our own or the server's certificate expires.
    expiry_warning_days: int = Field(default=30, ge=1, le=365)

    @model_validator(mode="after")
    def _check(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                "mode: policy 'None' goes with mode 'None', and a secure policy needs Sign or SignAndEncrypt"
            )
        if self.identity == "username" and (self.username is None or self.password_env is None):
            raise ValueError("username: identity 'username' needs username and password_env")
        if self.identity != "username" and (self.username is not None or self.password_env is not None):
            raise ValueError(
                f"username: identity is '{self.identity}'; username/password_env are only for 'username'"
            )
        return self


class OpcUaDriver(Model):
    type: Literal["opcua"]
    url: Annotated[str, Field(pattern=r"^opc\.tcp://[^/\s]+(:\d+)?(/\S*)?$")]
    publishing_interval_ms: int = Field(default=200, ge=10, le=60_000)
    # Heartbeat: the server's clock (ServerStatus.CurrentTime) is read this often; a failed or
    # unanswered read within `heartbeat_timeout_s` is a lost session (catches a frozen server).
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    heartbeat_timeout_s: float = Field(default=3.0, gt=0, le=120)
    request_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Iterator queue between asyncua and the driver; overflow is counted, never silent.
    queue_maxsize: int = Field(default=10_000, ge=10)
    # Monitored items are created this many per CreateMonitoredItems call ...
    items_per_call: int = Field(default=100, ge=1, le=10_000)
    # ... and spread over as many subscriptions as this cap calls for.
    max_items_per_subscription: int = Field(default=1000, ge=1, le=100_000)
    # A tag not updated for this long (wall seconds) is flagged stale; a tag can override it.
    # None: only a lost session makes tags stale.
    stale_after_s: float | None = Field(default=30.0, gt=0)
    security: OpcUaSecurity = OpcUaSecurity()

    @model_validator(mode="after")
    def _check(self) -> OpcUaDriver:
        if self.heartbeat_timeout_s < self.heartbeat_s:
            raise ValueError("heartbeat_timeout_s: must be at least heartbeat_s")
        return self


class OpcUaMonitoring(Model):
    """Per-tag OPC-UA monitoring: a subscription's monitored item, or polling.

    `mode = "subscribe"` asks the server for a monitored item with this sampling interval,
    queue size and DataChangeFilter. Where the server refuses the filter (BadFilterNotAllowed,
    BadMonitoredItemFilterUnsupported) the tag falls back to polling and the deadband is
    applied here; `mode = "poll"` polls from the start (servers with broken subscriptions).
    """

    mode: Literal["subscribe", "poll"] = "subscribe"
    # None: the driver's publishing interval.
    sampling_interval_ms: float | None = Field(default=None, ge=0, le=3_600_000)
    # 1: latest value per publishing interval (totalizers lose no mass: the next value has it).
    queue_size: int = Field(default=1, ge=1, le=10_000)
    trigger: Literal["status", "status_value", "status_value_timestamp"] = "status_value"
    deadband: Literal["none", "absolute", "percent"] = "none"
    # Units of the tag for "absolute"; percent of the EURange (the tag's range) for "percent".
    deadband_value: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> OpcUaMonitoring:
        if self.deadband == "none" and self.deadband_value != 0:
            raise ValueError("deadband_value: set deadband = 'absolute' or 'percent' to use it")
        if self.deadband == "percent" and self.deadband_value > 100:
            raise ValueError("deadband_value: a percent deadband is at most 100")
        return self


MQTT_FILTER = r"^([^+#/]*|\+)(/([^+#/]*|\+))*(/#)?$|^#$"
# A dotted path into a JSON payload: object keys or list indices, no empty part.
JSON_PATH = r"^[^.]+(\.[^.]+)*$"


class TopicRoute(Model):
    """Maps every topic matching a wildcard filter to a tag named from its `+` segments.

    `topic = "plant/line1/gas/+"` with `tag = "gas.{1}"` sends `plant/line1/gas/h2` to tag
    `gas.h2`. The tag must still be declared in [[tags]] (unit, range); a matching topic that
    names no declared tag is counted as unexpected, never guessed.
    """

    topic: Annotated[str, Field(pattern=MQTT_FILTER)]
    tag: str

    @model_validator(mode="after")
    def _check(self) -> TopicRoute:
        wildcards = self.topic.split("/").count("+")
        if wildcards == 0:
            raise ValueError("topic: a route needs at least one '+' wildcard; use the tag's own topic")
        for ref in re.findall(r"\{(\d+)\}", self.tag):
            if not 1 <= int(ref) <= wildcards:
                raise ValueError(f"tag: {{{ref}}} refers to a '+' segment the topic does not have")
        if not re.search(r"\{\d+\}", self.tag):
            raise ValueError("tag: the template must use at least one {N} segment")
        return self


class MqttInputDriver(Model):
    type: Literal["mqtt"]
    connection: MqttConnection = MqttConnection()
    qos: Literal[0, 1] = 1
    max_payload_bytes: int = Field(default=4096, ge=16)
    routes: list[TopicRoute] = Field(default_factory=list)
    # IoT sensors often report only on change, so silence is not stale unless configured.
    stale_after_s: float | None = Field(default=None, gt=0)


Driver = Annotated[OpcUaDriver | MqttInputDriver, Field(discriminator="type")]


class Despike(Model):
    """Hampel despiking of a rate or analog channel (domain.md: window 7-21, 3 sigma, MAD x 1.4826).

    A sample is first judged causally against the median of the tag's previous `window`
    samples: an outlier is replaced by that median and marked UNCERTAIN at once. Whether it was
    a spike (counted, alarmed when frequent) is decided one sample later from both sides
    (`gateway.spike_confirmation`), so the first sample of a real step is not one. Totalizers
    are never despiked. `floor` is the smallest scale in tag units (the reading's resolution or
    noise), so a flat or quantised signal does not flag every step; `floor_rel` a scale
    relative to the level, for instruments whose noise is a share of the reading (a low reading
    is then judged on its own noise, not on the noise at full load)."""

    window: int = Field(default=7, ge=3, le=21)
    sigmas: float = Field(default=3.0, gt=0)
    floor: float = Field(default=0.0, ge=0)
    floor_rel: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> Despike:
        if self.window % 2 == 0:
            raise ValueError("window: the Hampel window must be odd")
        return self


class Tag(Model):
    name: Annotated[str, Field(pattern=TAG_NAME)]
    driver: str
    unit: str
    range: tuple[float, float]
    description: str = ""
    node_id: str | None = None
    # OPC-UA only: sampling, queue, filter or polling (defaults: see OpcUaMonitoring).
    monitoring: OpcUaMonitoring | None = None
    # A tag not updated for this long (wall seconds) is flagged stale; None: the driver's value.
    stale_after_s: float | None = Field(default=None, gt=0)
    topic: Annotated[str, Field(pattern=r"^[^+#]+$")] | None = None
    # MQTT payload shape:
    #   json    an object; value, timestamp and quality found at the *_path keys below
    #   number  a bare number (the receive time stands in for the source time: UNCERTAIN)
    #   senml   a SenML pack (RFC 8428, JSON): the record named `senml_name` (default: the tag
    #           name), time from bt + t
    payload: Literal["json", "number", "senml"] = "json"
    # Dotted paths into a JSON payload ("data.v", "readings.0.value").
    value_path: Annotated[str, Field(pattern=JSON_PATH)] = "value"
    time_path: Annotated[str, Field(pattern=JSON_PATH)] | None = "ts"  # None: no source time (UNCERTAIN)
    time_format: Literal["epoch_s", "epoch_ms", "iso8601"] = "epoch_s"
    quality_path: Annotated[str, Field(pattern=JSON_PATH)] | None = "quality"
    senml_name: str | None = None
    # Operator topics publish a changed value only when it moved by more than this (units).
    deadband: float = Field(default=0.0, ge=0)
    # Role in the mass balance. `signal` is displayed and stored but not balanced.
    role: Literal["signal", "feed", "black_mass"] = "signal"
    # For balance streams: a totalizer (monotone, preferred) or a rate.
    kind: Literal["total", "rate"] | None = None
    # 1-sigma relative measurement uncertainty (instrument class), used in the yield's band.
    sigma_rel: float = Field(default=0.01, gt=0, lt=0.5)
    # Totalizers: the value at which the PLC's counter wraps to zero (tag units), so a wrap
    # counts exactly; and the highest plausible flow (tag units per hour), above which a jump
    # is a glitch or rebase and is not counted. Without them a wrap is handled as a reset.
    rollover: float | None = Field(default=None, gt=0)
    max_rate: float | None = Field(default=None, gt=0)
    despike: Despike | None = None

    @model_validator(mode="after")
    def _check(self) -> Tag:
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"range: min ({lo}) must be below max ({hi})")
        if self.node_id is not None and self.topic is not None:
            raise ValueError("give node_id (OPC-UA) or topic (MQTT), not both")
        if self.monitoring is not None and self.node_id is None:
            raise ValueError("monitoring: only OPC-UA tags (with a node_id) have monitoring settings")
        if self.role != "signal":
            if self.kind is None:
                raise ValueError(f"kind: a '{self.role}' stream needs kind = 'total' or 'rate'")
            units = TOTAL_UNITS if self.kind == "total" else RATE_UNITS
            if self.unit not in units:
                raise ValueError(
                    f"unit: '{self.unit}' is not a mass {self.kind} unit; use one of {sorted(units)}"
                )
        elif self.kind is not None:
            raise ValueError("kind: only feed and black_mass streams have a kind")
        if self.kind != "total" and (self.rollover is not None or self.max_rate is not None):
            raise ValueError("rollover: rollover and max_rate are for totalizers (kind = 'total')")
        if self.kind == "total" and self.despike is not None:
            raise ValueError("despike: a totalizer is never despiked (its deltas are the mass)")
        return self

    @property
    def to_tonnes(self) -> float:
        """Factor from the tag's unit to tonnes (totals) or tonnes/hour (rates)."""
        if self.kind == "total":
            return TOTAL_UNITS[self.unit]
        if self.kind == "rate":
            return RATE_UNITS[self.unit]
        return 1.0


class YieldSettings(Model):
    window_h: float = Field(default=4.0, gt=0, le=168)
    transport_delay_min: float = Field(ge=0, le=24 * 60)
    basis: Literal["wet"] = "wet"
    min_coverage: float = Field(default=0.9, gt=0, le=1)
    # Resolution of the plant-time grid the windowed totals live on.
    bin_s: float = Field(default=10.0, ge=0.1, le=600)
    # A longer silence between two samples of a balance stream makes that stretch not good.
    max_gap_s: float = Field(default=120.0, gt=0)
    # Shift calendar for the per-shift yield: shifts of shift_h hours from shift_start, local
    # wall time in `timezone` (an IANA name), every day.
    shift_h: float = Field(default=8.0, gt=0, le=24)
    shift_start: dt_time = dt_time(6, 0)
    timezone: str = "UTC"
    # Per-lot yield: the tag carrying the number of the lot being fed (a change starts the next
    # lot), and the residence-time model that attributes black mass to lots: a plug delay
    # (conveyors, screen) and a dryer of `rtd_tanks` mixed tanks taking the rest of the delay.
    lot_tag: str | None = None
    rtd_tanks: int = Field(default=4, ge=1, le=50)
    rtd_plug_min: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> YieldSettings:
        if self.window_h * 60 < 2 * self.transport_delay_min:
            raise ValueError(
                f"window_h: a {self.window_h} h window is shorter than twice the transport delay "
                f"({self.transport_delay_min} min); the yield would follow the dryer, not the line"
            )
        if self.max_gap_s < self.bin_s:
            raise ValueError("max_gap_s: must be at least bin_s")
        if self.rtd_plug_min >= self.transport_delay_min and self.lot_tag is not None:
            raise ValueError("rtd_plug_min: the plug part must be shorter than the transport delay")
        if (24 / self.shift_h) != round(24 / self.shift_h):
            raise ValueError(f"shift_h: {self.shift_h} h does not divide a day into whole shifts")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone '{self.timezone}' (use an IANA name)") from None
        return self


class MqttOutput(Model):
    connection: MqttConnection = MqttConnection()
    # ISA-95 unified namespace root: <prefix>/<site>/<area>/<line>/...
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "linegate"
    qos: Literal[0, 1] = 1
    # At most one publish per topic per this many wall seconds (latest value wins).
    min_interval_s: float = Field(default=1.0, ge=0)
    # Listen for operator commands on <base>/commands/<setpoint>/set and answer on .../result
    # (or the MQTT 5 response topic). Until guarded control exists every command is refused.
    commands: bool = True


class InfluxOutput(Model):
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    org: str = "linegate"
    # For InfluxDB 1.x behind the v2 compatibility layer: "database" or "database/retention".
    bucket: str
    token_env: str | None = None
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    flush_interval_ms: int = Field(default=1000, ge=10)
    # The durable buffer (SQLite, WAL): a point is accepted once it is on disk there, and leaves
    # it only once InfluxDB confirmed it. None: <state dir>/influxdb-buffer.sqlite.
    buffer_path: Path | None = None
    # Caps: beyond either, the oldest points are dropped, counted and alarmed (buffer_dropped).
    # 1 GiB holds about two weeks of the shipped line's points (~3 M points a day, ~170 B each).
    buffer_max_mb: float = Field(default=1024.0, gt=0)
    buffer_max_age_h: float = Field(default=14 * 24.0, ge=0)  # 0: no age cap
    # Batches InfluxDB refuses as malformed (4xx other than auth) go here with the reason, so one
    # poison batch neither blocks the buffer nor vanishes. None: <state dir>/influxdb-dead-letter.jsonl.
    dead_letter_path: Path | None = None
    dead_letter_max_mb: float = Field(default=100.0, gt=0)  # then rotated to <path>.1 (one generation)
    # Every point carries an int field `seq`: its acceptance number in the buffer, contiguous and
    # never reused, so gaps (loss) and repeats are visible in InfluxDB itself.
    sequence_field: bool = True
    # A 429/503 with Retry-After is honoured up to this long before trying again.
    retry_after_max_s: float = Field(default=300.0, gt=0)


class Outputs(Model):
    mqtt: MqttOutput | None = None
    influxdb: InfluxOutput | None = None


class Runtime(Model):
    tick_ms: int = Field(default=250, ge=10, le=10_000)
    bus_capacity: int = Field(default=65_536, ge=1024)
    # First reconnect delay and its cap, in wall seconds; jitter is added.
    backoff_initial_s: float = Field(default=0.5, gt=0)
    # Short on purpose: a broker or PLC back after a restart is used again within ~5 s.
    backoff_max_s: float = Field(default=2.0, gt=0)
    # The gateway's own metrics (historian `gateway`/`driver` points) every this many wall seconds.
    metrics_interval_s: float = Field(default=10.0, gt=0)


class LineConfig(Model):
    line: Line
    drivers: dict[Annotated[str, Field(pattern=IDENT)], Driver]
    tags: list[Tag] = Field(min_length=1)
    yield_: YieldSettings = Field(alias="yield")
    outputs: Outputs = Outputs()
    runtime: Runtime = Runtime()
    control: Control = Control()
    detectors: Detectors = Detectors()
    kpis: Kpis = Kpis()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> LineConfig:
        seen: set[str] = set()
        for i, tag in enumerate(self.tags):
            where = f"tags[{i}] ({tag.name})"
            if tag.name in seen:
                raise ValueError(f"{where}: duplicate tag name")
            seen.add(tag.name)
            driver = self.drivers.get(tag.driver)
            if driver is None:
                raise ValueError(f"{where}.driver: no driver named '{tag.driver}' in [drivers]")
            if driver.type == "opcua" and tag.node_id is None:
                raise ValueError(f"{where}.node_id: required for OPC-UA driver '{tag.driver}'")
            if driver.type == "mqtt" and tag.topic is None and not driver.routes:
                raise ValueError(f"{where}.topic: required for MQTT driver '{tag.driver}' (it has no routes)")
        for role in ("feed", "black_mass"):
            n = sum(1 for t in self.tags if t.role == role)
            if n != 1:
                raise ValueError(f"tags: exactly one tag must have role = '{role}' (found {n})")
        self._check_control(seen)
        for section, names in (("detectors", self.detectors.tag_names()), ("kpis", self.kpis.tag_names())):
            for key, name in names:
                if name not in seen:
                    raise ValueError(f"{section}.{key}: no tag named '{name}' in [[tags]]")
        if self.yield_.lot_tag is not None and self.yield_.lot_tag not in seen:
            raise ValueError(f"yield.lot_tag: no tag named '{self.yield_.lot_tag}' in [[tags]]")
        ref = self.detectors.feed_reference_tag
        if ref is not None and next(t for t in self.tags if t.name == ref).unit not in TOTAL_UNITS:
            raise ValueError(
                f"detectors.feed_reference_tag: '{ref}' must be a mass totalizer in {sorted(TOTAL_UNITS)}"
            )
        return self

    def _check_control(self, tag_names: set[str]) -> None:
        c = self.control
        if c.setpoints and c.driver is None:
            raise ValueError("control.driver: name the OPC-UA driver whose server holds the setpoints")
        if c.driver is not None:
            driver = self.drivers.get(c.driver)
            if driver is None:
                raise ValueError(f"control.driver: no driver named '{c.driver}' in [drivers]")
            if driver.type != "opcua":
                raise ValueError(
                    f"control.driver: '{c.driver}' is not an OPC-UA driver; setpoints are written over OPC-UA"
                )
        measured = {t.node_id: t.name for t in self.tags if t.driver == c.driver and t.node_id is not None}
        for name, sp in c.setpoints.items():
            where = f"control.setpoints.{name}"
            if measured.get(sp.node_id, name) != name:
                # Measured values, safety signals and interlock states are read, never written.
                # (A setpoint may be read back as a tag of its own name, for display.)
                raise ValueError(
                    f"{where}.node_id: {sp.node_id} is the input tag '{measured[sp.node_id]}'; "
                    "only setpoints are writable"
                )
            for i, il in enumerate(sp.interlocks):
                if il.tag not in tag_names:
                    raise ValueError(f"{where}.interlocks[{i}].tag: no tag named '{il.tag}' in [[tags]]")
            holders = [op for op, o in c.operators.items() if set(o.roles) & set(sp.roles)]
            if c.enabled and not holders:
                raise ValueError(f"{where}.roles: no operator in control.operators has any of {sp.roles}")

    def tag_index(self, name: str) -> int:
        for i, tag in enumerate(self.tags):
            if tag.name == name:
                return i
        raise KeyError(name)

    def stale_after_s(self, tag: Tag) -> float | None:
        """How long the tag may stay silent before it is flagged stale (None: never)."""
        if tag.stale_after_s is not None:
            return tag.stale_after_s
        return self.drivers[tag.driver].stale_after_s

    def stream_tag(self, role: Literal["feed", "black_mass"]) -> Tag:
        return next(t for t in self.tags if t.role == role)


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for pos, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif pos == 2 and loc[0] == "drivers" and item in ("opcua", "mqtt"):
            continue  # pydantic names the union branch; the user never wrote it
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts).replace("yield_", "yield") or "(top level)"


_CROSS_FIELD = re.compile(r"^Value error, (?P<key>[\w\[\]. ()]+?): (?P<reason>.*)$", re.S)


def parse_config(data: dict[str, object], path: str = "<config>") -> LineConfig:
    try:
        return LineConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            key = _key_path(tuple(err["loc"]))
            reason = err["msg"]
            m = _CROSS_FIELD.match(reason)
            if m:
                # A validator named a sub-key in its message: append it to the path.
                sub = m.group("key")
                key = f"{key}.{sub}" if key != "(top level)" and not sub.startswith(key) else sub
                reason = m.group("reason")
            elif err["type"] == "extra_forbidden":
                reason = "unknown key"
            problems.append((key, reason))
        raise ConfigError(path, problems) from None


def load_config(path: str | Path) -> LineConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", exc.strerror or str(exc))]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("(syntax)", str(exc))]) from None
    return parse_config(data, str(p))
