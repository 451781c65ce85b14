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
- Failure policy: a record that is not an event, an unexpected event type, or a report the rules cannot
  rank (``DomainError``: no receipt time, an impossible age, a self-link, a report id received twice)
  goes to ``tipline.deadletter.prioritize.v1`` with the reason in its headers; any other error retries
  the batch (the runner's policy).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import serde
from pipeline.logging import get_logger
from pipeline.prioritize.logic import PendingRaise, decide
from pipeline.runtime import Context, Output, StageSpec
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
        rows = self.conn.execute(
            "SELECT target_report_id, source_event_id, level, reasons FROM prioritize_pending_raise "
            "WHERE target_report_id = %s ORDER BY level, recorded_at, source_event_id",
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


def _decode(payload: bytes) -> ev.ReportPrioritized:
    event = serde.decode(payload)
    if not isinstance(event, ev.ReportPrioritized):
        raise TypeError(f"prioritize_emitted holds a {type(event).__name__}, not a ReportPrioritized")
    return event


def handle(event: Any, ctx: Context) -> list[Output]:
    """Rank one received report; emit its prioritization (and a raise of the report it links to)."""
    outputs = decide(event, PgState(ctx.db), datetime.now(UTC))
    for out in outputs:
        log.info(
            "report_prioritized",
            report_id=out.envelope.report_id,
            event_id=out.envelope.event_id,
            level=out.level,
            reasons=list(out.reasons),
            supersedes=out.supersedes,
        )
    return [Output(lane(o.level), o) for o in outputs]


def spec(settings: Settings) -> StageSpec:
    return StageSpec(name="prioritize", inputs=(RECEIVED,), handle=handle, uses_db=True)
