"""OPC-UA security: PKI directory, application certificate, server trust, `linegate certs`.

STUB: being written (issue 4). Contract:
- resolve_pki_dir(security) -> Path
- async configure_security(client, settings, who) -> None   (before connect)
- certs_command(pki_dir, *, action, certificate, expiry_warning_days, out) -> int
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from asyncua import Client

from gateway.config import OpcUaDriver, OpcUaSecurity


def resolve_pki_dir(security: OpcUaSecurity | None) -> Path:
    if security is not None and security.pki_dir is not None:
        return Path(security.pki_dir)
    state = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    base = Path(state.split(":")[0]) if state else Path.home() / ".local" / "state" / "linegate"
    return base / "pki"


async def configure_security(client: Client, settings: OpcUaDriver, who: str) -> None:
    if settings.security.policy != "None":
        raise NotImplementedError("OPC-UA security is being written")


def certs_command(
    pki_dir: Path, *, action: str, certificate: str | None, expiry_warning_days: int, out: TextIO
) -> int:
    raise NotImplementedError("linegate certs is being written")
