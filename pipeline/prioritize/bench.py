"""Priority under backlog: how long a new top-priority report takes to reach a lane-aware consumer with
10,000 low-priority reports waiting, against one FIFO topic with the same backlog ahead of it.

Both consumers are ``StageRunner``s (the runtime's own code) run in a thread of this process; the
lane-aware one reads the four ``PRIORITIZED`` lanes with ``lanes=True``, the FIFO one reads a single
lane topic with ``lanes=False``. The handler is the classify step's (``pipeline.classify.stage``: rules,
encode, produce to the classified lanes in the runner's transaction) wrapped by a recorder, or a
decode-only handler when ``consumer="minimal"``.

Each repetition tops the waiting backlog up to ``backlog`` low-priority records (so the consumer is
busy on it), waits a random 0-150 ms (so the top report lands at any point of a batch in flight),
produces one level-1 report and times, from the produce call, until the consumer's handler gets it.
Figures are printed, not asserted (shared, noisy machines).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.prioritize.logic import MemoryState, decide
from pipeline.runtime import Context, Output, StageRunner, StageSpec
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, PRIORITIZED, TopicSpec, dead_letter, name

Handler = Callable[[Any, Context], Sequence[Output]]


def _body(**kw: Any) -> ev.ReportBody:
    base: dict[str, Any] = {
        "report_number": "CT-2026-000001",
        "channel": ev.Channel.WEB,
        "language": ev.Language.EN,
        "received_at": datetime.now(UTC),
        "reporter_category": None,
        "description": "benchmark report",
        "incidents": (ev.Incident(incident_id="i1", technology=ev.Technology.WEB_PAGE),),
        "facts": ev.Facts(),
        "anonymous": True,
    }
    base.update(kw)
    return ev.ReportBody(**base)


def _prioritized(body: ev.ReportBody, report_id: str) -> ev.ReportPrioritized:
    received = ev.ReportReceived(
        envelope=ev.Envelope.first(
            submission_id=str(uuid.uuid4()),
            event_type="ReportReceived",
            report_id=report_id,
            producer="bench",
            actor=ev.Actor(kind=ev.ActorKind.SIMULATED, id="bench"),
            occurred_at=body.received_at,
        ),
        body=body,
        submission_id=str(uuid.uuid4()),
    )
    [out] = decide(received, MemoryState(), datetime.now(UTC))
    return out


def _low_values(n: int) -> list[bytes]:
    """Distinct level-4 records (an informational concern), encoded once and reused."""
    body = _body(reporter_category=ev.Category.ONLINE_HARMS)
    return [serde.encode(_prioritized(body, f"low-{uuid.uuid4()}")) for _ in range(n)]


def _top(report_id: str) -> bytes:
    body = _body(
        reporter_category=ev.Category.LURING,
        victim=ev.Victim(name="bench child", age=13),
        facts=ev.Facts(ongoing=True),
    )
    event = _prioritized(body, report_id)
    if event.level != 1:
        raise RuntimeError(f"the benchmark's top report ranked {event.level}, not 1: the rules changed")
    return serde.encode(event)


def _inner_handler(settings: Settings, consumer: str) -> tuple[Handler, str]:
    if consumer == "classify":
        try:
            from pipeline.classify import stage as classify_stage

            return classify_stage.spec(settings).handle, "classify stage handler"
        except Exception as exc:  # noqa: BLE001 - fall back, and say so in the figures
            return (lambda _e, _c: []), f"decode only (classify handler unavailable: {type(exc).__name__})"
    return (lambda _e, _c: []), "decode only"


class _Consumer:
    """A StageRunner in a thread whose handler notes when each top report arrives."""

    def __init__(
        self, settings: Settings, inputs: tuple[TopicSpec, ...], lanes: bool, inner: Handler
    ) -> None:
        spec = StageSpec(name="classify", inputs=inputs, handle=self.wrap(inner), lanes=lanes)
        self.runner = StageRunner(spec, settings, instance="bench")
        self.seen: dict[str, float] = {}
        self.lows = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bench-consumer", daemon=True)

    def wrap(self, inner: Handler) -> Handler:
        def handle(event: Any, ctx: Context) -> Sequence[Output]:
            out = inner(event, ctx)
            if isinstance(event, ev.ReportPrioritized) and event.level == 1:
                self.seen[event.envelope.report_id] = time.perf_counter()
            else:
                self.lows += 1
            return out

        return handle

    def _run(self) -> None:
        try:
            self.runner.start()
            while not self.stop.is_set():
                self.runner.poll_once(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by close()
            self.error = exc
        finally:
            self.runner.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def _run_mode(
    settings: Settings,
    *,
    lanes: bool,
    backlog: int,
    repeats: int,
    consumer: str,
    lows: list[bytes],
) -> dict[str, Any]:
    run = settings.with_suffix(settings.topic_suffix + f".bprio{uuid.uuid4().hex[:8]}")
    inputs: tuple[TopicSpec, ...] = PRIORITIZED if lanes else (PRIORITIZED[3],)
    kafka.ensure_topics(run, (*PRIORITIZED, *CLASSIFIED, dead_letter("classify")))
    inner, label = _inner_handler(run, consumer)
    cons = _Consumer(run, inputs, lanes, inner)
    prod = kafka.producer(run, **{"linger.ms": 1})
    low_topic = name(PRIORITIZED[3], run.topic_suffix)
    top_topic = name(PRIORITIZED[0] if lanes else PRIORITIZED[3], run.topic_suffix)
    produced = 0

    def top_up() -> int:
        nonlocal produced
        while produced - cons.lows < backlog:
            for _ in range(backlog - (produced - cons.lows) + 500):
                prod.produce(low_topic, key=f"k{produced}".encode(), value=lows[produced % len(lows)])
                produced += 1
                if produced % 2000 == 0:
                    prod.poll(0)
            prod.flush(60)
        return produced - cons.lows

    top_up()
    cons.thread.start()
    deadline = time.monotonic() + 120
    while cons.lows == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies: list[float] = []
    ahead: list[int] = []
    waiting_at_top: list[int] = []
    rng = random.Random(7)  # noqa: S311 - jitter of a benchmark, not a secret
    try:
        for i in range(repeats):
            waiting_at_top.append(top_up())
            time.sleep(rng.uniform(0.0, 0.15))
            rid = f"top-{i}-{uuid.uuid4()}"
            value = _top(rid)
            lows_before = cons.lows
            t0 = time.perf_counter()
            prod.produce(top_topic, key=rid.encode(), value=value)
            prod.flush(30)
            end = time.monotonic() + 120
            while rid not in cons.seen and time.monotonic() < end:
                time.sleep(0.001)
            if rid not in cons.seen:
                raise RuntimeError(f"the top report {i} did not arrive within 120 s")
            latencies.append((cons.seen[rid] - t0) * 1000)
            ahead.append(cons.lows - lows_before)
    finally:
        cons.close()
    latencies.sort()
    return {
        "handler": label,
        "p50_ms": statistics.median(latencies),
        "p99_ms": _p99(latencies),
        "max_ms": latencies[-1],
        "low_records_handled_first_mean": statistics.fmean(ahead),
        "waiting_at_top_mean": statistics.fmean(waiting_at_top),
        "repeats": repeats,
    }


def _p99(sorted_values: list[float]) -> float:
    """The 99th percentile by nearest rank (with 30 samples: the largest)."""
    rank = max(1, -(-99 * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def measure_priority_under_backlog(
    settings: Settings,
    *,
    backlog: int = 10_000,
    repeats: int = 30,
    fifo_repeats: int = 10,
    consumer: str = "classify",
) -> dict[str, Any]:
    """Top-report latency (ms) with ``backlog`` low reports waiting: lane-aware consumer vs one FIFO topic."""
    lows = _low_values(1000)
    lane = _run_mode(settings, lanes=True, backlog=backlog, repeats=repeats, consumer=consumer, lows=lows)
    fifo = _run_mode(
        settings, lanes=False, backlog=backlog, repeats=fifo_repeats, consumer=consumer, lows=lows
    )
    return {
        "backlog_low_reports": backlog,
        "handler": lane["handler"],
        "lane_aware_ms_p50": lane["p50_ms"],
        "lane_aware_ms_p99": lane["p99_ms"],
        "lane_aware_ms_max": lane["max_ms"],
        "lane_aware_low_handled_first": lane["low_records_handled_first_mean"],
        "lane_aware_repeats": lane["repeats"],
        "lane_aware_waiting_mean": lane["waiting_at_top_mean"],
        "fifo_ms_p50": fifo["p50_ms"],
        "fifo_ms_p99": fifo["p99_ms"],
        "fifo_low_handled_first": fifo["low_records_handled_first_mean"],
        "fifo_repeats": fifo["repeats"],
        "fifo_waiting_mean": fifo["waiting_at_top_mean"],
        "fifo_over_priority_p99_ratio": fifo["p99_ms"] / lane["p99_ms"],
    }


def measure_drain_under_trickle(
    settings: Settings,
    *,
    backlog: int = 3000,
    top_per_s: float = 20.0,
    consumer: str = "classify",
) -> dict[str, Any]:
    """How fast a lane-aware consumer drains a low-lane backlog while top reports keep arriving.

    Each top report makes the consumer stop its batch for it (preemption, then the lanes below held
    back until the top lane is empty), so a steady trickle of urgent reports must not starve throughput.
    Measured twice in the same run: the backlog alone, then the same backlog with ``top_per_s`` level-1
    reports a second produced by a second thread; printed: low records/s of each and the top reports'
    latency (produce call to handler) p50/p99.
    """
    lows = _low_values(1000)
    alone = _drain(settings, backlog=backlog, top_per_s=0.0, consumer=consumer, lows=lows)
    mixed = _drain(settings, backlog=backlog, top_per_s=top_per_s, consumer=consumer, lows=lows)
    return {
        "backlog_low_reports": backlog,
        "handler": alone["handler"],
        "drain_alone_per_s": alone["low_per_s"],
        "drain_with_trickle_per_s": mixed["low_per_s"],
        "trickle_top_per_s": top_per_s,
        "trickle_tops": mixed["tops"],
        "trickle_top_ms_p50": mixed["top_p50_ms"],
        "trickle_top_ms_p99": mixed["top_p99_ms"],
        "preemptions": mixed["preemptions"],
    }


def _drain(
    settings: Settings, *, backlog: int, top_per_s: float, consumer: str, lows: list[bytes]
) -> dict[str, Any]:
    run = settings.with_suffix(settings.topic_suffix + f".btrickle{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(run, (*PRIORITIZED, *CLASSIFIED, dead_letter("classify")))
    inner, label = _inner_handler(run, consumer)
    cons = _Consumer(run, PRIORITIZED, True, inner)
    prod = kafka.producer(run, **{"linger.ms": 5})
    low_topic = name(PRIORITIZED[3], run.topic_suffix)
    for i in range(backlog):
        prod.produce(low_topic, key=f"k{i}".encode(), value=lows[i % len(lows)])
        if i % 2000 == 0:
            prod.poll(0)
    prod.flush(60)
    sent: dict[str, float] = {}
    stop = threading.Event()

    def trickle() -> None:
        top_prod = kafka.producer(run, **{"linger.ms": 0})
        i = 0
        while not stop.is_set():
            rid = f"top-{i}-{uuid.uuid4()}"
            sent[rid] = time.perf_counter()
            top_prod.produce(name(PRIORITIZED[0], run.topic_suffix), key=rid.encode(), value=_top(rid))
            top_prod.poll(0)
            i += 1
            stop.wait(1.0 / top_per_s)
        top_prod.flush(30)

    feeder = threading.Thread(target=trickle, name="bench-trickle", daemon=True)
    t0 = time.perf_counter()
    cons.thread.start()
    if top_per_s > 0:
        feeder.start()
    deadline = time.monotonic() + 300
    try:
        while cons.lows < backlog and time.monotonic() < deadline:
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
    finally:
        stop.set()
        if top_per_s > 0:
            feeder.join(30)
        end = time.monotonic() + 30
        while any(r not in cons.seen for r in list(sent)) and time.monotonic() < end:
            time.sleep(0.01)
        cons.close()
    if cons.lows < backlog:
        raise RuntimeError(f"only {cons.lows} of {backlog} low records were handled within 300 s")
    lat = sorted((cons.seen[r] - t) * 1000 for r, t in sent.items() if r in cons.seen)
    return {
        "handler": label,
        "low_per_s": backlog / seconds,
        "tops": len(lat),
        "top_p50_ms": statistics.median(lat) if lat else 0.0,
        "top_p99_ms": _p99(lat) if lat else 0.0,
        "preemptions": cons.runner.preemptions,
    }
