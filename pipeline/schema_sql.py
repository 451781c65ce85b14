"""Creates the database tables every part owns, from the ``sql/*.sql`` files beside that part's code.

Each file is idempotent (``CREATE ... IF NOT EXISTS``); files run in the order of their names, under an
advisory lock so that several processes starting at once do not race on DDL. They run in the
environment's schema (``pipeline.db.schema_name``): unqualified names land there.
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from pipeline.settings import Settings

_LOCK_ID = 0x7C1E_0001


def sql_files(root: Path) -> list[Path]:
    files = [*root.glob("pipeline/**/sql/*.sql"), *root.glob("projections/**/sql/*.sql")]
    return sorted(files, key=lambda p: (p.name, str(p)))


def ensure_database_schema(settings: Settings) -> list[str]:
    from pipeline.db import open_raw, schema_name

    schema = schema_name(settings)
    applied: list[str] = []
    with open_raw(settings, schema, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            if schema != "public":
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for path in sql_files(settings.root):
                conn.execute(path.read_text())  # our own files, committed in the repo
                applied.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied
