"""The report read model as pure data: what one event says about its report, and how to merge it.

Every event becomes a ``ReportRow`` holding only what that event says (a *patch*), plus, for a
``ReportReferred``, one ``Referral``. Rows merge with ``merge``, which is commutative, associative and
idempotent (a join semi-lattice), so a report's row converges to the same value whatever the order its
events arrive in (they travel on several topics and partitions) and however often one is redelivered:

- each step is a *group* of fields set only by its own event type;
- a group keeps the first time its step happened (``first_at``: the minimum ``occurred_at``) for the
  time-in-step statistics, and the fields of its newest event (``at``, then ``event_id`` to break ties):
  an analyst's override or a re-prioritisation supersedes the earlier event of that step;
- the report's current step is the furthest step present (``STEP_ORDER``).

What an event says is a ``Fact`` (``fact``; ``projections.decode`` reads the same straight from the
bytes). The projector folds facts into flat table rows (``fold_rows``, the same merge without building a
``ReportRow`` per report); the PostgreSQL view performs the very same merge in one ``INSERT ... ON
CONFLICT DO UPDATE`` generated from ``GROUPS`` (``projections.pg``); the in-memory view calls ``merge``.
This module imports no Kafka, psycopg or logging.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pipeline import events as ev

STEPS: tuple[str, ...] = (
    "submitted",
    "received",
    "prioritized",
    "classified",
    "assessed",
    "referred",
    "closed",
    "rejected",
)
"""Steps in workflow order; a report's current step is the furthest one any of its events reached."""

STEP_ORDER: dict[str, int] = {s: i for i, s in enumerate(STEPS)}


@dataclass(frozen=True, kw_only=True)
class Group:
    """The fields one event type sets: ``columns`` are (name, SQL type)."""

    name: str
    event_type: str
    columns: tuple[tuple[str, str], ...]


GROUPS: tuple[Group, ...] = (
    Group(name="submitted", event_type="ReportSubmitted", columns=(("submitted_channel", "text"),)),
    Group(
        name="received",
        event_type="ReportReceived",
        columns=(
            ("report_number", "text"),
            ("channel", "text"),
            ("language", "text"),
            ("reporter_category", "text"),
            ("incidents", "integer"),
            ("anonymous", "boolean"),
            ("reporter_origin", "text"),
        ),
    ),
    Group(name="rejected", event_type="ReportRejected", columns=(("rejected_reason", "text"),)),
    Group(
        name="prioritized",
        event_type="ReportPrioritized",
        columns=(("priority_level", "smallint"), ("priority_arrival_seq", "bigint")),
    ),
    Group(
        name="classified",
        event_type="ReportClassified",
        columns=(
            ("level", "smallint"),
            ("arrival_seq", "bigint"),
            ("categories", "text[]"),
            ("sections", "text[]"),
            ("needs_review", "boolean"),
        ),
    ),
    Group(
        name="assessed",
        event_type="ReportAssessed",
        columns=(("determination", "text"), ("child_may_need_protection", "boolean")),
    ),
    Group(name="referred", event_type="ReportReferred", columns=()),
    Group(name="followup", event_type="FollowUpRequested", columns=(("followup_kind", "text"),)),
    Group(
        name="closed",
        event_type="ReportClosed",
        columns=(
            ("outcome", "text"),
            ("referrals", "integer"),
            ("domestic_police", "integer"),
            ("foreign_police", "integer"),
            ("child_protection", "boolean"),
            ("category", "text"),
            ("province", "text"),
            ("hosting_countries", "text[]"),
        ),
    ),
    # A resubmission of the report (its submission id again) that ingest refused: recorded beside the
    # report, never its step (the report itself goes on). Last: added after the first release.
    Group(name="resubmitted", event_type="ReportRejected", columns=()),
)
GROUP_BY_NAME: dict[str, Group] = {g.name: g for g in GROUPS}
STEP_OF_GROUP: dict[str, str | None] = {g.name: (g.name if g.name in STEP_ORDER else None) for g in GROUPS}


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupValue:
    """One step's part of a report: when it first happened, and its newest event's fields."""

    first_at: datetime
    at: datetime
    event_id: str
    values: tuple[Any, ...]

    def key(self) -> tuple[datetime, str]:
        return (self.at, self.event_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportRow:
    """A report's state (or a patch of it): its furthest step and its groups."""

    report_id: str
    step: int
    groups: dict[str, GroupValue] = field(default_factory=dict)

    def value(self, column: str) -> Any:
        """A field's value, ``None`` while the step that sets it has not happened."""
        group = _GROUP_OF_COLUMN[column]
        g = self.groups.get(group.name)
        if g is None:
            return None
        return g.values[_INDEX_OF_COLUMN[column]]

    def at(self, group: str) -> datetime | None:
        """The first time the step happened."""
        g = self.groups.get(group)
        return None if g is None else g.first_at

    @property
    def step_name(self) -> str:
        return STEPS[self.step]


_GROUP_OF_COLUMN: dict[str, Group] = {c: g for g in GROUPS for c, _ in g.columns}
_INDEX_OF_COLUMN: dict[str, int] = {c: i for g in GROUPS for i, (c, _) in enumerate(g.columns)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Referral:
    """One referral of a report (one ``ReportReferred`` event)."""

    event_id: str
    report_id: str
    kind: str
    recipient: str
    jurisdiction: str
    domestic: bool
    occurred_at: datetime


def merge_group(a: GroupValue | None, b: GroupValue | None) -> GroupValue | None:
    if a is None:
        return b
    if b is None:
        return a
    newest = b if b.key() > a.key() else a
    first = min(a.first_at, b.first_at)
    if newest.first_at == first:
        return newest
    return replace(newest, first_at=first)


def merge(a: ReportRow | None, b: ReportRow) -> ReportRow:
    """The row holding what both rows say; the order of arguments never changes the result."""
    if a is None:
        return b
    if a.report_id != b.report_id:
        raise ValueError("cannot merge rows of different reports")
    groups = dict(a.groups)
    for name, gv in b.groups.items():
        merged = merge_group(groups.get(name), gv)
        if merged is not None:
            groups[name] = merged
    return ReportRow(report_id=a.report_id, step=max(a.step, b.step), groups=groups)


def _distinct(items: Iterable[str | None]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item is not None:
            seen.setdefault(str(item), None)
    return list(seen)


INTERNATIONAL = "international"


def reporter_origin(location: ev.Location | None) -> str | None:
    """The reporter's origin as the published figures count it, or None when the reporter did not say.

    Their province when given; ``international`` when they gave only a country other than Canada;
    otherwise None (the statistics then fall back to the province route found for the report).
    """
    if location is None:
        return None
    return origin(location.province, location.country)


def origin(province: str | None, country: str | None) -> str | None:
    """``reporter_origin`` of a location given as its province and country."""
    if province:
        return province
    if country and country.upper() != "CA":
        return INTERNATIONAL
    return None


def _values(event: ev.Event) -> tuple[str, tuple[Any, ...]]:  # noqa: PLR0911 - one return per event type
    """The group an event sets and its values, in ``Group.columns`` order."""
    match event:
        case ev.ReportSubmitted():
            return "submitted", (str(event.channel),)
        case ev.ReportReceived():
            b = event.body
            return "received", (
                b.report_number,
                str(b.channel),
                str(b.language),
                None if b.reporter_category is None else str(b.reporter_category),
                len(b.incidents),
                b.anonymous,
                reporter_origin(b.reporter_location),
            )
        case ev.ReportRejected() if event.reason_code == ev.DUPLICATE_SUBMISSION:
            return "resubmitted", ()
        case ev.ReportRejected():
            return "rejected", (event.reason_code,)
        case ev.ReportPrioritized():
            return "prioritized", (event.level, event.arrival_seq)
        case ev.ReportClassified():
            return "classified", (
                event.level,
                event.arrival_seq,
                _distinct(i.assigned_category for i in event.incidents),
                sorted(_distinct(s for i in event.incidents for s in i.sections)),
                event.needs_analyst_review,
            )
        case ev.ReportAssessed():
            return "assessed", (str(event.determination), event.child_may_need_protection)
        case ev.ReportReferred():
            return "referred", ()
        case ev.FollowUpRequested():
            return "followup", (str(event.kind),)
        case ev.ReportClosed():
            return "closed", (
                str(event.outcome),
                event.referrals,
                event.domestic_police,
                event.foreign_police,
                event.child_protection,
                None if event.category is None else str(event.category),
                event.province,
                sorted(_distinct(event.hosting_countries)),
            )
        case _:
            raise TypeError(f"the read model does not know the event type {type(event).__name__}")


ReferralRow = tuple[str, str, str, str, str, bool, datetime]
"""A ``Referral``'s fields in ``REFERRAL_FIELDS`` order (``proj_referral``'s columns)."""

REFERRAL_FIELDS = ("event_id", "report_id", "kind", "recipient", "jurisdiction", "domestic", "occurred_at")

Fact = tuple[str, str, str, datetime, tuple[Any, ...], ReferralRow | None]
"""What one event says about its report: report id, group, event id, ``occurred_at``, the group's values
(``Group.columns`` order) and the referral it records, if it is one. ``projections.decode`` reads facts
straight from encoded events; ``fact`` makes one from a decoded event."""


def fact(event: ev.Event) -> Fact:
    """What one event says about its report, as a ``Fact``."""
    group, values = _values(event)
    env = event.envelope
    referral: ReferralRow | None = None
    if isinstance(event, ev.ReportReferred):
        r = event.recipient
        referral = (
            env.event_id,
            env.report_id,
            str(r.kind),
            r.name,
            r.jurisdiction,
            r.domestic,
            env.occurred_at,
        )
    return (env.report_id, group, env.event_id, env.occurred_at, values, referral)


def referral_of(row: ReferralRow) -> Referral:
    event_id, report_id, kind, recipient, jurisdiction, domestic, occurred_at = row
    return Referral(
        event_id=event_id,
        report_id=report_id,
        kind=kind,
        recipient=recipient,
        jurisdiction=jurisdiction,
        domestic=domestic,
        occurred_at=occurred_at,
    )


def patch(event: ev.Event) -> tuple[ReportRow, Referral | None]:
    """What one event says about its report (and the referral it records, if it is one)."""
    report_id, group, event_id, at, values, referred = fact(event)
    referral = None if referred is None else referral_of(referred)
    row = ReportRow(
        report_id=report_id,
        step=STEP_ORDER.get(group, 0),
        groups={group: GroupValue(first_at=at, at=at, event_id=event_id, values=values)},
    )
    return row, referral


def fold(events: Iterable[ev.Event]) -> tuple[dict[str, ReportRow], dict[str, Referral]]:
    """A batch of events folded into one patch per report and its referrals (by event id)."""
    return fold_facts(fact(e) for e in events)


def fold_facts(facts: Iterable[Fact]) -> tuple[dict[str, ReportRow], dict[str, Referral]]:
    """Facts folded into one patch per report and its referrals (by event id).

    The same result as merging every event's ``patch``, built in place (the projector's hot loop).
    """
    groups: dict[str, dict[str, GroupValue]] = {}
    steps: dict[str, int] = {}
    referrals: dict[str, Referral] = {}
    step_of = STEP_ORDER.get
    for rid, group, event_id, at, values, referral in facts:
        gv = GroupValue(first_at=at, at=at, event_id=event_id, values=values)
        step = step_of(group, 0)
        mine = groups.get(rid)
        if mine is None:
            groups[rid] = {group: gv}
            steps[rid] = step
        else:
            old = mine.get(group)
            mine[group] = gv if old is None else (merge_group(old, gv) or gv)
            steps[rid] = max(steps[rid], step)
        if referral is not None:
            referrals[referral[0]] = referral_of(referral)
    rows = {rid: ReportRow(report_id=rid, step=steps[rid], groups=g) for rid, g in groups.items()}
    return rows, referrals


# --- The same fold, straight into table rows --------------------------------------------------------

ROW_COLUMNS: tuple[str, ...] = (
    "report_id",
    "step",
    *(
        c
        for g in GROUPS
        for c in (f"{g.name}_first_at", f"{g.name}_at", f"{g.name}_event", *(n for n, _ in g.columns))
    ),
)
"""A report's row as a flat list: id, step, then per group its first time, newest time, newest event
id and fields (``proj_report``'s columns)."""

_SLOT: dict[str, tuple[int, int]] = {}
_i = 2
for _g in GROUPS:
    _SLOT[_g.name] = (_i, STEP_ORDER.get(_g.name, 0))
    _i += 3 + len(_g.columns)
del _i, _g


def fold_rows(
    facts: Iterable[Fact], rows: dict[str, list[Any]] | None = None
) -> tuple[dict[str, list[Any]], dict[str, ReferralRow]]:
    """Facts folded into flat rows (``ROW_COLUMNS``), merged into ``rows`` if given, and referrals.

    The same merge as ``fold`` (a test holds the two together) without building a ``ReportRow`` per
    report: the projector copies these lists into PostgreSQL as they are.
    """
    rows = {} if rows is None else rows
    referrals: dict[str, ReferralRow] = {}
    width = len(ROW_COLUMNS) - 2
    slot = _SLOT
    for rid, group, event_id, at, values, referral in facts:
        row = rows.get(rid)
        if row is None:
            row = rows[rid] = [rid, 0, *([None] * width)]
        i, step = slot[group]
        row[1] = max(row[1], step)
        newest = row[i + 1]
        if newest is None:
            row[i] = at
            row[i + 1] = at
            row[i + 2] = event_id
            row[i + 3 : i + 3 + len(values)] = values
        else:
            row[i] = min(row[i], at)
            if at > newest or (at == newest and event_id > row[i + 2]):
                row[i + 1] = at
                row[i + 2] = event_id
                row[i + 3 : i + 3 + len(values)] = values
        if referral is not None:
            referrals[referral[0]] = referral
    return rows, referrals


def merge_rows(into: dict[str, list[Any]], rows: dict[str, list[Any]]) -> None:
    """Merge flat rows (``fold_rows``) into ``into``, as ``merge`` merges ``ReportRow``s."""
    for rid, row in rows.items():
        mine = into.get(rid)
        if mine is None:
            into[rid] = row
            continue
        mine[1] = max(mine[1], row[1])
        for g in GROUPS:
            i = _SLOT[g.name][0]
            at = row[i + 1]
            if at is None:
                continue
            newest = mine[i + 1]
            n = 3 + len(g.columns)
            if newest is None:
                mine[i : i + n] = row[i : i + n]
                continue
            first = min(mine[i], row[i])
            if (at, row[i + 2]) > (newest, mine[i + 2]):
                mine[i : i + n] = row[i : i + n]
            mine[i] = first
