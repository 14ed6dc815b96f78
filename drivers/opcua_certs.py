"""`linegate certs list|trust`: show the OPC-UA PKI directory, promote a rejected server certificate.

Output is for an operator at a terminal: one line per certificate with its subject, SHA-256
fingerprint (the thing to compare with what the PLC's display shows), expiry and days left.
Every failure is one line on stderr and exit status 1; never a traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.serialization import Encoding

from drivers.opcua_pki import (
    CertFile,
    PkiDir,
    PkiError,
    days_left,
    expiry_status,
    fingerprint,
    load_certificate,
    read_cert_dir,
    rejected_name,
)

# Shorter prefixes match too easily by accident; the rejection message prints 16 digits.
MIN_PREFIX = 4


def certs_command(
    pki_dir: Path, *, action: str, certificate: str | None, expiry_warning_days: int, out: TextIO
) -> int:
    pki = PkiDir(pki_dir)
    if action == "list":
        return list_certificates(pki, expiry_warning_days, out)
    if action == "trust":
        if not certificate:
            return _fail("trust: name a certificate: a file name in rejected/ or a SHA-256 fingerprint")
        return trust_certificate(pki, certificate, out)
    return _fail(f"unknown action {action!r}: use list or trust")


def trust_command_hint(pki_dir: Path, fp: str) -> str:
    """The exact command an operator runs to trust the certificate with fingerprint `fp`."""
    return f"linegate certs --pki-dir {shlex.quote(str(pki_dir.absolute()))} trust {fp[:16]}"


def list_certificates(pki: PkiDir, warning_days: int, out: TextIO) -> int:
    if not pki.root.is_dir():
        print(
            f"PKI directory {pki.root} does not exist yet: it is made on the first secure OPC-UA connection.",
            file=out,
        )
        return 0
    now = dt.datetime.now(dt.UTC)
    print(f"PKI directory {pki.root}", file=out)
    print("own certificate (give it to the server's administrator to trust):", file=out)
    if pki.own_cert.exists():
        try:
            _print_cert(CertFile(pki.own_cert, load_certificate(pki.own_cert)), pki, warning_days, now, out)
        except PkiError as exc:
            print(f"  UNREADABLE {exc}", file=out)
    else:
        print("  none yet: made on the first secure connection", file=out)
    for title, directory in (("trusted", pki.trusted), ("rejected", pki.rejected)):
        certs, problems = read_cert_dir(directory)
        heading = f"{title} server certificates: {len(certs)}"
        if title == "rejected" and certs:
            heading += f" (trust one with: {trust_command_hint(pki.root, '<fingerprint>')})"
        print(heading, file=out)
        for entry in certs:
            _print_cert(entry, pki, warning_days, now, out)
        for problem in problems:
            print(f"  UNREADABLE {problem}", file=out)
    return 0


def _print_cert(entry: CertFile, pki: PkiDir, warning_days: int, now: dt.datetime, out: TextIO) -> None:
    status = expiry_status(entry.cert, warning_days, now)
    flag = {
        "ok": "",
        "expiring": f"  EXPIRES SOON (within {warning_days} days)",
        "expired": "  EXPIRED",
        "not yet valid": "  NOT YET VALID",
    }[status]
    not_after = entry.cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    print(f"  {entry.path.relative_to(pki.root)}", file=out)
    print(f"    subject  {entry.subject}", file=out)
    print(f"    sha256   {entry.fingerprint}", file=out)
    print(f"    expires  {not_after} ({days_left(entry.cert, now)} days left){flag}", file=out)


def trust_certificate(pki: PkiDir, certificate: str, out: TextIO) -> int:
    rejected, _ = read_cert_dir(pki.rejected)
    trusted, _ = read_cert_dir(pki.trusted)
    by_name = [c for c in rejected if c.path.name == certificate]
    if by_name:
        return _promote(pki, by_name[0], trusted, out)
    prefix = certificate.replace(":", "").lower()
    if prefix and all(ch in "0123456789abcdef" for ch in prefix):
        return _trust_by_prefix(pki, prefix, rejected, trusted, out)
    path = Path(certificate)
    if path.is_file():
        return _trust_file(pki, path, trusted, out)
    return _fail(
        f"trust: {certificate!r} is neither a file in {pki.rejected} nor a SHA-256 fingerprint nor a "
        f"certificate file; see: linegate certs --pki-dir {shlex.quote(str(pki.root))} list"
    )


def _trust_by_prefix(
    pki: PkiDir, prefix: str, rejected: list[CertFile], trusted: list[CertFile], out: TextIO
) -> int:
    if len(prefix) < MIN_PREFIX:
        return _fail(f"trust: give at least {MIN_PREFIX} hex digits of the fingerprint, got {prefix!r}")
    already = [c for c in trusted if c.fingerprint.startswith(prefix)]
    matches = {c.fingerprint: c for c in rejected if c.fingerprint.startswith(prefix)}
    if not matches and already:
        print(f"already trusted: {already[0].subject} (sha256 {already[0].fingerprint})", file=out)
        return 0
    if not matches:
        known = ", ".join(c.fingerprint[:16] for c in rejected) or "none"
        return _fail(
            f"trust: no rejected certificate has a SHA-256 fingerprint starting with {prefix} "
            f"(rejected: {known})"
        )
    if len(matches) > 1:
        options = "; ".join(f"{c.fingerprint} {c.subject}" for c in matches.values())
        return _fail(f"trust: {prefix} is ambiguous, it matches: {options}")
    return _promote(pki, next(iter(matches.values())), trusted, out)


def _promote(pki: PkiDir, entry: CertFile, trusted: list[CertFile], out: TextIO) -> int:
    """Move a rejected certificate to trusted/ (the move is atomic: same file system)."""
    try:
        pki.trusted.mkdir(parents=True, exist_ok=True)
        if any(c.fingerprint == entry.fingerprint for c in trusted):
            entry.path.unlink()  # a copy is already trusted: just clear the rejected one
        else:
            os.replace(entry.path, pki.trusted / entry.path.name)
    except OSError as exc:
        return _fail(f"trust: cannot move {entry.path} to {pki.trusted}: {exc.strerror or exc}")
    print(
        f"trusted: {entry.subject} (sha256 {entry.fingerprint}) -> {pki.trusted / entry.path.name}", file=out
    )
    return 0


def _trust_file(pki: PkiDir, path: Path, trusted: list[CertFile], out: TextIO) -> int:
    """Trust a certificate handed over out of band (e.g. exported from the PLC's web page)."""
    try:
        cert = load_certificate(path)
    except PkiError as exc:
        return _fail(f"trust: {exc}")
    fp = fingerprint(cert)
    subject = cert.subject.rfc4514_string()
    if any(c.fingerprint == fp for c in trusted):
        print(f"already trusted: {subject} (sha256 {fp})", file=out)
        return 0
    target = pki.trusted / rejected_name(cert)
    try:
        pki.trusted.mkdir(parents=True, exist_ok=True)
        target.write_bytes(cert.public_bytes(Encoding.DER))
    except OSError as exc:
        return _fail(f"trust: cannot write {target}: {exc.strerror or exc}")
    print(f"trusted: {subject} (sha256 {fp}) -> {target}", file=out)
    return 0


def _fail(message: str) -> int:
    print(f"linegate certs: {message}", file=sys.stderr)
    return 1
