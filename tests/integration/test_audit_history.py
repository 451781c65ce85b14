"""The auditors' views read the log itself: a report's history is exactly what was produced, in order,
and a replay until a past moment gives the state of that moment."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from pipeline import bootstrap
from pipeline import events as ev
from pipeline import logging as plog
from pipeline.cli import app
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS
from projections import samples
from projections.audit import history, replay
from projections.view import InMemoryView
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


def _events(n: int) -> list[ev.Event]:
    rng = random.Random(21)
    out: list[ev.Event] = []
    for i in range(n):
        out.extend(samples.lifecycle(i, rng))
    return out


def test_history_equals_what_was_produced(settings: Settings, make_topics: Callable[..., list[str]]) -> None:
    """Every event of the report, and only those, in the order they happened, with actor and summary."""
    make_topics(*EVENT_TOPICS)
    events = _events(25)
    produce_spread(settings, events)
    target = next(
        e.envelope.report_id for e in events if isinstance(e, ev.ReportReferred) and not e.recipient.domestic
    )
    mine = [e for e in events if e.envelope.report_id == target]
    h = history(settings, target, timeout=60)
    assert h.scan.complete
    assert h.scan.records == len(events)
    assert [x.event_id for x in h.entries] == [e.envelope.event_id for e in mine]
    # An actor id that already names its kind ("simulated:seed=1") is shown once, not "simulated:simulated:...".
    assert [x.actor for x in h.entries] == [
        e.envelope.actor.id
        if e.envelope.actor.id.startswith(f"{e.envelope.actor.kind}:")
        else f"{e.envelope.actor.kind}:{e.envelope.actor.id}"
        for e in mine
    ]
    assert h.entries[0].summary.startswith("received: report " + target)
    assert any(x.summary.startswith("referred to inhope_hotline") for x in h.entries)


def test_history_command_redacts_the_description(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """`tipline audit history` prints the events but never the description or a full URL."""
    make_topics(*EVENT_TOPICS)
    events = _events(3)
    produce_spread(settings, events)
    rid = events[0].envelope.report_id
    result = CliRunner().invoke(
        app,
        ["audit", "history", rid, "--timeout", "60"],
        env={"TIPLINE_TOPIC_SUFFIX": settings.topic_suffix, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "ReportReceived" in result.output
    assert "ReportClosed" in result.output
    assert "Generated report" not in result.output
    assert "https://" not in result.output


def test_replay_until_gives_the_state_of_that_moment(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Replaying with --until applies only the events that had occurred by then."""
    make_topics(*EVENT_TOPICS)
    events = _events(40)
    produce_spread(settings, events)
    times = sorted(e.envelope.occurred_at for e in events)
    until = times[len(times) // 2] + timedelta(milliseconds=0)
    expected = InMemoryView()
    expected.apply([e for e in events if e.envelope.occurred_at <= until])
    r = replay(settings, until, timeout=60)
    assert r.applied + r.later == len(events)
    assert r.later > 0
    assert r.view.rows() == expected.rows()
    assert r.view.statistics() == expected.statistics()
