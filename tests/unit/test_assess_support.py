"""Builders of classified reports for the assess tests (unit and integration), and their own checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pipeline import serde
from pipeline.events import (
    Actor,
    ActorKind,
    Category,
    Channel,
    EncryptedContact,
    Envelope,
    Facts,
    FileHash,
    FileRef,
    HashType,
    Incident,
    IncidentClassification,
    Language,
    Location,
    ReportBody,
    ReportClassified,
    Suspect,
    Technology,
    UrlRef,
    Verdict,
    Victim,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def contact() -> EncryptedContact:
    return EncryptedContact(key_id="k1", nonce=b"\x01" * 12, ciphertext=b"sealed-contact-bytes")


def classified(
    *,
    report_id: str | None = None,
    category: Category | None = Category.CSAM,
    verdict: Verdict | None = None,
    urls: tuple[str, ...] = ("https://example.test/a",),
    hashes: tuple[tuple[HashType, str], ...] = (),
    victim: Victim | None = None,
    suspect: Suspect | None = None,
    facts: Facts | None = None,
    level: int = 2,
    arrival_seq: int = 1,
    supersedes: str | None = None,
    event_id: str | None = None,
    with_contact: bool = False,
    technology: Technology = Technology.WEB_PAGE,
    description: str = "what the reporter saw",
) -> ReportClassified:
    """A classified report with one incident; every part can be set, the rest is minimal."""
    rid = report_id or f"r-{uuid.uuid4().hex[:12]}"
    files = (FileRef(file_name="f.jpg", hashes=tuple(FileHash(hash_type=t, value=v) for t, v in hashes)),)
    incident = Incident(
        incident_id=f"{rid}-1",
        technology=technology,
        urls=tuple(UrlRef(original=u, normalized=u, host=u.split("/")[2]) for u in urls),
        files=files if hashes else (),
    )
    body = ReportBody(
        report_number=f"CT-{rid}",
        channel=Channel.WEB,
        language=Language.EN,
        received_at=T0,
        reporter_category=category,
        description=description,
        incidents=(incident,),
        suspect=suspect,
        victim=victim,
        facts=facts or Facts(),
        anonymous=not with_contact,
        contact=contact() if with_contact else None,
    )
    if verdict is None:
        verdict = Verdict.UNCLASSIFIABLE if category is None else Verdict.CONFIRMED
    env = Envelope(
        event_id=event_id or str(uuid.uuid4()),
        event_type="ReportClassified",
        report_id=rid,
        occurred_at=T0,
        producer="classify/0.1.0",
        causation_id=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        actor=Actor(kind=ActorKind.SYSTEM, id="classify"),
    )
    return ReportClassified(
        envelope=env,
        level=level,
        priority_reasons=("test",),
        arrival_seq=arrival_seq,
        incidents=(
            IncidentClassification(
                incident_id=incident.incident_id,
                reporter_category=category,
                assigned_category=None if verdict is Verdict.UNCLASSIFIABLE else category,
                verdict=verdict,
            ),
        ),
        needs_analyst_review=verdict is Verdict.UNCLASSIFIABLE,
        supersedes=supersedes,
        body=body,
    )


def canadian_victim() -> Victim:
    return Victim(name="A. Child", age=12, location=Location(province="MB", country="CA"))


def test_builder_output_round_trips_through_serde() -> None:
    """A built classified report, contact included, survives encoding and decoding unchanged."""
    event = classified(with_contact=True, hashes=((HashType.MD5, "0" * 32),), victim=canadian_victim())
    assert serde.decode(serde.encode(event)) == event


def test_builder_marks_unclassifiable_when_no_category() -> None:
    """Without a category the built classification is unclassifiable and flagged for review."""
    event = classified(category=None)
    assert event.incidents[0].verdict is Verdict.UNCLASSIFIABLE
    assert event.incidents[0].assigned_category is None
    assert event.needs_analyst_review is True
