"""Benchmark: `tipline projections rebuild` speed, in events per second, beside a raw consume.

Generates N whole reports (``projections.samples.lifecycle``: received to closed, about 6 events
each) onto a fresh, suffixed set of topics, then in the same process measures:

1. raw consume: confluent-kafka reads every record of those topics (no decoding): the ceiling;
2. consume + decode: the same, decoding each record with ``pipeline.serde``;
3. rebuild in one process, then with decode worker processes (the default of `projections rebuild`):
   the projector replays every topic into a fresh schema (decode, fold, COPY + upsert, offsets in the
   same transaction); the second one is swapped in.

Run: ``.venv/bin/python scripts/bench_rebuild.py [--reports 20000]``. Prints figures; asserts nothing.
Target: rebuild at 20,000 events/s or more. Topics and schema are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from pipeline import db, kafka, serde
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS, name
from projections import pg, samples
from projections.rebuild import drop_schema, rebuild
from projections.runner import end_offsets, event_topics, partitions_of, where

TARGET = 20_000


def produce(settings: Settings, reports: int, seed: int) -> int:
    rng = random.Random(seed)  # noqa: S311 - reproducible generated stream, not security
    prod = kafka.producer(settings, **{"linger.ms": 50, "batch.size": 1_000_000})
    n = 0
    for i in range(reports):
        for e in samples.lifecycle(i, rng):
            topic = name(samples.topic_for(e), settings.topic_suffix)
            while True:
                try:
                    prod.produce(topic, key=e.envelope.report_id.encode(), value=serde.encode(e))
                    break
                except BufferError:
                    prod.poll(0.1)
            n += 1
        prod.poll(0)
    if prod.flush(120) != 0:
        raise SystemExit("the broker did not acknowledge every record")
    return n


def raw_consume(settings: Settings, *, decode: bool) -> tuple[int, float]:
    cons = kafka.consumer(
        settings,
        f"bench.raw.{uuid.uuid4().hex}",
        **{"enable.partition.eof": True, "fetch.max.bytes": 64 * 1024 * 1024, "queued.min.messages": 200_000},
    )
    try:
        parts = partitions_of(cons, event_topics(settings))
        targets = {tp: end for tp, end in end_offsets(settings, parts).items() if end > 0}
        started = time.perf_counter()
        cons.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        reached: dict[tuple[str, int], int] = {}
        n = 0
        while any(reached.get(tp, 0) < h for tp, h in targets.items()):
            for m in cons.consume(5000, 0.5):
                err = m.error()
                t, p, o = where(m)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        reached[(t, p)] = max(reached.get((t, p), 0), o)
                    continue
                reached[(t, p)] = o + 1
                if decode:
                    serde.decode(m.value() or b"")
                n += 1
        return n, time.perf_counter() - started
    finally:
        cons.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2, help="decode worker processes of the measured rebuild")
    args = ap.parse_args()
    settings = Settings.from_env().with_suffix(f".bench{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, EVENT_TOPICS)
    try:
        t0 = time.perf_counter()
        n = produce(settings, args.reports, args.seed)
        print(f"generated {args.reports:,} reports = {n:,} events in {time.perf_counter() - t0:.1f} s")
        raw_n, raw_s = raw_consume(settings, decode=False)
        dec_n, dec_s = raw_consume(settings, decode=True)
        single = rebuild(settings, batch_size=args.batch, workers=0, swap_in=False)
        with db.connect(settings, autocommit=True) as conn:
            drop_schema(conn, single.schema)
        r = rebuild(settings, batch_size=args.batch, workers=args.workers)
        raw_rate, dec_rate = raw_n / raw_s, dec_n / dec_s
        print(f"raw consume                {raw_rate:>10,.0f} events/s  ({raw_n:,} in {raw_s:.2f} s)")
        print(f"consume + serde decode     {dec_rate:>10,.0f} events/s  ({dec_n:,} in {dec_s:.2f} s)")
        print(
            f"rebuild, one process       {single.events_per_second:>10,.0f} events/s  "
            f"({single.events:,} in {single.seconds:.2f} s)"
        )
        print(
            f"rebuild, {args.workers} decode workers  {r.events_per_second:>10,.0f} events/s  "
            f"({r.events:,} in {r.seconds:.2f} s, swapped in)"
        )
        print(f"rebuild / raw consume          {r.events_per_second / raw_rate:.2f}")
        print(f"rebuild / consume + decode     {r.events_per_second / dec_rate:.2f}")
        verdict = "meets" if r.events_per_second >= TARGET else "MISSES"
        print(f"target {TARGET:,} events/s: rebuild {verdict} it on this machine ({os.cpu_count()} CPUs)")
    finally:
        with db.connect(settings, autocommit=True) as conn:
            drop_schema(conn, pg.schema_for(settings))
        # Only this run's own topics (its random suffix); wait for the deletions to be done.
        client = kafka.admin(settings)
        futures = client.delete_topics([name(s, settings.topic_suffix) for s in EVENT_TOPICS])
        for fut in futures.values():
            fut.result(timeout=30)


if __name__ == "__main__":
    main()
