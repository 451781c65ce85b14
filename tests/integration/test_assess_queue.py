"""The analysts' queue against the real PostgreSQL and Kafka: claims, expiry, decisions, supersession."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from pipeline.assess import logic, queue
from pipeline.db import connect
from pipeline.errors import DomainError, ServiceError
from pipeline.events import MAX_NOTE, ActorKind, Determination, HashType, ReportAssessed, ReportClassified
from pipeline.settings import Settings
from pipeline.topics import ASSESSED
from tests.integration.harness import consume, wait_for
from tests.unit.test_assess_support import classified

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    with connect(settings) as c:
        yield c


@pytest.fixture
def publisher(settings: Settings, make_topics: Callable[..., list[str]]) -> Iterator[queue.Publisher]:
    make_topics(ASSESSED)
    pub = queue.Publisher(settings)
    yield pub
    pub.close()


def enqueue(conn: Any, settings: Settings, *events: ReportClassified) -> list[ReportAssessed]:
    out: list[ReportAssessed] = []
    with conn.transaction():
        for ev in events:
            out.extend(queue.enqueue_classified(conn, settings.topic_suffix, ev, NOW))
    return out


def request(report: str, analyst: str, determination: Determination, **kw: Any) -> queue.DecisionRequest:
    return queue.DecisionRequest(
        report=report,
        actor=logic.analyst_actor(analyst),
        claim_owner=analyst,
        determination=determination,
        **kw,
    )


def test_concurrent_analysts_never_claim_the_same_report(settings: Settings) -> None:
    """Twenty analysts claiming at the same instant each get a different report, in urgency order."""
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(20)]
    with connect(settings) as c:
        enqueue(c, settings, *reports)
    barrier = threading.Barrier(20)
    got: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def analyst(i: int) -> None:
        try:
            with connect(settings) as c:
                barrier.wait(10)
                item = queue.claim_next(c, settings.topic_suffix, f"analyst{i}", now=NOW)
                got[f"analyst{i}"] = item.report_id if item else None
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=analyst, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    claimed = [r for r in got.values() if r is not None]
    assert len(claimed) == 20
    assert len(set(claimed)) == 20
    assert set(claimed) == {r.envelope.report_id for r in reports}


def test_two_analysts_working_through_the_queue_decide_each_report_once(
    settings: Settings, publisher: queue.Publisher
) -> None:
    """Two analysts claiming and deciding in a loop decide every report exactly once, most urgent first."""
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(30)]
    with connect(settings) as c:
        enqueue(c, settings, *reports)
    decided: dict[str, list[tuple[int, int]]] = {"ana": [], "bob": []}
    errors: list[BaseException] = []

    def work(who: str) -> None:
        pub = queue.Publisher(settings)
        try:
            with connect(settings) as c:
                while (item := queue.claim_next(c, settings.topic_suffix, who, now=NOW)) is not None:
                    queue.record_decision(
                        c,
                        pub.publish,
                        settings.topic_suffix,
                        request(item.report_id, who, Determination.NOT_ILLEGAL),
                        now=NOW,
                    )
                    decided[who].append((item.level, item.arrival_seq))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            pub.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in decided]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    all_decided = decided["ana"] + decided["bob"]
    assert len(all_decided) == 30
    assert len(set(all_decided)) == 30
    for mine in decided.values():
        assert mine == sorted(mine)  # each analyst took reports in (level, arrival) order
    got = consume(settings, ASSESSED, count=30, timeout=60, settle=1.0)
    events = got.events
    assert len(events) == 30
    assert Counter(e.envelope.actor.id for e in events) == Counter(
        {"analyst:ana": len(decided["ana"]), "analyst:bob": len(decided["bob"])}
    )


def test_an_abandoned_claim_expires_and_becomes_claimable(conn: Any, settings: Settings) -> None:
    """A claim not decided within its time-to-live is taken by the next analyst; before that it is not."""
    report = classified()
    enqueue(conn, settings, report)
    ns = settings.topic_suffix
    ttl = timedelta(minutes=15)
    first = queue.claim_next(conn, ns, "ana", now=NOW, ttl=ttl)
    assert first is not None
    assert first.report_id == report.envelope.report_id
    assert queue.claim_next(conn, ns, "bob", now=NOW + timedelta(minutes=14), ttl=ttl) is None
    assert queue.open_count(conn, ns, NOW + timedelta(minutes=14)) == 0
    again = queue.claim_next(conn, ns, "bob", now=NOW + timedelta(minutes=16), ttl=ttl)
    assert again is not None
    assert again.report_id == report.envelope.report_id
    assert again.claimed_by == "bob"
    # ana's claim is gone: she can no longer decide it while bob's claim runs.
    with pytest.raises(queue.QueueError, match="claimed by bob"):
        queue.record_decision(
            conn,
            lambda _e: pytest.fail("nothing may be produced"),
            ns,
            request(report.body.report_number, "ana", Determination.NOT_ILLEGAL),
            now=NOW + timedelta(minutes=17),
        )


def test_expired_claims_and_open_reports_are_claimed_together_in_urgency_order(
    conn: Any, settings: Settings
) -> None:
    """An expired claim competes with open reports by level then arrival; one still held is not taken."""
    ns = settings.topic_suffix
    ttl = timedelta(minutes=15)
    expired = classified(level=2, arrival_seq=5)
    held = classified(level=1, arrival_seq=1)
    enqueue(conn, settings, expired, held)
    assert queue.claim(conn, ns, "ana", now=NOW, ttl=ttl, limit=1)[0].report_id == held.envelope.report_id
    assert queue.claim(conn, ns, "cy", now=NOW, ttl=ttl, limit=1)[0].report_id == expired.envelope.report_id
    urgent, late = classified(level=1, arrival_seq=9), classified(level=3, arrival_seq=2)
    enqueue(conn, settings, urgent, late)
    later = NOW + timedelta(minutes=10)
    # ana renews hers; cy's lapses at NOW + 15 min.
    queue.claim(conn, ns, "ana", now=later, ttl=ttl, limit=1)
    got = queue.claim(conn, ns, "bob", now=NOW + timedelta(minutes=16), ttl=ttl, limit=3)
    assert [i.report_id for i in got] == [
        urgent.envelope.report_id,
        expired.envelope.report_id,
        late.envelope.report_id,
    ]
    assert {i.claimed_by for i in got} == {"bob"}
    assert queue.open_count(conn, ns, NOW + timedelta(minutes=16)) == 0
    assert queue.open_count(conn, ns, NOW + timedelta(minutes=40)) == 4


def test_the_claim_reads_open_reports_through_their_index_on_a_table_without_statistics(
    conn: Any, settings: Settings
) -> None:
    """A fresh queue filled faster than autovacuum analyzes it: the claim still walks the open-rows index
    in urgency order instead of filtering every row (it did, and each claim cost a scan of the table)."""
    ns = settings.topic_suffix
    enqueue(conn, settings, *(classified(level=1 + i % 4, arrival_seq=i) for i in range(600)))
    with conn.transaction():
        for item in queue.claim(conn, ns, "ana", now=NOW, limit=300):
            conn.execute(
                "UPDATE assess_queue SET status = 'decided' WHERE namespace = %s AND report_id = %s",
                (ns, item.report_id),
            )
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN SELECT report_id FROM assess_queue WHERE namespace = %s AND status = 'open' "
            "ORDER BY level, arrival_seq LIMIT 50 FOR UPDATE SKIP LOCKED",
            (ns,),
        ).fetchall()
    )
    assert "assess_queue_open_idx" in plan, plan
    assert "Sort" not in plan, plan


def test_an_analyst_asking_again_gets_the_report_they_already_hold(conn: Any, settings: Settings) -> None:
    """Claiming twice returns the held report (with its claim extended) rather than a second one."""
    a, b = classified(arrival_seq=1), classified(arrival_seq=2)
    enqueue(conn, settings, a, b)
    ns = settings.topic_suffix
    first = queue.claim_next(conn, ns, "ana", now=NOW)
    second = queue.claim_next(conn, ns, "ana", now=NOW + timedelta(minutes=5))
    assert first is not None
    assert second is not None
    assert second.report_id == first.report_id == a.envelope.report_id
    assert second.claim_expires_at == NOW + timedelta(minutes=20)


@pytest.mark.parametrize("case", ["unknown", "claimed_by_other", "already_decided"])
def test_bad_decisions_are_refused_before_anything_is_produced(
    conn: Any, settings: Settings, case: str
) -> None:
    """Unknown report, someone else's claim, or an unrevised second decision: one error, nothing written."""
    ns = settings.topic_suffix
    report = classified()
    enqueue(conn, settings, report)
    produced: list[ReportAssessed] = []
    rid = report.envelope.report_id
    if case == "claimed_by_other":
        queue.claim_next(conn, ns, "bob", now=NOW)
    if case == "already_decided":
        queue.record_decision(
            conn, produced.append, ns, request(rid, "bob", Determination.NOT_ILLEGAL), now=NOW
        )
    before = queue.find(conn, ns, rid)
    target = "CT-nope" if case == "unknown" else rid
    messages = {
        "unknown": "No report 'CT-nope' is in the analysts' queue",
        "claimed_by_other": "claimed by bob",
        "already_decided": "already decided by analyst:bob; pass --revise",
    }
    with pytest.raises(queue.QueueError, match=messages[case]):
        queue.record_decision(
            conn, produced.append, ns, request(target, "ana", Determination.POTENTIALLY_ILLEGAL), now=NOW
        )
    assert len(produced) == (1 if case == "already_decided" else 0)
    assert queue.find(conn, ns, rid) == before


def test_a_failed_produce_leaves_the_row_unchanged(conn: Any, settings: Settings) -> None:
    """When the broker does not acknowledge, the queue row stays claimed and no decision is recorded."""
    ns = settings.topic_suffix
    report = classified()
    enqueue(conn, settings, report)
    queue.claim_next(conn, ns, "ana", now=NOW)

    def broker_down(_event: ReportAssessed) -> None:
        raise ServiceError("Kafka did not acknowledge the determination; nothing was recorded.")

    with pytest.raises(ServiceError):
        queue.record_decision(
            conn,
            broker_down,
            ns,
            request(report.envelope.report_id, "ana", Determination.NOT_ILLEGAL),
            now=NOW,
        )
    item = queue.find(conn, ns, report.envelope.report_id)
    assert item is not None
    assert item.status == "claimed"
    assert item.claimed_by == "ana"
    assert item.history == ()


def test_a_later_decision_supersedes_and_both_events_stay(
    conn: Any, settings: Settings, publisher: queue.Publisher
) -> None:
    """A revised determination is a new event pointing at the earlier one; both are on the topic."""
    ns = settings.topic_suffix
    report = classified(with_contact=True)
    enqueue(conn, settings, report)
    number = report.body.report_number
    first = queue.record_decision(
        conn,
        publisher.publish,
        ns,
        request(number, "ana", Determination.NOT_ILLEGAL, note="adult content"),
        now=NOW,
    )
    second = queue.record_decision(
        conn,
        publisher.publish,
        ns,
        request(
            number,
            "bob",
            Determination.POTENTIALLY_ILLEGAL,
            child_may_need_protection=True,
            revise=True,
        ),
        now=NOW + timedelta(hours=1),
    )
    got = consume(settings, ASSESSED, count=2, timeout=60, settle=1.0).events
    assert [e.envelope.event_id for e in got] == [first.envelope.event_id, second.envelope.event_id]
    old, new = got
    assert old.supersedes is None
    assert old.determination is Determination.NOT_ILLEGAL
    assert old.envelope.actor.id == "analyst:ana"
    assert new.supersedes == old.envelope.event_id
    assert new.determination is Determination.POTENTIALLY_ILLEGAL
    assert new.child_may_need_protection is True
    assert new.envelope.actor.kind is ActorKind.ANALYST
    assert new.envelope.actor.id == "analyst:bob"
    # The contact travels on encrypted for step 7's follow-up, though analysts never see it.
    assert new.body.contact == report.body.contact
    item = queue.find(conn, ns, number)
    assert item is not None
    assert item.classified.body.contact is None
    assert item.reporter_left_contact is True
    assert [d.assessment_event_id for d in item.history] == [old.envelope.event_id, new.envelope.event_id]
    assert item.determination == "potentially_illegal"


def test_enqueue_is_idempotent_and_a_newer_classification_keeps_the_claim(
    conn: Any, settings: Settings
) -> None:
    """A replay changes nothing; an override re-levels the single row but keeps the analyst's claim."""
    ns = settings.topic_suffix
    report = classified(level=3, arrival_seq=5)
    enqueue(conn, settings, report)
    enqueue(conn, settings, report)
    queue.claim_next(conn, ns, "ana", now=NOW)
    override = classified(
        report_id=report.envelope.report_id, level=1, arrival_seq=5, supersedes=report.envelope.event_id
    )
    enqueue(conn, settings, override)
    enqueue(conn, settings, report)  # the older classification replayed late: stale, ignored
    rows = conn.execute(
        "SELECT count(*), max(level), max(classification_event_id) FROM assess_queue "
        "WHERE namespace = %s AND report_id = %s",
        (ns, report.envelope.report_id),
    ).fetchone()
    assert rows == (1, 1, override.envelope.event_id)
    item = queue.find(conn, ns, report.envelope.report_id)
    assert item is not None
    assert item.status == "claimed"
    assert item.claimed_by == "ana"
    assert item.level == 1


def test_automated_assessment_is_replayed_identically(conn: Any, settings: Settings) -> None:
    """A known-hash report is decided automatically once; handling it again returns the same event."""
    digest = uuid.uuid4().hex  # a fresh fake md5 so no other test's list interferes
    queue.load_known_hashes(conn, [logic.hash_key(HashType.MD5, digest)], source="test")
    report = classified(hashes=((HashType.MD5, digest.upper()),))
    (first,) = enqueue(conn, settings, report)
    (again,) = enqueue(conn, settings, report)
    assert first == again
    assert first.determination is Determination.POTENTIALLY_ILLEGAL
    assert first.envelope.actor.kind is ActorKind.AUTOMATED
    item = queue.find(conn, settings.topic_suffix, report.envelope.report_id)
    assert item is not None
    assert item.status == "decided"
    assert queue.claim_next(conn, settings.topic_suffix, "ana", now=NOW) is None


def test_queue_logs_carry_no_description_note_or_contact(conn: Any, settings: Settings) -> None:
    """Enqueueing, claiming and deciding log ids and outcomes only: never the description, note or contact."""
    ns = settings.topic_suffix
    report = classified(with_contact=True, description="secret-description-text")
    produced: list[ReportAssessed] = []
    with capture_logs() as logs:
        enqueue(conn, settings, report)
        queue.claim_next(conn, ns, "ana", now=NOW)
        queue.record_decision(
            conn,
            produced.append,
            ns,
            request(report.envelope.report_id, "ana", Determination.NOT_ILLEGAL, note="secret-note-text"),
            now=NOW,
        )
    events = [entry["event"] for entry in logs]
    assert events == ["report_enqueued", "report_claimed", "report_assessed"]
    text = repr(logs)
    for secret in ("secret-description-text", "secret-note-text", "sealed-contact-bytes", "https://"):
        assert secret not in text
    assert produced[0].note == "secret-note-text"


def test_a_reclassification_after_the_decision_keeps_the_decision(conn: Any, settings: Settings) -> None:
    """An override arriving after a decision re-levels the row but neither reopens nor re-decides it."""
    ns = settings.topic_suffix
    report = classified(level=3)
    enqueue(conn, settings, report)
    produced: list[ReportAssessed] = []
    queue.record_decision(
        conn,
        produced.append,
        ns,
        request(report.envelope.report_id, "ana", Determination.NOT_ILLEGAL),
        now=NOW,
    )
    override = classified(report_id=report.envelope.report_id, level=1, supersedes=report.envelope.event_id)
    with capture_logs() as logs:
        assert enqueue(conn, settings, override) == []
    item = queue.find(conn, ns, report.envelope.report_id)
    assert item is not None
    assert (item.status, item.determination, item.decided_by, item.level) == (
        "decided",
        "not_illegal",
        "analyst:ana",
        1,
    )
    assert "report_reclassified_after_decision" in [entry["event"] for entry in logs]
    assert queue.claim_next(conn, ns, "bob", now=NOW) is None


def test_a_note_over_the_limit_is_refused_before_anything_is_produced(conn: Any, settings: Settings) -> None:
    """A note longer than the event allows is one clear error naming the field; the row stays open."""
    report = classified()
    enqueue(conn, settings, report)
    produced: list[ReportAssessed] = []
    req = request(report.envelope.report_id, "ana", Determination.NOT_ILLEGAL, note="n" * (MAX_NOTE + 1))
    with pytest.raises(DomainError, match="note is longer than 4000 characters") as err:
        queue.record_decision(conn, produced.append, settings.topic_suffix, req, now=NOW)
    assert err.value.field == "note"
    assert produced == []
    item = queue.find(conn, settings.topic_suffix, report.envelope.report_id)
    assert item is not None
    assert item.status == "open"


def test_an_override_arriving_before_the_classification_it_supersedes_wins(
    conn: Any, settings: Settings
) -> None:
    """Lanes do not order one report's events: the superseded classification arriving last changes nothing."""
    original = classified(level=4, arrival_seq=9)
    override = classified(
        report_id=original.envelope.report_id, level=1, arrival_seq=9, supersedes=original.envelope.event_id
    )
    enqueue(conn, settings, override)
    enqueue(conn, settings, original)
    item = queue.find(conn, settings.topic_suffix, original.envelope.report_id)
    assert item is not None
    assert item.level == 1
    assert item.classified.envelope.event_id == override.envelope.event_id
    outcomes = conn.execute(
        "SELECT classification_event_id, outcome FROM assess_queue_seen WHERE namespace = %s AND report_id = %s",
        (settings.topic_suffix, original.envelope.report_id),
    ).fetchall()
    assert dict(outcomes) == {override.envelope.event_id: "queued", original.envelope.event_id: "stale"}


class _AnalystRun:
    """An analyst deciding a run of claimed reports on a connection of their own, in a thread."""

    def __init__(
        self, settings: Settings, publisher: queue.Publisher, requests: list[queue.DecisionRequest]
    ) -> None:
        self.conn = connect(settings)
        self.outcomes: list[queue.DecisionOutcome] = []
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.outcomes = queue.record_decisions_retrying(
                    self.conn, publisher.publish_many, settings.topic_suffix, requests
                )
            except BaseException as exc:  # noqa: BLE001 - surfaced by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)

    def start_and_wait_for_a_lock(self, watch: Any) -> None:
        """Start, and return once the analyst's statement waits on a row lock another transaction holds."""
        pid = self.conn.info.backend_pid
        self.thread.start()
        wait_for(
            lambda: (
                watch.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                == ("Lock",)
            ),
            timeout=10,
            what="the analyst waiting on a row lock",
        )

    def finish(self) -> list[queue.DecisionOutcome]:
        self.thread.join(30)
        self.conn.close()
        if self.error is not None:
            raise self.error
        return self.outcomes


def _two_claimed(conn: Any, settings: Settings) -> tuple[ReportClassified, ReportClassified]:
    """Two queued reports ("a..." before "b..." in report order), both claimed by the analyst ana."""
    tag = uuid.uuid4().hex[:8]
    a = classified(report_id=f"a-{tag}", level=2, arrival_seq=1)
    b = classified(report_id=f"b-{tag}", level=2, arrival_seq=2)
    enqueue(conn, settings, a, b)
    assert len(queue.claim(conn, settings.topic_suffix, "ana", now=queue.now_utc(), limit=2)) == 2
    return a, b


def _reclassified(event: ReportClassified) -> ReportClassified:
    return classified(report_id=event.envelope.report_id, level=1, supersedes=event.envelope.event_id)


def _batch_against_an_analyst(
    conn: Any, settings: Settings, publisher: queue.Publisher, *, lock_first: bool
) -> tuple[tuple[ReportClassified, ReportClassified], list[queue.DecisionOutcome], list[dict[str, Any]]]:
    """The assess stage re-queues b, then a, in two runs of one batch (one transaction), while the
    analyst ana decides a and b: the analyst's statement starts between the two runs. ``lock_first``:
    the batch locks both rows before its first run, as the runner has it do (``lock_reports``)."""
    ns = settings.topic_suffix
    a, b = _two_claimed(conn, settings)
    analyst = _AnalystRun(
        settings,
        publisher,
        [request(r.envelope.report_id, "ana", Determination.POTENTIALLY_ILLEGAL) for r in (a, b)],
    )
    with connect(settings) as stage, connect(settings, autocommit=True) as watch:
        with capture_logs() as logs, stage.transaction():
            if lock_first:
                queue.lock_reports(stage, ns, [b.envelope.report_id, a.envelope.report_id])
            queue.enqueue_classified_many(stage, ns, [_reclassified(b)], queue.now_utc())
            analyst.start_and_wait_for_a_lock(watch)
            queue.enqueue_classified_many(stage, ns, [_reclassified(a)], queue.now_utc())
        outcomes = analyst.finish()
    return (a, b), outcomes, logs


def test_a_batch_locking_its_rows_first_never_deadlocks_with_an_analysts_run(
    conn: Any, settings: Settings, publisher: queue.Publisher
) -> None:
    """With the batch's rows locked first the analyst waits for the whole batch; run by run, the analyst
    would hold a and wait on b while the stage's second run waited on a."""
    _, outcomes, logs = _batch_against_an_analyst(conn, settings, publisher, lock_first=True)
    assert [type(o) for o in outcomes] == [ReportAssessed, ReportAssessed]
    assert [o.level for o in outcomes if isinstance(o, ReportAssessed)] == [1, 1], "decided on the new levels"
    assert not [e for e in logs if e["event"] == "decisions_retried"], "nobody had to be rolled back"


def test_an_analysts_run_rolled_back_as_a_deadlock_victim_is_tried_again(
    conn: Any, settings: Settings, publisher: queue.Publisher
) -> None:
    """Without the batch's lock first: PostgreSQL finds the cycle and rolls the analyst back (it waited
    first); the analyst's run is tried again after the stage commits, and succeeds."""
    (a, b), outcomes, logs = _batch_against_an_analyst(conn, settings, publisher, lock_first=False)
    assert [type(o) for o in outcomes] == [ReportAssessed, ReportAssessed]
    retried = [e for e in logs if e["event"] == "decisions_retried"]
    assert [e["error"] for e in retried] == ["DeadlockDetected"]
    produced = consume(settings, ASSESSED, count=2, timeout=20, settle=0.5).events
    assert sorted(e.envelope.report_id for e in produced) == sorted(r.envelope.report_id for r in (a, b))
