"""The ingest stage (step 3): the secure server receives, numbers, normalises and links each report.

- Input topic: ``SUBMITTED`` (``ReportSubmitted``, from the HTTP endpoint, the phone line and intake
  systems). Output topic: ``RECEIVED`` (``ReportReceived``, or ``ReportRejected``). Key: the report id.
- Numbering: ``CT-<year>-<seq>`` from the ingest-owned sequence; one row per report in
  ``ingest_reports`` (keyed by report id) holds its number, receipt time and link, so a replayed batch
  reads the row back and emits the very same ``ReportReceived`` (same event id, number and time).
- Resubmission: a second submission with the same submission id (same report id) whose bytes differ
  from the numbered one never makes a second report: it is a ``ReportRejected(reason_code=
  "duplicate_submission", duplicate_of=<report id>)``, whose id is derived from a digest of the
  submission (deterministic; each distinct resubmission is recorded once, for auditors). A
  byte-identical record is indistinguishable from a redelivery and yields the same event again (same
  event id), which downstream consumers treat as one.
- Linking: a report whose normalised URLs or file hashes match an earlier open report gets
  ``linked_to`` = the earliest such report and ``reporters_count`` = how many open reports share them
  so far (``ingest_link_keys``, keyed by (key, report id)). Closing is not wired yet: a report counts as
  open unless ``ingest_reports.closed_at`` is set, which nothing sets in this version. Two instances
  handling reports with the same URL at the same instant may each miss the other (their transactions
  do not see each other); the count is then low by one, never a duplicate report.
- Failure policy: content that does not normalise (a URL, IP, phone or e-mail address) is a
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
from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import serde
from pipeline.errors import DomainError
from pipeline.ingest import logic
from pipeline.logging import get_logger
from pipeline.runtime import Context, Output, StageSpec
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED

log = get_logger(stage="ingest")

_INSERT_REPORT = """
INSERT INTO ingest_reports (report_id, submission_id, digest, received_at)
VALUES (%s, %s, %s, %s)
ON CONFLICT (report_id) DO NOTHING
RETURNING seq
"""

_NUMBER_AND_LINK = """
WITH ins AS (
    INSERT INTO ingest_link_keys (link_key, report_id, seq)
    SELECT k, %(rid)s, %(seq)s FROM unnest(%(keys)s::text[]) AS k
    ON CONFLICT DO NOTHING
), prior AS (
    SELECT l.report_id, min(l.seq) AS first_seq
    FROM ingest_link_keys l JOIN ingest_reports r ON r.report_id = l.report_id
    WHERE l.link_key = ANY(%(keys)s::text[]) AND l.seq < %(seq)s AND r.closed_at IS NULL
    GROUP BY l.report_id
)
UPDATE ingest_reports
SET report_number = %(num)s,
    linked_to = (SELECT report_id FROM prior ORDER BY first_seq LIMIT 1),
    reporters_count = 1 + (SELECT count(*) FROM prior)
WHERE report_id = %(rid)s
RETURNING linked_to, reporters_count
"""

_EXISTING = """
SELECT digest, report_number, received_at, linked_to, reporters_count
FROM ingest_reports WHERE report_id = %s
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


def receive(event: Any, conn: Any, *, prefix: str = "CT") -> ev.ReportReceived | ev.ReportRejected:
    """Receive one submission against the ingest tables (inside the caller's transaction)."""
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
    digest = _digest(event)
    report_id = event.envelope.report_id
    try:
        content = logic.normalized_content(event)
    except DomainError as exc:
        return _reject(event, conn, digest, reason_code="invalid_field", message=str(exc), field=exc.field)

    now = _now()
    row = conn.execute(_INSERT_REPORT, (report_id, event.submission_id, digest, now)).fetchone()
    if row is not None:
        seq = int(row[0])
        number = logic.report_number(seq, now, prefix)
        linked = conn.execute(
            _NUMBER_AND_LINK, {"rid": report_id, "seq": seq, "keys": list(content.link_keys), "num": number}
        ).fetchone()
        numbering = logic.Numbering(
            report_number=number,
            received_at=now,
            linked_to=str(linked[0]) if linked[0] is not None else None,
            reporters_count=int(linked[1]),
        )
        return logic.received(event, content, numbering)

    stored = conn.execute(_EXISTING, (report_id,)).fetchone()
    if bytes(stored[0]) == digest:
        # The same record again: a replayed batch. Emit exactly what was emitted the first time.
        numbering = logic.Numbering(
            report_number=stored[1],
            received_at=stored[2].astimezone(UTC),
            linked_to=str(stored[3]) if stored[3] is not None else None,
            reporters_count=int(stored[4]),
        )
        return logic.received(event, content, numbering)
    return _reject(
        event,
        conn,
        digest,
        reason_code="duplicate_submission",
        message=f"submission {event.submission_id} was already received as report {stored[1]}",
        field="submission_id",
        duplicate_of=report_id,
    )


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
    return logic.rejected(
        event,
        reason_code=reason_code,
        message=message,
        field=field,
        now=row[0].astimezone(UTC),
        discriminator=f"{reason_code}:{digest.hex()}",
        duplicate_of=duplicate_of,
    )


def spec(settings: Settings) -> StageSpec:
    prefix = settings.extra.get("ingest_report_prefix", "CT")

    def handle(event: Any, ctx: Context) -> Sequence[Output]:
        out = receive(event, ctx.db, prefix=prefix)
        if isinstance(out, ev.ReportRejected):
            log.info(
                "report_rejected",
                report_id=out.envelope.report_id,
                reason_code=out.reason_code,
                field=out.field,
            )
        return [Output(RECEIVED, out)]

    return StageSpec(name="ingest", inputs=(SUBMITTED,), handle=handle, uses_db=True)
