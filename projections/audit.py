"""The auditors' views, decoded from the event log itself, never from the read model.

``history(settings, report_id)`` scans every event topic from its first offset to the end it had when
the scan began, keeps the records whose key is the report id, and returns them in the order they
happened, each with its actor, time and a one-line summary. The summary never shows the reporter's
contact (only whether there is one), never the description (only its length) and never a full URL
(only hosts). This version scans from the beginning, bounded by a deadline: fine for an audit, slow for
a log of many millions of records (an index topic or a per-report table would remove the scan).

``replay(settings, until)`` replays the whole log into an ``InMemoryView``, applying only the events
whose ``occurred_at`` is at or before ``until``: the state and the statistics as of that moment.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.errors import SerdeError
from pipeline.settings import Settings
from projections.runner import end_offsets, event_topics, partitions_of, where
from projections.view import InMemoryView

_TYPE_ORDER = {t: i for i, t in enumerate(ev.EVENT_TYPES)}
"""Workflow order of event types: ties of ``occurred_at`` are shown in this order."""


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    occurred_at: datetime
    event_type: str
    event_id: str
    actor: str
    producer: str
    topic: str
    partition: int
    offset: int
    summary: str


@dataclass
class Scan:
    """What a scan of the log met: records read, undecodable ones, and whether it reached the end."""

    records: int = 0
    undecodable: int = 0
    complete: bool = True


@dataclass
class History:
    report_id: str
    entries: list[HistoryEntry] = field(default_factory=list)
    scan: Scan = field(default_factory=Scan)


@dataclass
class Replay:
    until: datetime
    view: InMemoryView
    applied: int = 0
    later: int = 0
    scan: Scan = field(default_factory=Scan)


def _code(text: str) -> str:
    """A reason code or field name as a code: anything else a producer put there is masked."""
    return re.sub(r"[^A-Za-z0-9_.\[\]-]", "?", text)[:120]


def _urls_on(urls: tuple[str, ...]) -> str:
    """How many URLs and on which hosts ("no URL", "1 URL on a.example", "3 URLs on a.example, b.example")."""
    if not urls:
        return "no URL"
    hosts = sorted({u.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0] for u in urls})
    return f"{len(urls)} URL{'' if len(urls) == 1 else 's'} on {', '.join(hosts)}"


def _body(b: ev.ReportBody) -> str:
    urls = tuple(u.normalized for i in b.incidents for u in i.urls)
    contact = "anonymous" if b.anonymous or b.contact is None else "contact on file (encrypted, not shown)"
    return (
        f"report {b.report_number}, {b.channel} in {b.language}, reporter's category "
        f"{b.reporter_category or 'not sure'}, {len(b.incidents)} incident(s), {_urls_on(urls)}, "
        f"description [redacted, {len(b.description)} chars], {contact}"
    )


def summarize(event: ev.Event) -> str:
    """One line about an event for auditors; any URL-like text a producer put in a field is masked."""
    return _URLISH.sub("[url]", _summarize(event))


_URLISH = re.compile(r"\S*://\S*")


def _summarize(event: ev.Event) -> str:  # noqa: PLR0911 - one return per event type
    """One line about an event, safe to show an auditor: no contact, no description, no full URL."""
    match event:
        case ev.ReportSubmitted():
            return (
                f"submitted by {event.channel}{' via ' + event.intake_system if event.intake_system else ''}, "
                f"category {event.reporter_category or 'not sure'}, {_urls_on(event.urls)}, "
                f"description [redacted, {len(event.description)} chars], "
                f"{'anonymous' if event.anonymous else 'contact on file (encrypted, not shown)'}"
            )
        case ev.ReportReceived():
            return "received: " + _body(event.body)
        case ev.ReportRejected():
            dup = f", duplicate of {event.duplicate_of}" if event.duplicate_of else ""
            field = f" (field {_code(event.field)})" if event.field else ""
            return f"rejected: {_code(event.reason_code)}{field}{dup}"
        case ev.ReportPrioritized():
            sup = f", supersedes {event.supersedes}" if event.supersedes else ""
            return (
                f"prioritized at level {event.level} ({', '.join(event.reasons) or 'no reason given'}){sup}"
            )
        case ev.ReportClassified():
            parts = [
                f"{i.incident_id}: {i.verdict} {i.assigned_category or 'none'} [{', '.join(i.sections) or '-'}]"
                for i in event.incidents
            ]
            extra = ", needs analyst review" if event.needs_analyst_review else ""
            if event.supersedes:
                extra += f", overrides {event.supersedes}"
            return f"classified at level {event.level}: {'; '.join(parts)}{extra}"
        case ev.ReportAssessed():
            child = ", a child may need protection" if event.child_may_need_protection else ""
            note = f", note [redacted, {len(event.note)} chars]" if event.note else ""
            return f"assessed {event.determination}{child}{note}"
        case ev.ReportReferred():
            r = event.recipient
            where = "domestic" if r.domestic else "foreign"
            return f"referred to {r.kind} {r.name} ({r.jurisdiction}, {where}), {len(event.urls)} URL(s)"
        case ev.FollowUpRequested():
            return (
                f"{event.kind} follow-up owed ({event.message_template}, {event.language}); contact not shown"
            )
        case ev.ReportClosed():
            return (
                f"closed {event.outcome}: {event.referrals} referral(s), police {event.domestic_police} domestic / "
                f"{event.foreign_police} foreign, child protection {'yes' if event.child_protection else 'no'}"
            )
        case _:
            raise TypeError(f"no summary for {type(event).__name__}")


def scan(settings: Settings, scan_state: Scan, *, timeout: float = 120.0) -> Iterator[Message]:
    """Every record of the event topics, from the first offset to the end each partition had at the start."""
    cons = kafka.consumer(
        settings,
        f"tipline.audit.{uuid.uuid4().hex}",
        **{"enable.partition.eof": True, "log_level": kafka.EDGE_LOG_LEVEL},
    )
    try:
        parts = partitions_of(cons, event_topics(settings))
        targets = {tp: end for tp, end in end_offsets(settings, parts).items() if end > 0}
        cons.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        reached: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout
        while any(reached.get(tp, 0) < high for tp, high in targets.items()):
            if time.monotonic() > deadline:
                scan_state.complete = False
                return
            for m in cons.consume(5000, 0.5):
                t, p, o = where(m)
                tp = (t, p)
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        reached[tp] = max(reached.get(tp, 0), o)
                    continue
                reached[tp] = max(reached.get(tp, 0), o + 1)
                scan_state.records += 1
                yield m
    finally:
        cons.close()


def history(settings: Settings, report_id: str, *, timeout: float = 120.0) -> History:
    """Every event of one report, in the order it happened (then by step, then by position)."""
    out = History(report_id=report_id)
    key = report_id.encode()
    found: list[tuple[ev.Event, Message]] = []
    for m in scan(settings, out.scan, timeout=timeout):
        if m.key() != key:
            continue
        try:
            found.append((serde.decode(m.value() or b""), m))
        except SerdeError:
            out.scan.undecodable += 1
    found.sort(
        key=lambda em: (
            em[0].envelope.occurred_at,
            _TYPE_ORDER.get(em[0].envelope.event_type, len(_TYPE_ORDER)),
            em[1].topic(),
            em[1].offset(),
        )
    )
    for event, m in found:
        env = event.envelope
        out.entries.append(
            HistoryEntry(
                occurred_at=env.occurred_at,
                event_type=env.event_type,
                event_id=env.event_id,
                # Actor ids usually carry their kind already ("analyst:jdoe"); do not say it twice.
                actor=env.actor.id
                if env.actor.id.startswith(f"{env.actor.kind}:")
                else f"{env.actor.kind}:{env.actor.id}",
                producer=env.producer,
                topic=m.topic() or "",
                partition=m.partition() or 0,
                offset=m.offset() or 0,
                summary=summarize(event),
            )
        )
    return out


def replay(settings: Settings, until: datetime, *, timeout: float = 600.0, batch: int = 5000) -> Replay:
    """The read model as of ``until``: every event with ``occurred_at <= until``, in an in-memory view."""
    result = Replay(until=until, view=InMemoryView())
    pending: list[ev.Event] = []
    for m in scan(settings, result.scan, timeout=timeout):
        try:
            event = serde.decode(m.value() or b"")
        except SerdeError:
            result.scan.undecodable += 1
            continue
        if event.envelope.occurred_at <= until:
            pending.append(event)
            result.applied += 1
        else:
            result.later += 1
        if len(pending) >= batch:
            result.view.apply(pending)
            pending = []
    result.view.apply(pending)
    return result
