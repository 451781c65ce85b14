"""Intake systems' way in: validate a report, encrypt its contact, publish ``ReportSubmitted``, await the ack.

    from pipeline.ingest.client import submit_report
    receipt = submit_report(settings, {"submission_id": "...", "description": "...", "urls": [...]})

The producer is idempotent with ``acks=all`` (``pipeline.kafka``); ``submit_report`` returns only once
the broker has durably written the event to the submitted topic, keyed by the report id. Sending the
same submission id again is safe: it maps to the same report id, and ingest never makes a second report.
"""

from __future__ import annotations

from collections.abc import Iterable
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
SUBMIT_MANY_CHUNK = 500
"""``IntakeClient.submit_many`` stores the contact keys of this many reports per database round trip."""


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
    conf: dict[str, Any] = {
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "linger.ms": 2,
        # A broker that does not answer is told by the delivery report (503, one sentence), not by
        # librdkafka's error lines on the caller's terminal.
        "log_level": kafka.EDGE_LOG_LEVEL,
    }
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
            receipts = intake.submit_many(report_dicts)

    ``submit`` returns once the broker acknowledged the report (as ``submit_report`` does);
    ``submit(..., wait=False)`` only queues it, and ``flush()`` (called on exit) waits for every queued
    report and raises ``ServiceError`` if any was not stored. ``submit_many`` queues a whole run the
    way ``submit(wait=False)`` would each report, storing the contacts' data keys in one statement per
    ``SUBMIT_MANY_CHUNK`` reports instead of one round trip per report.

    Queued reports wait up to ``linger_ms`` (default 5 ms) to travel to the broker together: a run of
    reports makes a few large produce requests rather than one per report, which costs the broker far
    less CPU. ``flush()`` (and so ``submit(wait=True)``) sends at once.
    """

    def __init__(
        self, settings: Settings, *, channel: ev.Channel = ev.Channel.API, linger_ms: int = 5
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.producer = intake_producer(settings, **{"linger.ms": linger_ms})
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

    def check(self, report: dict[str, Any] | ev.ReportSubmitted | CheckedReport) -> CheckedReport:
        """A report validated (a dict parsed, an event checked), not yet sealed nor queued.

        ``submit`` and ``submit_many`` call it; a system that prepares its reports ahead of time (the
        demo's intake systems do, before the clock starts) calls it first and hands the results in.
        Its submission time is the time of the check. Raises ``DomainError`` naming the field.
        """
        if isinstance(report, CheckedReport):
            return report
        if isinstance(report, ev.ReportSubmitted):
            logic.check_submitted(report)
            logic.normalized_content(report, now=now_ms())
            return CheckedReport(event=report)
        now = now_ms()
        return CheckedReport(parsed=logic.parse_report(report, now=now), now=now)

    def _queue(self, pending: CheckedReport, keys: dict[str, bytes | None]) -> SubmissionReceipt:
        event = pending.event
        if event is None:
            parsed, now = pending.parsed, pending.now
            if parsed is None or now is None:
                raise ValueError("a pending report holds an event or a parsed report")
            enc = None
            if parsed.contact is not None:
                enc = crypto.seal(parsed.report_id, keys[parsed.report_id], parsed.contact)
            event = logic.to_submitted(parsed, channel=self.channel, now=now, contact=enc)
        while True:
            try:
                produce_submitted(self.producer, self.settings, event, self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.1)  # the local queue is full: let deliveries drain
        self.producer.poll(0)
        return receipt_of(event)

    def _keys(self, pending: list[CheckedReport]) -> dict[str, bytes | None]:
        """The data keys of the pending reports that carry a contact: one round trip for them all."""
        ids = [p.parsed.report_id for p in pending if p.parsed is not None and p.parsed.contact is not None]
        return self.ring.data_keys(self._connection(), ids) if ids else {}

    def submit(
        self, report: dict[str, Any] | ev.ReportSubmitted | CheckedReport, *, wait: bool = True
    ) -> SubmissionReceipt:
        pending = self.check(report)
        receipt = self._queue(pending, self._keys([pending]))
        if wait:
            self.flush()
        return receipt

    def submit_many(
        self, reports: Iterable[dict[str, Any] | ev.ReportSubmitted | CheckedReport]
    ) -> list[SubmissionReceipt]:
        """Queue every report as ``submit(report, wait=False)`` would, in order; ``flush()`` confirms them.

        An invalid report (or one whose contact was erased) raises its ``DomainError`` once the reports
        before it are queued, with a note giving its position; none after it is queued. Contact keys
        are made in bulk, so a few reports after an invalid one may have a stored key and no event (a
        later submission of them reuses it).
        """
        receipts: list[SubmissionReceipt] = []
        chunk: list[CheckedReport] = []
        index = 0

        def send() -> None:
            nonlocal index
            keys = self._keys(chunk)
            for pending in chunk:
                try:
                    receipts.append(self._queue(pending, keys))
                except DomainError as exc:
                    exc.add_note(f"report {index} of the run; the {index} before it were queued")
                    raise
                index += 1
            chunk.clear()

        for report in reports:
            try:
                chunk.append(self.check(report))
            except DomainError as exc:
                send()
                exc.add_note(f"report {index} of the run; the {index} before it were queued")
                raise
            if len(chunk) >= SUBMIT_MANY_CHUNK:
                send()
        send()
        return receipts

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


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckedReport:
    """A report checked (``IntakeClient.check``) and waiting for its contact key: a ready event, or a
    parsed JSON report with the time it was checked."""

    event: ev.ReportSubmitted | None = None
    parsed: logic.ParsedReport | None = None
    now: datetime | None = None
