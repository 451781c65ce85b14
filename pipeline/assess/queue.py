"""The analysts' work queue in PostgreSQL: enqueue, claim, show, decide. The CLI, the stage, the
simulated analysts and the tests all call these functions, so there is one way to record a decision.

* ``enqueue_classified`` (called by the stage inside its database transaction) keeps one row per
  report: a newer classification (an override, a raised level) updates the level and the payload but
  never resets a claim or a decision; a replayed event changes nothing and re-emits the same output.
  ``enqueue_classified_many`` does the same for a run of events in a few round trips (the stage's
  ``handle_batch``); the record-by-record function stays the reference it is tested against.
* ``claim`` takes the most urgent open reports (level, then arrival) with ``FOR UPDATE SKIP LOCKED``,
  so two analysts never get the same one; a claim not decided within its time-to-live becomes
  claimable again. ``claim_next`` (a person's ``analyst next``) is its one-report case; the simulated
  analysts claim runs of reports.
* ``record_decisions`` checks each request first (the report exists, nobody else holds it, it is not
  already decided unless the analyst revises, the note fits), then produces the accepted
  ``ReportAssessed`` events with an idempotent producer and waits for the broker's acknowledgement of
  all, and only then marks the rows decided, in the same database transaction that locked them. A
  refused request refuses its report only; a failure anywhere else leaves every row as it was; a retry
  of the same decision produces the same event id. ``record_decision`` (a person's ``analyst decide``)
  is its one-request case, so the checks exist once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection, errors
from psycopg.rows import dict_row

from pipeline import kafka, serde
from pipeline.assess import logic, simulated
from pipeline.db import connect
from pipeline.errors import DomainError, ServiceError, TiplineError
from pipeline.events import (
    MAX_NOTE,
    Actor,
    ActorKind,
    Determination,
    EncryptedContact,
    ReportAssessed,
    ReportClassified,
)
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, name

DEFAULT_CLAIM_TTL = timedelta(minutes=15)
DECISION_ATTEMPTS = 3
"""How often a simulated analyst tries a run of decisions that PostgreSQL rolled back (deadlock victim)."""

log = get_logger(stage="assess")

Conn = Connection[Any]


class QueueError(TiplineError):
    """A queue operation refused (unknown report, someone else's claim, already decided)."""

    exit_code = 4


class RoleError(TiplineError):
    """An identity tried something its role does not allow."""

    exit_code = 5


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- Rows -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Decision:
    assessment_event_id: str
    actor_kind: str
    actor_id: str
    determination: str
    child_may_need_protection: bool
    supersedes: str | None
    decided_at: datetime


@dataclass(frozen=True, kw_only=True)
class QueueItem:
    """One report in the queue, as an analyst or auditor sees it: no reporter contact in it."""

    report_id: str
    report_number: str
    level: int
    arrival_seq: int
    status: str
    claimed_by: str | None
    claim_expires_at: datetime | None
    decided_by: str | None
    determination: str | None
    assessment_event_id: str | None
    classified: ReportClassified
    """The classification as queued, its body without the reporter's contact."""
    reporter_left_contact: bool
    history: tuple[Decision, ...] = ()


_COLUMNS = (
    "report_id, report_number, level, arrival_seq, status, claimed_by, claim_expires_at, decided_by, "
    "determination, assessment_event_id, payload, contact_key_id IS NOT NULL AS has_contact"
)


def _item(row: dict[str, Any], history: Sequence[Decision] = ()) -> QueueItem:
    classified = serde.decode(bytes(row["payload"]))
    if not isinstance(classified, ReportClassified):  # our own table: anything else is corruption
        raise ServiceError(f"The queue row of report {row['report_id']} does not hold a classified report.")
    return QueueItem(
        report_id=row["report_id"],
        report_number=row["report_number"],
        level=row["level"],
        arrival_seq=row["arrival_seq"],
        status=row["status"],
        claimed_by=row["claimed_by"],
        claim_expires_at=row["claim_expires_at"],
        decided_by=row["decided_by"],
        determination=row["determination"],
        assessment_event_id=row["assessment_event_id"],
        classified=classified,
        reporter_left_contact=bool(row["has_contact"]),
        history=tuple(history),
    )


def _without_contact(event: ReportClassified) -> ReportClassified:
    return dataclasses.replace(event, body=dataclasses.replace(event.body, contact=None))


def _contact_columns(contact: EncryptedContact | None) -> tuple[Any, Any, Any, Any]:
    if contact is None:
        return (None, None, None, None)
    return (contact.key_id, contact.nonce, contact.ciphertext, contact.algorithm)


# --- Known-material list ----------------------------------------------------------------------------


def load_known_hashes(conn: Conn, keys: Iterable[str], *, source: str, replace: bool = False) -> int:
    """Load parsed hash keys (``logic.parse_known_hashes``) into the table; return how many are new."""
    keys = list(keys)
    with conn.transaction(), conn.cursor() as cur:
        if replace:
            cur.execute("DELETE FROM assess_known_hash")
        cur.execute(
            "INSERT INTO assess_known_hash (hash_key, source) SELECT k, %s FROM unnest(%b::text[]) AS k "
            "ON CONFLICT (hash_key) DO NOTHING",
            (source, keys),
        )
        added = cur.rowcount
    log.info("known_hashes_loaded", lines=len(keys), added=added, replaced=replace)
    return added


def known_among(conn: Conn, keys: Sequence[str]) -> frozenset[str]:
    """Which of ``keys`` are on the known-material list."""
    if not keys:
        return frozenset()
    rows = conn.execute(
        "SELECT hash_key FROM assess_known_hash WHERE hash_key = ANY(%b::text[])", (list(keys),)
    ).fetchall()
    return frozenset(r[0] for r in rows)


# --- The stage's side: enqueue ----------------------------------------------------------------------
# The statements are shared by the record-by-record path (``enqueue_classified``) and the run path
# (``enqueue_classified_many``), so both write the same rows.

_INSERT_ROW = (
    "INSERT INTO assess_queue (namespace, report_id, report_number, classification_event_id, level, "
    "arrival_seq, payload, contact_key_id, contact_nonce, contact_ciphertext, contact_algorithm, "
    "enqueued_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (namespace, report_id) DO NOTHING"
)
_INSERT_ROWS = (
    "INSERT INTO assess_queue (namespace, report_id, report_number, classification_event_id, level, "
    "arrival_seq, payload, contact_key_id, contact_nonce, contact_ciphertext, contact_algorithm, "
    "enqueued_at, updated_at) "
    "SELECT %s, r.report_id, r.report_number, r.classification_event_id, r.level, r.arrival_seq, r.payload, "
    "r.contact_key_id, r.contact_nonce, r.contact_ciphertext, r.contact_algorithm, %s, %s "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::smallint[], %b::bigint[], %b::bytea[], %b::text[], "
    "%b::bytea[], %b::bytea[], %b::text[]) AS r(report_id, report_number, classification_event_id, level, "
    "arrival_seq, payload, contact_key_id, contact_nonce, contact_ciphertext, contact_algorithm) "
    "ON CONFLICT (namespace, report_id) DO NOTHING"
)
_UPDATE_CLASSIFICATION = (
    "UPDATE assess_queue SET classification_event_id = %s, level = %s, arrival_seq = %s, payload = %s, "
    "contact_key_id = %s, contact_nonce = %s, contact_ciphertext = %s, contact_algorithm = %s, "
    "updated_at = %s WHERE namespace = %s AND report_id = %s"
)
_INSERT_SEEN = (
    "INSERT INTO assess_queue_seen (namespace, report_id, classification_event_id, supersedes, outcome, output) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_INSERT_SEEN_MANY = (
    "INSERT INTO assess_queue_seen (namespace, report_id, classification_event_id, supersedes, outcome, output) "
    "SELECT %s, * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[]) ON CONFLICT DO NOTHING"
)
# A run's decisions, one statement each (not one per report: the per-statement cost was most of the
# analysts' and the stage's database time). At most one decision per report reaches _MARK_DECIDED (the
# last of the run: an UPDATE from a join changes each row once, with whichever match comes first).
_MARK_DECIDED = (
    "UPDATE assess_queue q SET status = 'decided', claimed_by = NULL, claim_expires_at = NULL, "
    "decided_by = d.decided_by, decided_at = d.at, determination = d.determination, "
    "assessment_event_id = d.event_id, updated_at = d.at "
    "FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::text[]) "
    "AS d(report_id, decided_by, at, determination, event_id) "
    "WHERE q.namespace = %s AND q.report_id = d.report_id"
)
_INSERT_DECISION = (
    "INSERT INTO assess_decision (namespace, assessment_event_id, report_id, actor_kind, actor_id, "
    "determination, child_may_need_protection, supersedes, decided_at) "
    "SELECT %s, * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::boolean[], "
    "%b::text[], %b::timestamptz[]) ON CONFLICT DO NOTHING"
)


def _classification_columns(event: ReportClassified) -> tuple[Any, ...]:
    """classification_event_id, level, arrival_seq, payload and the four contact columns of a queue row."""
    return (
        event.envelope.event_id,
        event.level,
        event.arrival_seq,
        serde.encode(_without_contact(event)),
        *_contact_columns(event.body.contact),
    )


def enqueue_classified(
    conn: Conn, namespace: str, event: ReportClassified, now: datetime
) -> list[ReportAssessed]:
    """Put a classified report in the queue (or decide it by the automated rules); idempotent.

    Runs inside the caller's transaction. Returns the automated ``ReportAssessed`` to produce, if any;
    a replayed event returns exactly what its first handling returned.
    """
    env = event.envelope
    seen = conn.execute(
        "SELECT outcome, output FROM assess_queue_seen "
        "WHERE namespace = %s AND report_id = %s AND classification_event_id = %s",
        (namespace, env.report_id, env.event_id),
    ).fetchone()
    if seen is not None:
        return [_decode_assessed(seen[1])] if seen[1] is not None else []

    outcome, output = _apply(conn, namespace, event, now)
    conn.execute(
        _INSERT_SEEN,
        (
            namespace,
            env.report_id,
            env.event_id,
            event.supersedes,
            outcome,
            serde.encode(output) if output is not None else None,
        ),
    )
    log.info("report_enqueued", report_id=env.report_id, level=event.level, outcome=outcome)
    return [output] if output is not None else []


def _decode_assessed(raw: bytes) -> ReportAssessed:
    ev = serde.decode(bytes(raw))
    if not isinstance(ev, ReportAssessed):
        raise ServiceError("A stored automated assessment is not a ReportAssessed event.")
    return ev


def _apply(
    conn: Conn, namespace: str, event: ReportClassified, now: datetime
) -> tuple[str, ReportAssessed | None]:
    env = event.envelope
    columns = _classification_columns(event)
    inserted = conn.execute(
        _INSERT_ROW + " RETURNING report_id",
        (namespace, env.report_id, event.body.report_number, *columns, now, now),
    ).fetchone()
    outcome = "queued"
    status = "open"
    if inserted is None:
        # The row exists. Lock it first, then look for a newer classification already applied: a
        # classification that a later one supersedes may arrive late (from another lane, or another
        # stage instance) and must not overwrite the newer one. Checked after the lock, so a newer one
        # committed meanwhile by another instance is seen.
        locked = conn.execute(
            "SELECT status FROM assess_queue WHERE namespace = %s AND report_id = %s FOR UPDATE",
            (namespace, env.report_id),
        ).fetchone()
        stale = conn.execute(
            "SELECT 1 FROM assess_queue_seen WHERE namespace = %s AND report_id = %s AND supersedes = %s",
            (namespace, env.report_id, env.event_id),
        ).fetchone()
        if stale is not None:
            return "stale", None
        # A newer classification of a queued report: new level and payload, claim and decision kept.
        conn.execute(_UPDATE_CLASSIFICATION, (*columns, now, namespace, env.report_id))
        status = locked[0] if locked else "open"
        outcome = "updated"
    known = known_among(conn, logic.report_hash_keys(event.body)) if status == "open" else frozenset()
    pre = _preassessed(event, status, known, now)
    if pre is None:
        return outcome, None
    assessed, rule = pre
    with conn.pipeline():
        _mark_decided(conn, namespace, [(assessed, logic.AUTOMATED_ACTOR.id)])
    log.info(
        "report_preassessed", report_id=env.report_id, rule=rule, determination=assessed.determination.value
    )
    return "automated", assessed


def _preassessed(
    event: ReportClassified, status: str, known: frozenset[str], now: datetime
) -> tuple[ReportAssessed, str] | None:
    """The automated assessment (and its rule) of a classification applied to a row of ``status``, if any.

    ``known`` holds (at least) the report's hashes on the known-material list when ``status`` is open.
    """
    if status == "decided":
        # The determination stands (a person's work is never overridden); an analyst may revise it
        # with `tipline analyst decide REPORT --revise` after reading the new classification.
        log.warning(
            "report_reclassified_after_decision", report_id=event.envelope.report_id, level=event.level
        )
    if status != "open":
        return None
    pre = logic.preassess(event, known)
    if pre is None:
        return None
    assessed = logic.assessment(
        event,
        actor=logic.AUTOMATED_ACTOR,
        determination=pre.determination,
        child_may_need_protection=pre.child_may_need_protection,
        note=pre.note,
        supersedes=None,
        occurred_at=now,
    )
    return assessed, pre.rule


def _mark_decided(conn: Conn, namespace: str, decided: Sequence[tuple[ReportAssessed, str]]) -> None:
    """Mark rows decided and keep the decisions' history: ``(assessment, decided_by)`` in order.

    Callers run it in a pipeline (theirs, or one of its own) so that both statements go in one round trip.
    """
    last: dict[str, tuple[str, str, datetime, str, str]] = {}
    for assessed, decided_by in decided:
        env = assessed.envelope
        # A later decision of the same report in the run is the one its row keeps.
        last[env.report_id] = (
            env.report_id,
            decided_by,
            env.occurred_at,
            assessed.determination.value,
            env.event_id,
        )
    history = [
        (
            a.envelope.event_id,
            a.envelope.report_id,
            a.envelope.actor.kind.value,
            a.envelope.actor.id,
            a.determination.value,
            a.child_may_need_protection,
            a.supersedes,
            a.envelope.occurred_at,
        )
        for a, _by in decided
    ]
    with conn.cursor() as cur:
        cur.execute(_MARK_DECIDED, (*_columns(list(last.values()), 5), namespace))
        cur.execute(_INSERT_DECISION, (namespace, *_columns(history, 8)))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists, the arrays of an ``unnest``."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


@dataclass
class _Slot:
    """A report's queue row as a run of events leaves it: what the rules read and what is written back."""

    new: bool
    """Not in the table before the run: the run inserts it (with the last classification applied)."""
    status: str
    classification: ReportClassified | None = None
    """The classification applied last by the run (None: the row's classification is unchanged)."""


TABLES = ("assess_queue", "assess_queue_seen")
"""The tables a run writes a row to for (about) each classification: those worth analyzing while young."""


def lock_reports(conn: Conn, namespace: str, report_ids: Sequence[str]) -> None:
    """Lock the queue rows of these reports (those there are) in report order, in the caller's transaction.

    Every writer that locks several rows takes them in this order (``enqueue_classified_many``,
    ``record_decisions``); a transaction that locks in several statements takes them all here first.
    """
    if report_ids:
        conn.execute(
            "SELECT 1 FROM assess_queue WHERE namespace = %s AND report_id = ANY(%b::text[]) "
            "ORDER BY report_id FOR UPDATE",
            (namespace, sorted(set(report_ids))),
        )


class ConcurrentEnqueue(ServiceError):
    """Another stage instance queued one of a run's reports meanwhile; the run is handled record by record."""


def enqueue_classified_many(
    conn: Conn, namespace: str, events: Sequence[ReportClassified], now: datetime
) -> list[list[ReportAssessed]]:
    """``enqueue_classified`` over a run of events, in a few round trips; the same outputs and rows.

    Runs inside the caller's transaction. One pipelined read (the events already handled, the queue
    rows of the run's reports locked in report order, the stored classifications they supersede, the
    known hashes), then the rules in event order against an in-memory view updated as each event is
    applied (several events of one report, or a second copy of one event, see the earlier ones), then
    one pipelined write. A report with no row when the run read is inserted by the run; if another stage
    instance inserted it meanwhile, ``ConcurrentEnqueue`` aborts the run (the runner then handles it
    record by record, which locks that row like any other).
    """
    if not events:
        return []
    report_ids = sorted({e.envelope.report_id for e in events})
    keys = sorted({k for e in events for k in logic.report_hash_keys(e.body)})
    with conn.pipeline():
        seen_cur = conn.execute(
            "SELECT report_id, classification_event_id, output FROM assess_queue_seen WHERE namespace = %s "
            "AND (report_id, classification_event_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
            (namespace, [e.envelope.report_id for e in events], [e.envelope.event_id for e in events]),
        )
        # Locked in one order (report id) by every instance, so two runs never wait on each other in a cycle.
        lock_cur = conn.execute(
            "SELECT report_id, status FROM assess_queue WHERE namespace = %s AND report_id = ANY(%b::text[]) "
            "ORDER BY report_id FOR UPDATE",
            (namespace, report_ids),
        )
        # After the lock (statements run in order): a newer classification committed meanwhile is seen.
        stale_cur = conn.execute(
            "SELECT report_id, supersedes FROM assess_queue_seen WHERE namespace = %s "
            "AND report_id = ANY(%b::text[]) AND supersedes = ANY(%b::text[])",
            (namespace, report_ids, [e.envelope.event_id for e in events]),
        )
        known_cur = (
            conn.execute("SELECT hash_key FROM assess_known_hash WHERE hash_key = ANY(%b::text[])", (keys,))
            if keys
            else None
        )
    stored: dict[tuple[str, str], bytes | None] = {(r, e): out for r, e, out in seen_cur.fetchall()}
    slots = {rid: _Slot(new=False, status=status) for rid, status in lock_cur.fetchall()}
    superseded: set[tuple[str, str]] = {(r, sup) for r, sup in stale_cur.fetchall()}
    known = frozenset(r[0] for r in known_cur.fetchall()) if known_cur is not None else frozenset()

    results: list[list[ReportAssessed]] = []
    seen_rows: list[tuple[Any, ...]] = []
    decided: list[tuple[ReportAssessed, str]] = []
    rules: list[str] = []
    for event in events:
        env = event.envelope
        key = (env.report_id, env.event_id)
        if key in stored:
            raw = stored[key]
            results.append([_decode_assessed(raw)] if raw is not None else [])
            continue
        output: ReportAssessed | None = None
        slot = slots.get(env.report_id)
        if slot is None:
            slots[env.report_id] = slot = _Slot(new=True, status="open", classification=event)
            outcome = "queued"
        elif key in superseded:
            outcome = "stale"
        else:
            slot.classification = event
            outcome = "updated"
        pre = _preassessed(event, slot.status, known, now) if outcome != "stale" else None
        if pre is not None:
            output, rule = pre
            slot.status = "decided"
            decided.append((output, logic.AUTOMATED_ACTOR.id))
            rules.append(rule)
            outcome = "automated"
        raw = serde.encode(output) if output is not None else None
        stored[key] = raw
        if event.supersedes is not None:
            superseded.add((env.report_id, event.supersedes))
        seen_rows.append((env.report_id, env.event_id, event.supersedes, outcome, raw))
        results.append([output] if output is not None else [])
        log.debug("report_enqueued", report_id=env.report_id, level=event.level, outcome=outcome)

    _write_run(conn, namespace, slots=slots, seen_rows=seen_rows, decided=decided, now=now)
    for (assessed, _by), rule in zip(decided, rules, strict=True):
        log.debug(
            "report_preassessed",
            report_id=assessed.envelope.report_id,
            rule=rule,
            determination=assessed.determination.value,
        )
    return results


def _write_run(
    conn: Conn,
    namespace: str,
    *,
    slots: dict[str, _Slot],
    seen_rows: list[tuple[Any, ...]],
    decided: list[tuple[ReportAssessed, str]],
    now: datetime,
) -> None:
    """A run's writes in one pipeline: new rows, re-classified rows, automated decisions, events seen."""
    new = [(rid, s.classification) for rid, s in slots.items() if s.new and s.classification is not None]
    changed = [
        (rid, s.classification) for rid, s in slots.items() if not s.new and s.classification is not None
    ]
    with conn.pipeline(), conn.cursor() as insert, conn.cursor() as cur:
        if new:
            columns = [(rid, c.body.report_number, *_classification_columns(c)) for rid, c in new]
            insert.execute(
                _INSERT_ROWS, (namespace, now, now, *(list(col) for col in zip(*columns, strict=True)))
            )
        if changed:
            cur.executemany(
                _UPDATE_CLASSIFICATION,
                [(*_classification_columns(c), now, namespace, rid) for rid, c in changed],
            )
        if decided:
            _mark_decided(conn, namespace, decided)
        if seen_rows:
            cur.execute(_INSERT_SEEN_MANY, (namespace, *_columns(seen_rows, 5)))
    if new and insert.rowcount != len(new):
        raise ConcurrentEnqueue(
            f"{len(new) - insert.rowcount} of the run's reports were queued meanwhile by another instance."
        )


# --- The analysts' side: claim, show ----------------------------------------------------------------


def _history(conn: Conn, namespace: str, report_id: str) -> list[Decision]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT assessment_event_id, actor_kind, actor_id, determination, child_may_need_protection, "
            "supersedes, decided_at FROM assess_decision WHERE namespace = %s AND report_id = %s "
            "ORDER BY decided_at, assessment_event_id",
            (namespace, report_id),
        ).fetchall()
    return [Decision(**r) for r in rows]


def find(conn: Conn, namespace: str, report: str) -> QueueItem | None:
    """The queue row of a report, by report id or report number, with its decision history."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM assess_queue "  # noqa: S608 - a constant column list
            "WHERE namespace = %s AND (report_id = %s OR report_number = %s) "
            "ORDER BY report_id = %s DESC LIMIT 1",
            (namespace, report, report, report),
        ).fetchone()
        if row is None:
            return None
        return _item(row, _history(conn, namespace, row["report_id"]))


def claim(
    conn: Conn,
    namespace: str,
    owner: str,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_CLAIM_TTL,
    limit: int = 1,
) -> list[QueueItem]:
    """Claim up to ``limit`` of the most urgent open reports for ``owner``, most urgent first.

    The reports ``owner`` already holds come first (their claims extended): a restarted analyst gets
    back what it held rather than more. ``SKIP LOCKED`` lets concurrent analysts pass over rows another
    one is claiming at this instant; a claim whose time ran out counts as open. One transaction.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        held = cur.execute(
            f"UPDATE assess_queue SET claim_expires_at = %s, updated_at = %s "  # noqa: S608 - a constant column list
            f"WHERE namespace = %s AND status = 'claimed' AND claimed_by = %s AND claim_expires_at > %s "
            f"RETURNING {_COLUMNS}",
            (now + ttl, now, namespace, owner, now),
        ).fetchall()
        held.sort(key=_urgency)
        fresh: list[dict[str, Any]] = []
        want = limit - len(held)
        if want > 0:
            # Open rows and expired claims through their own partial indexes, each already in urgency
            # order (one OR over both made the planner filter the whole table at every claim once the
            # table grew faster than its statistics); the most urgent ``want`` of the two are claimed,
            # the rest of what was locked is let go at commit.
            candidates = cur.execute(
                "WITH open AS (SELECT report_id, level, arrival_seq FROM assess_queue "
                "WHERE namespace = %s AND status = 'open' "
                "ORDER BY level, arrival_seq LIMIT %s FOR UPDATE SKIP LOCKED), "
                "expired AS (SELECT report_id, level, arrival_seq FROM assess_queue "
                "WHERE namespace = %s AND status = 'claimed' AND claim_expires_at <= %s "
                "ORDER BY level, arrival_seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                "SELECT * FROM open UNION ALL SELECT * FROM expired",
                (namespace, want, namespace, now, want),
            ).fetchall()
            picked = [r["report_id"] for r in sorted(candidates, key=_urgency)[:want]]
            if picked:
                fresh = cur.execute(
                    f"UPDATE assess_queue SET status = 'claimed', claimed_by = %s, claim_expires_at = %s, "  # noqa: S608 - constant columns
                    "updated_at = %s WHERE namespace = %s AND report_id = ANY(%b::text[]) "
                    f"RETURNING {_prefixed('assess_queue')}",
                    (owner, now + ttl, now, namespace, picked),
                ).fetchall()
    # One person's claim is worth an info line; a simulated team's runs log per report at debug only.
    say = log.info if limit == 1 else log.debug
    for row in fresh:
        say("report_claimed", report_id=row["report_id"], owner=owner, level=row["level"])
    return [_item(row) for row in sorted([*held[:limit], *fresh], key=_urgency)]


def _urgency(row: dict[str, Any]) -> tuple[int, int]:
    return (row["level"], row["arrival_seq"])


def claim_next(
    conn: Conn, namespace: str, owner: str, *, now: datetime, ttl: timedelta = DEFAULT_CLAIM_TTL
) -> QueueItem | None:
    """Claim the most urgent open report for ``owner`` (or return the one they already hold)."""
    items = claim(conn, namespace, owner, now=now, ttl=ttl, limit=1)
    return items[0] if items else None


def _prefixed(alias: str) -> str:
    cols = [c.strip() for c in _COLUMNS.split(",")]
    out = []
    for c in cols:
        if c.startswith("contact_key_id"):
            out.append(f"{alias}.contact_key_id IS NOT NULL AS has_contact")
        else:
            out.append(f"{alias}.{c}")
    return ", ".join(out)


def open_count(conn: Conn, namespace: str, now: datetime) -> int:
    """How many reports wait for a person (open, or claimed with an expired claim)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM assess_queue WHERE namespace = %s AND status = 'open') + "
        "(SELECT count(*) FROM assess_queue WHERE namespace = %s AND status = 'claimed' AND claim_expires_at <= %s)",
        (namespace, namespace, now),
    ).fetchone()
    return int(row[0]) if row else 0


# --- Recording a decision ---------------------------------------------------------------------------


class Publisher:
    """Produces ``ReportAssessed`` on the assessed topic and waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings, *, timeout_s: float = 30.0) -> None:
        self._producer = kafka.producer(settings, **{"linger.ms": 0})
        self._topic = name(ASSESSED, settings.topic_suffix)
        self._timeout = timeout_s

    def publish(self, event: ReportAssessed) -> None:
        self.publish_many([event])

    def publish_many(self, events: Sequence[ReportAssessed]) -> None:
        """Produce every event, then wait once for all acknowledgements; raise unless all were acknowledged."""
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err.str()))

        for event in events:
            value = serde.encode(event)
            headers = list[tuple[str, str | bytes | None]](serde.headers_for(event))
            while True:
                try:
                    self._producer.produce(
                        self._topic,
                        key=event.envelope.report_id.encode(),
                        value=value,
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain, then go on
                    self._producer.poll(0.05)
        remaining = self._producer.flush(self._timeout)
        if remaining or errors:
            detail = errors[0] if errors else f"no acknowledgement within {self._timeout:.0f} s"
            what = (
                "the determination"
                if len(events) == 1
                else f"{len(errors) or remaining} of {len(events)} determinations"
            )
            raise ServiceError(f"Kafka did not acknowledge {what} ({detail}); nothing was recorded.")

    def close(self) -> None:
        self._producer.flush(self._timeout)


@dataclass(frozen=True, kw_only=True)
class DecisionRequest:
    report: str
    """A report id or report number."""
    actor: Actor
    claim_owner: str
    """Whose claim this decision may close (an analyst's id; a simulated analyst's worker name)."""
    determination: Determination
    child_may_need_protection: bool = False
    note: str | None = None
    revise: bool = False


DecisionOutcome = ReportAssessed | QueueError | DomainError
"""What became of one request: the event recorded, or why it was refused (nothing recorded for it)."""

_DECISION_COLUMNS = (
    "report_id, report_number, status, claimed_by, claim_expires_at, decided_by, decided_at, "
    "assessment_event_id, classification_event_id, payload, contact_key_id, contact_nonce, contact_ciphertext, "
    "contact_algorithm"
)


def record_decision(
    conn: Conn,
    publish: Callable[[ReportAssessed], None],
    namespace: str,
    request: DecisionRequest,
    *,
    now: datetime,
) -> ReportAssessed:
    """Check, produce (ack awaited), then mark decided; nothing is written when a check fails."""

    def publish_one(events: Sequence[ReportAssessed]) -> None:
        for event in events:
            publish(event)

    (outcome,) = record_decisions(conn, publish_one, namespace, [request], now=now)
    if isinstance(outcome, QueueError | DomainError):
        raise outcome
    return outcome


def record_decisions(
    conn: Conn,
    publish: Callable[[Sequence[ReportAssessed]], None],
    namespace: str,
    requests: Sequence[DecisionRequest],
    *,
    now: datetime,
    known: Mapping[str, ReportClassified] | None = None,
) -> list[DecisionOutcome]:
    """Record a run of decisions in one transaction: check each, produce all (acks awaited), mark all.

    ``known``: classifications the caller has already decoded (from its claim), by event id; a locked row
    still holding one of them is not decoded again (a row re-classified since holds another id).

    Returns one outcome per request, in order: its ``ReportAssessed``, or the ``QueueError`` (unknown
    report, someone else's claim, already decided without ``revise``) or ``DomainError`` (note too long)
    that refused it alone. The rows are locked in report order and each request is checked against them
    as the earlier requests of the run left them. The accepted events are produced and acknowledged by
    the broker before any row is marked decided; if ``publish`` raises, nothing is marked (an event the
    broker did take is produced again with the same id by a retry, which the route step ignores).
    """
    outcomes: list[DecisionOutcome | None] = [
        DomainError(
            f"The note is longer than {MAX_NOTE} characters; shorten it.", reason="too_long", field="note"
        )
        if r.note is not None and len(r.note) > MAX_NOTE
        else None
        for r in requests
    ]
    wanted = sorted({r.report for r, o in zip(requests, outcomes, strict=True) if o is None})
    if not wanted:
        return [o for o in outcomes if o is not None]
    decided: list[tuple[ReportAssessed, str]] = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_DECISION_COLUMNS} FROM assess_queue "  # noqa: S608 - a constant column list
            "WHERE namespace = %s AND (report_id = ANY(%b::text[]) OR report_number = ANY(%b::text[])) "
            "ORDER BY report_id FOR UPDATE",
            (namespace, wanted, wanted),
        ).fetchall()
        by_id = {row["report_id"]: row for row in rows}
        by_number: dict[str, dict[str, Any]] = {}
        for row in rows:
            by_number.setdefault(row["report_number"], row)
        for i, request in enumerate(requests):
            if outcomes[i] is not None:
                continue
            found = by_id.get(request.report) or by_number.get(request.report)
            if found is None:
                outcomes[i] = QueueError(
                    f"No report {request.report!r} is in the analysts' queue; check the report number."
                )
                continue
            try:
                assessed = _decision(found, request, now, known or {})
            except QueueError as exc:
                outcomes[i] = exc
                continue
            # The next request of the run for the same report sees this decision.
            found.update(
                status="decided",
                claimed_by=None,
                claim_expires_at=None,
                decided_by=request.actor.id,
                assessment_event_id=assessed.envelope.event_id,
            )
            outcomes[i] = assessed
            decided.append((assessed, request.actor.id))
        if decided:
            # Raises (and the transaction rolls back, nothing marked) unless the broker acknowledged them all.
            publish([a for a, _by in decided])
            with conn.pipeline():
                _mark_decided(conn, namespace, decided)
    # A person's decision is worth an info line; a simulated team's runs log per report at debug only.
    say = log.info if len(requests) == 1 else log.debug
    for assessed, by in decided:
        say(
            "report_assessed",
            report_id=assessed.envelope.report_id,
            determination=assessed.determination.value,
            actor=by,
            supersedes=assessed.supersedes,
        )
    return [o for o in outcomes if o is not None]


def record_decisions_retrying(
    conn: Conn,
    publish: Callable[[Sequence[ReportAssessed]], None],
    namespace: str,
    requests: Sequence[DecisionRequest],
    *,
    known: Mapping[str, ReportClassified] | None = None,
    attempts: int = DECISION_ATTEMPTS,
) -> list[DecisionOutcome]:
    """``record_decisions`` (at the time of each try), tried again whole when PostgreSQL rolled it back
    as a deadlock victim or a serialization failure, up to ``attempts`` times. Such a rollback comes at
    the row locks, before anything is produced, so no determination goes out twice."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return record_decisions(conn, publish, namespace, requests, now=now_utc(), known=known)
        except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
            if attempt >= attempts:
                raise
            log.warning(
                "decisions_retried", error=type(exc).__name__, attempt=attempt, requests=len(requests)
            )
            time.sleep(0.05 * attempt)


def _decision(
    row: dict[str, Any], request: DecisionRequest, now: datetime, known: Mapping[str, ReportClassified]
) -> ReportAssessed:
    """The event a request records on its locked row, or the ``QueueError`` that refuses it."""
    if (
        row["status"] == "claimed"
        and row["claimed_by"] != request.claim_owner
        and row["claim_expires_at"] > now
    ):
        raise QueueError(
            f"Report {request.report} is claimed by {row['claimed_by']} until "
            f"{row['claim_expires_at'].astimezone(UTC):%Y-%m-%d %H:%M} UTC; nothing was recorded."
        )
    supersedes: str | None = None
    if row["status"] == "decided":
        if not request.revise:
            raise QueueError(
                f"Report {request.report} was already decided by {row['decided_by']}; "
                "pass --revise to record a new determination that supersedes it."
            )
        supersedes = row["assessment_event_id"]
    classified = known.get(row["classification_event_id"]) or serde.decode(bytes(row["payload"]))
    if not isinstance(classified, ReportClassified):
        raise ServiceError(f"The queue row of report {request.report} does not hold a classified report.")
    if row["contact_key_id"] is not None:
        contact = EncryptedContact(
            key_id=row["contact_key_id"],
            nonce=bytes(row["contact_nonce"]),
            ciphertext=bytes(row["contact_ciphertext"]),
            algorithm=row["contact_algorithm"],
        )
        classified = dataclasses.replace(
            classified, body=dataclasses.replace(classified.body, contact=contact)
        )
    return logic.assessment(
        classified,
        actor=request.actor,
        determination=request.determination,
        child_may_need_protection=request.child_may_need_protection,
        note=request.note,
        supersedes=supersedes,
        occurred_at=now,
    )


# --- Simulated analysts -----------------------------------------------------------------------------


@dataclass
class SimulationSummary:
    decided: int = 0
    determinations: Counter[str] = field(default_factory=Counter)
    child_protection: int = 0
    by_worker: Counter[str] = field(default_factory=Counter)
    refused: int = 0


def simulate(
    settings: Settings,
    *,
    seed: int,
    analysts: int = 1,
    until_empty: bool = True,
    idle_s: float = 0.0,
    ttl: timedelta = DEFAULT_CLAIM_TTL,
    stop: threading.Event | None = None,
    max_decisions: int | None = None,
    batch: int = 1,
) -> SimulationSummary:
    """Run ``analysts`` simulated analysts that claim and decide through the same queue functions.

    Each claims up to ``batch`` reports at once (``claim``) and records their decisions in one
    transaction with one wait for the broker (``record_decisions``): a simulated analyst with a run of
    reports stands in for a larger team working in parallel, at two transactions per run instead of two
    per report. A refused decision (someone else's claim meanwhile) refuses that report only. Each stops
    when the queue has had nothing open for ``idle_s`` seconds (``until_empty``), when ``stop`` is set,
    or when ``max_decisions`` were made in all.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    team = _Team(
        settings,
        seed=seed,
        ttl=ttl,
        batch=batch,
        max_decisions=max_decisions,
        stop=stop or threading.Event(),
    )
    threads = [
        threading.Thread(target=team.worker, args=(i, until_empty, idle_s), name=f"sim-analyst-{i}")
        for i in range(analysts)
    ]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)  # short waits keep the main thread responsive to SIGTERM/SIGINT
    if team.errors:
        raise team.errors[0]
    return team.summary


class _Team:
    """The simulated analysts of one ``simulate`` call: their summary, quota and first error, shared."""

    def __init__(
        self,
        settings: Settings,
        *,
        seed: int,
        ttl: timedelta,
        batch: int,
        max_decisions: int | None,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.namespace = settings.topic_suffix
        self.seed = seed
        self.actor = simulated.simulated_actor(seed)
        self.ttl = ttl
        self.batch = batch
        self.max_decisions = max_decisions
        self.stop = stop
        self.summary = SimulationSummary()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.in_hand = 0
        """Reports claimed by the workers and not yet decided, counted against ``max_decisions``."""

    def _take_quota(self) -> int:
        """How many reports a worker may claim now (0: none until the others finish theirs)."""
        with self.lock:
            room = self.batch
            if self.max_decisions is not None:
                room = max(min(room, self.max_decisions - self.summary.decided - self.in_hand), 0)
            self.in_hand += room
            return room

    def _done(self) -> bool:
        with self.lock:
            return self.max_decisions is not None and self.summary.decided >= self.max_decisions

    def worker(self, index: int, until_empty: bool, idle_s: float) -> None:
        owner = f"simulated.seed{self.seed}.{index}"
        publisher = Publisher(self.settings)
        try:
            with connect(self.settings) as conn:
                idle_since: float | None = None
                while not self.stop.is_set():
                    limit = self._take_quota()
                    try:
                        claimed = self._work_through(conn, publisher, owner, limit) if limit else 0
                    finally:
                        with self.lock:
                            self.in_hand -= limit
                    if claimed:
                        idle_since = None
                    elif limit == 0:
                        if self._done():
                            return
                        self.stop.wait(0.05)  # the others hold the rest of the quota; they may be refused
                    else:
                        idle_since = idle_since or time.monotonic()
                        if until_empty and time.monotonic() - idle_since >= idle_s:
                            return
                        self.stop.wait(0.2)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by simulate
            self.errors.append(exc)
            self.stop.set()
        finally:
            publisher.close()

    def _work_through(self, conn: Conn, publisher: Publisher, owner: str, limit: int) -> int:
        """Claim up to ``limit`` reports and record the simulated decisions on them; how many were claimed."""
        items = claim(conn, self.namespace, owner, now=now_utc(), ttl=self.ttl, limit=limit)
        if not items:
            return 0
        choices = [simulated.decide(item.classified, self.seed) for item in items]
        requests = [
            DecisionRequest(
                report=item.report_id,
                actor=self.actor,
                claim_owner=owner,
                determination=choice.determination,
                child_may_need_protection=choice.child_may_need_protection,
                note=choice.note,
            )
            for item, choice in zip(items, choices, strict=True)
        ]
        outcomes = record_decisions_retrying(
            conn,
            publisher.publish_many,
            self.namespace,
            requests,
            known={item.classified.envelope.event_id: item.classified for item in items},
        )
        with self.lock:
            for choice, outcome in zip(choices, outcomes, strict=True):
                if isinstance(outcome, DomainError):
                    raise outcome  # the simulated policy wrote something an event refuses: a bug, stop
                if isinstance(outcome, QueueError):
                    self.summary.refused += 1
                    continue
                self.summary.decided += 1
                self.summary.determinations[choice.determination.value] += 1
                self.summary.child_protection += int(choice.child_may_need_protection)
                self.summary.by_worker[owner] += 1
        return len(items)


__all__ = [
    "DEFAULT_CLAIM_TTL",
    "ActorKind",
    "ConcurrentEnqueue",
    "DecisionOutcome",
    "DecisionRequest",
    "Publisher",
    "QueueError",
    "QueueItem",
    "RoleError",
    "SimulationSummary",
    "claim",
    "claim_next",
    "enqueue_classified",
    "enqueue_classified_many",
    "find",
    "known_among",
    "load_known_hashes",
    "lock_reports",
    "open_count",
    "record_decision",
    "record_decisions",
    "record_decisions_retrying",
    "simulate",
]
