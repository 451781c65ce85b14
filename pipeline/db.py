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

from pipeline.errors import ConfigError, ServiceError
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
    except psycopg.ProgrammingError:  # a connection string libpq cannot parse
        # Not quoted back: it may hold a password.
        raise ConfigError(
            "DATABASE_URL is not a connection string PostgreSQL can read "
            "(postgresql://user@host:port/database, or key=value pairs)."
        ) from None


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


class YoungTableAnalyzer:
    """ANALYZE a stage's tables while they are young and growing fast; a few times, then never again.

    Autovacuum analyzes a table at most once a naptime (a minute by default) and only after a tenth of it
    changed. A table that fills from empty within that minute (a new deployment, each demo or bench run)
    is planned without statistics: the planner then takes a column that holds one value on every row (the
    assess tables' ``namespace``) for a selective one, and answers a lookup of a run's reports by scanning
    every row of the namespace. Measured on the assess stage (15,000 reports): its lookups of handled
    events took 2-9 ms a run and grew with the table; with these ANALYZEs they stay below 1 ms.

    ``grew(conn, rows)`` is told the rows this process has just added; once they exceed what the tables
    held at the last ANALYZE (and at least ``floor``), it runs ANALYZE on them in the caller's transaction
    (allowed there; it blocks no reads or writes). The size is doubled each time, so a table of N rows is
    analyzed about log2(N / floor) times by this process, and a table already large when it starts (read
    from ``pg_class``) is left to autovacuum.
    """

    def __init__(self, tables: tuple[str, ...], *, floor: int = 1000) -> None:
        if not tables or not all(re.fullmatch(r"[a-z_][a-z0-9_]*", t) for t in tables):
            raise ValueError("tables must be plain lower-case table names")
        self.tables = tables
        self.floor = floor
        self._size: int | None = None
        self._added = 0

    def grew(self, conn: psycopg.Connection[Any], rows: int) -> bool:
        """Note ``rows`` added; ANALYZE when the tables have doubled since the last time. True if it ran."""
        if self._size is None:
            row = conn.execute(
                "SELECT coalesce(max(greatest(c.reltuples, 0)), 0) FROM pg_class c "
                "WHERE c.oid = ANY(%s::regclass[])",
                (list(self.tables),),
            ).fetchone()
            self._size = int(row[0]) if row else 0
        self._added += rows
        if self._added < max(self.floor, self._size):
            return False
        conn.execute(f"ANALYZE {', '.join(self.tables)}")
        self._size += self._added
        self._added = 0
        return True
