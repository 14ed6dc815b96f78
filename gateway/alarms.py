"""Alarms: named conditions that are active or not, and the events when they change.

Each tick the pipeline (and the runtime, for driver health) states which conditions hold now;
`AlarmBoard.update` compares that with what was active and returns the transitions. Outputs
publish the active set as retained state and the transitions as events, so an HMI connecting
late sees what is active, and a historian sees when each alarm came and went.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    WARNING = "warning"
    ALARM = "alarm"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm condition. `id` is stable (`kind:subject`) and safe as an MQTT topic level."""

    id: str
    kind: str  # e.g. "tag_bad", "tag_stale", "driver_down", "yield_uncertain"
    subject: str  # the tag, driver or KPI concerned
    severity: Severity
    text: str
    since: float  # plant time (epoch s) the condition was first seen


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    alarm: Alarm
    active: bool  # True: raised; False: cleared
    t: float  # plant time of the transition


def alarm_id(kind: str, subject: str) -> str:
    return f"{kind}:{subject}"


class AlarmBoard:
    """The set of active alarms, changed only through `update`."""

    def __init__(self) -> None:
        self.active: dict[str, Alarm] = {}

    def update(self, conditions: dict[str, tuple[str, str, Severity, str]], t: float) -> list[AlarmEvent]:
        """`conditions` maps alarm id -> (kind, subject, severity, text) for what holds now.

        Raises the new ones (with `since` = t), clears the ones no longer present, and returns
        those transitions in a stable order (cleared first, then raised, each sorted by id).
        """
        events: list[AlarmEvent] = []
        for aid in sorted(set(self.active) - set(conditions)):
            events.append(AlarmEvent(self.active.pop(aid), active=False, t=t))
        for aid in sorted(set(conditions) - set(self.active)):
            kind, subject, severity, text = conditions[aid]
            alarm = Alarm(aid, kind, subject, severity, text, since=t)
            self.active[aid] = alarm
            events.append(AlarmEvent(alarm, active=True, t=t))
        return events
