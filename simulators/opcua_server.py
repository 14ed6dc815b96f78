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

Setpoints behave like PLC tags (`simulators.plant.SetpointSpec`): each has the DataType its
spec names, and a write must carry exactly that variant type (BadTypeMismatch otherwise:
`dry.jacket_temp_sp` is a Float, a REAL, so a Double write is refused); a setpoint with
integer scaling (`shr.feed_rate_sp`, 0.05 t/h counts) stores the written value rounded to
its step, so 1.72 reads back 1.70. With `refuse_write_timestamps=True` the server behaves
like PLCs that accept only a bare value (Siemens S7-1500, for one): a setpoint write carrying
a SourceTimestamp or ServerTimestamp is refused with BadWriteNotSupported (the server then
stops stamping client writes itself, so the client's own timestamps are what it checks).

Monitored items: like many PLC servers, the simulated PLC does not implement PercentDeadband
(asyncua's server accepts it and then ignores it, which would be worse): an item asking for it
is refused with BadFilterNotAllowed, the rest of the request goes through. Clients are expected
to fall back to polling and apply the deadband themselves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.server.address_space import NodeData

from gateway.config import LineConfig, OpcUaDriver, Tag
from simulators.opcua_server_security import SimServerSecurity, SimUserManager, apply_security
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
        security: SimServerSecurity | None = None,
        refuse_write_timestamps: bool = False,
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
        self.refuse_write_timestamps = refuse_write_timestamps
        # None: NoSecurity only, any identity (the default for tests and demos).
        self._security = security
        self.user_manager: SimUserManager | None = None

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("linegate plant simulator")
        if self._security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            self.user_manager = await apply_security(server, self._security)
        idx = await server.register_namespace(NAMESPACE_URI)
        if idx != EXPECTED_NAMESPACE_INDEX:
            raise RuntimeError(
                f"namespace {NAMESPACE_URI} got index {idx}, expected {EXPECTED_NAMESPACE_INDEX}: "
                "the config's node ids (ns=2;s=...) would not resolve"
            )
        self.namespace_index = idx
        _refuse_percent_deadband(server)

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

        if self.refuse_write_timestamps:
            # asyncua stamps every client write's ServerTimestamp itself by default, which
            # would hide the client's own from the setter's check.
            server.set_force_server_timestamp(False)
        for name, spec in self._setpoints.items():
            nodeid = ua.NodeId(name, idx)
            parent = await asset_node(asset_of(name))
            vtype = ua.VariantType[spec.datatype]
            var = await self._add_analog(
                parent, nodeid, name, spec.unit, (spec.low, spec.high), spec.description, vtype=vtype
            )
            await server.write_attribute_value(
                nodeid, self._datavalue(self._initial_setpoints[name], self._initial_time, vtype)
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
        *,
        vtype: ua.VariantType = ua.VariantType.Double,
    ) -> Any:
        idx = nodeid.NamespaceIndex
        browse = name.split(".", 1)[1] if "." in name else name
        # The variable's DataType follows the initial variant's type (Double, or Float for REALs).
        var = await parent.add_variable(nodeid, ua.QualifiedName(browse, idx), ua.Variant(0.0, vtype))
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
        spec = self._setpoints[name]
        vtype = ua.VariantType[spec.datatype]

        def setter(node: NodeData, attr: ua.AttributeIds, dv: ua.DataValue) -> None:
            # asyncua has already refused another variant type than the node's; this holds
            # even for a node whose stored value was replaced by a Null.
            value = dv.Value.Value if dv.Value is not None and dv.Value.VariantType == vtype else None
            if not isinstance(value, float) or self._on_setpoint is None:
                raise ua.uaerrors.BadTypeMismatch()
            if self.refuse_write_timestamps and (
                dv.SourceTimestamp is not None or dv.ServerTimestamp is not None
            ):
                self.setpoint_rejections += 1
                log.warning("setpoint %s: refused a write carrying timestamps", name)
                raise ua.uaerrors.BadWriteNotSupported()
            # The PLC's integer scaling, if any, happens before its range check (on the counts).
            value = spec.stored(value)
            try:
                self._on_setpoint(name, value)
            except ValueError:
                self.setpoint_rejections += 1
                log.warning("setpoint %s: refused %r (out of range)", name, value)
                # Raised from a setter, asyncua answers the Write request with this status.
                raise ua.uaerrors.BadOutOfRange() from None
            self.setpoint_writes += 1
            log.info("setpoint %s := %r", name, value)
            dv = dataclasses.replace(dv, Value=ua.Variant(value, vtype))
            # Store it as the default path would, stamped with plant time: that is the PLC's clock.
            if self._last_time is not None:
                dv = dataclasses.replace(dv, SourceTimestamp=self._last_time, ServerTimestamp=self._last_time)
            node.attributes[attr].value = dv
            node.attributes[attr].value_callback = None

        return setter

    @staticmethod
    def _datavalue(
        value: float, t: datetime | None, vtype: ua.VariantType = ua.VariantType.Double
    ) -> ua.DataValue:
        return ua.DataValue(
            Value=ua.Variant(float(value), vtype),
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

    async def publish_timed(self, values: Mapping[str, tuple[float, float]]) -> None:
        """Like `publish`, each value with its own source time (epoch s): a skewed instrument clock."""
        server = self._server
        if server is None:
            raise RuntimeError("server not started")
        newest: datetime | None = None
        for name, nodeid in self._nodeids.items():
            vt = values.get(name)
            if vt is not None:
                t = datetime.fromtimestamp(vt[1], UTC)
                newest = t if newest is None or t > newest else newest
                await server.write_attribute_value(nodeid, self._datavalue(vt[0], t))
        if newest is not None:
            self._last_time = newest

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> SimOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _refuse_percent_deadband(server: Server) -> None:
    service = server.iserver.subscription_service
    create = service.create_monitored_items

    async def create_monitored_items(
        params: ua.CreateMonitoredItemsParameters,
    ) -> list[ua.MonitoredItemCreateResult]:
        def refused(item: ua.MonitoredItemCreateRequest) -> bool:
            # By attribute: the decoded filter's class is not always `ua.DataChangeFilter` itself.
            flt = item.RequestedParameters.Filter
            return getattr(flt, "DeadbandType", None) == ua.DeadbandType.Percent.value

        wanted = [item for item in params.ItemsToCreate if not refused(item)]
        accepted = iter(await create(dataclasses.replace(params, ItemsToCreate=wanted)) if wanted else [])
        return [
            ua.MonitoredItemCreateResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadFilterNotAllowed))
            if refused(item)
            else next(accepted)
            for item in params.ItemsToCreate
        ]

    service.create_monitored_items = create_monitored_items  # type: ignore[method-assign]


__all__ = [
    "EXPECTED_NAMESPACE_INDEX",
    "NAMESPACE_URI",
    "SimOpcUaServer",
    "eu_information",
    "unece_unit_id",
]
