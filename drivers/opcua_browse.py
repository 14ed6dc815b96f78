"""`linegate browse`: walk an OPC-UA address space and print a ready-to-paste tag config.

The walk goes level by level from a root node (default: the Objects folder) along
hierarchical references, one batched Browse per level (chunked to the server's
MaxNodesPerBrowse, continuation points followed), skipping the standard Server object.
Variables with a numeric data type become `[[tags]]` tables; their unit and range come from
the AnalogItem properties EngineeringUnits (DisplayName) and EURange, read in batches.

What cannot be trusted is never guessed: a missing or unreadable unit or range becomes a
commented `# TODO` line, so the snippet fails `linegate check-config` until a person fills it
in, and every skipped variable or failed read is counted in the header comments.

Booleans are skipped (a tag is a measurement with an engineering range); enumerations and
arrays too. Names are the browse path below the root, lower-cased and sanitised to the
config's tag-name pattern, de-duplicated with `_2`, `_3`, ...
"""

from __future__ import annotations

import logging
import math
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from asyncua import Client, ua
from pydantic import ValidationError

from drivers.opcua_session import describe, open_session
from gateway.config import IDENT, OpcUaDriver, OpcUaSecurity
from gateway.errors import LinegateError

log = logging.getLogger(__name__)

# Built-in numeric data types (ns=0), including the abstract ones a variable may declare.
NUMERIC_TYPES: dict[int, str] = {
    2: "SByte",
    3: "Byte",
    4: "Int16",
    5: "UInt16",
    6: "Int32",
    7: "UInt32",
    8: "Int64",
    9: "UInt64",
    10: "Float",
    11: "Double",
    26: "Number",
    27: "Integer",
    28: "UInteger",
}
BOOLEAN_TYPE = 1
ENUMERATION_TYPE = 29
DECIMAL_TYPE = 50  # a Number subtype asyncua cannot decode to a float
# ns=0 ids up to here are built-in types or their abstract roots: no need to look further up.
LAST_BUILTIN_TYPE = 50
# Vendor data types derive from a built-in one within a few levels.
MAX_TYPE_LEVELS = 8

SERVER_OBJECT = ua.NodeId(ua.ObjectIds.Server)
HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
CURRENT_READ = 0x01  # AccessLevel bit
# Without a server limit, requests stay this size: large enough to be few, small enough for
# any message size limit.
DEFAULT_READ_CHUNK = 1000
DEFAULT_BROWSE_CHUNK = 500
# The header lists this many skipped variables and problems one by one; the rest are counted.
MAX_LISTED = 40


class BrowseError(Exception):
    """The walk cannot start (unknown root) or the server answered with nonsense."""


# ---------------------------------------------------------------------------------------------
# What the walk found
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FoundVariable:
    """A numeric variable: a tag candidate. A None unit or range has its reason beside it."""

    node_id: str
    namespace_index: int
    path: tuple[str, ...]
    data_type: str
    description: str = ""
    unit: str | None = None
    unit_problem: str = ""
    range: tuple[float, float] | None = None
    range_problem: str = ""


@dataclass(frozen=True, slots=True)
class SkippedVariable:
    node_id: str
    path: tuple[str, ...]
    reason: str


@dataclass(slots=True)
class BrowseReport:
    url: str
    security: str
    server: str
    root: str
    root_name: str
    depth: int
    nodes_visited: int = 0
    not_expanded: int = 0  # objects at the depth limit whose children were not browsed
    namespaces: list[str] = field(default_factory=list)
    variables: list[FoundVariable] = field(default_factory=list)
    skipped: list[SkippedVariable] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
async def browse_command(
    url: str, *, security: OpcUaSecurity | None, root: str, depth: int, driver: str, out: TextIO
) -> int:
    """Print a tag snippet for `url`: exit 0 with tags, 1 on none or a failure, 2 on bad usage."""
    sec = security or OpcUaSecurity()
    try:
        settings = OpcUaDriver(type="opcua", url=url, security=sec)
    except ValidationError:
        return _usage(f"invalid server URL {url!r}: expected opc.tcp://HOST:PORT[/path]")
    try:
        root_id = ua.NodeId.from_string(root)
    except (ua.UaError, ValueError):
        return _usage(f"invalid --root {root!r}: expected a node id such as i=85 or ns=2;s=Line1")
    if depth < 0:
        return _usage(f"--depth must be 0 or more (got {depth})")
    if not re.match(IDENT, driver):
        return _usage(f"invalid --driver {driver!r}: letters, digits, '_' and '-', starting alphanumeric")

    report = BrowseReport(
        url=url,
        security=f"{sec.policy}/{sec.mode}, {sec.identity}",
        server="unknown",
        root=root,
        root_name="",
        depth=depth,
    )
    try:
        async with open_session(settings, "browse") as client:
            await _walk(client, root_id, report)
    except LinegateError as exc:
        message = str(exc)
        return _fail(message if url in message else f"{url}: {message}")
    except BrowseError as exc:
        return _fail(f"{url}: {exc}")
    except Exception as exc:
        # A CLI boundary: whatever a server's answer makes the library raise, say it in one line.
        log.debug("browse of %s failed", url, exc_info=True)
        return _fail(f"{url}: browsing failed: {describe(exc)}")

    out.write(format_snippet(report, driver=driver, now=datetime.now(UTC)))
    if not report.variables:
        return _fail(
            f"{url}: no numeric variables under {root} within depth {depth} "
            "(see the header comments; try another --root or a larger --depth)"
        )
    return 0


def _usage(message: str) -> int:
    print(f"linegate browse: {message}", file=sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"linegate browse: {message}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# Batched services
# ---------------------------------------------------------------------------------------------
BrowseOutcome = tuple[ua.StatusCode, list[ua.ReferenceDescription]]


class _Batcher:
    """Read and Browse many nodes in few requests, within the server's operation limits."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.read_chunk = DEFAULT_READ_CHUNK
        self.browse_chunk = DEFAULT_BROWSE_CHUNK

    def set_limits(self, max_read: object, max_browse: object) -> None:
        # 0 (or unreadable) means the server states no limit.
        if isinstance(max_read, int) and max_read > 0:
            self.read_chunk = min(max_read, DEFAULT_READ_CHUNK)
        if isinstance(max_browse, int) and max_browse > 0:
            self.browse_chunk = min(max_browse, DEFAULT_BROWSE_CHUNK)

    async def read(self, items: Sequence[tuple[ua.NodeId, ua.AttributeIds]]) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for start in range(0, len(items), self.read_chunk):
            params = ua.ReadParameters()
            params.NodesToRead = [
                ua.ReadValueId(NodeId=node, AttributeId=attr)
                for node, attr in items[start : start + self.read_chunk]
            ]
            results = await self._client.uaclient.read(params)
            if len(results) != len(params.NodesToRead):
                raise BrowseError(f"Read returned {len(results)} results for {len(params.NodesToRead)} nodes")
            out.extend(results)
        return out

    async def browse(
        self,
        nodes: Sequence[ua.NodeId],
        reference_type: int,
        node_classes: int,
        direction: ua.BrowseDirection = ua.BrowseDirection.Forward,
    ) -> list[BrowseOutcome]:
        out: list[BrowseOutcome] = []
        for start in range(0, len(nodes), self.browse_chunk):
            params = ua.BrowseParameters()
            params.RequestedMaxReferencesPerNode = 0
            params.NodesToBrowse = [
                ua.BrowseDescription(
                    NodeId=node,
                    BrowseDirection=direction,
                    ReferenceTypeId=ua.NodeId(reference_type),
                    IncludeSubtypes=True,
                    NodeClassMask=node_classes,
                    ResultMask=ua.BrowseResultMask.All,
                )
                for node in nodes[start : start + self.browse_chunk]
            ]
            results = await self._client.uaclient.browse(params)
            if len(results) != len(params.NodesToBrowse):
                raise BrowseError(
                    f"Browse returned {len(results)} results for {len(params.NodesToBrowse)} nodes"
                )
            out.extend(await self._follow(results))
        return out

    async def _follow(self, results: list[ua.BrowseResult]) -> list[BrowseOutcome]:
        """Collect every result's references, asking BrowseNext while a server paginates."""
        outcomes: list[BrowseOutcome] = [(r.StatusCode, list(r.References or [])) for r in results]
        pending = {i: r.ContinuationPoint for i, r in enumerate(results) if r.ContinuationPoint}
        while pending:
            params = ua.BrowseNextParameters()
            params.ReleaseContinuationPoints = False
            params.ContinuationPoints = list(pending.values())
            nexts = await self._client.uaclient.browse_next(params)
            if len(nexts) != len(pending):
                raise BrowseError(f"BrowseNext returned {len(nexts)} results for {len(pending)} points")
            following: dict[int, bytes] = {}
            for i, result in zip(pending, nexts, strict=True):
                refs = outcomes[i][1]
                refs.extend(result.References or [])
                if not result.StatusCode.is_good():
                    outcomes[i] = (result.StatusCode, refs)
                elif result.ContinuationPoint:
                    following[i] = result.ContinuationPoint
            pending = following
        return outcomes


# ---------------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Node:
    node_id: ua.NodeId
    path: tuple[str, ...]
    node_class: ua.NodeClass


def _status_name(status: ua.StatusCode | None) -> str:
    return status.name if status is not None else "no status"


def _good(dv: ua.DataValue) -> bool:
    return dv.StatusCode is None or dv.StatusCode.is_good()


def _value(dv: ua.DataValue) -> Any:
    return dv.Value.Value if _good(dv) and dv.Value is not None else None


def _local_id(target: ua.NodeId, namespaces: list[str]) -> ua.NodeId | None:
    """A reference target as a local NodeId; None for a node on another server or unknown namespace."""
    index = target.NamespaceIndex
    if isinstance(target, ua.ExpandedNodeId):
        if target.ServerIndex:
            return None
        if target.NamespaceUri:
            if target.NamespaceUri not in namespaces:
                return None
            index = namespaces.index(target.NamespaceUri)
    return ua.NodeId(target.Identifier, index, target.NodeIdType)


def _text(value: Any) -> str:
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    if isinstance(value, ua.QualifiedName):
        return value.Name or ""
    return "" if value is None else str(value)


async def _walk(client: Client, root: ua.NodeId, report: BrowseReport) -> None:
    batch = _Batcher(client)
    ids = ua.ObjectIds
    head = await batch.read(
        [
            (ua.NodeId(ids.Server_NamespaceArray), ua.AttributeIds.Value),
            (ua.NodeId(ids.Server_ServerStatus_BuildInfo_ProductName), ua.AttributeIds.Value),
            (ua.NodeId(ids.Server_ServerStatus_BuildInfo_ManufacturerName), ua.AttributeIds.Value),
            (ua.NodeId(ids.Server_ServerStatus_BuildInfo_SoftwareVersion), ua.AttributeIds.Value),
            (ua.NodeId(ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead), ua.AttributeIds.Value),
            (
                ua.NodeId(ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse),
                ua.AttributeIds.Value,
            ),
        ]
    )
    namespaces = _value(head[0])
    if isinstance(namespaces, list) and all(isinstance(n, str) for n in namespaces):
        report.namespaces = namespaces
    else:
        report.problems.append(f"NamespaceArray unreadable ({_status_name(head[0].StatusCode)})")
    report.server = _server_name(*(_value(dv) for dv in head[1:4]))
    batch.set_limits(_value(head[4]), _value(head[5]))

    # A root given as nsu=URI;... resolves only once the server's namespace table is known.
    local_root = _local_id(root, report.namespaces)
    if local_root is None:
        raise BrowseError(f"root node {report.root}: its namespace is not on this server")
    node_class, browse_name, display_name = await batch.read(
        [
            (local_root, a)
            for a in (ua.AttributeIds.NodeClass, ua.AttributeIds.BrowseName, ua.AttributeIds.DisplayName)
        ]
    )
    if _value(node_class) is None:
        raise BrowseError(f"root node {report.root}: {_status_name(node_class.StatusCode)}")
    root_class = ua.NodeClass(_value(node_class))
    if root_class not in (ua.NodeClass.Object, ua.NodeClass.Variable, ua.NodeClass.View):
        raise BrowseError(f"root node {report.root} is a {root_class.name}; give an Object or a Variable")
    report.root_name = _text(_value(display_name)) or _text(_value(browse_name))

    candidates, props = await _collect(batch, local_root, root_class, _text(_value(browse_name)), report)
    await _classify(batch, candidates, props, report)


async def _collect(
    batch: _Batcher, root: ua.NodeId, root_class: ua.NodeClass, root_browse_name: str, report: BrowseReport
) -> tuple[list[_Node], dict[ua.NodeId, dict[str, ua.NodeId]]]:
    """Breadth-first walk: the variables below `root` and the properties of each."""
    frontier = [_Node(root, (), root_class)]
    candidates: list[_Node] = []
    if root_class == ua.NodeClass.Variable:
        candidates.append(_Node(root, (root_browse_name,), root_class))
    visited = {root}
    browsed: set[ua.NodeId] = set()
    props: dict[ua.NodeId, dict[str, ua.NodeId]] = {}
    mask = ua.NodeClass.Object | ua.NodeClass.Variable
    for _level in range(report.depth):
        if not frontier:
            break
        outcomes = await batch.browse(
            [n.node_id for n in frontier], ua.ObjectIds.HierarchicalReferences, mask
        )
        following: list[_Node] = []
        for parent, (status, refs) in zip(frontier, outcomes, strict=True):
            browsed.add(parent.node_id)
            if not status.is_good():
                report.problems.append(f"browse {parent.node_id.to_string()}: {status.name}")
            for ref in refs:
                target = _local_id(ref.NodeId, report.namespaces)
                if target is None:
                    continue
                name = _text(ref.BrowseName)
                if ref.ReferenceTypeId == HAS_PROPERTY:
                    # Properties describe their parent (units, range); they are not tags.
                    if parent.node_class == ua.NodeClass.Variable:
                        props.setdefault(parent.node_id, {})[name] = target
                    continue
                if target == SERVER_OBJECT or target in visited:
                    continue
                visited.add(target)
                node = _Node(target, (*parent.path, name), ua.NodeClass(ref.NodeClass))
                if node.node_class == ua.NodeClass.Variable:
                    candidates.append(node)
                following.append(node)
        frontier = following
    report.nodes_visited = len(visited)
    report.not_expanded = sum(1 for n in frontier if n.node_class == ua.NodeClass.Object)

    # Variables on the last level were not browsed: fetch just their properties.
    unbrowsed = [c.node_id for c in candidates if c.node_id not in browsed]
    outcomes = await batch.browse(unbrowsed, ua.ObjectIds.HasProperty, ua.NodeClass.Variable)
    for node_id, (status, refs) in zip(unbrowsed, outcomes, strict=True):
        if not status.is_good():
            report.problems.append(f"browse properties of {node_id.to_string()}: {status.name}")
        for ref in refs:
            target = _local_id(ref.NodeId, report.namespaces)
            if target is not None:
                props.setdefault(node_id, {})[_text(ref.BrowseName)] = target
    return candidates, props


def _server_name(product: Any, manufacturer: Any, version: Any) -> str:
    name = _text(product) or "unknown product"
    extra = [s for s in (_text(manufacturer), f"version {_text(version)}" if _text(version) else "") if s]
    return f"{name} ({', '.join(extra)})" if extra else name


@dataclass(frozen=True, slots=True)
class _TypeVerdict:
    kind: str  # "numeric", "boolean", "enumeration" or "other"
    name: str  # "Double"; a derived type with its base: "Duration (Double)"

    @property
    def numeric(self) -> bool:
        return self.kind == "numeric"

    @property
    def reason(self) -> str:
        """Why a variable of this type is skipped."""
        if self.kind == "boolean":
            return f"data type {self.name}: on/off, not a measurement (add it by hand with range = [0, 1])"
        if self.kind == "enumeration":
            return f"data type {self.name}: an enumeration, not a measurement"
        return f"data type {self.name} is not a numeric type"


def _builtin_verdict(type_id: ua.NodeId) -> _TypeVerdict | None:
    """The verdict for a built-in type; None for a type to resolve through its supertypes."""
    if type_id.NamespaceIndex != 0 or not isinstance(type_id.Identifier, int):
        return None
    ident = type_id.Identifier
    if ident in NUMERIC_TYPES:
        return _TypeVerdict("numeric", NUMERIC_TYPES[ident])
    name = ua.ObjectIdNames.get(ident, type_id.to_string())
    if ident == BOOLEAN_TYPE:
        return _TypeVerdict("boolean", name)
    if ident == ENUMERATION_TYPE:
        return _TypeVerdict("enumeration", name)
    if ident <= LAST_BUILTIN_TYPE:
        return _TypeVerdict("other", name)
    return None


async def _resolve_types(
    batch: _Batcher, type_ids: set[ua.NodeId], report: BrowseReport
) -> dict[ua.NodeId, _TypeVerdict]:
    """Classify data types; derived ones (Duration, vendor types) by walking up HasSubtype."""
    verdicts: dict[ua.NodeId, _TypeVerdict] = {}
    unknown: list[ua.NodeId] = []
    for t in type_ids:
        v = _builtin_verdict(t)
        if v is None:
            unknown.append(t)
        else:
            verdicts[t] = v
    if not unknown:
        return verdicts
    names = {
        t: _text(_value(dv)) or t.to_string()
        for t, dv in zip(
            unknown, await batch.read([(t, ua.AttributeIds.BrowseName) for t in unknown]), strict=True
        )
    }
    pending = {t: t for t in unknown}  # type -> the ancestor reached so far
    for _level in range(MAX_TYPE_LEVELS):
        if not pending:
            break
        current = list(dict.fromkeys(pending.values()))
        outcomes = await batch.browse(
            current, ua.ObjectIds.HasSubtype, ua.NodeClass.DataType, ua.BrowseDirection.Inverse
        )
        parent_of: dict[ua.NodeId, ua.NodeId | None] = {}
        for node, (_status, refs) in zip(current, outcomes, strict=True):
            parents = [p for p in (_local_id(r.NodeId, report.namespaces) for r in refs) if p is not None]
            parent_of[node] = parents[0] if parents else None
        for t, ancestor in list(pending.items()):
            parent = parent_of.get(ancestor)
            if parent is None:
                verdicts[t] = _TypeVerdict("other", f"{names[t]} (base type unknown)")
                del pending[t]
                continue
            base = _builtin_verdict(parent)
            if base is None:
                pending[t] = parent
                continue
            verdicts[t] = _TypeVerdict(base.kind, f"{names[t]} ({base.name})")
            del pending[t]
    for t in pending:
        verdicts[t] = _TypeVerdict("other", f"{names[t]} (base type too deep)")
    return verdicts


async def _classify(
    batch: _Batcher,
    candidates: list[_Node],
    props: dict[ua.NodeId, dict[str, ua.NodeId]],
    report: BrowseReport,
) -> None:
    attrs = (
        ua.AttributeIds.DataType,
        ua.AttributeIds.ValueRank,
        ua.AttributeIds.UserAccessLevel,
        ua.AttributeIds.Description,
    )
    values = await batch.read([(c.node_id, a) for c in candidates for a in attrs])
    rows = [values[i : i + len(attrs)] for i in range(0, len(values), len(attrs))]
    type_ids = {t for t in (_value(row[0]) for row in rows) if isinstance(t, ua.NodeId)}
    verdicts = await _resolve_types(batch, type_ids, report)

    numeric: list[tuple[_Node, str, str]] = []
    for node, (dtype, rank, access, desc) in zip(candidates, rows, strict=True):
        reason = ""
        type_id = _value(dtype)
        verdict = verdicts.get(type_id) if isinstance(type_id, ua.NodeId) else None
        if verdict is None:
            reason = f"DataType unreadable ({_status_name(dtype.StatusCode)})"
        elif not verdict.numeric:
            reason = verdict.reason
        elif isinstance(_value(rank), int) and _value(rank) >= 0:
            reason = f"array (ValueRank {_value(rank)})"
        elif isinstance(_value(access), int) and not _value(access) & CURRENT_READ:
            reason = "not readable by this session (UserAccessLevel)"
        if reason:
            report.skipped.append(SkippedVariable(node.node_id.to_string(), node.path, reason))
        else:
            assert verdict is not None
            description = _text(_value(desc))
            # Servers (asyncua among them) fill an unset Description with the browse name.
            if node.path and description == node.path[-1]:
                description = ""
            numeric.append((node, verdict.name, description))

    wanted = [
        (node.node_id, prop)
        for node, _, _ in numeric
        for prop in ("EngineeringUnits", "EURange")
        if prop in props.get(node.node_id, {})
    ]
    read = await batch.read([(props[n][p], ua.AttributeIds.Value) for n, p in wanted])
    prop_values = dict(zip(wanted, read, strict=True))
    for node, type_name, description in numeric:
        unit, unit_problem = _unit(prop_values.get((node.node_id, "EngineeringUnits")))
        rng, range_problem = _range(prop_values.get((node.node_id, "EURange")))
        report.variables.append(
            FoundVariable(
                node_id=node.node_id.to_string(),
                namespace_index=node.node_id.NamespaceIndex,
                path=node.path,
                data_type=type_name,
                description=description,
                unit=unit,
                unit_problem=unit_problem,
                range=rng,
                range_problem=range_problem,
            )
        )


def _unit(dv: ua.DataValue | None) -> tuple[str | None, str]:
    if dv is None:
        return None, "the server gives no EngineeringUnits property"
    if not _good(dv):
        return None, f"EngineeringUnits unreadable ({_status_name(dv.StatusCode)})"
    value = _value(dv)
    if not isinstance(value, ua.EUInformation):
        return None, "EngineeringUnits is not an EUInformation"
    text = _text(value.DisplayName).strip()
    if not text:
        return None, "EngineeringUnits has an empty DisplayName"
    return text, ""


def _range(dv: ua.DataValue | None) -> tuple[tuple[float, float] | None, str]:
    if dv is None:
        return None, "the server gives no EURange property"
    if not _good(dv):
        return None, f"EURange unreadable ({_status_name(dv.StatusCode)})"
    value = _value(dv)
    if not isinstance(value, ua.Range):
        return None, "EURange is not a Range"
    lo, hi = value.Low, value.High
    if not (isinstance(lo, float | int) and isinstance(hi, float | int)):
        return None, "EURange has no Low/High"
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        return None, f"EURange [{lo}, {hi}] is not a usable range (Low must be below High)"
    return (float(lo), float(hi)), ""


# ---------------------------------------------------------------------------------------------
# The snippet (pure)
# ---------------------------------------------------------------------------------------------
def name_segment(text: str) -> str:
    """One browse name as a tag-name segment: ASCII, snake_case, [a-z0-9_] only."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", ascii_text).lower()
    return re.sub(r"[^a-z0-9]+", "_", snake).strip("_")


def tag_name(path: Sequence[str]) -> str:
    """A config tag name (`^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$`) from a browse path."""
    segments = [s for s in (name_segment(p) for p in path) if s]
    if not segments:
        return "tag"
    if not segments[0][0].isalpha():
        segments[0] = f"t_{segments[0]}"
    return ".".join(segments)


def tag_names(paths: Sequence[Sequence[str]]) -> list[str]:
    """Unique tag names for browse paths, in order; later clashes get _2, _3, ..."""
    seen: set[str] = set()
    names: list[str] = []
    for path in paths:
        base = tag_name(path)
        name, n = base, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string; control characters escaped (server text is untrusted)."""
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif unicodedata.category(ch) == "Cc":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def comment_text(text: str) -> str:
    """Text safe inside a TOML comment: a newline or control character would end or break it."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def _float(x: float) -> str:
    return repr(float(x))  # '250.0', '1e+22': both TOML floats


def format_snippet(report: BrowseReport, *, driver: str, now: datetime) -> str:
    lines = _header(report, now)
    names = tag_names([v.path for v in report.variables])
    for var, name in zip(report.variables, names, strict=True):
        lines.append("")
        lines.append(f"# {comment_text('/'.join(var.path))}  ({comment_text(var.data_type)})")
        lines.append("[[tags]]")
        lines.append(f"name = {toml_string(name)}")
        if var.description:
            lines.append(f"description = {toml_string(var.description)}")
        lines.append(f"driver = {toml_string(driver)}")
        lines.append(f"node_id = {toml_string(var.node_id)}")
        if var.unit is not None:
            lines.append(f"unit = {toml_string(var.unit)}")
        else:
            lines.append(f"# TODO unit: {comment_text(var.unit_problem)}; write it and uncomment")
            lines.append('# unit = "?"')
        if var.range is not None:
            lines.append(f"range = [{_float(var.range[0])}, {_float(var.range[1])}]")
        else:
            lines.append(f"# TODO range: {comment_text(var.range_problem)}; write [min, max] and uncomment")
            lines.append("# range = [?, ?]")
    lines.append("")
    lines.append("# Next: paste these tables into the line config beside")
    lines.append(f"#   [drivers.{driver}]")
    lines.append('#   type = "opcua"')
    lines.append(f"#   url = {comment_text(toml_string(report.url))}")
    lines.append("# fill in every TODO, mark the feed and black-mass streams (role, kind, sigma_rel),")
    lines.append("# then check the file with:")
    lines.append("#   linegate check-config YOUR_LINE.toml")
    return "\n".join(lines) + "\n"


def _header(report: BrowseReport, now: datetime) -> list[str]:
    c = comment_text
    todo = sum(1 for v in report.variables if v.unit is None or v.range is None)
    lines = [
        "# linegate browse: tag config snippet",
        f"# server:    {c(report.server)}",
        f"# endpoint:  {c(report.url)} (security {c(report.security)})",
        f"# date:      {now.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"# walked:    from {c(report.root)} ({c(report.root_name)}), depth {report.depth}, "
        f"{report.nodes_visited} nodes; names are browse paths below it",
    ]
    if report.not_expanded:
        lines.append(
            f"#            {report.not_expanded} objects at the depth limit not expanded (raise --depth)"
        )
    lines.append(
        f"# found:     {len(report.variables)} numeric variables, "
        f"{len(report.variables) - todo} with unit and range, {todo} with TODO lines to fill in"
    )
    lines.append(f"# skipped:   {len(report.skipped)} variables")
    for reason, count in Counter(s.reason for s in report.skipped).most_common():
        lines.append(f"#   {count} x {c(reason)}")
    for s in report.skipped[:MAX_LISTED]:
        lines.append(f"#   - {c(s.node_id)} ({c('/'.join(s.path))}): {c(s.reason)}")
    if len(report.skipped) > MAX_LISTED:
        lines.append(f"#   - ... and {len(report.skipped) - MAX_LISTED} more")
    if report.problems:
        lines.append(f"# problems:  {len(report.problems)} (nodes or values the server did not give)")
        for p in report.problems[:MAX_LISTED]:
            lines.append(f"#   - {c(p)}")
        if len(report.problems) > MAX_LISTED:
            lines.append(f"#   - ... and {len(report.problems) - MAX_LISTED} more")
    used = sorted({v.namespace_index for v in report.variables})
    if used:
        lines.append("# namespaces:")
        for ns in used:
            uri = report.namespaces[ns] if ns < len(report.namespaces) else "(unknown)"
            lines.append(f"#   ns={ns} is {c(uri)}")
        lines.append("#   A server may renumber its namespaces (after an update or a project download): if")
        lines.append("#   a node_id stops resolving, look up its namespace URI's index again.")
    return lines
