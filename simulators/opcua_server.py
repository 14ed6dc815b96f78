"""The simulated line PLC: a real asyncua server serving the config's OPC-UA tags.

Address space: the namespace `urn:linegate:simulator` is registered first, so it gets index 2
and the config's node ids (`ns=2;s=<tag name>`) resolve; the index is verified and any tag
whose node id names another namespace is an error at start. One Object per asset (the tag
name's prefix before the first dot: bw_feed, shr, dry, cond, bm) holds Double variables with
the config's string NodeIds, each with EngineeringUnits (EUInformation, UNECE codes where the
unit is known) and EURange (the tag's range) properties, as an AnalogItemType would have.

Values are written server-side with the plant time as Source- and ServerTimestamp and status
Good. Setpoint variables (`ns=2;s=shr.feed_rate_sp`, ...) are writable by clients; a write
goes through a value setter that hands it to the plant, which validates it: an out-of-range or
non-finite value is refused with BadOutOfRange. asyncua turns an exception raised in a setter
into a ServiceFault for the whole Write request, so the client sees BadOutOfRange as the
request's result (asyncua's client raises `ua.uaerrors.BadOutOfRange`), not as a per-item
status: write setpoints one per request. Measured variables are read-only (anonymous users
get BadUserAccessDenied).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import NodeData

from gateway.config import LineConfig, OpcUaDriver, Tag
from simulators.plant import SetpointSpec

NAMESPACE_URI = "urn:linegate:simulator"
# ns=0 is the OPC Foundation's, ns=1 the server's own; ours must come next.
EXPECTED_NAMESPACE_INDEX = 2

# UNECE Recommendation 20 common codes for the units the line uses (OPC-UA Part 8 §5.6.3).
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
UNECE_CODES: dict[str, str] = {
    "t": "TNE",
    "kg": "KGM",
    "t/h": "E18",
    "kg/h": "E93",
    "kg/s": "KGS",
    "kW": "KWT",
    "A": "AMP",
    "vol%": "VP",
    "%": "P1",
    "°C": "CEL",
    "mbar": "MBR",
    "ppm": "59",
    "rpm": "RPM",
    "Hz": "HTZ",
}

log = logging.getLogger(__name__)


def unece_unit_id(code: str) -> int:
    """UnitId of a UNECE common code: its ASCII characters packed big-endian (Part 8)."""
    uid = 0
    for ch in code:
        uid = (uid << 8) | ord(ch)
    return uid


def eu_information(unit: str) -> ua.EUInformation:
    code = UNECE_CODES.get(unit)
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        # -1: "no UnitId available" for a unit outside the table; the display name still says it.
        UnitId=unece_unit_id(code) if code else -1,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


def asset_of(tag_name: str) -> str:
    return tag_name.split(".", 1)[0]


class SimOpcUaServer:
    """Serves one OPC-UA driver's tags (and, optionally, the plant setpoints)."""

    def __init__(
        self,
        config: LineConfig,
        driver_name: str,
        *,
        known_signals: Collection[str],
        setpoints: Mapping[str, SetpointSpec] | None = None,
        initial_setpoints: Mapping[str, float] | None = None,
        on_setpoint: Callable[[str, float], None] | None = None,
        initial_time: datetime | None = None,
    ) -> None:
        driver = config.drivers.get(driver_name)
        if not isinstance(driver, OpcUaDriver):
            raise ValueError(f"driver {driver_name!r} is not an OPC-UA driver in this config")
        self.url = driver.url
        self.driver_name = driver_name
        self.tags: list[Tag] = [t for t in config.tags if t.driver == driver_name]
        unknown = [t.name for t in self.tags if t.name not in known_signals]
        if unknown:
            raise ValueError(
                f"OPC-UA driver {driver_name!r}: the simulator has no signal for tag(s) {unknown}; "
                f"it knows {sorted(known_signals)}"
            )
        self._setpoints = dict(setpoints or {})
        if self._setpoints and (on_setpoint is None or initial_setpoints is None):
            raise ValueError("setpoints need on_setpoint and initial_setpoints")
        self._initial_setpoints = dict(initial_setpoints or {})
        self._on_setpoint = on_setpoint
        self._initial_time = initial_time
        self._last_time: datetime | None = initial_time
        self._server: Server | None = None
        self._nodeids: dict[str, ua.NodeId] = {}
        self.setpoint_nodeids: dict[str, ua.NodeId] = {}
        self.namespace_index: int | None = None
        self.setpoint_writes = 0
        self.setpoint_rejections = 0

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("linegate plant simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE_URI)
        if idx != EXPECTED_NAMESPACE_INDEX:
            raise RuntimeError(
                f"namespace {NAMESPACE_URI} got index {idx}, expected {EXPECTED_NAMESPACE_INDEX}: "
                "the config's node ids (ns=2;s=...) would not resolve"
            )
        self.namespace_index = idx

        objects = server.nodes.objects
        assets: dict[str, Any] = {}

        async def asset_node(name: str) -> Any:
            if name not in assets:
                assets[name] = await objects.add_object(ua.NodeId(name, idx), ua.QualifiedName(name, idx))
            return assets[name]

        # Until the first publish a reader must not mistake the placeholder for a measurement.
        waiting = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
        for tag in self.tags:
            assert tag.node_id is not None  # guaranteed by the config validator for OPC-UA tags
            nodeid = ua.NodeId.from_string(tag.node_id)
            if nodeid.NamespaceIndex != idx:
                raise ValueError(
                    f"tag {tag.name}: node_id {tag.node_id} is not in namespace {idx} ({NAMESPACE_URI})"
                )
            parent = await asset_node(asset_of(tag.name))
            var = await self._add_analog(parent, nodeid, tag.name, tag.unit, tag.range, tag.description)
            await server.write_attribute_value(var.nodeid, waiting)
            self._nodeids[tag.name] = nodeid

        for name, spec in self._setpoints.items():
            nodeid = ua.NodeId(name, idx)
            parent = await asset_node(asset_of(name))
            var = await self._add_analog(
                parent, nodeid, name, spec.unit, (spec.low, spec.high), spec.description
            )
            await server.write_attribute_value(
                nodeid, self._datavalue(self._initial_setpoints[name], self._initial_time)
            )
            await var.set_writable()
            server.set_attribute_value_setter(nodeid, self._make_setter(name))
            self.setpoint_nodeids[name] = nodeid

        self._server = server
        try:
            await server.start()
        except BaseException:
            self._server = None
            raise

    async def _add_analog(
        self,
        parent: Any,
        nodeid: ua.NodeId,
        name: str,
        unit: str,
        rng: tuple[float, float],
        description: str,
    ) -> Any:
        idx = nodeid.NamespaceIndex
        browse = name.split(".", 1)[1] if "." in name else name
        var = await parent.add_variable(
            nodeid, ua.QualifiedName(browse, idx), ua.Variant(0.0, ua.VariantType.Double)
        )
        # Make it an AnalogItemType, so generic clients know to look for the EU properties.
        await var.delete_reference(
            ua.NodeId(ua.ObjectIds.BaseDataVariableType), ua.ObjectIds.HasTypeDefinition, bidirectional=False
        )
        await var.add_reference(
            ua.NodeId(ua.ObjectIds.AnalogItemType), ua.ObjectIds.HasTypeDefinition, bidirectional=False
        )
        if description:
            await var.write_attribute(
                ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(description)))
            )
        # Standard property browse names live in ns=0; their node ids are ours (string, stable).
        await var.add_property(
            ua.NodeId(f"{name}.EngineeringUnits", idx),
            ua.QualifiedName("EngineeringUnits", 0),
            ua.Variant(eu_information(unit), ua.VariantType.ExtensionObject),
            datatype=ua.NodeId(ua.ObjectIds.EUInformation),
        )
        await var.add_property(
            ua.NodeId(f"{name}.EURange", idx),
            ua.QualifiedName("EURange", 0),
            ua.Variant(ua.Range(Low=float(rng[0]), High=float(rng[1])), ua.VariantType.ExtensionObject),
            datatype=ua.NodeId(ua.ObjectIds.Range),
        )
        return var

    def _make_setter(self, name: str) -> Callable[[NodeData, ua.AttributeIds, ua.DataValue], None]:
        def setter(node: NodeData, attr: ua.AttributeIds, dv: ua.DataValue) -> None:
            value = dv.Value.Value if dv.Value is not None else None
            if not isinstance(value, float) or self._on_setpoint is None:
                raise ua.uaerrors.BadTypeMismatch()
            try:
                self._on_setpoint(name, value)
            except ValueError:
                self.setpoint_rejections += 1
                log.warning("setpoint %s: refused %r (out of range)", name, value)
                # Raised from a setter, asyncua answers the Write request with this status.
                raise ua.uaerrors.BadOutOfRange() from None
            self.setpoint_writes += 1
            log.info("setpoint %s := %r", name, value)
            # Store it as the default path would, stamped with plant time: that is the PLC's clock.
            if self._last_time is not None:
                dv = dataclasses.replace(dv, SourceTimestamp=self._last_time, ServerTimestamp=self._last_time)
            node.attributes[attr].value = dv
            node.attributes[attr].value_callback = None

        return setter

    @staticmethod
    def _datavalue(value: float, t: datetime | None) -> ua.DataValue:
        return ua.DataValue(
            Value=ua.Variant(float(value), ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.Good),
            SourceTimestamp=t,
            ServerTimestamp=t,
        )

    async def publish(self, values: Mapping[str, float], t: datetime) -> None:
        """Write the served tags found in `values` (config units) stamped with plant time `t`."""
        server = self._server
        if server is None:
            raise RuntimeError("server not started")
        self._last_time = t
        for name, nodeid in self._nodeids.items():
            v = values.get(name)
            if v is not None:
                await server.write_attribute_value(nodeid, self._datavalue(v, t))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> SimOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = [
    "EXPECTED_NAMESPACE_INDEX",
    "NAMESPACE_URI",
    "SimOpcUaServer",
    "eu_information",
    "unece_unit_id",
]
