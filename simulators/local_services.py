"""Real local services for a demo or test run: mosquitto, InfluxDB 1.x and the nginx v2-compat proxy.

Each service is a child process on free 127.0.0.1 ports with its config, data and log in a
temp dir. `start()` returns once the service really answers (MQTT CONNACK, HTTP 204 on /ping),
or raises `RuntimeError` with the log tail; `stop()` terminates and reaps it and is safe to call
twice. A missing binary names `scripts/install-system-deps`. Only the standard library is used:
the `linegate demo` command and the pytest fixtures import this module.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
PROXY_TEMPLATE = REPO_ROOT / "config" / "influxdb-v2-compat.nginx.conf"
INSTALL_HINT = "install it with scripts/install-system-deps"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05
_LOG_TAIL_LINES = 40

# Services still running at interpreter exit (a crashed demo, an interrupted test session) are
# stopped here, so no broker or database outlives the process that started it.
_running: set[_Service] = set()


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_running):
        service.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


class _AddressInUse(RuntimeError):
    pass


class _StartStop:
    """`with` support for anything with `start() -> Self` and `stop()`: start on entry, stop on exit."""

    # Declared so `__enter__`/`__exit__` type-check here; every subclass defines both.
    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Service(_StartStop):
    """A child process with a work dir, a log file and a readiness probe."""

    binary: str = ""
    label: str = ""
    # Further log files in the work dir whose tails explain a failed start.
    extra_logs: tuple[str, ...] = ()

    def __init__(self, workdir: Path | None = None, startup_timeout: float = STARTUP_TIMEOUT_S) -> None:
        self._given_dir = workdir
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._startup_timeout = startup_timeout
        self._started_once = False

    # -- for subclasses ---------------------------------------------------------------------
    def _prepare(self, workdir: Path, exe: str) -> list[str]:
        """Write config files into `workdir`; return the command line."""
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _new_ports(self) -> bool:
        """Pick other free ports after a lost race for one (first start only); False if fixed."""
        return False

    # -- public -----------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self._dir is None:
            raise RuntimeError(f"{self.label} is not started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.label}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> Self:
        """Start the service (again, after `stop(keep_workdir=True)`, on the same ports and data)."""
        if self.running:
            return self
        exe = shutil.which(self.binary) or shutil.which(self.binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if exe is None:
            raise RuntimeError(f"{self.label}: binary '{self.binary}' not found on PATH; {INSTALL_HINT}")
        if self._dir is None:
            if self._given_dir is not None:
                self._dir = self._given_dir
                self._dir.mkdir(parents=True, exist_ok=True)
            else:
                self._dir = Path(tempfile.mkdtemp(prefix=f"linegate-{self.label}-"))
        # Some services drop privileges (mosquitto, nginx workers): they must reach the dir.
        self._dir.chmod(0o755)
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            try:
                self._start_once(exe)
                break
            except _AddressInUse:
                # Another process took a port between our probe and the service's bind.
                if attempt == attempts - 1 or not self._new_ports():
                    raise
        self._started_once = True
        _running.add(self)
        return self

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Terminate and reap the process; remove the temp dir unless `keep_workdir` (for a restart)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc)
        _running.discard(self)
        if not keep_workdir and self._dir is not None:
            if self._given_dir is None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self._dir is None:
            return "(no log)"
        parts: list[str] = []
        for name in (self.log_path.name, *self.extra_logs):
            try:
                text = (self._dir / name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                parts.append(f"--- {name} ---\n{tail}")
        return "\n".join(parts) or "(empty log)"

    # -- internals --------------------------------------------------------------------------
    def _start_once(self, exe: str) -> None:
        workdir = self.workdir
        cmd = self._prepare(workdir, exe)
        with self.log_path.open("ab") as log:
            # A new session: Ctrl-C in a demo reaches the demo, which then stops us in order.
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                tail = self.log_tail()
                error = _AddressInUse if "address already in use" in tail.lower() else RuntimeError
                raise error(f"{self.label} ({' '.join(cmd)}) exited with code {code} while starting:\n{tail}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                proc, self._proc = self._proc, None
                _terminate(proc)
                raise RuntimeError(
                    f"{self.label} ({' '.join(cmd)}) did not answer within {self._startup_timeout:g} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(_POLL_S)  # poll interval of a readiness check with a deadline


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- mosquitto --------------------------------------------------------------------------------

# MQTT 3.1.1 CONNECT, clean session, keepalive 10 s, empty client id (the broker assigns one).
_MQTT_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
_MQTT_CONNACK_OK = bytes([0x20, 2, 0, 0])
_MQTT_DISCONNECT = bytes([0xE0, 0])


def mqtt_handshake(
    host: str, port: int, timeout: float = 2.0, tls: ssl.SSLContext | None = None, *, connect: bool = True
) -> bool:
    """True when an MQTT broker at host:port accepts an anonymous CONNECT.

    With `tls`, the TLS handshake comes first (verifying the broker with that context); with
    `connect=False` a completed handshake is enough (for a listener that wants a client
    certificate the probe does not have: in TLS 1.3 the client finishes its side first).
    """
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            # wrap_socket takes the connection over (and does the handshake) when it succeeds.
            s = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        except OSError:
            raw.close()
            raise
        with s:
            if not connect:
                return True
            s.sendall(_MQTT_CONNECT)
            reply = b""
            while len(reply) < 4:
                chunk = s.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            s.sendall(_MQTT_DISCONNECT)
            return reply == _MQTT_CONNACK_OK
    except OSError:  # ssl.SSLError included
        return False


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener for `Mosquitto`: the broker's certificate and key, the CA for client certs.

    With `require_certificate`, clients must present a certificate signed by `ca_file`.
    `probe_cert_file`/`probe_key_file` (a client certificate) let the readiness probe do a full
    MQTT CONNECT over TLS; without them a listener requiring certificates is ready once the TLS
    handshake completes.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False
    probe_cert_file: Path | None = None
    probe_key_file: Path | None = None


class Mosquitto(_Service):
    """An anonymous mosquitto broker on 127.0.0.1, no persistence; plain TCP or, with `tls`, TLS."""

    binary = "mosquitto"
    label = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        tls: MosquittoTls | None = None,
    ) -> None:
        super().__init__(workdir, startup_timeout)
        self.host = HOST
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.tls = tls
        self._tls_dir: Path | None = None  # mosquitto's private copies of the TLS files

    def _new_ports(self) -> bool:
        if not self._fixed_port:
            self.port = free_port()
        return not self._fixed_port

    def _prepare(self, workdir: Path, exe: str) -> list[str]:
        conf = workdir / "mosquitto.conf"
        # log_dest stdout: the log file is our redirect, opened before mosquitto drops to its
        # own user, so the dir needs no write permission for that user.
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "connection_messages false\n" + (self._tls_conf() if self.tls is not None else ""),
            encoding="utf-8",
        )
        return [exe, "-c", str(conf)]

    def _tls_conf(self) -> str:
        assert self.tls is not None
        # mosquitto started as root drops to user `mosquitto` before it reads certificates and
        # keys, and a given workdir may sit below a directory only we can enter (pytest's
        # tmp_path). So it gets its own copies in a fresh private dir (0700) it owns.
        self._drop_tls_dir()
        tls_dir = Path(tempfile.mkdtemp(prefix="linegate-mosquitto-tls-"))
        self._tls_dir = tls_dir
        owner = _mosquitto_user()
        if owner is not None:
            os.chown(tls_dir, owner, -1)
        paths: dict[str, Path] = {}
        for key, source in (
            ("cafile", self.tls.ca_file),
            ("certfile", self.tls.cert_file),
            ("keyfile", self.tls.key_file),
        ):
            target = tls_dir / f"{key}.pem"
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if owner is not None:
                os.chown(target, owner, -1)
            paths[key] = target
        return (
            f"cafile {paths['cafile']}\n"
            f"certfile {paths['certfile']}\n"
            f"keyfile {paths['keyfile']}\n"
            f"require_certificate {'true' if self.tls.require_certificate else 'false'}\n"
        )

    def _drop_tls_dir(self) -> None:
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def stop(self, *, keep_workdir: bool = False) -> None:
        super().stop(keep_workdir=keep_workdir)
        self._drop_tls_dir()

    def _ready(self) -> bool:
        if self.tls is None:
            return mqtt_handshake(self.host, self.port)
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
        has_cert = self.tls.probe_cert_file is not None and self.tls.probe_key_file is not None
        if has_cert:
            ctx.load_cert_chain(str(self.tls.probe_cert_file), str(self.tls.probe_key_file))
        return mqtt_handshake(
            self.host, self.port, tls=ctx, connect=has_cert or not self.tls.require_certificate
        )


def _mosquitto_user() -> int | None:
    """The uid mosquitto will run as when we start it as root; None when it keeps ours."""
    if os.geteuid() != 0:
        return None  # a non-root mosquitto cannot change user: it reads files as us
    try:
        return pwd.getpwnam("mosquitto").pw_uid
    except KeyError:
        return None  # no such user: mosquitto then stays root (and warns)


# -- InfluxDB 1.x -----------------------------------------------------------------------------


def _patch_influx_config(text: str, overrides: dict[tuple[str, str], str]) -> str:
    """Replace `key = value` lines of the given (section, key) pairs; "" is the top level.

    Every override must hit, so a differently shaped `influxd config` fails here, not later.
    """
    section = ""
    hit: set[tuple[str, str]] = set()
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif "=" in stripped and not stripped.startswith("#"):
            key = stripped.split("=", 1)[0].strip()
            name = section.strip("[]")
            if (name, key) in overrides and not section.startswith("[["):
                indent = line[: len(line) - len(line.lstrip())]
                line = f"{indent}{key} = {overrides[(name, key)]}"
                hit.add((name, key))
        out.append(line)
    missing = set(overrides) - hit
    if missing:
        raise RuntimeError(f"influxd config has no keys {sorted(missing)}; cannot build a local config")
    return "\n".join(out) + "\n"


class InfluxDB(_Service):
    """InfluxDB 1.x (`influxd`) with data, WAL and meta in the work dir; HTTP on a free port."""

    binary = "influxd"
    label = "influxd"

    def __init__(
        self,
        http_port: int | None = None,
        workdir: Path | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        super().__init__(workdir, startup_timeout)
        self.host = HOST
        self._fixed_port = http_port is not None
        self.http_port = http_port if http_port is not None else free_port()
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _new_ports(self) -> bool:
        if not self._fixed_port:
            self.http_port = free_port()
        self.rpc_port = free_port()
        return True

    def _prepare(self, workdir: Path, exe: str) -> list[str]:
        # An empty -config gives the built-in defaults, not whatever /etc/influxdb holds.
        empty = workdir / "empty.conf"
        empty.write_text("", encoding="utf-8")
        defaults = subprocess.run(
            [exe, "config", "-config", str(empty)], check=True, capture_output=True, text=True
        ).stdout
        q = json.dumps  # TOML basic strings are JSON strings for our paths
        conf = _patch_influx_config(
            defaults,
            {
                ("", "reporting-enabled"): "false",
                ("", "bind-address"): q(f"{self.host}:{self.rpc_port}"),
                ("meta", "dir"): q(str(workdir / "meta")),
                ("meta", "logging-enabled"): "false",
                ("data", "dir"): q(str(workdir / "data")),
                ("data", "wal-dir"): q(str(workdir / "wal")),
                ("data", "query-log-enabled"): "false",
                ("monitor", "store-enabled"): "false",
                ("http", "bind-address"): q(f"{self.host}:{self.http_port}"),
                ("http", "log-enabled"): "false",
                ("logging", "level"): q("warn"),
                ("logging", "suppress-logo"): "true",
                ("continuous_queries", "log-enabled"): "false",
            },
        )
        path = workdir / "influxdb.conf"
        path.write_text(conf, encoding="utf-8")
        return [exe, "-config", str(path)]

    def _ready(self) -> bool:
        return _http_status(f"{self.url}/ping") == 204

    def query(self, influxql: str, db: str = "", *, epoch: str | None = None) -> dict[str, Any]:
        """Run InfluxQL via POST /query; the decoded JSON. Raises RuntimeError on any error."""
        params = {"q": influxql}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.url}/query", data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"InfluxQL {influxql!r} failed: HTTP {exc.code} {exc.read()!r}") from exc
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        if "error" in body or errors:
            raise RuntimeError(f"InfluxQL {influxql!r} failed: {body.get('error') or errors}")
        return dict(body)

    def rows(self, influxql: str, db: str, *, epoch: str | None = "ms") -> list[dict[str, Any]]:
        """The result of one SELECT as flat dicts (columns plus GROUP BY tags), in order."""
        out: list[dict[str, Any]] = []
        for result in self.query(influxql, db, epoch=epoch).get("results", []):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {_quote_ident(name)}")


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- nginx v2-compat proxy --------------------------------------------------------------------


class InfluxV2CompatProxy(_Service):
    """nginx serving InfluxDB's v2 write API (`/api/v2/write`) in front of an InfluxDB 1.x.

    Rendered from config/influxdb-v2-compat.nginx.conf, so tests exercise the shipped file.
    """

    binary = "nginx"
    label = "nginx"
    extra_logs = ("error.log",)

    def __init__(
        self,
        upstream: InfluxDB | str,
        port: int | None = None,
        workdir: Path | None = None,
        template: Path = PROXY_TEMPLATE,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        super().__init__(workdir, startup_timeout)
        self.host = HOST
        self._upstream = upstream
        self._template = template
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def upstream(self) -> str:
        """host:port of the InfluxDB 1.x behind the proxy."""
        up = self._upstream
        return f"{up.host}:{up.http_port}" if isinstance(up, InfluxDB) else up

    def _new_ports(self) -> bool:
        if not self._fixed_port:
            self.port = free_port()
        return not self._fixed_port

    def _prepare(self, workdir: Path, exe: str) -> list[str]:
        text = self._template.read_text(encoding="utf-8")
        for placeholder, value in {
            "@LISTEN@": f"{self.host}:{self.port}",
            "@UPSTREAM@": self.upstream,
            "@PREFIX@": str(workdir),
        }.items():
            if placeholder not in text:
                raise RuntimeError(f"{self._template} lacks the placeholder {placeholder}")
            text = text.replace(placeholder, value)
        conf = workdir / "nginx.conf"
        conf.write_text(text, encoding="utf-8")
        # -e: errors before the config is read go to our log, not /var/log/nginx.
        return [exe, "-p", str(workdir), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]

    def _ready(self) -> bool:
        return _http_status(f"{self.url}/ping") == 204


# -- all three --------------------------------------------------------------------------------


class LocalStack(_StartStop):
    """mosquitto + InfluxDB (database `linegate`) + the v2-compat proxy, for a demo or test run."""

    database = "linegate"

    def __init__(self, workdir: Path | None = None) -> None:
        def sub(name: str) -> Path | None:
            return workdir / name if workdir is not None else None

        self.mosquitto = Mosquitto(workdir=sub("mosquitto"))
        self.influxdb = InfluxDB(workdir=sub("influxdb"))
        self.proxy = InfluxV2CompatProxy(self.influxdb, workdir=sub("nginx"))

    def start(self) -> Self:
        try:
            self.mosquitto.start()
            self.influxdb.start()
            self.influxdb.create_database(self.database)
            self.proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for service in (self.proxy, self.influxdb, self.mosquitto):
            service.stop()
