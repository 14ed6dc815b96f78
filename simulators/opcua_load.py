"""Synthetic OPC-UA load: N Double variables updated every `interval_ms`, sharded over processes.

One asyncua server process carries about 20,000 notifications/s on this hardware, so a load of
5,000 tags at 100 ms (50,000 updates/s) is spread over several server processes ("shards"),
each serving a contiguous slice of tag numbers at its own endpoint. `run_shards` starts them
as child processes (`python -m simulators.opcua_load ...`), waits for each one's READY line and
stops them again; `gateway_config` builds the gateway-side config objects for them.

Address space (per shard): the namespace `urn:linegate:simulator` at index 2, as in
`simulators.opcua_server`; tag k is the Double variable `ns=2;s=load.t{k:05d}` (tags are
numbered from 1), grouped 25 to an Object (`ns=2;s=load.g{n}`); `ns=2;s=load.updates` (UInt64)
counts the updates this shard has written. Each update's value is the tick's sequence number
(0 is the value the variable was created with, stamped at creation), so a client can tell from a jump how many updates of a tag it never saw (the server keeps only
the latest value per monitored item with queue size 1, or the client dropped one), and its
SourceTimestamp is the wall clock (UTC) at the write, so a client can measure latency.

Cost, measured on the 2-core box: creating a variable costs asyncua about 0.27 ms with 25
siblings and 1.1-1.4 ms with 1,000 (its AddNodes scans the parent's references for every new
child), whether through `add_variable` or one batched AddNodes call (about 20 % cheaper, used
here), so tags are grouped 25 to a parent: 5,000 tags take 1.3 s instead of 5.7 s. The update
path writes straight into the address space (`aspace.write_attribute_value`) with DataValues
that asyncua need not deep-copy (see `_SharedDataValue`): that copy was almost two thirds of
the server's CPU per update (about 55 instead of 150 µs per update and notification).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from asyncua import Server, ua

from gateway.config import OpcUaDriver, OpcUaMonitoring, Tag
from gateway.ports import BoundTag
from simulators.local_services import free_port
from simulators.opcua_server import EXPECTED_NAMESPACE_INDEX, NAMESPACE_URI

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ENDPOINT_PATH = "/linegate/load"
TAGS_PER_OBJECT = 25  # asyncua's AddNodes scans the parent's references: keep parents small
# A tick's writes go out in slices of this many, spread over the interval.
WRITES_PER_SLICE = 100
COUNTER_NAME = "load.updates"
READY_PREFIX = "READY "
STATS_PREFIX = "STATS "
# A loaded 2-core box starting several shards at once: asyncua's Server.init alone takes 2-3 s.
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_STDERR_TAIL_LINES = 30

log = logging.getLogger(__name__)


def tag_name(number: int) -> str:
    return f"load.t{number:05d}"


def node_id(number: int) -> str:
    return f"ns={EXPECTED_NAMESPACE_INDEX};s={tag_name(number)}"


class _SharedDataValue(ua.DataValue):
    """A DataValue asyncua may share instead of deep-copying.

    asyncua's monitored-item service deep-copies every written DataValue per monitored item
    ("to prevent referencing the inner value"); on this box that copy costs more than the rest
    of the notification. Nothing here mutates a DataValue after writing it (each write gets a
    new one), so sharing is safe.
    """

    __slots__ = ()

    def __copy__(self) -> _SharedDataValue:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedDataValue:
        return self


# -- the server (one shard) -------------------------------------------------------------------------


@dataclass
class LoadStats:
    """What one shard achieved, from its first tick to its stop."""

    tags: int
    interval_ms: float
    updates: int = 0
    ticks: int = 0
    skipped_ticks: int = 0  # ticks never written: the shard fell a whole interval behind
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    max_late_ms: float = 0.0  # the furthest a slice of writes fell behind its due time

    @property
    def rate(self) -> float:
        return self.updates / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "rate": self.rate})


class LoadServer:
    """Serves tags `first` .. `first + count - 1` and updates all of them every `interval_ms`."""

    def __init__(self, *, port: int, first: int, count: int, interval_ms: float, host: str = HOST) -> None:
        if first < 1 or count < 1:
            raise ValueError("first and count must be at least 1")
        if not interval_ms > 0:
            raise ValueError("interval_ms must be positive")
        self.url = f"opc.tcp://{host}:{port}{ENDPOINT_PATH}"
        self.first = first
        self.count = count
        self.interval_ms = interval_ms
        self.stats = LoadStats(tags=count, interval_ms=interval_ms)
        self.build_s = 0.0  # time to create the variables
        self._server: Server | None = None
        self._nodeids: list[ua.NodeId] = []
        self._counter = ua.NodeId(COUNTER_NAME, EXPECTED_NAMESPACE_INDEX)

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("linegate synthetic load")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE_URI)
        if idx != EXPECTED_NAMESPACE_INDEX:
            raise RuntimeError(
                f"namespace {NAMESPACE_URI} got index {idx}, expected {EXPECTED_NAMESPACE_INDEX}"
            )
        started = time.perf_counter()
        self._build(server)
        self.build_s = time.perf_counter() - started
        await server.start()
        self._server = server

    def _build(self, server: Server) -> None:
        idx = EXPECTED_NAMESPACE_INDEX
        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        items: list[ua.AddNodesItem] = []
        last = self.first + self.count - 1
        for group in range((self.first - 1) // TAGS_PER_OBJECT, (last - 1) // TAGS_PER_OBJECT + 1):
            items.append(_object_item(ua.NodeId(f"load.g{group}", idx), f"g{group}", objects))
        items.append(
            _variable_item(
                self._counter, "updates", objects, ua.Variant(0, ua.VariantType.UInt64), ua.ObjectIds.UInt64
            )
        )
        # Sequence number 0: a real sample (AddNodes stamps it), so a client subscribing before
        # the first tick reaches its tag sees a consistent sequence 0, 1, 2, ...
        zero = ua.Variant(0.0, ua.VariantType.Double)
        for number in range(self.first, last + 1):
            nodeid = ua.NodeId(tag_name(number), idx)
            parent = ua.NodeId(f"load.g{(number - 1) // TAGS_PER_OBJECT}", idx)
            items.append(
                _variable_item(nodeid, tag_name(number).split(".", 1)[1], parent, zero, ua.ObjectIds.Double)
            )
            self._nodeids.append(nodeid)
        # The server-side AddNodes service, one call: what a client's AddNodes request runs.
        results = server.iserver.node_mgt_service.add_nodes(items)
        for item, result in zip(items, results, strict=True):
            if not result.StatusCode.is_good():
                raise RuntimeError(
                    f"cannot create {item.RequestedNewNodeId.to_string()}: {result.StatusCode.name}"
                )

    async def run(self, stop: asyncio.Event) -> LoadStats:
        """Write every tag once per interval until `stop` is set.

        A tick's writes are spread evenly over the interval in slices of `WRITES_PER_SLICE`,
        as a PLC's values change at any moment relative to a subscription's publish cycle: a
        client then sees the latency of a real source (up to one publishing interval of wait),
        not one phase locked to the publish timer, and the server's load is smooth. A late
        slice is written at once (catching up); ticks more than one interval behind are
        skipped and counted, so the achieved rate shows a server that cannot keep up.
        """
        server = self._server
        if server is None:
            raise RuntimeError("server not started")
        write = server.iserver.aspace.write_attribute_value
        value_attr = ua.AttributeIds.Value
        good = ua.StatusCode(ua.StatusCodes.Good)
        period = self.interval_ms / 1000.0
        slices = [
            self._nodeids[i : i + WRITES_PER_SLICE] for i in range(0, len(self._nodeids), WRITES_PER_SLICE)
        ]
        stats = self.stats
        cpu0 = time.process_time()
        t0 = tick_start = time.monotonic()
        while True:
            stats.ticks += 1
            variant = ua.Variant(float(stats.ticks), ua.VariantType.Double)
            for j, nodeids in enumerate(slices):
                due = tick_start + j * period / len(slices)
                if await _stopped(stop, due - time.monotonic()):
                    return self._finish(t0, cpu0)
                stats.max_late_ms = max(stats.max_late_ms, (time.monotonic() - due) * 1000)
                for nodeid in nodeids:
                    now = datetime.now(UTC)
                    dv = _SharedDataValue(
                        Value=variant, StatusCode=good, SourceTimestamp=now, ServerTimestamp=now
                    )
                    status = await write(nodeid, value_attr, dv)
                    if status.value:
                        raise RuntimeError(f"write to {nodeid.to_string()} refused: {status.name}")
                stats.updates += len(nodeids)
            await write(
                self._counter, value_attr, ua.DataValue(ua.Variant(stats.updates, ua.VariantType.UInt64))
            )
            tick_start += period
            behind = time.monotonic() - tick_start
            if behind > period:  # a whole interval behind: skip what cannot be caught up, counted
                missed = math.floor(behind / period)
                stats.skipped_ticks += missed
                tick_start += missed * period

    def _finish(self, t0: float, cpu0: float) -> LoadStats:
        self.stats.elapsed_s = time.monotonic() - t0
        self.stats.cpu_s = time.process_time() - cpu0
        return self.stats

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


async def _stopped(stop: asyncio.Event, delay: float) -> bool:
    """Wait `delay` seconds (at least one pass of the event loop); True if `stop` was set."""
    if delay <= 0:
        await asyncio.sleep(0)  # behind schedule: still let publishing and I/O run
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()


def _object_item(nodeid: ua.NodeId, name: str, parent: ua.NodeId) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes(
        DisplayName=ua.LocalizedText(name), Description=ua.LocalizedText(name), EventNotifier=0
    )
    return ua.AddNodesItem(
        ParentNodeId=parent,
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.Organizes),
        RequestedNewNodeId=nodeid,
        BrowseName=ua.QualifiedName(name, nodeid.NamespaceIndex),
        NodeClass=ua.NodeClass.Object,
        NodeAttributes=attrs,
        TypeDefinition=ua.NodeId(ua.ObjectIds.BaseObjectType),
    )


def _variable_item(
    nodeid: ua.NodeId, name: str, parent: ua.NodeId, value: ua.Variant, datatype: int
) -> ua.AddNodesItem:
    # The attributes `add_variable` would set (VariableAttributes specifies all by default).
    attrs = ua.VariableAttributes(
        DisplayName=ua.LocalizedText(name),
        Description=ua.LocalizedText(name),
        Value=value,
        DataType=ua.NodeId(datatype),
        ValueRank=ua.ValueRank.Scalar,
        ArrayDimensions=None,
        AccessLevel=ua.AccessLevel.CurrentRead.mask,
        UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
        WriteMask=0,
        UserWriteMask=0,
        Historizing=False,
    )
    return ua.AddNodesItem(
        ParentNodeId=parent,
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent),
        RequestedNewNodeId=nodeid,
        BrowseName=ua.QualifiedName(name, nodeid.NamespaceIndex),
        NodeClass=ua.NodeClass.Variable,
        NodeAttributes=attrs,
        TypeDefinition=ua.NodeId(ua.ObjectIds.BaseDataVariableType),
    )


# -- shards: planning, the gateway config for them, and the child processes -------------------------


@dataclass(frozen=True)
class ShardSpec:
    """One shard: tags `first` .. `first + count - 1`, served at `url`."""

    index: int
    host: str
    port: int
    first: int
    count: int

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    @property
    def driver_name(self) -> str:
        return f"load{self.index}"

    @property
    def numbers(self) -> range:
        return range(self.first, self.first + self.count)


def plan_shards(n_tags: int, shards: int, base_port: int | None = None, host: str = HOST) -> list[ShardSpec]:
    """Split tags 1..n_tags into `shards` contiguous slices (sizes differ by at most one).

    Shard i listens on `base_port + i`, or on a free port each when `base_port` is None.
    """
    if n_tags < 1:
        raise ValueError("n_tags must be at least 1")
    if not 1 <= shards <= n_tags:
        raise ValueError(f"shards must be between 1 and the number of tags ({n_tags})")
    specs = []
    first = 1
    for i in range(shards):
        count = n_tags // shards + (1 if i < n_tags % shards else 0)
        port = base_port + i if base_port is not None else free_port()
        specs.append(ShardSpec(index=i, host=host, port=port, first=first, count=count))
        first += count
    return specs


@dataclass(frozen=True)
class LoadGatewayConfig:
    """The gateway side of a shard set: one OPC-UA driver per shard, its tags, its bound tags.

    Tag indices run over all shards (tag number k has index k - 1).
    """

    drivers: dict[str, OpcUaDriver]
    tags: list[Tag]
    bound: dict[str, list[BoundTag]]


def gateway_config(
    specs: Sequence[ShardSpec],
    publishing_interval_ms: int,
    *,
    monitoring: OpcUaMonitoring | None = None,
    **driver_settings: Any,
) -> LoadGatewayConfig:
    """Config objects for the gateway's OPC-UA input drivers.

    `monitoring` applies to every tag (None: the defaults, queue size 1); `driver_settings` go
    to each `OpcUaDriver` (queue_maxsize=..., items_per_call=...).
    """
    drivers: dict[str, OpcUaDriver] = {}
    tags: list[Tag] = []
    bound: dict[str, list[BoundTag]] = {}
    for spec in specs:
        name = spec.driver_name
        drivers[name] = OpcUaDriver(
            type="opcua", url=spec.url, publishing_interval_ms=publishing_interval_ms, **driver_settings
        )
        bound[name] = []
        for number in spec.numbers:
            tag = Tag(
                name=tag_name(number),
                driver=name,
                unit="1",
                range=(-1e9, 1e9),
                node_id=node_id(number),
                monitoring=monitoring,
            )
            bound[name].append(BoundTag(len(tags), tag))
            tags.append(tag)
    return LoadGatewayConfig(drivers=drivers, tags=tags, bound=bound)


class ShardStartError(RuntimeError):
    """A load shard died or did not become ready; the message carries its stderr."""


@dataclass
class _Child:
    spec: ShardSpec
    proc: subprocess.Popen[str]
    stderr: IO[bytes]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    ready: bool = False
    stats: LoadStats | None = None
    reader: threading.Thread | None = None

    def read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def stderr_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace").strip()
        return "\n".join(text.splitlines()[-_STDERR_TAIL_LINES:]) or "(no output on stderr)"

    def describe(self) -> str:
        last = self.spec.first + self.spec.count - 1
        return f"load shard {self.spec.index} ({self.spec.url}, tags {self.spec.first}..{last})"

    def take_lines(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line.startswith(READY_PREFIX):
                self.ready = True
            elif line.startswith(STATS_PREFIX):
                data = json.loads(line[len(STATS_PREFIX) :])
                data.pop("rate", None)
                self.stats = LoadStats(**data)


@dataclass
class RunningShards:
    """Started shards. `stats[i]` is shard i's own account, filled in when it stops."""

    specs: list[ShardSpec]
    interval_ms: float
    pids: list[int]
    stats: list[LoadStats | None]

    @property
    def offered_rate(self) -> float:
        """Updates/s the shards are asked for."""
        return sum(s.count for s in self.specs) * 1000.0 / self.interval_ms


@contextlib.contextmanager
def run_shards(
    n_tags: int,
    interval_ms: float,
    shards: int,
    base_port: int | None = None,
    *,
    nice: int = 0,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[RunningShards]:
    """Start `shards` load-server processes for tags 1..n_tags; stop them (SIGTERM, then kill) on exit.

    Returns once every shard accepts connections. Raises `ShardStartError` naming the shard
    and quoting its stderr if one dies first or is not ready within `ready_timeout_s`.
    `nice` > 0 lowers the shards' CPU priority, so on a small machine the load generator takes
    only what the process under test leaves.
    """
    specs = plan_shards(n_tags, shards, base_port)
    children: list[_Child] = []
    running = RunningShards(specs=specs, interval_ms=interval_ms, pids=[], stats=[None] * len(specs))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with contextlib.ExitStack() as files:
        try:
            for spec in specs:
                # A file, not a pipe: nobody reads stderr until something goes wrong.
                stderr = files.enter_context(tempfile.TemporaryFile())
                args = [
                    sys.executable, "-m", "simulators.opcua_load", "--host", spec.host, "--port", str(spec.port),
                    "--first", str(spec.first), "--count", str(spec.count), "--interval-ms", str(interval_ms),
                    "--exit-on-stdin-eof", "--nice", str(nice),
                ]  # fmt: skip
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    cwd=REPO_ROOT,
                    env=env,
                )
                child = _Child(spec, proc, stderr)
                child.reader = threading.Thread(
                    target=child.read_stdout, name=f"shard{spec.index}-stdout", daemon=True
                )
                child.reader.start()
                children.append(child)
                running.pids.append(proc.pid)
            _wait_ready(children, ready_timeout_s)
            yield running
        finally:
            _stop_all(children)
            for i, child in enumerate(children):
                running.stats[i] = child.stats


def _wait_ready(children: list[_Child], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for child in children:
            child.take_lines()
            if not child.ready and child.proc.poll() is not None:
                if child.reader is not None:
                    child.reader.join(timeout=1)  # its last lines may still be in the pipe
                child.take_lines()
                if not child.ready:
                    raise ShardStartError(
                        f"{child.describe()} exited with code {child.proc.returncode} before it was ready:\n"
                        f"{child.stderr_tail()}"
                    )
        if all(child.ready for child in children):
            return
        if time.monotonic() > deadline:
            late = next(child for child in children if not child.ready)
            raise ShardStartError(
                f"{late.describe()} not ready after {timeout_s:g} s; its stderr:\n{late.stderr_tail()}"
            )
        time.sleep(0.05)  # polling the children's output


def _stop_all(children: list[_Child]) -> None:
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop on SIGTERM; killing it", child.describe())
            child.proc.kill()
            child.proc.wait()
        if child.reader is not None:
            child.reader.join(timeout=5)
        child.take_lines()
        for pipe in (child.proc.stdin, child.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


# -- command line (one shard) -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulators.opcua_load",
        description="One shard of the synthetic OPC-UA load: tags FIRST..FIRST+COUNT-1 updated every INTERVAL ms.",
    )
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--first", type=int, default=1, help="number of the first tag (tags are numbered from 1)")
    p.add_argument("--count", type=int, required=True, help="number of tags")
    p.add_argument("--interval-ms", type=float, default=100.0, help="update interval of every tag")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes (parent gone)")
    p.add_argument(
        "--nice", type=int, default=0, help="lower this process's CPU priority by this much (0-19)"
    )
    p.add_argument("--debug", action="store_true", help="asyncua's own logging at DEBUG")
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error(f"--port: {args.port} is not a TCP port (1-65535)")
    if args.first < 1 or args.count < 1:
        p.error("--first and --count must be at least 1")
    if not 0 < args.interval_ms <= 3_600_000:
        p.error("--interval-ms must be above 0 and at most 3600000")
    if not 0 <= args.nice <= 19:
        p.error("--nice must be between 0 and 19")
    return args


async def serve(args: argparse.Namespace) -> int:
    server = LoadServer(
        port=args.port, first=args.first, count=args.count, interval_ms=args.interval_ms, host=args.host
    )
    try:
        await server.start()
    except OSError as exc:
        print(f"opcua_load: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        loop.add_reader(sys.stdin.fileno(), lambda: os.read(sys.stdin.fileno(), 4096) or stop.set())
    print(
        f"{READY_PREFIX}{server.url} first={server.first} count={server.count} build_s={server.build_s:.3f}",
        flush=True,
    )
    try:
        stats = await server.run(stop)
    finally:
        await server.stop()
    print(f"{STATS_PREFIX}{stats.to_json()}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # asyncua warns about the unsecured endpoint we ask for and logs a failed start with a
    # traceback; the failure is reported here in one line instead.
    logging.getLogger("asyncua").setLevel(logging.DEBUG if args.debug else logging.CRITICAL)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:  # the address space could not be built or written
        print(f"opcua_load: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
