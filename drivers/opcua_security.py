"""OPC-UA session security: policy and mode, our certificate, server trust, user identity.

`configure_security` prepares an asyncua `Client` before `connect()`:

- identity: anonymous, username (password from the environment variable `password_env`; secrets
  stay out of config files), or our application certificate as an X509 identity token;
- a secure policy (Sign / SignAndEncrypt): our application certificate from the PKI directory
  (created on first use, see `drivers.opcua_pki`), the server's certificate fetched with
  GetEndpoints and checked against `trusted/` *before* we open the secure channel.

An unknown server certificate is refused: a copy goes to `rejected/` and the connect fails with a
`RetryableError` that names the exact `linegate certs ... trust <fingerprint>` command. Trust is
re-read on every attempt, so once the operator trusts it the running gateway connects on its
next retry, without a restart. asyncua's own `TrustStore` is not used: it does X.509 path
validation (self-signed PLC certificates without CA flags fail it) and logs a traceback for
every untrusted certificate; OPC-UA practice is to pin the certificate itself.

A trusted server certificate that has expired is still used (the operator pinned that exact
certificate) but logged as an ERROR on every connection day; expiring ones (within
`expiry_warning_days`) as a WARNING; likewise for our own certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.uacrypto import x509_from_der
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from drivers.opcua_certs import certs_command, trust_command_hint
from drivers.opcua_pki import (
    ExpiryStatus,
    PkiDir,
    PkiError,
    check_trusted,
    common_name,
    days_left,
    ensure_own_certificate,
    expiry_status,
    fingerprint,
    save_rejected,
)
from gateway.config import OpcUaDriver, OpcUaSecurity
from gateway.errors import FatalDriverError, RetryableError
from gateway.state_paths import state_dir

log = logging.getLogger(__name__)

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES: dict[str, ua.MessageSecurityMode] = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}

# (fingerprint, status, day): an expiry problem is logged once a day per certificate, not per retry.
_reported: set[tuple[str, str, dt.date]] = set()


class UntrustedServerCertificate(ua.UaError):
    """Raised from asyncua's certificate hook; a `ua.UaError`, so `open_session` keeps the message."""


def resolve_pki_dir(security: OpcUaSecurity | None) -> Path:
    if security is not None and security.pki_dir is not None:
        return Path(security.pki_dir)
    return state_dir() / "pki"


async def configure_security(client: Client, settings: OpcUaDriver, who: str) -> None:
    """Set identity and channel security on `client`; may ask the server for its endpoints."""
    sec = settings.security
    if sec.identity == "username":
        assert sec.username is not None  # the config validator guarantees it
        client.set_user(sec.username)
        client.set_password(_password(sec, who))
    if sec.policy == "None" and sec.identity != "certificate":
        return

    pki = PkiDir(resolve_pki_dir(sec))
    try:
        own = await asyncio.to_thread(ensure_own_certificate, pki, sec.application_uri)
    except PkiError as exc:
        raise FatalDriverError(f"opcua {who}: our certificate: {exc}") from exc
    report_expiry(who, "our application certificate", own.cert, own.cert_path, sec.expiry_warning_days)
    # Must equal the URI in our certificate's SubjectAltName, or servers refuse the session.
    client.application_uri = sec.application_uri
    try:
        if sec.identity == "certificate":
            await client.load_client_certificate(str(own.cert_path))
            await client.load_private_key(own.key_path)
    except (OSError, ValueError, TypeError) as exc:
        raise _own_files_error(pki, who, exc) from exc
    if sec.policy == "None":
        return

    server_cert = await _server_certificate(settings, who)
    verify_server_certificate(pki, server_cert, settings, who)
    try:
        await client.set_security(
            POLICIES[sec.policy],
            str(own.cert_path),
            str(own.key_path),
            # Pinned: asyncua refuses a CreateSession that presents another certificate.
            server_certificate=server_cert.public_bytes(Encoding.DER),
            mode=MODES[sec.mode],
        )
    except (OSError, ValueError, TypeError) as exc:
        raise _own_files_error(pki, who, exc) from exc
    # Belt and braces: asyncua checks the CreateSession certificate equals the one pinned above;
    # this re-checks trust there too, in case asyncua's flow changes.
    client.certificate_validator = _SessionCertificateCheck(pki, settings, who)


def _own_files_error(pki: PkiDir, who: str, exc: Exception) -> FatalDriverError:
    # Checked moments ago by ensure_own_certificate: the files changed under us.
    return FatalDriverError(f"opcua {who}: cannot load our certificate/key from {pki.own}: {exc}")


def _password(sec: OpcUaSecurity, who: str) -> str:
    name = sec.password_env
    value = os.environ.get(name) if name else None
    if not value:
        state = "is not set" if value is None else "is empty"
        raise FatalDriverError(
            f"opcua {who}: identity 'username' takes the password from environment variable {name}, "
            f"which {state}"
        )
    return value


async def _server_certificate(settings: OpcUaDriver, who: str) -> x509.Certificate:
    """The certificate of the server's endpoint matching our policy and mode (GetEndpoints)."""
    # Imported here: opcua_session imports this module.
    from drivers.opcua_session import CONNECTION_ERRORS, describe

    sec = settings.security
    probe = Client(settings.url, timeout=settings.request_timeout_s)
    try:
        endpoints = await probe.connect_and_get_server_endpoints()
    except CONNECTION_ERRORS as exc:
        raise RetryableError(f"opcua {who}: cannot connect to {settings.url}: {describe(exc)}") from exc
    uri, mode = POLICIES[sec.policy].URI, MODES[sec.mode]
    for ep in endpoints:
        if ep.SecurityPolicyUri == uri and ep.SecurityMode == mode and ep.ServerCertificate:
            try:
                cert = x509_from_der(ep.ServerCertificate)  # the first one, if the server sends a chain
            except ValueError as exc:
                raise RetryableError(
                    f"opcua {who}: cannot connect to {settings.url}: the server's certificate is "
                    f"unreadable ({exc})"
                ) from exc
            assert cert is not None  # not empty: checked above
            return cert
    offered = sorted(
        {f"{str(e.SecurityPolicyUri).rsplit('#', 1)[-1]}/{_mode_name(e.SecurityMode)}" for e in endpoints}
    )
    raise FatalDriverError(
        f"opcua {who}: {settings.url} offers no {sec.policy}/{sec.mode} endpoint with a certificate; "
        f"it offers: {', '.join(offered) or 'nothing'}"
    )


def _mode_name(value: object) -> str:
    try:
        return ua.MessageSecurityMode(value).name.rstrip("_")  # None_ is asyncua's spelling of None
    except ValueError:
        return f"mode {value!r}"


def verify_server_certificate(pki: PkiDir, cert: x509.Certificate, settings: OpcUaDriver, who: str) -> None:
    """Return if `trusted/` trusts `cert`; else save it to `rejected/` and raise RetryableError."""
    if check_trusted(pki, cert):
        report_expiry(who, "server certificate", cert, None, settings.security.expiry_warning_days)
        return
    reason = untrusted_reason(pki, cert, who)
    raise RetryableError(f"opcua {who}: cannot connect to {settings.url}: {reason}")


def untrusted_reason(pki: PkiDir, cert: x509.Certificate, who: str) -> str:
    """Save the refused certificate and say what the operator runs to trust it."""
    fp = fingerprint(cert)
    try:
        path, new = save_rejected(pki, cert)
        saved = f"saved as {path}"
    except PkiError as exc:
        new, saved = True, f"could not save it: {exc}"
    reason = (
        f"server certificate CN={common_name(cert)} (SHA-256 {fp[:16]}) is not trusted ({saved}); "
        f"to trust it run: {trust_command_hint(pki.root, fp)}"
    )
    if new:
        log.warning("opcua %s: %s", who, reason)
    return reason


class _SessionCertificateCheck:
    """asyncua's `certificate_validator` hook, called in CreateSession with the server's certificate."""

    def __init__(self, pki: PkiDir, settings: OpcUaDriver, who: str) -> None:
        self._pki, self._settings, self._who = pki, settings, who

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        if not check_trusted(self._pki, cert):
            raise UntrustedServerCertificate(untrusted_reason(self._pki, cert, self._who))


def report_expiry(
    who: str,
    what: str,
    cert: x509.Certificate,
    path: Path | None,
    warning_days: int,
    now: dt.datetime | None = None,
) -> ExpiryStatus:
    """Log (once a day) a certificate that expires within `warning_days` or is out of its validity."""
    now = now or dt.datetime.now(dt.UTC)
    status = expiry_status(cert, warning_days, now)
    key = (fingerprint(cert), status, now.date())
    if status == "ok" or key in _reported:
        return status
    _reported.add(key)
    where = f" {path}" if path else ""
    left = days_left(cert, now)
    detail = {
        "expiring": f"expires in {left} days",
        "expired": f"EXPIRED {-left} days ago",
        "not yet valid": "is NOT YET VALID (check the clocks)",
    }[status]
    log.log(
        logging.WARNING if status == "expiring" else logging.ERROR,
        "opcua %s: %s%s (CN=%s, SHA-256 %s) %s (valid %s to %s)",
        who,
        what,
        where,
        common_name(cert),
        fingerprint(cert)[:16],
        detail,
        cert.not_valid_before_utc.strftime("%Y-%m-%d"),
        cert.not_valid_after_utc.strftime("%Y-%m-%d"),
    )
    return status


__all__ = [
    "POLICIES",
    "UntrustedServerCertificate",
    "certs_command",
    "configure_security",
    "report_expiry",
    "resolve_pki_dir",
    "verify_server_certificate",
]
