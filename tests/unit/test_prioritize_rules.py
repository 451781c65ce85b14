"""The priority rules on a table of cases: victim, suspect, neither; each content type; arrival order."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.prioritize.logic import MemoryState, arrival_seq, decide, rank, validate
from pipeline.prioritize.rules import LEVELS, RULES

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def body(**kw: Any) -> ev.ReportBody:
    base: dict[str, Any] = {
        "report_number": "CT-2026-000001",
        "channel": ev.Channel.WEB,
        "language": ev.Language.EN,
        "received_at": T0,
        "reporter_category": None,
        "description": "text the rules never read",
        "incidents": (ev.Incident(incident_id="i1", technology=ev.Technology.WEB_PAGE),),
        "facts": ev.Facts(),
        "anonymous": True,
    }
    base.update(kw)
    return ev.ReportBody(**base)


def received(b: ev.ReportBody, report_id: str | None = None) -> ev.ReportReceived:
    rid = report_id or str(uuid.uuid4())
    env = ev.Envelope.first(
        submission_id=str(uuid.uuid4()),
        event_type="ReportReceived",
        report_id=rid,
        producer="ingest/0.1.0",
        actor=ev.Actor(kind=ev.ActorKind.SYSTEM, id="ingest"),
        occurred_at=b.received_at,
    )
    return ev.ReportReceived(envelope=env, body=b, submission_id=str(uuid.uuid4()))


F = ev.Facts
C = ev.ContentKind
A = ev.Annotation

CASES: list[tuple[str, ev.ReportBody, int, tuple[str, ...]]] = [
    # level 1: victim information
    ("victim name", body(victim=ev.Victim(name="A. B.")), 1, ("victim_name",)),
    ("victim age 13", body(victim=ev.Victim(age=13)), 1, ("victim_age",)),
    ("victim born 2014", body(victim=ev.Victim(date_of_birth=date(2014, 5, 1))), 1, ("victim_age",)),
    ("victim school", body(victim=ev.Victim(school="Some school")), 1, ("victim_school",)),
    ("victim city", body(victim=ev.Victim(location=ev.Location(city="Winnipeg"))), 1, ("victim_location",)),
    ("victim province", body(victim=ev.Victim(location=ev.Location(province="MB"))), 1, ("victim_location",)),
    ("victim screen name", body(victim=ev.Victim(screen_name="kid_01")), 1, ("victim_screen_name",)),
    # level 1: suspect information
    ("suspect name", body(suspect=ev.Suspect(names=("J. D.",))), 1, ("suspect_name",)),
    ("suspect username", body(suspect=ev.Suspect(usernames=("bad_guy",))), 1, ("suspect_username",)),
    ("suspect e-mail", body(suspect=ev.Suspect(emails=("x@y.ca",))), 1, ("suspect_email",)),
    ("suspect phone", body(suspect=ev.Suspect(phones=("+12045550100",))), 1, ("suspect_phone",)),
    (
        "suspect profile",
        body(suspect=ev.Suspect(profile_urls=("https://s.example/u",))),
        1,
        ("suspect_profile",),
    ),
    ("suspect ip", body(suspect=ev.Suspect(ip_events=(ev.IpEvent(ip="192.0.2.7"),))), 1, ("suspect_ip",)),
    (
        "victim and suspect, with sextortion",
        body(
            victim=ev.Victim(name="A", age=14),
            suspect=ev.Suspect(usernames=("u",)),
            annotations=(A.SEXTORTION,),
        ),
        1,
        ("victim_name", "victim_age", "suspect_username"),
    ),
    # not information: blanks, an adult, a gender alone, a suspect's location alone
    ("blank victim name", body(victim=ev.Victim(name="  ")), 4, ("informational_concern",)),
    ("victim aged 19", body(victim=ev.Victim(age=19)), 4, ("informational_concern",)),
    ("victim gender only", body(victim=ev.Victim(gender="female")), 4, ("informational_concern",)),
    (
        "suspect location only",
        body(suspect=ev.Suspect(location=ev.Location(country="CA"))),
        4,
        ("informational_concern",),
    ),
    (
        "incident usernames are not suspect info",
        body(incidents=(ev.Incident(incident_id="i", technology=ev.Technology.CHAT_IM, usernames=("u",)),)),
        4,
        ("informational_concern",),
    ),
    # level 2: a child at risk now
    ("sextortion annotation", body(annotations=(A.SEXTORTION,)), 2, ("sextortion",)),
    (
        "threats over an intimate image",
        body(facts=F(threats=True, content=(C.INTIMATE_IMAGE,))),
        2,
        ("sextortion",),
    ),
    (
        "ongoing luring by category",
        body(reporter_category=ev.Category.LURING, facts=F(ongoing=True)),
        2,
        ("ongoing_luring",),
    ),
    (
        "ongoing sexual conversation with a minor",
        body(facts=F(ongoing=True, recipient_role=ev.Role.MINOR, content=(C.SEXUAL_CONVERSATION,))),
        2,
        ("ongoing_luring",),
    ),
    ("live stream fact", body(facts=F(live_stream=True)), 2, ("live_streamed_abuse",)),
    ("live stream annotation", body(annotations=(A.LIVE_STREAMING,)), 2, ("live_streamed_abuse",)),
    ("planned meeting", body(facts=F(in_person_meeting=True)), 2, ("in_person_contact_risk",)),
    ("travel", body(facts=F(travel=True)), 2, ("in_person_contact_risk",)),
    ("travel plan", body(facts=F(content=(C.TRAVEL_PLAN,))), 2, ("in_person_contact_risk",)),
    (
        "trafficking category",
        body(reporter_category=ev.Category.TRAFFICKING),
        2,
        ("in_person_contact_risk",),
    ),
    (
        "luring and sextortion together",
        body(reporter_category=ev.Category.LURING, annotations=(A.SEXTORTION,), facts=F(ongoing=True)),
        2,
        ("sextortion", "ongoing_luring"),
    ),
    # level 3: material, or exploitation already over
    (
        "a known URL shared again",
        body(
            reporter_category=ev.Category.CSAM,
            facts=F(content=(C.SEXUAL_IMAGE_OR_VIDEO,), actions=(ev.MaterialAction.SHARED,)),
        ),
        3,
        ("material_made_or_shared", "sexual_material_reported", "exploitation_category"),
    ),
    ("material viewed", body(facts=F(actions=(ev.MaterialAction.VIEWED,))), 3, ("sexual_material_reported",)),
    (
        "a described file",
        body(
            incidents=(
                ev.Incident(
                    incident_id="i",
                    technology=ev.Technology.PEER_TO_PEER,
                    files=(ev.FileRef(hashes=(ev.FileHash(hash_type=ev.HashType.MD5, value="0" * 32),)),),
                ),
            )
        ),
        3,
        ("sexual_material_reported",),
    ),
    ("luring over", body(reporter_category=ev.Category.LURING), 3, ("exploitation_category",)),
    (
        "solicitation not ongoing",
        body(annotations=(A.SOLICITATION,)),
        3,
        ("solicitation_or_grooming",),
    ),
    (
        "offer of services",
        body(facts=F(content=(C.OFFER_OF_SEXUAL_SERVICES,))),
        3,
        ("solicitation_or_grooming",),
    ),
    # level 4: informational concerns
    ("online harms", body(reporter_category=ev.Category.ONLINE_HARMS), 4, ("informational_concern",)),
    ("nothing structured", body(), 4, ("informational_concern",)),
    ("other content", body(facts=F(content=(C.OTHER,))), 4, ("informational_concern",)),
]


@pytest.mark.parametrize(("case", "b", "level", "reasons"), CASES, ids=[c[0] for c in CASES])
def test_rank_table(case: str, b: ev.ReportBody, level: int, reasons: tuple[str, ...]) -> None:
    """Each case gets the expected level, with exactly the rules that set it as reasons."""
    got = rank(b)
    assert (got.level, got.reasons) == (level, reasons), case


def test_rule_table_is_well_formed() -> None:
    """Rule names are unique, levels run 1..4 in order, every level is described, and one rule catches all."""
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert [r.level for r in RULES] == sorted(r.level for r in RULES)
    assert {r.level for r in RULES} == set(LEVELS) == {1, 2, 3, 4}
    assert RULES[-1].name == "informational_concern"


def test_prioritized_event_goes_on_its_level_with_arrival_seq() -> None:
    """The emitted event carries the level, the rules, the body and the receipt time in ms as arrival_seq."""
    r = received(body(victim=ev.Victim(name="A"), received_at=T0 + timedelta(milliseconds=1234)))
    [out] = decide(r, MemoryState(), T0)
    assert out.level == 1
    assert out.reasons == ("victim_name",)
    assert out.arrival_seq == int(T0.timestamp() * 1000) + 1234
    assert out.body == r.body
    assert out.envelope.report_id == r.envelope.report_id
    assert out.envelope.causation_id == r.envelope.event_id
    assert out.supersedes is None


def test_ties_are_broken_by_arrival() -> None:
    """Reports at one level sort by arrival_seq; a more urgent level sorts first whatever its arrival."""
    state = MemoryState()
    reports = [
        received(body(reporter_category=ev.Category.CSAM, received_at=T0 + timedelta(seconds=s)))
        for s in (30, 10, 20)
    ] + [received(body(suspect=ev.Suspect(emails=("a@b.ca",)), received_at=T0 + timedelta(seconds=40)))]
    outs = [o for r in reports for o in decide(r, state, T0)]
    ordered = sorted(outs, key=lambda o: (o.level, o.arrival_seq))
    assert [o.body.received_at - T0 for o in ordered] == [timedelta(seconds=s) for s in (40, 10, 20, 30)]
    assert arrival_seq(T0 + timedelta(seconds=10)) < arrival_seq(T0 + timedelta(seconds=20))


def test_rejected_report_yields_nothing() -> None:
    """A ReportRejected on the received topic produces no prioritization."""
    r = received(body())
    rej = ev.ReportRejected(
        envelope=dataclasses.replace(r.envelope, event_type="ReportRejected"),
        submission_id="s",
        reason_code="invalid",
        message="bad",
    )
    assert decide(rej, MemoryState(), T0) == []


BAD: list[tuple[str, Any, str]] = [
    ("negative age", body(victim=ev.Victim(age=-1)), "body.victim.age"),
    ("age 200", body(victim=ev.Victim(age=200)), "body.victim.age"),
    (
        "born after receipt",
        body(victim=ev.Victim(date_of_birth=date(2027, 1, 1))),
        "body.victim.date_of_birth",
    ),
    ("naive receipt time", body(received_at=datetime(2026, 1, 1)), "body.received_at"),
    ("receipt before 1970", body(received_at=datetime(1969, 12, 31, tzinfo=UTC)), "body.received_at"),
    ("no reporters", body(reporters_count=0), "body.reporters_count"),
    ("empty link", body(linked_to=" "), "body.linked_to"),
]


@pytest.mark.parametrize(("case", "b", "field"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_with_the_field(case: str, b: ev.ReportBody, field: str) -> None:
    """A report the rules cannot rank without guessing raises DomainError naming the field."""
    with pytest.raises(DomainError) as err:
        decide(received(b), MemoryState(), T0)
    assert err.value.field == field, case


def test_self_link_and_empty_report_id_are_refused() -> None:
    """A report linking to itself, or without a report id, is refused."""
    r = received(body(), report_id="r-1")
    with pytest.raises(DomainError) as err:
        validate(dataclasses.replace(r, body=dataclasses.replace(r.body, linked_to="r-1")))
    assert err.value.field == "body.linked_to"
    with pytest.raises(DomainError) as err:
        validate(dataclasses.replace(r, envelope=dataclasses.replace(r.envelope, report_id=" ")))
    assert err.value.field == "envelope.report_id"


def test_other_event_types_are_refused() -> None:
    """An event that is not a received or rejected report raises DomainError instead of being ignored."""
    r = received(body())
    [p] = decide(r, MemoryState(), T0)
    with pytest.raises(DomainError) as err:
        decide(p, MemoryState(), T0)
    assert err.value.reason == "unexpected_event_type"


def test_cli_prints_every_rule() -> None:
    """`tipline prioritize rules` lists every rule with its level, for an analyst lead to review."""
    from typer.testing import CliRunner

    from pipeline.prioritize.cli import app

    result = CliRunner().invoke(app, ["rules"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for rule in RULES:
        assert rule.name in result.output
    assert "level 1: information about a child victim or a suspect" in result.output
