"""Per-operator HMAC signatures on commands: defence beside the broker's ACLs.

A broker ACL says which client may publish on the command topics; a signature says which
*person* issued a command and that nobody changed it on the way. The signature is the hex
HMAC-SHA256, under the operator's key, of `signed_text(...)`: the fields that make the command,
one per line, in a form both ends compute identically (the value as a float's repr, the issue
time in epoch milliseconds).
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.commands import CommandRequest, CommandStep


def signed_text(
    request_id: str, setpoint: str, value: float, operator: str, issued_at: float, step: CommandStep | str
) -> bytes:
    """The exact bytes a command's signature covers."""
    fields = [
        "linegate-command-v1",
        request_id,
        setpoint,
        repr(float(value)),
        operator,
        str(round(issued_at * 1000)),
        str(CommandStep(step)),
    ]
    return "\n".join(fields).encode()


def sign(
    key: bytes,
    request_id: str,
    setpoint: str,
    value: float,
    operator: str,
    issued_at: float,
    step: CommandStep | str = CommandStep.SET,
) -> str:
    """The hex signature an operator's client sends with a command."""
    text = signed_text(request_id, setpoint, value, operator, issued_at, step)
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def signature_valid(key: bytes, request: CommandRequest) -> bool:
    """Whether `request` carries a signature made with `key` over its own fields."""
    if request.signature is None or request.operator is None or request.issued_at is None:
        return False
    if not request.signature.isascii():
        return False  # not hex; compare_digest would raise TypeError on a non-ASCII str
    expected = sign(
        key,
        request.request_id,
        request.setpoint,
        request.value,
        request.operator,
        request.issued_at,
        request.step,
    )
    return hmac.compare_digest(expected, request.signature.lower())


__all__ = ["sign", "signature_valid", "signed_text"]
