"""The projector: reads every event topic and keeps the read model in PostgreSQL, exactly once.

Input: every event topic of ``pipeline.topics.EVENT_TOPICS`` (with the settings' suffix), all
partitions, assigned explicitly. Output: the tables of one schema (``projections.pg``), never a topic.
Key: the report id. Kafka's committed offsets are not used (``enable.auto.commit=False``, nothing is
ever committed to Kafka): the position of each partition is a row of ``proj_offsets`` written in the
SAME PostgreSQL transaction as the rows it produced, and the projector seeks to those positions on start.
A crash between the rows and the offsets therefore loses both or keeps both: nothing is counted twice.

Every batch transaction first takes an advisory lock of its schema and compares the stored positions
with the ones it holds; if they differ (a rebuild swapped a new schema in, or another instance wrote),
it rolls back and seeks to the stored positions. The writes are idempotent merges anyway
(``projections.model``), so reading an event again never changes a row.

Each record is read for the few fields the read model needs (``projections.decode``; serde for any
record the generated reader does not find plainly valid) and folded straight into table rows
(``model.fold_rows``). Decoding overlaps with the previous batch's transaction (one writer thread);
``workers`` decode and fold in worker processes (spawned: worth it only for a long log on idle
cores); batches still commit one after another, in order. Catching up (``catch_up``, a rebuild into a
fresh schema) the projector reads without the broker's long waits and aims at the ends the log had
when it started.

Failure policy: a record that does not decode is kept in ``proj_rejected`` with its position and
serde's reason, in the same transaction, and logged (``projection_record_rejected``); the projector
goes on.
A database or broker failure stops the process (the supervisor restarts it; it resumes exactly).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined] # exported, not in its stubs
from psycopg import sql

from pipeline import db, kafka
from pipeline.errors import ServiceError
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS, group, name
from projections import decode, model, pg

PROJECTION = "report_status"
log = get_logger(stage="projections")

Position = tuple[str, int]


class _Moved(Exception):
    pass


def event_topics(settings: Settings) -> list[str]:
    return [name(spec, settings.topic_suffix) for spec in EVENT_TOPICS]


def partitions_of(consumer: Consumer, topics: list[str], timeout: float = 30.0) -> list[Position]:
    """Every (topic, partition) of the topics; a missing topic is an error worth one sentence."""
    try:
        md = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceError("Kafka did not answer; start it with `tipline services up`.") from exc
    out: list[Position] = []
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None:
            raise ServiceError(f"topic {t} does not exist; create the topics with `tipline topics create`.")
        out.extend((t, p) for p in sorted(tm.partitions))
    return out


def consumer_overrides(*, catch_up: bool) -> dict[str, Any]:
    """The projector's consumer settings beside ``pipeline.kafka``'s (read_committed, no auto commit).

    Catching up (a rebuild): the first fetch must not wait out the broker's 500 ms for partitions that
    are empty (no further fetch goes out while one is pending), and the first metadata request, lost
    when librdkafka retires its bootstrap connection, is sent again after 10 ms rather than 50."""
    return {
        "enable.partition.eof": True,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "queued.min.messages": 200_000,
        **({"fetch.wait.max.ms": 10, "reconnect.backoff.ms": 10} if catch_up else {}),
    }


def stable_ends(consumer: Consumer, partitions: list[Position], timeout: float = 30.0) -> dict[Position, int]:
    """The last stable offset of each partition, asked through a read_committed consumer.

    A read_committed consumer's watermarks are the last stable offsets, like ``end_offsets``; its
    connection is already up, where a fresh admin client sometimes waits seconds for its first metadata.
    Asked one partition at a time, so only before the partitions are assigned (a pending fetch would
    hold up each request)."""
    out: dict[Position, int] = {}
    try:
        for t, p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout, cached=False)
            out[(t, p)] = int(high)
    except KafkaException as exc:
        raise ServiceError("Kafka did not say where the topics end; is the broker up?") from exc
    return out


def stored_offsets(
    conn: psycopg.Connection[Any], schema: str, projection: str = PROJECTION
) -> dict[Position, int]:
    recs = conn.execute(
        sql.SQL('SELECT topic, "partition", next_offset FROM {}.proj_offsets WHERE projection = %s').format(
            sql.Identifier(schema)
        ),
        (projection,),
    ).fetchall()
    return {(t, int(p)): int(o) for t, p, o in recs}


def end_offsets(settings: Settings, partitions: list[Position], timeout: float = 30.0) -> dict[Position, int]:
    """The last stable offset of each partition (the end a read_committed consumer can reach), in one request."""
    client = kafka.admin(settings)
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = client.list_offsets(
        {TopicPartition(t, p): latest for t, p in partitions},
        isolation_level=IsolationLevel.READ_COMMITTED,
        request_timeout=timeout,
    )
    try:
        return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}
    except KafkaException as exc:
        raise ServiceError("Kafka did not say where the topics end; is the broker up?") from exc


def where(m: Message) -> tuple[str, int, int]:
    """A record's topic, partition and offset (typed: the client's stubs allow None for all three)."""
    return (m.topic() or "", m.partition() or 0, m.offset() or 0)


def decode_fold(
    chunk: list[tuple[bytes | None, str, int, int]],
) -> tuple[dict[str, list[Any]], dict[str, model.ReferralRow], list[tuple[str, int, int, str, str]], int]:
    """Decode records (value, topic, partition, offset) and fold them: rows, referrals, rejects, events.

    Only what the read model reads is decoded (``projections.decode``); a record that is not plainly
    valid goes through ``pipeline.serde``, which decodes it or names why it cannot.
    """
    facts, rejected = decode.reader().facts(chunk)
    rows, referrals = model.fold_rows(facts)
    return rows, referrals, rejected, len(facts)


@dataclass(frozen=True, kw_only=True)
class _Prepared:
    """A decoded, folded batch and the positions it reaches, ready for one transaction."""

    rows: dict[str, list[Any]]
    """Flat rows, ``model.ROW_COLUMNS``."""
    referrals: dict[str, model.ReferralRow]
    rejected: list[tuple[str, int, int, str, str]]
    nxt: dict[Position, int]
    events: int


@dataclass
class BatchResult:
    events: int = 0
    rejected: int = 0


class Projector:
    """One projector instance writing one schema. ``start``, then ``poll_once`` until done, ``close``.

    ``apply_hook`` runs inside each batch's transaction after the rows were written and before the
    offsets are (tests use it to simulate a crash at the worst moment). ``catch_up`` is for a projector
    that fills a fresh schema from the first offsets (a rebuild): short fetch waits, reading from the
    first offsets while the tables are made, and the log's ends taken at ``start``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        schema: str | None = None,
        projection: str = PROJECTION,
        batch_size: int = 5000,
        apply_hook: Callable[[], None] | None = None,
        workers: int = 0,
        catch_up: bool = False,
    ) -> None:
        self.settings = settings
        self._workers = workers
        self._catch_up = catch_up
        self._targets: dict[Position, int] | None = None
        # Spawned, not forked: this process runs librdkafka's and the writer's threads.
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 0
            else None
        )
        self.schema = schema or pg.schema_for(settings)
        self.projection = projection
        self.batch_size = batch_size
        self.apply_hook = apply_hook
        self.topics = event_topics(settings)
        self.positions: dict[Position, int] = {}
        self.eof: dict[Position, int] = {}
        self.processed = 0
        self.rejected = 0
        self.conn = db.connect(settings, autocommit=True, prepare_threshold=None)
        self.consumer = kafka.consumer(
            settings, group("projections", settings.topic_suffix), **consumer_overrides(catch_up=catch_up)
        )
        self._lock_key = f"tipline.projector:{self.schema}:{projection}"
        self._partitions: list[Position] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector-writer")
        self._pending: Future[BatchResult] | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        # Kafka (another thread) and the tables (the writer thread) mostly wait on a server; meanwhile
        # this thread loads the schemas the decoders are generated from.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector-start") as kafka_side:
            kafka_ready = kafka_side.submit(self._start_kafka)
            installed = self._writer.submit(pg.install, self.conn, self.schema)
            try:
                decode.reader()
            finally:
                installed.result()
                kafka_ready.result()
        if not self._catch_up or stored_offsets(self.conn, self.schema, self.projection):
            self._seek_to_stored()
        # The live projector's start is a service's line; a catch-up (rebuild) reports through its caller.
        say = log.debug if self._catch_up else log.info
        say("projector_started", schema=self.schema, partitions=len(self._partitions))

    def _start_kafka(self) -> None:
        self._partitions = partitions_of(self.consumer, self.topics)
        if self._catch_up:
            # A fresh schema has no stored position: reading starts at the first offsets at once, so the
            # first fetch is under way while the tables are made (``start`` seeks to stored positions
            # if there are any after all). The ends are asked first: no fetch is pending yet.
            self._targets = self._watermarks_before_assign()
            self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self._partitions])

    def _seek_to_stored(self) -> None:
        self.positions = stored_offsets(self.conn, self.schema, self.projection)
        self.eof.clear()
        self.consumer.assign(
            [TopicPartition(t, p, self.positions.get((t, p), OFFSET_BEGINNING)) for t, p in self._partitions]
        )

    def close(self) -> None:
        """Commit the batch in flight (a failure in it was already raised by ``poll_once``), then close."""
        try:
            self._settle()
        finally:
            self._writer.shutdown(wait=True)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            try:
                self.consumer.close()
            finally:
                self.conn.close()

    # --- the loop -----------------------------------------------------------------------------

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume one batch and commit it with its offsets; return how many records it held."""
        msgs = self.consumer.consume(self.batch_size, timeout)
        nxt: dict[Position, int] = {}
        chunk: list[tuple[bytes | None, str, int, int]] = []
        for m in msgs:
            err = m.error()
            if err is None:
                t, p, o = m.topic() or "", m.partition() or 0, m.offset() or 0
                nxt[(t, p)] = o + 1
                chunk.append((m.value(), t, p, o))
            elif err.code() == KafkaError._PARTITION_EOF:
                t, p, o = where(m)
                self.eof[(t, p)] = o
            elif err.fatal():
                raise ServiceError(f"Kafka reported a fatal error: {err.str()}.")
        # Decoding this batch overlaps with the previous batch's transaction in the writer thread
        # (psycopg releases the GIL while PostgreSQL works); batches still commit one after another.
        prepared = self._prepare(chunk, nxt) if chunk else None
        if not self._settle():
            return 0
        if prepared is None:
            return 0
        self._pending = self._writer.submit(self._commit, prepared)
        return len(chunk)

    def _settle(self) -> bool:
        """Wait for the batch in flight; False if the stored positions moved (then seek to them)."""
        if self._pending is None:
            return True
        fut, self._pending = self._pending, None
        try:
            result = fut.result()
        except _Moved:
            log.info("projector_positions_moved", schema=self.schema)
            self._seek_to_stored()
            return False
        except Exception:
            # The batch consumed after the failed one must not be skipped if the caller goes on.
            with contextlib.suppress(Exception):
                self._seek_to_stored()
            raise
        self.processed += result.events
        self.rejected += result.rejected
        return True

    def flush(self) -> None:
        """Commit the batch in flight, if any."""
        self._settle()

    def _prepare(
        self, chunk: list[tuple[bytes | None, str, int, int]], nxt: dict[Position, int]
    ) -> _Prepared:
        if self._pool is None:
            rows, referrals, rejected, events = decode_fold(chunk)
            return _Prepared(rows=rows, referrals=referrals, rejected=rejected, nxt=nxt, events=events)
        # Decoding is the projector's bottleneck: worker processes decode and fold slices of the batch;
        # the merge is order-free, so their rows combine in any order.
        n = self._workers
        size = -(-len(chunk) // n)
        parts = [self._pool.submit(decode_fold, chunk[i : i + size]) for i in range(0, len(chunk), size)]
        rows = {}
        referrals = {}
        rejected = []
        events = 0
        for fut in parts:
            r, refs, rej, ev_count = fut.result()
            model.merge_rows(rows, r)
            referrals.update(refs)
            rejected.extend(rej)
            events += ev_count
        return _Prepared(rows=rows, referrals=referrals, rejected=rejected, nxt=nxt, events=events)

    def _commit(self, batch: _Prepared) -> BatchResult:
        rows, referrals, rejected, nxt = batch.rows, batch.referrals, batch.rejected, batch.nxt
        s = sql.Identifier(self.schema)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))
            if stored_offsets(self.conn, self.schema, self.projection) != self.positions:
                raise _Moved
            pg.write_batch(self.conn, self.schema, rows.values(), referrals.values())
            with self.conn.cursor() as cur:
                if rejected:
                    cur.executemany(
                        sql.SQL(
                            'INSERT INTO {}.proj_rejected (topic, "partition", "offset", reason, message) '
                            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                        ).format(s),
                        rejected,
                    )
                if self.apply_hook is not None:
                    self.apply_hook()
                cur.executemany(
                    sql.SQL(
                        'INSERT INTO {}.proj_offsets (projection, topic, "partition", next_offset) '
                        'VALUES (%s, %s, %s, %s) ON CONFLICT (projection, topic, "partition") '
                        "DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
                    ).format(s),
                    [(self.projection, t, p, o) for (t, p), o in nxt.items()],
                )
        self.positions.update(nxt)
        for t, p, o, reason, _msg in rejected:
            log.warning("projection_record_rejected", topic=t, partition=p, offset=o, reason=reason)
        return BatchResult(events=batch.events, rejected=len(rejected))

    # --- catching up --------------------------------------------------------------------------

    def high_watermarks(self) -> dict[Position, int]:
        return end_offsets(self.settings, self._partitions)

    def _watermarks_before_assign(self) -> dict[Position, int]:
        return stable_ends(self.consumer, self._partitions)

    def caught_up(self, targets: dict[Position, int]) -> bool:
        return all(
            max(self.positions.get(tp, 0), self.eof.get(tp, 0)) >= target
            for tp, target in targets.items()
            if target > 0
        )

    def run_until_caught_up(self, *, timeout: float = 600.0) -> int:
        """Consume until every partition reached the end it had when this call began.

        Catching up (a rebuild), the first call's ends are the ones the log had at ``start``."""
        targets = self._targets if self._targets is not None else self.high_watermarks()
        self._targets = None
        deadline = time.monotonic() + timeout
        while True:
            if self.caught_up(targets):
                self.flush()
                if self.caught_up(targets):  # still, unless the flush found the positions moved
                    return self.processed
            if time.monotonic() > deadline:
                raise ServiceError(f"the projector did not catch up within {timeout:.0f} s.")
            # A short wait: the last batch must not wait out a long timeout for records that are not there.
            self.poll_once(0.02)


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: Any) -> None:
        self.requested = True


def run(settings: Settings, *, max_idle_s: float | None = None) -> int:
    """Run the live projector until SIGTERM/SIGINT (or idle for ``max_idle_s``); return events applied."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    proj = Projector(settings)
    try:
        proj.start()
        idle_since = time.monotonic()
        while not stop.requested:
            if proj.poll_once(0.5):
                idle_since = time.monotonic()
            elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                break
    finally:
        proj.close()
    log.info("projector_stopped", events=proj.processed, rejected=proj.rejected)
    return proj.processed
