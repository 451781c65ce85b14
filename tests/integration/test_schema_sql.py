"""The tables' SQL files against the real PostgreSQL: applied once per schema, and a process that starts
later (a restart in the middle of a run) runs no DDL, so it takes no lock a live stage would wait on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from pipeline import db
from pipeline.schema_sql import ensure_database_schema, sql_files
from pipeline.settings import Settings
from projections.rebuild import drop_schema


@pytest.fixture
def fresh(settings: Settings) -> Iterator[Settings]:
    """An environment whose schema does not exist yet; dropped afterwards."""
    env = settings.with_suffix(settings.topic_suffix + "ddl")
    yield env
    with db.open_raw(env, "public", autocommit=True) as conn:
        drop_schema(conn, db.schema_name(env))


def _applied(conn: Any, schema: str) -> dict[str, str]:
    return dict(conn.execute(f'SELECT file, digest FROM "{schema}".tipline_schema_applied').fetchall())  # noqa: S608


def test_every_file_is_applied_once_and_recorded(fresh: Settings) -> None:
    names = [p.name for p in sql_files(fresh.root)]
    assert ensure_database_schema(fresh) == names
    assert ensure_database_schema(fresh) == []
    schema = db.schema_name(fresh)
    with db.open_raw(fresh, schema, autocommit=True) as conn:
        assert len(_applied(conn, schema)) == len(names)
        assert conn.execute("SELECT to_regclass('route_emitted')::text").fetchone() == ("route_emitted",)


def test_a_process_starting_during_a_run_waits_on_no_live_stages_lock(fresh: Settings) -> None:
    """A stage's batch holds ROW EXCLUSIVE on its table; running the files again (ALTER TABLE ... IF NOT
    EXISTS, CREATE INDEX IF NOT EXISTS) would queue behind it, and every later writer behind that."""
    ensure_database_schema(fresh)
    schema = db.schema_name(fresh)
    finished = threading.Event()
    errors: list[BaseException] = []

    def start_a_process() -> None:
        try:
            ensure_database_schema(fresh)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            finished.set()

    with db.open_raw(fresh, schema) as stage:
        with stage.transaction():
            for table in ("route_emitted", "ingest_reports", "assess_queue", "assess_queue_seen"):
                stage.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
            t = threading.Thread(target=start_a_process, daemon=True)
            t.start()
            done_in_time = finished.wait(10)
        t.join(30)
    assert done_in_time, "the starting process waited on a table a live stage was writing"
    assert errors == []


def test_a_file_whose_text_changed_is_applied_again_and_only_it(fresh: Settings) -> None:
    ensure_database_schema(fresh)
    schema = db.schema_name(fresh)
    with db.open_raw(fresh, schema, autocommit=True) as conn:
        key = next(k for k in _applied(conn, schema) if k.endswith("001_route_emitted.sql"))
        conn.execute(
            sql.SQL("UPDATE {} SET digest = %s WHERE file = %s").format(
                sql.Identifier(schema, "tipline_schema_applied")
            ),
            ("old", key),
        )
    assert ensure_database_schema(fresh) == ["001_route_emitted.sql"]
    assert ensure_database_schema(fresh) == []


def test_a_schema_made_before_the_files_were_recorded_gets_every_file_once(fresh: Settings) -> None:
    ensure_database_schema(fresh)
    schema = db.schema_name(fresh)
    with db.open_raw(fresh, schema, autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{schema}".tipline_schema_applied')
    assert len(ensure_database_schema(fresh)) == len(sql_files(fresh.root))
    assert ensure_database_schema(fresh) == []


def test_a_table_dropped_by_hand_is_made_again_at_the_next_start(fresh: Settings) -> None:
    """The file is recorded as applied, but a stage would fail at its first batch without its table."""
    ensure_database_schema(fresh)
    schema = db.schema_name(fresh)
    with db.open_raw(fresh, schema, autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{schema}".route_emitted')
    assert ensure_database_schema(fresh) == ["001_route_emitted.sql"]
    with db.open_raw(fresh, schema, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('route_emitted')::text").fetchone() == ("route_emitted",)
        # Its index came back with it.
        found = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = %s AND indexname = 'route_emitted_causation'",
            (schema,),
        ).fetchone()
        assert found == (1,)
    assert ensure_database_schema(fresh) == []


def test_every_file_names_the_tables_it_creates() -> None:
    """The check above reads table names from the files: each table file must be found by it."""
    from pathlib import Path

    from pipeline.schema_sql import tables_created_by

    root = Path(__file__).resolve().parents[2]
    found = {p.name: tables_created_by(p.read_text()) for p in sql_files(root)}
    assert found["001_route_emitted.sql"] == {"route_emitted"}
    assert {"assess_queue", "assess_decision"} <= found["060_assess_queue.sql"]
    assert "ingest_reports" in found["020_ingest_tables.sql"]
