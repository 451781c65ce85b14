"""The read-model contract: every view (in memory here, PostgreSQL in the integration tests) passes these.

The integration module imports these tests and overrides the ``view`` fixture with a ``PgView``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from pipeline import events as ev
from projections import samples
from projections.view import InMemoryView, View


@pytest.fixture
def view() -> View:
    return InMemoryView()


def _reports(n: int, seed: int = 3, steps: Callable[[random.Random], int] | None = None) -> list[ev.Event]:
    rng = random.Random(seed)
    return [e for i in range(n) for e in samples.lifecycle(i, rng, steps=steps(rng) if steps else 7)]


def test_full_lifecycle_gives_the_report_status(view: View) -> None:
    """A report that went all the way shows step closed, its classification, determination, outcome and times."""
    events = _reports(40)
    view.apply(events)
    closed = next(e for e in events if isinstance(e, ev.ReportClosed) and e.outcome is ev.Outcome.REFERRED)
    rid = closed.envelope.report_id
    mine = [e for e in events if e.envelope.report_id == rid]
    cls = next(e for e in mine if isinstance(e, ev.ReportClassified))
    assessed = next(e for e in mine if isinstance(e, ev.ReportAssessed))
    refs = [e for e in mine if isinstance(e, ev.ReportReferred)]
    status = view.report(rid)
    assert status is not None
    assert status.step == "closed"
    assert status.level == cls.level
    assert status.categories == (str(cls.incidents[0].assigned_category),)
    assert status.determination == str(assessed.determination)
    assert status.outcome == "referred"
    assert [r.event_id for r in status.referrals] == [r.envelope.event_id for r in refs]
    assert [r.domestic for r in status.referrals] == [r.recipient.domestic for r in refs]
    assert status.times["assessed"] == assessed.envelope.occurred_at
    assert view.report("CT-0000-000000") is None


def test_any_order_and_duplicates_converge(view: View) -> None:
    """Events shuffled across batches, with duplicates, give the same rows as the events in order."""
    events = _reports(60, steps=lambda r: r.randint(2, 7))
    reference = InMemoryView()
    reference.apply(events)
    rng = random.Random(11)
    shuffled = events + rng.sample(events, len(events) // 3)
    rng.shuffle(shuffled)
    for i in range(0, len(shuffled), 37):
        view.apply(shuffled[i : i + 37])
    assert view.rows() == reference.rows()
    assert view.statistics() == reference.statistics()


def test_a_newer_classification_wins_whatever_arrives_first(view: View) -> None:
    """An analyst's override (newer occurred_at) supersedes the first classification, even if it arrives first."""
    events = _reports(1, steps=lambda _r: 4)
    first = events[-1]
    assert isinstance(first, ev.ReportClassified)
    env = ev.Envelope.follow(
        first.envelope,
        event_type="ReportClassified",
        producer="classify/0.1.0",
        actor=ev.Actor(kind=ev.ActorKind.ANALYST, id="analyst:a1"),
        occurred_at=first.envelope.occurred_at + timedelta(minutes=5),
        discriminator="override",
    )
    incident = replace(first.incidents[0], assigned_category=ev.Category.LURING, sections=("172.1",))
    override = replace(
        first, envelope=env, incidents=(incident,), level=1, supersedes=first.envelope.event_id
    )
    view.apply([override])
    view.apply(events)
    status = view.report(first.envelope.report_id)
    assert status is not None
    assert (status.categories, status.sections, status.level) == (("luring",), ("172.1",), 1)
    assert status.times["classified"] == first.envelope.occurred_at


def test_queue_holds_classified_reports_by_level_then_arrival(view: View) -> None:
    """The analysts' queue lists classified, unassessed reports: most urgent level first, then arrival."""
    events = _reports(50, steps=lambda r: r.choice((4, 5, 7)))
    view.apply(events)
    waiting = {
        e.envelope.report_id: (e.level, e.arrival_seq)
        for e in events
        if isinstance(e, ev.ReportClassified)
        and not any(
            isinstance(x, ev.ReportAssessed) and x.envelope.report_id == e.envelope.report_id for x in events
        )
    }
    expected = sorted(waiting, key=lambda rid: waiting[rid])
    assert [q.report_id for q in view.queue(limit=1000)] == expected
    assert len(expected) > 5
    assert [q.report_id for q in view.queue(limit=3)] == expected[:3]


def test_statistics_count_what_the_events_say(view: View) -> None:
    """Shares, counts and step times equal what is counted directly from the ReportClosed events."""
    events = _reports(120)
    view.apply(events)
    closed = [e for e in events if isinstance(e, ev.ReportClosed)]
    referred = [e for e in closed if e.outcome is ev.Outcome.REFERRED]
    police = [e for e in closed if e.domestic_police + e.foreign_police > 0]
    in_canada = [e for e in police if e.foreign_police == 0]
    s = view.statistics()
    assert (s.reports, s.closed, s.referred) == (120, len(closed), len(referred))
    assert s.share_referred == pytest.approx(len(referred) / len(closed))
    assert s.share_legal_or_informational == pytest.approx(1 - len(referred) / len(closed))
    assert s.share_police_in_canada == pytest.approx(len(in_canada) / len(police))
    assert sum(s.by_category.values()) == len(closed)
    assert sum(s.by_province.values()) == len(closed)
    assert s.by_province.get("unknown", 0) == sum(
        1 for c in closed if _expected_origin(events, c) == "unknown"
    )
    assert s.by_hosting_country.get("GB", 0) == sum(1 for e in closed if "GB" in e.hosting_countries)
    assert s.by_step == {"closed": 120}
    to_closed = sorted(
        (c.envelope.occurred_at - a.envelope.occurred_at).total_seconds()
        for c in closed
        for a in events
        if isinstance(a, ev.ReportAssessed) and a.envelope.report_id == c.envelope.report_id
    )
    last = s.step_times[-1]
    assert (last.start, last.end, last.count) == ("assessed", "closed", 120)
    assert last.median_s == pytest.approx((to_closed[59] + to_closed[60]) / 2)


def _expected_origin(events: list[ev.Event], closed: ev.ReportClosed) -> str:
    received = next(
        e
        for e in events
        if isinstance(e, ev.ReportReceived) and e.envelope.report_id == closed.envelope.report_id
    )
    where = received.body.reporter_location
    if where is not None and where.province:
        return where.province
    if where is not None and where.country and where.country != "CA":
        return "international"
    return closed.province or "unknown"


def test_counts_by_province_are_by_the_reporters_origin(view: View) -> None:
    """Province counts take the reporter's province, then international, then route's province, then unknown."""
    events = _reports(150)
    view.apply(events)
    closed = [e for e in events if isinstance(e, ev.ReportClosed)]
    expected = Counter(_expected_origin(events, c) for c in closed)
    assert view.statistics().by_province == dict(sorted(expected.items()))
    # The sample stream holds every case, so each rule above is exercised.
    assert expected["international"] == 30
    assert expected["NU"] > 0
    assert sum(1 for c in closed if c.province is None) > 0


@pytest.mark.parametrize(
    ("reporter_location", "closed_province", "counted_as"),
    [
        (ev.Location(province="SK", country="CA"), "ON", "SK"),
        (ev.Location(province="YT"), None, "YT"),
        (ev.Location(country="FR", city="Lyon"), "ON", "international"),
        (ev.Location(country="CA"), "NS", "NS"),
        (ev.Location(city="Toronto"), None, "unknown"),
        (None, "BC", "BC"),
        (None, None, "unknown"),
    ],
)
def test_one_report_is_counted_under_its_origin(
    view: View, reporter_location: ev.Location | None, closed_province: str | None, counted_as: str
) -> None:
    """One closed report lands in the province column its reporter's location (or route's province) says."""
    events = samples.lifecycle(0, random.Random(1))
    out: list[ev.Event] = []
    for event in events:
        e = replace(event, province=closed_province) if isinstance(event, ev.ReportClosed) else event
        body = getattr(e, "body", None)
        if body is not None:
            e = replace(e, body=replace(body, reporter_location=reporter_location))
        out.append(e)
    view.apply(out)
    assert view.statistics().by_province == {counted_as: 1}


def test_rejected_submissions_are_not_closed_reports(view: View) -> None:
    """A ReportRejected shows as step rejected and is left out of the published shares."""
    env = ev.Envelope.first(
        submission_id="s-rej",
        event_type="ReportRejected",
        report_id="CT-2026-999999",
        producer="ingest/0.1.0",
        actor=samples.SYSTEM,
        occurred_at=samples.START,
    )
    view.apply(
        [ev.ReportRejected(envelope=env, submission_id="s-rej", reason_code="invalid", message="bad url")]
    )
    status = view.report("CT-2026-999999")
    assert status is not None
    assert status.step == "rejected"
    assert view.statistics().closed == 0
    assert view.statistics().share_referred is None


def _resubmission(report_id: str, at_offset: timedelta, n: int = 0) -> ev.ReportRejected:
    env = ev.Envelope.first(
        submission_id=f"s-resubmitted-{n}",
        event_type="ReportRejected",
        report_id=report_id,
        producer="ingest/0.1.0",
        actor=samples.SYSTEM,
        occurred_at=samples.START + at_offset,
    )
    return ev.ReportRejected(
        envelope=env,
        submission_id=f"s-resubmitted-{n}",
        reason_code=ev.DUPLICATE_SUBMISSION,
        message="sent again",
        duplicate_of=report_id,
    )


def test_a_refused_resubmission_leaves_its_report_where_it_is(view: View) -> None:
    """A resubmission refused by ingest names the report it repeats: that report goes on (queue, step,
    statistics) and the read model only records when it was sent again."""
    events = _reports(40)
    closed = next(e for e in events if isinstance(e, ev.ReportClosed) and e.outcome is ev.Outcome.REFERRED)
    rid = closed.envelope.report_id
    waiting = {e.envelope.report_id for e in events if isinstance(e, ev.ReportClassified)} - {
        e.envelope.report_id for e in events if isinstance(e, ev.ReportAssessed)
    }
    resent = [_resubmission(rid, timedelta(days=30), 1), _resubmission(rid, timedelta(seconds=1), 2)]
    resent += [_resubmission(w, timedelta(days=30), 3) for w in sorted(waiting)]
    reference = InMemoryView()
    reference.apply(events)
    view.apply(events + resent)
    status = view.report(rid)
    assert status is not None
    assert status.step == "closed"
    assert status.outcome == "referred"
    assert status.times["resubmitted"] == samples.START + timedelta(seconds=1)
    assert [q.report_id for q in view.queue()] == [q.report_id for q in reference.queue()]
    stats, before = view.statistics(), reference.statistics()
    assert "rejected" not in stats.by_step
    assert (stats.by_step, stats.closed, stats.referred) == (before.by_step, before.closed, before.referred)
