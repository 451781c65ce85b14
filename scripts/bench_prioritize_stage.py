"""Benchmark: the prioritize stage alone, record by record (``handle``) against runs (``handle_batch``).

Run: ``.venv/bin/python scripts/bench_prioritize_stage.py [--reports 3000] [--seed 7] [--rounds 1]`` with
the services up. Prints figures; asserts nothing.

The input is the project's generated stream (``pipeline.generator.generate_events``) passed through the
ingest step's pure rules (``pipeline.ingest.logic``: normalised content, numbering, and the link to the
earliest report sharing a URL or hash, kept in memory here as the ingest tables would), so it holds the
linked duplicates that make prioritize raise an earlier report, and, across the received topic's
partitions, links that arrive before the report they name (pending raises). To make the two modes'
outputs comparable, every record goes to partition 0, in the stream's order shuffled within windows of
20 (so some linked reports come before the report they name, deterministically). Each mode gets a topic
suffix (topics and PostgreSQL schema) of its own and the very same records; a ``StageRunner`` in this
process consumes them until all are handled, timed from its first batch. Afterwards the two modes'
outputs are compared (event ids, lanes, levels, reasons, supersedes; times differ by nature).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import time
import uuid
from datetime import timedelta
from typing import Any

from pipeline import events as ev
from pipeline import kafka, serde, stage_bench
from pipeline.errors import DomainError
from pipeline.generator import generate_events
from pipeline.ingest import logic
from pipeline.logging import configure
from pipeline.prioritize.stage import spec
from pipeline.runtime import StageSpec
from pipeline.settings import Settings
from pipeline.topics import PRIORITIZED, RECEIVED, dead_letter, name

DLQ = dead_letter("prioritize")


def received_stream(n: int, seed: int) -> list[ev.ReportReceived]:
    """The generated submissions as the ingest step would receive them (the rejected ones left out)."""
    heads: dict[str, tuple[str, int]] = {}  # link key -> (first report id, reports naming it)
    out: list[ev.ReportReceived] = []
    for seq, event in enumerate(generate_events(n, seed), start=1):
        received_at = event.submitted_at + timedelta(seconds=1)
        try:
            content = logic.normalized_content(event, now=received_at)
        except DomainError:
            continue
        report_id = event.envelope.report_id
        firsts: list[str] = []
        count = 1
        for key in content.link_keys:
            first, reports = heads.get(key, (report_id, 0))
            heads[key] = (first, reports + 1)
            count = max(count, reports + 1)
            if first != report_id:
                firsts.append(first)
        numbering = logic.Numbering(
            report_number=logic.report_number(seq, received_at),
            received_at=received_at,
            linked_to=firsts[0] if firsts else None,
            reporters_count=count if firsts else 1,
        )
        out.append(logic.received(event, content, numbering))
    return out


def outputs(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """What the stage emitted, by event id: lane and the comparable fields (read until quiet)."""
    cons = kafka.consumer(settings, f"bench.reader.{uuid.uuid4().hex}")
    got: dict[str, list[tuple[Any, ...]]] = {}
    try:
        cons.subscribe([name(t, settings.topic_suffix) for t in (*PRIORITIZED, DLQ)])
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3.0:
            msgs = cons.consume(500, 0.5)
            if msgs:
                quiet_since = time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    continue
                lane = (m.topic() or "").removesuffix(settings.topic_suffix)
                if lane == DLQ.name:
                    key = f"dlq:{(m.key() or b'').decode()}"
                    got.setdefault(key, []).append((lane, dict(m.headers() or [])["dlq.reason"]))
                    continue
                e = serde.decode(m.value() or b"")
                if not isinstance(e, ev.ReportPrioritized):
                    raise SystemExit(f"a {type(e).__name__} on a prioritized lane")
                got.setdefault(e.envelope.event_id, []).append(
                    (lane, e.envelope.report_id, e.level, e.reasons, e.supersedes, e.envelope.causation_id)
                )
    finally:
        cons.close()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two modes this many times")
    args = parser.parse_args()
    configure("json", level=logging.WARNING)

    base = Settings.from_env()
    stream = received_stream(args.reports, args.seed)
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible order, not security
    windows = [stream[i : i + 20] for i in range(0, len(stream), 20)]
    for window in windows:
        rng.shuffle(window)
    values = [(e.envelope.report_id.encode(), serde.encode(e)) for w in windows for e in w]
    linked = sum(1 for e in stream if e.body.linked_to is not None)
    print(
        f"prioritize stage alone: {len(values)} received reports ({linked} linked) from {args.reports} "
        f"generated (seed {args.seed}), {os.cpu_count()} CPU(s), one instance, "
        f"batch up to {spec(base).batch_size}"
    )
    full = spec(base)
    modes: list[tuple[str, StageSpec]] = [("handle", dataclasses.replace(full, handle_batch=None))]
    if full.handle_batch is not None:
        modes.append(("handle_batch", full))
    else:
        print("  (this version has no handle_batch: only the record-by-record figure)")
    seen: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for round_no in range(args.rounds):
        for label, stage in modes:
            settings = base.with_suffix(f".bprio{uuid.uuid4().hex[:8]}")
            kafka.ensure_topics(settings, (RECEIVED, *PRIORITIZED, DLQ))
            topic = name(RECEIVED, settings.topic_suffix)
            stage_bench.fill(settings, ((topic, k, v, 0) for k, v in values))
            rate, cpu_ms = stage_bench.run(settings, stage, len(values))
            print(f"  round {round_no + 1} {label:13s} {rate:8.0f} records/s   CPU {cpu_ms:.2f} ms/record")
            if round_no == 0:
                seen[label] = outputs(settings)
    if seen:
        first = next(iter(seen.values()))
        raises = sum(1 for outs in first.values() for o in outs if o[4] is not None)
        print(
            f"  outputs: {sum(len(v) for v in first.values())} events, {raises} raises of an earlier report"
        )
    if len(seen) == 2:
        one, many = seen["handle"], seen["handle_batch"]
        differ = sorted(k for k in one.keys() | many.keys() if one.get(k) != many.get(k))
        print(
            f"  outputs compared: {len(one)} event ids, {len(differ)} differ between the two modes"
            + (f", e.g. {differ[:3]}" if differ else "")
        )


if __name__ == "__main__":
    main()
