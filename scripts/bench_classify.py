"""Benchmark of step 5: classifications per second, against the serde round trip the runner pays anyway.

Run: ``.venv/bin/python scripts/bench_classify.py [--reports N] [--broker]``. Prints figures; asserts nothing.

- ``classify``: the pure rules (``pipeline.classify.logic.classify``) over a mix of reports whose facts
  cover every rule of the shipped table.
- ``baseline``: ``serde.decode`` + ``serde.encode`` of the same reports, in the same process: every record
  the stage handles costs one of each, so the ratio says whether the rules matter next to the wire format.
- ``--broker``: the stage end to end on the real broker (``tipline services up`` first): N prioritized
  reports spread over the four lanes, the stage run in this process until all N are classified; topics get
  a unique suffix. Then the time the override takes to read one report's history from those lanes.

On the shared 2-core VM (Dec 2026, other test runs in parallel) it printed: classify alone 3,600-10,600 /s,
the serde baseline 2,400-5,700 /s (ratio 1.2-1.9x), the stage on the broker about 950-1,080 reports/s, and
a history read over 5,000 classified records in 0.75 s.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pipeline import serde
from pipeline.classify.logic import classify
from pipeline.classify.rules import load_tables
from pipeline.classify.samples import prioritized
from pipeline.events import Annotation as A
from pipeline.events import Category as C
from pipeline.events import ContentKind as K
from pipeline.events import MaterialAction as M
from pipeline.events import ReportPrioritized
from pipeline.events import Role as R
from pipeline.events import Technology as T
from pipeline.logging import configure

MIX: list[dict[str, Any]] = [
    {"reporter": C.CSAM, "content": (K.SEXUAL_IMAGE_OR_VIDEO,), "actions": (M.SHARED, M.POSSESSED)},
    {"reporter": C.CSAM, "content": (K.SEXUAL_IMAGE_OR_VIDEO,), "technologies": (T.WEB_PAGE, T.PEER_TO_PEER)},
    {"reporter": C.ONLINE_HARMS, "content": (K.OTHER,), "age": 12, "threats": True},
    {
        "content": (K.SEXUAL_CONVERSATION, K.INTIMATE_IMAGE),
        "actions": (M.MADE,),
        "threats": True,
        "annotations": (A.SEXTORTION,),
        "sender": R.ADULT,
        "recipient": R.MINOR,
        "age": 15,
        "technologies": (T.CHAT_IM, T.SOCIAL_MEDIA),
    },
    {"reporter": C.NCII_MINOR, "content": (K.INTIMATE_IMAGE,), "actions": (M.SHARED,), "age": 16},
    {"reporter": C.LURING, "content": (K.SEXUAL_CONVERSATION,), "sender": R.ADULT},
    {
        "content": (K.OFFER_OF_SEXUAL_SERVICES,),
        "money": True,
        "ongoing": True,
        "threats": True,
        "sender": R.ADULT,
    },
    {"reporter": C.TRAVELLING, "content": (K.TRAVEL_PLAN,), "travel": True, "victim_country": "TH"},
    {
        "reporter": C.AGREEMENT_ARRANGEMENT,
        "content": (K.ARRANGEMENT_WITH_OTHER_ADULT,),
        "technologies": (T.EMAIL,),
    },
    {"reporter": C.CSAM},
]


def reports(n: int) -> list[ReportPrioritized]:
    facts = itertools.cycle(MIX)
    return [prioritized(level=1 + i % 4, arrival_seq=i, **next(facts)) for i in range(n)]


def rate(label: str, n: int, seconds: float) -> float:
    per_s = n / seconds
    print(
        f"{label:<28} {n:>7} reports in {seconds:7.3f} s = {per_s:>10,.0f} /s  ({1e6 / per_s:8.1f} us each)"
    )
    return per_s


def bench_pure(n: int) -> None:
    tables = load_tables()
    events = reports(n)
    raw = [serde.encode(e) for e in events]
    now = datetime.now(UTC)
    for e in events[:50]:  # warm caches (generated converters, compiled rules)
        classify(e, tables, now)
        serde.encode(serde.decode(serde.encode(e)))

    started = time.perf_counter()
    for data in raw:
        serde.encode(serde.decode(data))
    baseline = rate("baseline decode+encode", n, time.perf_counter() - started)

    started = time.perf_counter()
    for e in events:
        classify(e, tables, now)
    rules = rate("classify (rules only)", n, time.perf_counter() - started)

    started = time.perf_counter()
    for data in raw:
        serde.encode(classify(serde.decode(data), tables, now))  # type: ignore[arg-type]
    full = rate("decode+classify+encode", n, time.perf_counter() - started)
    print(
        f"ratio classify / baseline speed: {rules / baseline:.1f}x; handler incl. serde / baseline: "
        f"{full / baseline:.2f}"
    )


def bench_broker(n: int) -> None:
    from pipeline import kafka
    from pipeline.classify.stage import spec
    from pipeline.runtime import StageRunner
    from pipeline.settings import Settings
    from pipeline.topics import CLASSIFIED, PRIORITIZED, dead_letter, name

    settings = Settings.from_env().with_suffix(f".bench{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, (*PRIORITIZED, *CLASSIFIED, dead_letter("classify")))
    prod = kafka.producer(settings)
    last_id = ""
    for e in reports(n):
        last_id = e.envelope.report_id
        prod.produce(
            name(PRIORITIZED[e.level - 1], settings.topic_suffix),
            key=e.envelope.report_id.encode(),
            value=serde.encode(e),
        )
    prod.flush(60)
    runner = StageRunner(spec(settings), settings, instance="bench")
    runner.start()
    try:
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while runner.processed < n and time.monotonic() < deadline:
            runner.poll_once(0.2)
        elapsed = time.perf_counter() - started
    finally:
        runner.close()
    rate("stage on the broker", runner.processed, elapsed)
    # The override reads a report's history by scanning the four classified lanes to their end.
    from pipeline.classify.history import read_classifications

    started = time.perf_counter()
    found = read_classifications(settings, last_id, timeout=120)
    print(
        f"history of one report read from {n} classified records in {time.perf_counter() - started:.2f} s "
        f"({len(found)} found)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--broker", action="store_true", help="also run the stage end to end on the broker")
    args = parser.parse_args()
    configure(
        "console", logging.WARNING
    )  # one info line per report would measure the terminal, not the stage
    bench_pure(args.reports)
    if args.broker:
        bench_broker(args.reports)


if __name__ == "__main__":
    main()
