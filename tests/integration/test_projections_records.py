"""The projector on a log holding every kind of record: current and older schema versions, records only
serde can read, and records nothing can read. Live and rebuilt read models agree row for row, and the
refused records are kept aside with serde's reasons in both."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pipeline import db, kafka, schema_registry, serde
from pipeline import events as ev
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS, name
from projections import pg, samples
from projections.rebuild import rebuild
from projections.runner import Projector, stored_offsets
from projections.view import InMemoryView
from tests.unit.test_projections_decode import _doctored, _write


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(settings, autocommit=True, prepare_threshold=None) as c:
        yield c
        live = pg.schema_for(settings)
        for (schema,) in c.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s", (live, live + r"\_%")
        ).fetchall():
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _old(event: ev.Event) -> bytes:
    """The event written with the oldest schema version of its type (v1)."""
    oldest = min(
        (f for f in schema_registry.registry() if f.event_name == type(event).__name__),
        key=lambda f: f.version,
    )
    return _write(oldest, serde.to_avro_dict(event))


def _rejected(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        sql.SQL(
            'SELECT topic, "partition", "offset", reason, message FROM {}.proj_rejected '
            'ORDER BY topic, "partition", "offset"'
        ).format(sql.Identifier(schema))
    ).fetchall()


def test_live_and_rebuilt_models_agree_on_every_kind_of_record(
    settings: Settings, make_topics: Callable[..., list[str]], conn: psycopg.Connection[Any]
) -> None:
    """Old versions and records only serde reads are projected, the unreadable ones kept aside with
    serde's reason; the live projector (small batches) and a rebuild build the same tables."""
    make_topics(*EVENT_TOPICS)
    rng = random.Random(17)
    current = [e for i in range(40) for e in samples.lifecycle(i, rng, steps=rng.choice((3, 5, 7)))]
    older = [e for i in range(100, 115) for e in samples.lifecycle(i, rng)]
    odd_ones = samples.lifecycle(200, rng)  # received, prioritized, classified, assessed, ...
    received, prioritized, classified, assessed = odd_ones[:4]
    unreadable = samples.lifecycle(300, rng)

    records: list[tuple[ev.Event, bytes | None]] = [(e, serde.encode(e)) for e in current]
    records += [(e, _old(e)) for e in older]
    # Only serde reads these: the generated reader leaves them to it.
    records += [
        (received, serde.encode(received)),
        (
            prioritized,
            _doctored("ReportPrioritized", ("body", "description"), None, "é" * 12_000, prioritized),
        ),
        (classified, _doctored("ReportClassified", ("needs_analyst_review",), "int", 1, classified)),
        (assessed, _doctored("ReportAssessed", ("determination",), "int", -1, assessed)),
    ]
    refused = [
        (
            unreadable[1],
            _doctored("ReportPrioritized", ("body", "description"), "bytes", b"\xff", unreadable[1]),
        ),
        (unreadable[2], serde.encode(unreadable[2])[:-5]),
        (
            unreadable[3],
            _doctored("ReportAssessed", ("envelope", "occurred_at"), None, -(2**61), unreadable[3]),
        ),
        (unreadable[-1], None),
    ]
    prod = kafka.producer(settings)
    order = records + refused
    rng.shuffle(order)
    for event, value in order:
        prod.produce(
            name(samples.topic_for(event), settings.topic_suffix),
            key=event.envelope.report_id.encode(),
            value=value,
            partition=rng.randrange(settings.partitions),
        )
    assert prod.flush(30) == 0

    live_schema = pg.schema_for(settings)
    live = Projector(settings, batch_size=37)
    try:
        live.start()
        live.run_until_caught_up(timeout=120)
    finally:
        live.close()
    assert live.processed == len(records)
    assert live.rejected == len(refused)

    built = rebuild(settings, swap_in=False)
    assert (built.events, built.rejected) == (len(records), len(refused))
    live_view, rebuilt_view = pg.PgView(conn, live_schema), pg.PgView(conn, built.schema)
    assert rebuilt_view.rows() == live_view.rows()
    assert _rejected(conn, built.schema) == _rejected(conn, live_schema)
    assert sorted(r[3] for r in _rejected(conn, live_schema)) == [
        "corrupt",
        "empty",
        "out_of_range",
        "truncated",
    ]
    assert stored_offsets(conn, built.schema) == stored_offsets(conn, live_schema)

    # What serde reads from each accepted record, folded in memory: the same rows.
    reference = InMemoryView()
    reference.apply([serde.decode(value) for _, value in records if value is not None])
    assert live_view.rows() == reference.rows()
    assert live_view.statistics() == reference.statistics()
