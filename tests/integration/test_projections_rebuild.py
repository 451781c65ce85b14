"""`tipline projections rebuild`: the rebuilt tables equal the live ones row by row, and the swap is atomic
while the live projector keeps running."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pipeline import db
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS
from projections import pg, samples
from projections.rebuild import rebuild
from projections.runner import Projector, stored_offsets
from projections.view import InMemoryView
from tests.integration.test_projections_pg import produce_spread


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(settings, autocommit=True, prepare_threshold=None) as c:
        yield c
        live = pg.schema_for(settings)
        for (schema,) in c.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s", (live, live + r"\_%")
        ).fetchall():
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_rebuild_equals_live_and_swaps_in_while_live_runs(
    settings: Settings, make_topics: Callable[..., list[str]], conn: psycopg.Connection[Any]
) -> None:
    """A rebuild from offset 0 gives the live rows exactly; after the swap the live projector carries on."""
    make_topics(*EVENT_TOPICS)
    rng = random.Random(8)
    first = [e for i in range(60) for e in samples.lifecycle(i, rng, steps=rng.choice((4, 5, 7)))]
    produce_spread(settings, first)
    live_schema = pg.schema_for(settings)
    live = Projector(settings, batch_size=50)
    try:
        live.start()
        live.run_until_caught_up(timeout=60)
        built = rebuild(settings, swap_in=False, workers=2)
        assert built.events == len(first)
        live_view = pg.PgView(conn, live_schema)
        rebuilt_view = pg.PgView(conn, built.schema)
        assert rebuilt_view.rows() == live_view.rows()
        assert len(live_view.rows()[0]) == 60
        assert stored_offsets(conn, built.schema) == stored_offsets(conn, live_schema)

        swapped = rebuild(settings, keep_old=True)
        assert swapped.schema == live_schema
        assert swapped.old_schema is not None
        assert pg.PgView(conn, swapped.old_schema).rows() == pg.PgView(conn, live_schema).rows()

        more = [e for i in range(60, 90) for e in samples.lifecycle(i, rng)]
        produce_spread(settings, more, seed=5)
        live.run_until_caught_up(timeout=60)
    finally:
        live.close()
    reference = InMemoryView()
    reference.apply(first + more)
    assert pg.PgView(conn, live_schema).rows() == reference.rows()
    assert sum(stored_offsets(conn, live_schema).values()) == len(first) + len(more)
