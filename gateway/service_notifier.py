"""sd_notify without libsystemd: readiness, status, watchdog and stopping messages to systemd.

systemd passes a datagram socket in `NOTIFY_SOCKET` (a filesystem path, or `@name` for the
Linux abstract namespace) and, when the unit sets `WatchdogSec=`, the timeout in
`WATCHDOG_USEC` plus the PID it applies to in `WATCHDOG_PID`. The protocol is one
`KEY=value` per line in one datagram; the kernel attaches our PID, which systemd checks
against `NotifyAccess=main`.

Everything here is best effort: with no `NOTIFY_SOCKET` (foreground run, tests) every call is a
no-op, and a send error is logged and swallowed, because the gateway must keep moving data even
when systemd is restarting or gone.

`watchdog_loop` pings at half the watchdog timeout, but only while the caller's health check
passes: a hung pipeline then stops the pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _parse_address(value: str) -> str | None:
    """Turn `NOTIFY_SOCKET` into an address for `sendto`, or None if we cannot use it."""
    if value.startswith("@") and len(value) > 1:
        # systemd spells abstract-namespace names with a leading '@'; the kernel wants a NUL.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Newer systemd also hands out vsock: addresses (VMs); the gateway never runs like that.
    return None


class ServiceNotifier:
    """Sends sd_notify messages to the socket named in the environment.

    `environ` defaults to `os.environ`, read once at construction.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address: str | None = None
        self._watchdog_usec: int | None = None
        # True while sends fail, so a dead socket logs one warning, not one per ping.
        self._failing = False

        raw = env.get("NOTIFY_SOCKET", "")
        if raw:
            self._address = _parse_address(raw)
            if self._address is None:
                log.warning("NOTIFY_SOCKET=%r is not a path or @abstract name; sd_notify disabled", raw)
        if self._address is not None:
            self._watchdog_usec = self._parse_watchdog(env)

    @staticmethod
    def _parse_watchdog(env: Mapping[str, str]) -> int | None:
        raw_usec = env.get("WATCHDOG_USEC", "")
        if not raw_usec:
            return None
        try:
            usec = int(raw_usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", raw_usec)
            return None
        if usec <= 0:
            return None
        raw_pid = env.get("WATCHDOG_PID", "")
        if raw_pid:
            # The variables are inherited by children; only the process systemd watches
            # may ping, or a child would keep a hung parent alive.
            try:
                pid = int(raw_pid)
            except ValueError:
                log.warning("WATCHDOG_PID=%r is not an integer; watchdog disabled", raw_pid)
                return None
            if pid != os.getpid():
                return None
        return usec

    @property
    def enabled(self) -> bool:
        """True when a usable `NOTIFY_SOCKET` was given (i.e. we run under systemd)."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between watchdog pings (half the timeout), or None if no watchdog applies."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete; systemd considers the unit started from now on."""
        fields = ["READY=1"]
        if status is not None:
            fields.append("STATUS=" + _one_line(status))
        return self._send(fields)

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by `systemctl status`."""
        return self._send(["STATUS=" + _one_line(text)])

    def reloading(self) -> bool:
        """A config reload (SIGHUP) has begun; send `ready()` when it is done.

        MONOTONIC_USEC lets systemd >= 253 match the reload to this request; older versions
        ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(["RELOADING=1", f"MONOTONIC_USEC={usec}"])

    def watchdog(self) -> bool:
        """Keep-alive ping; a no-op when the unit has no watchdog for this process."""
        if self._watchdog_usec is None:
            return False
        return self._send(["WATCHDOG=1"])

    def stopping(self) -> bool:
        """Shutdown has begun (so systemd does not mistake the exit for a crash mid-start)."""
        return self._send(["STOPPING=1"])

    def _send(self, fields: list[str]) -> bool:
        """Send one datagram; True if it went out. Never raises."""
        if self._address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            # A fresh socket per message, as libsystemd does: nothing to close, survives fork,
            # and a re-executed systemd re-binding the path is picked up. Pings are seconds apart.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Non-blocking: a wedged systemd with a full receive queue must not stall the
                # event loop that calls us; the message is dropped instead.
                sock.setblocking(False)
                sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify to %r failed (%s); will keep trying quietly", self._display(), exc)
                self._failing = True
            else:
                log.debug("sd_notify to %r failed again: %s", self._display(), exc)
            return False
        if self._failing:
            log.info("sd_notify to %r works again", self._display())
            self._failing = False
        return True

    def _display(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value field in the datagram.
    return " ".join(text.splitlines())


async def watchdog_loop(
    notifier: ServiceNotifier, is_healthy: Callable[[], bool], stop: asyncio.Event
) -> None:
    """Ping the systemd watchdog every `watchdog_interval_s` while `is_healthy()` holds.

    Returns as soon as `stop` is set, or at once if no watchdog is configured. An unhealthy
    (or raising) check skips the ping, so systemd kills and restarts a gateway whose pipeline
    stalled or whose driver supervisors died; it is logged once per unhealthy stretch.
    """
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    healthy_before = True
    while not stop.is_set():
        error: Exception | None = None
        try:
            healthy = bool(is_healthy())
        except Exception as exc:
            # A broken health check must not end the loop (the gateway would then be killed
            # with no trace of why): treat it as unhealthy and say so.
            healthy, error = False, exc
        if healthy:
            notifier.watchdog()
            if not healthy_before:
                log.info("gateway healthy again; watchdog pings resumed")
        elif healthy_before:
            log.warning(
                "gateway unhealthy%s; withholding watchdog pings (systemd restarts it on timeout)",
                " (health check raised)" if error else "",
                exc_info=error,
            )
        healthy_before = healthy
        # Wait on the event, not a sleep: stop ends the loop at once, not after the interval.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
