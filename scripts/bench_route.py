"""Benchmark: the route step's rules, in reports per second, on one core (no broker, no database).

Run: ``PYTHONPATH=. .venv/bin/python scripts/bench_route.py`` (it reuses the tests' report
builder). Prints figures; asserts nothing (not a timed test).

A typical potentially illegal report (5 URLs over 3 countries, as Cybertip.ca's 2022 average of about
4.9 URLs per report; a suspect in Ontario; a child who may need protection) is located with the fixed demo
resolver (offline ``iptocc`` lookups) and decided. The baseline, measured in the same process, is the
rules alone on pre-located hosts: the ratio shows what locating costs. Real DNS (``SocketResolver``) is
not measured: its cost is the network's and the cache's hit rate.

On the shared 2-core VM this was written on (Dec 2026, under load from parallel test runs) it printed
about 2,200 reports/s for the rules alone and 1,550 /s with locating (0.71 x): far above the tipline's
2,500+ reports a month; the stage's throughput is bounded by the database round trips and Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline import events as ev
from pipeline.route import logic
from pipeline.route.resolve import demo_resolver, locate_all
from pipeline.route.tables import load_tables
from tests.unit.route_builders import NOW, assessed

URLS = (
    "https://cdn1.ca-host.example/a/1",
    "https://cdn1.nl-host.example/b/2",
    "https://files.nl-host.example/b/3",
    "http://cdn1.ru-host.example/c/4",
    "http://[2001:638::1]/d/5",
)


def rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    n, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return n / elapsed


def main() -> None:
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


if __name__ == "__main__":
    main()
