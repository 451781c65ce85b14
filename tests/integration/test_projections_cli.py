"""The read side at the terminal: `tipline stats`, `tipline projections report|queue|status` on the live view."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from psycopg import sql
from typer.testing import CliRunner

from pipeline import bootstrap, db
from pipeline import events as ev
from pipeline import logging as plog
from pipeline.cli import app
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS
from projections import pg, samples
from projections.runner import Projector
from projections.stats import published_vs_measured
from tests.integration.test_projections_pg import produce_spread


@pytest.fixture(autouse=True)
def _rebind_logging() -> Iterator[None]:
    """pipeline.logging binds the stream it writes to once; CliRunner swaps (then closes) sys.stderr while
    `tipline` runs and configures logging. Rebind to the real stream afterwards so later tests can log.
    The process's settings are cached too: clear them so `tipline` reads this test's topic suffix."""
    bootstrap.settings.cache_clear()
    yield
    bootstrap.settings.cache_clear()
    plog.configure("json")
    plog.configure("console")


@pytest.fixture
def projected(settings: Settings, make_topics: Callable[..., list[str]]) -> Iterator[list[ev.Event]]:
    make_topics(*EVENT_TOPICS)
    rng = random.Random(17)
    events = [e for i in range(60) for e in samples.lifecycle(i, rng, steps=rng.choice((4, 7, 7)))]
    produce_spread(settings, events)
    proj = Projector(settings)
    try:
        proj.start()
        proj.run_until_caught_up(timeout=60)
    finally:
        proj.close()
    yield events
    with db.connect(settings, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg.schema_for(settings)))
        )


def _run(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(
        app, list(args), env={"TIPLINE_TOPIC_SUFFIX": settings.topic_suffix, "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_stats_prints_published_beside_measured(settings: Settings, projected: list[ev.Event]) -> None:
    """`tipline stats` shows 45.0% published and the measured share the demo function returns."""
    stats, rows = published_vs_measured(settings)
    closed = [e for e in projected if isinstance(e, ev.ReportClosed)]
    assert stats.closed == len(closed)
    out = _run(settings, "stats")
    assert "45.0%" in out
    assert f"{rows[0].measured * 100:.1f}%" in out
    assert f"{len(closed)} closed reports" in out


def test_report_and_queue_commands_read_the_live_view(settings: Settings, projected: list[ev.Event]) -> None:
    """`projections report` shows a report's step; `projections queue` lists the classified, unassessed ones."""
    closed = next(e for e in projected if isinstance(e, ev.ReportClosed))
    assert "closed" in _run(settings, "projections", "report", closed.envelope.report_id)
    waiting = {e.envelope.report_id for e in projected if isinstance(e, ev.ReportClassified)} - {
        e.envelope.report_id for e in projected if isinstance(e, ev.ReportAssessed)
    }
    out = _run(settings, "projections", "queue", "--limit", "500")
    assert waiting
    assert all(rid in out for rid in waiting)
    missing = CliRunner().invoke(
        app, ["projections", "report", "CT-1999-000000"], env={"TIPLINE_TOPIC_SUFFIX": settings.topic_suffix}
    )
    assert missing.exit_code != 0
    assert "lag" in _run(settings, "projections", "status")
