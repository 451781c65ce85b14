"""Step 5, the pure rules: each incident's secondary classification under the Criminal Code of Canada.

``decide(event, tables, now)`` turns a ``ReportPrioritized`` into one ``ReportClassified`` carrying, per
incident, the reporter's category, the assigned one, the sections it rests on, the verdict (confirmed,
corrected, unclassifiable, not_stated), tags and reasons. The rules themselves are data
(``data/rules.csv``, see ``pipeline.classify.rules``): this module derives the facts the rules test,
fires the rules and settles the verdict. When no rule supports a category, the incident is marked
unclassifiable and the report goes to analyst review: the step never guesses.

``override(previous, ...)`` is an analyst's later reclassification: a new ``ReportClassified`` whose
``supersedes`` is the earlier event's id; the earlier event stays in the log.

No Kafka, no database, no logging here. Bad input raises ``DomainError`` (the runner dead-letters it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime

from pipeline import __version__
from pipeline.classify.rules import FactView, Rule, Tables
from pipeline.errors import DomainError
from pipeline.events import (
    Actor,
    ActorKind,
    Annotation,
    Category,
    Envelope,
    Incident,
    IncidentClassification,
    ReportBody,
    ReportClassified,
    ReportPrioritized,
    Role,
    Technology,
    Verdict,
    Victim,
    derive_event_id,
)
from pipeline.topics import LANES

PRODUCER = f"classify/{__version__}"
STAGE_ACTOR = Actor(kind=ActorKind.SYSTEM, id="classify")
EVENT_TYPE = "ReportClassified"
MAX_AGE = 120
SEXTORTION = "sextortion"


# --- Validation of the input -------------------------------------------------------------------------


def _check_level(level: int, field: str) -> None:
    if level not in LANES:
        raise DomainError(
            f"priority level {level} is not one of {', '.join(map(str, LANES))}.",
            reason="bad_level",
            field=field,
        )


def _age_on(dob: date, day: date) -> int:
    return day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day))


def victim_age(victim: Victim | None, received_at: datetime) -> int | None:
    """The victim's age when the report arrived: as stated, else from the date of birth; None if unknown."""
    if victim is None:
        return None
    if victim.age is not None:
        return victim.age
    if victim.date_of_birth is not None:
        return _age_on(victim.date_of_birth, received_at.date())
    return None


def validate(event: ReportPrioritized) -> None:
    """Refuse what the rules cannot classify honestly: incomplete or contradictory input."""
    _check_level(event.level, "level")
    body = event.body
    if not event.envelope.report_id.strip():
        raise DomainError(
            "the event names no report id.", reason="missing_report_id", field="envelope.report_id"
        )
    if not body.incidents:
        raise DomainError(
            "the report holds no incident to classify.", reason="no_incidents", field="body.incidents"
        )
    seen: set[str] = set()
    for i, incident in enumerate(body.incidents):
        if not incident.incident_id.strip():
            raise DomainError(
                f"incident {i} has no id.",
                reason="missing_incident_id",
                field=f"body.incidents[{i}].incident_id",
            )
        if incident.incident_id in seen:
            raise DomainError(
                f"incident id {incident.incident_id} appears twice.",
                reason="duplicate_incident_id",
                field=f"body.incidents[{i}].incident_id",
            )
        seen.add(incident.incident_id)
    victim = body.victim
    if victim is not None:
        if victim.age is not None and not 0 <= victim.age <= MAX_AGE:
            raise DomainError(
                f"victim age {victim.age} is outside 0-{MAX_AGE}.",
                reason="bad_victim_age",
                field="body.victim.age",
            )
        if victim.date_of_birth is not None:
            if victim.date_of_birth > body.received_at.date():
                raise DomainError(
                    "the victim's date of birth is after the report was received.",
                    reason="bad_date_of_birth",
                    field="body.victim.date_of_birth",
                )
            if (
                victim.age is not None
                and abs(_age_on(victim.date_of_birth, body.received_at.date()) - victim.age) > 1
            ):
                raise DomainError(
                    "the victim's stated age and date of birth disagree.",
                    reason="contradictory_victim_age",
                    field="body.victim.age",
                )
    facts = body.facts
    if facts.actions and not facts.content:
        raise DomainError(
            "the facts name actions on material but no kind of content.",
            reason="incomplete_facts",
            field="body.facts.content",
        )


# --- Facts the rules test ----------------------------------------------------------------------------


def fact_view(body: ReportBody, incident: Incident) -> FactView:
    """The facts of one incident: the report's own facts, plus the few the rules derive from them."""
    facts = body.facts
    annotations = frozenset(body.annotations)
    age = victim_age(body.victim, body.received_at)
    flags: set[str] = {
        name
        for name, value in (
            ("money", facts.money_involved),
            ("threats", facts.threats),
            ("travel", facts.travel),
            ("in_person_meeting", facts.in_person_meeting),
            ("live_stream", facts.live_stream or Annotation.LIVE_STREAMING in annotations),
            ("ongoing", facts.ongoing),
            ("telecom", incident.technology != Technology.NON_INTERNET),
        )
        if value
    }
    if (
        (age is not None and age < 18)
        or facts.recipient_role == Role.MINOR
        or Annotation.INFANT in annotations
    ):
        flags.add("minor")
    elif age is not None and age >= 18:
        flags.add("adult_victim")
    victim_country = body.victim.location.country if body.victim and body.victim.location else None
    if victim_country and victim_country.upper() != "CA":
        flags.add("abroad")
    return FactView(
        content=frozenset(facts.content),
        actions=frozenset(facts.actions),
        annotations=annotations,
        sender=facts.sender_role,
        recipient=facts.recipient_role,
        flags=frozenset(flags),
    )


def _describe(view: FactView) -> str:
    def names(values: Iterable[str]) -> str:
        return ",".join(sorted(values)) or "none"

    return (
        f"content={names(view.content)}; actions={names(view.actions)}; sender={view.sender}; "
        f"recipient={view.recipient}; facts={names(view.flags)}"
    )


def _age_tier(age: int | None) -> str | None:
    """Luring's target offences change with the child's age (s.172.1(1)(a)-(c))."""
    if age is None:
        return None
    if age < 14:
        return "s.172.1(1)(c) tier: the child is under 14"
    if age < 16:
        return "s.172.1(1)(b) tier: the child is under 16"
    if age < 18:
        return "s.172.1(1)(a) tier: the child is under 18"
    return None


# --- Classification ----------------------------------------------------------------------------------


def classify_incident(body: ReportBody, incident: Incident, tables: Tables) -> IncidentClassification:
    """Fire every rule on the incident's facts and settle category, sections, tags and verdict."""
    view = fact_view(body, incident)
    fired = [r for r in tables.rules if r.holds(view)]
    primary = [r for r in fired if r.category is not None and not r.fallback]
    fallback = [r for r in fired if r.category is not None and r.fallback]
    modifiers = [r for r in fired if r.category is None]
    category_rules: list[Rule] = primary or fallback

    sections: list[str] = [s for r in category_rules for s in r.sections]
    if sections:  # a modifier (sextortion: s.346) rides only beside an offence another rule found
        sections += [s for r in modifiers for s in r.sections]
    tags = sorted({t for r in fired for t in r.tags})
    reasons = [f"{r.name}: {r.reason}" for r in (*category_rules, *modifiers)]

    supported = sorted(
        {r.category for r in category_rules if r.category is not None},
        key=lambda c: tables.categories[c].precedence,
    )
    reporter = body.reporter_category
    assigned: Category | None
    if not supported:
        assigned, verdict = None, Verdict.UNCLASSIFIABLE
        reasons.append(
            f"no rule supports a category ({_describe(view)}): an analyst must classify this incident"
        )
    elif reporter is None:
        assigned, verdict = supported[0], Verdict.NOT_STATED
        reasons.append(f"the reporter chose no category; the facts support {', '.join(supported)}")
    elif reporter in supported:
        assigned, verdict = reporter, Verdict.CONFIRMED
        reasons.append(f"the facts support the reporter's category {reporter}")
    else:
        assigned, verdict = supported[0], Verdict.CORRECTED
        reasons.append(f"the reporter chose {reporter}; the facts support {', '.join(supported)} instead")
    if any(r.category == Category.LURING for r in category_rules):
        tier = _age_tier(victim_age(body.victim, body.received_at))
        if tier:
            reasons.append(tier)
    if SEXTORTION in tags and not sections:
        reasons.append("sextortion is tagged; s.346 is only noted beside the offence it rides on")

    return IncidentClassification(
        incident_id=incident.incident_id,
        reporter_category=reporter,
        assigned_category=assigned,
        sections=tables.sort_sections(sections),
        verdict=verdict,
        tags=tuple(tags),
        reasons=tuple(reasons),
    )


def classify(event: ReportPrioritized, tables: Tables, now: datetime) -> ReportClassified:
    """The classification of a prioritized report, on the same priority level, carrying the body forward."""
    validate(event)
    incidents = tuple(classify_incident(event.body, inc, tables) for inc in event.body.incidents)
    supersedes = None
    if event.supersedes:
        # A re-prioritized report (raised to a more urgent lane): this classification replaces the one this
        # stage made of the earlier prioritization, whose id is derived the same way, so a consumer can drop
        # that one if it arrives late from the slower lane.
        supersedes = derive_event_id(event.supersedes, EVENT_TYPE, "")
        note = f"re-prioritized to level {event.level}: supersedes the classification at the earlier level"
        incidents = tuple(replace(c, reasons=(*c.reasons, note)) for c in incidents)
    return ReportClassified(
        envelope=Envelope.follow(
            event.envelope, event_type=EVENT_TYPE, producer=PRODUCER, actor=STAGE_ACTOR, occurred_at=now
        ),
        level=event.level,
        priority_reasons=event.reasons,
        arrival_seq=event.arrival_seq,
        incidents=incidents,
        needs_analyst_review=any(c.verdict == Verdict.UNCLASSIFIABLE for c in incidents),
        supersedes=supersedes,
        body=event.body,
    )


def decide(event: object, tables: Tables, now: datetime) -> list[ReportClassified]:
    """The stage's rules: one classification per prioritized report; any other event is refused."""
    match event:
        case ReportPrioritized():
            return [classify(event, tables, now)]
        case _:
            raise DomainError(
                f"the classify step consumes ReportPrioritized, not {type(event).__name__}.",
                reason="unexpected_event",
            )


# --- Analyst override --------------------------------------------------------------------------------


def authorize(actor_kind: ActorKind, analyst_id: str | None) -> Actor:
    """The actor of an override: only a named analyst may reclassify (an auditor reads, never writes)."""
    if actor_kind != ActorKind.ANALYST:
        raise DomainError(
            f"The {actor_kind} role cannot override a classification; only an analyst can.",
            reason="not_an_analyst",
            field="actor",
        )
    if analyst_id is None or not analyst_id.strip():
        raise DomainError(
            "An override needs the analyst's identity; pass --analyst ID.",
            reason="missing_analyst",
            field="analyst",
        )
    return Actor(kind=ActorKind.ANALYST, id=analyst_id.strip())


def latest(history: Iterable[ReportClassified]) -> ReportClassified | None:
    """The classification in force: the one no later classification supersedes (the last one in the log)."""
    items = list(history)
    superseded = {c.supersedes for c in items if c.supersedes}
    current = [c for c in items if c.envelope.event_id not in superseded]
    return current[-1] if current else None


def repeats(previous: ReportClassified, candidate: ReportClassified) -> bool:
    """True when ``candidate`` would say again what the override ``previous`` already says (same analyst)."""
    return (
        previous.supersedes is not None
        and previous.envelope.actor == candidate.envelope.actor
        and previous.override_reason == candidate.override_reason
        and previous.incidents == candidate.incidents
    )


def override(
    previous: ReportClassified,
    *,
    category: Category,
    sections: Iterable[str],
    reason: str,
    actor: Actor,
    tables: Tables,
    now: datetime,
    incident_ids: Iterable[str] = (),
) -> ReportClassified:
    """An analyst's reclassification of some (default: all) incidents, superseding ``previous``."""
    authorize(actor.kind, actor.id)
    reason = reason.strip()
    if not reason:
        raise DomainError(
            "An override needs a reason; pass --reason.", reason="missing_reason", field="reason"
        )
    chosen = [s.strip() for s in sections if s.strip()]
    unknown = [s for s in chosen if s not in tables.sections]
    if unknown:
        raise DomainError(
            f"Section {unknown[0]} is not in the Criminal Code table; "
            f"use one of {', '.join(tables.sections)}.",
            reason="unknown_section",
            field="sections",
        )
    sorted_sections = tables.sort_sections(chosen)
    known_ids = [c.incident_id for c in previous.incidents]
    wanted = list(dict.fromkeys(incident_ids)) or known_ids
    missing = [i for i in wanted if i not in known_ids]
    if missing:
        raise DomainError(
            f"Report {previous.envelope.report_id} has no incident {missing[0]}; "
            f"it has {', '.join(known_ids)}.",
            reason="unknown_incident",
            field="incident",
        )
    note = f"analyst {actor.id} override: {reason}"
    incidents = []
    for c in previous.incidents:
        if c.incident_id not in wanted:
            incidents.append(c)
            continue
        if c.reporter_category is None:
            verdict = Verdict.NOT_STATED
        elif c.reporter_category == category:
            verdict = Verdict.CONFIRMED
        else:
            verdict = Verdict.CORRECTED
        incidents.append(
            replace(c, assigned_category=category, sections=sorted_sections, verdict=verdict, reasons=(note,))
        )
    discriminator = "\x1e".join(("override", actor.id, category, *sorted_sections, *sorted(wanted), reason))
    return ReportClassified(
        envelope=Envelope.follow(
            previous.envelope,
            event_type=EVENT_TYPE,
            producer=PRODUCER,
            actor=actor,
            occurred_at=now,
            discriminator=discriminator,
        ),
        level=previous.level,
        priority_reasons=previous.priority_reasons,
        arrival_seq=previous.arrival_seq,
        incidents=tuple(incidents),
        needs_analyst_review=any(c.verdict == Verdict.UNCLASSIFIABLE for c in incidents),
        supersedes=previous.envelope.event_id,
        override_reason=reason,
        body=previous.body,
    )
