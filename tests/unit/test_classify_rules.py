"""The classification table: facts of a report -> category, Criminal Code sections, verdict, tags."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import pytest

from pipeline.classify.logic import classify, decide
from pipeline.classify.rules import Tables, load_tables
from pipeline.classify.samples import prioritized
from pipeline.events import Annotation as A
from pipeline.events import Category as C
from pipeline.events import ContentKind as K
from pipeline.events import MaterialAction as M
from pipeline.events import Role as R
from pipeline.events import Technology as T
from pipeline.events import Verdict as V

NOW = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
IMG = K.SEXUAL_IMAGE_OR_VIDEO
INTIMATE = K.INTIMATE_IMAGE
TALK = K.SEXUAL_CONVERSATION
OFFER = K.OFFER_OF_SEXUAL_SERVICES


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


@dataclass(frozen=True)
class Case:
    id: str
    facts: dict[str, Any]
    category: C | None
    verdict: V
    sections: tuple[str, ...]
    tags: tuple[str, ...] = ()
    reason_has: str | None = None
    review: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


SEXTORTION_15 = {
    "content": (TALK, INTIMATE),
    "actions": (M.MADE,),
    "threats": True,
    "annotations": (A.SEXTORTION,),
    "sender": R.ADULT,
    "recipient": R.MINOR,
    "age": 15,
    "technologies": (T.CHAT_IM,),
}
TRAFFICKING_15 = {
    "content": (OFFER,),
    "money": True,
    "ongoing": True,
    "threats": True,
    "sender": R.ADULT,
    "age": 15,
}

CASES = [
    # --- child sexual abuse and exploitation material, s.163.1 ---
    Case(
        "csam-making",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.MADE,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(2)",),
    ),
    Case(
        "csam-distribution",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.SHARED,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(3)",),
    ),
    Case(
        "csam-possession",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.POSSESSED,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(4)",),
    ),
    Case(
        "csam-accessing",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.VIEWED,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(4.1)",),
    ),
    Case(
        "csam-all-four-actions",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.VIEWED, M.POSSESSED, M.SHARED, M.MADE)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(2)", "163.1(3)", "163.1(4)", "163.1(4.1)"),
    ),
    Case(
        "csam-web-page-no-action-is-made-available",
        {"reporter": C.CSAM, "content": (IMG,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(3)",),
        reason_has="made available",
    ),
    Case(
        "csam-offline-no-action-is-possession",
        {"reporter": C.CSAM, "content": (IMG,), "technologies": (T.NON_INTERNET,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(4)",),
    ),
    Case(
        "csam-live-stream",
        {"reporter": C.CSAM, "content": (IMG,), "live": True},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(2)", "163.1(3)"),
    ),
    Case(
        "csam-live-streaming-annotation",
        {"content": (IMG,), "annotations": (A.LIVE_STREAMING,)},
        C.CSAM,
        V.NOT_STATED,
        ("163.1(2)", "163.1(3)"),
    ),
    Case(
        "csam-written-material-shared",
        {"reporter": C.CSAM, "content": (K.SEXUAL_TEXT,), "actions": (M.SHARED,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(3)",),
    ),
    Case(
        "csam-infant-viewed",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.VIEWED,), "annotations": (A.INFANT,)},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(4.1)",),
    ),
    Case(
        "correction-online-harms-to-csam",
        {"reporter": C.ONLINE_HARMS, "content": (IMG,), "actions": (M.SHARED,)},
        C.CSAM,
        V.CORRECTED,
        ("163.1(3)",),
        reason_has="chose online_harms",
    ),
    Case(
        "csam-not-stated", {"content": (IMG,), "actions": (M.POSSESSED,)}, C.CSAM, V.NOT_STATED, ("163.1(4)",)
    ),
    # --- non-consensual distribution of intimate images of a minor, s.162.1 with s.163.1 ---
    Case(
        "ncii-minor",
        {"reporter": C.NCII_MINOR, "content": (INTIMATE,), "actions": (M.SHARED,), "age": 16},
        C.NCII_MINOR,
        V.CONFIRMED,
        ("162.1", "163.1(3)"),
    ),
    Case(
        "ncii-reporter-chose-csam-also-supported",
        {"reporter": C.CSAM, "content": (INTIMATE,), "actions": (M.SHARED,), "age": 16},
        C.CSAM,
        V.CONFIRMED,
        ("162.1", "163.1(3)"),
    ),
    Case(
        "ncii-not-stated-prefers-ncii",
        {"content": (INTIMATE,), "actions": (M.SHARED,), "age": 17},
        C.NCII_MINOR,
        V.NOT_STATED,
        ("162.1", "163.1(3)"),
    ),
    Case(
        "ncii-between-minors",
        {
            "reporter": C.NCII_MINOR,
            "content": (INTIMATE,),
            "actions": (M.SHARED,),
            "sender": R.MINOR,
            "annotations": (A.MINOR_TO_MINOR,),
            "age": 14,
        },
        C.NCII_MINOR,
        V.CONFIRMED,
        ("162.1", "163.1(3)"),
    ),
    Case(
        "intimate-image-of-adult-unclassifiable",
        {"reporter": C.NCII_MINOR, "content": (INTIMATE,), "actions": (M.SHARED,), "age": 19},
        None,
        V.UNCLASSIFIABLE,
        (),
        reason_has="analyst",
        review=True,
    ),
    # --- luring a child, s.172.1 ---
    Case(
        "luring-under-14",
        {
            "reporter": C.LURING,
            "content": (TALK,),
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "age": 13,
            "technologies": (T.CHAT_IM,),
        },
        C.LURING,
        V.CONFIRMED,
        ("172.1",),
        reason_has="172.1(1)(c)",
    ),
    Case(
        "luring-by-solicitation-corrects-online-harms",
        {
            "reporter": C.ONLINE_HARMS,
            "annotations": (A.SOLICITATION,),
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "technologies": (T.SOCIAL_MEDIA,),
        },
        C.LURING,
        V.CORRECTED,
        ("172.1",),
    ),
    Case(
        "luring-age-from-date-of-birth",
        {
            "reporter": C.LURING,
            "content": (TALK,),
            "sender": R.ADULT,
            "date_of_birth": date(2009, 2, 1),
            "technologies": (T.ONLINE_GAMING,),
        },
        C.LURING,
        V.CONFIRMED,
        ("172.1",),
        reason_has="172.1(1)(a)",
    ),
    Case(
        "no-luring-without-telecommunication",
        {
            "reporter": C.LURING,
            "content": (TALK,),
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "age": 12,
            "technologies": (T.NON_INTERNET,),
        },
        C.ONLINE_HARMS,
        V.CORRECTED,
        (),
    ),
    Case(
        "no-luring-when-recipient-age-unknown",
        {"reporter": C.LURING, "content": (TALK,), "sender": R.ADULT},
        None,
        V.UNCLASSIFIABLE,
        (),
        review=True,
    ),
    # --- sextortion: a tag, s.346 beside the sections it rides on ---
    Case(
        "sextortion-of-15-year-old-reporter-csam",
        {**SEXTORTION_15, "reporter": C.CSAM},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(2)", "172.1", "346"),
        tags=("sextortion",),
        reason_has="172.1(1)(b)",
    ),
    Case(
        "sextortion-of-15-year-old-not-stated",
        SEXTORTION_15,
        C.LURING,
        V.NOT_STATED,
        ("163.1(2)", "172.1", "346"),
        tags=("sextortion",),
    ),
    Case(
        "sextortion-from-threats-over-images",
        {"reporter": C.CSAM, "content": (INTIMATE,), "actions": (M.POSSESSED,), "threats": True, "age": 14},
        C.CSAM,
        V.CONFIRMED,
        ("163.1(4)", "346"),
        tags=("sextortion",),
    ),
    Case(
        "sextortion-tag-alone-is-unclassifiable",
        {"annotations": (A.SEXTORTION,)},
        None,
        V.UNCLASSIFIABLE,
        (),
        tags=("sextortion",),
        reason_has="rides on",
        review=True,
    ),
    # --- agreement or arrangement, s.172.2 ---
    Case(
        "agreement-arrangement",
        {
            "reporter": C.AGREEMENT_ARRANGEMENT,
            "content": (K.ARRANGEMENT_WITH_OTHER_ADULT,),
            "technologies": (T.EMAIL,),
        },
        C.AGREEMENT_ARRANGEMENT,
        V.CONFIRMED,
        ("172.2",),
    ),
    Case(
        "agreement-offline-unclassifiable",
        {
            "reporter": C.AGREEMENT_ARRANGEMENT,
            "content": (K.ARRANGEMENT_WITH_OTHER_ADULT,),
            "technologies": (T.NON_INTERNET,),
        },
        None,
        V.UNCLASSIFIABLE,
        (),
        review=True,
    ),
    # --- making sexually explicit material available to a child, s.171.1 ---
    Case(
        "explicit-material-corrects-luring",
        {
            "reporter": C.LURING,
            "content": (K.EXPLICIT_MATERIAL_SENT_TO_CHILD,),
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "technologies": (T.CHAT_IM,),
        },
        C.EXPLICIT_MATERIAL_TO_CHILD,
        V.CORRECTED,
        ("171.1",),
    ),
    Case(
        "explicit-material-with-sexual-talk",
        {
            "reporter": C.EXPLICIT_MATERIAL_TO_CHILD,
            "content": (K.EXPLICIT_MATERIAL_SENT_TO_CHILD, TALK),
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "technologies": (T.CHAT_IM,),
        },
        C.EXPLICIT_MATERIAL_TO_CHILD,
        V.CONFIRMED,
        ("171.1", "172.1"),
    ),
    # --- travelling to sexually exploit a child, s.7(4.1) ---
    Case(
        "travelling-plan-abroad",
        {
            "reporter": C.TRAVELLING,
            "content": (K.TRAVEL_PLAN,),
            "travel": True,
            "victim_country": "TH",
            "sender": R.ADULT,
        },
        C.TRAVELLING,
        V.CONFIRMED,
        ("7(4.1)",),
    ),
    Case(
        "travelling-meeting-abroad",
        {
            "content": (TALK,),
            "travel": True,
            "meeting": True,
            "victim_country": "PH",
            "age": 12,
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "technologies": (T.CHAT_IM,),
        },
        C.TRAVELLING,
        V.NOT_STATED,
        ("172.1", "7(4.1)"),
    ),
    Case(
        "travel-within-canada-is-not-7-4-1",
        {
            "reporter": C.TRAVELLING,
            "content": (K.TRAVEL_PLAN,),
            "travel": True,
            "victim_country": "CA",
            "sender": R.ADULT,
        },
        None,
        V.UNCLASSIFIABLE,
        (),
        review=True,
    ),
    # --- commercial sexual exploitation, ss.286.1(2), 286.2(2), 286.3(2) ---
    Case(
        "commercial-purchase-with-luring",
        {
            "reporter": C.COMMERCIAL_EXPLOITATION,
            "content": (TALK,),
            "money": True,
            "sender": R.ADULT,
            "recipient": R.MINOR,
            "age": 16,
            "technologies": (T.CHAT_IM,),
        },
        C.COMMERCIAL_EXPLOITATION,
        V.CONFIRMED,
        ("172.1", "286.1(2)"),
    ),
    Case(
        "commercial-third-party-advert",
        {"reporter": C.COMMERCIAL_EXPLOITATION, "content": (OFFER,), "money": True, "sender": R.ADULT},
        C.COMMERCIAL_EXPLOITATION,
        V.CONFIRMED,
        ("286.2(2)", "286.3(2)"),
    ),
    Case(
        "commercial-advert-of-adult-unclassifiable",
        {"reporter": C.COMMERCIAL_EXPLOITATION, "content": (OFFER,), "money": True, "age": 22},
        None,
        V.UNCLASSIFIABLE,
        (),
        review=True,
    ),
    # --- trafficking of a person under 18, ss.279.011, 279.02(2) ---
    Case(
        "trafficking-not-stated",
        TRAFFICKING_15,
        C.TRAFFICKING,
        V.NOT_STATED,
        ("279.011", "279.02(2)", "286.2(2)", "286.3(2)"),
    ),
    Case(
        "trafficking-reporter-chose-commercial",
        {**TRAFFICKING_15, "reporter": C.COMMERCIAL_EXPLOITATION},
        C.COMMERCIAL_EXPLOITATION,
        V.CONFIRMED,
        ("279.011", "279.02(2)", "286.2(2)", "286.3(2)"),
    ),
    Case(
        "trafficking-moved-without-money-corrects-csam",
        {
            "reporter": C.CSAM,
            "content": (OFFER,),
            "travel": True,
            "ongoing": True,
            "sender": R.ADULT,
            "age": 16,
        },
        C.TRAFFICKING,
        V.CORRECTED,
        ("279.011",),
    ),
    # --- concerns about online harms (no section) ---
    Case(
        "online-harms-between-minors",
        {
            "reporter": C.ONLINE_HARMS,
            "content": (TALK,),
            "sender": R.MINOR,
            "recipient": R.MINOR,
            "annotations": (A.MINOR_TO_MINOR,),
        },
        C.ONLINE_HARMS,
        V.CONFIRMED,
        (),
    ),
    Case(
        "online-harms-threats-to-child",
        {"threats": True, "age": 12, "content": (K.OTHER,)},
        C.ONLINE_HARMS,
        V.NOT_STATED,
        (),
    ),
    Case(
        "online-harms-reporter-chose-csam-without-material",
        {"reporter": C.CSAM, "content": (K.OTHER,), "age": 10},
        C.ONLINE_HARMS,
        V.CORRECTED,
        (),
    ),
    # --- unclassifiable ---
    Case(
        "nothing-in-the-facts",
        {"reporter": C.CSAM},
        None,
        V.UNCLASSIFIABLE,
        (),
        reason_has="content=none",
        review=True,
    ),
    Case("nothing-not-stated", {}, None, V.UNCLASSIFIABLE, (), review=True),
    Case(
        "adult-sexual-material",
        {"reporter": C.CSAM, "content": (IMG,), "actions": (M.SHARED,), "age": 30},
        None,
        V.UNCLASSIFIABLE,
        (),
        review=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_classification_table(case: Case, tables: Tables) -> None:
    """Each row's facts yield exactly the expected category, verdict, sections, tags and review flag."""
    event = prioritized(**case.facts)
    out = classify(event, tables, NOW)
    (inc,) = out.incidents
    assert inc.assigned_category == case.category
    assert inc.verdict == case.verdict
    assert inc.sections == case.sections
    assert inc.tags == case.tags
    assert inc.reporter_category == case.facts.get("reporter")
    assert out.needs_analyst_review is case.review
    if case.reason_has is not None:
        assert any(case.reason_has in r for r in inc.reasons), inc.reasons


def test_table_covers_every_category_and_section(tables: Tables) -> None:
    """The case table assigns every category, every verdict, and every section the rules can give."""
    assert {c.category for c in CASES} >= set(C)
    assert {c.verdict for c in CASES} == set(V)
    ruled = {s for r in tables.rules for s in r.sections}
    assert {s for c in CASES for s in c.sections} == ruled


def test_output_carries_level_priority_and_body(tables: Tables) -> None:
    """The classification keeps level, priority reasons, arrival order and body, and follows its cause."""
    event = prioritized(content=(IMG,), actions=(M.SHARED,), level=3, arrival_seq=42)
    out = classify(event, tables, NOW)
    assert (out.level, out.priority_reasons, out.arrival_seq) == (3, ("synthetic",), 42)
    assert out.body == event.body
    assert out.envelope.causation_id == event.envelope.event_id
    assert out.envelope.report_id == event.envelope.report_id
    assert out.envelope.correlation_id == event.envelope.correlation_id
    assert out.envelope.actor.kind == "system"
    assert out.supersedes is None
    assert out.override_reason is None


def test_same_input_same_event_id(tables: Tables) -> None:
    """A redelivered input is classified under the same event id (idempotent output)."""
    event = prioritized(content=(IMG,), actions=(M.SHARED,))
    first = decide(event, tables, NOW)
    again = decide(event, tables, datetime(2026, 3, 2, tzinfo=UTC))
    assert first[0].envelope.event_id == again[0].envelope.event_id
    assert first[0].incidents == again[0].incidents


def test_each_incident_classified_on_its_own(tables: Tables) -> None:
    """A report naming a web page and an offline place gets two classifications that differ."""
    event = prioritized(reporter=C.CSAM, content=(IMG,), technologies=(T.WEB_PAGE, T.NON_INTERNET))
    web, offline = classify(event, tables, NOW).incidents
    assert (web.incident_id, web.sections) == (event.body.incidents[0].incident_id, ("163.1(3)",))
    assert (offline.incident_id, offline.sections) == (event.body.incidents[1].incident_id, ("163.1(4)",))


def test_one_unclassifiable_incident_sends_report_to_review(tables: Tables) -> None:
    """If any incident has no supported category, the whole report is flagged for analyst review."""
    event = prioritized(content=(K.ARRANGEMENT_WITH_OTHER_ADULT,), technologies=(T.EMAIL, T.NON_INTERNET))
    out = classify(event, tables, NOW)
    assert [i.verdict for i in out.incidents] == [V.NOT_STATED, V.UNCLASSIFIABLE]
    assert out.needs_analyst_review is True


def test_reasons_never_carry_the_description(tables: Tables) -> None:
    """Reasons name rules and facts only: the reporter's description never appears in them."""
    event = prioritized(content=(IMG,), actions=(M.SHARED,))
    out = classify(event, tables, NOW)
    assert all(event.body.description not in r for r in out.incidents[0].reasons)


def test_reprioritized_report_supersedes_its_earlier_classification(tables: Tables) -> None:
    """A report raised to a more urgent lane supersedes the classification made at its earlier level."""
    earlier = prioritized(content=(IMG,), actions=(M.SHARED,), level=3)
    raised = replace(
        earlier,
        envelope=replace(earlier.envelope, event_id="raised-1"),
        level=1,
        supersedes=earlier.envelope.event_id,
    )
    first = classify(earlier, tables, NOW)
    second = classify(raised, tables, NOW)
    assert first.supersedes is None
    assert second.supersedes == first.envelope.event_id
    assert second.level == 1
    assert second.incidents[0].sections == first.incidents[0].sections
    assert "re-prioritized" in second.incidents[0].reasons[-1]
    assert second.override_reason is None
