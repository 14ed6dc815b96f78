"""ServiceNotifier and watchdog_loop against a real AF_UNIX datagram socket standing in for systemd.

Each test binds its own socket and exports it as NOTIFY_SOCKET, then reads the datagrams the
notifier sends, byte for byte. Waits are bounded by socket or asyncio timeouts, never sleeps;
"nothing was sent" is checked deterministically with a marker datagram sent afterwards (the
socket queue is FIFO) or a non-blocking read once the loop has provably run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from gateway.service_notifier import ServiceNotifier, watchdog_loop

RECV_TIMEOUT_S = 5.0
# 200 ms watchdog timeout: the loop pings every 100 ms.
FAST_WATCHDOG_USEC = "200000"


@pytest.fixture
def notify_sock(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket exported as NOTIFY_SOCKET, with credentials passing on."""
    # A short directory of our own: pytest's tmp_path can exceed the 107-byte sun_path limit.
    with tempfile.TemporaryDirectory(prefix="lg-notify-") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        # What systemd does, so tests can check the kernel-attached sender PID.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        try:
            yield sock
        finally:
            sock.close()


def recv(sock: socket.socket, timeout: float = RECV_TIMEOUT_S) -> bytes:
    """One datagram, or TimeoutError after `timeout` seconds."""
    sock.settimeout(timeout)
    return sock.recv(4096)


def recv_with_pid(sock: socket.socket) -> tuple[bytes, int]:
    sock.settimeout(RECV_TIMEOUT_S)
    creds = struct.Struct("3i")  # struct ucred: pid, uid, gid
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(creds.size))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return data, creds.unpack(payload[: creds.size])[0]
    raise AssertionError("no SCM_CREDENTIALS on the datagram")


def assert_queue_empty(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        extra = sock.recv(4096)
    except BlockingIOError:
        return
    finally:
        sock.setblocking(True)
    raise AssertionError(f"unexpected datagram {extra!r}")


def test_messages_are_exact_datagrams_from_our_pid(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = ServiceNotifier()
    assert notifier.enabled
    assert notifier.watchdog_interval_s == pytest.approx(15.0)

    assert notifier.ready(status="3 drivers connected")
    data, pid = recv_with_pid(notify_sock)
    assert data == b"READY=1\nSTATUS=3 drivers connected"
    # systemd's NotifyAccess=main accepts only datagrams whose kernel-stamped PID is the main PID.
    assert pid == os.getpid()

    assert notifier.ready()
    assert recv(notify_sock) == b"READY=1"
    assert notifier.status("buffering 120 points")
    assert recv(notify_sock) == b"STATUS=buffering 120 points"
    assert notifier.watchdog()
    assert recv(notify_sock) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert recv(notify_sock) == b"STOPPING=1"
    assert_queue_empty(notify_sock)


def test_status_newlines_cannot_inject_fields(notify_sock: socket.socket) -> None:
    ServiceNotifier().status("line one\nREADY=1")
    assert recv(notify_sock) == b"STATUS=line one READY=1"


def test_reloading_sends_monotonic_timestamp(notify_sock: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert ServiceNotifier().reloading()
    first, second = recv(notify_sock).split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"linegate-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = ServiceNotifier()
        assert notifier.enabled
        assert notifier.ready()
        assert recv(sock) == b"READY=1"


def test_unset_notify_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    # A watchdog without a socket to ping is no watchdog.
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = ServiceNotifier()
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert not notifier.ready("x")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_unusable_notify_socket_value_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not ServiceNotifier().enabled


def test_explicit_environ_mapping_is_used(notify_sock: socket.socket) -> None:
    path = notify_sock.getsockname()
    notifier = ServiceNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    assert notifier.watchdog_interval_s == pytest.approx(0.5)
    assert notifier.watchdog()
    assert recv(notify_sock) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("pid_value", "enabled"),
    [(None, True), ("self", True), ("1", False), ("not-a-pid", False)],
)
def test_watchdog_pid_decides_whether_we_ping(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch, pid_value: str | None, enabled: bool
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    if pid_value is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid_value == "self" else pid_value)
    notifier = ServiceNotifier()
    assert (notifier.watchdog_interval_s is not None) is enabled
    assert notifier.watchdog() is enabled
    # The marker goes out after the (possible) ping; FIFO order tells whether the ping was sent.
    notifier.status("marker")
    if enabled:
        assert recv(notify_sock) == b"WATCHDOG=1"
    assert recv(notify_sock) == b"STATUS=marker"
    assert_queue_empty(notify_sock)


@pytest.mark.parametrize("usec", ["", "0", "abc"])
def test_bad_or_zero_watchdog_usec_disables_watchdog(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch, usec: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    notifier = ServiceNotifier()
    assert notifier.enabled
    assert notifier.watchdog_interval_s is None


def test_send_errors_are_swallowed_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with tempfile.TemporaryDirectory(prefix="lg-notify-") as tmp:
        path = os.path.join(tmp, "notify")
        # systemd went away: the socket path no longer exists.
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        notifier = ServiceNotifier()
        with caplog.at_level(logging.DEBUG, logger="gateway.service_notifier"):
            assert not notifier.ready()
            assert not notifier.watchdog()
            assert not notifier.stopping()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, caplog.text

        # systemd is back: sends work again and a later outage warns afresh.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            assert notifier.watchdog()
            assert recv(sock) == b"WATCHDOG=1"
        os.unlink(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gateway.service_notifier"):
            assert not notifier.watchdog()
        assert len(caplog.records) == 1


# --- watchdog_loop ---------------------------------------------------------------------------


async def arecv(sock: socket.socket) -> bytes:
    """Receive without blocking the event loop the watchdog task runs on."""
    sock.setblocking(False)
    async with asyncio.timeout(RECV_TIMEOUT_S):
        return await asyncio.get_running_loop().sock_recv(sock, 4096)


async def stop_task(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    # Well under any watchdog interval used here: the loop must wake on the event.
    await asyncio.wait_for(task, timeout=2.0)


async def test_loop_pings_every_half_timeout_while_healthy(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", FAST_WATCHDOG_USEC)
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []

    class TimedNotifier(ServiceNotifier):
        def watchdog(self) -> bool:
            # Stamp the send itself: receive times would include the test's own scheduling delays.
            sent_at.append(loop.time())
            return super().watchdog()

    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(TimedNotifier(), lambda: True, stop))
    try:
        for _ in range(4):
            assert await arecv(notify_sock) == b"WATCHDOG=1"
    finally:
        await stop_task(task, stop)
    # At least one 100 ms interval between pings: the loop waits rather than spinning. (Lower
    # bound only, with slack for the event loop's clock resolution; load can only lengthen it.)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(gaps) >= 3
    assert min(gaps) >= 0.09, gaps


async def test_loop_withholds_pings_while_unhealthy(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", FAST_WATCHDOG_USEC)
    healthy = True
    unhealthy_checks = 0
    three_unhealthy_checks = asyncio.Event()

    def is_healthy() -> bool:
        nonlocal unhealthy_checks
        if not healthy:
            unhealthy_checks += 1
            if unhealthy_checks >= 3:
                three_unhealthy_checks.set()
        return healthy

    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(ServiceNotifier(), is_healthy, stop))
    try:
        assert await arecv(notify_sock) == b"WATCHDOG=1"
        with caplog.at_level(logging.WARNING, logger="gateway.service_notifier"):
            healthy = False
            await asyncio.wait_for(three_unhealthy_checks.wait(), RECV_TIMEOUT_S)
            # Three intervals went by with a failing check and not one ping was sent.
            assert_queue_empty(notify_sock)
        assert len([r for r in caplog.records if "unhealthy" in r.getMessage()]) == 1

        healthy = True
        assert await arecv(notify_sock) == b"WATCHDOG=1"
    finally:
        await stop_task(task, stop)


async def test_loop_treats_a_raising_health_check_as_unhealthy(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", FAST_WATCHDOG_USEC)
    checks = 0

    def is_healthy() -> bool:
        nonlocal checks
        checks += 1
        if checks <= 2:
            raise RuntimeError("health check bug")
        return True

    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(ServiceNotifier(), is_healthy, stop))
    try:
        # The loop survived two raising checks and pinged on the third.
        assert await arecv(notify_sock) == b"WATCHDOG=1"
        assert checks == 3
    finally:
        await stop_task(task, stop)


async def test_loop_returns_promptly_when_stopped(
    notify_sock: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 30 s ping interval: returning within stop_task's 2 s proves the loop awaits the event.
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_loop(ServiceNotifier(), lambda: True, stop))
    assert await arecv(notify_sock) == b"WATCHDOG=1"
    await stop_task(task, stop)
    assert task.done()


async def test_loop_returns_at_once_without_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    await asyncio.wait_for(watchdog_loop(ServiceNotifier(), lambda: True, asyncio.Event()), 1.0)
