"""Where the gateway keeps state that must survive a restart (PKI, the control audit log)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """systemd's StateDirectory= when run as a unit, else ~/.local/state/linegate."""
    state = os.environ.get("STATE_DIRECTORY")
    return Path(state.split(":")[0]) if state else Path.home() / ".local" / "state" / "linegate"


__all__ = ["state_dir"]
