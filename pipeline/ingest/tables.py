"""The ingest tables' receiving rules over an in-memory view of the rows a run of submissions needs.

One report at a time, the database applies them itself: ``ingest_receive`` (``sql/020_ingest_tables.sql``)
numbers a report or reads its row back, records its link keys, moves the heads of those keys and finds
its link. A run of submissions (``pipeline.ingest.stage.receive_batch``) reads the rows of its reports
and the heads of its keys once, applies the very same rules here in the run's order (so a report may
link to one received earlier in the same run, and a second copy of a submission reads back the row the
first one made), and writes back what changed in one go. The tests hold both ways to equal results.

This module talks to no database: the stage reads into it and writes out of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Report:
    """A row of ``ingest_reports``: read from the database, or made by this run (``run_index`` >= 0)."""

    report_id: str
    submission_id: str
    digest: bytes
    received_at: datetime
    seq: int | None = None
    """None for a report numbered in this run until ``RunView.number`` gives it its sequence number."""
    linked_to: str | None = None
    reporters_count: int = 1
    run_index: int = -1
    """For a report numbered in this run: which call of ``RunView.receive`` made it (0 first)."""


@dataclass(slots=True)
class Head:
    """A row of ``ingest_link_heads``, with what linking needs to know about the key's first report."""

    link_key: str
    first_report_id: str
    order: tuple[int, int]
    """Where the first report stands among all: ``(0, seq)`` for a numbered one, ``(1, run index)`` for
    one numbered in this run (its number is drawn later, above every number drawn before, and in the
    order of the run)."""
    reports: int
    first_open: bool
    """Its first report is not closed (``ingest_reports.closed_at`` is null)."""
    first_found: bool = True
    """Its first report has a row (``ingest_receive`` joins on it: a head without one is not counted)."""
    read_reports: int | None = None
    """What the database held (None: a head this run creates); the write checks it is still so."""
    first_row: Report | None = None
    """The first report's row when this run made it (its number fills ``first_seq`` on write)."""


@dataclass
class RunView:
    """The rows a run needs, changed as each submission of the run is applied in order."""

    reports: dict[str, Report]
    heads: dict[str, Head]
    rejections: dict[tuple[str, bytes], datetime]
    new_reports: list[Report] = field(default_factory=list)
    new_keys: list[tuple[str, Report]] = field(default_factory=list)
    changed_heads: dict[str, Head] = field(default_factory=dict)
    new_rejections: list[tuple[str, bytes, datetime]] = field(default_factory=list)
    calls: int = 0
    """How many submissions reached ``receive``: each draws a number from the sequence, as each call of
    ``ingest_receive`` does (its insert draws one before it finds a row already there), so the numbers
    and their gaps come out as they do one report at a time."""

    @classmethod
    def of(
        cls,
        reports: Iterable[Report],
        heads: Iterable[Head],
        rejections: Mapping[tuple[str, bytes], datetime],
    ) -> RunView:
        return cls({r.report_id: r for r in reports}, {h.link_key: h for h in heads}, dict(rejections))

    def receive(
        self, report_id: str, submission_id: str, digest: bytes, now: datetime, keys: Sequence[str]
    ) -> tuple[Report, bool]:
        """``ingest_receive``: the report's row (made now, or the one it has) and whether ``digest`` is
        the numbered submission's (False: a resubmission with other bytes)."""
        call = self.calls
        self.calls += 1
        row = self.reports.get(report_id)
        if row is not None:
            return row, row.digest == digest
        row = Report(report_id, submission_id, digest, now, run_index=call)
        self.reports[report_id] = row
        self.new_reports.append(row)
        distinct = list(dict.fromkeys(keys))
        for key in distinct:  # a new report has no link key yet: every key is fresh
            self.new_keys.append((key, row))
            head = self.heads.get(key)
            if head is None:
                head = Head(key, report_id, (1, row.run_index), 0, first_open=True, first_row=row)
                self.heads[key] = head
            head.reports += 1
            self.changed_heads[key] = head
        counted = [self.heads[k] for k in distinct if self.heads[k].first_found]
        earlier = [h for h in counted if h.first_report_id != report_id and h.first_open]
        if earlier:
            row.linked_to = min(earlier, key=lambda h: h.order).first_report_id
            row.reporters_count = max(h.reports for h in counted)
        return row, True

    def rejected_at(self, report_id: str, digest: bytes, now: datetime) -> datetime:
        """When this submission was first rejected: ``now`` unless an earlier rejection is recorded."""
        key = (report_id, digest)
        at = self.rejections.get(key)
        if at is None:
            at = self.rejections[key] = now
            self.new_rejections.append((report_id, digest, now))
        return at

    def number(self, seqs: Sequence[int]) -> None:
        """Give the run's new reports their sequence numbers: ``seqs`` holds one number drawn from the
        sequence per call of ``receive``; the n-th call's is the n-th lowest (the others stay unused)."""
        if len(seqs) != self.calls:
            raise ValueError(f"{len(seqs)} numbers drawn for {self.calls} submissions")
        ordered = sorted(seqs)
        for row in self.new_reports:
            row.seq = ordered[row.run_index]
