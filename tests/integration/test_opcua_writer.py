"""The OPC-UA setpoint writer against the simulator's real asyncua server (a strict PLC).

The server here refuses setpoint writes that carry timestamps (BadWriteNotSupported), as
many PLCs do, so every successful write in this module also shows the writer sends none.
One server serves the module (an asyncua server takes seconds to start): tests compare the
server's counters before and after, and the restart test starts servers of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from drivers.opcua_writer import OpcUaSetpointWriter
from gateway.config import LineConfig, OpcUaDriver, parse_config
from gateway.setpoint_port import WriteFailure
from simulators.local_services import free_port
from simulators.opcua_server import SimOpcUaServer
from simulators.plant import SIGNALS, Plant, SetpointSpec

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
REQUEST_TIMEOUT_S = 2.0
FEED = "ns=2;s=shr.feed_rate_sp"  # Double, stored in steps of 0.05 t/h, EURange [0, 2]
JACKET = "ns=2;s=dry.jacket_temp_sp"  # Float (a PLC REAL), EURange [40, 100]


def local_config(port: int) -> LineConfig:
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    data["drivers"]["plc"]["url"] = f"opc.tcp://127.0.0.1:{port}/linegate/sim"
    data["drivers"]["plc"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    return parse_config(data, str(CONFIG))


@dataclass
class Plc:
    config: LineConfig
    plant: Plant
    server: SimOpcUaServer

    @property
    def settings(self) -> OpcUaDriver:
        driver = self.config.drivers["plc"]
        assert isinstance(driver, OpcUaDriver)
        return driver

    def counts(self) -> tuple[int, int]:
        """Setpoint writes the server accepted and refused so far."""
        return self.server.setpoint_writes, self.server.setpoint_rejections

    def setpoint(self, name: str) -> float:
        return self.plant.setpoints()[name]


async def start_plc(config: LineConfig, setpoints: Mapping[str, SetpointSpec] | None = None) -> Plc:
    plant = Plant(seed=3)
    server = SimOpcUaServer(
        config,
        "plc",
        known_signals=SIGNALS,
        setpoints=setpoints if setpoints is not None else plant.setpoint_specs,
        initial_setpoints=plant.setpoints(),
        on_setpoint=plant.set_setpoint,
        initial_time=datetime.now(UTC),
        refuse_write_timestamps=True,
    )
    await server.start()
    return Plc(config, plant, server)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc() -> AsyncIterator[Plc]:
    plc = await start_plc(local_config(free_port()))
    try:
        yield plc
    finally:
        await plc.server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def writer(plc: Plc) -> AsyncIterator[OpcUaSetpointWriter]:
    async with OpcUaSetpointWriter("plc", plc.settings) as w:
        yield w


async def test_an_int_written_to_a_float_node_is_typed_and_confirmed(
    plc: Plc, writer: OpcUaSetpointWriter
) -> None:
    writes, _ = plc.counts()
    out = await writer.write(JACKET, 85)
    assert out.ok, out
    assert (out.failure, out.status, out.datatype) == (None, "Good", "Float")
    assert out.written == 85.0
    assert isinstance(out.written, float)
    assert out.read_back == 85.0
    assert plc.setpoint("dry.jacket_temp_sp") == 85.0

    # A value a REAL cannot hold exactly: sent rounded to 32 bits, read back exactly that.
    out = await writer.write(JACKET, 85.3)
    assert out.ok, out
    assert out.written != 85.3
    assert out.written == pytest.approx(85.3, rel=1e-7)
    assert out.read_back == out.written
    assert plc.counts()[0] == writes + 2

    # Why the typing matters: the same value as a Double is refused by this node.
    async with Client(plc.settings.url) as client:
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await client.get_node(JACKET).write_value(ua.DataValue(ua.Variant(85.0, ua.VariantType.Double)))


async def test_a_value_outside_the_eurange_is_refused_without_sending(
    plc: Plc, writer: OpcUaSetpointWriter
) -> None:
    before, feed = plc.counts(), plc.setpoint("shr.feed_rate_sp")
    out = await writer.write(FEED, 2.5)
    assert not out.ok
    assert out.failure == WriteFailure.OUT_OF_RANGE
    assert "[0.0, 2.0]" in out.detail, out.detail
    assert (out.written, out.status, out.read_back) == (None, None, None)
    assert writer.writes_sent == 0
    assert plc.counts() == before
    assert plc.setpoint("shr.feed_rate_sp") == feed


async def test_the_servers_own_out_of_range_refusal_is_mapped(plc: Plc) -> None:
    (writes, rejections), feed = plc.counts(), plc.setpoint("shr.feed_rate_sp")
    async with OpcUaSetpointWriter("plc", plc.settings, check_eurange=False) as writer:
        out = await writer.write(FEED, 2.5)
    assert out.failure == WriteFailure.OUT_OF_RANGE
    # asyncua answers with a ServiceFault for the whole request: the writer maps it all the same.
    assert (out.status, out.written) == ("BadOutOfRange", 2.5)
    assert "BadOutOfRange" in out.detail
    assert plc.counts() == (writes, rejections + 1)
    assert plc.setpoint("shr.feed_rate_sp") == feed


async def test_a_quantised_setpoint_reports_a_readback_mismatch(
    plc: Plc, writer: OpcUaSetpointWriter
) -> None:
    out = await writer.write(FEED, 1.72)
    assert not out.ok
    assert out.failure == WriteFailure.READBACK_MISMATCH
    # The PLC accepted the write (Good) and stored it in 0.05 t/h steps.
    assert (out.status, out.written, out.read_back) == ("Good", 1.72, 1.7)
    assert "1.72" in out.detail
    assert "1.7" in out.detail
    assert plc.setpoint("shr.feed_rate_sp") == 1.7

    out = await writer.write(FEED, 1.72, tolerance=0.05)
    assert out.ok, out
    out = await writer.write(FEED, 1.35)
    assert out.ok, out
    assert out.read_back == 1.35
    assert plc.setpoint("shr.feed_rate_sp") == 1.35


async def test_a_measured_value_is_not_writable(plc: Plc, writer: OpcUaSetpointWriter) -> None:
    out = await writer.write("ns=2;s=bm.total", 0.0)
    assert out.failure == WriteFailure.ACCESS_DENIED
    assert out.status == "BadUserAccessDenied"
    assert out.read_back is None


async def test_unknown_and_malformed_nodes_are_bad_node(writer: OpcUaSetpointWriter) -> None:
    out = await writer.write("ns=2;s=shr.no_such_sp", 1.0)
    assert (out.failure, out.status, out.written) == (WriteFailure.BAD_NODE, "BadNodeIdUnknown", None)
    # An asset Object has no Value: not a tag to write.
    out = await writer.write("ns=2;s=shr", 1.0)
    assert out.failure == WriteFailure.BAD_NODE, out
    opened = writer.sessions_opened
    out = await writer.write("shr.feed_rate_sp", 1.0)
    assert out.failure == WriteFailure.BAD_NODE
    assert "not an OPC-UA node id" in out.detail
    assert writer.sessions_opened == opened


@pytest.mark.parametrize("value", [math.nan, math.inf, "1.5"])
async def test_a_non_finite_value_is_refused_before_connecting(plc: Plc, value: Any) -> None:
    before = plc.counts()
    async with OpcUaSetpointWriter("plc", plc.settings) as writer:
        out = await writer.write(FEED, value)
        assert out.failure == WriteFailure.INVALID_VALUE
        assert out.written is None
        assert (writer.sessions_opened, writer.writes_sent, writer.connected) == (0, 0, False)
    assert plc.counts() == before


async def test_the_written_datavalue_carries_no_timestamps(plc: Plc, writer: OpcUaSetpointWriter) -> None:
    writes, rejections = plc.counts()
    async with Client(plc.settings.url) as client:
        node = client.get_node(FEED)
        # The PLC's check is live: asyncua's own write_value stamps a SourceTimestamp ...
        with pytest.raises(ua.uaerrors.BadWriteNotSupported):
            await node.write_value(ua.Variant(1.5, ua.VariantType.Double))
        # ... and a ServerTimestamp alone is refused as well.
        stamped = ua.DataValue(ua.Variant(1.5, ua.VariantType.Double), ServerTimestamp=datetime.now(UTC))
        with pytest.raises(ua.uaerrors.BadWriteNotSupported):
            await node.write_value(stamped)
    assert plc.counts() == (writes, rejections + 2)

    out = await writer.write(FEED, 1.5)
    assert out.ok, out
    assert plc.counts() == (writes + 1, rejections + 2)
    assert plc.setpoint("shr.feed_rate_sp") == 1.5


async def test_server_down_is_disconnected_promptly_and_the_next_write_reconnects() -> None:
    plc = await start_plc(local_config(free_port()))
    try:
        async with OpcUaSetpointWriter("plc", plc.settings) as writer:
            out = await writer.write(JACKET, 85)
            assert (out.ok, out.datatype, writer.sessions_opened) == (True, "Float", 1)

            await plc.server.stop()
            t0 = time.monotonic()
            out = await writer.write(JACKET, 86)
            elapsed = time.monotonic() - t0
            assert out.failure == WriteFailure.DISCONNECTED, out
            assert elapsed < REQUEST_TIMEOUT_S, elapsed
            assert not writer.connected

            # Restarted on the same port after a program change: the REAL became an LREAL.
            # The writer must learn the DataType afresh with its new session.
            specs = dict(plc.plant.setpoint_specs)
            specs["dry.jacket_temp_sp"] = dataclasses.replace(specs["dry.jacket_temp_sp"], datatype="Double")
            plc2 = await start_plc(plc.config, specs)
            try:
                out = await writer.write(JACKET, 85.3)
                assert out.ok, out
                assert (out.datatype, out.written, out.read_back) == ("Double", 85.3, 85.3)
                assert writer.sessions_opened == 2
                assert plc2.setpoint("dry.jacket_temp_sp") == 85.3
            finally:
                await plc2.server.stop()
    finally:
        await plc.server.stop()


class FreezableProxy:
    """A TCP relay to the PLC whose answers can be swallowed: a server that hangs mid-session."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while data := await r.read(65536):
                    if not (answers and self.frozen):
                        w.write(data)
                        await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        for task in (
            asyncio.create_task(pump(client_r, server_w, answers=False)),
            asyncio.create_task(pump(server_r, client_w, answers=True)),
        ):
            self._tasks.add(task)


async def test_an_unanswered_write_is_a_timeout_that_may_have_been_applied(plc: Plc) -> None:
    port = int(plc.settings.url.split(":")[2].split("/")[0])
    async with FreezableProxy(port) as proxy:
        url = f"opc.tcp://127.0.0.1:{proxy.port}/linegate/sim"
        async with OpcUaSetpointWriter("plc", plc.settings.model_copy(update={"url": url})) as writer:
            assert (await writer.write(FEED, 1.5)).ok

            proxy.frozen = True
            t0 = time.monotonic()
            out = await writer.write(FEED, 1.0)
            elapsed = time.monotonic() - t0
            assert out.failure == WriteFailure.TIMEOUT, out
            assert (out.written, out.status, out.read_back) == (1.0, None, None)
            assert "may or may not have been applied" in out.detail
            # One request timeout, not two: the hung session is cut, not closed politely.
            assert REQUEST_TIMEOUT_S <= elapsed < 1.5 * REQUEST_TIMEOUT_S, elapsed
            # And indeed it was: only the answer got lost.
            assert plc.setpoint("shr.feed_rate_sp") == 1.0

            proxy.frozen = False
            out = await writer.write(FEED, 1.25)
            assert out.ok, out
            assert writer.sessions_opened == 2
