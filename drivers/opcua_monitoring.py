"""What to ask the server for, per tag: monitored-item requests, filters, and client-side filtering.

Each OPC-UA tag gets a monitored item (sampling interval, queue size, DataChangeFilter with its
trigger and deadband) or is polled. Items are created in batches of `items_per_call` and
spread over subscriptions of at most `max_items_per_subscription`, because large single calls
and subscriptions are where servers (and asyncua's) time out or refuse.

The client handle of every item is its tag's index in the line config, so a notification
finds its tag without a lookup by node id. When a server refuses a filter the tag is polled
and `ClientFilter` applies the same trigger and deadband here, against the last value
*reported* (the spec's rule, which asyncua's server does not follow: it compares with the
previous sample, so a slow ramp never crosses its deadband).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from asyncua import ua

from drivers.opcua_values import Reading
from gateway.config import OpcUaDriver, OpcUaMonitoring
from gateway.ports import BoundTag

DEFAULT_MONITORING = OpcUaMonitoring()

# Statuses meaning "not this filter": the tag is then polled with the filter applied here.
FILTER_REFUSED = frozenset(
    {
        ua.StatusCodes.BadFilterNotAllowed,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadMonitoredItemFilterInvalid,
        ua.StatusCodes.BadDeadbandFilterInvalid,
    }
)

_TRIGGERS = {
    "status": ua.DataChangeTrigger.Status,
    "status_value": ua.DataChangeTrigger.StatusValue,
    "status_value_timestamp": ua.DataChangeTrigger.StatusValueTimestamp,
}
_DEADBANDS = {
    "none": ua.DeadbandType.None_,
    "absolute": ua.DeadbandType.Absolute,
    "percent": ua.DeadbandType.Percent,
}

T = TypeVar("T")


def monitoring_of(bt: BoundTag) -> OpcUaMonitoring:
    return bt.tag.monitoring or DEFAULT_MONITORING


def sampling_ms(m: OpcUaMonitoring, settings: OpcUaDriver) -> float:
    return (
        float(settings.publishing_interval_ms) if m.sampling_interval_ms is None else m.sampling_interval_ms
    )


def data_change_filter(m: OpcUaMonitoring) -> ua.DataChangeFilter | None:
    """The filter to request; None for the server default (StatusValue, no deadband)."""
    if m.trigger == "status_value" and m.deadband == "none":
        return None
    return ua.DataChangeFilter(
        Trigger=_TRIGGERS[m.trigger],
        DeadbandType=_DEADBANDS[m.deadband].value,
        DeadbandValue=m.deadband_value,
    )


def item_request(
    bt: BoundTag, settings: OpcUaDriver, *, with_filter: bool = True
) -> ua.MonitoredItemCreateRequest:
    m = monitoring_of(bt)
    assert bt.tag.node_id is not None  # config validation: OPC-UA tags have a node id
    params = ua.MonitoringParameters(
        ClientHandle=bt.index,
        SamplingInterval=sampling_ms(m, settings),
        QueueSize=m.queue_size,
        DiscardOldest=True,
    )
    flt = data_change_filter(m) if with_filter else None
    if flt is not None:
        params.Filter = flt
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(
            NodeId=ua.NodeId.from_string(bt.tag.node_id), AttributeId=ua.AttributeIds.Value
        ),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=params,
    )


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class ClientFilter:
    """Trigger and deadband applied to polled readings, against the last one reported."""

    trigger: str
    deadband: str
    threshold: float  # in the tag's units (a percent deadband is converted from the range)
    _last: Reading | None = None

    @staticmethod
    def of(bt: BoundTag) -> ClientFilter:
        m = monitoring_of(bt)
        lo, hi = bt.tag.range
        threshold = m.deadband_value * (hi - lo) / 100 if m.deadband == "percent" else m.deadband_value
        return ClientFilter(m.trigger, m.deadband, threshold)

    def passes(self, r: Reading) -> bool:
        last = self._last
        report = (
            last is None
            or last.status != r.status
            or (self.trigger != "status" and self._value_moved(last.value, r.value))
            or (self.trigger == "status_value_timestamp" and last.t != r.t)
        )
        if report:
            self._last = r
        return report

    def _value_moved(self, old: float, new: float) -> bool:
        if math.isnan(old) or math.isnan(new):
            return math.isnan(old) != math.isnan(new)
        if self.deadband == "none":
            return new != old
        return abs(new - old) > self.threshold
