"""The `[control]` section of the line config: which setpoints the gateway may write, and how.

Deny by default: control is off unless `enabled = true`, and only setpoints listed under
`[control.setpoints."<name>"]` can ever be written, each with its engineering range, largest
step, ramp limit, minimum interval between writes, the roles allowed to change it, and the
interlocks (conditions over live tags) that must hold on fresh, good data. Everything that can
be checked without the controller is checked when the file loads; the node's EURange is
compared with the configured range when the writer first reaches the controller.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.config_base import IDENT, TAG_NAME, Model

# An OPC-UA NodeId in its string form (ns=2;s=..., i=..., g=..., b=...).
NODE_ID = r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$"

Comparison = Literal["<", "<=", ">", ">=", "==", "!="]


class Interlock(Model):
    """A condition over one live tag: `tag op value`, held for `hold_s` of plant time."""

    tag: Annotated[str, Field(pattern=TAG_NAME)]
    op: Comparison
    value: float
    # The condition must have held continuously, on good samples, for this long (source time).
    hold_s: float = Field(default=0.0, ge=0, le=86_400)
    # The newest good sample must be at most this old (gateway wall clock), else the input is
    # stale and the interlock false.
    fresh_s: float = Field(default=5.0, gt=0, le=3600)
    description: str = ""

    def text(self) -> str:
        held = f" for {self.hold_s:g} s" if self.hold_s else ""
        return f"{self.tag} {self.op} {self.value:g}{held}"


class Setpoint(Model):
    """One writable setpoint: where it lives and the limits every write must respect."""

    node_id: Annotated[str, Field(pattern=NODE_ID)]
    unit: str
    range: tuple[float, float]
    # Largest change in one write, from the controller's current value (units); None: the range.
    max_step: float | None = Field(default=None, gt=0)
    # Largest average rate of change since the previous accepted write (units per minute).
    max_rate_per_min: float | None = Field(default=None, gt=0)
    # Shortest time between two accepted writes (wall seconds).
    min_interval_s: float = Field(default=0.0, ge=0)
    # Roles whose operators may change it; at least one.
    roles: list[Annotated[str, Field(pattern=IDENT)]] = Field(min_length=1)
    interlocks: list[Interlock] = Field(default_factory=list)
    # Two steps: an "arm" command, then an "execute" command with the same value within
    # `control.arm_window_s`.
    critical: bool = False
    # Read-back may differ from the written value by this much (units); None: the writer's
    # default for the node's type.
    tolerance: float | None = Field(default=None, ge=0)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Setpoint:
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"range: min ({lo}) must be below max ({hi})")
        if self.max_step is not None and self.max_step > hi - lo:
            raise ValueError(f"max_step: {self.max_step} is larger than the whole range ({hi - lo})")
        return self


class Operator(Model):
    """A person (or system) allowed to send commands, and how their commands are authenticated."""

    roles: list[Annotated[str, Field(pattern=IDENT)]] = Field(min_length=1)
    # Name of the environment variable holding this operator's HMAC key (never the key itself).
    # When set, every command from this operator must carry a valid signature.
    key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None


class Control(Model):
    # Off in the shipped config: the gateway writes nothing until someone turns this on.
    enabled: bool = False
    # Evaluate and report every command, but never write.
    dry_run: bool = False
    # The OPC-UA driver (from [drivers]) whose server holds the setpoints.
    driver: Annotated[str, Field(pattern=IDENT)] | None = None
    # A command older than this (by its issued_at, gateway wall clock) is expired; commands
    # without issued_at are refused while control is enabled.
    max_age_s: float = Field(default=30.0, gt=0, le=3600)
    # How far in the future an issued_at may be (clocks of operator stations drift).
    max_clock_skew_s: float = Field(default=5.0, ge=0, le=300)
    # An armed critical command must be executed within this many seconds.
    arm_window_s: float = Field(default=30.0, gt=0, le=600)
    # Every command must be signed, even from operators without key_env (who then cannot
    # send any).
    require_signature: bool = False
    # Append-only audit trail (JSONL, fsync per record). Kept across restarts: the guard's
    # history (request ids seen, last writes) is rebuilt from it. None: audit.jsonl in the
    # state directory ($STATE_DIRECTORY under systemd, else ~/.local/state/linegate).
    audit_log: str | None = None
    operators: dict[Annotated[str, Field(pattern=IDENT)], Operator] = Field(default_factory=dict)
    setpoints: dict[Annotated[str, Field(pattern=TAG_NAME)], Setpoint] = Field(default_factory=dict)


__all__ = ["Comparison", "Control", "Interlock", "Operator", "Setpoint"]
