"""Shared pieces of the benchmarks that run one stage alone on the real broker and database
(``scripts/bench_ingest_stage.py``, ``bench_prioritize_stage.py``, ``bench_assess.py``): fill its input,
then time one ``StageRunner`` over it. Figures are printed by the scripts, never asserted."""

from __future__ import annotations

import time
from collections.abc import Iterable

from pipeline import kafka
from pipeline.runtime import StageRunner, StageSpec
from pipeline.settings import Settings


def fill(settings: Settings, records: Iterable[tuple[str, bytes, bytes, int | None]]) -> None:
    """Produce ``(topic, key, value, partition or None)`` records and wait for every acknowledgement."""
    prod = kafka.producer(settings)
    for topic, key, value, partition in records:
        while True:
            try:  # partition -1: the producer's partitioner chooses (by key)
                prod.produce(topic, key=key, value=value, partition=-1 if partition is None else partition)
                break
            except BufferError:
                prod.poll(0.05)
    if prod.flush(60):
        raise SystemExit("the input records were not all acknowledged")


def run(settings: Settings, stage: StageSpec, expected: int) -> tuple[float, float]:
    """Records per second of one runner over ``expected`` waiting records, and its CPU per record (ms)."""
    runner = StageRunner(stage, settings, instance="bench")
    runner.start()
    try:
        while runner.poll_once(1.0) == 0:  # the first poll joins the group; the clock starts at a batch
            pass
        started, cpu, first = time.perf_counter(), time.process_time(), runner.processed
        deadline = time.monotonic() + 900
        while runner.processed < expected and time.monotonic() < deadline:
            runner.poll_once(0.5)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        done = runner.processed - first
    finally:
        runner.close()
    return done / elapsed, cpu / max(done, 1) * 1000
