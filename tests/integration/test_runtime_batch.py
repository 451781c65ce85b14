"""The runner's batch hook on the real broker: runs of records through ``handle_batch``, refusals
dead-lettered one by one, a failing run handled again record by record, lane runs of 25 at most."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pipeline import events as ev
from pipeline import serde
from pipeline.errors import DomainError
from pipeline.runtime import PREEMPT_CHECK_EVERY, Context, Item, Output, StageSpec
from pipeline.settings import Settings
from pipeline.topics import PRIORITIZED, RECEIVED, dead_letter
from tests.integration.harness import StageThread, consume, produce, wait_for
from tests.integration.test_prioritize_lanes import _encoded

DLQ = dead_letter("prioritize")


def _events(count: int, prefix: str) -> list[ev.ReportPrioritized]:
    template = serde.decode(_encoded(4))
    assert isinstance(template, ev.ReportPrioritized)
    return [
        dataclasses.replace(
            template,
            arrival_seq=i,
            envelope=dataclasses.replace(
                template.envelope, event_id=f"{prefix}-{i}", report_id=f"{prefix}{i}"
            ),
        )
        for i in range(count)
    ]


class Echo:
    """Re-emits each record on RECEIVED's topic (as its own event), refuses report ids ending in 7,
    and fails a whole run (not a record) when a report id ending in 3 is in it, if ``poison`` is set."""

    def __init__(self, *, poison: bool = False, run_s: float = 0.0) -> None:
        self.poison = poison
        self.run_s = run_s
        """How long each run takes (as a stage's database round trips would), so records can arrive meanwhile."""
        self.runs: list[int] = []
        self.single: list[str] = []
        self.lock = threading.Lock()

    def one(self, event: Any, _ctx: Context) -> Sequence[Output]:
        with self.lock:
            self.single.append(event.envelope.report_id)
        if event.envelope.report_id.endswith("7"):
            raise DomainError("refused by the test's rule", reason="test_refusal", field="envelope.report_id")
        return [Output(RECEIVED, event)]

    def many(self, items: Sequence[Item], ctx: Context) -> list[Sequence[Output] | DomainError]:
        with self.lock:
            self.runs.append(len(items))
        if self.run_s:
            time.sleep(self.run_s)
        if self.poison and any(i.event.envelope.report_id.endswith("3") for i in items):
            raise RuntimeError("the whole run fails")
        out: list[Sequence[Output] | DomainError] = []
        for item in items:
            assert item.source.count(":") == 2
            try:
                out.append(self.one(item.event, ctx))
            except DomainError as exc:
                out.append(exc)
        return out


@pytest.fixture
def topics(make_topics: Callable[..., list[str]]) -> None:
    make_topics(*PRIORITIZED, RECEIVED, DLQ)


def _spec(echo: Echo, *, lanes: bool = False) -> StageSpec:
    return StageSpec(
        name="prioritize", inputs=PRIORITIZED, handle=echo.one, handle_batch=echo.many, lanes=lanes
    )


def test_runs_go_through_handle_batch_and_refusals_are_dead_lettered_alone(
    settings: Settings, topics: None
) -> None:
    events = _events(300, "b")
    produce(settings, PRIORITIZED[3], events)
    echo = Echo()
    with StageThread(_spec(echo), settings):
        out = consume(settings, RECEIVED, count=270, timeout=60, settle=1.0)
        dlq = consume(settings, DLQ, count=30, timeout=30, settle=0.5)
    ids = sorted(e.envelope.report_id for e in out.events)
    assert ids == sorted(e.envelope.report_id for e in events if not e.envelope.report_id.endswith("7"))
    assert len(dlq.messages) == 30
    assert {dict(m.headers() or [])["dlq.reason"] for m in dlq.messages} == {b"test_refusal"}
    assert max(echo.runs) > 1, "every record came alone: the batch hook was not used"
    assert echo.single == [] or len(echo.single) == sum(echo.runs)  # only through many() here


def test_a_failing_run_is_handled_again_record_by_record(settings: Settings, topics: None) -> None:
    events = _events(40, "p")
    produce(settings, PRIORITIZED[3], events)
    echo = Echo(poison=True)
    with StageThread(_spec(echo), settings) as stage:
        out = consume(settings, RECEIVED, count=36, timeout=60, settle=1.0)
        wait_for(lambda: stage.runner.processed == 40, timeout=30, what="the whole batch committed")
    ids = [e.envelope.report_id for e in out.events]
    assert len(ids) == len(set(ids)) == 36, "each record exactly once after the fallback"
    assert len(echo.single) >= 40, "the records were handled one by one after the run failed"


def test_lane_runs_hold_at_most_the_preemption_step(settings: Settings, topics: None) -> None:
    produce(settings, PRIORITIZED[3], _events(200, "l"))
    echo = Echo()
    with StageThread(_spec(echo, lanes=True), settings):
        consume(settings, RECEIVED, count=180, timeout=60)
    assert max(echo.runs) <= PREEMPT_CHECK_EVERY


def test_preempted_records_kept_in_memory_survive_a_rebalance_exactly_once(
    settings: Settings, topics: None
) -> None:
    """Top reports keep preempting a lane-4 backlog (the rest of each batch is kept in memory); a second
    instance joins meanwhile and takes partitions away: every record still comes out exactly once."""
    lows = _events(3000, "low")
    produce(settings, PRIORITIZED[3], lows)
    template = serde.decode(_encoded(1))
    tops: list[ev.ReportPrioritized] = []
    stop = threading.Event()

    def trickle() -> None:
        i = 0
        while not stop.is_set():
            top = dataclasses.replace(
                template,  # type: ignore[type-var]
                envelope=dataclasses.replace(template.envelope, event_id=f"top-{i}", report_id=f"top{i}"),
            )
            tops.append(top)
            produce(settings, PRIORITIZED[0], [top])
            i += 1
            stop.wait(0.04)

    # Each run of 25 takes 20 ms, as a stage's database work would: a top report arriving every 40 ms or
    # so then lands while a low batch is being handled (an instant handler left no time for that, and the
    # test passed or not by luck).
    first, second = Echo(run_s=0.02), Echo(run_s=0.02)
    feeder = threading.Thread(target=trickle, daemon=True)
    with StageThread(_spec(first, lanes=True), settings) as a:
        feeder.start()
        wait_for(lambda: a.runner.processed >= 300, timeout=60, what="the first instance under way")
        with StageThread(_spec(second, lanes=True), settings, instance=1):
            wait_for(lambda: len(second.runs) > 0, timeout=60, what="the second instance handling records")
            stop.set()
            feeder.join(30)
            expected = {e.envelope.report_id for e in lows if not e.envelope.report_id.endswith("7")}
            expected |= {t.envelope.report_id for t in tops if not t.envelope.report_id.endswith("7")}
            out = consume(settings, RECEIVED, count=len(expected), timeout=120, settle=2.0)
    ids = [e.envelope.report_id for e in out.events]
    assert len(ids) == len(set(ids)), "a record came out twice"
    assert set(ids) == expected
    assert a.runner.preemptions > 0, "no batch was preempted: the test did not exercise the kept records"


def test_a_batch_locks_all_its_keys_before_its_first_run(settings: Settings, topics: None) -> None:
    """``lock_batch`` comes first in each batch's database transaction, with every record's key: the
    runs after it (25 records each on a lane-aware stage) lock nothing it did not already hold."""
    produce(settings, PRIORITIZED[3], _events(300, "k"))
    echo = Echo()
    calls: list[tuple[str, list[str]]] = []
    in_transaction: list[bool] = []

    def lock_batch(keys: Sequence[bytes], ctx: Context) -> None:
        in_transaction.append(ctx.db is not None and ctx.db.info.transaction_status.name == "INTRANS")
        calls.append(("lock", [k.decode() for k in keys]))

    def many(items: Sequence[Item], ctx: Context) -> list[Sequence[Output] | DomainError]:
        calls.append(("run", [i.event.envelope.report_id for i in items]))
        return echo.many(items, ctx)

    spec = dataclasses.replace(
        _spec(echo, lanes=True), handle_batch=many, uses_db=True, lock_batch=lock_batch
    )
    with StageThread(spec, settings):
        consume(settings, RECEIVED, count=270, timeout=60)
    assert calls[0][0] == "lock"
    assert all(in_transaction), "lock_batch was called outside the batch's database transaction"
    held: set[str] = set()
    for kind, ids in calls:
        if kind == "lock":
            held = set(ids)
        else:
            assert set(ids) <= held, "a run handled a record whose key its batch did not lock first"
    assert any(len(ids) > PREEMPT_CHECK_EVERY for kind, ids in calls if kind == "lock"), (
        "no batch held more than one run: the test did not exercise the case it is about"
    )
