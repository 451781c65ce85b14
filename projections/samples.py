"""Valid event streams of whole reports, for the projections' tests and the rebuild benchmark.

``lifecycle(n, rng)`` returns every event one report produces on its way through the pipeline
(received, prioritized, classified, assessed, then referrals, a follow-up and the closing), with
``occurred_at`` increasing step by step; ``topic_for(event)`` names the topic each one travels on.
The mix of outcomes roughly follows the published figures (about 45% referred). Deterministic for a
given ``random.Random``. These are generated events for tests and benchmarks, never presented as data.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from pipeline import events as ev
from pipeline.topics import (
    ASSESSED,
    CLASSIFIED,
    CLOSED,
    FOLLOWUP,
    PRIORITIZED,
    RECEIVED,
    REFERRED,
    SUBMITTED,
    TopicSpec,
)

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PROVINCES = ("ON", "BC", "AB", "NS", "QC", "MB", "SK", "NB", "NL", "PE", None)
REPORTER_PROVINCES = ("ON", "BC", "AB", "QC", "NS", "NU", "MB")
HOSTS = ("GB", "NL", "DE", "US", "CA", "RU", "FR")
CATEGORIES = tuple(ev.Category)
SECTIONS = {ev.Category.CSAM: ("163.1(3)", "163.1(4)"), ev.Category.LURING: ("172.1",)}
SYSTEM = ev.Actor(kind=ev.ActorKind.SYSTEM, id="system")
ANALYST = ev.Actor(kind=ev.ActorKind.SIMULATED, id="simulated:seed")


def topic_for(event: ev.Event) -> TopicSpec:  # noqa: PLR0911 - one return per event type
    """The topic an event is produced on (lanes by priority level)."""
    match event:
        case ev.ReportSubmitted():
            return SUBMITTED
        case ev.ReportReceived() | ev.ReportRejected():
            return RECEIVED
        case ev.ReportPrioritized():
            return PRIORITIZED[event.level - 1]
        case ev.ReportClassified():
            return CLASSIFIED[event.level - 1]
        case ev.ReportAssessed():
            return ASSESSED
        case ev.ReportReferred():
            return REFERRED
        case ev.FollowUpRequested():
            return FOLLOWUP
        case ev.ReportClosed():
            return CLOSED
        case _:
            raise TypeError(f"no topic for {type(event).__name__}")


def lifecycle(  # noqa: PLR0915 - one report's whole story, step by step, reads best in one place
    n: int, rng: random.Random, *, start: datetime = START, steps: int = 7
) -> list[ev.Event]:
    """The events of report number ``n``, cut after ``steps`` steps (7: the whole way to closed)."""
    report_id = f"CT-2026-{n:06d}"
    t = start + timedelta(seconds=n * 7 + rng.randint(0, 5))
    category = rng.choice(CATEGORIES)
    level = rng.randint(1, 4)
    province = rng.choice(PROVINCES)
    hosts = tuple(sorted(set(rng.sample(HOSTS, rng.randint(0, 2)))))
    anonymous = rng.random() < 0.6
    contact = (
        None
        if anonymous
        else ev.EncryptedContact(key_id="k1", nonce=rng.randbytes(12), ciphertext=rng.randbytes(40))
    )
    received_env = ev.Envelope.first(
        submission_id=f"sub-{n}",
        event_type="ReportReceived",
        report_id=report_id,
        producer="ingest/0.1.0",
        actor=SYSTEM,
        occurred_at=t,
    )
    urls = tuple(
        ev.UrlRef(
            original=f"https://{h.lower()}.example/{n}/{i}",
            normalized=f"https://{h.lower()}.example/{n}/{i}",
            host=f"{h.lower()}.example",
        )
        for i, h in enumerate(hosts or ("CA",))
    )
    # The reporter's own location, from n (not the rng, so every other draw stays as it was): a province
    # (not always the victim's), a country abroad, Canada alone (no province), or nothing said.
    reporter_location = (
        ev.Location(province=REPORTER_PROVINCES[n % len(REPORTER_PROVINCES)]),
        ev.Location(country="US"),
        ev.Location(country="CA"),
        None,
        None,
    )[n % 5]
    body = ev.ReportBody(
        report_number=report_id,
        channel=rng.choice(tuple(ev.Channel)),
        language=rng.choice(tuple(ev.Language)),
        received_at=t,
        reporter_category=category if rng.random() < 0.8 else None,
        description=f"Generated report {n}: a page that seemed to show a child.",
        incidents=(ev.Incident(incident_id=f"{report_id}/1", technology=ev.Technology.WEB_PAGE, urls=urls),),
        victim=ev.Victim(age=rng.randint(5, 17), location=ev.Location(province=province))
        if rng.random() < 0.3
        else None,
        facts=ev.Facts(content=(ev.ContentKind.SEXUAL_IMAGE_OR_VIDEO,)),
        anonymous=anonymous,
        contact=contact,
        reporter_location=reporter_location,
    )
    out: list[ev.Event] = [ev.ReportReceived(envelope=received_env, body=body, submission_id=f"sub-{n}")]
    if steps <= 2:
        return out

    def follow(
        cause: ev.Envelope,
        kind: str,
        producer: str,
        minutes: float,
        *,
        actor: ev.Actor = SYSTEM,
        disc: str = "",
    ) -> ev.Envelope:
        nonlocal t
        t = t + timedelta(milliseconds=round(minutes * 60_000))  # Avro keeps milliseconds
        return ev.Envelope.follow(
            cause, event_type=kind, producer=producer, actor=actor, occurred_at=t, discriminator=disc
        )

    pri_env = follow(received_env, "ReportPrioritized", "prioritize/0.1.0", rng.uniform(0.01, 2))
    out.append(
        ev.ReportPrioritized(envelope=pri_env, level=level, arrival_seq=n, body=body, reasons=("content",))
    )
    if steps <= 3:
        return out
    cls = ev.IncidentClassification(
        incident_id=f"{report_id}/1",
        reporter_category=body.reporter_category,
        assigned_category=category,
        sections=SECTIONS.get(category, ()),
        verdict=ev.Verdict.CONFIRMED,
    )
    cls_env = follow(pri_env, "ReportClassified", "classify/0.1.0", rng.uniform(0.01, 5))
    out.append(
        ev.ReportClassified(
            envelope=cls_env,
            level=level,
            arrival_seq=n,
            incidents=(cls,),
            needs_analyst_review=False,
            body=body,
        )
    )
    if steps <= 4:
        return out
    roll = rng.random()
    determination = (
        ev.Determination.POTENTIALLY_ILLEGAL
        if roll < 0.45
        else ev.Determination.NOT_ILLEGAL
        if roll < 0.75
        else ev.Determination.INFORMATIONAL
        if roll < 0.95
        else ev.Determination.OUTSIDE_MANDATE
    )
    child = determination is ev.Determination.POTENTIALLY_ILLEGAL and rng.random() < 0.2
    as_env = follow(cls_env, "ReportAssessed", "assess/0.1.0", rng.uniform(5, 600), actor=ANALYST)
    out.append(
        ev.ReportAssessed(
            envelope=as_env,
            determination=determination,
            child_may_need_protection=child,
            level=level,
            classification=(cls,),
            body=body,
        )
    )
    if steps <= 5:
        return out
    domestic = foreign = 0
    referrals = 0
    if determination is ev.Determination.POTENTIALLY_ILLEGAL:
        recipients: list[ev.Recipient] = []
        foreign_hosts = [h for h in hosts if h != "CA"]
        if not foreign_hosts or rng.random() < 0.2:
            recipients.append(
                ev.Recipient(
                    kind=ev.RecipientKind.POLICE,
                    name="RCMP NCECC",
                    jurisdiction="CA",
                    domestic=True,
                    verified=True,
                    source="shared/domain/hotlines.csv",
                )
            )
            domestic += 1
        for h in foreign_hosts:
            recipients.append(
                ev.Recipient(
                    kind=ev.RecipientKind.INHOPE_HOTLINE,
                    name=f"Hotline {h}",
                    jurisdiction=h,
                    domestic=False,
                    verified=False,
                    source="shared/domain/hotlines.csv",
                )
            )
            foreign += 1
        if child:
            recipients.append(
                ev.Recipient(
                    kind=ev.RecipientKind.CHILD_PROTECTION,
                    name="Child protection",
                    jurisdiction=province or "ON",
                    domestic=True,
                    verified=False,
                    source="shared/domain/jurisdictions.csv",
                )
            )
        for r in recipients:
            env = follow(as_env, "ReportReferred", "route/0.1.0", 0.01, disc=r.name)
            out.append(
                ev.ReportReferred(
                    envelope=env, recipient=r, category=category, urls=tuple(u.normalized for u in urls)
                )
            )
        referrals = len(recipients)
    elif contact is not None:
        env = follow(as_env, "FollowUpRequested", "route/0.1.0", 0.01)
        out.append(
            ev.FollowUpRequested(
                envelope=env,
                kind=ev.FollowUpKind.INFORMATIONAL,
                language=body.language,
                message_template="informational.v1",
                contact=contact,
            )
        )
    if steps <= 6:
        return out
    outcome = {
        ev.Determination.POTENTIALLY_ILLEGAL: ev.Outcome.REFERRED,
        ev.Determination.NOT_ILLEGAL: ev.Outcome.NOT_ILLEGAL,
        ev.Determination.INFORMATIONAL: ev.Outcome.INFORMATIONAL,
        ev.Determination.OUTSIDE_MANDATE: ev.Outcome.OUTSIDE_MANDATE,
    }[determination]
    env = follow(as_env, "ReportClosed", "route/0.1.0", rng.uniform(0.01, 1))
    out.append(
        ev.ReportClosed(
            envelope=env,
            outcome=outcome,
            referrals=referrals,
            domestic_police=domestic,
            foreign_police=foreign,
            child_protection=child,
            category=category,
            province=province,
            hosting_countries=hosts,
            received_at=body.received_at,
            closed_reason=str(outcome),
        )
    )
    return out
