"""Benchmark: an intake system's ``IntakeClient`` submitting generated reports. Prints figures, asserts nothing.

Run: ``.venv/bin/python scripts/bench_intake_client.py [--reports 3000] [--mode submit|many|both]`` with the
services up. The reports are the project's generated stream (``pipeline.generator``) with fresh
submission ids. ``submit`` calls ``IntakeClient.submit(report, wait=False)`` once per report (what the
demo publisher does); ``many`` hands them to ``IntakeClient.submit_many`` in one call. Both end with
``flush()``, so each figure counts reports the broker acknowledged (acks=all) and whose contact data keys
are stored. Printed beside: the process's own CPU per report, and a raw confluent-kafka produce of the
same encoded records (idempotent, acks=all, one flush) in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.generator import generate, recent_window
from pipeline.ingest import client, logic
from pipeline.logging import configure
from pipeline.settings import Settings
from pipeline.topics import SUBMITTED, TopicSpec, name

SCRATCH = TopicSpec(
    name="tipline.bench.intake-client-baseline.v1", events=(), description="bench", produced_by="bench"
)


def reports(n: int, seed: int) -> list[dict[str, Any]]:
    start, per_day = recent_window(datetime.now(UTC), n)  # recent times: the intake refuses future ones
    return [
        {**r, "submission_id": str(uuid.uuid4())}
        for r in generate(n, seed, start=start, reports_per_day=per_day)
    ]


def raw_produce(settings: Settings, bodies: list[dict[str, Any]]) -> float:
    values = []
    for body in bodies:
        parsed = logic.parse_report(body)
        enc = None
        if parsed.contact is not None:
            enc = ev.EncryptedContact(key_id=parsed.report_id, nonce=b"\0" * 12, ciphertext=b"\0" * 96)
        event = logic.to_submitted(parsed, channel=ev.Channel.API, now=client.now_ms(), contact=enc)
        values.append((event.envelope.report_id.encode(), serde.encode(event)))
    prod = kafka.producer(settings)
    topic = name(SCRATCH, settings.topic_suffix)
    started = time.perf_counter()
    for key, value in values:
        while True:
            try:
                prod.produce(topic, key=key, value=value)
                break
            except BufferError:
                prod.poll(0.05)
    prod.flush(60)
    return len(values) / (time.perf_counter() - started)


def run(settings: Settings, bodies: list[dict[str, Any]], mode: str, *, quiet: bool = False) -> None:
    cpu = time.process_time()
    started = time.perf_counter()
    with client.IntakeClient(settings) as intake:
        if mode == "submit":
            for body in bodies:
                intake.submit(body, wait=False)
        else:
            intake.submit_many(bodies)
        intake.flush()
    elapsed = time.perf_counter() - started
    cpu_ms = (time.process_time() - cpu) / len(bodies) * 1000
    label = "submit(wait=False)" if mode == "submit" else "submit_many"
    if quiet:
        return
    print(
        f"  IntakeClient {label:19s} {len(bodies) / elapsed:7.0f} reports/s  "
        f"({len(bodies)} reports in {elapsed:.2f} s; client CPU {cpu_ms:.2f} ms/report)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--mode", choices=("submit", "many", "both"), default="both")
    args = parser.parse_args()
    configure("json", level=logging.WARNING)
    settings = Settings.from_env().with_suffix(f".benchic{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, (SUBMITTED, SCRATCH))
    modes = ("submit", "many") if args.mode == "both" else (args.mode,)
    warm = reports(100, args.seed + 1)
    run(settings, warm, "submit", quiet=True)  # warm-up: imports, connections, caches
    print(f"intake client benchmark: {args.reports} generated reports, {os.cpu_count()} CPU(s)")
    for i, mode in enumerate(modes):
        bodies = reports(args.reports, args.seed + 10 * i)
        with_contact = sum(1 for b in bodies if b.get("contact"))
        print(f"  ({with_contact} of {len(bodies)} with contact details)")
        run(settings, bodies, mode)
    baseline = raw_produce(settings, reports(args.reports, args.seed + 99))
    print(f"  raw produce                      {baseline:7.0f} reports/s  (same kind of records, acks=all)")


if __name__ == "__main__":
    main()
