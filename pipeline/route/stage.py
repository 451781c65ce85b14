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
event id, the causing assessment's id, the encoded event and the input record it was decided from
(``topic:partition:offset``); a stored follow-up holds the reporter's contact exactly as it came,
encrypted, and this step never has the key):

1. If rows caused by THIS assessment event exist, it was routed before. When they were decided from this
   very record, this is a replay: the earlier attempt's database transaction committed but its Kafka
   transaction may not have. The stored records are re-emitted as they are (same ids, same bytes), and
   nothing else, so the replayed Kafka transaction carries exactly what the first one did, whether or not
   that one became visible. When they came from another record, this is a second copy of the same
   assessment on the topic (produced twice): it emits nothing, so no record reaches a topic twice.
2. Otherwise the rules run, and each planned event is inserted with ``ON CONFLICT (report_id, emit_key)
   DO NOTHING``; the inserted ones are emitted. A key already taken by a DIFFERENT assessment emits
   nothing: a superseding assessment (an analyst's revision) never refers a recipient twice nor closes a
   report twice, but does reach a recipient it adds. A key taken by THIS assessment (a fenced
   predecessor instance committed the row while this one was planning: the insert waited on its lock,
   then found the row) re-emits the stored record, as in step 1. Every planned event is encoded before
   any row is kept, so an event that cannot be encoded refuses the input without claiming its keys.

Why this order is exactly-once: the runner commits the database transaction just before the Kafka
transaction that carries the outputs and the input offsets. If the Kafka transaction does not commit
(the process dies between the two, or the broker refuses the commit and the runner aborts and rewinds),
the input is consumed again (its offset was not committed) and step 1 re-emits the very records that
were lost with the aborted Kafka transaction. If both commit, the input is never handed to this consumer
group again. If the database transaction fails, nothing was emitted and the batch is retried.

Batches: ``make_handler`` handles one record (the reference); ``make_batch_handler`` gives the runner the
same over a run of records with two statements for the whole run: one read of every ``route_emitted`` row
of the run's reports, and one insert of all the new rows (``unnest``, in key order). Between the two,
each input is applied in order against the rows read, updated as it goes, so an input sees what the
inputs before it in the run wrote (several assessments of one report, a copy of an assessment in the same
run) exactly as it would in the table. If the insert finds a key taken by another transaction meanwhile
(a fenced predecessor finishing the same records), the run raises ``RouteRaced``: its database
transaction is rolled back and the runner handles the records again one at a time, which sees that row.

Time: hosts are resolved in parallel within one 1.5 s budget per report (``SocketResolver``); a host that
does not answer in time goes to the NCECC like one that does not resolve. Batches hold at most 16
records so that even a batch of slow reports commits within the Kafka transaction timeout; with the
fixed table of the demo and the tests (no network) they hold up to 500.

Logs: each report's referrals, follow-up and close are logged at debug: the events are the record, on
their topics and in the read model, and at info these lines took about a tenth of the stage's time
(py-spy on ``scripts/bench_route.py --stage``). At info: a replay re-emitting stored events
(``route_replayed``), a second copy ignored (``route_copy_ignored``) and a superseding assessment finding
keys already taken (``route_already_done``): rare, and what an operator checks when asking whether a
report went out twice.

Failure policy: a record that is not a ``ReportAssessed`` raises ``DomainError``; the runner dead-letters
it to ``tipline.deadletter.route.v1`` with the reason in the headers. Content that cannot be placed (an
unparseable URL, a host that does not resolve, an address in no country, a province code that does not
exist) is not an error: it is referred to the NCECC with the reason recorded. A database error aborts
the batch, which the runner retries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from pipeline import serde
from pipeline.errors import DomainError, SerdeError
from pipeline.events import Determination, FollowUpRequested, ReportAssessed, ReportClosed, ReportReferred
from pipeline.logging import get_logger
from pipeline.route import logic
from pipeline.route.logic import RouteEvent
from pipeline.route.resolve import FixedResolver, Resolver, SocketResolver, demo_resolver, locate_all
from pipeline.route.tables import Tables, load_tables
from pipeline.route.templates import check_templates
from pipeline.runtime import BatchHandler, Context, Handler, Item, Output, Refusal, StageSpec
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLOSED, FOLLOWUP, REFERRED, TopicSpec

STAGE = "route"
BATCH_SIZE = 16
"""Small batches: each report may wait up to the resolver's 1.5 s budget for DNS, and a batch must commit
well within the runner's 30 s Kafka transaction timeout (16 x 1.5 s = 24 s in the worst case)."""
OFFLINE_BATCH_SIZE = 500
"""Batches when hosts are located from a fixed table (``FixedResolver``: the demo and the tests), which
answers from memory: no report waits on the network, so the bound above does not apply, and a batch
costs the same two statements and one Kafka transaction whatever its size."""
TABLE = sql.Identifier("route_emitted")
log = get_logger(stage=STAGE)

Clock = Callable[[], datetime]

_TOPIC_OF: dict[str, TopicSpec] = {
    "ReportReferred": REFERRED,
    "FollowUpRequested": FOLLOWUP,
    "ReportClosed": CLOSED,
}


def _now() -> datetime:
    return datetime.now(UTC)


# -- shared by both paths: what stored rows mean, what a new assessment plans ----------------------------
def _stored(payload: bytes) -> RouteEvent | None:
    event = serde.decode(bytes(payload))
    return event if isinstance(event, ReportReferred | FollowUpRequested | ReportClosed) else None


def _replay_of(rows: Sequence[tuple[bytes, str | None]], source: str | None) -> list[RouteEvent] | None:
    """What an assessment's stored rows (payload, source; in ``seq`` order) mean for the record at
    ``source``: None when there are none (a new assessment), an empty list when every row came from
    another record (a second copy of it: emit nothing), else the stored events (a replay: emit again)."""
    if not rows:
        return None
    if source is not None and all(row_source is not None and row_source != source for _, row_source in rows):
        return []
    return [e for e in (_stored(payload) for payload, _ in rows) if e is not None]


@dataclass(frozen=True, slots=True)
class _Planned:
    seq: int
    event: RouteEvent
    key: str
    payload: bytes


def _plan(assessed: ReportAssessed, tables: Tables, resolver: Resolver, now: datetime) -> list[_Planned]:
    """Locate, decide, and encode every planned event before any is claimed: an event that cannot be
    encoded refuses the assessment with no row kept (a kept row would block that recipient for good)."""
    located = (
        locate_all(logic.targets(assessed), resolver)
        if assessed.determination is Determination.POTENTIALLY_ILLEGAL
        else {}
    )
    planned = logic.decide(assessed, tables, located, now)
    return [_Planned(seq, e, logic.emit_key(e), serde.encode(e)) for seq, e in enumerate(planned)]


def _outputs(events: Sequence[RouteEvent]) -> list[Output]:
    return [Output(_TOPIC_OF[e.envelope.event_type], e) for e in events]


# -- one record at a time (the reference) ----------------------------------------------------------------
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
    return _replay_of([(bytes(row[0]), row[1]) for row in rows], source)


def _claim(db: Any, assessed: ReportAssessed, planned: _Planned, source: str | None) -> RouteEvent | None:
    """Record the event for its emit key and return what to emit: the event, the record this same
    assessment stored for that key earlier (a replay, or a fenced predecessor that committed the row while
    this instance was planning), or None when another assessment already took the key."""
    event = planned.event
    inserted = db.execute(
        sql.SQL(
            "INSERT INTO {} (report_id, emit_key, event_id, event_type, causation_id, seq, payload, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (report_id, emit_key) DO NOTHING RETURNING event_id"
        ).format(TABLE),
        (
            assessed.envelope.report_id,
            planned.key,
            event.envelope.event_id,
            event.envelope.event_type,
            assessed.envelope.event_id,
            planned.seq,
            planned.payload,
            source,
        ),
    ).fetchone()
    if inserted is not None:
        return event
    existing = db.execute(
        sql.SQL("SELECT causation_id, payload FROM {} WHERE report_id = %s AND emit_key = %s").format(TABLE),
        (assessed.envelope.report_id, planned.key),
    ).fetchone()
    if existing is None or existing[0] != assessed.envelope.event_id:
        return None
    return _stored(bytes(existing[1]))


def make_handler(tables: Tables, resolver: Resolver, *, clock: Clock = _now) -> Handler:
    """The runner's handler: locate, decide, keep each emit key once, and log facts (never a URL)."""

    def handle(event: object, ctx: Context) -> Sequence[Output]:
        assessed = logic.require_assessment(event)
        replay = _replayed(ctx.db, assessed, ctx.source)
        if replay is not None:
            _log_replay(assessed, replay)
            return _outputs(replay)
        emitted: list[RouteEvent] = []
        skipped: list[str] = []
        for planned in _plan(assessed, tables, resolver, clock()):
            claimed = _claim(ctx.db, assessed, planned, ctx.source)
            if claimed is not None:
                emitted.append(claimed)
            else:
                skipped.append(planned.key)
        _log(assessed, emitted, skipped)
        return _outputs(emitted)

    return handle


# -- a run of records at once ------------------------------------------------------------------------------
@dataclass(slots=True)
class _Row:
    causation_id: str
    payload: bytes
    source: str | None


_NewRow = tuple[str, str, str, str, str, int, bytes, str | None]
"""A row to insert: report_id, emit_key, event_id, event_type, causation_id, seq, payload, source."""


class _Emitted:
    """The ``route_emitted`` rows of a run's reports, read in one statement and then kept up to date as
    each input of the run is applied, so that every input sees what the inputs before it wrote, as it
    would one record at a time inside the same transaction."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], _Row] = {}
        self.by_cause: dict[tuple[str, str], list[_Row]] = {}

    def add(self, report_id: str, emit_key: str, row: _Row) -> None:
        self.by_key[(report_id, emit_key)] = row
        self.by_cause.setdefault((report_id, row.causation_id), []).append(row)

    @classmethod
    def read(cls, db: Any, report_ids: Sequence[str]) -> _Emitted:
        view = cls()
        if not report_ids:
            return view
        rows = db.execute(
            sql.SQL(
                "SELECT report_id, emit_key, causation_id, payload, source FROM {}"
                " WHERE report_id = ANY(%s) ORDER BY report_id, causation_id, seq"
            ).format(TABLE),
            (list(report_ids),),
        ).fetchall()
        for report_id, emit_key, causation_id, payload, source in rows:
            view.add(report_id, emit_key, _Row(causation_id, bytes(payload), source))
        return view


class RouteRaced(RuntimeError):
    """Another transaction wrote rows of a run's reports between the run's read and its write (a fenced
    predecessor finishing the same records). The run's transaction is aborted and the runner handles its
    records again one at a time, which sees those rows (the reference path)."""


_INSERT_ALL = sql.SQL(
    "INSERT INTO {} (report_id, emit_key, event_id, event_type, causation_id, seq, payload, source)"
    # Binary parameters (%b): a text-format bytea array costs 2.5 times as long to send.
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::integer[],"
    " %b::bytea[], %b::text[])"
    # In key order: two instances inserting rows of the same reports lock them in the same order.
    " ORDER BY 1, 2"
    " ON CONFLICT (report_id, emit_key) DO NOTHING RETURNING report_id"
).format(TABLE)


def _insert_all(db: Any, rows: Sequence[_NewRow]) -> None:
    if not rows:
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    inserted = db.execute(_INSERT_ALL, columns).fetchall()
    if len(inserted) != len(rows):
        raise RouteRaced(
            f"{len(rows) - len(inserted)} of {len(rows)} route_emitted rows were written by another"
            " transaction while this run was planned"
        )


def make_batch_handler(tables: Tables, resolver: Resolver, *, clock: Clock = _now) -> BatchHandler:
    """The runner's handler for a run of records: what ``make_handler``'s gives record after record, with
    one read of the run's reports' rows and one write of the new ones: two round trips a run, where one
    record at a time costs one a report plus one a planned event."""

    def handle_batch(items: Sequence[Item], ctx: Context) -> list[Sequence[Output] | Refusal]:
        report_ids = sorted(
            {item.event.envelope.report_id for item in items if isinstance(item.event, ReportAssessed)}
        )
        view = _Emitted.read(ctx.db, report_ids)
        new_rows: list[_NewRow] = []
        results: list[Sequence[Output] | Refusal] = []
        for item in items:
            try:
                results.append(_apply(item, view, new_rows, tables=tables, resolver=resolver, clock=clock))
            except (DomainError, SerdeError) as exc:
                results.append(exc)
        _insert_all(ctx.db, new_rows)
        return results

    return handle_batch


def _apply(
    item: Item,
    view: _Emitted,
    new_rows: list[_NewRow],
    *,
    tables: Tables,
    resolver: Resolver,
    clock: Clock,
) -> list[Output]:
    """One input against the run's view, as ``handle`` against the table; new rows go to ``new_rows``."""
    assessed = logic.require_assessment(item.event)
    report_id, cause = assessed.envelope.report_id, assessed.envelope.event_id
    rows = view.by_cause.get((report_id, cause), [])
    replay = _replay_of([(row.payload, row.source) for row in rows], item.source)
    if replay is not None:
        _log_replay(assessed, replay)
        return _outputs(replay)
    emitted: list[RouteEvent] = []
    skipped: list[str] = []
    for planned in _plan(assessed, tables, resolver, clock()):
        existing = view.by_key.get((report_id, planned.key))
        if existing is None:
            view.add(report_id, planned.key, _Row(cause, planned.payload, item.source))
            envelope = planned.event.envelope
            new_rows.append(
                (
                    report_id,
                    planned.key,
                    envelope.event_id,
                    envelope.event_type,
                    cause,
                    planned.seq,
                    planned.payload,
                    item.source,
                )
            )
            emitted.append(planned.event)
            continue
        stored = _stored(existing.payload) if existing.causation_id == cause else None
        if stored is not None:
            emitted.append(stored)
        else:
            skipped.append(planned.key)
    _log(assessed, emitted, skipped)
    return _outputs(emitted)


# -- logs ----------------------------------------------------------------------------------------------------
def _log_replay(assessed: ReportAssessed, replay: list[RouteEvent]) -> None:
    # Rare (a crash before a commit, a record held twice): operators see them at info.
    if replay:
        log.info("route_replayed", report_id=assessed.envelope.report_id, events=len(replay))
    else:
        log.info(
            "route_copy_ignored", report_id=assessed.envelope.report_id, cause=assessed.envelope.event_id
        )


def _log(assessed: ReportAssessed, emitted: list[RouteEvent], skipped: list[str]) -> None:
    """Every report's outcome at debug (the events themselves are the record, on their topics and in the
    read model); a superseding assessment finding keys already taken at info."""
    report_id = assessed.envelope.report_id
    for event in emitted:
        match event:
            case ReportReferred() as referred:
                log.debug(
                    "report_referred",
                    report_id=report_id,
                    event_id=referred.envelope.event_id,
                    recipient=logic.emit_key(referred),
                    domestic=referred.recipient.domestic,
                    verified=referred.recipient.verified,
                    urls=len(referred.urls),
                )
            case FollowUpRequested() as follow_up:
                log.debug(
                    "follow_up_requested",
                    report_id=report_id,
                    kind=follow_up.kind.value,
                    template=follow_up.message_template,
                )
            case ReportClosed() as closed:
                log.debug("report_closed", report_id=report_id, outcome=closed.outcome.value)
            case _:
                raise TypeError(f"not a route event: {type(event).__name__}")
    if skipped:
        log.info("route_already_done", report_id=report_id, cause=assessed.envelope.event_id, keys=skipped)


def spec(
    settings: Settings,
    *,
    tables_dir: Path | None = None,
    resolver: Resolver | None = None,
    clock: Clock = _now,
) -> StageSpec:
    """The route stage: tables from ``tables_dir`` (default ``settings.route_tables``, else the packaged
    data), hosts located by ``resolver`` (default the system resolver, 1.5 s per report), events stamped
    by ``clock`` (tests fix it to compare records byte for byte)."""
    tables = load_tables(tables_dir if tables_dir is not None else settings.route_tables)
    check_templates()
    if resolver is None:
        resolver = demo_resolver() if settings.resolver == "demo" else SocketResolver()
    return StageSpec(
        name=STAGE,
        inputs=(ASSESSED,),
        handle=make_handler(tables, resolver, clock=clock),
        handle_batch=make_batch_handler(tables, resolver, clock=clock),
        uses_db=True,
        batch_size=OFFLINE_BATCH_SIZE if isinstance(resolver, FixedResolver) else BATCH_SIZE,
    )
