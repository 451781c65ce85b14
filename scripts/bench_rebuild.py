"""Benchmark: `tipline projections rebuild` speed, in events per second, beside a raw consume.

Generates N whole reports (``projections.samples.lifecycle``: received to closed, about 6 events
each) onto a fresh, suffixed set of topics, then in the same process measures:

1. raw consume: confluent-kafka reads every record of those topics (no decoding): the ceiling. It reads
   as the rebuild does (the same consumer settings; the log's end asked first, no long waits at the
   end), so the figures compare;
2. consume + serde decode: the same, decoding each record into its event with ``pipeline.serde``;
3. consume + projection decode: the same, reading each record's fact with ``projections.decode``
   (what the rebuild does: only the fields the read model reads, serde for anything else);
4. rebuild (``--runs`` times; the last one swapped in): the projector replays every topic into a fresh
   schema (decode, fold, COPY + upsert, offsets in the same transaction), as `projections rebuild`
   does by default (one process; ``--workers N`` adds decode worker processes).

Run: ``.venv/bin/python scripts/bench_rebuild.py [--reports 20000]``. Prints figures; asserts nothing.
Target: rebuild at 20,000 events/s or more. Topics and schemas are deleted at the end.

Each run starts cold and its figure includes everything `projections rebuild` times: connecting,
creating the tables, loading the schemas and generating the decoders, reading, writing, the last
commit. The machine is shared: runs vary, so all are printed with their median.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from pipeline import db, kafka, schema_registry, serde
from pipeline.settings import Settings
from pipeline.topics import EVENT_TOPICS, name
from projections import decode, pg, samples
from projections.rebuild import drop_schema, rebuild
from projections.runner import consumer_overrides, event_topics, partitions_of, stable_ends, where

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


def consume_all(settings: Settings, handle: Callable[[list[Message]], None]) -> tuple[int, float]:
    """Read every record of the topics as the rebuild does, handing each batch to ``handle``."""
    cons = kafka.consumer(settings, f"bench.raw.{uuid.uuid4().hex}", **consumer_overrides(catch_up=True))
    try:
        started = time.perf_counter()
        parts = partitions_of(cons, event_topics(settings))
        targets = {tp: end for tp, end in stable_ends(cons, parts).items() if end > 0}
        cons.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        reached: dict[tuple[str, int], int] = {}
        n = 0
        while any(reached.get(tp, 0) < h for tp, h in targets.items()):
            records = []
            for m in cons.consume(20_000, 0.02):
                err = m.error()
                t, p, o = where(m)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        reached[(t, p)] = max(reached.get((t, p), 0), o)
                    continue
                reached[(t, p)] = o + 1
                records.append(m)
            handle(records)
            n += len(records)
        return n, time.perf_counter() - started
    finally:
        cons.close()


def _serde_decode(records: list[Message]) -> None:
    for m in records:
        serde.decode(m.value() or b"")


def _projection_decode(records: list[Message]) -> None:
    _facts, rejected = decode.reader().facts([(m.value(), *where(m)) for m in records])
    if rejected:
        raise SystemExit(f"{len(rejected)} generated record(s) did not decode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3, help="rebuilds to time (the machine is shared)")
    ap.add_argument("--workers", type=int, default=0, help="decode worker processes of the rebuilds")
    args = ap.parse_args()
    settings = Settings.from_env().with_suffix(f".bench{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, EVENT_TOPICS)
    try:
        t0 = time.perf_counter()
        n = produce(settings, args.reports, args.seed)
        print(f"generated {args.reports:,} reports = {n:,} events in {time.perf_counter() - t0:.1f} s")
        raw_n, raw_s = consume_all(settings, lambda _records: None)
        ser_n, ser_s = consume_all(settings, _serde_decode)
        dec_n, dec_s = consume_all(settings, _projection_decode)
        rates = []
        for run in range(args.runs):
            last = run == args.runs - 1
            # Each run starts cold, as `projections rebuild` in a new process does: schemas loaded,
            # decoders generated and bodies checked again.
            decode.reset()
            schema_registry.registry.cache_clear()
            r = rebuild(settings, batch_size=args.batch, workers=args.workers, swap_in=last)
            if not last:
                with db.connect(settings, autocommit=True) as conn:
                    drop_schema(conn, r.schema)
            rates.append(r.events_per_second)
            print(
                f"rebuild run {run + 1}              {r.events_per_second:>10,.0f} events/s  "
                f"({r.events:,} in {r.seconds:.2f} s{', swapped in' if last else ''})"
            )
        raw_rate, ser_rate, dec_rate = raw_n / raw_s, ser_n / ser_s, dec_n / dec_s
        rate = statistics.median(rates)
        print(f"raw consume                {raw_rate:>10,.0f} events/s  ({raw_n:,} in {raw_s:.2f} s)")
        print(f"consume + serde decode     {ser_rate:>10,.0f} events/s  ({ser_n:,} in {ser_s:.2f} s)")
        print(f"consume + projection decode{dec_rate:>10,.0f} events/s  ({dec_n:,} in {dec_s:.2f} s)")
        workers = f", {args.workers} decode workers" if args.workers else ", one process"
        print(f"rebuild (median of {args.runs}{workers}) {rate:>8,.0f} events/s")
        print(f"rebuild / raw consume              {rate / raw_rate:.2f}")
        print(f"rebuild / consume + projection decode  {rate / dec_rate:.2f}")
        verdict = "meets" if rate >= TARGET else "MISSES"
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
