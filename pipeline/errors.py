"""The project's own exceptions. Library errors are re-raised as one of these with ``raise ... from``.

``TiplineError`` and its subclasses carry one sentence meant for a person: the CLI prints it and
exits non-zero, never a stack trace.
"""

from __future__ import annotations


class TiplineError(Exception):
    """Base class: ``str(err)`` is one clear sentence saying what is wrong and how to fix it."""

    exit_code = 1


class ConfigError(TiplineError):
    """A setting or environment variable is wrong."""

    exit_code = 2


class ServiceError(TiplineError):
    """A local service (Kafka, PostgreSQL) could not be fetched, started, stopped or reached."""

    exit_code = 3


class SerdeError(TiplineError):
    """Bytes could not be decoded as, or a value could not be encoded as, a known event."""

    def __init__(self, message: str, *, reason: str = "serde_error", field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


class DomainError(TiplineError):
    """A step's rules refuse an input (the stage decides the policy: dead-letter, retry or stop)."""

    def __init__(self, message: str, *, reason: str = "domain_error", field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
