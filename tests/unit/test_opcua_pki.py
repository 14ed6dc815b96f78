"""The OPC-UA PKI directory and `linegate certs`, on real files and real certificates (no server)."""

from __future__ import annotations

import datetime as dt
import io
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from drivers.opcua_pki import (
    PkiDir,
    PkiError,
    days_left,
    ensure_own_certificate,
    expiry_status,
    fingerprint,
    is_trusted,
    make_self_signed,
    read_cert_dir,
    rejected_name,
    save_rejected,
    write_cert_and_key,
)
from drivers.opcua_security import certs_command, report_expiry, resolve_pki_dir
from gateway.config import OpcUaSecurity
from tests.pki import make_pki

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
URI = "urn:test:linegate"
_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def quick_cert(cn: str, *, start: dt.datetime = NOW, days: float = 365) -> x509.Certificate:
    """A cheap self-signed EC certificate: the PKI code does not care about the key type."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_EC_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(_EC_KEY, hashes.SHA256())
    )


def certs(pki: Path, action: str, certificate: str | None = None, days: int = 30) -> tuple[int, str]:
    out = io.StringIO()
    rc = certs_command(pki, action=action, certificate=certificate, expiry_warning_days=days, out=out)
    return rc, out.getvalue()


# --- expiry -------------------------------------------------------------------------------------


def test_days_left_and_expiry_status() -> None:
    cert = quick_cert("c", start=NOW - dt.timedelta(days=5), days=40)  # ends NOW + 35 days
    assert days_left(cert, NOW) == 35
    assert expiry_status(cert, 30, NOW) == "ok"
    assert expiry_status(cert, 36, NOW) == "expiring"
    later = NOW + dt.timedelta(days=35, hours=1)
    assert days_left(cert, later) == -1
    assert expiry_status(cert, 30, later) == "expired"
    assert expiry_status(cert, 30, NOW - dt.timedelta(days=6)) == "not yet valid"


def test_report_expiry_logs_warning_error_or_nothing_once_a_day(caplog: pytest.LogCaptureFixture) -> None:
    ok = quick_cert("ok", start=NOW - dt.timedelta(days=1), days=400)
    soon = quick_cert("soon", start=NOW - dt.timedelta(days=1), days=11)
    gone = quick_cert("gone", start=NOW - dt.timedelta(days=30), days=20)
    with caplog.at_level(logging.WARNING, logger="drivers.opcua_security"):
        assert report_expiry("t", "server certificate", ok, None, 30, NOW) == "ok"
        assert report_expiry("t", "server certificate", soon, None, 30, NOW) == "expiring"
        assert (
            report_expiry("t", "our application certificate", gone, Path("own/cert.der"), 30, NOW)
            == "expired"
        )
        # Retries the same day say nothing new; the next day says it again.
        report_expiry("t", "server certificate", soon, None, 30, NOW + dt.timedelta(hours=1))
        report_expiry("t", "server certificate", soon, None, 30, NOW + dt.timedelta(days=1))
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0][0] == logging.WARNING
    assert "server certificate (CN=soon, SHA-256 " in messages[0][1]
    assert "expires in 10 days" in messages[0][1]
    assert messages[1][0] == logging.ERROR
    assert "our application certificate own/cert.der (CN=gone" in messages[1][1]
    assert "EXPIRED 10 days ago" in messages[1][1]
    assert "expires in 9 days" in messages[2][1]


# --- our certificate ----------------------------------------------------------------------------


def test_own_certificate_is_made_once_with_a_private_key_file(tmp_path: Path) -> None:
    pki = PkiDir(tmp_path / "pki")
    first = ensure_own_certificate(pki, URI)
    assert first.created
    assert stat.S_IMODE(pki.own_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.own.stat().st_mode) == 0o700
    san = first.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [URI]
    usage = first.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_encipherment, usage.data_encipherment) == (True, True, True)
    second = ensure_own_certificate(pki, URI)
    assert not second.created
    assert fingerprint(second.cert) == fingerprint(first.cert)


def test_a_key_left_without_its_certificate_is_replaced(tmp_path: Path) -> None:
    pki = PkiDir(tmp_path)
    pki.own.mkdir()
    pki.own_key.write_bytes(b"half-made")
    made = ensure_own_certificate(pki, URI)
    assert made.created
    assert b"half-made" not in pki.own_key.read_bytes()


def test_a_certificate_without_its_key_or_with_another_key_is_an_error(tmp_path: Path) -> None:
    pki = PkiDir(tmp_path)
    ensure_own_certificate(pki, URI)
    pki.own_key.unlink()
    with pytest.raises(PkiError, match=r"cert\.der exists but its key .*key\.pem is missing"):
        ensure_own_certificate(pki, URI)
    other_cert, other_key = make_self_signed(common_name="x", application_uri=URI, hostnames=[], days=9)
    write_cert_and_key(other_cert, other_key, tmp_path / "other.der", pki.own_key)
    with pytest.raises(PkiError, match=r"key\.pem is not the key of .*cert\.der"):
        ensure_own_certificate(pki, URI)
    pki.own_key.write_text("garbage")
    with pytest.raises(PkiError, match="not an unencrypted PEM private key"):
        ensure_own_certificate(pki, URI)


def test_a_loose_key_mode_or_another_application_uri_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = PkiDir(tmp_path)
    ensure_own_certificate(pki, URI)
    pki.own_key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="drivers.opcua_pki"):
        ensure_own_certificate(pki, "urn:other")
    text = caplog.text
    assert "readable by others (mode 644); run: chmod 600" in text
    assert f"is for {URI}, but the configured application_uri is urn:other" in text


def test_pki_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_pki_dir(OpcUaSecurity(pki_dir="/x/pki")) == Path("/x/pki")
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert resolve_pki_dir(None) == tmp_path / "a" / "pki"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_pki_dir(OpcUaSecurity()) == tmp_path / ".local" / "state" / "linegate" / "pki"


# --- trust --------------------------------------------------------------------------------------


def test_trust_is_pinned_or_by_a_trusted_ca(tmp_path: Path) -> None:
    plant = make_pki(tmp_path / "plant", "plant")
    other = make_pki(tmp_path / "other", "other")
    server = x509.load_pem_x509_certificate(plant.server_cert.read_bytes())
    pki = PkiDir(tmp_path / "pki")
    pki.trusted.mkdir(parents=True)
    (pki.trusted / "other-ca.pem").write_bytes(other.ca_file.read_bytes())
    (pki.trusted / "other-server.pem").write_bytes(other.server_cert.read_bytes())
    trusted, problems = read_cert_dir(pki.trusted)
    assert (len(trusted), problems) == (2, [])
    assert not is_trusted(server, trusted)
    (pki.trusted / "plant-ca.pem").write_bytes(plant.ca_file.read_bytes())
    assert is_trusted(server, read_cert_dir(pki.trusted)[0])
    pinned = quick_cert("pinned")
    (pki.trusted / "pinned.der").write_bytes(pinned.public_bytes(Encoding.DER))
    assert is_trusted(pinned, read_cert_dir(pki.trusted)[0])
    assert not is_trusted(quick_cert("pinned"), read_cert_dir(pki.trusted)[0])  # same name, other cert


def test_certs_list_of_a_missing_directory(tmp_path: Path) -> None:
    rc, out = certs(tmp_path / "nope", "list")
    assert rc == 0
    assert (
        out
        == f"PKI directory {tmp_path / 'nope'} does not exist yet: it is made on the first secure OPC-UA connection.\n"
    )


def test_certs_list_flags_expiry_and_survives_garbage(tmp_path: Path) -> None:
    pki = PkiDir(tmp_path)
    today = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    expired = quick_cert("old plc", start=today - dt.timedelta(days=400), days=365)
    fine = quick_cert("new plc", start=today, days=365)
    save_rejected(pki, expired)
    save_rejected(pki, fine)
    pki.trusted.mkdir()
    (pki.trusted / "broken.der").write_bytes(b"\x30\x03abc")
    rc, out = certs(pki.root, "list")
    assert rc == 0
    assert "own certificate (give it to the server's administrator to trust):\n  none yet" in out
    assert "trusted server certificates: 0\n  UNREADABLE " in out
    assert "broken.der: not a DER or PEM certificate" in out
    assert "rejected server certificates: 2 (trust one with: linegate certs --pki-dir " in out
    assert (
        f"  rejected/{rejected_name(expired)}\n    subject  CN=old plc\n    sha256   {fingerprint(expired)}\n"
        in out
    )
    assert "(-36 days left)  EXPIRED" in out
    assert "(364 days left)\n" in out


def test_trust_by_file_name_fingerprint_or_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = PkiDir(tmp_path / "pki")
    a, b, c = quick_cert("a"), quick_cert("b"), quick_cert("c")
    for cert in (a, b):
        save_rejected(pki, cert)

    rc, out = certs(pki.root, "trust", rejected_name(a))
    assert rc == 0
    assert out.startswith(f"trusted: CN=a (sha256 {fingerprint(a)})")
    assert (pki.trusted / rejected_name(a)).exists()
    assert not (pki.rejected / rejected_name(a)).exists()

    colons = ":".join(fingerprint(b)[i : i + 2] for i in range(0, 20, 2)).upper()
    assert certs(pki.root, "trust", colons)[0] == 0
    assert (pki.trusted / rejected_name(b)).exists()
    assert list(pki.rejected.iterdir()) == []
    assert certs(pki.root, "trust", fingerprint(b)[:10]) == (
        0,
        f"already trusted: CN=b (sha256 {fingerprint(b)})\n",
    )

    handed_over = tmp_path / "plc-export.pem"
    handed_over.write_bytes(c.public_bytes(Encoding.PEM))
    rc, out = certs(pki.root, "trust", str(handed_over))
    assert rc == 0
    assert is_trusted(c, read_cert_dir(pki.trusted)[0])
    assert capsys.readouterr().err == ""


def test_trust_refuses_unknown_short_ambiguous_and_garbage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = PkiDir(tmp_path / "pki")
    seen: dict[str, x509.Certificate] = {}
    while True:  # two certificates whose fingerprints share 4 hex digits (a few hundred tries)
        cert = quick_cert("twin")
        prefix = fingerprint(cert)[:4]
        if prefix in seen:
            break
        seen[prefix] = cert
    save_rejected(pki, cert)
    save_rejected(pki, seen[prefix])

    cases = {
        prefix: f"trust: {prefix} is ambiguous, it matches: ",
        prefix[:3]: "give at least 4 hex digits",
        "ffffffffffff0000": "no rejected certificate has a SHA-256 fingerprint starting with ffffffffffff0000",
        "not-a-cert": "is neither a file in",
    }
    for arg, reason in cases.items():
        out = io.StringIO()
        assert certs_command(pki.root, action="trust", certificate=arg, expiry_warning_days=30, out=out) == 1
        err = capsys.readouterr().err
        assert reason in err, (arg, err)
        assert err.startswith("linegate certs: ")
        assert out.getvalue() == ""
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"nope")
    assert certs(pki.root, "trust", str(garbage))[0] == 1
    assert "garbage.der: not a DER or PEM certificate" in capsys.readouterr().err
    assert len(list(pki.rejected.iterdir())) == 2
    assert not pki.trusted.exists()
    assert certs(pki.root, "frobnicate")[0] == 1
    assert "unknown action 'frobnicate'" in capsys.readouterr().err
