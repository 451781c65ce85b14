"""PostgreSQL connections, built in one place from the settings.

Every environment (a topic suffix: a test, a demo run, a parallel deployment) gets its own PostgreSQL
schema for the tables the steps own, through ``search_path``: the same report id in two environments
never meets itself, and no step has to carry the suffix in its SQL. Production (no suffix) uses
``public``. A schema's tables are created on the first connection a process makes to it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import psycopg

from pipeline.errors import ServiceError
from pipeline.settings import Settings

_ready: set[tuple[str, str]] = set()
_lock = threading.Lock()


def schema_name(settings: Settings) -> str:
    """The schema of the environment: ``public`` without a suffix, else ``env_<suffix>``."""
    if not settings.topic_suffix:
        return "public"
    cleaned = re.sub(r"[^a-z0-9_]", "_", settings.topic_suffix.lower().lstrip("."))
    return f"env_{cleaned}"[:63]


def open_raw(settings: Settings, schema: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection whose search_path is ``schema`` then ``public`` (the schema may not exist yet)."""
    if schema != "public":
        kwargs.setdefault("options", f"-c search_path={schema},public")
    try:
        return psycopg.connect(settings.database_url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise ServiceError(
            "PostgreSQL did not accept a connection; start it with `tipline services up` or check DATABASE_URL."
        ) from exc


def connect(settings: Settings, **kwargs: Any) -> psycopg.Connection[Any]:
    schema = schema_name(settings)
    key = (settings.database_url, schema)
    if key not in _ready:
        with _lock:
            if key not in _ready:
                from pipeline.schema_sql import ensure_database_schema

                ensure_database_schema(settings)
                _ready.add(key)
    return open_raw(settings, schema, **kwargs)
