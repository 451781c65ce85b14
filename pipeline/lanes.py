"""Priority lanes: a consumer of several lane topics drains higher lanes first, with an aging rule.

The rule is pure (no Kafka): given, for each lane, whether it has records waiting, and how long the
lower lanes have been held back, it says which lanes to fetch from now. ``pipeline.runtime`` applies it
by pausing and resuming partitions. Lane 1 is never paused, so a top-priority report is fetched as soon
as it lands whatever the backlog below it; a lower lane that has been held back longer than
``aging_s`` gets one batch anyway, so it is never starved forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LanePolicy:
    aging_s: float = 5.0
    """How long a waiting lane may be held back before it is let through for one batch."""


def active_lanes(
    waiting: Mapping[int, bool], held_since: Mapping[int, float | None], now: float, policy: LanePolicy
) -> frozenset[int]:
    """Lanes to fetch from: every lane down to the highest one with records waiting, plus aged lanes."""
    lanes = sorted(waiting)
    if not lanes:
        return frozenset()
    top_waiting = next((lane for lane in lanes if waiting[lane]), None)
    if top_waiting is None:
        return frozenset(lanes)  # nothing waiting anywhere: listen on all lanes
    active = {lane for lane in lanes if lane <= top_waiting}
    for lane in lanes:
        since = held_since.get(lane)
        if lane not in active and since is not None and now - since >= policy.aging_s:
            active.add(lane)
    return frozenset(active)
