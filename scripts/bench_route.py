"""Benchmark: the route step (step 7). Prints figures; asserts nothing (not a timed test).

Run: ``PYTHONPATH=. .venv/bin/python scripts/bench_route.py`` for the rules alone (no broker, no
database), or ``PYTHONPATH=. .venv/bin/python scripts/bench_route.py --stage --reports 3000 2>/dev/null``
for the stage alone on the real broker and PostgreSQL (the services up).

Rules: a typical potentially illegal report (5 URLs over 3 countries, as Cybertip.ca's 2022 average of
about 4.9 URLs per report; a suspect in Ontario; a child who may need protection) is located with the
fixed demo resolver (offline ``iptocc`` lookups) and decided. The baseline, measured in the same
process, is the rules alone on pre-located hosts: the ratio shows what locating costs. Real DNS
(``SocketResolver``) is not measured: its cost is the network's and the cache's hit rate. On the shared
2-core VM this was written on (Dec 2026, under load from parallel test runs) it printed about 2,200
reports/s for the rules alone and 1,550 /s with locating (0.71 x).

Stage: ``--reports`` reports from ``pipeline.generator`` are passed through the earlier steps' pure rules
(ingest's normalisation, prioritize, classify, the simulated analyst: a realistic mix of referred and
closed reports) and produced to the assessed topic of a namespace (topic suffix) of this run's own.
The route stage's own ``StageRunner`` (demo resolver, logging configured at info as a stage process
has it) then consumes them until all are handled, once per-record (``handle``) and once through
``handle_batch``, each in a fresh namespace, in alternation ``--rounds`` times. The figure is records/s
from the end of the first batch (the consumer group join is left out) to the last record. The rows
each run kept in ``route_emitted`` are compared (event ids, emit keys, causes, payload but for the
time it was made): both paths must keep the same. The namespaces' schemas and topics are removed at
the end. ``--batch-size 16`` shows the batches the stage takes when hosts are asked of DNS.

Measured on the shared 2-core VM (Dec 2026, other people's benchmarks running; 3,000 reports, runs
alternated): the stage as it was (record by record, 16 a batch, a log line per event at info) 317-573
records/s over five runs; with the batch handler and the fixed resolver's batches of 500, 1,070-1,817
records/s over three (the per-record path in the same runs 580-814); with ``--batch-size 16`` 632-961
over two (per record 418-492). The rows kept were identical every time.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.route import logic
from pipeline.route.resolve import demo_resolver, locate_all
from pipeline.route.tables import load_tables
from pipeline.settings import Settings
from tests.unit.route_builders import NOW, assessed

URLS = (
    "https://cdn1.ca-host.example/a/1",
    "https://cdn1.nl-host.example/b/2",
    "https://files.nl-host.example/b/3",
    "http://cdn1.ru-host.example/c/4",
    "http://[2001:638::1]/d/5",
)
SEED = 11


def rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    n, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return n / elapsed


def rules() -> None:
    tables = load_tables()
    resolver = demo_resolver()
    event = assessed(
        urls=URLS, suspect=ev.Location(province="ON"), victim=ev.Location(province="QC"), child=True
    )
    located = locate_all(logic.targets(event), resolver)
    baseline = rate(lambda: logic.decide(event, tables, located, NOW))
    full = rate(lambda: logic.decide(event, tables, locate_all(logic.targets(event), resolver), NOW))
    print(f"rules only (pre-located hosts): {baseline:,.0f} reports/s")
    print(
        f"locate (fixed resolver + iptocc) + rules: {full:,.0f} reports/s ({full / baseline:.2f} x baseline)"
    )
    print(f"events per report: {len(logic.decide(event, tables, located, NOW))}")


# -- the stage alone -------------------------------------------------------------------------------------
def assessments(n: int, seed: int = SEED) -> Iterator[ev.ReportAssessed]:
    """Generated reports as the simulated analyst would assess them, through the earlier steps' rules."""
    from pipeline import generator
    from pipeline.assess import logic as assess_logic
    from pipeline.assess import simulated
    from pipeline.classify import logic as classify_logic
    from pipeline.classify.rules import load_tables as classify_tables
    from pipeline.errors import DomainError
    from pipeline.ingest import logic as ingest_logic
    from pipeline.prioritize import logic as prioritize_logic

    ctables = classify_tables()
    state = prioritize_logic.MemoryState()
    actor = simulated.simulated_actor(seed)
    for i, submitted in enumerate(generator.generate_events(n, seed)):
        try:
            content = ingest_logic.normalized_content(submitted)
        except DomainError:
            continue  # ingest would reject it: route never sees it
        at = submitted.envelope.occurred_at
        numbering = ingest_logic.Numbering(
            report_number=ingest_logic.report_number(i + 1, at),
            received_at=at,
            linked_to=None,
            reporters_count=1,
        )
        received = ingest_logic.received(submitted, content, numbering)
        for prioritized in prioritize_logic.decide(received, state, at):
            if prioritized.envelope.report_id != received.envelope.report_id:
                continue
            for classified in classify_logic.decide(prioritized, ctables, at):
                decision = simulated.decide(classified, seed)
                yield assess_logic.assessment(
                    classified,
                    actor=actor,
                    determination=decision.determination,
                    child_may_need_protection=decision.child_may_need_protection,
                    note=decision.note,
                    supersedes=None,
                    occurred_at=at,
                )


def _namespace(base: Settings) -> Settings:
    from pipeline.topics import ASSESSED, CLOSED, FOLLOWUP, REFERRED, dead_letter

    settings = base.with_suffix(f".benchroute{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, (ASSESSED, REFERRED, FOLLOWUP, CLOSED, dead_letter("route")))
    return settings


def _produce(settings: Settings, encoded: list[tuple[bytes, bytes]]) -> None:
    from pipeline.topics import ASSESSED, name

    producer = kafka.producer(settings)
    topic = name(ASSESSED, settings.topic_suffix)
    for key, value in encoded:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    if producer.flush(60):
        raise SystemExit("the broker did not acknowledge every input")


def _run(settings: Settings, n: int, *, batch: bool, batch_size: int | None) -> tuple[float, int]:
    """Route the namespace's ``n`` inputs; records/s after the first batch, and the batches it took."""
    from pipeline.route import stage
    from pipeline.runtime import StageRunner

    spec = stage.spec(settings, resolver=demo_resolver())
    if not batch:
        spec = dataclasses.replace(spec, handle_batch=None)
    if batch_size is not None:
        spec = dataclasses.replace(spec, batch_size=batch_size)
    runner = StageRunner(spec, settings, instance="bench")
    runner.start()
    try:
        first = 0
        started = 0.0
        batches = 0
        deadline = time.monotonic() + 600
        while runner.processed < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {runner.processed} of {n} routed within 600 s")
            got = runner.poll_once(0.5)
            if got:
                batches += 1
                if not first:
                    first, started = runner.processed, time.perf_counter()
        elapsed = time.perf_counter() - started
    finally:
        runner.close()
    return (n - first) / elapsed if elapsed > 0 else float("nan"), batches


def _rows(settings: Settings) -> list[tuple[Any, ...]]:
    """What the run kept, with each payload's ``occurred_at`` (the time of routing) taken out."""
    from pipeline import db

    with db.connect(settings) as conn:
        rows = conn.execute(
            "SELECT report_id, emit_key, event_id, event_type, causation_id, seq, payload FROM route_emitted"
            " ORDER BY report_id, emit_key"
        ).fetchall()
    out = []
    for *head, payload in rows:
        event = serde.decode(bytes(payload))
        envelope = dataclasses.replace(event.envelope, occurred_at=NOW)
        out.append((*head, serde.encode(dataclasses.replace(event, envelope=envelope))))
    return out


def _cleanup(spaces: list[Settings]) -> None:
    from psycopg import sql

    from pipeline import db
    from pipeline.topics import ASSESSED, CLOSED, FOLLOWUP, REFERRED, dead_letter, name

    for settings in spaces:
        with db.connect(settings, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(db.schema_name(settings)))
            )
        specs = (ASSESSED, REFERRED, FOLLOWUP, CLOSED, dead_letter("route"))
        client = kafka.admin(settings)  # kept alive while its deletions finish
        futures = client.delete_topics([name(s, settings.topic_suffix) for s in specs])
        for fut in futures.values():
            fut.result(timeout=30)


def stage(n: int, rounds: int, modes: tuple[str, ...], batch_size: int | None) -> None:
    from pipeline.logging import configure

    configure("json", level=logging.INFO)  # as a stage process logs (run with 2>/dev/null)
    events = list(assessments(n))
    encoded = [(e.envelope.report_id.encode(), serde.encode(e)) for e in events]
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e.determination.value] = kinds.get(e.determination.value, 0) + 1
    print(f"{len(events)} assessments ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    base = Settings.from_env()
    spaces: list[Settings] = []
    rows: dict[str, list[tuple[Any, ...]]] = {}
    figures: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for r in range(rounds):
            for mode in modes:
                settings = _namespace(base)
                spaces.append(settings)
                _produce(settings, encoded)
                per_s, batches = _run(settings, len(events), batch=mode == "batch", batch_size=batch_size)
                figures[mode].append(per_s)
                print(f"round {r + 1} {mode:>10}: {per_s:,.0f} records/s ({batches} batches)", flush=True)
                rows.setdefault(mode, _rows(settings))
        for mode, values in figures.items():
            print(f"{mode:>10}: best {max(values):,.0f} records/s, median {statistics.median(values):,.0f}")
        if len(rows) == 2:
            one, other = rows.values()
            print(f"rows kept: {len(one)} and {len(other)}; identical: {one == other}")
    finally:
        _cleanup(spaces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stage", action="store_true", help="the stage alone on the real broker and database"
    )
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="per-record,batch", help="comma-separated: per-record, batch")
    parser.add_argument("--batch-size", type=int, default=None, help="records a batch (default: the stage's)")
    args = parser.parse_args()
    if args.stage:
        stage(args.reports, args.rounds, tuple(args.modes.split(",")), args.batch_size)
    else:
        rules()


if __name__ == "__main__":
    main()
