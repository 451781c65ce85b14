"""Benchmark of step 4's promise: a top-priority report overtakes 10,000 waiting low-priority ones.

Run: ``.venv/bin/python scripts/bench_priority.py [--backlog N] [--repeats N] [--fifo-repeats N]
[--consumer classify|minimal] [--trickle TOP_PER_S]`` (``tipline services up`` first). Prints figures;
asserts nothing. ``--trickle 20`` measures instead how fast a 3,000-report low backlog drains alone and
while 20 top reports a second keep arriving (each makes the consumer stop its batch for it).

- ``lane-aware``: a ``StageRunner`` with ``lanes=True`` on the four prioritized lanes (the classify side),
  ``backlog`` level-4 reports kept waiting in lane 4; one level-1 report produced per repetition; the
  time from its produce call until the consumer's handler gets it. Target: under 500 ms at p99.
- ``fifo``: the same runner with ``lanes=False`` on one topic, the top report behind the same backlog.
Topics get a suffix of their own (``.bprio<random>``). See ``pipeline.prioritize.bench`` for the method.
"""

from __future__ import annotations

import argparse
import logging

from pipeline import bootstrap
from pipeline.logging import configure
from pipeline.prioritize.bench import measure_drain_under_trickle, measure_priority_under_backlog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--fifo-repeats", type=int, default=10)
    parser.add_argument("--consumer", choices=("classify", "minimal"), default="classify")
    parser.add_argument(
        "--trickle",
        type=float,
        metavar="TOP_PER_S",
        help="instead: drain a 3,000-report low backlog alone, then with this many top reports a second",
    )
    args = parser.parse_args()
    configure(level=logging.WARNING)
    settings = bootstrap.settings()
    if args.trickle is not None:
        t = measure_drain_under_trickle(settings, top_per_s=args.trickle, consumer=args.consumer)
        print(f"backlog: {t['backlog_low_reports']:,} low-priority reports; handler: {t['handler']}")
        print(f"drained alone: {t['drain_alone_per_s']:,.0f} records/s")
        print(
            f"drained with {t['trickle_top_per_s']:.0f} top reports/s arriving: "
            f"{t['drain_with_trickle_per_s']:,.0f} records/s ({t['preemptions']} preemptions); "
            f"top reports ({t['trickle_tops']}) handled after p50 {t['trickle_top_ms_p50']:.0f} ms, "
            f"p99 {t['trickle_top_ms_p99']:.0f} ms"
        )
        return
    fig = measure_priority_under_backlog(
        settings,
        backlog=args.backlog,
        repeats=args.repeats,
        fifo_repeats=args.fifo_repeats,
        consumer=args.consumer,
    )
    print(f"backlog: {fig['backlog_low_reports']:,} low-priority reports waiting; handler: {fig['handler']}")
    print(
        f"lane-aware consumer ({fig['lane_aware_repeats']} runs): top report handled after "
        f"p50 {fig['lane_aware_ms_p50']:.0f} ms, p99 {fig['lane_aware_ms_p99']:.0f} ms, "
        f"max {fig['lane_aware_ms_max']:.0f} ms (target < 500 ms p99); "
        f"{fig['lane_aware_low_handled_first']:.0f} low records handled meanwhile on average "
        f"({fig['lane_aware_waiting_mean']:,.0f} waiting when it was produced)"
    )
    print(
        f"single FIFO topic   ({fig['fifo_repeats']} runs): top report handled after "
        f"p50 {fig['fifo_ms_p50']:.0f} ms, p99 {fig['fifo_ms_p99']:.0f} ms; "
        f"{fig['fifo_low_handled_first']:.0f} low records handled first on average "
        f"({fig['fifo_waiting_mean']:,.0f} waiting when it was produced)"
    )
    print(f"FIFO p99 / lane-aware p99: {fig['fifo_over_priority_p99_ratio']:.1f}x")


if __name__ == "__main__":
    main()
