"""The ingest stage (step 3): the secure server receives, numbers, normalises and links each report.

- Input topic: ``SUBMITTED`` (``ReportSubmitted``, from the HTTP endpoint, the phone line and intake
  systems). Output topic: ``RECEIVED`` (``ReportReceived``, or ``ReportRejected``). Key: the report id.
- Numbering: ``CT-<year>-<seq>`` from the ingest-owned sequence; one row per report in
  ``ingest_reports`` (keyed by report id) holds its sequence number, receipt time and link, so a
  replayed batch reads the row back and emits the very same ``ReportReceived`` (same event id, number
  and time). One round trip per report: the PL/pgSQL function ``ingest_receive`` (``sql/``).
  Numbers are unique and increasing but may have gaps (a rolled-back batch does not return them).
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
  serialise on its head row, so counts stay exact; a deadlock between them (opposite key order across
  batches) aborts one batch, which the runner retries.
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

_RECEIVE = (
    "SELECT seq, received_at, linked_to, reporters_count, same_submission "
    "FROM ingest_receive(%s, %s, %s, %s, %s)"
)

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
            reason_code="duplicate_submission",
            message=f"submission {event.submission_id} was already received as report "
            f"{logic.report_number(seq, received_at, prefix)}",
            field="submission_id",
            duplicate_of=report_id,
        )
    # A first receipt, or the same record again (a replayed batch): either way, the row decides.
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
