"""Properties of the ranking over generated reports: always a level, never less urgent with more facts."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.prioritize.logic import MemoryState, decide, rank, validate
from pipeline.prioritize.rules import RULES
from tests.unit.strategies import st_event, st_report_body

NAMES = {r.name: r.level for r in RULES}


@given(st_report_body())
@settings(max_examples=25, deadline=None)
def test_every_report_gets_a_level_with_its_rules(body: ev.ReportBody) -> None:
    """Any report gets a level 1..4 whose reasons are rules of exactly that level."""
    got = rank(body)
    assert got.level in (1, 2, 3, 4)
    assert got.reasons
    assert all(NAMES[r] == got.level for r in got.reasons)


@given(st_report_body(), st.sampled_from(["victim", "suspect", "sextortion", "live"]))
@settings(max_examples=25, deadline=None)
def test_more_information_never_lowers_the_level(body: ev.ReportBody, extra: str) -> None:
    """Adding a victim's name, a suspect's username, sextortion or live streaming never makes it less urgent."""
    more = {
        "victim": lambda b: dataclasses.replace(b, victim=ev.Victim(name="A")),
        "suspect": lambda b: dataclasses.replace(b, suspect=ev.Suspect(usernames=("u",))),
        "sextortion": lambda b: dataclasses.replace(
            b, annotations=(*b.annotations, ev.Annotation.SEXTORTION)
        ),
        "live": lambda b: dataclasses.replace(b, facts=dataclasses.replace(b.facts, live_stream=True)),
    }[extra](body)
    assert rank(more).level <= rank(body).level
    assert rank(more).level <= (1 if extra in ("victim", "suspect") else 2)


@given(st_event(ev.ReportReceived))
@settings(max_examples=15, deadline=None)
def test_decide_emits_one_event_on_a_lane_or_refuses(event: ev.ReportReceived) -> None:
    """A generated received report yields its own prioritization (level 1..4), or a DomainError; never a guess."""
    try:
        validate(event)
    except DomainError:
        with pytest.raises(DomainError):
            decide(event, MemoryState(), event.body.received_at)
        return
    outs = decide(event, MemoryState(), event.body.received_at)
    assert outs[0].envelope.report_id == event.envelope.report_id
    assert outs[0].level in (1, 2, 3, 4)
    assert len(outs) == 1  # nothing to raise: the state knows no earlier report
