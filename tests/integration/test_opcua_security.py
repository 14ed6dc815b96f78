"""OPC-UA security against the simulator's real asyncua server: policies, trust, identities, expiry.

Each test starts its own `SimOpcUaServer` with a freshly made server certificate and connects
through `open_session`, the path every gateway OPC-UA user takes. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import shlex
import socket
import stat
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from drivers.opcua_pki import PkiDir, fingerprint, make_self_signed, rejected_name, write_cert_and_key
from drivers.opcua_security import UntrustedServerCertificate, certs_command, configure_security
from drivers.opcua_session import describe, make_client, open_session
from gateway.config import OpcUaDriver, OpcUaSecurity, parse_config
from gateway.errors import FatalDriverError, LinegateError, RetryableError
from simulators.local_services import free_port
from simulators.opcua_server import SimOpcUaServer
from simulators.opcua_server_security import IdentityKind, SeenIdentity, SimServerSecurity
from simulators.plant import SIGNALS

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "config" / "line1.toml"
LINEGATE = Path(sys.executable).with_name("linegate")
TAG = "bw_feed.total"
VALUE = 12.5
SERVER_URI = "urn:linegate:simulator:server"
TRUST_HINT = re.compile(r"to trust it run: (linegate certs .*)$")


@dataclass
class SecureSim:
    server: SimOpcUaServer
    url: str
    cert: x509.Certificate
    cert_file: Path


@contextlib.asynccontextmanager
async def secure_sim(
    tmp: Path,
    *,
    policies: tuple[str, ...] = ("Basic256Sha256_SignAndEncrypt",),
    identities: tuple[IdentityKind, ...] = ("anonymous", "username", "certificate"),
    users: dict[str, str] | None = None,
    days: int = 365,
) -> AsyncIterator[SecureSim]:
    """The simulator's OPC-UA server with a new self-signed certificate, serving TAG = VALUE."""
    data: dict[str, Any] = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    url = f"opc.tcp://127.0.0.1:{free_port()}/linegate/sim"
    data["drivers"]["plc"]["url"] = url
    cert, key = make_self_signed(
        common_name="sim plc",
        application_uri=SERVER_URI,
        hostnames=["localhost", socket.gethostname()],
        days=days,
        server=True,
    )
    server_dir = tmp / "server"
    server_dir.mkdir(exist_ok=True)
    cert_file, key_file = server_dir / f"{fingerprint(cert)[:8]}.der", server_dir / "key.pem"
    write_cert_and_key(cert, key, cert_file, key_file)
    security = SimServerSecurity(
        cert_file, key_file, policies=policies, identities=identities, users=users or {}
    )
    server = SimOpcUaServer(parse_config(data), "plc", known_signals=SIGNALS, security=security)
    async with server:
        await server.publish({TAG: VALUE}, datetime.now(UTC))
        yield SecureSim(server, url, cert, cert_file)


def settings(
    url: str, pki: Path, policy: str = "Basic256Sha256", mode: str = "SignAndEncrypt", **kw: Any
) -> OpcUaDriver:
    return OpcUaDriver(
        type="opcua",
        url=url,
        request_timeout_s=10,
        security=OpcUaSecurity(policy=policy, mode=mode, pki_dir=str(pki), **kw),  # type: ignore[arg-type]
    )


async def read_tag(config: OpcUaDriver) -> float:
    async with open_session(config, "test") as client:
        value = await client.get_node(f"ns=2;s={TAG}").read_value()
    assert isinstance(value, float)
    return value


def trust_file(pki: Path, cert_file: Path) -> None:
    """Trust a server certificate handed over out of band, as an operator would."""
    out = io.StringIO()
    assert (
        certs_command(pki, action="trust", certificate=str(cert_file), expiry_warning_days=30, out=out) == 0
    )
    assert "trusted: CN=sim plc" in out.getvalue()


def certs_list(pki: Path, warning_days: int = 30) -> str:
    out = io.StringIO()
    assert certs_command(pki, action="list", certificate=None, expiry_warning_days=warning_days, out=out) == 0
    return out.getvalue()


async def run_linegate(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(LINEGATE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_untrusted_server_is_refused_until_trusted_then_sign_and_encrypt_works(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    async with secure_sim(tmp_path) as sim:
        config = settings(sim.url, pki)
        fp = fingerprint(sim.cert)

        with pytest.raises(RetryableError) as refused:
            await read_tag(config)
        message = str(refused.value)
        assert f"cannot connect to {sim.url}" in message
        assert f"server certificate CN=sim plc (SHA-256 {fp[:16]}) is not trusted" in message
        assert message.endswith(f"to trust it run: linegate certs --pki-dir {pki} trust {fp[:16]}")
        rejected = list((pki / "rejected").iterdir())
        assert [p.name for p in rejected] == [f"sim-plc_{fp}.der"]
        assert rejected[0].read_bytes() == sim.cert.public_bytes(Encoding.DER)

        listing = certs_list(pki)
        assert "trusted server certificates: 0" in listing
        assert re.search(rf"rejected server certificates: 1 .*\n  rejected/sim-plc_{fp}\.der\n", listing)
        assert f"sha256   {fp}" in listing

        # Refused again while untrusted: trust is decided on every attempt, not remembered.
        with pytest.raises(RetryableError, match="is not trusted"):
            await read_tag(config)

        out = io.StringIO()
        prefix = ":".join(fp[i : i + 2] for i in range(0, 12, 2)).upper()  # as a GUI would show it
        assert certs_command(pki, action="trust", certificate=prefix, expiry_warning_days=30, out=out) == 0
        assert f"trusted: CN=sim plc (sha256 {fp})" in out.getvalue()
        assert list((pki / "rejected").iterdir()) == []

        # Same process, same settings, no restart: the next attempt connects (encrypted channel).
        assert await read_tag(config) == VALUE
        async with open_session(config, "test") as client:
            assert client.security_policy.URI.endswith("#Basic256Sha256")
            assert client.security_policy.Mode.name == "SignAndEncrypt"


async def test_the_command_in_the_refusal_works_from_the_shell(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    async with secure_sim(tmp_path) as sim:
        config = settings(sim.url, pki)
        with pytest.raises(RetryableError) as refused:
            await read_tag(config)
        hint = TRUST_HINT.search(str(refused.value))
        assert hint is not None

        rc, out, err = await run_linegate("certs", "--pki-dir", str(pki), "list")
        assert (rc, err) == (0, "")
        assert "rejected server certificates: 1" in out
        assert fingerprint(sim.cert) in out

        argv = shlex.split(hint.group(1))
        rc, out, err = await run_linegate(*argv[1:])
        assert (rc, err) == (0, ""), err
        assert "trusted: CN=sim plc" in out

        rc, out, err = await run_linegate("certs", "--pki-dir", str(pki), "list")
        assert "trusted server certificates: 1" in out
        assert "rejected server certificates: 0" in out
        assert await read_tag(config) == VALUE

        rc, out, err = await run_linegate("certs", "--pki-dir", str(pki), "trust", "00000000")
        assert rc == 1
        assert out == ""
        assert "no rejected certificate has a SHA-256 fingerprint starting with 00000000" in err
        assert "Traceback" not in err


async def test_the_session_hook_rechecks_trust_at_create_session(tmp_path: Path) -> None:
    """asyncua's certificate_validator re-reads trusted/: distrust between setup and connect is caught."""
    pki = PkiDir(tmp_path / "pki")
    async with secure_sim(tmp_path) as sim:
        trust_file(pki.root, sim.cert_file)
        config = settings(sim.url, pki.root)
        client = make_client(config)
        await configure_security(client, config, "test")
        for path in pki.trusted.iterdir():
            path.unlink()
        with pytest.raises(UntrustedServerCertificate) as refused:
            await client.connect()
        assert describe(refused.value).startswith("UntrustedServerCertificate: server certificate CN=sim plc")
        assert TRUST_HINT.search(str(refused.value))
        assert (pki.rejected / rejected_name(sim.cert)).exists()


async def test_application_certificate_is_made_on_first_run_and_reused(tmp_path: Path) -> None:
    pki = PkiDir(tmp_path / "pki")
    async with secure_sim(tmp_path) as sim:
        trust_file(pki.root, sim.cert_file)
        config = settings(sim.url, pki.root, application_uri="urn:plant7:linegate")
        assert not pki.own.exists()
        assert await read_tag(config) == VALUE

        cert = x509.load_der_x509_certificate(pki.own_cert.read_bytes())
        assert stat.S_IMODE(pki.own_key.stat().st_mode) == 0o600
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:plant7:linegate"]
        assert socket.gethostname() in san.get_values_for_type(x509.DNSName)
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 365 <= lifetime.days <= 2 * 366

        first = (pki.own_cert.read_bytes(), pki.own_key.read_bytes(), pki.own_cert.stat().st_mtime_ns)
        assert await read_tag(config) == VALUE
        assert (pki.own_cert.read_bytes(), pki.own_key.read_bytes(), pki.own_cert.stat().st_mtime_ns) == first


SECURE = [
    (policy, mode)
    for policy in ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
    for mode in ("Sign", "SignAndEncrypt")
]


def server_policy(policy: str, mode: str) -> str:
    """The asyncua SecurityPolicyType name for a config policy and mode."""
    return f"{policy.replace('_', '')}_{mode}"


async def test_every_secure_policy_and_mode_connects(tmp_path: Path) -> None:
    # One server offering them all (a server start costs seconds); each combination on its own.
    async with secure_sim(tmp_path, policies=tuple(server_policy(p, m) for p, m in SECURE)) as sim:
        trust_file(tmp_path / "pki", sim.cert_file)
        for policy, mode in SECURE:
            config = settings(sim.url, tmp_path / "pki", policy, mode)
            async with open_session(config, "test") as client:
                assert client.security_policy.URI.endswith("#" + policy), (policy, mode)
                assert client.security_policy.Mode.name == mode, (policy, mode)
                assert await client.get_node(f"ns=2;s={TAG}").read_value() == VALUE, (policy, mode)


async def test_a_policy_the_server_does_not_offer_is_a_configuration_error(tmp_path: Path) -> None:
    async with secure_sim(tmp_path, policies=("Basic256Sha256_SignAndEncrypt", "NoSecurity")) as sim:
        config = settings(sim.url, tmp_path / "pki", "Aes256_Sha256_RsaPss", "Sign")
        with pytest.raises(FatalDriverError) as refused:
            await read_tag(config)
    assert "offers no Aes256_Sha256_RsaPss/Sign endpoint" in str(refused.value)
    assert "it offers: Basic256Sha256/SignAndEncrypt, None/None" in str(refused.value)


CHANNELS = [("Basic256Sha256", "SignAndEncrypt"), ("Aes256_Sha256_RsaPss", "Sign"), ("None", "None")]


async def test_username_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = (*(server_policy(p, m) for p, m in CHANNELS if p != "None"), "NoSecurity")
    async with secure_sim(
        tmp_path, policies=policies, identities=("username",), users={"op": "s3cret"}
    ) as sim:
        trust_file(tmp_path / "pki", sim.cert_file)
        users = sim.server.user_manager
        assert users is not None
        for policy, mode in CHANNELS:
            config = settings(
                sim.url,
                tmp_path / "pki",
                policy,
                mode,
                identity="username",
                username="op",
                password_env="PLC_PW",
            )
            monkeypatch.setenv("PLC_PW", "s3cret")
            assert await read_tag(config) == VALUE, (policy, mode)
            assert users.seen[-1] == SeenIdentity("username", "op", accepted=True), (policy, mode)

            monkeypatch.setenv("PLC_PW", "wrong")
            with pytest.raises(LinegateError) as refused:
                await read_tag(config)
            assert "BadUserAccessDenied" in str(refused.value), (policy, mode)
            assert sim.url in str(refused.value)
            assert users.seen[-1] == SeenIdentity("username", "op", accepted=False), (policy, mode)

            monkeypatch.delenv("PLC_PW")
            with pytest.raises(FatalDriverError, match="environment variable PLC_PW, which is not set"):
                await read_tag(config)


async def test_certificate_identity(tmp_path: Path) -> None:
    policies = (*(server_policy(p, m) for p, m in CHANNELS if p != "None"), "NoSecurity")
    async with secure_sim(tmp_path, policies=policies, identities=("certificate",)) as sim:
        trust_file(tmp_path / "pki", sim.cert_file)
        for policy, mode in CHANNELS:
            # The server takes certificate tokens only: anonymous is refused (the control) ...
            # (LinegateError: whether a refused identity is retryable is open_session's call.)
            with pytest.raises(LinegateError, match="BadIdentityTokenRejected"):
                await read_tag(settings(sim.url, tmp_path / "pki", policy, mode))
            # ... and our application certificate as the identity token is accepted.
            config = settings(sim.url, tmp_path / "pki", policy, mode, identity="certificate")
            assert await read_tag(config) == VALUE, (policy, mode)


async def test_a_server_certificate_near_expiry_is_flagged_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = tmp_path / "pki"
    async with secure_sim(tmp_path, days=10) as sim:
        trust_file(pki, sim.cert_file)
        with caplog.at_level(logging.WARNING, logger="drivers.opcua_security"):
            assert await read_tag(settings(sim.url, pki, expiry_warning_days=30)) == VALUE
    expiring = [r for r in caplog.records if "expires in" in r.getMessage()]
    assert len(expiring) == 1
    assert expiring[0].levelno == logging.WARNING
    assert "server certificate (CN=sim plc" in expiring[0].getMessage()
    assert "expires in 9 days" in expiring[0].getMessage()

    listing = certs_list(pki, warning_days=30)
    server_block = listing.split("trusted server certificates: 1\n", 1)[1]
    assert re.search(r"\(9 days left\)  EXPIRES SOON \(within 30 days\)", server_block)
    own_block = listing.split("trusted server certificates")[0]
    assert "EXPIRES SOON" not in own_block
    assert "EXPIRES SOON" not in certs_list(pki, warning_days=5)
