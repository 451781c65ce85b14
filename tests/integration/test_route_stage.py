"""The route stage against the real broker and PostgreSQL: referrals, follow-ups, closes, redelivery."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import structlog
import structlog.testing

from pipeline import db, serde
from pipeline import events as ev
from pipeline.route import stage as route_stage
from pipeline.route.resolve import demo_resolver
from pipeline.runtime import Context, StageSpec
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLOSED, FOLLOWUP, REFERRED, dead_letter
from tests.integration.harness import StageThread, consume, produce, produce_raw, wait_for
from tests.unit.route_builders import CONTACT, assessed

CA = "https://cdn1.ca-host.example/p/1"
NL = "https://cdn1.nl-host.example/a"
RU = "http://cdn1.ru-host.example/d"
DLQ = dead_letter("route")


def _topics(make_topics: Callable[..., list[str]]) -> None:
    make_topics(ASSESSED, REFERRED, FOLLOWUP, CLOSED, DLQ)


def _spec(settings: Settings) -> StageSpec:
    return route_stage.spec(settings, resolver=demo_resolver())


def test_referrals_and_close_reach_their_topics(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A potentially illegal report is referred once per recipient and closed once, keyed by its report id."""
    _topics(make_topics)
    event = assessed(urls=(CA, NL, RU), suspect=ev.Location(province="ON"))
    with StageThread(_spec(settings), settings):
        produce(settings, ASSESSED, [event])
        referred = consume(settings, REFERRED, count=3, timeout=60)
        closed = consume(settings, CLOSED, count=1, timeout=60)
    keys = {f"{e.recipient.kind}:{e.recipient.jurisdiction}" for e in referred.events}
    assert keys == {"police:ON", "inhope_hotline:NL", "interpol:RU"}
    assert {m.key() for m in referred.messages + closed.messages} == {event.envelope.report_id.encode()}
    (close,) = closed.events
    assert (close.outcome, close.referrals, close.domestic_police, close.foreign_police) == (
        ev.Outcome.REFERRED,
        3,
        1,
        2,
    )
    assert close.hosting_countries == ("CA", "NL", "RU")


def test_redelivered_and_superseding_assessments_refer_each_recipient_once(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """The same assessment twice and a superseding one yield one referral record per recipient and one
    close; the second copy emits nothing, the superseding one only the recipient it adds."""
    _topics(make_topics)
    first = assessed(urls=(CA, NL, RU), suspect=ev.Location(province="ON"), victim=ev.Location(province="QC"))
    superseding = dataclasses.replace(
        first,
        envelope=dataclasses.replace(first.envelope, event_id=str(uuid.uuid4())),
        supersedes=first.envelope.event_id,
        child_may_need_protection=True,  # adds the child-protection authority of Quebec
    )
    with StageThread(_spec(settings), settings) as running:
        produce(settings, ASSESSED, [first, first, superseding])
        wait_for(lambda: running.runner.processed >= 3, timeout=60, what="three assessments routed")
        referred = consume(settings, REFERRED, count=4, timeout=30, settle=2.0)
        closed = consume(settings, CLOSED, count=1, timeout=30, settle=1.0)

    by_recipient: dict[str, set[str]] = {}
    for e in referred.events:
        by_recipient.setdefault(f"{e.recipient.kind}:{e.recipient.jurisdiction}", set()).add(
            e.envelope.event_id
        )
    assert set(by_recipient) == {
        "police:ON",
        "police:QC",
        "inhope_hotline:NL",
        "interpol:RU",
        "child_protection:QC",
    }
    assert all(len(ids) == 1 for ids in by_recipient.values()), by_recipient
    assert len({e.envelope.event_id for e in closed.events}) == 1
    # The second copy of the same assessment (another offset) emits nothing at all: no record twice.
    assert len(referred.messages) == 5
    assert len(closed.messages) == 1
    causes = Counter(e.envelope.causation_id for e in referred.events)
    assert causes[superseding.envelope.event_id] == 1  # only the child-protection referral it added
    (cp,) = [e for e in referred.events if e.recipient.kind is ev.RecipientKind.CHILD_PROTECTION]
    assert cp.envelope.causation_id == superseding.envelope.event_id
    assert all(e.envelope.causation_id == first.envelope.event_id for e in closed.events)


def test_replay_of_a_batch_re_emits_the_same_events(settings: Settings) -> None:
    """When the database kept an assessment's rows but its Kafka transaction was lost, handling it again
    returns exactly the same events; a different assessment of the report returns none of them."""
    handle = _spec(settings).handle
    event = assessed(urls=(NL, RU), victim=ev.Location(province="AB"), child=True)
    with db.connect(settings) as conn:
        with conn.transaction():
            first = [o.event for o in handle(event, Context(settings, conn))]
        with conn.transaction():
            again = [o.event for o in handle(event, Context(settings, conn))]
        later = dataclasses.replace(
            event, envelope=dataclasses.replace(event.envelope, event_id=str(uuid.uuid4()))
        )
        with conn.transaction():
            superseded = list(handle(later, Context(settings, conn)))
    assert [type(e).__name__ for e in first] == ["ReportReferred"] * 4 + ["ReportClosed"]
    assert [serde.encode(e) for e in again] == [serde.encode(e) for e in first]
    assert superseded == []


def test_unreferred_report_with_contact_gets_follow_up(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A not-illegal report whose reporter left contact details yields a French follow-up and a close."""
    _topics(make_topics)
    event = assessed(
        urls=(NL,),
        determination=ev.Determination.NOT_ILLEGAL,
        contact=CONTACT,
        anonymous=False,
        language=ev.Language.FR,
    )
    with StageThread(_spec(settings), settings):
        produce(settings, ASSESSED, [event])
        follow = consume(settings, FOLLOWUP, count=1, timeout=60)
        closed = consume(settings, CLOSED, count=1, timeout=60)
    (request,) = follow.events
    assert (request.kind, request.language, request.message_template) == (
        ev.FollowUpKind.EDUCATIONAL,
        ev.Language.FR,
        "not_illegal.fr",
    )
    assert request.contact == CONTACT
    assert closed.events[0].outcome is ev.Outcome.NOT_ILLEGAL


def test_a_record_that_is_not_an_assessment_is_dead_lettered(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A ReportReceived on the assessed topic, and bytes that are no event, go to the dead-letter topic."""
    _topics(make_topics)
    event = assessed()
    received = ev.ReportReceived(
        envelope=dataclasses.replace(event.envelope, event_type="ReportReceived"),
        body=event.body,
        submission_id="s",
    )
    with StageThread(_spec(settings), settings):
        produce(settings, ASSESSED, [received])
        produce_raw(settings, ASSESSED, b"not an event")
        dead = consume(settings, DLQ, count=2, timeout=60)
    reasons = sorted(dict(m.headers())["dlq.reason"].decode() for m in dead.messages)
    assert "unexpected_event_type" in reasons
    assert len(reasons) == 2


@pytest.mark.usefixtures("debug_logging")
def test_the_stage_logs_no_url_host_or_contact(settings: Settings) -> None:
    """The stage logs recipients and counts, never a URL, a host name or the encrypted contact."""
    handle = _spec(settings).handle
    referred = assessed(urls=(CA, NL, RU), suspect=ev.Location(province="ON"))
    followed = assessed(determination=ev.Determination.INFORMATIONAL, contact=CONTACT, anonymous=False)
    with structlog.testing.capture_logs() as logs, db.connect(settings) as conn:
        for event in (referred, followed):
            with conn.transaction():
                handle(event, Context(settings, conn))
    assert {entry["event"] for entry in logs} >= {"report_referred", "report_closed", "follow_up_requested"}
    text = repr(logs)
    for secret in ("ca-host", "nl-host", "ru-host", "https://", "http://", "ciphertext"):
        assert secret not in text


def test_a_fenced_predecessor_committing_first_leaves_the_successor_the_same_events(
    settings: Settings,
) -> None:
    """Two instances handling one assessment at once (a zombie and its successor) emit the same records."""
    handle = _spec(settings).handle
    event = assessed(urls=(CA, NL), suspect=ev.Location(province="BC"))
    result: dict[str, list[bytes]] = {}
    with db.connect(settings) as zombie, db.connect(settings) as successor:
        zombie_tx = zombie.transaction()
        zombie_tx.__enter__()
        result["zombie"] = [serde.encode(o.event) for o in handle(event, Context(settings, zombie))]

        def run_successor() -> None:
            with successor.transaction():
                result["successor"] = [
                    serde.encode(o.event) for o in handle(event, Context(settings, successor))
                ]

        thread = threading.Thread(target=run_successor)
        thread.start()
        wait_for(
            lambda: _waiting_on_lock(settings), timeout=30, what="the successor waiting on the zombie's rows"
        )
        zombie_tx.__exit__(None, None, None)
        thread.join(30)
    assert result["successor"] == result["zombie"]
    assert len(result["zombie"]) == 3  # two referrals and the close


def _waiting_on_lock(settings: Settings) -> bool:
    with db.connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            ('INSERT INTO "route_emitted"%',),
        ).fetchone()
    return bool(row and row[0])
