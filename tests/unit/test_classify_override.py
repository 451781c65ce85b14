"""An analyst's override: a new classification that supersedes the earlier one, refused to anyone else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.classify.logic import authorize, classify, latest, override
from pipeline.classify.rules import Tables, load_tables
from pipeline.classify.samples import prioritized
from pipeline.errors import DomainError
from pipeline.events import (
    Actor,
    ActorKind,
    Category,
    ContentKind,
    MaterialAction,
    ReportClassified,
    Role,
    Technology,
    Verdict,
)

NOW = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
LATER = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
ANALYST = Actor(kind=ActorKind.ANALYST, id="analyst-7")


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


@pytest.fixture(scope="module")
def first(tables: Tables) -> ReportClassified:
    """A report filed as CSAM whose facts (sexual talk, recipient age unknown) support nothing."""
    event = prioritized(
        reporter=Category.CSAM,
        content=(ContentKind.SEXUAL_CONVERSATION,),
        sender=Role.ADULT,
        technologies=(Technology.CHAT_IM, Technology.EMAIL),
        level=3,
    )
    return classify(event, tables, NOW)


def test_override_supersedes_and_reclassifies(first: ReportClassified, tables: Tables) -> None:
    """The override names the earlier event, the analyst, the reason, the new category and sections."""
    assert first.needs_analyst_review is True
    new = override(
        first,
        category=Category.LURING,
        sections=["172.1"],
        reason="chat log shows the child is 14",
        actor=ANALYST,
        tables=tables,
        now=LATER,
    )
    assert new.supersedes == first.envelope.event_id
    assert new.override_reason == "chat log shows the child is 14"
    assert new.envelope.actor == ANALYST
    assert new.envelope.causation_id == first.envelope.event_id
    assert new.envelope.event_id != first.envelope.event_id
    assert new.envelope.report_id == first.envelope.report_id
    assert [(c.assigned_category, c.sections, c.verdict) for c in new.incidents] == [
        (Category.LURING, ("172.1",), Verdict.CORRECTED)
    ] * 2
    assert new.needs_analyst_review is False
    assert (new.level, new.arrival_seq, new.body) == (first.level, first.arrival_seq, first.body)
    assert any("analyst-7" in r for r in new.incidents[0].reasons)


def test_override_of_one_incident_keeps_the_others(first: ReportClassified, tables: Tables) -> None:
    """Naming an incident reclassifies only that one; the others keep their earlier classification."""
    chat, email = first.incidents
    new = override(
        first,
        category=Category.CSAM,
        sections=["163.1(3)", "163.1(2)"],
        reason="images attached",
        actor=ANALYST,
        tables=tables,
        now=LATER,
        incident_ids=[email.incident_id],
    )
    assert new.incidents[0] == chat
    assert new.incidents[1].sections == ("163.1(2)", "163.1(3)")  # Criminal Code order
    assert new.incidents[1].verdict == Verdict.CONFIRMED  # the reporter had chosen CSAM
    assert new.needs_analyst_review is True  # the chat incident is still unclassified


def test_same_override_twice_has_same_id(first: ReportClassified, tables: Tables) -> None:
    """The very same override derives the same event id, so it is recognised and not written twice."""
    kwargs = {
        "category": Category.LURING,
        "sections": ["172.1"],
        "reason": "r",
        "actor": ANALYST,
        "tables": tables,
    }
    a = override(first, now=LATER, **kwargs)  # type: ignore[arg-type]
    b = override(first, now=NOW, **kwargs)  # type: ignore[arg-type]
    c = override(first, now=LATER, **{**kwargs, "reason": "other reason"})  # type: ignore[arg-type]
    assert a.envelope.event_id == b.envelope.event_id
    assert c.envelope.event_id != a.envelope.event_id


@pytest.mark.parametrize(
    ("kind", "analyst", "reason"),
    [
        (ActorKind.AUDITOR, "auditor-1", "not_an_analyst"),
        (ActorKind.SYSTEM, "classify", "not_an_analyst"),
        (ActorKind.SIMULATED, "sim", "not_an_analyst"),
        (ActorKind.ANALYST, None, "missing_analyst"),
        (ActorKind.ANALYST, "   ", "missing_analyst"),
    ],
)
def test_only_a_named_analyst_may_override(kind: ActorKind, analyst: str | None, reason: str) -> None:
    """An auditor, a system or an analyst without identity is refused with one sentence."""
    with pytest.raises(DomainError) as err:
        authorize(kind, analyst)
    assert err.value.reason == reason
    assert str(err.value).endswith(".")


def test_auditor_actor_refused_by_override_itself(first: ReportClassified, tables: Tables) -> None:
    """Even called directly, the rules refuse an override whose actor is an auditor."""
    with pytest.raises(DomainError, match="auditor"):
        override(
            first,
            category=Category.LURING,
            sections=["172.1"],
            reason="r",
            actor=Actor(kind=ActorKind.AUDITOR, id="aud"),
            tables=tables,
            now=LATER,
        )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"reason": "  "}, "missing_reason"),
        ({"sections": ["163.1(9)"]}, "unknown_section"),
        ({"incident_ids": ["no-such-incident"]}, "unknown_incident"),
    ],
)
def test_bad_override_arguments_refused(
    first: ReportClassified, tables: Tables, changes: dict[str, object], reason: str
) -> None:
    """A blank reason, an unknown section or an unknown incident is refused, naming what is wrong."""
    kwargs: dict[str, object] = {"category": Category.LURING, "sections": ["172.1"], "reason": "r"}
    kwargs.update(changes)
    with pytest.raises(DomainError) as err:
        override(first, actor=ANALYST, tables=tables, now=LATER, **kwargs)  # type: ignore[arg-type]
    assert err.value.reason == reason


def test_latest_follows_the_supersedes_chain(first: ReportClassified, tables: Tables) -> None:
    """The classification in force is the one nothing supersedes; the history keeps all of them."""
    second = override(
        first,
        category=Category.LURING,
        sections=["172.1"],
        reason="a",
        actor=ANALYST,
        tables=tables,
        now=LATER,
    )
    third = override(
        second,
        category=Category.CSAM,
        sections=["163.1(4)"],
        reason="b",
        actor=ANALYST,
        tables=tables,
        now=LATER,
    )
    assert latest([first, second, third]) == third
    assert latest([first, second]) == second
    assert latest([first]) == first
    assert latest([]) is None


def test_override_to_online_harms_needs_no_section(first: ReportClassified, tables: Tables) -> None:
    """A category without a section (online harms) can be assigned with no sections."""
    new = override(
        first,
        category=Category.ONLINE_HARMS,
        sections=[],
        reason="r",
        actor=ANALYST,
        tables=tables,
        now=LATER,
    )
    assert {(c.assigned_category, c.sections) for c in new.incidents} == {(Category.ONLINE_HARMS, ())}


def test_trafficking_documents_section_by_override(tables: Tables) -> None:
    """s.279.03(2), which no report fact supports, is added by an analyst's override."""
    event = prioritized(
        content=(ContentKind.OFFER_OF_SEXUAL_SERVICES,),
        money=True,
        ongoing=True,
        threats=True,
        sender=Role.ADULT,
        age=16,
        reporter=Category.TRAFFICKING,
        actions=(MaterialAction.SHARED,),
    )
    base = classify(event, tables, NOW)
    new = override(
        base,
        category=Category.TRAFFICKING,
        sections=[*base.incidents[0].sections, "279.03(2)"],
        reason="passport held by the suspect",
        actor=ANALYST,
        tables=tables,
        now=LATER,
    )
    assert new.incidents[0].sections[:3] == ("279.011", "279.02(2)", "279.03(2)")
    assert new.incidents[0].verdict == Verdict.CONFIRMED
