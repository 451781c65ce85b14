"""A report's classification history, read from the log, and the recording of an analyst's override.

The override needs the classification it supersedes. It is read from the event log itself (the four
classified lanes, from their beginning to their current end, with a deadline), never from another
stage's database. Every partition is read up to its end (``enable.partition.eof``) so that the latest
classification is known before a new one is written; records of other reports are skipped by key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline import kafka, serde
from pipeline.classify.logic import authorize, latest, override, repeats
from pipeline.classify.rules import Tables
from pipeline.errors import SerdeError, ServiceError, TiplineError
from pipeline.events import ActorKind, Category, ReportClassified
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, name


class OverrideRefused(TiplineError):
    """The override cannot be recorded (no such report, a bad argument); nothing was written."""


def read_classifications(
    settings: Settings, report_id: str, *, timeout: float = 15.0
) -> list[ReportClassified]:
    """Every ``ReportClassified`` of the report on the classified lanes, oldest first."""
    topics = [name(spec, settings.topic_suffix) for spec in CLASSIFIED]
    cons = kafka.consumer(
        settings,
        f"tipline.classify.reader.{uuid.uuid4().hex}",
        **{"enable.partition.eof": True, "log_level": kafka.EDGE_LOG_LEVEL},
    )
    key = report_id.encode()
    found: list[ReportClassified] = []
    deadline = time.monotonic() + timeout
    try:
        try:
            metadata = cons.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise ServiceError(
                f"Kafka at {settings.kafka_bootstrap} did not answer; start it with `tipline services up`."
            ) from exc
        pending: set[tuple[str, int]] = set()
        assignment: list[TopicPartition] = []
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                low, high = _watermarks(cons, TopicPartition(topic, partition), deadline)
                if high > low:
                    pending.add((topic, partition))
                    assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        if not assignment:
            return []
        cons.assign(assignment)
        while pending:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"The classified lanes could not be read to their end within {timeout:g} s; "
                    "check the broker and try again."
                )
            for msg in cons.consume(500, 0.2):
                _take(msg, key, pending, found)
    finally:
        cons.close()
    found.sort(key=lambda c: c.envelope.occurred_at)
    return found


def _watermarks(cons: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """A partition's offsets; a topic made a moment ago may still be electing its leader, so retry."""
    while True:
        try:
            low, high = cons.get_watermark_offsets(tp, timeout=max(0.5, deadline - time.monotonic()))
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"Kafka gave no offsets for {tp.topic}/{tp.partition} ({exc.args[0].str()}); try again."
                ) from exc
            time.sleep(0.1)  # a short pause between retries of a leader election, bounded by the deadline
            continue
        return int(low), int(high)


def _take(msg: Message, key: bytes, pending: set[tuple[str, int]], found: list[ReportClassified]) -> None:
    err = msg.error()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            pending.discard((msg.topic() or "", msg.partition() or 0))
            return
        raise ServiceError(f"Reading the classified lanes failed: {err.str()}.")
    if msg.key() != key:
        return
    try:
        event = serde.decode(msg.value() or b"")
    except SerdeError as exc:
        raise ServiceError(
            f"The record at {msg.topic()}/{msg.partition()}@{msg.offset()} cannot be read ({exc}); "
            "an operator must look at it before this report is reclassified."
        ) from exc
    if isinstance(event, ReportClassified):
        found.append(event)


@dataclass(frozen=True)
class OverrideResult:
    event: ReportClassified
    written: bool
    """False when the classification in force is already this very override (nothing written twice)."""


def record_override(
    settings: Settings,
    tables: Tables,
    *,
    report_id: str,
    category: str,
    sections: Iterable[str],
    reason: str,
    analyst: str | None,
    role: ActorKind = ActorKind.ANALYST,
    incident_ids: Iterable[str] = (),
    timeout: float = 15.0,
) -> OverrideResult:
    """Check the actor, read the report's classifications, and append the override to the same lane."""
    actor = authorize(role, analyst)  # before touching the log: an auditor never writes
    try:
        chosen = Category(category.strip())
    except ValueError:
        raise OverrideRefused(
            f"{category!r} is not a category; use one of {', '.join(c.value for c in Category)}."
        ) from None
    report_id = report_id.strip()
    history = read_classifications(settings, report_id, timeout=timeout)
    previous = latest(history)
    if previous is None:
        raise OverrideRefused(f"Report {report_id} has no classification on the log; nothing was written.")
    event = override(
        previous,
        category=chosen,
        sections=sections,
        reason=reason,
        actor=actor,
        tables=tables,
        now=datetime.now(UTC),
        incident_ids=incident_ids,
    )
    if repeats(previous, event):
        return OverrideResult(event=previous, written=False)
    _produce(settings, event)
    return OverrideResult(event=event, written=True)


def _produce(settings: Settings, event: ReportClassified) -> None:
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err.str())

    producer = kafka.producer(settings)
    headers: list[tuple[str, str | bytes | None]] = list(serde.headers_for(event))
    producer.produce(
        name(CLASSIFIED[event.level - 1], settings.topic_suffix),
        key=event.envelope.report_id.encode(),
        value=serde.encode(event),
        headers=headers,
        on_delivery=delivered,
    )
    remaining = producer.flush(30)
    if remaining or errors:
        reason = errors[0] if errors else "no acknowledgement within 30 s"
        raise ServiceError(f"The override could not be written to the log ({reason}); run the command again.")
