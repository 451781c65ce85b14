"""Benchmark: step 6 on the real PostgreSQL and Kafka. Prints figures, asserts nothing.

Run: ``.venv/bin/python scripts/bench_assess.py [--reports 3000] [--seed 7] [--part stage|analysts|all]``
with the services up (``tipline services up``).

1. ``stage``: the assess stage alone, record by record (``handle``) against runs (``handle_batch``). The
   input is the project's generated stream (``pipeline.generator.generate_events``) passed through the
   earlier steps' own rules (ingest's split and numbering, prioritize's ranking, classify's table), with
   some of its file hashes on the known-material list (so the automated pre-assessment decides some
   reports) and one report in 25 re-classified on lane 1 with ``supersedes`` (half of those arriving
   before the classification they supersede, as lanes allow). Each mode gets a topic suffix (topics and
   a PostgreSQL schema) of its own and the very same input records; a ``StageRunner`` in this process
   consumes them until all are handled, timed from its first batch. Afterwards the two modes' outputs
   (automated event ids and determinations) and queue rows (level, status, classification, decision)
   are compared, so a faster mode that decides differently shows up here.
2. ``analysts``: the simulated analysts alone (``queue.simulate``, 2 analysts as ``tipline demo`` runs
   them) on a queue of N open reports: decisions per second, for each ``--batch`` size given (1 is a
   claim and a decision at a time; runs of reports need a version with ``simulate(batch=...)``). Each
   size gets a namespace of its own, filled the same way.

The schemas and topics of the suffixes made here are dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaException
from psycopg import sql

from pipeline import events as ev
from pipeline import kafka, serde, stage_bench
from pipeline.assess import logic, queue
from pipeline.assess.stage import spec
from pipeline.classify import logic as classify_logic
from pipeline.classify.rules import load_tables
from pipeline.db import connect, schema_name
from pipeline.generator import generate_events
from pipeline.ingest import logic as ingest_logic
from pipeline.logging import configure
from pipeline.prioritize import logic as prioritize_logic
from pipeline.runtime import StageSpec
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLASSIFIED, dead_letter, name

DLQ = dead_letter("assess")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# --- Input ------------------------------------------------------------------------------------------


def classified_stream(n: int, seed: int) -> tuple[list[ev.ReportClassified], list[str]]:
    """``n`` generated reports through ingest, prioritize and classify's rules (plus re-classifications),
    in the order the stage should see them, and known-material hash keys (one report with hashes in 8)."""
    tables = load_tables()
    state = prioritize_logic.MemoryState()
    out: list[ev.ReportClassified] = []
    known: list[str] = []
    with_hashes = 0
    for i, submitted in enumerate(generate_events(n, seed), start=1):
        received_at = submitted.submitted_at
        content = ingest_logic.normalized_content(submitted, received_at)
        numbering = ingest_logic.Numbering(
            report_number=ingest_logic.report_number(i, received_at),
            received_at=received_at,
            linked_to=None,
            reporters_count=1,
        )
        received = ingest_logic.received(submitted, content, numbering)
        for prioritized in prioritize_logic.decide(received, state, received_at):
            out.extend(classify_logic.decide(prioritized, tables, received_at))
        keys = logic.report_hash_keys(received.body)
        if keys:
            with_hashes += 1
            if with_hashes % 8 == 0:
                known.append(keys[0])
    events: list[ev.ReportClassified] = []
    for i, event in enumerate(out):
        if i % 25 != 0:
            events.append(event)
            continue
        raised = dataclasses.replace(
            event,
            envelope=dataclasses.replace(event.envelope, event_id=str(uuid.UUID(int=i + 1))),
            level=1,
            supersedes=event.envelope.event_id,
        )
        # Lanes do not order one report's events: every other re-classification overtakes its original.
        events.extend((event, raised) if i % 50 == 0 else (raised, event))
    return events, known


def outputs(settings: Settings) -> dict[str, Any]:
    """What a mode left: its automated events (id, determination) and its queue rows, by report id."""
    cons = kafka.consumer(settings, f"bench.reader.{uuid.uuid4().hex}")
    got: dict[str, Any] = {}
    try:
        cons.subscribe([name(ASSESSED, settings.topic_suffix), name(DLQ, settings.topic_suffix)])
        quiet_until = time.monotonic() + 5
        while time.monotonic() < quiet_until:
            msgs = [m for m in cons.consume(500, 0.5) if m.error() is None]
            if msgs:
                quiet_until = time.monotonic() + 2
            for m in msgs:
                key = (m.key() or b"").decode()
                if m.topic() == name(DLQ, settings.topic_suffix):
                    got.setdefault(key, []).append(("dead-letter", dict(m.headers() or [])["dlq.reason"]))
                    continue
                e = serde.decode(m.value() or b"")
                if not isinstance(e, ev.ReportAssessed):
                    raise SystemExit(f"the assessed topic holds a {type(e).__name__}")
                got.setdefault(key, []).append(("assessed", e.envelope.event_id, e.determination.value))
    finally:
        cons.close()
    with connect(settings) as conn:
        for row in conn.execute(
            "SELECT report_id, level, status, classification_event_id, decided_by, determination, "
            "assessment_event_id FROM assess_queue WHERE namespace = %s",
            (settings.topic_suffix,),
        ):
            got.setdefault(row[0], []).append(("row", *row[1:]))
        for row in conn.execute(
            "SELECT report_id, classification_event_id, outcome FROM assess_queue_seen WHERE namespace = %s "
            "ORDER BY classification_event_id",
            (settings.topic_suffix,),
        ):
            got.setdefault(row[0], []).append(("seen", *row[1:]))
    return got


def bench_stage(base: Settings, args: argparse.Namespace, made: list[Settings]) -> None:
    events, known = classified_stream(args.reports, args.seed)
    full = spec(base)
    print(
        f"assess stage alone: {len(events)} classified records ({args.reports} generated reports, seed "
        f"{args.seed}, {len(known)} known hashes), {os.cpu_count()} CPU(s), one instance, runs of at most 25"
    )
    modes: list[tuple[str, StageSpec]] = [("handle", dataclasses.replace(full, handle_batch=None))]
    if full.handle_batch is not None:
        modes.append(("handle_batch", full))
    else:
        print("  (this version has no handle_batch: only the record-by-record figure)")
    seen: dict[str, dict[str, Any]] = {}
    for round_no in range(args.rounds):
        for label, stage in modes:
            settings = base.with_suffix(f".bassess{uuid.uuid4().hex[:8]}")
            made.append(settings)
            kafka.ensure_topics(settings, (*CLASSIFIED, ASSESSED, DLQ))
            with connect(settings) as conn:
                queue.load_known_hashes(conn, known, source="bench")
            stage_bench.fill(
                settings,
                (
                    (
                        name(CLASSIFIED[e.level - 1], settings.topic_suffix),
                        e.envelope.report_id.encode(),
                        serde.encode(e),
                        None,
                    )
                    for e in events
                ),
            )
            rate, cpu_ms = stage_bench.run(settings, stage, len(events))
            print(f"  round {round_no + 1} {label:13s} {rate:8.0f} records/s   CPU {cpu_ms:.2f} ms/record")
            if round_no == 0:
                seen[label] = outputs(settings)
    if len(seen) == 2:
        one, many = seen["handle"], seen["handle_batch"]
        differ = sorted(
            k for k in one.keys() | many.keys() if sorted(one.get(k, [])) != sorted(many.get(k, []))
        )
        automated = sum(1 for outs in one.values() for o in outs if o[0] == "assessed")
        stale = sum(1 for outs in one.values() for o in outs if o[0] == "seen" and o[2] == "stale")
        print(
            f"  outputs compared: {len(one)} reports ({automated} decided automatically, {stale} stale "
            f"classifications), {len(differ)} differ between the two modes"
            + (f", e.g. {differ[:3]}" if differ else "")
        )


# --- The simulated analysts -------------------------------------------------------------------------


def open_reports(n: int, tag: str) -> list[ev.ReportClassified]:
    """``n`` classified reports that no automated rule decides (each with URLs), over the four levels."""
    actor = ev.Actor(kind=ev.ActorKind.SYSTEM, id="classify")
    out = []
    for i in range(n):
        rid = f"bench-{tag}-{i}"
        urls = tuple(
            ev.UrlRef(
                original=f"https://host{j}.example/p/{i}",
                normalized=f"https://host{j}.example/p/{i}",
                host=f"host{j}.example",
            )
            for j in range(5)
        )
        incident = ev.Incident(incident_id=f"{rid}-1", technology=ev.Technology.WEB_PAGE, urls=urls)
        body = ev.ReportBody(
            report_number=f"CT-{rid}",
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
        envelope = ev.Envelope(
            event_id=str(uuid.uuid4()),
            event_type="ReportClassified",
            report_id=rid,
            occurred_at=NOW,
            producer="classify/0.1.0",
            causation_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
            actor=actor,
        )
        classification = ev.IncidentClassification(
            incident_id=incident.incident_id,
            reporter_category=ev.Category.CSAM,
            assigned_category=ev.Category.CSAM,
            verdict=ev.Verdict.CONFIRMED,
            sections=("163.1(4)",),
        )
        out.append(
            ev.ReportClassified(
                envelope=envelope,
                level=1 + i % 4,
                arrival_seq=i,
                incidents=(classification,),
                needs_analyst_review=False,
                body=body,
            )
        )
    return out


def bench_analysts(base: Settings, args: argparse.Namespace, made: list[Settings]) -> None:
    batching = "batch" in inspect.signature(queue.simulate).parameters
    sizes = args.batch if batching else [1]
    print(f"simulated analysts alone: 2 analysts, a queue of {args.reports} open reports")
    if not batching:
        print("  (this version claims and decides one report at a time: --batch is not used)")
    for round_no in range(args.rounds):
        for size in sizes:
            settings = base.with_suffix(f".bassess{uuid.uuid4().hex[:8]}")
            made.append(settings)
            kafka.ensure_topics(settings, (ASSESSED,))
            reports = open_reports(args.reports, uuid.uuid4().hex[:6])
            with connect(settings) as conn:
                for start in range(0, len(reports), 500):
                    with conn.transaction():
                        for e in reports[start : start + 500]:
                            queue.enqueue_classified(conn, settings.topic_suffix, e, NOW)
            extra: dict[str, Any] = {"batch": size} if batching else {}
            started = time.perf_counter()
            summary = queue.simulate(
                settings, seed=7, analysts=2, until_empty=True, idle_s=0.0, ttl=timedelta(minutes=15), **extra
            )
            elapsed = time.perf_counter() - started
            if summary.decided != len(reports):
                raise SystemExit(f"expected {len(reports)} decisions, got {summary.decided}")
            print(
                f"  round {round_no + 1} batch {size:4d}  {summary.decided / elapsed:8.0f} decisions/s "
                f"({summary.decided} in {elapsed:.1f} s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="repeat each measurement this many times")
    parser.add_argument("--part", choices=("stage", "analysts", "all"), default="all")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 50], help="simulated analysts' run sizes to measure"
    )
    args = parser.parse_args()
    configure("json", level=logging.WARNING)  # the figures, not one log line per report
    base = Settings.from_env()
    made: list[Settings] = []
    try:
        if args.part in {"stage", "all"}:
            bench_stage(base, args, made)
        if args.part in {"analysts", "all"}:
            bench_analysts(base, args, made)
    finally:
        cleanup(made)


def cleanup(made: list[Settings]) -> None:
    """Drop the schemas and topics of the suffixes made here (each unique to this run)."""
    for settings in made:
        with connect(settings, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_name(settings)))
            )
    topics = [name(t, s.topic_suffix) for s in made for t in (*CLASSIFIED, ASSESSED, DLQ)]
    if topics:
        for future in kafka.admin(made[0]).delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):  # a topic this run never made
                future.result()


if __name__ == "__main__":
    main()
