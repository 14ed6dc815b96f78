"""The OPC-UA PKI directory: our application certificate, trusted and rejected server certificates.

Layout (the OPC-UA convention, reduced to what a client needs):

    own/cert.der      our application instance certificate (self-signed, created on first use)
    own/key.pem       its RSA private key, mode 0600
    trusted/          server certificates (DER or PEM) we accept; a trusted CA trusts what it issued
    rejected/         server certificates we refused, named `<CN>_<sha256>.der`, for `certs trust`

Trust is pinned: a server certificate is trusted when the same certificate (by SHA-256) is in
`trusted/`, or when a CA certificate there issued it. `trusted/` is read on every check, so a
certificate trusted while the gateway runs is used on the next connection attempt.

Nothing here talks to the network; errors are `PkiError` with the file and the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import math
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
# Servers disagree about clocks by minutes; a certificate born "in the future" is refused.
BACKDATE = dt.timedelta(hours=1)
OWN_CERT_DAYS = 730
RSA_BITS = 2048

ExpiryStatus = Literal["ok", "expiring", "expired", "not yet valid"]


class PkiError(Exception):
    """A PKI file or directory is unusable; the message names it and says why."""


@dataclass(frozen=True)
class PkiDir:
    root: Path

    @property
    def own(self) -> Path:
        return self.root / "own"

    @property
    def own_cert(self) -> Path:
        return self.own / "cert.der"

    @property
    def own_key(self) -> Path:
        return self.own / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


@dataclass(frozen=True)
class CertFile:
    """A certificate read from a file, with what an operator needs to recognise it."""

    path: Path
    cert: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string() or "(empty subject)"


@dataclass(frozen=True)
class OwnCertificate:
    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    created: bool


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lowercase hex without separators (easy to copy)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def days_left(cert: x509.Certificate, now: dt.datetime | None = None) -> int:
    """Whole days until the certificate expires; negative once it has."""
    now = now or dt.datetime.now(dt.UTC)
    return math.floor((cert.not_valid_after_utc - now).total_seconds() / 86400)


def expiry_status(cert: x509.Certificate, warning_days: int, now: dt.datetime | None = None) -> ExpiryStatus:
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        return "expired"
    if cert.not_valid_before_utc > now:
        return "not yet valid"
    if days_left(cert, now) < warning_days:
        return "expiring"
    return "ok"


def load_certificate(path: Path) -> x509.Certificate:
    """A DER or PEM certificate file; PkiError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_certificate(data, str(path))


def parse_certificate(data: bytes, where: str) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{where}: not a DER or PEM certificate ({exc})") from exc


def read_cert_dir(directory: Path) -> tuple[list[CertFile], list[str]]:
    """The certificates in `directory` (sorted by name) and one problem line per unreadable file."""
    certs: list[CertFile] = []
    problems: list[str] = []
    try:
        entries = sorted(p for p in directory.iterdir() if p.suffix.lower() in CERT_SUFFIXES)
    except FileNotFoundError:
        return certs, problems
    except OSError as exc:
        return certs, [f"{directory}: cannot list: {exc.strerror or exc}"]
    for path in entries:
        try:
            certs.append(CertFile(path, load_certificate(path)))
        except PkiError as exc:
            problems.append(str(exc))
    return certs, problems


def is_trusted(cert: x509.Certificate, trusted: list[CertFile]) -> bool:
    """Pinned by fingerprint, or issued (signature checked) by a trusted CA certificate."""
    fp = fingerprint(cert)
    for entry in trusted:
        if entry.fingerprint == fp:
            return True
        if entry.cert.subject == cert.issuer and _is_ca(entry.cert):
            try:
                cert.verify_directly_issued_by(entry.cert)
            except (ValueError, TypeError, x509.InvalidSignature):
                continue
            return True
    return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_trusted(pki: PkiDir, cert: x509.Certificate) -> bool:
    """Whether `cert` is trusted now: `trusted/` is re-read on every call."""
    trusted, problems = read_cert_dir(pki.trusted)
    for problem in problems:
        log.warning("PKI: ignoring %s", problem)
    return is_trusted(cert, trusted)


def rejected_name(cert: x509.Certificate) -> str:
    cn = re.sub(r"[^A-Za-z0-9._-]+", "-", common_name(cert)).strip("-.")[:64] or "no-cn"
    return f"{cn}_{fingerprint(cert)}.der"


def save_rejected(pki: PkiDir, cert: x509.Certificate) -> tuple[Path, bool]:
    """Write a refused certificate to `rejected/` (DER); returns its path and whether it is new."""
    path = pki.rejected / rejected_name(cert)
    if path.exists():
        return path, False
    try:
        pki.rejected.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, cert.public_bytes(serialization.Encoding.DER), 0o644)
    except OSError as exc:
        raise PkiError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return path, True


def make_self_signed(
    *,
    common_name: str,
    application_uri: str,
    hostnames: list[str],
    days: int,
    server: bool = False,
    valid_from: dt.datetime | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """An OPC-UA application instance certificate (Part 6 §6.2.2): RSA, SHA-256, URI in the SAN.

    `server` chooses the extended key usage (serverAuth instead of clientAuth); the simulator and
    the tests make server certificates with it. `valid_from` defaults to an hour ago.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = valid_from or dt.datetime.now(dt.UTC) - BACKDATE
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    sans += [x509.DNSName(h) for h in dict.fromkeys(hostnames) if h]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # The key usages OPC-UA asks of an application certificate (Part 6 table 43).
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def write_cert_and_key(
    cert: x509.Certificate, key: rsa.RSAPrivateKey, cert_path: Path, key_path: Path
) -> None:
    """The key first (0600), then the certificate: a certificate file means the pair is complete."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.DER), 0o644)


def ensure_own_certificate(pki: PkiDir, application_uri: str) -> OwnCertificate:
    """Our certificate and key, created on first use; the existing pair is reused as is.

    Blocking (RSA key generation takes a fraction of a second): run it in a thread. A lock file
    keeps two processes (the gateway and `linegate browse`) from making two different pairs.
    """
    try:
        pki.own.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(pki.own / ".lock"):
            return _ensure_own_locked(pki, application_uri)
    except OSError as exc:
        raise PkiError(f"{pki.own}: {exc.strerror or exc}") from exc


def _ensure_own_locked(pki: PkiDir, application_uri: str) -> OwnCertificate:
    if pki.own_cert.exists():
        if not pki.own_key.exists():
            raise PkiError(
                f"{pki.own_cert} exists but its key {pki.own_key} is missing: restore the key, or remove "
                f"{pki.own} to make a new certificate (servers will then have to trust the new one)"
            )
        cert = load_certificate(pki.own_cert)
        _check_key(pki, cert)
        _warn_uri_mismatch(pki, cert, application_uri)
        return OwnCertificate(pki.own_cert, pki.own_key, cert, created=False)
    # No certificate (a key alone is a creation cut short: its certificate was never handed out).
    host = socket.gethostname()
    cert, key = make_self_signed(
        common_name=f"linegate@{host}",
        application_uri=application_uri,
        hostnames=[host, socket.getfqdn()],
        days=OWN_CERT_DAYS,
    )
    write_cert_and_key(cert, key, pki.own_cert, pki.own_key)
    log.warning(
        "PKI: created our OPC-UA application certificate %s (CN=%s, SHA-256 %s, valid %d days); "
        "the server must trust it before a secure session opens",
        pki.own_cert,
        common_name(cert),
        fingerprint(cert),
        OWN_CERT_DAYS,
    )
    return OwnCertificate(pki.own_cert, pki.own_key, cert, created=True)


def _check_key(pki: PkiDir, cert: x509.Certificate) -> None:
    try:
        key = serialization.load_pem_private_key(pki.own_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{pki.own_key}: not an unencrypted PEM private key ({exc})") from exc
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise PkiError(f"{pki.own_key} is not the key of {pki.own_cert}")
    mode = pki.own_key.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "PKI: %s is readable by others (mode %o); run: chmod 600 %s", pki.own_key, mode, pki.own_key
        )


def _warn_uri_mismatch(pki: PkiDir, cert: x509.Certificate, application_uri: str) -> None:
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = uris.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        found = []
    if application_uri not in found:
        log.warning(
            "PKI: %s is for %s, but the configured application_uri is %s: servers may refuse the "
            "session; remove %s to make a new certificate",
            pki.own_cert,
            ", ".join(found) or "no application URI",
            application_uri,
            pki.own,
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
