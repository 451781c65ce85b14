"""structlog, configured once: JSON lines for services, readable console output for the CLI.

Privacy is enforced here, not left to each call site: the ``redact`` processor runs before any
renderer and removes reporters' contact details, descriptions and full URLs from every log line, at any
depth. A URL keeps only its scheme and host, enough to follow routing without exposing the path.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

SECRET_KEYS = frozenset(
    {
        "contact",
        "contact_name",
        "contact_email",
        "contact_phone",
        "reporter_contact",
        "reporter_email",
        "reporter_phone",
        "reporter_name",
        "email",
        "emails",
        "phone",
        "phones",
        "description",
        "note",
        "message_text",
        "password",
        "plaintext",
        "data_key",
        "key_material",
        "dsn",
        "database_url",
    }
)
"""Keys whose values never reach a log, whatever their type."""

URL_KEYS = frozenset({"url", "urls", "original_url", "normalized_url", "profile_url", "profile_urls"})

_URL_RE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^/\s?#'\"]+)[^\s'\"]*")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PASSWORD_IN_DSN_RE = re.compile(r"(postgres(?:ql)?://[^:/\s]+:)[^@\s]+@")


def _scrub_text(text: str) -> str:
    text = _PASSWORD_IN_DSN_RE.sub(r"\1***@", text)
    text = _URL_RE.sub(lambda m: f"{m.group(1)}://{m.group(2)}/{REDACTED}", text)
    return _EMAIL_RE.sub(REDACTED, text)


def _scrub(key: str | None, value: Any, depth: int = 0) -> Any:  # noqa: PLR0911 - one case per type
    if key is not None and key.lower() in SECRET_KEYS:
        return REDACTED
    if depth > 8:
        return REDACTED
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, Mapping):
        return {k: _scrub(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(None, v, depth + 1) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        # An event or value object: log its type only; its fields may hold anything.
        return f"<{type(value).__name__}>"
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop contact details, descriptions and full URLs from a log line."""
    for key in list(event_dict.keys()):
        if key == "event" and isinstance(event_dict[key], str):
            event_dict[key] = _scrub_text(event_dict[key])
            continue
        event_dict[key] = _scrub(key, event_dict[key])
    return event_dict


_configured: str | None = None


def configure(fmt: str = "console", level: int = logging.INFO) -> None:
    """Configure structlog (and the stdlib loggers libraries use) once per process."""
    global _configured  # noqa: PLW0603 - process-wide logging is configured exactly once
    if _configured == fmt:
        return
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    _configured = fmt


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger(**bound)
