"""`linegate browse`: walk an OPC-UA address space and print a ready-to-paste tag config.

STUB: being written (issue 4).
"""

from __future__ import annotations

from typing import TextIO

from gateway.config import OpcUaSecurity


async def browse_command(
    url: str, *, security: OpcUaSecurity | None, root: str, depth: int, driver: str, out: TextIO
) -> int:
    raise NotImplementedError("linegate browse is being written")
