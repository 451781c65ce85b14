"""Benchmark: the ingest stage alone, record by record (``handle``) against runs (``handle_batch``).

Run: ``.venv/bin/python scripts/bench_ingest_stage.py [--reports 3000] [--seed 7] [--rounds 1]`` with the
services up. Prints figures; asserts nothing.

The input is the project's generated stream (``pipeline.generator.generate_events``: intake's own rules,
contacts encrypted under a throwaway key), with its viral URLs and hashes that ingest links. Each mode
gets a topic suffix (so a PostgreSQL schema, a report-number sequence and topics) of its own and the very
same input records, all on partition 0 (so that both modes meet them in the same order and give the
same report numbers); a ``StageRunner`` in this process consumes them until all are handled, timed from its
first batch. Afterwards the two modes' outputs are compared field by field (event ids, report numbers,
links, counts, rejections; receipt times differ by nature), so a faster mode that numbers or links
differently shows up here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
import uuid
from typing import Any

from pipeline import events as ev
from pipeline import kafka, serde, stage_bench
from pipeline.generator import generate_events
from pipeline.ingest.stage import spec
from pipeline.logging import configure
from pipeline.runtime import StageSpec
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, dead_letter, name

DLQ = dead_letter("ingest")


def outputs(settings: Settings, expected: int) -> dict[str, Any]:
    """What the stage emitted, by input report id: the comparable fields of each output event."""
    cons = kafka.consumer(settings, f"bench.reader.{uuid.uuid4().hex}")
    got: dict[str, Any] = {}
    count = 0
    try:
        cons.subscribe([name(RECEIVED, settings.topic_suffix), name(DLQ, settings.topic_suffix)])
        deadline = time.monotonic() + 120
        while count < expected and time.monotonic() < deadline:
            for m in cons.consume(500, 0.5):
                if m.error() is not None:
                    continue
                count += 1
                key = (m.key() or b"").decode()
                if m.topic() == name(DLQ, settings.topic_suffix):
                    got.setdefault(key, []).append(("dead-letter", dict(m.headers() or [])["dlq.reason"]))
                    continue
                event = serde.decode(m.value() or b"")
                got.setdefault(key, []).append(_comparable(event))
    finally:
        cons.close()
    return got


def _comparable(event: Any) -> tuple[Any, ...]:
    match event:
        case ev.ReportReceived():
            b = event.body
            return ("received", event.envelope.event_id, b.report_number, b.linked_to, b.reporters_count)
        case ev.ReportRejected():
            return ("rejected", event.envelope.event_id, event.reason_code, event.field, event.duplicate_of)
        case _:
            return ("other", type(event).__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two modes this many times")
    args = parser.parse_args()
    configure("json", level=logging.WARNING)

    base = Settings.from_env()
    values = [
        (e.envelope.report_id.encode(), serde.encode(e)) for e in generate_events(args.reports, args.seed)
    ]
    print(
        f"ingest stage alone: {len(values)} generated submissions (seed {args.seed}), "
        f"{os.cpu_count()} CPU(s), one instance, batch up to {spec(base).batch_size}"
    )
    full = spec(base)
    modes: list[tuple[str, StageSpec]] = [("handle", dataclasses.replace(full, handle_batch=None))]
    if full.handle_batch is not None:
        modes.append(("handle_batch", full))
    else:
        print("  (this version has no handle_batch: only the record-by-record figure)")
    seen: dict[str, dict[str, Any]] = {}
    for round_no in range(args.rounds):
        for label, stage in modes:
            settings = base.with_suffix(f".bingest{uuid.uuid4().hex[:8]}")
            kafka.ensure_topics(settings, (SUBMITTED, RECEIVED, DLQ))
            topic = name(SUBMITTED, settings.topic_suffix)
            stage_bench.fill(settings, ((topic, k, v, 0) for k, v in values))
            rate, cpu_ms = stage_bench.run(settings, stage, len(values))
            print(f"  round {round_no + 1} {label:13s} {rate:8.0f} records/s   CPU {cpu_ms:.2f} ms/record")
            if round_no == 0:
                seen[label] = outputs(settings, len(values))
    if len(seen) == 2:
        one, many = seen["handle"], seen["handle_batch"]
        differ = sorted(k for k in one.keys() | many.keys() if one.get(k) != many.get(k))
        linked = sum(1 for outs in one.values() for o in outs if o[0] == "received" and o[3] is not None)
        print(
            f"  outputs compared: {len(one)} reports ({linked} linked), "
            f"{len(differ)} differ between the two modes" + (f", e.g. {differ[:3]}" if differ else "")
        )


if __name__ == "__main__":
    main()
