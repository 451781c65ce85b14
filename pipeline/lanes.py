"""Priority lanes: a consumer of several lane topics drains higher lanes first, with an aging rule.

The rule is pure (no Kafka): given, for each lane, whether it has records waiting, and how long the
lower lanes have been held back, it says which lanes to fetch from now. ``pipeline.runtime`` applies it
by pausing and resuming partitions. Lane 1 is never paused, so a top-priority report is fetched as soon
as it lands whatever the backlog below it; a lower lane that has been held back longer than
``aging_s`` is let through until it has delivered a batch (or has nothing left), so it is never starved
forever.

Why a grant lasts until a delivery: a paused partition's prefetched records are dropped by the client,
so a lane resumed for a single poll has usually fetched nothing yet when it is paused again; measured
on the real broker (with lane 1 kept busy), a one-poll or time-limited grant let nothing of lane 4
through in 12 s with ``aging_s=1``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LanePolicy:
    aging_s: float = 5.0
    """How long a waiting lane may be held back before it is let through for one batch."""


def top_waiting(waiting: Mapping[int, bool]) -> int | None:
    """The most urgent lane with records waiting, or None."""
    return next((lane for lane in sorted(waiting) if waiting[lane]), None)


def active_lanes(
    waiting: Mapping[int, bool],
    held_since: Mapping[int, float | None],
    now: float,
    policy: LanePolicy,
    granted: Collection[int] = (),
) -> frozenset[int]:
    """Lanes to fetch from: every lane down to the highest one with records waiting, plus aged lanes.

    ``granted`` are lanes already let through by aging that have not delivered a batch yet: they stay
    active.
    """
    lanes = sorted(waiting)
    if not lanes:
        return frozenset()
    top = top_waiting(waiting)
    if top is None:
        return frozenset(lanes)  # nothing waiting anywhere: listen on all lanes
    active = {lane for lane in lanes if lane <= top}
    for lane in lanes:
        since = held_since.get(lane)
        if lane not in active and (lane in granted or (since is not None and now - since >= policy.aging_s)):
            active.add(lane)
    return frozenset(active)
