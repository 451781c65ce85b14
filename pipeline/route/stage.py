"""Step 7 stage: referral to police, INHOPE hotlines and child protection; the end of every report.

- Input: ``tipline.report.assessed.v1`` (``ReportAssessed``).
- Output: ``tipline.report.referred.v1`` (one ``ReportReferred`` per recipient),
  ``tipline.report.followup.v1`` (``FollowUpRequested``, when a reporter who left contact details is owed
  a message; the encrypted contact travels as it came, only the follow-up step decrypts it) and
  ``tipline.report.closed.v1`` (one ``ReportClosed`` per report).
- Key: the report id, on every output.
- Rules: ``pipeline.route.logic`` (pure); hosts located by ``pipeline.route.resolve`` (a ``Resolver``:
  the system resolver with a short deadline by default, a fixed table in tests and the demo; countries
  from the offline ``iptocc``); tables from ``pipeline/route/data`` or the folder named by
  ``TIPLINE_ROUTE_TABLES`` (``Settings.route_tables``), loaded once when the spec is built: a bad table
  stops the stage with one sentence before any record is read.

Idempotency (no second referral to a recipient, no second close, ever), with state in PostgreSQL
(``route_emitted``: one row per report and emit key - a recipient, ``followup`` or ``close`` - holding the
event id, the causing assessment's id and the encoded event; a stored follow-up holds the reporter's
contact exactly as it came, encrypted, and this step never has the key):

1. If rows caused by THIS assessment event exist, this is a replay: the earlier attempt's database
   transaction committed but its Kafka transaction may not have. The stored records are re-emitted as
   they are (same ids, same bytes), and nothing else, so the replayed Kafka transaction carries exactly
   what the first one did, whether or not that one became visible.
2. Otherwise the rules run, and each planned event is inserted with ``ON CONFLICT (report_id, emit_key)
   DO NOTHING``; the inserted ones are emitted. A key already taken by a DIFFERENT assessment emits
   nothing: a superseding assessment never refers a recipient twice nor closes a report twice, but does
   reach a recipient it adds. A key taken by THIS assessment (a fenced predecessor instance committed
   the row while this one was planning: the insert waited on its lock, then found the row) re-emits the
   stored record, as in step 1.

Why this order is exactly-once: the runner commits the database transaction just before the Kafka
transaction that carries the outputs and the input offsets. If the Kafka transaction does not commit
(the process dies between the two, or the broker refuses the commit and the runner aborts and rewinds),
the input is consumed again (its offset was not committed) and step 1 re-emits the very records that
were lost with the aborted Kafka transaction. If both commit, the input is never handed to this consumer
group again. If the database transaction fails, nothing was emitted and the batch is retried. A record
that the broker holds twice (the same assessment produced twice) also takes step 1: the second copy
re-emits records whose event ids are identical to the first, so a reader that keys on event id (every
projection) counts one referral; the runner hands the handler no offset to tell a replay from such a
copy.

Time: hosts are resolved in parallel within one 1.5 s budget per report (``SocketResolver``); a host that
does not answer in time goes to the NCECC like one that does not resolve. Batches hold at most 16
records so that even a batch of slow reports commits within the Kafka transaction timeout.

Failure policy: a record that is not a ``ReportAssessed`` raises ``DomainError``; the runner dead-letters
it to ``tipline.deadletter.route.v1`` with the reason in the headers. Content that cannot be placed (an
unparseable URL, a host that does not resolve, an address in no country, a province code that does not
exist) is not an error: it is referred to the NCECC with the reason recorded. A database error aborts
the batch, which the runner retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from pipeline import serde
from pipeline.events import Determination, FollowUpRequested, ReportAssessed, ReportClosed, ReportReferred
from pipeline.logging import get_logger
from pipeline.route import logic
from pipeline.route.logic import RouteEvent
from pipeline.route.resolve import Resolver, SocketResolver, demo_resolver, locate_all
from pipeline.route.tables import Tables, load_tables
from pipeline.route.templates import check_templates
from pipeline.runtime import Context, Handler, Output, StageSpec
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLOSED, FOLLOWUP, REFERRED, TopicSpec

STAGE = "route"
BATCH_SIZE = 16
"""Small batches: each report may wait up to the resolver's 1.5 s budget for DNS, and a batch must commit
well within the runner's 30 s Kafka transaction timeout (16 x 1.5 s = 24 s in the worst case)."""
TABLE = sql.Identifier("route_emitted")
log = get_logger(stage=STAGE)

_TOPIC_OF: dict[str, TopicSpec] = {
    "ReportReferred": REFERRED,
    "FollowUpRequested": FOLLOWUP,
    "ReportClosed": CLOSED,
}


def _replayed(db: Any, assessed: ReportAssessed, source: str | None) -> list[RouteEvent] | None:
    """What this assessment already routed: the stored events when ``source`` is the record they were
    decided from (a replayed batch: emit them again, same ids), an empty list when they came from another
    record (a second copy of the same assessment on the topic: emit nothing), None when it is new."""
    rows = db.execute(
        sql.SQL(
            "SELECT payload, source FROM {} WHERE report_id = %s AND causation_id = %s ORDER BY seq"
        ).format(TABLE),
        (assessed.envelope.report_id, assessed.envelope.event_id),
    ).fetchall()
    if not rows:
        return None
    if source is not None and all(row[1] is not None and row[1] != source for row in rows):
        return []
    stored = [serde.decode(bytes(row[0])) for row in rows]
    return [e for e in stored if isinstance(e, ReportReferred | FollowUpRequested | ReportClosed)]


def _claim(
    db: Any, assessed: ReportAssessed, seq: int, event: RouteEvent, source: str | None
) -> RouteEvent | None:
    """Record the event for its emit key and return what to emit: the event, the record this same
    assessment stored for that key earlier (a replay, or a fenced predecessor that committed the row while
    this instance was planning), or None when another assessment already took the key."""
    key = logic.emit_key(event)
    inserted = db.execute(
        sql.SQL(
            "INSERT INTO {} (report_id, emit_key, event_id, event_type, causation_id, seq, payload, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (report_id, emit_key) DO NOTHING RETURNING event_id"
        ).format(TABLE),
        (
            assessed.envelope.report_id,
            key,
            event.envelope.event_id,
            event.envelope.event_type,
            assessed.envelope.event_id,
            seq,
            serde.encode(event),
            source,
        ),
    ).fetchone()
    if inserted is not None:
        return event
    existing = db.execute(
        sql.SQL("SELECT causation_id, payload FROM {} WHERE report_id = %s AND emit_key = %s").format(TABLE),
        (assessed.envelope.report_id, key),
    ).fetchone()
    if existing is None or existing[0] != assessed.envelope.event_id:
        return None
    stored = serde.decode(bytes(existing[1]))
    return stored if isinstance(stored, ReportReferred | FollowUpRequested | ReportClosed) else None


def make_handler(tables: Tables, resolver: Resolver) -> Handler:
    """The runner's handler: locate, decide, keep each emit key once, and log facts (never a URL)."""

    def handle(event: object, ctx: Context) -> Sequence[Output]:
        assessed = logic.require_assessment(event)
        replay = _replayed(ctx.db, assessed, ctx.source)
        if replay == []:
            log.info(
                "route_copy_ignored", report_id=assessed.envelope.report_id, cause=assessed.envelope.event_id
            )
            return []
        if replay:
            log.info("route_replayed", report_id=assessed.envelope.report_id, events=len(replay))
            return [Output(_TOPIC_OF[e.envelope.event_type], e) for e in replay]
        located = (
            locate_all(logic.targets(assessed), resolver)
            if assessed.determination is Determination.POTENTIALLY_ILLEGAL
            else {}
        )
        planned = logic.decide(assessed, tables, located, datetime.now(UTC))
        outputs: list[Output] = []
        skipped: list[str] = []
        for seq, out in enumerate(planned):
            emitted = _claim(ctx.db, assessed, seq, out, ctx.source)
            if emitted is not None:
                outputs.append(Output(_TOPIC_OF[emitted.envelope.event_type], emitted))
            else:
                skipped.append(logic.emit_key(out))
        _log(assessed, outputs, skipped)
        return outputs

    return handle


def _log(assessed: ReportAssessed, outputs: list[Output], skipped: list[str]) -> None:
    report_id = assessed.envelope.report_id
    for out in outputs:
        match out.event:
            case ReportReferred() as referred:
                log.info(
                    "report_referred",
                    report_id=report_id,
                    event_id=referred.envelope.event_id,
                    recipient=logic.emit_key(referred),
                    domestic=referred.recipient.domestic,
                    verified=referred.recipient.verified,
                    urls=len(referred.urls),
                )
            case FollowUpRequested() as follow_up:
                log.info(
                    "follow_up_requested",
                    report_id=report_id,
                    kind=follow_up.kind.value,
                    template=follow_up.message_template,
                )
            case ReportClosed() as closed:
                log.info("report_closed", report_id=report_id, outcome=closed.outcome.value)
            case _:
                raise TypeError(f"not a route event: {type(out.event).__name__}")
    if skipped:
        log.info("route_already_done", report_id=report_id, cause=assessed.envelope.event_id, keys=skipped)


def spec(
    settings: Settings,
    *,
    tables_dir: Path | None = None,
    resolver: Resolver | None = None,
) -> StageSpec:
    """The route stage: tables from ``tables_dir`` (default ``settings.route_tables``, else the packaged
    data), hosts located by ``resolver`` (default the system resolver, 1.5 s per report)."""
    tables = load_tables(tables_dir if tables_dir is not None else settings.route_tables)
    check_templates()
    if resolver is None:
        resolver = demo_resolver() if settings.resolver == "demo" else SocketResolver()
    return StageSpec(
        name=STAGE,
        inputs=(ASSESSED,),
        handle=make_handler(tables, resolver),
        uses_db=True,
        batch_size=BATCH_SIZE,
    )
