"""`tipline projections rebuild`: replay the whole log into fresh tables, then swap them in atomically.

1. A new schema ``<live>_rebuild_<n>`` gets empty tables (``proj_install``).
2. A projector writing that schema replays every event topic from the first offset, committing rows and
   offsets together exactly as the live projector does, until it reaches the end each partition had
   when it started (``catch_up``: no waiting out the broker's timeouts on the way).
3. One transaction takes the live projector's advisory lock (so no live batch is half-way), renames the
   live schema to ``<live>_old_<n>`` and the rebuilt one to the live name. Readers see the old tables or
   the new ones, never a mix. The live projector's next batch sees that the stored positions moved and
   continues from the rebuilt schema's own positions.
4. The old schema is dropped (``keep_old=True`` keeps it, for a comparison).

The live tables keep serving (and the live projector keeps writing them) during steps 1-2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pipeline import db
from pipeline.logging import get_logger
from pipeline.settings import Settings
from projections import pg
from projections.runner import PROJECTION, Projector

log = get_logger(stage="projections")


@dataclass(frozen=True, kw_only=True)
class RebuildResult:
    schema: str
    """Where the rebuilt tables are now: the live name if swapped, else the rebuild schema."""
    events: int
    rejected: int
    seconds: float
    swapped: bool
    old_schema: str | None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _next_name(conn: psycopg.Connection[Any], live: str) -> str:
    n = int(time.time() * 1000)
    while pg.schema_exists(conn, f"{live}_rebuild_{n}"[: pg.MAX_IDENT]):
        n += 1
    return f"{live}_rebuild_{n}"[: pg.MAX_IDENT]


def swap(conn: psycopg.Connection[Any], live: str, rebuilt: str, *, projection: str = PROJECTION) -> str:
    """Put ``rebuilt`` in place of ``live`` in one transaction; return the name the old tables now have."""
    old = rebuilt.replace("_rebuild_", "_old_", 1)
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tipline.projector:{live}:{projection}",)
        )
        if pg.schema_exists(conn, live):
            conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(live), sql.Identifier(old))
            )
        conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(rebuilt), sql.Identifier(live))
        )
    return old


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def rebuild(
    settings: Settings,
    *,
    swap_in: bool = True,
    keep_old: bool = False,
    batch_size: int = 20_000,
    timeout: float = 3600.0,
    workers: int = 0,
) -> RebuildResult:
    """Replay every event topic into a fresh schema and (by default) swap it in for the live one."""
    live = pg.schema_for(settings)
    with db.connect(settings, autocommit=True, prepare_threshold=None) as conn:
        target = _next_name(conn, live)
    started = time.monotonic()
    proj = Projector(settings, schema=target, batch_size=batch_size, workers=workers, catch_up=True)
    try:
        proj.start()
        proj.run_until_caught_up(timeout=timeout)
    finally:
        proj.close()
    seconds = time.monotonic() - started
    # A rebuild that replaces the live tables is worth a line in the log; one built beside them to be
    # compared (the demo's check) is reported by its caller.
    say = log.info if swap_in else log.debug
    say("projection_rebuilt", schema=target, events=proj.processed, seconds=round(seconds, 2))
    old: str | None = None
    where = target
    if swap_in:
        with db.connect(settings, autocommit=True, prepare_threshold=None) as conn:
            old = swap(conn, live, target)
            where = live
            log.info("projection_swapped", live=live, old=old)
            if not keep_old:
                drop_schema(conn, old)
                old = None
    return RebuildResult(
        schema=where,
        events=proj.processed,
        rejected=proj.rejected,
        seconds=seconds,
        swapped=swap_in,
        old_schema=old,
    )
