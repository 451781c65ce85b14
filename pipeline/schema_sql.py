"""Creates the database tables every part owns, from the ``sql/*.sql`` files beside that part's code.

Each file is idempotent (``CREATE ... IF NOT EXISTS``); files run in the order of their names, under an
advisory lock so that several processes starting at once do not race on DDL. They run in the
environment's schema (``pipeline.db.schema_name``): unqualified names land there.

Each file applied is recorded with the digest of its text (``tipline_schema_applied``), and a process
that starts runs only the files not yet applied as they are now: none, usually. Running them all again
was not free: even when it changes nothing, ``ALTER TABLE ... IF [NOT] EXISTS`` takes an ACCESS
EXCLUSIVE lock and ``CREATE INDEX IF NOT EXISTS`` a SHARE lock on its table, so a process restarted
during a run (seen in the kill test) stalled the live stages' writes and deadlocked with a route batch.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from psycopg import sql

from pipeline.settings import Settings

_LOCK_ID = 0x7C1E_0001
_APPLIED = "tipline_schema_applied"


def sql_files(root: Path) -> list[Path]:
    files = [*root.glob("pipeline/**/sql/*.sql"), *root.glob("projections/**/sql/*.sql")]
    return sorted(files, key=lambda p: (p.name, str(p)))


def _key(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_CREATES = re.compile(r"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+IF\s+NOT\s+EXISTS\s+([a-z_][a-z0-9_]*)\b", re.I)
"""The tables a file creates under an unqualified name (in the environment's schema)."""


def tables_created_by(text: str) -> set[str]:
    return {m.lower() for m in _CREATES.findall(text)}


def _pending(conn: Any, schema: str, root: Path) -> list[tuple[str, str, str]]:
    """(key, digest, text) of each file not applied in ``schema`` as it reads now, in order.

    A file recorded as applied is applied again when a table it creates is missing (dropped by hand,
    say): a stage would otherwise fail on it at its first batch. The check reads the catalog only, so a
    restarting process still takes no lock on any table."""
    tables = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        ).fetchall()
    }
    exists = _APPLIED in tables
    done: dict[str, str] = (
        dict(
            conn.execute(
                sql.SQL("SELECT file, digest FROM {}").format(sql.Identifier(schema, _APPLIED))
            ).fetchall()
        )
        if exists
        else {}
    )
    out: list[tuple[str, str, str]] = []
    for path in sql_files(root):
        text = path.read_text()  # our own files, committed in the repo
        key, digest = _key(root, path), _digest(text)
        if done.get(key) != digest or not tables_created_by(text) <= tables:
            out.append((key, digest, text))
    return out


def ensure_database_schema(settings: Settings) -> list[str]:
    """Apply the files this environment's schema lacks (or holds an older text of); their names."""
    from pipeline.db import open_raw, schema_name

    schema = schema_name(settings)
    with open_raw(settings, schema, autocommit=True) as conn:
        known = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        if known and not _pending(conn, schema, settings.root):
            return []  # a (re)started process: no DDL, no lock on any table
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            if schema != "public":
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            applied = sql.Identifier(schema, _APPLIED)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (file text PRIMARY KEY, digest text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(applied)
            )
            # Read again under the lock: another process starting meanwhile may have applied them.
            pending = _pending(conn, schema, settings.root)
            for key, digest, text in pending:
                conn.execute(text)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (file, digest) VALUES (%s, %s) "
                        "ON CONFLICT (file) DO UPDATE SET digest = EXCLUDED.digest, applied_at = now()"
                    ).format(applied),
                    (key, digest),
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return [Path(key).name for key, _, _ in pending]
