"""The read model in PostgreSQL: the same contract tests as the in-memory view, and the projector's
exactly-once behaviour against the real broker and database."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pipeline import db, kafka, serde
from pipeline import events as ev
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS, name
from projections import pg, samples
from projections.runner import Projector, stored_offsets
from projections.view import InMemoryView
from tests.unit.test_projections_contract import (  # noqa: F401 - the same tests, run on PgView
    test_a_newer_classification_wins_whatever_arrives_first,
    test_a_refused_resubmission_leaves_its_report_where_it_is,
    test_any_order_and_duplicates_converge,
    test_counts_by_province_are_by_the_reporters_origin,
    test_full_lifecycle_gives_the_report_status,
    test_one_report_is_counted_under_its_origin,
    test_queue_holds_classified_reports_by_level_then_arrival,
    test_rejected_submissions_are_not_closed_reports,
    test_statistics_count_what_the_events_say,
)


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(settings, autocommit=True, prepare_threshold=None) as c:
        yield c
        c.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(pg.schema_for(settings))
            )
        )


@pytest.fixture
def view(conn: psycopg.Connection[Any], settings: Settings) -> pg.PgView:
    schema = pg.schema_for(settings)
    pg.install(conn, schema)
    return pg.PgView(conn, schema)


def produce_spread(settings: Settings, events: list[ev.Event], seed: int = 1) -> None:
    """Produce each event to its topic on a random partition: one report's events land on several partitions."""
    rng = random.Random(seed)
    prod = kafka.producer(settings)
    for e in events:
        prod.produce(
            name(samples.topic_for(e), settings.topic_suffix),
            key=e.envelope.report_id.encode(),
            value=serde.encode(e),
            partition=rng.randrange(settings.partitions),
        )
    assert prod.flush(30) == 0


def lifecycles(n: int, seed: int = 4) -> list[ev.Event]:
    rng = random.Random(seed)
    return [e for i in range(n) for e in samples.lifecycle(i, rng, steps=rng.choice((3, 4, 5, 7, 7)))]


def _poll_forever(proj: Projector) -> None:
    while True:
        proj.poll_once(1.0)


def test_table_columns_follow_the_model(view: pg.PgView, conn: psycopg.Connection[Any]) -> None:
    """proj_report's columns (sql/001) are exactly the model's groups, in order."""
    cols = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'proj_report' "
        "ORDER BY ordinal_position",
        (view.schema,),
    ).fetchall()
    assert tuple(c for (c,) in cols) == pg.COLUMNS


def test_a_table_from_before_resubmitted_gets_its_columns(
    view: pg.PgView, conn: psycopg.Connection[Any]
) -> None:
    """Installing over a proj_report created without the resubmitted group's columns adds them."""
    table = psycopg.sql.SQL("{}.proj_report").format(psycopg.sql.Identifier(view.schema))
    for col in ("resubmitted_first_at", "resubmitted_at", "resubmitted_event"):
        conn.execute(
            psycopg.sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table, psycopg.sql.Identifier(col))
        )
    pg.install(conn, view.schema)
    test_table_columns_follow_the_model(view, conn)


def test_a_table_from_before_reporter_origin_gets_the_column(
    view: pg.PgView, conn: psycopg.Connection[Any]
) -> None:
    """Installing over a proj_report created without reporter_origin adds it; counts then use it."""
    table = psycopg.sql.SQL("{}.proj_report").format(psycopg.sql.Identifier(view.schema))
    conn.execute(psycopg.sql.SQL("ALTER TABLE {} DROP COLUMN reporter_origin").format(table))
    pg.install(conn, view.schema)
    cols = {
        c
        for (c,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'proj_report'",
            (view.schema,),
        ).fetchall()
    }
    assert cols == set(pg.COLUMNS)
    events = lifecycles(40)
    view.apply(events)
    memory = InMemoryView()
    memory.apply(events)
    assert view.statistics().by_province == memory.statistics().by_province
    assert "international" in view.statistics().by_province


def test_projector_reads_spread_partitions_once(
    settings: Settings, make_topics: Callable[..., list[str]], view: pg.PgView, conn: psycopg.Connection[Any]
) -> None:
    """Events of one report spread over partitions and topics, some sent twice, converge to the reference rows."""
    make_topics(*EVENT_TOPICS)
    events = lifecycles(80)
    produce_spread(settings, events)
    produce_spread(settings, events[:50], seed=2)
    reference = InMemoryView()
    reference.apply(events)
    proj = Projector(settings, batch_size=97)
    try:
        proj.start()
        proj.run_until_caught_up(timeout=60)
    finally:
        proj.close()
    assert proj.processed == len(events) + 50
    assert view.rows() == reference.rows()
    assert view.statistics() == reference.statistics()
    offsets = stored_offsets(conn, view.schema)
    assert sum(offsets.values()) == len(events) + 50


def test_a_crash_between_rows_and_offsets_never_counts_twice(
    settings: Settings, make_topics: Callable[..., list[str]], view: pg.PgView, conn: psycopg.Connection[Any]
) -> None:
    """Raising after a batch's rows but before its offsets rolls both back; the restart applies each event once."""
    make_topics(*EVENT_TOPICS)
    events = lifecycles(40)
    produce_spread(settings, events)
    reference = InMemoryView()
    reference.apply(events)

    def crash() -> None:
        raise RuntimeError("killed between rows and offsets")

    proj = Projector(settings, batch_size=10_000, apply_hook=crash)
    try:
        proj.start()
        with pytest.raises(RuntimeError, match="killed"):
            _poll_forever(proj)
    finally:
        proj.close()
    assert view.rows() == ([], [])
    assert stored_offsets(conn, view.schema) == {}

    # Half-way: a batch commits, then another crash, then a clean restart.
    calls = {"n": 0}

    def crash_second() -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed again")

    proj = Projector(settings, batch_size=60, apply_hook=crash_second)
    try:
        proj.start()
        with pytest.raises(RuntimeError, match="killed again"):
            _poll_forever(proj)
    finally:
        proj.close()
    assert sum(stored_offsets(conn, view.schema).values()) > 0
    proj = Projector(settings, batch_size=60)
    try:
        proj.start()
        proj.run_until_caught_up(timeout=60)
    finally:
        proj.close()
    assert sum(stored_offsets(conn, view.schema).values()) == len(events)
    assert view.rows() == reference.rows()
    assert view.statistics() == reference.statistics()


def test_undecodable_records_are_kept_aside_with_their_reason(
    settings: Settings, make_topics: Callable[..., list[str]], view: pg.PgView, conn: psycopg.Connection[Any]
) -> None:
    """A record that is not an event is stored in proj_rejected with its position; the others still apply."""
    make_topics(*EVENT_TOPICS)
    events = lifecycles(5)
    produce_spread(settings, events)
    prod = kafka.producer(settings)
    prod.produce(name(EVENT_TOPICS[1], settings.topic_suffix), key=b"CT-x", value=b"not avro", partition=0)
    assert prod.flush(30) == 0
    proj = Projector(settings)
    try:
        proj.start()
        proj.run_until_caught_up(timeout=60)
    finally:
        proj.close()
    rejected = conn.execute(
        psycopg.sql.SQL('SELECT topic, "partition", reason FROM {}.proj_rejected').format(
            psycopg.sql.Identifier(view.schema)
        )
    ).fetchall()
    assert rejected == [(name(EVENT_TOPICS[1], settings.topic_suffix), 0, "bad_marker")]
    reference = InMemoryView()
    reference.apply(events)
    assert view.rows() == reference.rows()
