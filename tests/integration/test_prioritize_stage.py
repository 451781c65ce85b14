"""The prioritize stage on the real broker and database: lanes, re-prioritization, dead letters."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pipeline import events as ev
from pipeline import serde
from pipeline.db import connect
from pipeline.prioritize import stage
from pipeline.prioritize.logic import RAISED_BY
from pipeline.settings import Settings
from pipeline.topics import PRIORITIZED, RECEIVED, dead_letter
from tests.integration.harness import StageThread, consume, produce, produce_raw
from tests.unit.test_prioritize_rules import body, received

NOW = datetime.now(UTC).replace(microsecond=0)
CSAM = {"reporter_category": ev.Category.CSAM}


def _topics(make_topics: Callable[..., list[str]]) -> None:
    make_topics(RECEIVED, *PRIORITIZED, dead_letter("prioritize"))


def test_reports_go_to_the_lane_of_their_level(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Each received report lands on its level's lane with its reasons; a rejected one produces nothing."""
    _topics(make_topics)
    victim = received(body(victim=ev.Victim(name="A"), received_at=NOW))
    luring = received(
        body(reporter_category=ev.Category.LURING, facts=ev.Facts(ongoing=True), received_at=NOW)
    )
    csam = received(body(**CSAM, received_at=NOW))
    info = received(body(reporter_category=ev.Category.ONLINE_HARMS, received_at=NOW))
    rejected = ev.ReportRejected(
        envelope=dataclasses.replace(
            victim.envelope, event_id=str(uuid.uuid4()), event_type="ReportRejected"
        ),
        submission_id="s",
        reason_code="invalid_field",
        message="bad",
    )
    produce(settings, RECEIVED, [rejected, victim, luring, csam, info])
    with StageThread(stage.spec(settings), settings):
        got = consume(settings, PRIORITIZED, count=4, timeout=60, settle=1.0)
    by_report = {m.key().decode(): (m.topic(), serde.decode(m.value())) for m in got.messages}
    assert len(got.messages) == 4
    expected = {victim: 1, luring: 2, csam: 3, info: 4}
    for r, level in expected.items():
        topic, event = by_report[r.envelope.report_id]
        assert topic == PRIORITIZED[level - 1].name + settings.topic_suffix
        assert isinstance(event, ev.ReportPrioritized)
        assert event.level == level
        assert event.reasons
        assert event.envelope.causation_id == r.envelope.event_id


def test_linked_report_raises_the_earlier_one(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A linked duplicate naming a victim emits a level-1 event for the earlier report; the old one stays."""
    _topics(make_topics)
    early = received(body(**CSAM, received_at=NOW))
    produce(settings, RECEIVED, [early])
    with StageThread(stage.spec(settings), settings):
        [first] = consume(settings, PRIORITIZED[2], count=1, timeout=60).events
        late = received(
            body(
                **CSAM,
                victim=ev.Victim(age=12),
                linked_to=early.envelope.report_id,
                received_at=NOW + timedelta(1),
            )
        )
        produce(settings, RECEIVED, [late])
        got = consume(settings, PRIORITIZED[0], count=2, timeout=60, settle=1.0).events
    assert len(got) == 2
    raised = next(e for e in got if e.envelope.report_id == early.envelope.report_id)
    own = next(e for e in got if e.envelope.report_id == late.envelope.report_id)
    assert own.level == 1
    assert raised.level == 1
    assert raised.supersedes == first.envelope.event_id
    assert raised.reasons == (f"{RAISED_BY}{late.envelope.report_id}", "victim_age")
    assert raised.body == first.body
    # The old prioritization is still in the log.
    lane3 = consume(settings, PRIORITIZED[2], count=1, timeout=30, settle=0.5).events
    assert [e.envelope.event_id for e in lane3] == [first.envelope.event_id]
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT level, supersedes FROM prioritize_emitted WHERE report_id = %s ORDER BY seq",
            (early.envelope.report_id,),
        ).fetchall()
    assert rows == [(3, None), (1, first.envelope.event_id)]


def test_replay_after_a_lost_kafka_commit_emits_the_same_events(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """When the database committed but Kafka did not, handling the batch again yields identical events."""
    _topics(make_topics)
    early = received(body(**CSAM, received_at=NOW))
    late = received(
        body(suspect=ev.Suspect(emails=("s@x.ca",)), linked_to=early.envelope.report_id, received_at=NOW)
    )
    spec = stage.spec(settings)
    with connect(settings) as conn:
        with conn.transaction():
            first = [o.event for r in (early, late) for o in spec.handle(r, _ctx(settings, conn))]
        with conn.transaction():
            again = [o.event for r in (early, late) for o in spec.handle(r, _ctx(settings, conn))]
    assert [serde.encode(e) for e in again] == [serde.encode(e) for e in first]
    assert [(e.envelope.report_id, e.level) for e in first] == [
        (early.envelope.report_id, 3),
        (late.envelope.report_id, 1),
        (early.envelope.report_id, 1),
    ]


def test_bad_input_is_dead_lettered_with_the_reason(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """An impossible age and bytes that are no event go to the dead-letter topic; good reports still pass."""
    _topics(make_topics)
    bad = received(body(victim=ev.Victim(age=-3), received_at=NOW))
    good = received(body(**CSAM, received_at=NOW))
    produce(settings, RECEIVED, [bad])
    produce_raw(settings, RECEIVED, b"not an event")
    produce(settings, RECEIVED, [good])
    with StageThread(stage.spec(settings), settings):
        dlq = consume(settings, dead_letter("prioritize"), count=2, timeout=60, settle=0.5).messages
        out = consume(settings, PRIORITIZED, count=1, timeout=60, settle=0.5).events
    assert [e.envelope.report_id for e in out] == [good.envelope.report_id]
    assert len(dlq) == 2
    headers = [dict(m.headers() or []) for m in dlq]
    fields = {h.get("dlq.field", b"").decode() for h in headers}
    assert "body.victim.age" in fields
    assert all(h["dlq.stage"] == b"prioritize" and h["dlq.reason"] for h in headers)


def _ctx(settings: Settings, conn: object) -> stage.Context:
    return stage.Context(settings, conn)
