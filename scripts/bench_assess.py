"""Benchmark: the analysts' queue on the real PostgreSQL and Kafka (step 6). Prints figures, asserts nothing.

Run: ``.venv/bin/python scripts/bench_assess.py [--reports 2000]`` with the services up.

1. enqueue: classified reports put in the queue per second, in batches of 500 in one transaction each
   (what the assess stage does per Kafka batch);
2. claim+decide: reports claimed and decided per second by 1 simulated analyst, then by 4 at once
   (``SKIP LOCKED`` claims; each decision produces ``ReportAssessed`` and waits for the broker's ack),
   and the ratio of the two, measured in the same process.

Everything runs under a namespace (topic suffix) of its own, whose rows are deleted at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
import uuid
from datetime import UTC, datetime

from pipeline import events as ev
from pipeline import kafka
from pipeline.assess import queue
from pipeline.db import connect
from pipeline.logging import configure
from pipeline.settings import Settings
from pipeline.topics import ASSESSED

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def template() -> ev.ReportClassified:
    actor = ev.Actor(kind=ev.ActorKind.SYSTEM, id="classify")
    env = ev.Envelope(
        event_id=str(uuid.uuid4()),
        event_type="ReportClassified",
        report_id="r",
        occurred_at=NOW,
        producer="classify/0.1.0",
        causation_id=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        actor=actor,
    )
    urls = tuple(
        ev.UrlRef(
            original=f"https://host{i}.example/p/{i}",
            normalized=f"https://host{i}.example/p/{i}",
            host=f"host{i}.example",
        )
        for i in range(5)
    )
    incident = ev.Incident(incident_id="r-1", technology=ev.Technology.WEB_PAGE, urls=urls)
    body = ev.ReportBody(
        report_number="CT-r",
        channel=ev.Channel.WEB,
        language=ev.Language.EN,
        received_at=NOW,
        reporter_category=ev.Category.CSAM,
        description="x" * 400,
        incidents=(incident,),
        facts=ev.Facts(),
        anonymous=False,
        contact=ev.EncryptedContact(key_id="k", nonce=b"\0" * 12, ciphertext=b"c" * 80),
    )
    return ev.ReportClassified(
        envelope=env,
        level=2,
        arrival_seq=0,
        incidents=(
            ev.IncidentClassification(
                incident_id="r-1",
                reporter_category=ev.Category.CSAM,
                assigned_category=ev.Category.CSAM,
                verdict=ev.Verdict.CONFIRMED,
                sections=("163.1(4)",),
            ),
        ),
        needs_analyst_review=False,
        body=body,
    )


def reports(n: int, tag: str) -> list[ev.ReportClassified]:
    base = template()
    out = []
    for i in range(n):
        rid = f"bench-{tag}-{i}"
        env = dataclasses.replace(base.envelope, event_id=str(uuid.uuid4()), report_id=rid)
        body = dataclasses.replace(base.body, report_number=f"CT-{rid}")
        out.append(dataclasses.replace(base, envelope=env, body=body, level=1 + i % 4, arrival_seq=i))
    return out


def enqueue_rate(settings: Settings, events: list[ev.ReportClassified]) -> float:
    started = time.perf_counter()
    with connect(settings) as conn:
        for start in range(0, len(events), 500):
            with conn.transaction():
                for e in events[start : start + 500]:
                    queue.enqueue_classified(conn, settings.topic_suffix, e, NOW)
    return len(events) / (time.perf_counter() - started)


def decide_rate(settings: Settings, n: int, analysts: int) -> float:
    started = time.perf_counter()
    summary = queue.simulate(settings, seed=7, analysts=analysts, until_empty=True, idle_s=0.0)
    elapsed = time.perf_counter() - started
    if summary.decided != n:
        raise SystemExit(f"expected {n} decisions, got {summary.decided}")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    args = parser.parse_args()
    n: int = args.reports
    base = Settings.from_env()
    settings = base.with_suffix(f".bench{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, (ASSESSED,))
    configure("json", level=logging.WARNING)  # the figures, not one log line per report
    try:
        rate = enqueue_rate(settings, reports(n, "a"))
        print(f"enqueue: {rate:,.0f} reports/s ({n} reports, batches of 500)")
        one = decide_rate(settings, n, 1)
        print(f"claim+decide, 1 simulated analyst: {one:,.0f} reports/s")
        enqueue_rate(settings, reports(n, "b"))
        four = decide_rate(settings, n, 4)
        print(f"claim+decide, 4 simulated analysts: {four:,.0f} reports/s")
        print(f"ratio 4 analysts / 1 analyst: {four / one:.2f}x")
    finally:
        with connect(settings, autocommit=True) as conn:
            for table in ("assess_queue", "assess_queue_seen", "assess_decision"):
                conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (settings.topic_suffix,))  # noqa: S608 - fixed table names


if __name__ == "__main__":
    main()
