"""The assess stage's runs (``handle_batch`` / ``enqueue_classified_many``) against its reference, record by
record (``handle`` / ``enqueue_classified``), on the real PostgreSQL and broker: same outputs, same rows."""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import kafka
from pipeline.assess import logic, queue, stage
from pipeline.db import connect
from pipeline.events import Category, Determination, HashType, ReportAssessed, ReportClassified
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLASSIFIED, dead_letter
from tests.integration.harness import StageThread, consume, produce, wait_for
from tests.unit.test_assess_support import classified

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

Run = list[ReportClassified]


def _rows(conn: Any, namespace: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the assess step keeps for ``namespace``, without the namespace (it differs by side)."""
    return {
        "queue": conn.execute(
            "SELECT report_id, report_number, classification_event_id, level, arrival_seq, payload, "
            "contact_key_id, contact_nonce, contact_ciphertext, contact_algorithm, status, claimed_by, "
            "claim_expires_at, decided_by, decided_at, determination, assessment_event_id, enqueued_at, "
            "updated_at FROM assess_queue WHERE namespace = %s ORDER BY report_id",
            (namespace,),
        ).fetchall(),
        "seen": conn.execute(
            "SELECT report_id, classification_event_id, supersedes, outcome, output FROM assess_queue_seen "
            "WHERE namespace = %s ORDER BY report_id, classification_event_id",
            (namespace,),
        ).fetchall(),
        "decisions": conn.execute(
            "SELECT assessment_event_id, report_id, actor_kind, actor_id, determination, "
            "child_may_need_protection, supersedes, decided_at FROM assess_decision WHERE namespace = %s "
            "ORDER BY assessment_event_id",
            (namespace,),
        ).fetchall(),
    }


class Sides:
    """The same runs applied record by record in one namespace and as runs in another."""

    def __init__(self, one: Settings, many: Settings, known: list[str]) -> None:
        self.one = connect(one)
        self.many = connect(many)
        self.ns_one, self.ns_many = one.topic_suffix, many.topic_suffix
        for conn in (self.one, self.many):
            queue.load_known_hashes(conn, known, source="test")

    def close(self) -> None:
        self.one.close()
        self.many.close()

    def apply(self, run: Run) -> list[list[ReportAssessed]]:
        with self.one.transaction():
            expected = [queue.enqueue_classified(self.one, self.ns_one, e, NOW) for e in run]
        with self.many.transaction():
            got = queue.enqueue_classified_many(self.many, self.ns_many, run, NOW)
        assert got == expected
        return got

    def analyst(self, owner: str, determination: Determination, *, at: datetime) -> None:
        """An analyst claims the next report on both sides and decides it (nothing goes to Kafka)."""
        for conn, ns in ((self.one, self.ns_one), (self.many, self.ns_many)):
            item = queue.claim_next(conn, ns, owner, now=at)
            if item is not None:
                queue.record_decision(
                    conn,
                    lambda _e: None,
                    ns,
                    queue.DecisionRequest(
                        report=item.report_id,
                        actor=logic.analyst_actor(owner),
                        claim_owner=owner,
                        determination=determination,
                    ),
                    now=at,
                )

    def claim(self, owner: str, *, at: datetime) -> None:
        for conn, ns in ((self.one, self.ns_one), (self.many, self.ns_many)):
            queue.claim_next(conn, ns, owner, now=at)

    def assert_same_rows(self) -> None:
        assert _rows(self.many, self.ns_many) == _rows(self.one, self.ns_one)


@pytest.fixture
def sides(settings: Settings) -> Iterator[tuple[Sides, str]]:
    digest = uuid.uuid4().hex
    key = logic.hash_key(HashType.MD5, digest)
    s = Sides(settings, settings.with_suffix(settings.topic_suffix + "m"), [key])
    try:
        yield s, digest
    finally:
        s.close()


def test_a_run_mixing_every_case_matches_record_by_record(sides: tuple[Sides, str]) -> None:
    """New, known-hash, empty, overrides both ways round, second copies, claimed and decided reports, a replay."""
    s, digest = sides
    claimed, decided = classified(level=3, arrival_seq=1), classified(level=1, arrival_seq=0)
    s.apply([decided, claimed])
    s.analyst("ana", Determination.NOT_ILLEGAL, at=NOW)  # decides the level-1 report
    s.claim("bob", at=NOW)  # holds the level-3 one
    known = classified(hashes=((HashType.MD5, digest),), with_contact=True)
    empty = classified(category=None, urls=())
    plain = classified(level=4, arrival_seq=7)
    late = classified(level=4, arrival_seq=8)
    overtaking = classified(
        report_id=late.envelope.report_id, level=1, arrival_seq=8, supersedes=late.envelope.event_id
    )
    raised = classified(
        report_id=plain.envelope.report_id, level=2, arrival_seq=7, supersedes=plain.envelope.event_id
    )
    raised_known = classified(
        report_id=plain.envelope.report_id,
        level=1,
        arrival_seq=7,
        supersedes=raised.envelope.event_id,
        hashes=((HashType.MD5, digest.upper()),),
    )
    on_claimed = classified(
        report_id=claimed.envelope.report_id, level=1, supersedes=claimed.envelope.event_id, urls=()
    )
    on_decided = classified(
        report_id=decided.envelope.report_id,
        level=1,
        supersedes=decided.envelope.event_id,
        hashes=((HashType.MD5, digest),),
    )
    run = [
        known,
        empty,
        plain,
        overtaking,
        late,
        raised,
        known,
        raised_known,
        on_claimed,
        on_decided,
        empty,
        late,
        plain,
    ]
    outputs = s.apply(run)
    assert [len(o) for o in outputs] == [1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0]
    assert outputs[0] == outputs[6]
    assert outputs[1] == outputs[10]
    assert outputs[7][0].envelope.report_id == plain.envelope.report_id
    s.assert_same_rows()
    assert s.apply(run) == outputs  # a replay of the committed run re-emits the same events
    assert s.apply(run[6:9]) == outputs[6:9]
    s.assert_same_rows()
    seen = dict(
        s.many.execute(
            "SELECT classification_event_id, outcome FROM assess_queue_seen WHERE namespace = %s",
            (s.ns_many,),
        ).fetchall()
    )
    assert seen[late.envelope.event_id] == "stale"
    assert seen[plain.envelope.event_id] == "queued"
    assert seen[raised_known.envelope.event_id] == "automated"
    assert seen[on_claimed.envelope.event_id] == "updated"
    assert seen[on_decided.envelope.event_id] == "updated"


def _random_stream(rng: random.Random, digest: str, n: int) -> Iterator[ReportClassified]:
    """Classifications as lanes may deliver them: new reports, re-classifications (sometimes before the
    one they supersede), second copies of an event; some known-hash or empty ones the rules decide."""
    latest: dict[str, ReportClassified] = {}
    emitted: list[ReportClassified] = []
    held: list[ReportClassified] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.12 and emitted:
            event = rng.choice(emitted)  # a second copy of an event
        elif roll < 0.35 and latest:
            before = latest[rng.choice(sorted(latest))]
            event = classified(
                report_id=before.envelope.report_id,
                level=rng.randint(1, before.level),
                arrival_seq=before.arrival_seq,
                supersedes=before.envelope.event_id,
                hashes=((HashType.MD5, digest),) if rng.random() < 0.2 else (),
                category=None if rng.random() < 0.1 else Category.CSAM,
                urls=() if rng.random() < 0.2 else ("https://example.test/a",),
                event_id=f"00000000-0000-4000-8000-{rng.getrandbits(40):012x}",
            )
            latest[event.envelope.report_id] = event
        else:
            kind = rng.random()
            event = classified(
                report_id=f"p-{i}-{rng.getrandbits(24):06x}",
                level=rng.randint(1, 4),
                arrival_seq=i,
                hashes=((HashType.MD5, digest),) if kind < 0.15 else (),
                category=None if 0.15 <= kind < 0.3 else Category.CSAM,
                urls=() if 0.15 <= kind < 0.3 else ("https://example.test/a",),
                with_contact=rng.random() < 0.3,
                event_id=f"00000000-0000-4000-8000-{rng.getrandbits(40):012x}",
            )
            latest[event.envelope.report_id] = event
        if event.supersedes is not None and rng.random() < 0.3:
            held.append(event)  # overtaken: arrives after the next event
            continue
        emitted.append(event)
        yield event
        while held:
            late = held.pop()
            emitted.append(late)
            yield late


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_runs_match_record_by_record(sides: tuple[Sides, str], seed: int) -> None:
    """A random stream cut into random runs, with analysts working and runs replayed: the same everywhere."""
    s, digest = sides
    rng = random.Random(seed)
    stream = list(_random_stream(rng, digest, 160))
    runs: list[Run] = []
    at = NOW
    while stream:
        size = rng.randint(1, 25)
        run, stream = stream[:size], stream[size:]
        runs.append(run)
        s.apply(run)
        if rng.random() < 0.3:
            s.apply(rng.choice(runs))  # a replay of a run already committed
        at += timedelta(minutes=1)
        if rng.random() < 0.5:
            s.analyst(rng.choice(["ana", "bob"]), rng.choice(list(Determination)), at=at)
        if rng.random() < 0.3:
            s.claim(rng.choice(["cyd", "dee"]), at=at)
    s.assert_same_rows()


def test_a_report_queued_meanwhile_by_another_instance_aborts_the_run(settings: Settings) -> None:
    """A row inserted by another transaction after the run read refuses the run; record by record it is updated."""
    ns = settings.topic_suffix
    first = classified(level=3)
    override = classified(report_id=first.envelope.report_id, level=1, supersedes=first.envelope.event_id)
    with connect(settings) as other, connect(settings) as conn:
        pid = conn.info.backend_pid
        other_tx = other.transaction()
        other_tx.__enter__()
        queue.enqueue_classified(other, ns, first, NOW)  # uncommitted: invisible to the run's read

        def commit_once_the_run_waits() -> None:
            with connect(settings) as watcher:
                wait_for(
                    lambda: (
                        watcher.execute(
                            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
                        ).fetchone()
                        == (True,)
                    ),
                    what="the run waiting on the other instance's row",
                )
            other_tx.__exit__(None, None, None)

        committer = threading.Thread(target=commit_once_the_run_waits)
        committer.start()
        with pytest.raises(queue.ConcurrentEnqueue), conn.transaction():
            queue.enqueue_classified_many(conn, ns, [override], NOW)
        committer.join(30)
        assert _rows(conn, ns)["seen"] == [
            (first.envelope.report_id, first.envelope.event_id, None, "queued", None)
        ]
        with conn.transaction():
            assert queue.enqueue_classified(conn, ns, override, NOW) == []
        item = queue.find(conn, ns, first.envelope.report_id)
        assert item is not None
        assert item.level == 1


def _timeless(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows without what each run's own clock sets (claim, decision and enqueue times, stored events)."""
    return {
        "queue": [r[:12] + r[13:14] + r[15:17] for r in rows["queue"]],
        "seen": [r[:4] for r in rows["seen"]],
        "decisions": [r[:7] for r in rows["decisions"]],
    }


def test_the_stage_with_runs_gives_what_it_gives_record_by_record(settings: Settings) -> None:
    """The same lanes through the runner with and without handle_batch: same events, dead letters and rows."""
    digest = uuid.uuid4().hex
    key = logic.hash_key(HashType.MD5, digest)
    stream = list(_random_stream(random.Random(11), digest, 120))
    assert any(logic.preassess(e, {key}) is not None for e in stream)  # the rules decide some
    wrong = logic.assessment(
        stream[0],
        actor=logic.AUTOMATED_ACTOR,
        determination=Determination.NOT_ILLEGAL,
        child_may_need_protection=False,
        note=None,
        supersedes=None,
        occurred_at=NOW,
    )
    full = stage.spec(settings)
    assert full.handle_batch is not None
    modes = {
        "one": (
            settings.with_suffix(settings.topic_suffix + "o"),
            dataclasses.replace(full, handle_batch=None),
        ),
        "many": (settings.with_suffix(settings.topic_suffix + "m"), full),
    }
    results: dict[str, Any] = {}
    for label, (side, spec) in modes.items():
        ns = side.topic_suffix
        kafka.ensure_topics(side, (*CLASSIFIED, ASSESSED, dead_letter("assess")))
        with connect(side) as c:
            queue.load_known_hashes(c, [key], source="test")
        for level, lane in enumerate(CLASSIFIED, start=1):
            produce(side, lane, [e for e in stream if e.level == level] + ([wrong] if level == 3 else []))
        with StageThread(spec, side), connect(side) as c:
            distinct = len({e.envelope.event_id for e in stream})

            def handled_all(c: Any = c, ns: str = ns, distinct: int = distinct) -> bool:
                row = c.execute(
                    "SELECT count(*) FROM assess_queue_seen WHERE namespace = %s", (ns,)
                ).fetchone()
                return bool(row == (distinct,))

            wait_for(handled_all, timeout=90, what="every classification handled")
            rows = _rows(c, ns)
            automated = {r[1] for r in rows["seen"] if r[3] == "automated"}
            # Every copy of an automatically decided classification re-emits its assessment.
            expected = sum(1 for e in stream if e.envelope.event_id in automated)
            got = consume(side, ASSESSED, count=expected, timeout=60, settle=1.0).events
            dlq = consume(side, dead_letter("assess"), count=1, timeout=60, settle=0.5).messages
        assert len(got) == expected
        results[label] = (
            sorted((e.envelope.report_id, e.envelope.event_id, e.determination.value) for e in got),
            [dict(m.headers() or [])["dlq.reason"] for m in dlq],
            _timeless(rows),
        )
        assert results[label][1] == [b"unexpected_event"]
    assert results["many"] == results["one"]
