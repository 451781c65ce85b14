"""Re-prioritization on the in-memory state: a linked report raises an earlier one, never lowers it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.prioritize.logic import RAISED_BY, MemoryState, decide
from tests.unit.test_prioritize_rules import T0, body, received

CSAM = {"reporter_category": ev.Category.CSAM}


def test_linked_report_naming_a_victim_raises_the_earlier_report() -> None:
    """A linked duplicate naming a victim raises the earlier report to level 1, superseding its old level."""
    state = MemoryState()
    [first] = decide(received(body(**CSAM), report_id="early"), state, T0)
    assert first.level == 3
    dup = received(
        body(**CSAM, victim=ev.Victim(name="A"), linked_to="early", received_at=T0 + timedelta(hours=1)),
        report_id="late",
    )
    own, raised = decide(dup, state, T0)
    assert (own.envelope.report_id, own.level) == ("late", 1)
    assert raised.envelope.report_id == "early"
    assert raised.level == 1
    assert raised.supersedes == first.envelope.event_id
    assert raised.reasons == (f"{RAISED_BY}late", "victim_name")
    assert raised.arrival_seq == first.arrival_seq
    assert raised.body == first.body
    assert raised.envelope.causation_id == dup.envelope.event_id
    assert raised.envelope.correlation_id == first.envelope.correlation_id
    assert state.last("early") == raised


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"victim": ev.Victim(name="A")}, CSAM),  # a less urgent duplicate
        (CSAM, CSAM),  # an equally urgent one
    ],
)
def test_a_link_never_lowers_or_repeats_a_level(earlier: dict[str, object], later: dict[str, object]) -> None:
    """A linked report that is not more urgent emits only its own prioritization."""
    state = MemoryState()
    decide(received(body(**earlier), report_id="e"), state, T0)  # type: ignore[arg-type]
    outs = decide(received(body(**later, linked_to="e"), report_id="l"), state, T0)  # type: ignore[arg-type]
    assert [o.envelope.report_id for o in outs] == ["l"]


def test_second_raise_supersedes_the_first_raise() -> None:
    """Raises chain: each supersedes the latest prioritization of the report."""
    state = MemoryState()
    [first] = decide(received(body(), report_id="e"), state, T0)
    _, r2 = decide(received(body(**CSAM, linked_to="e"), report_id="l2"), state, T0)
    _, r1 = decide(
        received(body(suspect=ev.Suspect(usernames=("u",)), linked_to="e"), report_id="l1"), state, T0
    )
    assert (first.level, r2.level, r1.level) == (4, 3, 1)
    assert r2.supersedes == first.envelope.event_id
    assert r1.supersedes == r2.envelope.event_id


def test_link_arriving_first_is_applied_when_the_earlier_report_is_ranked() -> None:
    """A linked report seen before its target leaves a pending raise that sets the target's level later."""
    state = MemoryState()
    [own] = decide(received(body(victim=ev.Victim(age=12), linked_to="e"), report_id="l"), state, T0)
    assert own.level == 1
    [target] = decide(received(body(**CSAM), report_id="e"), state, T0)
    assert target.level == 1
    assert target.reasons == (f"{RAISED_BY}l", "victim_age")
    assert target.supersedes is None


def test_replayed_input_yields_the_same_events() -> None:
    """Handling the same received event again returns what it returned the first time, ids included."""
    state = MemoryState()
    decide(received(body(**CSAM), report_id="e"), state, T0)
    dup = received(body(victim=ev.Victim(name="A"), linked_to="e"), report_id="l")
    once = decide(dup, state, T0)
    again = decide(dup, state, T0 + timedelta(minutes=5))
    assert again == once
    assert len(state.emitted) == 3


def test_a_report_id_received_twice_is_refused() -> None:
    """A second, different received event for a report already ranked is refused, not guessed at."""
    state = MemoryState()
    r = received(body(), report_id="x")
    decide(r, state, T0)
    other = dataclasses.replace(r, envelope=dataclasses.replace(r.envelope, event_id="another-id"))
    with pytest.raises(DomainError) as err:
        decide(other, state, T0)
    assert err.value.reason == "duplicate_report_id"
