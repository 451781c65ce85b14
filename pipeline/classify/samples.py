"""Small, valid ``ReportPrioritized`` events built from a few facts: for tests, the benchmark and demos.

Only synthetic data: no contact details, no real URLs of material (``example.invalid`` hosts).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime

from pipeline.events import (
    Actor,
    ActorKind,
    Annotation,
    Category,
    Channel,
    ContentKind,
    Envelope,
    Facts,
    Incident,
    Language,
    Location,
    MaterialAction,
    ReportBody,
    ReportPrioritized,
    Role,
    Technology,
    UrlRef,
    Victim,
)

RECEIVED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def prioritized(
    *,
    reporter: Category | None = None,
    content: Iterable[ContentKind] = (),
    actions: Iterable[MaterialAction] = (),
    sender: Role = Role.UNKNOWN,
    recipient: Role = Role.UNKNOWN,
    money: bool = False,
    threats: bool = False,
    travel: bool = False,
    meeting: bool = False,
    live: bool = False,
    ongoing: bool = False,
    age: int | None = None,
    date_of_birth: date | None = None,
    victim_country: str | None = None,
    annotations: Iterable[Annotation] = (),
    technologies: Iterable[Technology] = (Technology.WEB_PAGE,),
    level: int = 2,
    report_id: str | None = None,
    arrival_seq: int = 1,
) -> ReportPrioritized:
    """A prioritized report whose facts are the arguments; one incident per technology."""
    rid = report_id or f"R-{uuid.uuid4().hex[:12]}"
    victim = None
    if age is not None or date_of_birth is not None or victim_country is not None:
        victim = Victim(
            age=age,
            date_of_birth=date_of_birth,
            location=Location(country=victim_country) if victim_country else None,
        )
    incidents = tuple(
        Incident(
            incident_id=f"{rid}-{i + 1}",
            technology=tech,
            urls=(
                (
                    UrlRef(
                        original=f"https://{rid.lower()}.example.invalid/p",
                        normalized=f"https://{rid.lower()}.example.invalid/p",
                        host=f"{rid.lower()}.example.invalid",
                    ),
                )
                if tech == Technology.WEB_PAGE
                else ()
            ),
        )
        for i, tech in enumerate(technologies)
    )
    body = ReportBody(
        report_number=rid,
        channel=Channel.WEB,
        language=Language.EN,
        received_at=RECEIVED_AT,
        reporter_category=reporter,
        description="synthetic report for the classification step",
        incidents=incidents,
        victim=victim,
        annotations=tuple(annotations),
        facts=Facts(
            content=tuple(content),
            actions=tuple(actions),
            sender_role=sender,
            recipient_role=recipient,
            money_involved=money,
            threats=threats,
            travel=travel,
            in_person_meeting=meeting,
            live_stream=live,
            ongoing=ongoing,
        ),
        anonymous=True,
    )
    received = Envelope.first(
        submission_id=f"sub-{rid}",
        event_type="ReportReceived",
        report_id=rid,
        producer="ingest/0.1.0",
        actor=Actor(kind=ActorKind.SYSTEM, id="ingest"),
        occurred_at=RECEIVED_AT,
    )
    return ReportPrioritized(
        envelope=Envelope.follow(
            received,
            event_type="ReportPrioritized",
            producer="prioritize/0.1.0",
            actor=Actor(kind=ActorKind.SYSTEM, id="prioritize"),
            occurred_at=RECEIVED_AT,
        ),
        level=level,
        reasons=("synthetic",),
        arrival_seq=arrival_seq,
        body=body,
    )
