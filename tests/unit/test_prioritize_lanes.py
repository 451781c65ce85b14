"""The lane rule (pure): higher lanes first, aging grants a held-back lane one batch, grants end."""

from __future__ import annotations

import pytest

from pipeline.lanes import LanePlan, LanePolicy, active_lanes, plan_lanes, top_waiting

P = LanePolicy(aging_s=5.0)
ALL = frozenset({1, 2, 3, 4})


def w(*lanes: int) -> dict[int, bool]:
    return {lane: lane in lanes for lane in (1, 2, 3, 4)}


@pytest.mark.parametrize(
    ("waiting", "active"),
    [
        (w(), ALL),  # nothing waiting: listen everywhere
        (w(4), ALL),  # only the lowest lane: fetch it (and listen on the others)
        (w(1, 4), frozenset({1})),  # a top record holds the backlog back
        (w(2, 3, 4), frozenset({1, 2})),
        (w(3), frozenset({1, 2, 3})),
    ],
)
def test_higher_lanes_first(waiting: dict[int, bool], active: frozenset[int]) -> None:
    """Lanes are fetched down to the most urgent one with records waiting; lane 1 is always fetched."""
    assert active_lanes(waiting, {}, 100.0, P) == active


def test_held_lane_is_granted_after_aging() -> None:
    """A lane held back for aging_s while waiting gets a grant, during which only it is fetched."""
    held = {2: 90.0, 3: 90.0, 4: 90.0}
    assert plan_lanes(w(1, 4), held, 94.9, P) == LanePlan(frozenset({1}), frozenset())
    assert plan_lanes(w(1, 4), held, 95.0, P) == LanePlan(frozenset({4}), frozenset({4}))


def test_held_lane_with_nothing_waiting_is_not_granted() -> None:
    """Aging lets through only lanes that have records waiting."""
    assert plan_lanes(w(1), {4: 0.0}, 100.0, P) == LanePlan(frozenset({1}), frozenset())


def test_grant_lasts_while_the_lane_has_records() -> None:
    """A grant in progress keeps only the granted lane active, and ends when it has nothing left."""
    assert plan_lanes(w(1, 4), {}, 100.0, P, granted={4}) == LanePlan(frozenset({4}), frozenset({4}))
    assert plan_lanes(w(1), {}, 100.0, P, granted={4}) == LanePlan(frozenset({1}), frozenset())


def test_top_waiting() -> None:
    """The most urgent waiting lane is found, or None."""
    assert top_waiting(w(3, 2)) == 2
    assert top_waiting(w()) is None


def test_aging_never_starves_a_lane_in_a_simulated_busy_loop() -> None:
    """Simulating a consumer where lane 1 is always busy, lane 4 still gets a batch every aging period."""
    held: dict[int, float | None] = {}
    paused: set[int] = set()
    granted: set[int] = set()
    lane4_batches = 0
    now = 0.0
    for _ in range(200):  # 200 polls of 0.1 s each = 20 s
        plan = plan_lanes(w(1, 4), held, now, P, granted)
        granted = set(plan.granted)
        for lane in (1, 2, 3, 4):
            if lane in plan.active and lane in paused:
                paused.discard(lane)
                held[lane] = None
            elif lane not in plan.active and lane not in paused:
                paused.add(lane)
                held[lane] = now
        if 4 in plan.active:
            lane4_batches += 1
            granted.discard(4)  # the grant delivered its batch
        now += 0.1
    assert lane4_batches == 3  # at 5 s, about 10 s and about 15 s (each grant then waits aging_s again)
