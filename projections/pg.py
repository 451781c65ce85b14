"""The read model in PostgreSQL: the same merge as ``projections.model``, as one upsert per batch.

A batch of events is folded per report in Python (``model.fold_rows``), copied into a session-local
staging table with binary ``COPY``, and merged into ``proj_report`` by one ``INSERT ... SELECT ... ON
CONFLICT DO UPDATE`` generated from ``model.GROUPS``; referrals are copied the same way and inserted by
event id (``ON CONFLICT DO NOTHING``).
Applying a batch twice changes nothing, in any order. ``write_batch`` runs inside the caller's
transaction, so the runner commits the rows and the offsets they were read from together.

Each projection set lives in a schema of its own (``schema_for``): ``proj`` for the default settings,
``proj`` plus the sanitised topic suffix for tests and parallel environments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pipeline import events as ev
from pipeline.errors import ServiceError
from pipeline.settings import Settings
from projections import model
from projections.model import GROUPS, GroupValue, Referral, ReportRow
from projections.view import (
    TRANSITIONS,
    UNKNOWN,
    QueueEntry,
    ReportStatus,
    Statistics,
    StepTime,
    status_of,
)

LIVE_SCHEMA = "proj"
MAX_IDENT = 63

COLUMNS: tuple[str, ...] = model.ROW_COLUMNS
COLUMN_TYPES: tuple[str, ...] = (
    "text",
    "smallint",
    *(t for g in GROUPS for t in ("timestamptz", "timestamptz", "text", *(t for _, t in g.columns))),
)
"""The SQL type of each of ``COLUMNS`` (binary COPY needs them)."""
REFERRAL_COLUMNS = model.REFERRAL_FIELDS
REFERRAL_TYPES = ("text", "text", "text", "text", "text", "boolean", "timestamptz")

_CLOSED = sql.SQL("outcome IS NOT NULL AND outcome <> {}").format(sql.Literal(str(ev.Outcome.REJECTED)))


def schema_for(settings: Settings) -> str:
    """The live schema of this environment: ``proj`` plus the topic suffix, made a plain identifier."""
    tail = re.sub(r"[^a-z0-9_]", "_", settings.topic_suffix.lower())
    return (LIVE_SCHEMA + tail)[:MAX_IDENT]


def install(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the schema and its tables if they do not exist (``proj_install`` from ``sql/``).

    Readers call this on every query; when the columns added after the first release are already there
    nothing is run, so no DDL lock is ever taken beside a running projector."""
    found = conn.execute(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'proj_report' AND column_name = ANY(%s)",
        (schema, list(_ADDED_COLUMNS)),
    ).fetchone()
    complete = found is not None and found[0] == len(_ADDED_COLUMNS)
    if not complete or not _has_table(conn, schema, "proj_rejected"):  # the last one proj_install makes
        conn.execute("SELECT proj_install(%s)", (schema,))


_ADDED_COLUMNS = ("reporter_origin", "resubmitted_event")
"""proj_report's columns that ``proj_install`` adds to a table made before them (one per ALTER)."""


def _has_table(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{table}',)).fetchone() not in (None, (None,))


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    cur = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cur.fetchone() is not None


def _row_from(record: Sequence[Any]) -> ReportRow:
    groups: dict[str, GroupValue] = {}
    i = 2
    for g in GROUPS:
        n = len(g.columns)
        first_at, at, event_id = record[i : i + 3]
        if at is not None:
            groups[g.name] = GroupValue(
                first_at=first_at, at=at, event_id=event_id, values=tuple(record[i + 3 : i + 3 + n])
            )
        i += 3 + n
    return ReportRow(report_id=record[0], step=record[1], groups=groups)


def _merge_sql(schema: str) -> sql.Composed:
    sets: list[sql.Composable] = [sql.SQL("step = GREATEST(t.step, EXCLUDED.step)")]
    for g in GROUPS:
        first, at, event = (sql.Identifier(f"{g.name}{x}") for x in ("_first_at", "_at", "_event"))
        newer = sql.SQL(
            "(EXCLUDED.{at} IS NOT NULL AND (t.{at} IS NULL OR (EXCLUDED.{at}, EXCLUDED.{ev}) > (t.{at}, t.{ev})))"
        ).format(at=at, ev=event)
        sets.append(sql.SQL("{f} = LEAST(t.{f}, EXCLUDED.{f})").format(f=first))
        for col in (at, event, *(sql.Identifier(n) for n, _ in g.columns)):
            sets.append(
                sql.SQL("{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE t.{c} END").format(c=col, newer=newer)
            )
    cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    return sql.SQL(
        "INSERT INTO {s}.proj_report AS t ({cols}) SELECT {cols} FROM pg_temp.proj_stage "
        "ON CONFLICT (report_id) DO UPDATE SET {sets}"
    ).format(s=sql.Identifier(schema), cols=cols, sets=sql.SQL(", ").join(sets))


def write_batch(
    conn: psycopg.Connection[Any],
    schema: str,
    rows: Iterable[Sequence[Any]],
    referrals: Iterable[Sequence[Any]],
) -> None:
    """Merge folded rows and referrals (flat, ``COLUMNS`` and ``REFERRAL_COLUMNS`` order, as
    ``model.fold_rows`` makes them) into the schema's tables, inside the caller's transaction."""
    s = sql.Identifier(schema)
    with conn.cursor() as cur:
        for stage, table in (("proj_stage", "proj_report"), ("proj_stage_referral", "proj_referral")):
            cur.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}.{}) ON COMMIT DELETE ROWS").format(
                    sql.Identifier(stage), s, sql.Identifier(table)
                )
            )
        # A transaction that failed after the COPY may leave rows if the caller reuses it: start clean.
        cur.execute("TRUNCATE pg_temp.proj_stage, pg_temp.proj_stage_referral")
        # Binary COPY with the column types given: several times faster than text for these rows.
        with cur.copy(_COPY_ROWS) as cp:
            cp.set_types(COLUMN_TYPES)
            for row in rows:
                cp.write_row(row)
        cur.execute(_merge_sql(schema))
        copied = 0
        with cur.copy(_COPY_REFERRALS) as cp:
            cp.set_types(REFERRAL_TYPES)
            for r in referrals:
                cp.write_row(r)
                copied += 1
        if copied:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {s}.proj_referral ({cols}) SELECT {cols} FROM pg_temp.proj_stage_referral "
                    "ON CONFLICT (event_id) DO NOTHING"
                ).format(s=s, cols=sql.SQL(", ").join(map(sql.Identifier, REFERRAL_COLUMNS)))
            )


_COPY_ROWS = sql.SQL("COPY pg_temp.proj_stage ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
)
_COPY_REFERRALS = sql.SQL("COPY pg_temp.proj_stage_referral ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, REFERRAL_COLUMNS))
)


def _referral(rec: Sequence[Any]) -> Referral:
    return Referral(**dict(zip(REFERRAL_COLUMNS, rec, strict=True)))


class PgView:
    """The read model in one PostgreSQL schema. ``apply`` commits each batch in its own transaction."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self._s = sql.Identifier(schema)

    def apply(self, events: Sequence[ev.Event]) -> None:
        rows, referrals = model.fold_rows(model.fact(e) for e in events)
        with self.conn.transaction():
            write_batch(self.conn, self.schema, rows.values(), referrals.values())

    def report(self, report_id: str) -> ReportStatus | None:
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        rec = self.conn.execute(
            sql.SQL("SELECT {} FROM {}.proj_report WHERE report_id = %s").format(cols, self._s), (report_id,)
        ).fetchone()
        if rec is None:
            return None
        refs = self.conn.execute(
            sql.SQL("SELECT {} FROM {}.proj_referral WHERE report_id = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, REFERRAL_COLUMNS)), self._s
            ),
            (report_id,),
        ).fetchall()
        return status_of(_row_from(rec), (_referral(r) for r in refs))

    def queue(self, limit: int = 100) -> list[QueueEntry]:
        recs = self.conn.execute(
            sql.SQL(
                "SELECT report_id, level, arrival_seq, classified_first_at, categories FROM {}.proj_report "
                'WHERE step = %s ORDER BY level, arrival_seq, report_id COLLATE "C" LIMIT %s'
            ).format(self._s),
            (model.STEP_ORDER["classified"], limit),
        ).fetchall()
        return [
            QueueEntry(
                report_id=r[0], level=r[1], arrival_seq=r[2], classified_at=r[3], categories=tuple(r[4] or ())
            )
            for r in recs
        ]

    def _counts(self, expr: sql.Composable, source: sql.Composable) -> dict[str, int]:
        recs = self.conn.execute(
            sql.SQL("SELECT {e}, count(*) FROM {src} WHERE {closed} GROUP BY 1").format(
                e=expr, src=source, closed=_CLOSED
            )
        ).fetchall()
        return dict(sorted((str(k), int(n)) for k, n in recs))

    def statistics(self) -> Statistics:
        table = sql.SQL("{}.proj_report").format(self._s)
        head = self.conn.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE {c}), count(*) FILTER (WHERE {c} AND outcome = %s), "
                "count(*) FILTER (WHERE {c} AND coalesce(domestic_police, 0) + coalesce(foreign_police, 0) > 0), "
                "count(*) FILTER (WHERE {c} AND coalesce(domestic_police, 0) + coalesce(foreign_police, 0) > 0 "
                "AND coalesce(foreign_police, 0) = 0) FROM {t}"
            ).format(c=_CLOSED, t=table),
            (str(ev.Outcome.REFERRED),),
        ).fetchone()
        if head is None:  # pragma: no cover - an aggregate without GROUP BY always returns one row
            raise ServiceError("PostgreSQL returned no row for an aggregate query.")
        by_step = {
            model.STEPS[s]: int(n)
            for s, n in self.conn.execute(sql.SQL("SELECT step, count(*) FROM {} GROUP BY 1").format(table))
        }
        unknown = sql.Literal(UNKNOWN)
        times: list[StepTime] = []
        for start, end in TRANSITIONS:
            a, b = sql.Identifier(f"{start}_first_at"), sql.Identifier(f"{end}_first_at")
            rec = self.conn.execute(
                sql.SQL(
                    "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY d), "
                    "percentile_cont(0.9) WITHIN GROUP (ORDER BY d) FROM "
                    "(SELECT extract(epoch FROM {b} - {a})::float8 AS d FROM {t} "
                    "WHERE {a} IS NOT NULL AND {b} IS NOT NULL) x"
                ).format(a=a, b=b, t=table)
            ).fetchone()
            if rec is None:  # pragma: no cover - an aggregate without GROUP BY always returns one row
                raise ServiceError("PostgreSQL returned no row for an aggregate query.")
            times.append(StepTime(start=start, end=end, count=int(rec[0]), median_s=rec[1], p90_s=rec[2]))
        return Statistics(
            reports=int(head[0]),
            closed=int(head[1]),
            referred=int(head[2]),
            police_reports=int(head[3]),
            police_in_canada=int(head[4]),
            by_step=dict(sorted(by_step.items())),
            by_category=self._counts(sql.SQL("coalesce(category, {})").format(unknown), table),
            by_province=self._counts(
                sql.SQL("coalesce(reporter_origin, province, {})").format(unknown), table
            ),
            by_hosting_country=self._counts(
                sql.SQL("h"), sql.SQL("{}, unnest(hosting_countries) AS h").format(table)
            ),
            step_times=tuple(times),
        )

    def rows(self) -> tuple[list[ReportRow], list[Referral]]:
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        recs = self.conn.execute(
            sql.SQL('SELECT {} FROM {}.proj_report ORDER BY report_id COLLATE "C"').format(cols, self._s)
        ).fetchall()
        refs = self.conn.execute(
            sql.SQL('SELECT {} FROM {}.proj_referral ORDER BY event_id COLLATE "C"').format(
                sql.SQL(", ").join(map(sql.Identifier, REFERRAL_COLUMNS)), self._s
            )
        ).fetchall()
        return [_row_from(r) for r in recs], [_referral(r) for r in refs]
