"""The topic table: every topic, consumer group and dead-letter topic of the pipeline, by name.

Code and tests import these constants; nothing spells a topic name anywhere else. Every topic is keyed
by the report id, so all of one report's events stay in order on one partition. The event log is kept
forever (``retention.ms=-1``, ``retention.bytes=-1``); dead-letter topics too, so an operator can replay.

Data flows one way, each arrow a topic::

    submitted -> received -> prioritized.p1..p4 -> classified.p1..p4 -> assessed -> referred / followup / closed

The prioritized and classified steps have one topic per priority lane (p1 most urgent) so that a
top-priority report never waits behind a backlog of lower ones: consumers drain higher lanes first
(see ``pipeline.lanes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

LANES = (1, 2, 3, 4)
"""Priority levels, 1 the most urgent. A lane is one topic per level."""

FOREVER = "-1"


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """One topic: its base name (a suffix may be appended per run), what it carries, its dead letters."""

    name: str
    events: tuple[str, ...]
    description: str
    produced_by: str
    dead_letter: bool = False
    compacted: bool = False

    def config(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact", "retention.ms": FOREVER}
        return {"cleanup.policy": "delete", "retention.ms": FOREVER, "retention.bytes": FOREVER}


def _t(name: str, events: tuple[str, ...], description: str, produced_by: str) -> TopicSpec:
    return TopicSpec(name=name, events=events, description=description, produced_by=produced_by)


SUBMITTED = _t(
    "tipline.report.submitted.v1",
    ("ReportSubmitted",),
    "Step 2: reports as the web form, the phone line or an intake system handed them in.",
    "intake (HTTP endpoint, phone CLI, intake systems)",
)
RECEIVED = _t(
    "tipline.report.received.v1",
    ("ReportReceived", "ReportRejected"),
    "Step 3: reports received by the secure server: numbered, normalised, split into incidents.",
    "ingest",
)
PRIORITIZED = tuple(
    _t(
        f"tipline.report.prioritized.p{level}.v1",
        ("ReportPrioritized",),
        f"Step 4: reports ranked at priority level {level} (1 is the most urgent).",
        "prioritize",
    )
    for level in LANES
)
CLASSIFIED = tuple(
    _t(
        f"tipline.report.classified.p{level}.v1",
        ("ReportClassified",),
        f"Step 5: reports of priority level {level} with their Criminal Code classification; "
        "the analysts' queue is fed from these lanes.",
        "classify",
    )
    for level in LANES
)
ASSESSED = _t(
    "tipline.report.assessed.v1",
    ("ReportAssessed",),
    "Step 6: the determination of an analyst (or a clearly labelled automated or simulated one).",
    "assess",
)
REFERRED = _t(
    "tipline.report.referred.v1",
    ("ReportReferred",),
    "Step 7: one event per recipient (police, INHOPE hotline, INTERPOL, child protection).",
    "route",
)
FOLLOWUP = _t(
    "tipline.report.followup.v1",
    ("FollowUpRequested",),
    "Step 7: an informational or educational message owed to a reporter who left contact details.",
    "route",
)
CLOSED = _t(
    "tipline.report.closed.v1",
    ("ReportClosed",),
    "Step 7: the end of a report, with its outcome.",
    "route",
)

EVENT_TOPICS: tuple[TopicSpec, ...] = (
    SUBMITTED,
    RECEIVED,
    *PRIORITIZED,
    *CLASSIFIED,
    ASSESSED,
    REFERRED,
    FOLLOWUP,
    CLOSED,
)

STAGES = ("ingest", "prioritize", "classify", "assess", "route")


def dead_letter(stage: str) -> TopicSpec:
    """Where a stage sends a record it cannot process, with the reason in the headers."""
    if stage not in STAGES and stage != "projections":
        raise ValueError(f"unknown stage {stage!r}")
    return TopicSpec(
        name=f"tipline.deadletter.{stage}.v1",
        events=(),
        description=f"Raw records the {stage} step could not process; headers carry the reason.",
        produced_by=stage,
        dead_letter=True,
    )


DEAD_LETTERS: tuple[TopicSpec, ...] = tuple(dead_letter(s) for s in (*STAGES, "projections"))

ALL_TOPICS: tuple[TopicSpec, ...] = (*EVENT_TOPICS, *DEAD_LETTERS)


def group(stage: str, suffix: str = "") -> str:
    """The consumer group of a stage or read model (explicit: never derived from code location)."""
    return f"tipline.{stage}{suffix}"


def name(spec: TopicSpec, suffix: str = "") -> str:
    """The topic's name in one run: tests and parallel environments pass a suffix."""
    return spec.name + suffix


def lane_of(topic: str) -> int | None:
    """The priority level a lane topic carries, or None for a topic that is not a lane."""
    for specs in (PRIORITIZED, CLASSIFIED):
        for level, spec in zip(LANES, specs, strict=True):
            if topic.startswith(spec.name):
                return level
    return None


def all_names(suffix: str = "") -> Iterator[str]:
    for spec in ALL_TOPICS:
        yield name(spec, suffix)
