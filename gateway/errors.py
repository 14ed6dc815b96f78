"""The gateway's own error types; drivers wrap library exceptions into these."""

from __future__ import annotations


class LinegateError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(LinegateError):
    """A line config file is unreadable or invalid.

    `problems` holds one `(key, reason)` pair per defect so callers can print them all.
    """

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {key}: {reason}" for key, reason in problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, list[tuple[str, str]]]]:
        # Rebuilt from its parts, so it crosses process boundaries (the accuracy report's pool).
        return (ConfigError, (self.path, self.problems))


class RetryableError(LinegateError):
    """A driver lost or could not reach its peer; the runtime retries with backoff."""


class FatalDriverError(LinegateError):
    """A driver cannot work with what it was given (bad node id, refused auth); retrying won't help."""
