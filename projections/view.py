"""The read side's small interface, its answers, and the in-memory view.

A view applies batches of events and answers four questions: a report's status, the analysts' queue,
the statistics, and every row (to compare two views). ``InMemoryView`` (here; used by the auditors'
replay) and ``PgView`` (``projections.pg``; the live read model) implement it, and the same tests run
against both.

Definitions of the published statistics (``Statistics``):

- *closed* reports are those with a ``ReportClosed`` whose outcome is not ``rejected`` (a rejected
  submission never became a report);
- *referred to police or child protection*: closed with outcome ``referred``; every other outcome
  (not illegal, informational, outside the mandate) counts as *legal content or informational*;
- *police referrals*: closed reports with at least one police referral (``domestic_police`` +
  ``foreign_police`` > 0); they *stayed in Canada* when none of them went abroad (``foreign_police`` = 0);
- counts by category, province and hosting country are over closed reports, from ``ReportClosed``'s
  own fields (``unknown`` where it has none), except that the count by province is by the reporter's
  origin, as the tipline publishes it: the province the reporter gave (``ReportBody.reporter_location``),
  ``international`` when they gave only a country other than Canada, else ``ReportClosed.province``
  (the victim's or suspect's province route used), else ``unknown``;
- time in each step: ``received -> prioritized -> classified -> assessed -> closed``, the difference of
  the first ``occurred_at`` of each step's event, median and 90th percentile with linear interpolation
  (PostgreSQL's ``percentile_cont``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pipeline import events as ev
from projections import model
from projections.model import Referral, ReportRow

TRANSITIONS: tuple[tuple[str, str], ...] = (
    ("received", "prioritized"),
    ("prioritized", "classified"),
    ("classified", "assessed"),
    ("assessed", "closed"),
)
UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class ReportStatus:
    """What an analyst or a manager sees of one report."""

    report_id: str
    report_number: str | None
    step: str
    level: int | None
    categories: tuple[str, ...]
    sections: tuple[str, ...]
    determination: str | None
    outcome: str | None
    referrals: tuple[Referral, ...]
    times: dict[str, datetime]
    """The first time each step happened, by step name."""


@dataclass(frozen=True, kw_only=True)
class QueueEntry:
    """One report waiting for an analyst's assessment."""

    report_id: str
    level: int
    arrival_seq: int
    classified_at: datetime
    categories: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StepTime:
    """Time spent between two steps, in seconds."""

    start: str
    end: str
    count: int
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True, kw_only=True)
class Statistics:
    """The figures the tipline publishes, measured on the read model."""

    reports: int
    closed: int
    referred: int
    police_reports: int
    police_in_canada: int
    by_step: dict[str, int] = field(default_factory=dict)
    by_category: dict[str, int] = field(default_factory=dict)
    by_province: dict[str, int] = field(default_factory=dict)
    by_hosting_country: dict[str, int] = field(default_factory=dict)
    step_times: tuple[StepTime, ...] = ()

    @property
    def legal_or_informational(self) -> int:
        return self.closed - self.referred

    @property
    def share_referred(self) -> float | None:
        return self.referred / self.closed if self.closed else None

    @property
    def share_legal_or_informational(self) -> float | None:
        return self.legal_or_informational / self.closed if self.closed else None

    @property
    def share_police_in_canada(self) -> float | None:
        return self.police_in_canada / self.police_reports if self.police_reports else None


class View(Protocol):
    """A read model built from events."""

    def apply(self, events: Sequence[ev.Event]) -> None: ...

    def report(self, report_id: str) -> ReportStatus | None: ...

    def queue(self, limit: int = 100) -> list[QueueEntry]: ...

    def statistics(self) -> Statistics: ...

    def rows(self) -> tuple[list[ReportRow], list[Referral]]:
        """Every report row and referral, sorted by key (to compare two views row by row)."""
        ...


def percentile_cont(values: Sequence[float], p: float) -> float | None:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    lower = math.floor(pos)
    upper = math.ceil(pos)
    if lower == upper:
        return ordered[lower]
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (pos - lower)


def status_of(row: ReportRow, referrals: Iterable[Referral]) -> ReportStatus:
    level = row.value("level")
    if level is None:
        level = row.value("priority_level")
    times = {g: gv.first_at for g, gv in row.groups.items()}
    return ReportStatus(
        report_id=row.report_id,
        report_number=row.value("report_number"),
        step=row.step_name,
        level=level,
        categories=tuple(row.value("categories") or ()),
        sections=tuple(row.value("sections") or ()),
        determination=row.value("determination"),
        outcome=row.value("outcome"),
        referrals=tuple(sorted(referrals, key=lambda r: (r.occurred_at, r.event_id))),
        times=times,
    )


def statistics_of(rows: Iterable[ReportRow]) -> Statistics:
    """The statistics of a set of report rows (the in-memory view's; ``PgView`` computes them in SQL)."""
    reports = closed = referred = police = police_ca = 0
    by_step: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_province: Counter[str] = Counter()
    by_host: Counter[str] = Counter()
    durations: dict[tuple[str, str], list[float]] = {t: [] for t in TRANSITIONS}
    for row in rows:
        reports += 1
        by_step[row.step_name] += 1
        for start, end in TRANSITIONS:
            a, b = row.at(start), row.at(end)
            if a is not None and b is not None:
                durations[(start, end)].append((b - a).total_seconds())
        outcome = row.value("outcome")
        if outcome is None or outcome == str(ev.Outcome.REJECTED):
            continue
        closed += 1
        if outcome == str(ev.Outcome.REFERRED):
            referred += 1
        domestic, foreign = row.value("domestic_police") or 0, row.value("foreign_police") or 0
        if domestic + foreign > 0:
            police += 1
            if foreign == 0:
                police_ca += 1
        by_category[row.value("category") or UNKNOWN] += 1
        by_province[row.value("reporter_origin") or row.value("province") or UNKNOWN] += 1
        for country in row.value("hosting_countries") or ():
            by_host[country] += 1
    return Statistics(
        reports=reports,
        closed=closed,
        referred=referred,
        police_reports=police,
        police_in_canada=police_ca,
        by_step=dict(sorted(by_step.items())),
        by_category=dict(sorted(by_category.items())),
        by_province=dict(sorted(by_province.items())),
        by_hosting_country=dict(sorted(by_host.items())),
        step_times=tuple(
            StepTime(
                start=s,
                end=e,
                count=len(durations[(s, e)]),
                median_s=percentile_cont(durations[(s, e)], 0.5),
                p90_s=percentile_cont(durations[(s, e)], 0.9),
            )
            for s, e in TRANSITIONS
        ),
    )


class InMemoryView:
    """The read model in a dictionary: for the auditors' replay, and as the reference in tests."""

    def __init__(self) -> None:
        self._rows: dict[str, ReportRow] = {}
        self._referrals: dict[str, Referral] = {}
        self._by_report: dict[str, dict[str, Referral]] = {}

    def apply(self, events: Sequence[ev.Event]) -> None:
        rows, referrals = model.fold(events)
        for rid, row in rows.items():
            self._rows[rid] = model.merge(self._rows.get(rid), row)
        for eid, ref in referrals.items():
            self._referrals[eid] = ref
            self._by_report.setdefault(ref.report_id, {})[eid] = ref

    def report(self, report_id: str) -> ReportStatus | None:
        row = self._rows.get(report_id)
        if row is None:
            return None
        return status_of(row, self._by_report.get(report_id, {}).values())

    def queue(self, limit: int = 100) -> list[QueueEntry]:
        waiting = [r for r in self._rows.values() if r.step == model.STEP_ORDER["classified"]]
        waiting.sort(key=lambda r: (r.value("level"), r.value("arrival_seq"), r.report_id))
        return [
            QueueEntry(
                report_id=r.report_id,
                level=r.value("level"),
                arrival_seq=r.value("arrival_seq"),
                classified_at=r.groups["classified"].first_at,
                categories=tuple(r.value("categories") or ()),
            )
            for r in waiting[:limit]
        ]

    def statistics(self) -> Statistics:
        return statistics_of(self._rows.values())

    def rows(self) -> tuple[list[ReportRow], list[Referral]]:
        return (
            [self._rows[k] for k in sorted(self._rows)],
            [self._referrals[k] for k in sorted(self._referrals)],
        )
