"""Builders of ``ReportAssessed`` events for the route step's tests (unit and integration)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pipeline import events as ev

RECEIVED_AT = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
CONTACT = ev.EncryptedContact(key_id="k1", nonce=b"\x00" * 12, ciphertext=b"\x8f\x12ciphertext-bytes")


def url_ref(url: str) -> ev.UrlRef:
    """The reference ingest would make; an unparseable URL gets an empty host."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return ev.UrlRef(original=url, normalized=url, host=host)


def assessed(
    *,
    urls: Sequence[str] = (),
    ips: Sequence[str] = (),
    suspect: ev.Location | None = None,
    suspect_ips: Sequence[str] = (),
    victim: ev.Location | None = None,
    child: bool = False,
    determination: ev.Determination = ev.Determination.POTENTIALLY_ILLEGAL,
    contact: ev.EncryptedContact | None = None,
    anonymous: bool = True,
    language: ev.Language = ev.Language.EN,
    report_id: str | None = None,
    event_id: str | None = None,
    supersedes: str | None = None,
    category: ev.Category | None = ev.Category.CSAM,
    tags: tuple[str, ...] = (),
) -> ev.ReportAssessed:
    report_id = report_id or str(uuid.uuid4())
    incidents: list[ev.Incident] = []
    if urls:
        incidents.append(
            ev.Incident(
                incident_id="i1", technology=ev.Technology.WEB_PAGE, urls=tuple(url_ref(u) for u in urls)
            )
        )
    if ips:
        incidents.append(
            ev.Incident(incident_id="i2", technology=ev.Technology.PEER_TO_PEER, ip_addresses=tuple(ips))
        )
    if not incidents:
        incidents.append(
            ev.Incident(incident_id="i3", technology=ev.Technology.CHAT_IM, usernames=("someone",))
        )
    body = ev.ReportBody(
        report_number="CT-2026-000123",
        channel=ev.Channel.WEB,
        language=language,
        received_at=RECEIVED_AT,
        reporter_category=category,
        description="described",
        incidents=tuple(incidents),
        suspect=ev.Suspect(location=suspect, ip_events=tuple(ev.IpEvent(ip=ip) for ip in suspect_ips))
        if suspect or suspect_ips
        else None,
        victim=ev.Victim(location=victim) if victim else None,
        facts=ev.Facts(),
        anonymous=anonymous,
        contact=contact,
    )
    eid = event_id or str(uuid.uuid4())
    return ev.ReportAssessed(
        envelope=ev.Envelope(
            event_id=eid,
            event_type="ReportAssessed",
            report_id=report_id,
            occurred_at=NOW,
            producer="assess/0.1.0",
            causation_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
            actor=ev.Actor(kind=ev.ActorKind.ANALYST, id="analyst-7"),
        ),
        determination=determination,
        child_may_need_protection=child,
        supersedes=supersedes,
        level=1,
        classification=(
            ev.IncidentClassification(
                incident_id=incidents[0].incident_id,
                reporter_category=category,
                assigned_category=category,
                sections=("163.1(2)", "163.1(4)"),
                verdict=ev.Verdict.CONFIRMED,
                tags=tags,
            ),
        ),
        body=body,
    )
