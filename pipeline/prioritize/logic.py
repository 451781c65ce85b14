"""Step 4, the pure rules: rank a received report, and raise an earlier report that new information
makes more urgent.

Levels (1 most urgent .. 4; the full rule table is in ``pipeline.prioritize.rules``):

=====  ==========================================================================================
level  what sets it
=====  ==========================================================================================
1      information about a child victim or a suspect (victim's name, age, school, location, screen
       name; suspect's name, username, e-mail, phone, profile, IP)
2      a child at risk now: ongoing luring, sextortion, live-streamed abuse, risk of in-person contact
3      the making or distribution of material, or exploitation already over
4      informational concerns (nothing above)
=====  ==========================================================================================

Within a level, reports go in order of arrival: ``arrival_seq`` is the receipt time in milliseconds
since the epoch (ties keep the topic's order).

Re-prioritization: a received report whose ``body.linked_to`` names an earlier report (a linked
duplicate or a follow-up) that ranks more urgent than the earlier report's last level raises the
earlier report: a new ``ReportPrioritized`` for the earlier report id, at the new level, with
``supersedes`` = the earlier prioritization's event id and the reasons
``raised_by_linked_report:<report id>`` followed by the rules that set the level. A level is never
lowered, and the earlier event stays in the log. When the linked report arrives before the report it
links to (they travel on different partitions), the raise is kept as pending and applied when the
earlier report is ranked.

Nothing here talks to Kafka, PostgreSQL or a log; the state is a ``PriorityState`` the stage passes in
(PostgreSQL in production, ``MemoryState`` in unit tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pipeline import __version__
from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.prioritize.rules import RULES, Rule

PRODUCER = f"prioritize/{__version__}"
ACTOR = ev.Actor(kind=ev.ActorKind.SYSTEM, id="prioritize")
EVENT_TYPE = "ReportPrioritized"
RAISED_BY = "raised_by_linked_report:"
"""Prefix of the reason that says a linked report raised this one; the linked report's id follows."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AGE = 130


@dataclass(frozen=True)
class Ranking:
    """The level of a report and the names of the rules that set it."""

    level: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PendingRaise:
    """A raise for a report not ranked yet: the linked report that asks for it, its level and why."""

    target_report_id: str
    source_event_id: str
    level: int
    reasons: tuple[str, ...]


class PriorityState(Protocol):
    """What the rules need to remember: every prioritization emitted, and raises waiting for a report."""

    def emitted_for_cause(self, cause_event_id: str) -> list[ev.ReportPrioritized]:
        """The events already emitted for this input, in emission order (a replayed input)."""
        ...

    def last(self, report_id: str) -> ev.ReportPrioritized | None:
        """The latest prioritization of a report (its current level), or None."""
        ...

    def pending_for(self, report_id: str) -> list[PendingRaise]:
        """Raises asked for by linked reports that arrived before this report was ranked."""
        ...

    def record(self, event: ev.ReportPrioritized, cause_event_id: str) -> None:
        """Remember an emitted event; it becomes the report's latest prioritization."""
        ...

    def add_pending(self, pending: PendingRaise) -> None:
        """Remember a raise for a report that has no prioritization yet (idempotent)."""
        ...


@dataclass
class MemoryState:
    """An in-memory ``PriorityState``, for unit tests and the benchmark's fixtures."""

    emitted: list[tuple[str, ev.ReportPrioritized]] = field(default_factory=list)
    pending: list[PendingRaise] = field(default_factory=list)

    def emitted_for_cause(self, cause_event_id: str) -> list[ev.ReportPrioritized]:
        return [e for cause, e in self.emitted if cause == cause_event_id]

    def last(self, report_id: str) -> ev.ReportPrioritized | None:
        found = [e for _c, e in self.emitted if e.envelope.report_id == report_id]
        return found[-1] if found else None

    def pending_for(self, report_id: str) -> list[PendingRaise]:
        return [p for p in self.pending if p.target_report_id == report_id]

    def record(self, event: ev.ReportPrioritized, cause_event_id: str) -> None:
        self.emitted.append((cause_event_id, event))

    def add_pending(self, pending: PendingRaise) -> None:
        if all(
            (p.target_report_id, p.source_event_id) != (pending.target_report_id, pending.source_event_id)
            for p in self.pending
        ):
            self.pending.append(pending)


def arrival_seq(received_at: datetime) -> int:
    """The order of arrival: the receipt time in whole milliseconds since the epoch."""
    return (received_at - _EPOCH) // timedelta(milliseconds=1)


def validate(event: ev.ReportReceived) -> None:
    """Refuse a received report the rules cannot rank without guessing (the stage dead-letters it)."""
    body = event.body
    if not event.envelope.report_id.strip():
        raise DomainError(
            "The received event has no report id.", reason="missing_field", field="envelope.report_id"
        )
    if body.received_at.tzinfo is None:
        raise DomainError(
            "The receipt time has no time zone, so the order of arrival is unknown.",
            reason="invalid_field",
            field="body.received_at",
        )
    if body.received_at < _EPOCH:
        raise DomainError(
            "The receipt time is before 1970, so it gives no order of arrival.",
            reason="invalid_field",
            field="body.received_at",
        )
    victim = body.victim
    if victim is not None:
        if victim.age is not None and not 0 <= victim.age <= MAX_AGE:
            raise DomainError(
                f"The victim's age {victim.age} is not a possible age.",
                reason="invalid_field",
                field="body.victim.age",
            )
        if victim.date_of_birth is not None and victim.date_of_birth > body.received_at.date():
            raise DomainError(
                "The victim's date of birth is after the report was received.",
                reason="invalid_field",
                field="body.victim.date_of_birth",
            )
    if body.linked_to is not None and (
        not body.linked_to.strip() or body.linked_to == event.envelope.report_id
    ):
        raise DomainError(
            "The report links to itself or to an empty report id.",
            reason="invalid_field",
            field="body.linked_to",
        )
    if body.reporters_count < 1:
        raise DomainError(
            "The report counts fewer than one reporter.", reason="invalid_field", field="body.reporters_count"
        )


def rank(body: ev.ReportBody, rules: Sequence[Rule] = RULES) -> Ranking:
    """The most urgent level among the rules the report matches, and the names of those rules."""
    matched = [r for r in rules if r.test(body)]
    if not matched:
        raise DomainError("No priority rule matched the report.", reason="no_rule_matched")
    level = min(r.level for r in matched)
    return Ranking(level=level, reasons=tuple(r.name for r in matched if r.level == level))


def decide(
    event: ev.Event, state: PriorityState, now: datetime, rules: Sequence[Rule] = RULES
) -> list[ev.ReportPrioritized]:
    """The prioritizations a received event yields: its own, and maybe a raise of the report it links to.

    A replayed input yields exactly what it yielded the first time (same event ids), read from the state.
    """
    match event:
        case ev.ReportRejected():
            return []
        case ev.ReportReceived():
            return _decide_received(event, state, now, rules)
        case _:
            raise DomainError(
                f"The prioritize step takes ReportReceived or ReportRejected, not {type(event).__name__}.",
                reason="unexpected_event_type",
            )


def _decide_received(
    event: ev.ReportReceived, state: PriorityState, now: datetime, rules: Sequence[Rule]
) -> list[ev.ReportPrioritized]:
    cause = event.envelope.event_id
    done = state.emitted_for_cause(cause)
    if done:
        return done
    validate(event)
    report_id = event.envelope.report_id
    previous = state.last(report_id)
    if previous is not None:
        raise DomainError(
            f"Report {report_id} was already prioritized from another received event "
            f"({previous.envelope.causation_id}); a report is received once.",
            reason="duplicate_report_id",
            field="envelope.report_id",
        )
    ranking = rank(event.body, rules)
    own = ranking
    for pending in state.pending_for(report_id):
        if pending.level < own.level:
            own = Ranking(pending.level, pending.reasons)
    prioritized = ev.ReportPrioritized(
        envelope=ev.Envelope.follow(
            event.envelope, event_type=EVENT_TYPE, producer=PRODUCER, actor=ACTOR, occurred_at=now
        ),
        level=own.level,
        reasons=own.reasons,
        arrival_seq=arrival_seq(event.body.received_at),
        body=event.body,
    )
    state.record(prioritized, cause)
    out = [prioritized]
    target = event.body.linked_to
    if target is not None:
        raised = _raise_linked(event, target, ranking, state, now)
        if raised is not None:
            state.record(raised, cause)
            out.append(raised)
    return out


def _raise_linked(
    event: ev.ReportReceived, target: str, ranking: Ranking, state: PriorityState, now: datetime
) -> ev.ReportPrioritized | None:
    why = (f"{RAISED_BY}{event.envelope.report_id}", *ranking.reasons)
    earlier = state.last(target)
    if earlier is None:
        state.add_pending(PendingRaise(target, event.envelope.event_id, ranking.level, why))
        return None
    if ranking.level >= earlier.level:
        return None  # never lower, and an equal level changes nothing
    envelope = ev.Envelope(
        event_id=ev.derive_event_id(event.envelope.event_id, EVENT_TYPE, f"raise:{target}"),
        event_type=EVENT_TYPE,
        report_id=target,
        occurred_at=now,
        producer=PRODUCER,
        causation_id=event.envelope.event_id,
        correlation_id=earlier.envelope.correlation_id,
        actor=ACTOR,
    )
    return ev.ReportPrioritized(
        envelope=envelope,
        level=ranking.level,
        reasons=why,
        arrival_seq=earlier.arrival_seq,
        supersedes=earlier.envelope.event_id,
        body=earlier.body,
    )
