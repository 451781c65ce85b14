"""The automated pre-assessment, the known-material list parser, identities and assessment events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import serde
from pipeline.assess import logic
from pipeline.errors import DomainError
from pipeline.events import (
    ActorKind,
    Annotation,
    Category,
    Determination,
    Facts,
    HashType,
    IpEvent,
    Location,
    ReportClassified,
    Suspect,
    Verdict,
    Victim,
)
from tests.unit.strategies import st_event
from tests.unit.test_assess_support import canadian_victim, classified

KNOWN_MD5 = "00000000000000000000000000fa4e01"
UNKNOWN_MD5 = "11111111111111111111111111111111"
NOW = datetime(2026, 3, 2, tzinfo=UTC)
KNOWN = frozenset({logic.hash_key(HashType.MD5, KNOWN_MD5)})


@pytest.mark.parametrize(
    ("case", "event", "expected"),
    [
        (
            "known hash, CSAM",
            classified(hashes=((HashType.MD5, KNOWN_MD5),)),
            Determination.POTENTIALLY_ILLEGAL,
        ),
        (
            "known hash in upper case still matches",
            classified(hashes=((HashType.MD5, KNOWN_MD5.upper()),)),
            Determination.POTENTIALLY_ILLEGAL,
        ),
        (
            "known hash on an unclassifiable report",
            classified(category=None, urls=(), hashes=((HashType.MD5, KNOWN_MD5),)),
            Determination.POTENTIALLY_ILLEGAL,
        ),
        ("unknown hash: a person decides", classified(hashes=((HashType.MD5, UNKNOWN_MD5),)), None),
        ("CSAM with a URL: a person decides", classified(), None),
        (
            "unclassifiable, nothing to act on",
            classified(category=None, urls=()),
            Determination.INFORMATIONAL,
        ),
        ("unclassifiable with a URL", classified(category=None), None),
        (
            "unclassifiable with an unknown file hash",
            classified(category=None, urls=(), hashes=((HashType.MD5, UNKNOWN_MD5),)),
            None,
        ),
        ("unclassifiable with a victim", classified(category=None, urls=(), victim=Victim(age=13)), None),
        (
            "unclassifiable with a suspect IP",
            classified(category=None, urls=(), suspect=Suspect(ip_events=(IpEvent(ip="203.0.113.9"),))),
            None,
        ),
        (
            "unclassifiable with ongoing threats",
            classified(category=None, urls=(), facts=Facts(threats=True)),
            None,
        ),
        (
            "unclassifiable with an empty suspect record",
            classified(category=None, urls=(), suspect=Suspect()),
            Determination.INFORMATIONAL,
        ),
        (
            "online harms without anything: classified, so a person decides",
            classified(category=Category.ONLINE_HARMS, urls=()),
            None,
        ),
        (
            "corrected classification without anything: a person decides",
            classified(category=Category.LURING, verdict=Verdict.CORRECTED, urls=()),
            None,
        ),
    ],
)
def test_preassess_decides_only_clear_cases(case: str, event: object, expected: Determination | None) -> None:
    """Known hashes: potentially illegal; empty unclassifiable reports: informational; the rest: a person."""
    result = logic.preassess(event, KNOWN)  # type: ignore[arg-type]
    assert (result.determination if result else None) is expected, case


def test_preassess_known_hash_flags_child_protection_for_identified_canadian_victim() -> None:
    """A known-hash match naming a child located in a province also flags child protection."""
    event = classified(hashes=((HashType.MD5, KNOWN_MD5),), victim=canadian_victim())
    result = logic.preassess(event, KNOWN)
    assert result is not None
    assert result.child_may_need_protection is True
    assert result.rule == "known_hash"
    assert "1 file hash(es)" in result.note


def test_annotation_alone_counts_as_something_to_act_on() -> None:
    """A sextortion annotation keeps an otherwise empty unclassifiable report with a person."""
    event = classified(category=None, urls=())
    event = dataclasses.replace(
        event, body=dataclasses.replace(event.body, annotations=(Annotation.SEXTORTION,))
    )
    assert logic.preassess(event, KNOWN) is None


@pytest.mark.parametrize(
    ("victim", "expected"),
    [
        (Victim(name="A", location=Location(province="ON")), True),
        (Victim(screen_name="kid1", location=Location(country="CA")), True),
        (Victim(name="A", location=Location(country="US")), False),
        (Victim(age=12, location=Location(province="ON")), False),  # an age alone identifies nobody
        (Victim(name="A"), False),
        (None, False),
    ],
)
def test_child_may_need_protection(victim: Victim | None, expected: bool) -> None:
    """Child protection is flagged when a child is identified and located in Canada."""
    assert logic.child_may_need_protection(classified(victim=victim).body) is expected


def test_parse_known_hashes_reads_the_shipped_example() -> None:
    """The shipped example file (fake hashes) parses into one key per line, normalised."""
    path = Path(logic.__file__).parent / "data" / "known_hashes.example.txt"
    keys = logic.parse_known_hashes(path.read_text().splitlines())
    assert keys[0] == "md5:00000000000000000000000000fa4e01"
    assert len(keys) == 5
    assert "FAKE" in path.read_text()


def test_parse_known_hashes_normalises_and_deduplicates() -> None:
    """Hex digests are lower-cased, comments and blank lines skipped, duplicates kept once."""
    lines = [
        "# list",
        "",
        f"MD5:{KNOWN_MD5.upper()}  # upper",
        f"md5:{KNOWN_MD5}",
        "photodna:QUJDRA==QUJDRA==",
    ]
    assert logic.parse_known_hashes(lines) == [f"md5:{KNOWN_MD5}", "photodna:QUJDRA==QUJDRA=="]


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        ("0123", "bad_hash_line", "line 2: expected 'hash_type:value'"),
        ("crc32:0123", "bad_hash_type", "line 2: unknown hash type 'crc32'"),
        ("md5:0123", "bad_hash_value", "line 2: a md5 hash is 32 hexadecimal digits"),
        ("sha1:" + "g" * 40, "bad_hash_value", "line 2: a sha1 hash is 40 hexadecimal digits"),
        ("photodna:<>", "bad_hash_value", "line 2: a photodna hash"),
    ],
)
def test_parse_known_hashes_refuses_a_bad_line(line: str, reason: str, message: str) -> None:
    """A bad line refuses the whole file with one sentence naming the line."""
    with pytest.raises(DomainError) as err:
        logic.parse_known_hashes([f"md5:{KNOWN_MD5}", line], source="list.txt")
    assert err.value.reason == reason
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("jdoe", True), ("j.doe-2_x", True), ("a", False), ("JDoe", False), ("j doe", False), ("x" * 41, False)],
)
def test_check_identity(raw: str, ok: bool) -> None:
    """Analyst identities are 2-40 lower-case letters, digits, dots, dashes or underscores."""
    if ok:
        assert logic.check_identity(raw, role="analyst") == raw
        assert logic.analyst_actor(raw).id == f"analyst:{raw}"
        assert logic.analyst_actor(raw).kind is ActorKind.ANALYST
    else:
        with pytest.raises(DomainError, match="analyst identity"):
            logic.check_identity(raw, role="analyst")


def test_assessment_ids_are_stable_and_supersession_changes_them() -> None:
    """The same decision gets the same id; a superseding one gets another id pointing at the first."""
    event = classified(with_contact=True)
    actor = logic.analyst_actor("jdoe")
    kwargs = {"actor": actor, "child_may_need_protection": False, "note": None, "occurred_at": NOW}
    first = logic.assessment(event, determination=Determination.NOT_ILLEGAL, supersedes=None, **kwargs)  # type: ignore[arg-type]
    again = logic.assessment(event, determination=Determination.NOT_ILLEGAL, supersedes=None, **kwargs)  # type: ignore[arg-type]
    later = logic.assessment(
        event,
        determination=Determination.POTENTIALLY_ILLEGAL,
        supersedes=first.envelope.event_id,
        **kwargs,  # type: ignore[arg-type]
    )
    assert first.envelope.event_id == again.envelope.event_id
    assert later.envelope.event_id != first.envelope.event_id
    assert later.supersedes == first.envelope.event_id
    assert first.envelope.causation_id == event.envelope.event_id
    assert first.envelope.actor.id == "analyst:jdoe"
    assert first.body.contact == event.body.contact
    assert first.classification == event.incidents


@settings(max_examples=80, deadline=None)
@given(st_event(ReportClassified), st.booleans())
def test_preassess_on_any_classified_report(event: ReportClassified, all_known: bool) -> None:
    """On any valid report the rules either defer to a person or decide a clear case for a stated reason."""
    known = frozenset(logic.report_hash_keys(event.body)) if all_known else frozenset()
    result = logic.preassess(event, known)
    if all_known and logic.report_hashes(event.body):
        assert result is not None
        assert result.determination is Determination.POTENTIALLY_ILLEGAL
    elif result is not None:
        assert result.determination is Determination.INFORMATIONAL
        assert not logic.actionable_leads(event.body)
        assert all(c.verdict is Verdict.UNCLASSIFIABLE for c in event.incidents)
    if result is not None:
        out = logic.assessment(
            event,
            actor=logic.AUTOMATED_ACTOR,
            determination=result.determination,
            child_may_need_protection=result.child_may_need_protection,
            note=result.note,
            supersedes=None,
            occurred_at=NOW,
        )
        assert serde.decode(serde.encode(out)) == out
        assert out.envelope.actor.kind is ActorKind.AUTOMATED
