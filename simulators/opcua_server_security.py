"""Optional security for the simulator's OPC-UA server: certificate, policies, users.

`SimServerSecurity` is what a test or demo hands to `SimOpcUaServer(security=...)`: the server's
certificate and key files, the endpoints to offer (asyncua `SecurityPolicyType` names), which
user identity tokens to accept and the username/password table. Client certificates are not
checked (the server accepts any, as asyncua does by default); the client side's trust handling
is what the gateway tests exercise.

`SimUserManager` records every identity it was asked about, so a test can tell that a session
really used a username or a certificate token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

IdentityKind = Literal["anonymous", "username", "certificate"]
TOKEN_TYPES: dict[IdentityKind, type] = {
    "anonymous": ua.AnonymousIdentityToken,
    "username": ua.UserNameIdentityToken,
    "certificate": ua.X509IdentityToken,
}


@dataclass(frozen=True)
class SimServerSecurity:
    certificate: Path
    private_key: Path
    # ua.SecurityPolicyType member names, e.g. "Basic256Sha256_SignAndEncrypt", "NoSecurity".
    policies: tuple[str, ...] = ("Basic256Sha256_SignAndEncrypt",)
    identities: tuple[IdentityKind, ...] = ("anonymous", "username", "certificate")
    users: Mapping[str, str] = field(default_factory=dict)
    # Must be the URI in the certificate's SubjectAltName.
    application_uri: str = "urn:linegate:simulator:server"


@dataclass(frozen=True)
class SeenIdentity:
    kind: Literal["username", "certificate-or-anonymous"]
    name: str | None
    accepted: bool


class SimUserManager:
    """Checks usernames against the table; anything else passes (token types are filtered earlier)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self.seen: list[SeenIdentity] = []

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:
            ok = self._users.get(username) == password
            self.seen.append(SeenIdentity("username", username, ok))
            return User(role=UserRole.User, name=username) if ok else None
        # asyncua passes the channel's client certificate for anonymous tokens too.
        self.seen.append(SeenIdentity("certificate-or-anonymous", None, True))
        return User(role=UserRole.User)


async def apply_security(server: Server, security: SimServerSecurity) -> SimUserManager:
    """Configure `server` (after init(), before start()); returns the user manager in use."""
    try:
        policies = [ua.SecurityPolicyType[name] for name in security.policies]
    except KeyError as exc:
        raise ValueError(
            f"unknown security policy {exc}; use one of {[p.name for p in ua.SecurityPolicyType]}"
        ) from None
    await server.load_certificate(str(security.certificate))
    await server.load_private_key(str(security.private_key))
    await server.set_application_uri(security.application_uri)
    server.set_security_policy(policies)
    server.set_identity_tokens([TOKEN_TYPES[kind] for kind in security.identities])
    users = SimUserManager(security.users)
    server.iserver.set_user_manager(users)
    return users


__all__ = ["SeenIdentity", "SimServerSecurity", "SimUserManager", "apply_security"]
