"""Intake systems' way in: validate a report, encrypt its contact, publish ``ReportSubmitted``, await the ack.

    from pipeline.ingest.client import submit_report
    receipt = submit_report(settings, {"submission_id": "...", "description": "...", "urls": [...]})

The producer is idempotent with ``acks=all`` (``pipeline.kafka``); ``submit_report`` returns only once
the broker has durably written the event to the submitted topic, keyed by the report id. Sending the
same submission id again is safe: it maps to the same report id, and ingest never makes a second report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipeline import db, kafka, serde
from pipeline import events as ev
from pipeline.errors import DomainError, ServiceError
from pipeline.ingest import crypto, logic
from pipeline.settings import Settings
from pipeline.topics import SUBMITTED, name

DELIVERY_TIMEOUT_MS = 15_000


@dataclass(frozen=True, kw_only=True)
class SubmissionReceipt:
    """What a submitter gets back: the ids, and a short reference to quote."""

    report_id: str
    submission_id: str
    reference: str
    event_id: str

    def as_json(self) -> dict[str, str]:
        return {"report_id": self.report_id, "submission_id": self.submission_id, "reference": self.reference}


def receipt_of(event: ev.ReportSubmitted) -> SubmissionReceipt:
    return SubmissionReceipt(
        report_id=event.envelope.report_id,
        submission_id=event.submission_id,
        reference=logic.reference_for(event.envelope.report_id),
        event_id=event.envelope.event_id,
    )


def intake_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent, acks=all producer whose deliveries fail after a bounded time (never hang a caller)."""
    conf: dict[str, Any] = {"message.timeout.ms": DELIVERY_TIMEOUT_MS, "linger.ms": 2}
    conf.update(overrides)
    return kafka.producer(settings, **conf)


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_event(
    settings: Settings,
    data: dict[str, Any],
    *,
    channel: ev.Channel,
    conn: Any = None,
    ring: crypto.Keyring | None = None,
) -> ev.ReportSubmitted:
    """Validate a JSON report and make its event, encrypting the contact (one DB round trip if any)."""
    now = now_ms()
    parsed = logic.parse_report(data, now=now)
    enc = None
    if parsed.contact is not None:
        ring = ring or crypto.keyring(settings)
        if conn is not None:
            enc = crypto.encrypt_contact(conn, parsed.report_id, dict(parsed.contact), ring=ring)
        else:
            with db.connect(settings, autocommit=True) as own:
                enc = crypto.encrypt_contact(own, parsed.report_id, dict(parsed.contact), ring=ring)
    return logic.to_submitted(parsed, channel=channel, now=now, contact=enc)


def produce_submitted(
    producer: Producer, settings: Settings, event: ev.ReportSubmitted, on_delivery: Any
) -> None:
    producer.produce(
        name(SUBMITTED, settings.topic_suffix),
        key=event.envelope.report_id.encode(),
        value=serde.encode(event),
        headers=list(serde.headers_for(event)),
        on_delivery=on_delivery,
    )


def delivery_error(err: KafkaError | None) -> ServiceError | None:
    if err is None:
        return None
    return ServiceError(
        f"Kafka did not acknowledge the report ({err.str()}); it was not stored, send it again."
    )


def submit_report(
    settings: Settings,
    report: dict[str, Any] | ev.ReportSubmitted,
    *,
    producer: Producer | None = None,
    channel: ev.Channel = ev.Channel.API,
) -> SubmissionReceipt:
    """Validate, encrypt the contact, produce to the submitted topic and wait for the broker's ack.

    ``report`` is a JSON-shaped dict (the HTTP body format) or a ready ``ReportSubmitted`` (whose
    contact must already be encrypted). Raises ``DomainError`` naming the field of an invalid report,
    ``ServiceError`` when the broker does not acknowledge in time.
    """
    if isinstance(report, ev.ReportSubmitted):
        event = report
        logic.check_submitted(event)
        logic.normalized_content(event, now=now_ms())
    elif isinstance(report, dict):
        event = build_event(settings, report, channel=channel)
    else:
        raise DomainError(
            "the report must be a JSON object or a ReportSubmitted", reason="wrong_type", field="(body)"
        )
    own = producer is None
    prod = producer if producer is not None else intake_producer(settings)
    outcome: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        outcome.append(err)

    try:
        produce_submitted(prod, settings, event, on_delivery)
        remaining = prod.flush(DELIVERY_TIMEOUT_MS / 1000 + 5)
    finally:
        if own:
            prod.flush(1)
    if remaining or not outcome:
        raise ServiceError(
            "Kafka did not acknowledge the report in time; it may not be stored, send it again."
        )
    err = delivery_error(outcome[0])
    if err is not None:
        raise err
    return receipt_of(event)


class IntakeClient:
    """A long-lived intake connection for systems that submit many reports: one producer, one DB link.

        with IntakeClient(settings) as intake:
            receipt = intake.submit(report_dict)

    ``submit`` returns once the broker acknowledged the report (as ``submit_report`` does);
    ``submit(..., wait=False)`` only queues it, and ``flush()`` (called on exit) waits for every queued
    report and raises ``ServiceError`` if any was not stored.
    """

    def __init__(self, settings: Settings, *, channel: ev.Channel = ev.Channel.API) -> None:
        self.settings = settings
        self.channel = channel
        self.producer = intake_producer(settings, **{"linger.ms": 0})
        self.ring = crypto.keyring(settings)
        self._conn: Any = None
        self._failures: list[KafkaError] = []

    def __enter__(self) -> IntakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = db.connect(self.settings, autocommit=True)
        return self._conn

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(err)

    def submit(self, report: dict[str, Any] | ev.ReportSubmitted, *, wait: bool = True) -> SubmissionReceipt:
        if isinstance(report, ev.ReportSubmitted):
            event = report
            logic.check_submitted(event)
            logic.normalized_content(event, now=now_ms())
        else:
            now = now_ms()
            parsed = logic.parse_report(report, now=now)
            enc = None
            if parsed.contact is not None:
                enc = crypto.encrypt_contact(
                    self._connection(), parsed.report_id, dict(parsed.contact), ring=self.ring
                )
            event = logic.to_submitted(parsed, channel=self.channel, now=now, contact=enc)
        while True:
            try:
                produce_submitted(self.producer, self.settings, event, self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.1)  # the local queue is full: let deliveries drain
        self.producer.poll(0)
        if wait:
            self.flush()
        return receipt_of(event)

    def flush(self) -> None:
        remaining = self.producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 5)
        if remaining:
            raise ServiceError(f"Kafka did not acknowledge {remaining} report(s) in time; send them again.")
        if self._failures:
            err = delivery_error(self._failures[0])
            self._failures.clear()
            if err is not None:
                raise err

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
