"""The classify stage on the real broker: each report lands, classified, on the lane of its own level."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pipeline.classify.samples import prioritized
from pipeline.classify.stage import spec
from pipeline.events import (
    Category,
    ContentKind,
    MaterialAction,
    ReportClassified,
    ReportReceived,
    Role,
    Technology,
    Verdict,
)
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, PRIORITIZED, dead_letter, lane_of
from tests.integration.harness import StageThread, consume, produce, produce_raw

TOPICS = (*PRIORITIZED, *CLASSIFIED, dead_letter("classify"))


def test_stage_classifies_into_the_lane_of_the_same_level(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Reports of levels 1-4 come out classified on classified.p1-p4, once each, with the right sections."""
    make_topics(*TOPICS)
    reports = [
        prioritized(
            level=1,
            reporter=Category.CSAM,
            content=(ContentKind.SEXUAL_CONVERSATION, ContentKind.INTIMATE_IMAGE),
            actions=(MaterialAction.MADE,),
            threats=True,
            sender=Role.ADULT,
            recipient=Role.MINOR,
            age=15,
            technologies=(Technology.CHAT_IM,),
        ),
        prioritized(level=2, reporter=Category.ONLINE_HARMS, content=(ContentKind.SEXUAL_IMAGE_OR_VIDEO,)),
        prioritized(level=3, reporter=Category.LURING, content=(ContentKind.OTHER,)),
        prioritized(level=4, content=(ContentKind.OFFER_OF_SEXUAL_SERVICES,), money=True, sender=Role.ADULT),
    ]
    for event in reports:
        produce(settings, PRIORITIZED[event.level - 1], [event])
    with StageThread(spec(settings), settings):
        got = consume(settings, CLASSIFIED, count=4, timeout=60, settle=1.5)
    assert len(got.messages) == 4
    by_report: dict[str, tuple[int | None, ReportClassified]] = {}
    for msg, event in zip(got.messages, got.events, strict=True):
        assert isinstance(event, ReportClassified)
        assert msg.key() == event.envelope.report_id.encode()
        by_report[event.envelope.report_id] = (lane_of(msg.topic() or ""), event)
    expected = {
        1: (Category.CSAM, Verdict.CONFIRMED, ("163.1(2)", "172.1", "346"), False),
        2: (Category.CSAM, Verdict.CORRECTED, ("163.1(3)",), False),
        3: (None, Verdict.UNCLASSIFIABLE, (), True),
        4: (Category.COMMERCIAL_EXPLOITATION, Verdict.NOT_STATED, ("286.2(2)", "286.3(2)"), False),
    }
    for source in reports:
        lane, out = by_report[source.envelope.report_id]
        assert lane == source.level == out.level
        assert out.envelope.causation_id == source.envelope.event_id
        (inc,) = out.incidents
        assert (inc.assigned_category, inc.verdict, inc.sections, out.needs_analyst_review) == expected[lane]
        assert out.body == source.body


def test_bad_input_goes_to_the_dead_letter_topic_with_its_reason(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Undecodable bytes, a wrong event type and incomplete facts are dead-lettered; good input flows on."""
    make_topics(*TOPICS)
    good = prioritized(
        level=2, content=(ContentKind.SEXUAL_IMAGE_OR_VIDEO,), actions=(MaterialAction.POSSESSED,)
    )
    incomplete = prioritized(level=2, actions=(MaterialAction.SHARED,))
    no_incidents = replace(
        good,
        envelope=replace(good.envelope, report_id="R-empty", event_id="e-empty"),
        body=replace(good.body, incidents=()),
    )
    wrong_type = ReportReceived(
        envelope=replace(good.envelope, event_type="ReportReceived"), body=good.body, submission_id="s-1"
    )
    produce_raw(settings, PRIORITIZED[1], b"not an event", key=b"R-garbage")
    produce(settings, PRIORITIZED[1], [incomplete, no_incidents, wrong_type, good])
    with StageThread(spec(settings), settings):
        dead = consume(settings, dead_letter("classify"), count=4, timeout=60)
        out = consume(settings, CLASSIFIED, count=1, timeout=60, settle=1.0)
    reasons = {dict(m.headers() or [])["dlq.reason"] for m in dead.messages}
    assert reasons == {b"bad_marker", b"incomplete_facts", b"no_incidents", b"unexpected_event"}
    fields = {dict(m.headers() or []).get("dlq.field") for m in dead.messages}
    assert {b"body.facts.content", b"body.incidents"} <= fields
    assert [e.envelope.report_id for e in out.events] == [good.envelope.report_id]
    assert out.events[0].incidents[0].sections == ("163.1(4)",)


def test_a_record_too_large_to_copy_whole_is_dead_lettered_cut_and_the_stage_goes_on(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A record over our producers' 1,000,000-byte limit (the broker takes up to about 1 MiB): its
    dead-letter copy is cut to DLQ_VALUE_MAX and says from what size; before, the stage's transaction
    failed on that produce and the stage retried the record forever."""
    from pipeline import kafka
    from pipeline.runtime import DLQ_KEY_MAX, DLQ_VALUE_MAX
    from pipeline.topics import name

    make_topics(*TOPICS)
    big = kafka.producer(settings, **{"message.max.bytes": 2_000_000, "compression.type": "none"})
    value, key = b"\xc3\x01" + bytes(1_000_090), b"k" * 3000
    big.produce(name(PRIORITIZED[1], settings.topic_suffix), key=key, value=value)
    assert big.flush(30) == 0
    good = prioritized(
        level=2, content=(ContentKind.SEXUAL_IMAGE_OR_VIDEO,), actions=(MaterialAction.POSSESSED,)
    )
    produce(settings, PRIORITIZED[1], [good])
    with StageThread(spec(settings), settings):
        (dead,) = consume(settings, dead_letter("classify"), count=1, timeout=60).messages
        out = consume(settings, CLASSIFIED, count=1, timeout=60, settle=1.0)
    headers = dict(dead.headers() or [])
    assert headers["dlq.reason"] == b"unknown_fingerprint"
    assert headers["dlq.value.truncated_from"] == str(len(value)).encode()
    assert headers["dlq.key.truncated_from"] == b"3000"
    assert dead.value() == value[:DLQ_VALUE_MAX]
    assert dead.key() == key[:DLQ_KEY_MAX]
    assert [e.envelope.report_id for e in out.events] == [good.envelope.report_id]
