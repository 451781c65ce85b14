"""Watches the end of the pipeline from the log: which reports are closed (or rejected), how often,
and which referrals went out. The demo's progress bar, the kill test's checks and the benchmark's
latency figures all read it. It is a plain consumer of the committed log, not a read model."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer

from pipeline import kafka, serde
from pipeline.errors import SerdeError
from pipeline.events import ReportClosed, ReportReferred, ReportRejected
from pipeline.settings import Settings
from pipeline.topics import CLOSED, RECEIVED, REFERRED, name


@dataclass
class Verdict:
    """What a finished run must show: every report ended exactly once, no referral twice."""

    expected: int
    ended: int
    closed_twice: list[str]
    duplicate_referrals: list[tuple[str, str]]
    missing: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and not self.closed_twice and not self.duplicate_referrals


@dataclass
class Tally:
    closes: Counter[str] = field(default_factory=Counter)
    rejected: set[str] = field(default_factory=set)
    referrals: Counter[tuple[str, str]] = field(default_factory=Counter)
    received_at: dict[str, datetime] = field(default_factory=dict)
    closed_at: dict[str, datetime] = field(default_factory=dict)
    undecodable: int = 0

    @property
    def ended(self) -> int:
        return len(set(self.closes) | self.rejected)

    def add(self, data: bytes) -> None:
        try:
            if serde.event_type_of(data) == "ReportReceived":
                return  # the received topic's bulk: not an end, and not worth decoding here
            event = serde.decode(data)
        except SerdeError:
            self.undecodable += 1
            return
        match event:
            case ReportClosed():
                rid = event.envelope.report_id
                self.closes[rid] += 1
                self.received_at.setdefault(rid, event.received_at)
                self.closed_at.setdefault(rid, event.envelope.occurred_at)
            case ReportRejected():
                # A resubmission is rejected as a duplicate of a report that is counted on its own.
                if event.duplicate_of is None:
                    self.rejected.add(event.envelope.report_id)
            case ReportReferred():
                r = event.recipient
                self.referrals[(event.envelope.report_id, f"{r.kind}:{r.jurisdiction}:{r.name}")] += 1
            case _:
                pass  # the received topic also carries ReportReceived: not an end

    def verdict(self, expected: int) -> Verdict:
        return Verdict(
            expected=expected,
            ended=self.ended,
            closed_twice=sorted(r for r, n in self.closes.items() if n > 1),
            duplicate_referrals=sorted(k for k, n in self.referrals.items() if n > 1),
            missing=max(0, expected - self.ended),
        )


class Watcher:
    """Consumes the closed, received and referred topics from the start and keeps a ``Tally``."""

    def __init__(self, settings: Settings) -> None:
        self.tally = Tally()
        self.consumer: Consumer = kafka.consumer(
            settings, f"tipline.watch{settings.topic_suffix}.{uuid.uuid4().hex[:8]}"
        )
        self.consumer.subscribe([name(t, settings.topic_suffix) for t in (CLOSED, RECEIVED, REFERRED)])

    def poll(self, timeout: float = 0.2) -> int:
        n = 0
        for msg in self.consumer.consume(1000, timeout):
            value = msg.value()
            if msg.error() is None and value is not None:
                self.tally.add(value)
                n += 1
        return n

    def close(self) -> None:
        self.consumer.close()
