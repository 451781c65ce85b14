"""The stage runner: subscribe, decode, call the step's rules, encode, produce, commit - exactly once.

Every step processor is a ``StageSpec`` run by ``run_stage``. The runner uses confluent-kafka's
transactions (KIP-98/447): the outputs of a batch and the consumer offsets of its inputs commit in one
Kafka transaction, so after a crash (even SIGKILL) a batch is either fully visible downstream with its
offsets committed, or not at all and consumed again. Consumers read with ``isolation.level=read_committed``.

Why not faust's agents here: faust-streaming's at-least-once mode re-delivers a batch after a crash
(duplicating outputs), and its exactly-once mode is not dependable in our measurements; the project's
guarantees (no lost report, no duplicate referral) are given by this runner. See README "Delivery".

A stage that also keeps state in PostgreSQL (``uses_db=True``) gets one database transaction per batch,
committed *before* the Kafka transaction. Its handler must be idempotent against a replayed batch: a
replay re-reads the rows it wrote and produces the same outputs with the same deterministic event ids.

The transactional id is stable per stage instance (``tipline.<stage><suffix>.<instance>``), so a
restarted instance fences its killed predecessor and aborts its open transaction at once, instead of
leaving downstream read_committed consumers waiting for a transaction timeout.

Failure policy, passed in through ``StageSpec``: a record that cannot be decoded (``SerdeError``) or that
the rules refuse (``DomainError``) goes to the stage's dead-letter topic with the reason in the headers,
and processing continues; any other error aborts the batch, which is retried with backoff; a record that
fails ``max_attempts`` times that way is dead-lettered too. Nothing is dropped silently.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline import kafka, serde
from pipeline.errors import DomainError, SerdeError
from pipeline.lanes import LanePolicy, plan_lanes
from pipeline.logging import get_logger
from pipeline.settings import Settings
from pipeline.topics import TopicSpec, dead_letter, group, lane_of, name


@dataclass(frozen=True)
class Output:
    """One event to produce: where, and under which key (the report id unless said otherwise)."""

    topic: TopicSpec
    event: Any
    key: str | None = None


@dataclass
class Context:
    """What a handler may touch besides its input: the settings, and the batch's database transaction."""

    settings: Settings
    db: Any = None  # psycopg.Connection inside an open transaction when the stage uses_db
    source: str | None = None
    """Where the input record sits (``topic:partition:offset``). A stage that keeps state can tell a
    replay of the same record (re-emit what it stored) from a second copy of an event at another offset
    (emit nothing): both carry the same event id."""


Handler = Callable[[Any, Context], Sequence[Output]]


@dataclass(frozen=True)
class Item:
    """One decoded input of a batch, with where it sits (``topic:partition:offset``, as ``Context.source``)."""

    event: Any
    source: str


Refusal = DomainError | SerdeError
BatchHandler = Callable[[Sequence[Item], Context], Sequence[Sequence[Output] | Refusal]]
"""Handles a run of inputs at once (one database round trip for many reports, not several per report).

Returns one entry per item, in order: the outputs of that item, or the ``DomainError``/``SerdeError``
that refuses it (the runner dead-letters that record alone). It must give exactly what calling the
stage's per-record ``handle`` on each item in turn would give, including for several events of one
report in the same run, and be idempotent against a replayed batch the same way. Any other exception
aborts the transaction and the runner handles the batch again one record at a time with ``handle``,
which isolates a poison record (retries, then its dead letter) without losing the others.
"""


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """A step processor: its name, input topics and rules. The runner does the rest."""

    name: str
    inputs: tuple[TopicSpec, ...]
    handle: Handler
    handle_batch: BatchHandler | None = None
    """Optional: the same rules over a run of records (see ``BatchHandler``); ``handle`` stays the reference."""
    lanes: bool = False
    lane_policy: LanePolicy = field(default_factory=LanePolicy)
    uses_db: bool = False
    batch_size: int = 500
    linger_s: float = 0.1
    """After a batch's first record, how long to keep gathering before committing (unless the batch
    fills first). Each Kafka transaction costs the broker about 3 ms of CPU whatever its size (measured
    by scripts/bench_transactions.py: 1 record per transaction 2.6 ms of broker CPU a record, 100 per
    transaction 0.03 ms), so a stage that committed every record it polled spent the broker's core on
    transaction bookkeeping. The linger bounds a stage to about ``1 / linger_s`` transactions a second
    and adds at most that much to a report's latency per stage."""
    max_attempts: int = 3
    on_start: Callable[[Context], None] | None = None
    lock_batch: Callable[[Sequence[bytes], Context], None] | None = None
    """Optional, for a stage with ``uses_db``: called first in each batch's database transaction with the
    keys of the batch's records. A stage whose rules lock rows by key locks them all here, in one order:
    a lane-aware batch is handled in several runs, and rows locked run by run would be taken out of that
    order against other writers of the same rows (seen: simulated analysts deciding a run of reports, rows
    locked in report order, deadlocked with an assess batch that had locked one of them in an earlier run)."""


PREEMPT_CHECK_EVERY = 25
"""A lane-aware batch checks every this many records whether a more urgent lane has records waiting."""


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: Any) -> None:
        self.requested = True


DLQ_VALUE_MAX = 512 * 1024
"""The most of a record's value a dead-letter record copies. A larger record (the broker takes up to its
``message.max.bytes``, our producers send at most librdkafka's 1,000,000) could not be dead-lettered whole:
the produce failed, the transaction with it, and the stage retried that record forever. Its first
``DLQ_VALUE_MAX`` bytes are copied; the record itself stays on its source topic (kept forever) at the
partition and offset the headers name, so nothing is lost."""
DLQ_KEY_MAX = 1024


def dead_letter_copy(
    stage: str, source: Message, reason: str, message: str, field_name: str | None
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers of the dead-letter record of ``source``: its key and value cut to
    ``DLQ_KEY_MAX`` and ``DLQ_VALUE_MAX`` bytes (headers say from what size), why and where it failed."""
    headers = [
        ("dlq.stage", stage.encode()),
        ("dlq.reason", reason.encode()),
        ("dlq.message", message.encode()[:2000]),
        ("dlq.source.topic", (source.topic() or "").encode()),
        ("dlq.source.partition", str(source.partition()).encode()),
        ("dlq.source.offset", str(source.offset()).encode()),
    ]
    if field_name:
        headers.append(("dlq.field", field_name.encode()))
    key, value = source.key(), source.value()
    if key is not None and len(key) > DLQ_KEY_MAX:
        headers.append(("dlq.key.truncated_from", str(len(key)).encode()))
        key = bytes(key[:DLQ_KEY_MAX])
    if value is not None and len(value) > DLQ_VALUE_MAX:
        headers.append(("dlq.value.truncated_from", str(len(value)).encode()))
        value = bytes(value[:DLQ_VALUE_MAX])
    return key, value, headers


class StageRunner:
    """Runs one instance of a stage until stopped. Built by ``run_stage``; tests may drive it directly."""

    def __init__(self, spec: StageSpec, settings: Settings, *, instance: str | int = 0) -> None:
        self.spec = spec
        self.settings = settings
        self.suffix = settings.topic_suffix
        self.log = get_logger(stage=spec.name, instance=instance)
        self.dlq_topic = name(dead_letter(spec.name), self.suffix)
        self.input_names = [name(t, self.suffix) for t in spec.inputs]
        self.producer: Producer = kafka.producer(
            settings,
            **{
                "transactional.id": f"{group(spec.name, self.suffix)}.{instance}",
                "transaction.timeout.ms": 30000,
                # Nothing produced is visible before the commit, and commit_transaction sends what
                # lingers at once: a long linger costs no latency and gathers a batch's records into
                # a few produce requests (2 ms sent many small ones; a 15,000-report demo's broker CPU
                # went from 9.0 to 6.9 s).
                "linger.ms": 50,
            },
        )
        self.consumer: Consumer = kafka.consumer(
            settings,
            group(spec.name, self.suffix),
            **{
                # Small prefetch so that a paused low lane does not keep a deep local queue.
                "queued.max.messages.kbytes": 8192,
                "max.poll.interval.ms": 300000,
                "partition.assignment.strategy": "cooperative-sticky",
                # Static membership: a restarted instance (same name) takes its partitions back at once
                # instead of waiting for the broker to time its killed predecessor out.
                "group.instance.id": f"{group(spec.name, self.suffix)}.{instance}",
                "session.timeout.ms": 15000,
            },
        )
        self.failures: dict[tuple[str, int, int], int] = {}
        self.held_since: dict[int, float | None] = {}
        self.paused: set[int] = set()
        self.paused_waiting: dict[int, bool] = {}
        self.granted: dict[int, float] = {}
        self.start_offsets: dict[tuple[str, int], int] = {}
        self.lanes_dirty = False
        self._by_lane: dict[int, list[TopicPartition]] | None = None
        """The assigned lane partitions, read from the consumer once per assignment (a rebalance
        forgets them): the preemption check runs every few records."""
        self.pending: list[Message] = []
        """What a preempted batch left unhandled, in order: handled after the more urgent lane, from
        memory (seeking back would throw away and fetch again what the consumer has prefetched)."""
        self.preemptions = 0
        self.transactions = 0
        self.processed = 0
        self.db: Any = None

    # -- lanes ---------------------------------------------------------------------------------------------
    def _lane_partitions(self) -> dict[int, list[TopicPartition]]:
        if self._by_lane is not None:
            return self._by_lane
        by_lane: dict[int, list[TopicPartition]] = {}
        for tp in self.consumer.assignment():
            lane = lane_of(tp.topic)
            if lane is not None:
                by_lane.setdefault(lane, []).append(tp)
        self._by_lane = by_lane
        return by_lane

    def _reset_lanes(self, by_lane: dict[int, list[TopicPartition]]) -> None:
        """After a rebalance: every assigned lane partition fetching again, the bookkeeping from scratch.

        A cooperative rebalance keeps retained partitions paused and adds new ones unpaused, so the
        per-lane pause state is rebuilt rather than trusted.
        """
        tps = [tp for lane_tps in by_lane.values() for tp in lane_tps]
        if tps:
            self.consumer.resume(tps)
        self.paused.clear()
        self.paused_waiting.clear()
        self.held_since.clear()
        self.granted.clear()
        self.start_offsets.clear()
        self.lanes_dirty = False

    def _read_positions(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The next offset this consumer will read on each partition.

        ``position()`` knows it only once a record was consumed on the partition; before that (a
        restarted instance on a lane with history) it is the group's committed offset, else the start.
        """
        out: dict[tuple[str, int], int] = {}
        unknown: list[TopicPartition] = []
        for tp in self.consumer.position(tps):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                out[key] = tp.offset
            elif key in self.start_offsets:
                out[key] = self.start_offsets[key]
            else:
                unknown.append(TopicPartition(tp.topic, tp.partition))
        if unknown:
            try:
                committed = self.consumer.committed(unknown, timeout=10)
            except KafkaException as exc:
                self.log.debug("committed_lookup_failed", error=str(exc))
                committed = []
            for tp in committed:
                key = (tp.topic, tp.partition)
                if tp.offset >= 0:
                    offset = tp.offset
                else:
                    try:
                        low, _high = self.consumer.get_watermark_offsets(tp, cached=True)
                    except KafkaException:
                        low = 0
                    offset = max(low, 0)
                self.start_offsets[key] = offset
                out[key] = offset
        return out

    def _lanes_waiting(self, by_lane: dict[int, list[TopicPartition]]) -> dict[int, bool]:
        """Whether each lane has records this consumer has not read yet, or holds from a preempted batch."""
        kept = {lane_of(m.topic() or "") for m in self.pending}
        unpaused = [tp for lane, tps in by_lane.items() if lane not in self.paused for tp in tps]
        positions = self._read_positions(unpaused) if unpaused else {}
        waiting: dict[int, bool] = {}
        for lane, tps in by_lane.items():
            if lane in self.paused:
                # A held-back lane keeps what it had when it was paused (its watermarks are not refreshed
                # while paused); it is resumed when the lanes above drain, or by aging.
                waiting[lane] = self.paused_waiting.get(lane, False) or lane in kept
                continue
            has = lane in kept
            for tp in tps:
                try:
                    _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                except KafkaException:
                    continue
                pos = positions.get((tp.topic, tp.partition))
                if pos is not None and high > pos:
                    has = True
                    break
            waiting[lane] = has
        return waiting

    def _apply_lanes(self) -> None:
        by_lane = self._lane_partitions()
        if self.lanes_dirty:
            self._reset_lanes(by_lane)
        if not by_lane:
            return
        now = time.monotonic()
        waiting = self._lanes_waiting(by_lane)
        for lane, since in list(self.granted.items()):
            nothing_left = lane not in self.paused and not waiting.get(lane, False)
            if nothing_left or now - since >= self.spec.lane_policy.grant_s:
                del self.granted[lane]
        plan = plan_lanes(waiting, self.held_since, now, self.spec.lane_policy, granted=self.granted)
        for lane in plan.granted:
            self.granted.setdefault(lane, now)
        for lane, tps in by_lane.items():
            if lane in plan.active and lane in self.paused:
                self.consumer.resume(tps)
                self.paused.discard(lane)
                self.held_since[lane] = None
            elif lane not in plan.active and lane not in self.paused:
                self.consumer.pause(tps)
                self.paused.add(lane)
                self.paused_waiting[lane] = waiting[lane]
                self.held_since[lane] = now

    def _gather(self, timeout: float) -> list[Message]:
        """The next batch: its first record as soon as it comes (within ``timeout``), then whatever
        else arrives within ``linger_s`` of it, up to ``batch_size`` records."""
        msgs = self._consume_promptly(timeout)
        if not msgs or self.spec.linger_s <= 0:
            return msgs
        if self.spec.lanes and lane_of(msgs[0].topic() or "") == 1:
            return msgs  # the most urgent lane does not wait for company
        deadline = time.monotonic() + self.spec.linger_s
        while len(msgs) < self.spec.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # consume(n, t) returns when n records are there or t has passed, whichever is first.
            msgs.extend(self.consumer.consume(self.spec.batch_size - len(msgs), left))
        return msgs

    def _consume_promptly(self, timeout: float) -> list[Message]:
        """Up to a batch of what is already fetched, or else the first record to arrive within ``timeout``.

        ``consume(n, timeout)`` waits for ``n`` records or the whole timeout, so a lone top-priority
        record after the lanes below were paused would wait out the timeout (measured: the full 0.2 s
        of a ``poll_once(0.2)``); a lane-aware consumer takes it as soon as it is there.
        """
        msgs = self.consumer.consume(self.spec.batch_size, 0)
        if msgs:
            return msgs
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.spec.batch_size - 1, 0)]

    def _preempted(self, msg: Message) -> bool:
        """Whether a lane more urgent than ``msg``'s has records waiting (then the batch stops before it).

        Without this, a top-priority record landing just after a batch of low-lane records was consumed
        waits for the whole batch, and often for the next one too (it is fetched behind it). Not during
        an aging grant: the grant is the one batch the lower lane is owed.
        """
        lane = lane_of(msg.topic() or "")
        if lane is None or lane == 1 or self.granted:
            return False
        by_lane = self._lane_partitions()
        above = [tp for lvl, tps in by_lane.items() if lvl < lane and lvl not in self.paused for tp in tps]
        if not above:
            return False
        positions = self._read_positions(above)
        for tp in above:
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            pos = positions.get((tp.topic, tp.partition))
            if pos is not None and high > pos:
                return True
        return False

    def _lanes_delivered(self, msgs: list[Message]) -> None:
        for m in msgs:
            lane = lane_of(m.topic() or "")
            if lane is not None:
                self.granted.pop(lane, None)

    # -- the loop ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.producer.init_transactions(30)
        self.consumer.subscribe(
            self.input_names,
            on_assign=self._on_rebalance,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        if self.spec.uses_db:
            from pipeline.db import connect

            self.db = connect(self.settings)
        if self.spec.on_start is not None:
            self.spec.on_start(Context(self.settings, self.db))
        self.log.info("stage_started", inputs=self.input_names)

    def _on_rebalance(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._by_lane = None  # the consumer's assignment changes once this callback returns
        self.lanes_dirty = True  # applied by the next _apply_lanes (pause state is rebuilt there)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Records kept from a revoked partition are not ours to handle any more: its next owner reads
        # them from the committed offset.
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.pending = [m for m in self.pending if (m.topic(), m.partition()) not in gone]
        self._on_rebalance(consumer, partitions)

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume one batch and commit it with its outputs; return how many records it held."""
        if self.spec.lanes:
            self._apply_lanes()
        if self.pending:
            # A batch was preempted: add what is already fetched (no waiting), the urgent lane first.
            fresh = self.consumer.consume(self.spec.batch_size, 0)
            msgs, self.pending = [*self.pending, *fresh], []
        else:
            msgs = self._gather(timeout)
        msgs = [m for m in msgs if not self._is_benign_error(m)]
        if not msgs:
            return 0
        if self.spec.lanes:
            msgs.sort(key=lambda m: lane_of(m.topic() or "") or 0)  # stable: partition order is kept
            self._lanes_delivered(msgs)
        self._process_batch(msgs)
        return len(msgs)

    def _is_benign_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return True
        if err.fatal():
            # e.g. fenced by another instance with the same name: this one can never consume again, so it
            # stops (non-zero) for its supervisor to see, instead of idling forever.
            self.log.error("consumer_fatal", error=err.str())
            raise KafkaException(err)
        self.log.warning("consumer_error", error=err.str())
        return True

    def _process_batch(self, msgs: list[Message]) -> None:
        attempt = 0
        per_record = self.spec.handle_batch is None
        while True:
            attempt += 1
            try:
                handled = self._transact(msgs, per_record=per_record)
            except _BatchFailed as failed:
                # Nothing of the batch was committed; handle it again record by record (the reference).
                self.log.warning("batch_handler_failed", error=failed.detail, records=len(msgs))
                per_record = True
                attempt -= 1
                continue
            except _Retry as retry:
                # The batch is still in memory and its offsets were not committed: try it again as it is.
                if attempt >= self.spec.max_attempts:
                    self._mark_failure(retry.msg)
                time.sleep(min(0.2 * 2**attempt, 5.0))
                continue
            except KafkaException as exc:
                self.log.warning("transaction_failed", error=str(exc), attempt=attempt)
                self._abort()
                self._rewind(msgs)
                if _fatal(exc):
                    raise
                time.sleep(min(0.2 * 2**attempt, 5.0))
                return
            if handled < len(msgs):
                # Preempted by a more urgent lane: the rest was not committed; it is handled from memory
                # after the urgent records (a crash before that replays it from the committed offsets).
                self.pending = msgs[handled:]
                self.preemptions += 1
                self.log.debug("batch_preempted", handled=handled, put_back=len(msgs) - handled)
            self.processed += handled
            return

    def _mark_failure(self, msg: Message | None) -> None:
        if msg is not None:
            key = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            self.failures[key] = self.spec.max_attempts

    def _transact(self, msgs: list[Message], *, per_record: bool = True) -> int:
        """Handle a batch in one transaction; return how many records it handled (all, unless preempted)."""
        self.producer.begin_transaction()
        db_tx = self.db.transaction() if self.db is not None else None
        try:
            ctx = Context(self.settings, self.db)
            if db_tx is not None:
                db_tx.__enter__()
                if self.spec.lock_batch is not None:
                    self.spec.lock_batch([k for m in msgs if (k := m.key()) is not None], ctx)
            handled = len(msgs)
            if per_record:
                for i, msg in enumerate(msgs):
                    if self.spec.lanes and i and i % PREEMPT_CHECK_EVERY == 0 and self._preempted(msg):
                        handled = i
                        break
                    self._handle_one(msg, ctx)
            else:
                handled = self._handle_runs(msgs, ctx)
            if db_tx is not None:
                db_tx.__exit__(None, None, None)
                db_tx = None
            self.producer.send_offsets_to_transaction(
                _next_offsets(msgs[:handled]),
                self.consumer.consumer_group_metadata(),
                30,
            )
            self.producer.commit_transaction(30)
            self.transactions += 1
        except BaseException as exc:
            if db_tx is not None:
                db_tx.__exit__(type(exc), exc, exc.__traceback__)
            self._abort()
            raise
        return handled

    def _handle_runs(self, msgs: list[Message], ctx: Context) -> int:
        """The batch through ``handle_batch``: in runs of ``PREEMPT_CHECK_EVERY`` for a lane-aware stage
        (a more urgent lane may stop the batch between runs), else in one run."""
        handle_batch = self.spec.handle_batch
        if handle_batch is None:
            raise TypeError("a batch without a handle_batch")  # _process_batch never asks for it
        step = PREEMPT_CHECK_EVERY if self.spec.lanes else len(msgs)
        for start in range(0, len(msgs), step):
            if start and self._preempted(msgs[start]):
                return start
            run = msgs[start : start + step]
            items: list[Item] = []
            decoded: list[Message] = []
            for msg in run:
                event = self._decode(msg)
                if event is not None:
                    items.append(Item(event, _source(msg)))
                    decoded.append(msg)
            if not items:
                continue
            try:
                results = handle_batch(items, ctx)
            except Exception as exc:  # handled again record by record by _process_batch
                raise _BatchFailed(f"{type(exc).__name__}: {exc}") from exc
            if len(results) != len(items):
                raise _BatchFailed(f"handle_batch gave {len(results)} results for {len(items)} records")
            for msg, result in zip(decoded, results, strict=True):
                if isinstance(result, DomainError | SerdeError):
                    self._dead_letter(msg, result.reason, str(result), result.field)
                else:
                    self._produce_outputs(msg, result)
        return len(msgs)

    def _decode(self, msg: Message) -> Any:
        """The record's event, or None once it was dead-lettered (undecodable, or failed too often)."""
        key = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        if self.failures.get(key, 0) >= self.spec.max_attempts:
            self._dead_letter(msg, "unexpected_error", "failed repeatedly; see the stage's log", None)
            return None
        try:
            return serde.decode(msg.value() or b"")
        except SerdeError as exc:
            self._dead_letter(msg, exc.reason, str(exc), exc.field)
        except Exception as exc:  # noqa: BLE001 - a record no decoder path foresaw: dead-letter it, go on
            self._dead_letter(msg, "undecodable", f"{type(exc).__name__}: {exc}", None)
        return None

    def _handle_one(self, msg: Message, ctx: Context) -> None:
        key = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        event = self._decode(msg)
        if event is None:
            return
        try:
            ctx.source = _source(msg)
            outputs = self.spec.handle(event, ctx)
        except DomainError as exc:
            self._dead_letter(msg, exc.reason, str(exc), exc.field)
            return
        except SerdeError as exc:
            self._dead_letter(msg, exc.reason, str(exc), exc.field)
            return
        except Exception as exc:
            self.failures[key] = self.failures.get(key, 0) + 1
            self.log.error(
                "record_failed",
                topic=key[0],
                partition=key[1],
                offset=key[2],
                error=type(exc).__name__,
                detail=traceback.format_exception_only(exc)[-1].strip(),
            )
            raise _Retry(msg) from exc
        self._produce_outputs(msg, outputs)

    def _produce_outputs(self, msg: Message, outputs: Sequence[Output]) -> None:
        for out in outputs:
            try:
                value = serde.encode(out.event)
            except SerdeError as exc:
                self._dead_letter(msg, exc.reason, f"output not encodable: {exc}", exc.field)
                return
            self.producer.produce(
                name(out.topic, self.suffix),
                key=(out.key or out.event.envelope.report_id).encode(),
                value=value,
                headers=list(serde.headers_for(out.event)),
            )

    def _dead_letter(self, msg: Message, reason: str, message: str, field_name: str | None) -> None:
        self.log.warning(
            "record_dead_lettered",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            reason=reason,
            field=field_name,
        )
        key, value, headers = dead_letter_copy(self.spec.name, msg, reason, message, field_name)
        self.producer.produce(self.dlq_topic, key=key, value=value, headers=headers)  # type: ignore[arg-type]

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            self.log.debug("abort_failed", error=str(exc))

    def _rewind(self, msgs: list[Message]) -> None:
        """Seek each partition back to the first record of the failed batch (its offsets were not committed)."""
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            k = (m.topic() or "", m.partition() or 0)
            first[k] = min(first.get(k, m.offset() or 0), m.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                self.log.debug("seek_failed", topic=topic, partition=partition, error=str(exc))

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)
            if self.db is not None:
                self.db.close()
        self.log.info(
            "stage_stopped",
            processed=self.processed,
            transactions=self.transactions,
            preemptions=self.preemptions,
        )


class _BatchFailed(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _source(msg: Message) -> str:
    return f"{msg.topic() or ''}:{msg.partition() or 0}:{msg.offset() or 0}"


class _Retry(Exception):
    def __init__(self, msg: Message) -> None:
        super().__init__("retry")
        self.msg = msg


def _next_offsets(msgs: list[Message]) -> list[TopicPartition]:
    """The offsets to commit for a batch: one past the last record of each partition in it."""
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        k = (m.topic() or "", m.partition() or 0)
        last[k] = max(last.get(k, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _fatal(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return bool(err is not None and hasattr(err, "fatal") and err.fatal())


def run_stage(
    spec: StageSpec, settings: Settings, *, instance: str | int = 0, max_idle_s: float | None = None
) -> int:
    """Run a stage until SIGTERM/SIGINT (or, for tests and benches, until idle for ``max_idle_s``)."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner = StageRunner(spec, settings, instance=instance)
    idle_since = time.monotonic()
    try:
        runner.start()  # inside try: a refused start (bad table, fenced) still closes the clients
        while not stop.requested:
            n = runner.poll_once()
            if n:
                idle_since = time.monotonic()
            elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                break
    finally:
        runner.close()
    return runner.processed
