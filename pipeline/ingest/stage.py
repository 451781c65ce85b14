"""The ingest stage (step 3): the secure server receives, numbers, normalises and links each report.

- Input topic: ``SUBMITTED`` (``ReportSubmitted``, from the HTTP endpoint, the phone line and intake
  systems). Output topic: ``RECEIVED`` (``ReportReceived``, or ``ReportRejected``). Key: the report id.
- Numbering: ``CT-<year>-<seq>`` from the ingest-owned sequence; one row per report in
  ``ingest_reports`` (keyed by report id) holds its sequence number, receipt time and link, so a
  replayed batch reads the row back and emits the very same ``ReportReceived`` (same event id, number
  and time). Record by record (``handle``, the reference): one round trip per report, the PL/pgSQL
  function ``ingest_receive`` (``sql/``). A run of records (``handle_batch``, what the runner uses):
  two round trips for the whole run (``receive_batch``: lock the run's link keys, read its rows and
  draw its numbers; write), with ``ingest_receive``'s rules applied in the run's order in between
  (``pipeline.ingest.tables``), so both give the same events and rows. Numbers are unique and
  increasing but may have gaps (a rolled-back batch does not return them; every call of
  ``ingest_receive`` draws one, even for a report it finds already numbered, and a run does the same).
- Resubmission: a second submission with the same submission id (same report id) whose bytes differ
  from the numbered one never makes a second report: it is a ``ReportRejected(reason_code=
  "duplicate_submission", duplicate_of=<report id>)``, whose id is derived from a digest of the
  submission (deterministic; each distinct resubmission is recorded once, for auditors). A
  byte-identical record is indistinguishable from a redelivery and yields the same event again (same
  event id), which downstream consumers treat as one.
- Linking: a report whose normalised URLs or file hashes match an earlier open report gets
  ``linked_to`` = the earliest such report and ``reporters_count`` = how many reports have named its
  most-reported URL or hash so far, itself included. ``ingest_link_keys`` keeps every (key, report id)
  pair; ``ingest_link_heads`` keeps per key its first report and count, so linking costs O(keys) even
  for a URL thousands of reports name. Closing is not wired yet: a report counts as open unless
  ``ingest_reports.closed_at`` is set, which nothing sets in this version (a later version should set
  it from the closed topic and move the heads of its keys). Two instances that meet on a shared key
  serialise on its head row, so counts stay exact. A run first takes advisory locks on its keys in one
  global order (``sql/021_ingest_lock_keys.sql``), so two runs never deadlock on them, and its writes
  check that every head it read is unchanged (else the runner receives the run again record by
  record); record by record, a deadlock between instances (opposite key order across batches) aborts
  one batch, which the runner retries.
- Failure policy: content that does not normalise (a URL, IP, phone or e-mail address), a time more
  than a day ahead, an impossible victim age or a date of birth after the receipt (the rules
  ``pipeline.prioritize.logic.validate`` would dead-letter) is a
  ``ReportRejected(reason_code="invalid_field", field=...)`` on RECEIVED; an event that is not a
  well-formed ``ReportSubmitted`` (wrong type, report id not derived from its submission id) raises
  ``DomainError`` and the runner dead-letters it with the reason; undecodable bytes likewise. Any other
  error aborts the batch, which the runner retries.
- Exactly once: the runner commits the database transaction, then the Kafka transaction (outputs and
  offsets together); a crash between the two replays the batch, which the table above makes idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import serde
from pipeline.errors import DomainError, SerdeError
from pipeline.ingest import logic, tables
from pipeline.logging import get_logger
from pipeline.runtime import Context, Item, Output, Refusal, StageSpec
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED

log = get_logger(stage="ingest")

_RECEIVE = (
    "SELECT seq, received_at, linked_to, reporters_count, same_submission "
    "FROM ingest_receive(%s, %s, %s, %s, %s)"
)

# A run's reads and its numbers, in one round trip after its locks (see sql/021_ingest_lock_keys.sql).
# Arrays go in binary (%b): psycopg dumps a 2,000-element text array about 5 times faster so.
_LOCK_KEYS = "SELECT ingest_lock_keys(%b::text[])"
_READ_REPORTS = (
    "SELECT report_id, submission_id, digest, received_at, seq, linked_to, reporters_count "
    "FROM ingest_reports WHERE report_id = ANY(%b::uuid[])"
)
_READ_HEADS = (
    "SELECT h.link_key, h.first_report_id, h.first_seq, h.reports, o.closed_at IS NULL, o.report_id IS NOT NULL "
    "FROM ingest_link_heads h LEFT JOIN ingest_reports o ON o.report_id = h.first_report_id "
    "WHERE h.link_key = ANY(%b::text[])"
)
_READ_REJECTIONS = (
    "SELECT report_id, digest, rejected_at FROM ingest_rejections WHERE report_id = ANY(%b::uuid[])"
)
_DRAW_NUMBERS = "SELECT nextval('ingest_report_seq') FROM generate_series(1, %s::integer)"
# A run's writes, in one round trip; each counts what it wrote, so a row that another writer changed
# since the reads (or a report it numbered meanwhile) fails the run instead of going unnoticed.
_WRITE_REPORTS = """
WITH ins AS (
    INSERT INTO ingest_reports (report_id, seq, submission_id, digest, received_at, linked_to, reporters_count)
    SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[], %b::timestamptz[], %b::uuid[],
                         %b::integer[])
    ON CONFLICT (report_id) DO NOTHING RETURNING 1
)
SELECT count(*) FROM ins
"""
_WRITE_KEYS = """
WITH ins AS (
    INSERT INTO ingest_link_keys (link_key, report_id, seq)
    SELECT * FROM unnest(%b::text[], %b::uuid[], %b::bigint[])
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT count(*) FROM ins
"""
_WRITE_NEW_HEADS = """
WITH ins AS (
    INSERT INTO ingest_link_heads (link_key, first_report_id, first_seq, reports)
    SELECT * FROM unnest(%b::text[], %b::uuid[], %b::bigint[], %b::integer[]) AS u ORDER BY 1
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT count(*) FROM ins
"""
_WRITE_HEAD_COUNTS = """
WITH upd AS (
    UPDATE ingest_link_heads h SET reports = u.reports
    FROM unnest(%b::text[], %b::integer[], %b::integer[]) AS u (link_key, was, reports)
    WHERE h.link_key = u.link_key AND h.reports = u.was
    RETURNING 1
)
SELECT count(*) FROM upd
"""
_WRITE_REJECTIONS = """
WITH ins AS (
    INSERT INTO ingest_rejections (report_id, digest, rejected_at)
    SELECT * FROM unnest(%b::uuid[], %b::bytea[], %b::timestamptz[])
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT count(*) FROM ins
"""

_REJECTION = """
WITH ins AS (
    INSERT INTO ingest_rejections (report_id, digest, rejected_at) VALUES (%(rid)s, %(digest)s, %(now)s)
    ON CONFLICT DO NOTHING RETURNING rejected_at
)
SELECT rejected_at FROM ins
UNION ALL
SELECT rejected_at FROM ingest_rejections WHERE report_id = %(rid)s AND digest = %(digest)s
LIMIT 1
"""


def _now() -> datetime:
    # Avro keeps milliseconds: store what the wire will carry, so a replay re-emits equal events.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _digest(event: ev.ReportSubmitted) -> bytes:
    return hashlib.sha256(serde.encode(event)).digest()


def _submitted(event: Any) -> ev.ReportSubmitted:
    """The event as a well-formed ``ReportSubmitted``, or the ``DomainError`` the runner dead-letters."""
    match event:
        case ev.ReportSubmitted():
            pass
        case _:
            raise DomainError(
                f"the submitted topic carries ReportSubmitted only, not {type(event).__name__}",
                reason="unexpected_event",
                field="envelope.event_type",
            )
    logic.check_submitted(event)
    return event


def receive(event: Any, conn: Any, *, prefix: str = "CT") -> ev.ReportReceived | ev.ReportRejected:
    """Receive one submission against the ingest tables (inside the caller's transaction)."""
    event = _submitted(event)
    digest = _digest(event)
    report_id = event.envelope.report_id
    try:
        content = logic.normalized_content(event, now=_now())
    except DomainError as exc:
        return _reject(event, conn, digest, reason_code="invalid_field", message=str(exc), field=exc.field)

    # One round trip: number the report (or read its row back), record its link keys, find its link.
    row = conn.execute(
        _RECEIVE, (report_id, event.submission_id, digest, _now(), list(content.link_keys)), prepare=True
    ).fetchone()
    seq, received_at, linked_to, reporters_count, same_submission = row
    received_at = received_at.astimezone(UTC)
    if not same_submission:
        return _reject(
            event,
            conn,
            digest,
            reason_code=ev.DUPLICATE_SUBMISSION,
            message=_duplicate_message(event, seq, received_at, prefix),
            field="submission_id",
            duplicate_of=report_id,
        )
    # A first receipt, or the same record again (a replayed batch): either way, the row decides.
    return _numbered(event, content, seq, received_at, linked_to, reporters_count, prefix)


def _duplicate_message(event: ev.ReportSubmitted, seq: int, received_at: datetime, prefix: str) -> str:
    number = logic.report_number(seq, received_at, prefix)
    return f"submission {event.submission_id} was already received as report {number}"


def _numbered(  # noqa: PLR0917 - the columns of the report's row
    event: ev.ReportSubmitted,
    content: logic.Content,
    seq: int,
    received_at: datetime,
    linked_to: Any,
    reporters_count: int,
    prefix: str,
) -> ev.ReportReceived:
    numbering = logic.Numbering(
        report_number=logic.report_number(seq, received_at, prefix),
        received_at=received_at,
        linked_to=str(linked_to) if linked_to is not None else None,
        reporters_count=int(reporters_count),
    )
    return logic.received(event, content, numbering)


def _reject(
    event: ev.ReportSubmitted,
    conn: Any,
    digest: bytes,
    *,
    reason_code: str,
    message: str,
    field: str | None,
    duplicate_of: str | None = None,
) -> ev.ReportRejected:
    row = conn.execute(
        _REJECTION, {"rid": event.envelope.report_id, "digest": digest, "now": _now()}
    ).fetchone()
    return _rejection(
        event,
        digest,
        row[0],
        reason_code=reason_code,
        message=message,
        field=field,
        duplicate_of=duplicate_of,
    )


def _rejection(
    event: ev.ReportSubmitted,
    digest: bytes,
    rejected_at: datetime,
    *,
    reason_code: str,
    message: str,
    field: str | None,
    duplicate_of: str | None = None,
) -> ev.ReportRejected:
    return logic.rejected(
        event,
        reason_code=reason_code,
        message=message,
        field=field,
        now=rejected_at.astimezone(UTC),
        discriminator=f"{reason_code}:{digest.hex()}",
        duplicate_of=duplicate_of,
    )


@dataclass(frozen=True, slots=True)
class _Submission:
    """A well-formed submission of a run, before the database: its digest, receipt time and content
    (or why its content is invalid)."""

    event: ev.ReportSubmitted
    digest: bytes
    now: datetime
    content: logic.Content | None
    invalid: DomainError | None

    @property
    def keys(self) -> tuple[str, ...]:
        return () if self.content is None else self.content.link_keys


@dataclass(frozen=True, slots=True)
class _Applied:
    """What the tables said about a submission of the run: its row (unless invalid), and when it was
    rejected (invalid, or a resubmission: ``same_submission`` False)."""

    row: tables.Report | None
    same_submission: bool
    rejected_at: datetime | None


def receive_batch(
    events: Sequence[Any], conn: Any, *, prefix: str = "CT"
) -> list[ev.ReportReceived | ev.ReportRejected | Refusal]:
    """Receive a run of submissions in a few round trips (inside the caller's transaction).

    One result per event, in order: what ``receive`` on each in turn would return, or the error it would
    raise for a refused one. The run locks its link keys, reads the rows it needs and draws numbers,
    applies ``ingest_receive``'s rules to them in the run's order (``pipeline.ingest.tables``), and
    writes what changed; so numbering, links, counts, resubmissions, copies of one
    event within the run and replays of a committed run come out as they do one by one.
    """
    results: list[ev.ReportReceived | ev.ReportRejected | Refusal | None] = [None] * len(events)
    run: list[tuple[int, _Submission]] = []
    for i, raw in enumerate(events):
        try:
            event = _submitted(raw)
            digest = _digest(event)
        except (DomainError, SerdeError) as exc:
            results[i] = exc
            continue
        now = _now()
        try:
            content, invalid = logic.normalized_content(event, now=now), None
        except DomainError as exc:
            content, invalid = None, exc
        run.append((i, _Submission(event, digest, now, content, invalid)))
    if run:
        subs = [sub for _i, sub in run]
        view, numbers = _read(conn, subs)
        applied = [_apply(view, sub) for sub in subs]
        view.number(numbers)
        _write(conn, view)
        for (i, sub), done in zip(run, applied, strict=True):
            results[i] = _outcome(sub, done, prefix)
    out = [r for r in results if r is not None]
    if len(out) != len(events):
        raise RuntimeError("a submission of the run was left without a result")
    return out


def _read(conn: Any, subs: Sequence[_Submission]) -> tuple[tables.RunView, list[int]]:
    """The run's view of the tables, and a number drawn for each submission that will reach
    ``RunView.receive`` (those with valid content), in one round trip."""
    ids = list(dict.fromkeys(sub.event.envelope.report_id for sub in subs))
    keys = list(dict.fromkeys(k for sub in subs for k in sub.keys))
    calls = sum(1 for sub in subs if sub.content is not None)
    with conn.pipeline():
        conn.execute(_LOCK_KEYS, (keys,), prepare=True)
        reports = conn.execute(_READ_REPORTS, (ids,), prepare=True)
        heads = conn.execute(_READ_HEADS, (keys,), prepare=True)
        rejections = conn.execute(_READ_REJECTIONS, (ids,), prepare=True)
        # Drawn after the locks and reads: above the number of every head the run read.
        drawn = conn.execute(_DRAW_NUMBERS, (calls,), prepare=True)
    view = tables.RunView.of(
        (
            tables.Report(
                str(rid), sub_id, bytes(digest), at.astimezone(UTC), int(seq), _str(linked), int(count)
            )
            for rid, sub_id, digest, at, seq, linked, count in reports.fetchall()
        ),
        (
            tables.Head(
                key,
                str(first),
                (0, int(first_seq)),
                int(count),
                first_open=bool(is_open),
                first_found=bool(found),
                read_reports=int(count),
            )
            for key, first, first_seq, count, is_open, found in heads.fetchall()
        ),
        {(str(rid), bytes(digest)): at.astimezone(UTC) for rid, digest, at in rejections.fetchall()},
    )
    return view, [int(r[0]) for r in drawn.fetchall()]


def _apply(view: tables.RunView, sub: _Submission) -> _Applied:
    report_id = sub.event.envelope.report_id
    if sub.invalid is not None:
        return _Applied(None, False, view.rejected_at(report_id, sub.digest, sub.now))
    row, same = view.receive(report_id, sub.event.submission_id, sub.digest, sub.now, sub.keys)
    return _Applied(row, same, None if same else view.rejected_at(report_id, sub.digest, sub.now))


def _write(conn: Any, view: tables.RunView) -> None:
    new = view.new_reports
    keys = view.new_keys
    created = [h for h in view.changed_heads.values() if h.read_reports is None]
    counted = [h for h in view.changed_heads.values() if h.read_reports is not None]
    rejections = view.new_rejections
    writes = [
        (
            _WRITE_REPORTS,
            (
                [r.report_id for r in new],
                [r.seq for r in new],
                [r.submission_id for r in new],
                [r.digest for r in new],
                [r.received_at for r in new],
                [r.linked_to for r in new],
                [r.reporters_count for r in new],
            ),
            len(new),
            "ingest_reports",
        ),
        (
            _WRITE_KEYS,
            ([k for k, _r in keys], [r.report_id for _k, r in keys], [r.seq for _k, r in keys]),
            len(keys),
            "ingest_link_keys",
        ),
        (
            _WRITE_NEW_HEADS,
            (
                [h.link_key for h in created],
                [h.first_report_id for h in created],
                [h.first_row.seq if h.first_row is not None else None for h in created],
                [h.reports for h in created],
            ),
            len(created),
            "ingest_link_heads (new)",
        ),
        (
            _WRITE_HEAD_COUNTS,
            ([h.link_key for h in counted], [h.read_reports for h in counted], [h.reports for h in counted]),
            len(counted),
            "ingest_link_heads (counts)",
        ),
        (
            _WRITE_REJECTIONS,
            (
                [r for r, _d, _a in rejections],
                [d for _r, d, _a in rejections],
                [a for _r, _d, a in rejections],
            ),
            len(rejections),
            "ingest_rejections",
        ),
    ]
    with conn.pipeline():
        cursors = [(conn.execute(q, params, prepare=True), n, table) for q, params, n, table in writes if n]
    for cur, expected, table in cursors:
        wrote = cur.fetchone()[0]
        if wrote != expected:
            # Another writer got there between the reads and the writes: the runner aborts this
            # transaction and receives the run again one report at a time.
            raise RuntimeError(
                f"{table}: wrote {wrote} rows of {expected}; changed meanwhile by another writer"
            )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _outcome(sub: _Submission, done: _Applied, prefix: str) -> ev.ReportReceived | ev.ReportRejected:
    event = sub.event
    if sub.invalid is not None and done.rejected_at is not None:
        return _rejection(
            event,
            sub.digest,
            done.rejected_at,
            reason_code="invalid_field",
            message=str(sub.invalid),
            field=sub.invalid.field,
        )
    row = done.row
    if row is None or row.seq is None or sub.content is None:
        raise RuntimeError("a received submission without its numbered row")
    if not done.same_submission and done.rejected_at is not None:
        return _rejection(
            event,
            sub.digest,
            done.rejected_at,
            reason_code=ev.DUPLICATE_SUBMISSION,
            message=_duplicate_message(event, row.seq, row.received_at, prefix),
            field="submission_id",
            duplicate_of=event.envelope.report_id,
        )
    return _numbered(event, sub.content, row.seq, row.received_at, row.linked_to, row.reporters_count, prefix)


def spec(settings: Settings) -> StageSpec:
    prefix = settings.extra.get("ingest_report_prefix", "CT")

    def handle(event: Any, ctx: Context) -> Sequence[Output]:
        out = receive(event, ctx.db, prefix=prefix)
        if isinstance(out, ev.ReportRejected):
            _log_rejected(out)
        return [Output(RECEIVED, out)]

    def handle_batch(items: Sequence[Item], ctx: Context) -> list[Sequence[Output] | Refusal]:
        results: list[Sequence[Output] | Refusal] = []
        for out in receive_batch([item.event for item in items], ctx.db, prefix=prefix):
            if isinstance(out, DomainError | SerdeError):
                results.append(out)
                continue
            if isinstance(out, ev.ReportRejected):
                _log_rejected(out)
            results.append([Output(RECEIVED, out)])
        return results

    return StageSpec(
        name="ingest", inputs=(SUBMITTED,), handle=handle, handle_batch=handle_batch, uses_db=True
    )


def _log_rejected(out: ev.ReportRejected) -> None:
    # info, unlike the per-report lines of the other stages (debug): only refused submissions get it.
    log.info(
        "report_rejected", report_id=out.envelope.report_id, reason_code=out.reason_code, field=out.field
    )
