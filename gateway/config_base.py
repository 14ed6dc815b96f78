"""What every part of the line config shares: the strict model base and the name patterns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

TAG_NAME = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
IDENT = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class Model(BaseModel):
    """Unknown keys are errors and loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["IDENT", "TAG_NAME", "Model"]
