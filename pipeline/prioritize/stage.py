"""Step 4 wiring: the prioritize stage.

- Input: ``tipline.report.received.v1`` (``ReportReceived``; a ``ReportRejected`` yields nothing).
- Output: ``ReportPrioritized`` onto the lane topic of its level, ``tipline.report.prioritized.p<level>.v1``
  (``PRIORITIZED[level - 1]``), keyed by report id. A raise of an earlier report (see
  ``pipeline.prioritize.logic``) goes onto the earlier report's new lane, keyed by the earlier report id.
- State: PostgreSQL tables ``prioritize_emitted`` and ``prioritize_pending_raise``
  (``sql/001_prioritize_state.sql``), written in the batch's database transaction, committed just before
  the Kafka transaction.
- Idempotency: event ids are derived from the input's id; a replayed input finds what it emitted in
  ``prioritize_emitted`` and re-emits the same bytes, so a batch replayed after a failed Kafka commit
  yields the same events. Reads of a report's state take a transaction-scoped advisory lock on its id, so
  two instances ranking a report and its linked duplicate at once cannot both miss each other.
- Record by record (``handle``, the reference: ``PgState``) that is several round trips per report. A
  run of records (``handle_batch``, what the runner uses; ``RunState``) takes the same advisory locks
  for all the run's reports and the reports they link to at once, in one global order
  (``sql/002_prioritize_lock_reports.sql``), reads their rows in the same round trip, applies the rules
  record by record in the run's order to what it read (and recorded so far), and writes what they
  recorded in a second round trip; the outputs and rows are those of ``handle``.
- Failure policy: a record that is not an event, an unexpected event type, or a report the rules cannot
  rank (``DomainError``: no receipt time, an impossible age, a self-link, a report id received twice)
  goes to ``tipline.deadletter.prioritize.v1`` with the reason in its headers; any other error retries
  the batch (the runner's policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import serde
from pipeline.errors import DomainError
from pipeline.logging import get_logger
from pipeline.prioritize.logic import MemoryState, PendingRaise, decide
from pipeline.runtime import Context, Item, Output, Refusal, StageSpec
from pipeline.settings import Settings
from pipeline.topics import PRIORITIZED, RECEIVED

log = get_logger(stage="prioritize")


def lane(level: int) -> Any:
    """The lane topic of a priority level (1 most urgent)."""
    return PRIORITIZED[level - 1]


class PgState:
    """``PriorityState`` on the stage's PostgreSQL tables, inside the batch's transaction."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _lock(self, report_id: str) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7340))", (report_id,))

    def emitted_for_cause(self, cause_event_id: str) -> list[ev.ReportPrioritized]:
        rows = self.conn.execute(
            "SELECT payload FROM prioritize_emitted WHERE cause_event_id = %s ORDER BY seq", (cause_event_id,)
        ).fetchall()
        return [_decode(bytes(r[0])) for r in rows]

    def last(self, report_id: str) -> ev.ReportPrioritized | None:
        self._lock(report_id)
        row = self.conn.execute(
            "SELECT payload FROM prioritize_emitted WHERE report_id = %s ORDER BY seq DESC LIMIT 1",
            (report_id,),
        ).fetchone()
        return None if row is None else _decode(bytes(row[0]))

    def pending_for(self, report_id: str) -> list[PendingRaise]:
        self._lock(report_id)
        # The last tie-break in byte order whatever the database's collation, as RunState sorts in Python.
        rows = self.conn.execute(
            "SELECT target_report_id, source_event_id, level, reasons FROM prioritize_pending_raise "
            'WHERE target_report_id = %s ORDER BY level, recorded_at, source_event_id COLLATE "C"',
            (report_id,),
        ).fetchall()
        return [PendingRaise(r[0], r[1], int(r[2]), tuple(r[3])) for r in rows]

    def record(self, event: ev.ReportPrioritized, cause_event_id: str) -> None:
        self.conn.execute(
            "INSERT INTO prioritize_emitted"
            " (event_id, report_id, cause_event_id, level, supersedes, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
            (
                event.envelope.event_id,
                event.envelope.report_id,
                cause_event_id,
                event.level,
                event.supersedes,
                serde.encode(event),
            ),
        )

    def add_pending(self, pending: PendingRaise) -> None:
        self.conn.execute(
            "INSERT INTO prioritize_pending_raise (target_report_id, source_event_id, level, reasons) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (target_report_id, source_event_id) DO NOTHING",
            (pending.target_report_id, pending.source_event_id, pending.level, list(pending.reasons)),
        )


# A run's reads and writes (RunState): each a set-based statement over all of the run's reports, its
# arrays in binary (%b: psycopg dumps them several times faster than in text).
_LOCK_REPORTS = "SELECT prioritize_lock_reports(%b::text[])"
_READ_BY_CAUSE = (
    "SELECT cause_event_id, payload FROM prioritize_emitted"
    " WHERE cause_event_id = ANY(%b::text[]) ORDER BY seq"
)
_READ_LATEST = (
    "SELECT DISTINCT ON (report_id) report_id, payload FROM prioritize_emitted"
    " WHERE report_id = ANY(%b::text[]) ORDER BY report_id, seq DESC"
)
# The transaction's start rides along (a raise this run records gets it as recorded_at), with a row of
# nulls when no raise waits.
_READ_PENDING = """
SELECT p.target_report_id, p.source_event_id, p.level, p.reasons, p.recorded_at, now()
FROM (SELECT 1) AS one
LEFT JOIN prioritize_pending_raise p ON p.target_report_id = ANY(%b::text[])
"""
_DRAW_SEQS = (
    "SELECT nextval(pg_get_serial_sequence('prioritize_emitted', 'seq')) FROM generate_series(1, %s::integer)"
)
_WRITE_EMITTED = """
WITH ins AS (
    INSERT INTO prioritize_emitted (seq, event_id, report_id, cause_event_id, level, supersedes, payload)
    SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::smallint[], %b::text[], %b::bytea[])
    ON CONFLICT (event_id) DO NOTHING RETURNING 1
)
SELECT count(*) FROM ins
"""
_WRITE_PENDING = (
    "INSERT INTO prioritize_pending_raise (target_report_id, source_event_id, level, reasons) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (target_report_id, source_event_id) DO NOTHING"
)


class RunState:
    """``PriorityState`` for a run of records: the rows the run needs, read at once (``read``), and what
    the rules record meanwhile, written at once after the run (``write``).

    The rules see exactly what ``PgState`` would show them record by record inside one transaction:
    what committed before the run, and what earlier records of the run recorded (a second copy of an
    event finds what the first emitted; a report linking to one ranked earlier in the run raises it).
    """

    def __init__(
        self,
        by_cause: dict[str, list[ev.ReportPrioritized]],
        latest: dict[str, ev.ReportPrioritized],
        pending: dict[str, list[tuple[datetime, PendingRaise]]],
        now: datetime,
        seqs: list[int],
    ) -> None:
        self.by_cause = by_cause
        self.latest = latest
        self.pending = pending
        self.now = now
        """The transaction's start (``now()``): when a raise recorded by this run is recorded_at."""
        self.seqs = seqs
        """Numbers drawn for ``prioritize_emitted.seq``, lowest first: the run's events take them in
        the order they are recorded, so ``ORDER BY seq`` keeps emission order as one by one."""
        self.emitted: list[tuple[ev.ReportPrioritized, str]] = []
        self.raises: list[PendingRaise] = []

    @classmethod
    def read(cls, conn: Any, received: Sequence[ev.ReportReceived]) -> RunState:
        """Lock every report the run touches (its reports and those they link to), then read their
        rows, in one round trip."""
        ids = {e.envelope.report_id for e in received}
        touched = sorted(ids | {e.body.linked_to for e in received if e.body.linked_to is not None})
        causes = list(dict.fromkeys(e.envelope.event_id for e in received))
        with conn.pipeline():
            conn.execute(_LOCK_REPORTS, (touched,), prepare=True)
            by_cause_rows = conn.execute(_READ_BY_CAUSE, (causes,), prepare=True)
            latest_rows = conn.execute(_READ_LATEST, (touched,), prepare=True)
            pending_rows = conn.execute(_READ_PENDING, (sorted(ids),), prepare=True)
            # A record emits at most two events: its own and a raise of the report it links to.
            seq_rows = conn.execute(_DRAW_SEQS, (2 * len(received),), prepare=True)
        by_cause: dict[str, list[ev.ReportPrioritized]] = {}
        for cause, payload in by_cause_rows.fetchall():
            by_cause.setdefault(cause, []).append(_decode(bytes(payload)))
        latest = {rid: _decode(bytes(payload)) for rid, payload in latest_rows.fetchall()}
        pending: dict[str, list[tuple[datetime, PendingRaise]]] = {}
        now: datetime | None = None
        for target, source, level, reasons, recorded_at, tx_now in pending_rows.fetchall():
            now = tx_now
            if target is not None:
                pending.setdefault(target, []).append(
                    (recorded_at, PendingRaise(target, source, int(level), tuple(reasons)))
                )
        if now is None:
            raise RuntimeError("the pending raises' query gave no row (it always gives the time)")
        return cls(by_cause, latest, pending, now, sorted(int(r[0]) for r in seq_rows.fetchall()))

    def emitted_for_cause(self, cause_event_id: str) -> list[ev.ReportPrioritized]:
        return list(self.by_cause.get(cause_event_id, ()))

    def last(self, report_id: str) -> ev.ReportPrioritized | None:
        return self.latest.get(report_id)

    def pending_for(self, report_id: str) -> list[PendingRaise]:
        rows = self.pending.get(report_id, [])
        # PgState's order: level, then when recorded, then source event id (byte order, COLLATE "C").
        return [p for _at, p in sorted(rows, key=lambda r: (r[1].level, r[0], r[1].source_event_id))]

    def record(self, event: ev.ReportPrioritized, cause_event_id: str) -> None:
        self.by_cause.setdefault(cause_event_id, []).append(event)
        self.latest[event.envelope.report_id] = event
        self.emitted.append((event, cause_event_id))

    def add_pending(self, pending: PendingRaise) -> None:
        rows = self.pending.setdefault(pending.target_report_id, [])
        if all(p.source_event_id != pending.source_event_id for _at, p in rows):
            rows.append((self.now, pending))
            self.raises.append(pending)

    def write(self, conn: Any) -> None:
        """What the run recorded, in one round trip; an event another writer stored meanwhile (which the
        locks should make impossible) fails the run rather than pass unnoticed."""
        if len(self.emitted) > len(self.seqs):
            raise RuntimeError(f"{len(self.emitted)} events recorded, {len(self.seqs)} numbers drawn")
        emitted = self.emitted
        with conn.pipeline():
            inserted = conn.execute(
                _WRITE_EMITTED,
                (
                    self.seqs[: len(emitted)],
                    [e.envelope.event_id for e, _c in emitted],
                    [e.envelope.report_id for e, _c in emitted],
                    [cause for _e, cause in emitted],
                    [e.level for e, _c in emitted],
                    [e.supersedes for e, _c in emitted],
                    [serde.encode(e) for e, _c in emitted],
                ),
                prepare=True,
            )
            if self.raises:
                # Rare (a link that arrives before the report it names) and each has its own list of
                # reasons, which unnest cannot spread over rows: one statement each, still one round trip.
                conn.cursor().executemany(
                    _WRITE_PENDING,
                    [(p.target_report_id, p.source_event_id, p.level, list(p.reasons)) for p in self.raises],
                )
        row = inserted.fetchone()
        if row is None or row[0] != len(emitted):
            raise RuntimeError(
                f"prioritize_emitted: stored {row} of {len(emitted)} events; written meanwhile"
            )


def _decode(payload: bytes) -> ev.ReportPrioritized:
    event = serde.decode(payload)
    if not isinstance(event, ev.ReportPrioritized):
        raise TypeError(f"prioritize_emitted holds a {type(event).__name__}, not a ReportPrioritized")
    return event


def handle(event: Any, ctx: Context) -> list[Output]:
    """Rank one received report; emit its prioritization (and a raise of the report it links to)."""
    return _outputs(decide(event, PgState(ctx.db), datetime.now(UTC)))


def handle_batch(items: Sequence[Item], ctx: Context) -> list[Sequence[Output] | Refusal]:
    """Rank a run of received reports: one round trip to lock and read, the rules record by record in
    the run's order against what was read (``RunState``), one round trip to write. Gives what ``handle``
    gives on each in turn."""
    received = [item.event for item in items if isinstance(item.event, ev.ReportReceived)]
    state = RunState.read(ctx.db, received) if received else None
    results: list[Sequence[Output] | Refusal] = []
    for item in items:
        try:
            # Without a ReportReceived in the run the rules touch no state: an empty one serves.
            outputs = decide(item.event, state or MemoryState(), datetime.now(UTC))
        except DomainError as exc:
            results.append(exc)
            continue
        results.append(_outputs(outputs))
    if state is not None:
        state.write(ctx.db)
    return results


def _outputs(events: Sequence[ev.ReportPrioritized]) -> list[Output]:
    for out in events:
        # debug: a line per report in the hot path costs the stage ~10% of its CPU; the event is the record.
        log.debug(
            "report_prioritized",
            report_id=out.envelope.report_id,
            event_id=out.envelope.event_id,
            level=out.level,
            reasons=list(out.reasons),
            supersedes=out.supersedes,
        )
    return [Output(lane(o.level), o) for o in events]


def spec(settings: Settings) -> StageSpec:
    return StageSpec(
        name="prioritize", inputs=(RECEIVED,), handle=handle, handle_batch=handle_batch, uses_db=True
    )
