"""Runs of claims and decisions (``claim(limit=N)``, ``record_decisions``, ``simulate(batch=N)``) on the
real PostgreSQL and broker: the same checks and rows as one at a time, produce before mark, refusals alone."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.assess import logic, queue, simulated
from pipeline.db import connect
from pipeline.errors import DomainError, ServiceError
from pipeline.events import MAX_NOTE, ActorKind, Determination, ReportAssessed, ReportClassified
from pipeline.settings import Settings
from pipeline.topics import ASSESSED
from tests.integration.harness import consume
from tests.integration.test_assess_batch import _rows
from tests.unit.test_assess_support import classified

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    with connect(settings) as c:
        yield c


def enqueue(conn: Any, namespace: str, *events: ReportClassified) -> None:
    with conn.transaction():
        for ev in events:
            queue.enqueue_classified(conn, namespace, ev, NOW)


def request(report: str, analyst: str, determination: Determination, **kw: Any) -> queue.DecisionRequest:
    return queue.DecisionRequest(
        report=report,
        actor=logic.analyst_actor(analyst),
        claim_owner=analyst,
        determination=determination,
        **kw,
    )


def test_a_claim_of_a_run_takes_the_most_urgent_and_gives_back_what_is_held(
    conn: Any, settings: Settings
) -> None:
    """Up to ``limit`` reports in (level, arrival) order; asked again, the owner gets its held ones first."""
    ns = settings.topic_suffix
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(10)]
    enqueue(conn, ns, *reports)
    order = sorted(reports, key=lambda r: (r.level, r.arrival_seq))
    first = queue.claim(conn, ns, "ana", now=NOW, limit=4)
    assert [i.report_id for i in first] == [r.envelope.report_id for r in order[:4]]
    assert {i.claimed_by for i in first} == {"ana"}
    # Held claims come back (extended) before anything new; the rest of the run is new.
    again = queue.claim(conn, ns, "ana", now=NOW + timedelta(minutes=5), limit=6)
    assert [i.report_id for i in again] == [r.envelope.report_id for r in order[:6]]
    assert {i.claim_expires_at for i in again} == {NOW + timedelta(minutes=20)}
    # A smaller limit than what is held returns the most urgent held ones and claims nothing more.
    assert [i.report_id for i in queue.claim(conn, ns, "ana", now=NOW, limit=2)] == [
        r.envelope.report_id for r in order[:2]
    ]
    assert queue.open_count(conn, ns, NOW) == 4
    bob = queue.claim(conn, ns, "bob", now=NOW, limit=50)
    assert [i.report_id for i in bob] == [r.envelope.report_id for r in order[6:]]
    assert queue.claim(conn, ns, "cyd", now=NOW, limit=50) == []
    with pytest.raises(ValueError, match="limit"):
        queue.claim(conn, ns, "cyd", now=NOW, limit=0)


def test_concurrent_runs_of_claims_never_overlap(settings: Settings) -> None:
    """Eight owners claiming runs of 7 at the same instant share 50 reports without a report claimed twice."""
    ns = settings.topic_suffix
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(50)]
    with connect(settings) as c:
        enqueue(c, ns, *reports)
    barrier = threading.Barrier(8)
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def analyst(i: int) -> None:
        try:
            with connect(settings) as c:
                barrier.wait(10)
                got[f"a{i}"] = [it.report_id for it in queue.claim(c, ns, f"a{i}", now=NOW, limit=7)]
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=analyst, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    claimed = [r for run in got.values() for r in run]
    assert len(claimed) == len(set(claimed)) == 50  # 8 x 7 asked for, 50 there: all taken, none twice
    assert all(len(run) <= 7 for run in got.values())


def _same_outcome(a: queue.DecisionOutcome, b: queue.DecisionOutcome) -> bool:
    if isinstance(a, ReportAssessed) or isinstance(b, ReportAssessed):
        return a == b
    return type(a) is type(b) and str(a) == str(b)


def test_a_run_of_decisions_gives_what_one_at_a_time_gives(settings: Settings) -> None:
    """Accepted, someone else's claim, unknown, already decided, a revision, a long note, one report twice:
    per request the same event or refusal, the same events produced and the same rows, as one by one."""
    one = settings
    many = settings.with_suffix(settings.topic_suffix + "r")
    reports = [classified(level=1 + i % 4, arrival_seq=i, with_contact=i % 2 == 0) for i in range(8)]
    rid = [r.envelope.report_id for r in reports]
    number = [r.body.report_number for r in reports]
    produced: dict[str, list[ReportAssessed]] = {one.topic_suffix: [], many.topic_suffix: []}
    conns = {s.topic_suffix: connect(s) for s in (one, many)}
    try:
        for ns, c in conns.items():
            enqueue(c, ns, *reports)
            queue.claim_next(c, ns, "bob", now=NOW)  # bob holds reports[0] (level 1, arrival 0)
            queue.claim(c, ns, "ana", now=NOW, limit=2)  # ana holds reports[4] and reports[1]
            queue.record_decision(
                c, produced[ns].append, ns, request(rid[3], "cyd", Determination.NOT_ILLEGAL), now=NOW
            )
        requests = [
            request(rid[4], "ana", Determination.POTENTIALLY_ILLEGAL, child_may_need_protection=True),
            request(rid[0], "ana", Determination.NOT_ILLEGAL),  # bob's claim
            request("CT-nope", "ana", Determination.NOT_ILLEGAL),
            request(rid[3], "ana", Determination.INFORMATIONAL),  # decided by cyd, no --revise
            request(number[1], "ana", Determination.OUTSIDE_MANDATE, note="by number"),
            request(rid[2], "ana", Determination.NOT_ILLEGAL, note="n" * (MAX_NOTE + 1)),
            request(rid[5], "ana", Determination.NOT_ILLEGAL),
            request(rid[5], "ana", Determination.INFORMATIONAL),  # decided just before, in the same run
            request(number[5], "dee", Determination.POTENTIALLY_ILLEGAL, revise=True),
            request(rid[3], "dee", Determination.POTENTIALLY_ILLEGAL, revise=True),
            request(rid[0], "bob", Determination.NOT_ILLEGAL, note="mine"),
        ]
        at = NOW + timedelta(minutes=3)
        expected: list[queue.DecisionOutcome] = []
        c1 = conns[one.topic_suffix]
        for r in requests:
            try:
                expected.append(
                    queue.record_decision(c1, produced[one.topic_suffix].append, one.topic_suffix, r, now=at)
                )
            except (queue.QueueError, DomainError) as exc:
                expected.append(exc)
        runs: list[int] = []

        def publish_run(events: Sequence[ReportAssessed]) -> None:
            runs.append(len(events))
            produced[many.topic_suffix].extend(events)

        got = queue.record_decisions(
            conns[many.topic_suffix], publish_run, many.topic_suffix, requests, now=at
        )
        assert len(got) == len(expected) == len(requests)
        assert all(_same_outcome(a, b) for a, b in zip(got, expected, strict=True)), (got, expected)
        assert [type(o).__name__ for o in got] == [
            "ReportAssessed",
            "QueueError",
            "QueueError",
            "QueueError",
            "ReportAssessed",
            "DomainError",
            "ReportAssessed",
            "QueueError",
            "ReportAssessed",
            "ReportAssessed",
            "ReportAssessed",
        ]
        assert runs == [6]  # one publish for the whole run
        assert produced[many.topic_suffix] == produced[one.topic_suffix]
        assert got[8].supersedes == got[6].envelope.event_id  # type: ignore[union-attr]
        assert _rows(conns[many.topic_suffix], many.topic_suffix) == _rows(c1, one.topic_suffix)
    finally:
        for c in conns.values():
            c.close()


def test_a_run_is_produced_before_any_row_is_marked_and_nothing_is_marked_when_it_fails(
    conn: Any, settings: Settings
) -> None:
    """The broker acknowledges the whole run before the rows are marked; a failed publish marks none."""
    ns = settings.topic_suffix
    reports = [classified(arrival_seq=i) for i in range(5)]
    enqueue(conn, ns, *reports)
    items = queue.claim(conn, ns, "ana", now=NOW, limit=5)
    requests = [request(i.report_id, "ana", Determination.NOT_ILLEGAL) for i in items]

    def broker_down(events: Sequence[ReportAssessed]) -> None:
        raise ServiceError(f"Kafka did not acknowledge {len(events)} determinations; nothing was recorded.")

    with pytest.raises(ServiceError):
        queue.record_decisions(conn, broker_down, ns, requests, now=NOW)
    after = [queue.find(conn, ns, i.report_id) for i in items]
    assert [(a.status, a.claimed_by, a.history) for a in after if a is not None] == [
        ("claimed", "ana", ())
    ] * 5

    statuses_at_publish: list[list[str]] = []

    def check_unmarked(events: Sequence[ReportAssessed]) -> None:
        ids = [e.envelope.report_id for e in events]
        rows = conn.execute(
            "SELECT status FROM assess_queue WHERE namespace = %s AND report_id = ANY(%s)", (ns, ids)
        ).fetchall()
        statuses_at_publish.append(sorted(r[0] for r in rows))

    outcomes = queue.record_decisions(conn, check_unmarked, ns, requests, now=NOW)
    assert all(isinstance(o, ReportAssessed) for o in outcomes)
    assert statuses_at_publish == [["claimed"] * 5]
    assert {queue.find(conn, ns, i.report_id).status for i in items} == {"decided"}  # type: ignore[union-attr]


def test_the_publisher_produces_a_run_with_one_wait(
    conn: Any, settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """publish_many puts every event of the run on the assessed topic, acknowledged, in order."""
    make_topics(ASSESSED)
    ns = settings.topic_suffix
    reports = [classified(arrival_seq=i) for i in range(12)]
    enqueue(conn, ns, *reports)
    items = queue.claim(conn, ns, "ana", now=NOW, limit=12)
    publisher = queue.Publisher(settings)
    try:
        outcomes = queue.record_decisions(
            conn,
            publisher.publish_many,
            ns,
            [request(i.report_id, "ana", Determination.NOT_ILLEGAL) for i in items],
            now=NOW,
        )
    finally:
        publisher.close()
    got = consume(settings, ASSESSED, count=12, timeout=60, settle=1.0).events
    assert sorted(e.envelope.event_id for e in got) == sorted(o.envelope.event_id for o in outcomes)  # type: ignore[union-attr]


def test_simulated_analysts_in_runs_decide_each_report_once_as_the_policy_says(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Two simulated analysts with runs of 7 decide 40 reports once each, labelled, as the pure policy says."""
    make_topics(ASSESSED)
    ns = settings.topic_suffix
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(40)]
    with connect(settings) as c:
        enqueue(c, ns, *reports)
    summary = queue.simulate(settings, seed=7, analysts=2, until_empty=True, idle_s=0.0, batch=7)
    assert summary.decided == 40
    assert summary.refused == 0
    assert sum(summary.by_worker.values()) == 40
    events = consume(settings, ASSESSED, count=40, timeout=60, settle=1.0).events
    assert len(events) == 40
    expected = {r.envelope.report_id: simulated.decide(r, 7).determination for r in reports}
    assert {e.envelope.report_id: e.determination for e in events} == expected
    assert {(e.envelope.actor.kind, e.envelope.actor.id) for e in events} == {
        (ActorKind.SIMULATED, "simulated:seed=7")
    }
    assert Counter(summary.determinations) == Counter(e.determination.value for e in events)


def test_simulated_runs_stop_at_max_decisions_and_a_restart_takes_back_its_claims(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """max_decisions holds with runs and two analysts; a restarted worker first decides the claims it held."""
    make_topics(ASSESSED)
    ns = settings.topic_suffix
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(30)]
    with connect(settings) as c:
        enqueue(c, ns, *reports)
        held = queue.claim(c, ns, "simulated.seed7.0", now=datetime.now(UTC), limit=3)
    summary = queue.simulate(settings, seed=7, analysts=2, until_empty=True, max_decisions=17, batch=5)
    assert summary.decided == 17
    with connect(settings) as c:
        assert queue.open_count(c, ns, datetime.now(UTC)) == 13
        decided = {
            i.report_id
            for i in held
            if (found := queue.find(c, ns, i.report_id)) and found.status == "decided"
        }
    assert decided == {i.report_id for i in held}
    with pytest.raises(ValueError, match="batch"):
        queue.simulate(settings, seed=7, batch=0)


def test_a_classification_known_from_the_claim_is_used_only_while_the_row_still_holds_it(
    conn: Any, settings: Settings
) -> None:
    """``known`` saves decoding the claimed rows again; a row re-classified since the claim is read anew."""
    ns = settings.topic_suffix
    kept, changed = classified(level=3, arrival_seq=1), classified(level=3, arrival_seq=2)
    enqueue(conn, ns, kept, changed)
    items = queue.claim(conn, ns, "ana", now=NOW, limit=2)
    known = {i.classified.envelope.event_id: i.classified for i in items}
    override = classified(
        report_id=changed.envelope.report_id, level=1, arrival_seq=2, supersedes=changed.envelope.event_id
    )
    enqueue(conn, ns, override)
    requests = [request(i.report_id, "ana", Determination.NOT_ILLEGAL) for i in items]
    outcomes = queue.record_decisions(conn, lambda _e: None, ns, requests, now=NOW, known=known)
    by_report = {o.envelope.report_id: o for o in outcomes if isinstance(o, ReportAssessed)}
    assert by_report[kept.envelope.report_id].envelope.causation_id == kept.envelope.event_id
    assert by_report[changed.envelope.report_id].envelope.causation_id == override.envelope.event_id
    assert by_report[changed.envelope.report_id].level == 1
