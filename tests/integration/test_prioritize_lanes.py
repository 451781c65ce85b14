"""Priority lanes on the real broker: a lane-1 record overtakes a lane-4 backlog; aging lets lane 4 through;
a restarted consumer is not held back by lanes it already read."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.lanes import LanePolicy
from pipeline.prioritize.logic import MemoryState, decide
from pipeline.runtime import Context, Output, StageRunner, StageSpec
from pipeline.settings import Settings
from pipeline.topics import PRIORITIZED, name
from tests.integration.harness import StageThread, wait_for
from tests.unit.test_prioritize_rules import body, received

NOW = datetime.now(UTC)


def _encoded(level: int) -> bytes:
    bodies = {1: body(victim=ev.Victim(name="A")), 4: body(reporter_category=ev.Category.ONLINE_HARMS)}
    [p] = decide(received(bodies[level]), MemoryState(), NOW)
    assert p.level == level
    return serde.encode(p)


def _fill(settings: Settings, level: int, count: int, prefix: str, *, one_key: bool = False) -> None:
    """Put ``count`` distinct records on a lane, arrival_seq 0, 1, 2...; with ``one_key`` all on one partition."""
    prod = kafka.producer(settings)
    template = serde.decode(_encoded(level))
    assert isinstance(template, ev.ReportPrioritized)
    topic = name(PRIORITIZED[level - 1], settings.topic_suffix)
    for i in range(count):
        event = dataclasses.replace(
            template,
            arrival_seq=i,
            envelope=dataclasses.replace(
                template.envelope, event_id=f"{prefix}-{i}", report_id=f"{prefix}{i}"
            ),
        )
        key = prefix if one_key else f"{prefix}{i}"
        prod.produce(topic, key=key.encode(), value=serde.encode(event))
        if i % 1000 == 0:
            prod.poll(0)
    assert prod.flush(30) == 0


class Recorder:
    """A lane-aware consumer's handler that records the level of each record, slowly if asked."""

    def __init__(self, delay_s: dict[int, float]) -> None:
        self.levels: list[int] = []
        self.arrivals: dict[int, list[int]] = {}
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, event: Any, _ctx: Context) -> list[Output]:
        time.sleep(self.delay_s.get(event.level, 0.0))
        with self.lock:
            self.levels.append(event.level)
            self.arrivals.setdefault(event.level, []).append(event.arrival_seq)
        return []

    def count(self, level: int) -> int:
        with self.lock:
            return self.levels.count(level)


def _spec(recorder: Recorder, policy: LanePolicy | None = None) -> StageSpec:
    return StageSpec(
        name="classify", inputs=PRIORITIZED, handle=recorder, lanes=True, lane_policy=policy or LanePolicy()
    )


def test_lane_1_record_is_processed_before_the_remaining_backlog(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """With 3,000 records waiting in lane 4, a lane-1 record arriving mid-backlog is handled before most of it."""
    make_topics(*PRIORITIZED)
    _fill(settings, 4, 3000, "low", one_key=True)
    rec = Recorder({4: 0.001})
    with StageThread(_spec(rec), settings):
        wait_for(lambda: rec.count(4) >= 200, timeout=60, what="the backlog being consumed")
        _fill(settings, 1, 1, "top")
        wait_for(lambda: rec.count(1) == 1, timeout=30, what="the lane-1 record")
        lows_before_top = rec.levels.index(1)
        wait_for(lambda: rec.count(4) == 3000, timeout=60, what="the backlog drained")
    assert 3000 - lows_before_top >= 1500, f"only {3000 - lows_before_top} low records were left behind it"
    # The batch that yielded to lane 1 was read again from where it stopped: each low record once, in order.
    assert rec.arrivals[4] == list(range(3000))


def test_aging_lets_a_held_back_lane_through(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """While lane 1 stays busy, lane 4 still gets batches (aging), long before lane 1 has drained."""
    make_topics(*PRIORITIZED)
    _fill(settings, 1, 2000, "top")
    _fill(settings, 4, 1000, "low")
    rec = Recorder({1: 0.003})  # lane 1 alone takes about 6 s
    with StageThread(_spec(rec, LanePolicy(aging_s=0.5)), settings):
        wait_for(lambda: rec.count(4) >= 1, timeout=60, what="a lane-4 record")
        wait_for(
            lambda: rec.count(1) == 2000 and rec.count(4) == 1000, timeout=120, what="both lanes drained"
        )
    first_low = rec.levels.index(4)
    last_top = len(rec.levels) - 1 - rec.levels[::-1].index(1)
    assert first_low < last_top
    tops_after_first_low = rec.levels[first_low:].count(1)
    assert tops_after_first_low >= 500, "lane 4 got through only when lane 1 was nearly drained"


def test_restarted_consumer_is_not_held_back_by_lanes_it_read(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A new instance of the consumer group drains lane 4 at once although lane 1 has history."""
    make_topics(*PRIORITIZED)
    _fill(settings, 1, 30, "top")
    rec = Recorder({})
    with StageThread(_spec(rec), settings):
        wait_for(lambda: rec.count(1) == 30, timeout=60, what="lane 1 consumed")
    _fill(settings, 4, 2000, "low")
    rec2 = Recorder({})
    runner = StageRunner(_spec(rec2), settings, instance=1)
    runner.start()
    try:
        # Held back by lane 1's history, lane 4 would get one batch per aging period (500 per 5 s).
        deadline = time.monotonic() + 30
        while rec2.count(4) < 2000 and time.monotonic() < deadline:
            runner.poll_once(0.2)
    finally:
        runner.close()
    assert rec2.count(1) == 0
    assert rec2.count(4) == 2000
