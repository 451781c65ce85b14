"""The intake and ingest rules: validation, normalisation, incident splitting, determinism."""

from __future__ import annotations

import csv
import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.ingest import logic
from pipeline.settings import project_root

T = ev.Technology
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def submitted(**report: Any) -> ev.ReportSubmitted:
    report.setdefault("description", "I saw something")
    report.setdefault("submission_id", "sub-1")
    parsed = logic.parse_report(report)
    return logic.to_submitted(parsed, channel=ev.Channel.WEB, now=NOW, contact=None)


@pytest.mark.parametrize(
    ("raw", "normalized", "host"),
    [
        ("HTTP://Example.COM/Path?q=1#frag", "http://example.com/Path?q=1", "example.com"),
        ("example.com", "http://example.com/", "example.com"),
        ("  https://example.com:443/a  ", "https://example.com/a", "example.com"),
        ("http://example.com:8080/a", "http://example.com:8080/a", "example.com"),
        ("http://Bücher.de/straße", "http://xn--bcher-kva.de/straße", "xn--bcher-kva.de"),
        ("https://[2001:DB8::0001]:8443/x", "https://[2001:db8::1]:8443/x", "2001:db8::1"),
        ("ftp://10.0.0.1:21/file", "ftp://10.0.0.1/file", "10.0.0.1"),
        ("https://www.example.com.", "https://www.example.com/", "www.example.com"),
        ("http://foo_bar.example.com", "http://foo_bar.example.com/", "foo_bar.example.com"),
        ("http://user:pass@Files.example.com/x", "http://files.example.com/x", "files.example.com"),
        ("https://a@b@example.com:8443/", "https://example.com:8443/", "example.com"),
    ],
)
def test_url_normalisation(raw: str, normalized: str, host: str) -> None:
    """Scheme and host lower-cased, IDN host punycoded, default port, user:pass@ and fragment dropped, original kept."""
    ref = logic.normalize_url(raw, "urls[0]")
    assert (ref.normalized, ref.host, ref.original) == (normalized, host, raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not a url",
        "http://localhost/",
        "https://a..b/",
        "http://example.com:99999/",
        "mailto:someone@example.com",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http://999.1.1.1/",
        "http://[::zz]/",
        "gopher://example.com/",
        "http://exa mple.com/",
        "http://evil.example\\@files.nl-host.example/x",
        "http://files.example.com\\x",
        "http://example.com:0/",
        "http://0x7f.0.0.1/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://host.example.0x10/",
    ],
)
def test_invalid_urls_are_refused_naming_the_field(raw: str) -> None:
    """An invalid URL raises a DomainError naming the field it came from."""
    with pytest.raises(DomainError) as info:
        logic.normalize_url(raw, "urls[3]")
    assert info.value.field == "urls[3]"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(416) 555-0199", "+14165550199"),
        ("613.996.2345", "+16139962345"),
        ("+44 20 7946 0958", "+442079460958"),
        ("1-800-387-7962", "+18003877962"),
    ],
)
def test_phone_to_e164(raw: str, expected: str) -> None:
    """Phone numbers become E.164, read in Canada when they carry no country code."""
    assert logic.normalize_phone(raw, "phones_reported[0]") == expected


@pytest.mark.parametrize("raw", ["12", "call me", "+1 000 000 0000"])
def test_invalid_phone_refused(raw: str) -> None:
    """A string that is not a valid phone number is refused with its field."""
    with pytest.raises(DomainError) as info:
        logic.normalize_phone(raw, "phones_reported[1]")
    assert info.value.field == "phones_reported[1]"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Foo.Bar@EXAMPLE.com", "Foo.Bar@example.com"), (" x@y.ca", "x@y.ca")],
)
def test_email_normalised(raw: str, expected: str) -> None:
    """E-mail addresses keep their local part and get a lower-case domain (no DNS lookup)."""
    assert logic.normalize_email(raw.strip(), "e") == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("192.168.001.1", None), ("2001:DB8:0:0::1", "2001:db8::1"), ("8.8.8.8", "8.8.8.8")]
)
def test_ip_validation(raw: str, expected: str | None) -> None:
    """IP addresses are validated by ipaddress and written compressed; leading zeros are refused."""
    if expected is None:
        with pytest.raises(DomainError):
            logic.normalize_ip(raw, "ip_addresses[0]")
    else:
        assert logic.normalize_ip(raw, "ip_addresses[0]") == expected


@pytest.mark.parametrize(
    ("report", "technologies"),
    [
        ({}, {T.NON_INTERNET}),
        ({"urls": ["example.com/a", "http://example.org/b"]}, {T.WEB_PAGE}),
        ({"urls": ["example.com"], "emails_reported": ["a@b.com"]}, {T.WEB_PAGE, T.EMAIL}),
        ({"urls": ["https://www.instagram.com/someone"]}, {T.SOCIAL_MEDIA}),
        (
            {"urls": ["https://discord.gg/abc", "https://t.me/chan", "https://roblox.com/u/1"]},
            {T.SOCIAL_MEDIA, T.CHAT_IM, T.ONLINE_GAMING},
        ),
        ({"phones_reported": ["416-555-0199"]}, {T.PHONE_SMS}),
        ({"tech": {"chat_client": "Kik"}}, {T.CHAT_IM}),
        ({"tech": {"game": "Fortnite", "console": "PS5"}}, {T.ONLINE_GAMING}),
        ({"tech": {"p2p_client": "eMule"}, "ip_addresses": ["1.2.3.4"]}, {T.PEER_TO_PEER}),
        ({"tech": {"physical_location": "the park on Main St"}}, {T.NON_INTERNET}),
        ({"usernames_reported": ["creep99"]}, {T.SOCIAL_MEDIA}),
        ({"usernames_reported": ["creep99"], "tech": {"chat_client": "Kik"}}, {T.CHAT_IM}),
        ({"ip_addresses": ["1.2.3.4"]}, {T.WEB_PAGE}),
        (
            {"suspect": {"emails": ["s@x.com"], "profile_urls": ["https://tiktok.com/@s"]}},
            {T.EMAIL, T.SOCIAL_MEDIA},
        ),
    ],
)
def test_incident_split_by_technology(report: dict[str, Any], technologies: set[ev.Technology]) -> None:
    """A report becomes one incident per technology it names."""
    content = logic.normalized_content(submitted(**report))
    assert {i.technology for i in content.incidents} == technologies
    assert len(content.incidents) == len(technologies)


def test_incident_contents_are_normalised_and_deduplicated() -> None:
    """Each incident carries the normalised addresses of its technology, once each."""
    content = logic.normalized_content(
        submitted(
            urls=["HTTP://Example.com/a#x", "http://example.com:80/a", "https://instagram.com/p"],
            emails_reported=["A@Example.COM"],
            suspect={"emails": ["A@example.com"], "phones": ["(416) 555-0199"]},
            files=[
                {
                    "file_name": "x.jpg",
                    "hashes": [{"hash_type": "md5", "value": "A" * 32}],
                    "seen_at_url": "example.com/a",
                }
            ],
        )
    )
    by_tech = {i.technology: i for i in content.incidents}
    web = by_tech[T.WEB_PAGE]
    assert [u.normalized for u in web.urls] == ["http://example.com/a"]
    assert web.files[0].hashes[0].value == "a" * 32
    assert web.files[0].seen_at_url == "http://example.com/a"
    assert by_tech[T.EMAIL].emails == ("A@example.com",)
    assert by_tech[T.PHONE_SMS].phones == ("+14165550199",)
    assert [u.normalized for u in by_tech[T.SOCIAL_MEDIA].urls] == ["https://instagram.com/p"]
    assert set(content.link_keys) == {
        "url:http://example.com/a",
        "url:https://instagram.com/p",
        f"hash:md5:{'a' * 32}",
    }


def test_incident_ids_are_deterministic() -> None:
    """The same report always yields the same incident ids (a replay emits identical events)."""
    a = logic.normalized_content(submitted(urls=["example.com"]))
    b = logic.normalized_content(submitted(urls=["example.com"]))
    assert a.incidents[0].incident_id == b.incidents[0].incident_id


def test_report_id_derives_from_submission_id() -> None:
    """A resubmission (same submission id) has the same report id; another submission another id."""
    assert logic.report_id_for("abc") == logic.report_id_for("abc")
    assert logic.report_id_for("abc") != logic.report_id_for("abd")
    assert submitted(submission_id="abc").envelope.report_id == logic.report_id_for("abc")


@pytest.mark.parametrize(
    ("report", "field", "reason"),
    [
        ({"category": "luring"}, "description", "missing_field"),
        ({"description": "   "}, "description", "missing_field"),
        ({"description": "x", "category": "spam"}, "category", "invalid_field"),
        ({"description": "x", "urls": ["not a url"]}, "urls[0]", "invalid_field"),
        ({"description": "x", "urls": "example.com"}, "urls", "invalid_field"),
        ({"description": "x", "ip_addresses": ["1.2.3.4", "300.1.1.1"]}, "ip_addresses[1]", "invalid_field"),
        ({"description": "x", "victim": {"age": "13"}}, "victim.age", "invalid_field"),
        ({"description": "x", "victim": {"age": 200}}, "victim.age", "invalid_field"),
        (
            {"description": "x", "victim": {"location": {"province": "ZZ"}}},
            "victim.location.province",
            "invalid_field",
        ),
        ({"description": "x", "victim": {"shoe": 1}}, "victim.shoe", "invalid_field"),
        ({"description": "x", "colour": "red"}, "colour", "invalid_field"),
        ({"description": "x", "image": "abc"}, "image", "media_not_accepted"),
        (
            {"description": "x", "files": [{"file_name": "a", "attachment": "x"}]},
            "files[0].attachment",
            "media_not_accepted",
        ),
        ({"description": "data:image/png;base64,iVBOR"}, "description", "media_not_accepted"),
        (
            {"description": "x", "files": [{"hashes": [{"hash_type": "md5", "value": "xyz"}]}]},
            "files[0].hashes[0]",
            "invalid_field",
        ),
        ({"description": "x", "incident_time": "2026-01-01T10:00:00"}, "incident_time", "invalid_field"),
        ({"description": "x", "contact": {"email": "nope"}}, "contact.email", "invalid_field"),
        ({"description": "x", "contact": {"name": "Ann"}}, "contact", "invalid_field"),
        (
            {"description": "x", "anonymous": True, "contact": {"email": "a@b.ca"}},
            "anonymous",
            "invalid_field",
        ),
        ({"description": "x", "submission_id": "has spaces in it"}, "submission_id", "invalid_field"),
        ({"description": "x " * (ev.MAX_DESCRIPTION // 2 + 1)}, "description", "too_long"),
        ({"description": "x", "suspect": {"phones": ["12"]}}, "suspect.phones[0]", "invalid_field"),
    ],
)
def test_bad_reports_name_the_field(report: dict[str, Any], field: str, reason: str) -> None:
    """Every invalid report is one DomainError naming the offending field and a reason code."""
    with pytest.raises(DomainError) as info:
        logic.parse_report(report)
    assert (info.value.field, info.value.reason) == (field, reason)


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", True),
        ("DATA:video/mp4,AAAA", True),
        ("data:text/plain;charset=utf-8,hello", True),
        ("Data: he sent me this on Tuesday", False),
        ("data:, nothing", True),
        ("data:;base64,iVBORw0KGgo=", True),
        ("he pasted data:,hello in the chat", True),
        ("see https://x.example/?u=data:image/png;base64,AAAA", True),
        ("the metadata:, was stripped", False),
        ("A" * logic.MIN_BASE64_RUN, True),
        ("name " + "QUJD+/=" * 200 + " end", True),
        ("A" * (logic.MIN_BASE64_RUN - 1), False),
        ("word " * 400, False),
    ],
)
def test_data_uris_are_refused_as_media_but_plain_text_is_not(text: str, refused: bool) -> None:
    """A data: URI anywhere in a string, or a long base64 run, is an upload and refused; prose is not."""
    if refused:
        with pytest.raises(DomainError) as info:
            logic.parse_report({"description": "x", "usernames_reported": [text]})
        assert (info.value.field, info.value.reason) == ("usernames_reported[0]", "media_not_accepted")
    else:
        assert logic.parse_report({"description": text}).fields["description"] == text


def test_deep_nesting_refused() -> None:
    """JSON nested deeper than 20 levels is refused before anything else looks at it."""
    deep: Any = "x"
    for _ in range(25):
        deep = {"a": deep}
    with pytest.raises(DomainError) as info:
        logic.parse_report({"description": "x", "suspect": deep})
    assert info.value.reason == "too_deep"


def test_contact_is_kept_apart_and_anonymity_inferred() -> None:
    """A contact is parsed (normalised) apart from the event fields; a report without one is anonymous."""
    with_contact = logic.parse_report(
        {"description": "x", "contact": {"email": "Me@Home.CA", "phone": "4165550199"}}
    )
    assert with_contact.contact == {"email": "Me@home.ca", "phone": "+14165550199"}
    assert with_contact.anonymous is False
    assert "contact" not in with_contact.fields
    assert logic.parse_report({"description": "x"}).anonymous is True


def test_check_submitted_refuses_a_report_id_not_derived_from_the_submission() -> None:
    """An event whose report id is not derived from its submission id is refused (it would dodge dedup)."""
    event = submitted()
    forged = dataclasses.replace(
        event, envelope=dataclasses.replace(event.envelope, report_id="00000000-0000-0000-0000-000000000000")
    )
    with pytest.raises(DomainError) as info:
        logic.check_submitted(forged)
    assert info.value.reason == "report_id_mismatch"


def test_received_carries_numbering_and_is_deterministic() -> None:
    """ReportReceived takes number, time and link from the numbering; same inputs, same event."""
    event = submitted(urls=["example.com"])
    content = logic.normalized_content(event)
    numbering = logic.Numbering(
        report_number="CT-2026-000007", received_at=NOW, linked_to=None, reporters_count=1
    )
    a = logic.received(event, content, numbering)
    b = logic.received(event, content, numbering)
    assert a == b
    assert a.body.report_number == "CT-2026-000007"
    assert a.envelope.causation_id == event.envelope.event_id
    assert a.envelope.report_id == event.envelope.report_id
    assert logic.report_number(123, NOW) == "CT-2026-000123"


# --- The reporter's own location --------------------------------------------------------------------

L = ev.Location


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"province": "ON"}, L(province="ON")),
        ({"province": " qc ", "city": " Montréal "}, L(province="QC", city="Montréal")),
        ({"province": "nu", "country": "ca"}, L(province="NU", country="CA")),
        ({"country": "fr"}, L(country="FR")),
        ({"country": "US", "city": "Buffalo"}, L(country="US", city="Buffalo")),
        ({"city": "Halifax"}, L(city="Halifax")),
        ({}, None),
        ({"province": None, "country": None, "city": "  "}, None),
        (None, None),
    ],
)
def test_reporter_location_is_normalised(given: dict[str, Any] | None, expected: ev.Location | None) -> None:
    """The reporter's location is upper-cased and trimmed; an empty one is no location at all."""
    event = submitted(reporter_location=given)
    assert event.reporter_location == expected
    assert logic.normalized_content(event).reporter_location == expected


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"province": "ZZ"}, "reporter_location.province"),
        ({"province": "Ontario"}, "reporter_location.province"),
        ({"province": " "}, "reporter_location.province"),
        ({"province": 35}, "reporter_location.province"),
        ({"country": "CAN"}, "reporter_location.country"),
        ({"country": "1A"}, "reporter_location.country"),
        ({"province": "BC", "country": "US"}, "reporter_location.country"),
        ({"country": "ZZ"}, "reporter_location.country"),  # two letters, but no country's code
        ({"city": ["Ottawa"]}, "reporter_location.city"),
        ({"city": "x" * (logic.MAX_TEXT + 1)}, "reporter_location.city"),
        ({"postal_code": "K1A 0B1"}, "reporter_location.postal_code"),
        ("ON", "reporter_location"),
    ],
)
def test_bad_reporter_location_names_the_field(given: Any, field: str) -> None:
    """A bad reporter location is one DomainError naming the offending field (HTTP 422)."""
    with pytest.raises(DomainError) as info:
        logic.parse_report({"description": "x", "reporter_location": given})
    assert info.value.field == field


def test_reporter_location_travels_to_the_report_body() -> None:
    """ReportSubmitted's reporter location reaches ReportReceived's body unchanged."""
    event = submitted(reporter_location={"province": "ab", "city": "Calgary"})
    numbering = logic.Numbering(
        report_number="CT-2026-000008", received_at=NOW, linked_to=None, reporters_count=1
    )
    got = logic.received(event, logic.normalized_content(event), numbering)
    assert got.body.reporter_location == L(province="AB", city="Calgary")
    assert (
        logic.received(submitted(), logic.normalized_content(submitted()), numbering).body.reporter_location
        is None
    )


def test_reporter_location_from_another_producer_is_checked_at_ingest() -> None:
    """A ReportSubmitted built elsewhere with a bad province is refused by ingest, naming the field."""
    forged = dataclasses.replace(submitted(), reporter_location=L(province="XX"))
    with pytest.raises(DomainError) as info:
        logic.normalized_content(forged)
    assert info.value.field == "reporter_location.province"


def test_provinces_are_those_of_the_jurisdiction_table() -> None:
    """The province codes accepted are exactly the provinces of route's jurisdiction table."""
    path = project_root() / "pipeline" / "route" / "data" / "jurisdictions.csv"
    with path.open(newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        codes = {row["code"] for row in rows if row["code"]}  # the blank code is the national default
    assert codes == logic.PROVINCES


@pytest.mark.parametrize(("allowed", "refused"), [(True, False), (False, True)])
def test_only_an_intake_client_may_name_its_intake_system(allowed: bool, refused: bool) -> None:
    """The public web form (allow_intake_system=False) may not claim to be a partner system."""
    report = {"description": "x", "intake_system": "partner-a"}
    if refused:
        with pytest.raises(DomainError) as info:
            logic.parse_report(report, allow_intake_system=allowed)
        assert (info.value.field, info.value.reason) == ("intake_system", "invalid_field")
    else:
        assert logic.parse_report(report, allow_intake_system=allowed).intake_system == "partner-a"


@pytest.mark.parametrize(
    ("report", "field", "reason"),
    [
        ({"description": "x\ud800y"}, "description", "invalid_field"),
        (
            {"description": "x", "urls": ["http://a.example/", "http://b.example/\udc00"]},
            "urls[1]",
            "invalid_field",
        ),
        ({"description": "x", "usernames_reported": ["\ud800"]}, "usernames_reported[0]", "invalid_field"),
        (
            {"description": "x", "contact": {"name": "\udc00", "email": "a@b.ca"}},
            "contact.name",
            "invalid_field",
        ),
        ({"description": "x", "victim": {"\ud800": 1}}, "victim", "invalid_field"),
        ({"\ud800": 1, "description": "x"}, "(body)", "invalid_field"),
        ({"description": "x", "files": [{"file_name": "a\ud800"}]}, "files[0].file_name", "invalid_field"),
        ({"description": "x", "category": "\ud800"}, "category", "invalid_field"),
        ({"description": "x " + "QUJD" * 300}, "description", "media_not_accepted"),
        (
            {"description": "x", "files": [{"file_name": "A" * 1000}]},
            "files[0].file_name",
            "media_not_accepted",
        ),
        (
            {"description": "x", "usernames_reported": ["B" * 1000]},
            "usernames_reported[0]",
            "media_not_accepted",
        ),
        (
            {"description": "x", "suspect": {"names": ["data:,hello"]}},
            "suspect.names[0]",
            "media_not_accepted",
        ),
    ],
)
def test_surrogates_and_smuggled_media_are_refused_naming_the_field(
    report: dict[str, Any], field: str, reason: str
) -> None:
    """A lone surrogate (in a value, or in a key: its parent is named) or media inside text is a 422."""
    with pytest.raises(DomainError) as info:
        logic.parse_report(report)
    assert (info.value.field, info.value.reason) == (field, reason)
    str(info.value).encode("utf-8")  # the message itself can be sent back


def test_long_urls_and_hash_values_are_not_mistaken_for_base64() -> None:
    """The base64 rule is for text: a long URL path is still a URL."""
    url = "https://files.example.com/" + "a" * 1_200
    parsed = logic.parse_report({"description": "x", "urls": [url]})
    assert parsed.fields["urls"] == (url,)


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"incident_time": "9999-12-31T23:00:00-05:00"}, "incident_time"),
        ({"incident_time": "0001-01-01T00:00:00+05:00"}, "incident_time"),
        # In year 1 in UTC, but a day no event may carry (a reader's timezone could take it out of range).
        ({"incident_time": "0001-01-01T23:59:59Z"}, "incident_time"),
        (
            {"suspect": {"ip_events": [{"ip": "1.2.3.4", "at": "0001-01-01T00:00:00-01:00"}]}},
            "suspect.ip_events[0].at",
        ),
        ({"incident_time": "2026-03-03T12:00:01Z"}, "incident_time"),
        (
            {"suspect": {"ip_events": [{"ip": "1.2.3.4", "at": "9999-12-31T23:00:00-05:00"}]}},
            "suspect.ip_events[0].at",
        ),
        (
            {"suspect": {"ip_events": [{"ip": "1.2.3.4", "at": "0001-01-01T00:00:00+05:00"}]}},
            "suspect.ip_events[0].at",
        ),
        (
            {"suspect": {"ip_events": [{"ip": "1.2.3.4", "at": "3000-01-01T00:00:00Z"}]}},
            "suspect.ip_events[0].at",
        ),
        ({"victim": {"date_of_birth": "2099-01-01"}}, "victim.date_of_birth"),
        ({"victim": {"date_of_birth": "2026-03-02"}}, "victim.date_of_birth"),
        ({"victim": {"date_of_birth": "0001-01-01"}}, "victim.date_of_birth"),
        ({"victim": {"age": -5}}, "victim.age"),
        ({"victim": {"age": 2147483647}}, "victim.age"),
        ({"victim": {"age": 13, "date_of_birth": "2000-01-01"}}, "victim.age"),
    ],
)
def test_impossible_times_ages_and_births_are_refused(report: dict[str, Any], field: str) -> None:
    """A time outside years 1-9999 UTC or over a day ahead, a future or impossible birth, a bad age: 422."""
    with pytest.raises(DomainError) as info:
        logic.parse_report({"description": "x", **report}, now=NOW)
    assert (info.value.field, info.value.reason) == (field, "invalid_field")


@pytest.mark.parametrize(
    "report",
    [
        {"incident_time": "0001-01-02T00:00:00-05:00"},
        {"incident_time": "2026-03-02T11:59:59Z"},
        {"suspect": {"ip_events": [{"ip": "1.2.3.4", "at": "2026-02-28T08:00:00-05:00"}]}},
        {"victim": {"date_of_birth": "2026-03-01"}},
        {"victim": {"age": 13, "date_of_birth": "2012-06-01"}},
        {"victim": {"age": 14, "date_of_birth": "2012-06-01"}},
        {"victim": {"age": 0}},
        {"victim": {"age": 120}},
    ],
)
def test_possible_times_and_births_are_accepted(report: dict[str, Any]) -> None:
    """Times within a day of arrival, a birth today or earlier, an age agreeing within a year: accepted."""
    assert logic.parse_report({"description": "x", **report}, now=NOW).fields


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"victim": ev.Victim(age=-5)}, "victim.age"),
        ({"victim": ev.Victim(age=2147483647)}, "victim.age"),
        ({"victim": ev.Victim(date_of_birth=date(2099, 1, 1))}, "victim.date_of_birth"),
        ({"victim": ev.Victim(date_of_birth=date(2026, 3, 2))}, "victim.date_of_birth"),
        ({"victim": ev.Victim(age=5, date_of_birth=date(2001, 1, 1))}, "victim.age"),
        ({"incident_time": NOW + timedelta(days=2)}, "incident_time"),
        (
            {"suspect": ev.Suspect(ip_events=(ev.IpEvent(ip="1.2.3.4", at=NOW + timedelta(days=400)),))},
            "suspect.ip_events[0].at",
        ),
    ],
)
def test_events_from_other_producers_get_the_same_limits(change: dict[str, Any], field: str) -> None:
    """On the topic path ingest refuses what prioritize would dead-letter (it becomes ReportRejected)."""
    event = dataclasses.replace(submitted(), **change)
    with pytest.raises(DomainError) as info:
        logic.normalized_content(event, now=NOW + timedelta(hours=1))
    assert (info.value.field, info.value.reason) == (field, "invalid_field")


def test_a_birth_after_the_receipt_is_refused_even_when_the_submission_claims_later() -> None:
    """The earlier of submission time and receipt bounds the date of birth."""
    event = dataclasses.replace(
        submitted(), submitted_at=NOW + timedelta(days=30), victim=ev.Victim(date_of_birth=date(2026, 3, 10))
    )
    with pytest.raises(DomainError) as info:
        logic.normalized_content(event, now=NOW)
    assert info.value.field == "victim.date_of_birth"


def test_a_link_key_too_long_for_an_index_row_is_its_digest() -> None:
    short = logic.link_key("url", "https://a.example/x")
    assert short == "url:https://a.example/x"
    long_url = "https://a.example/" + "x" * 3000
    key = logic.link_key("url", long_url)
    assert key == logic.link_key("url", long_url)  # the same URL, the same key: reports still link
    assert key.startswith("url~sha256:")
    assert len(key) == len("url~sha256:") + 64
    assert logic.link_key("url", long_url + "y") != key
    # Multi-byte characters count in bytes, as the index does.
    assert logic.link_key("hash:photodna", "é" * 600).startswith("hash:photodna~sha256:")


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"victim": {"age": 9, "location": {"province": "QC", "country": "ZZ"}}}, "victim.location.country"),
        ({"victim": {"age": 9, "location": {"province": "QC", "country": "US"}}}, "victim.location.country"),
        ({"suspect": {"location": {"country": "EU"}}}, "suspect.location.country"),
        (
            {"suspect": {"location": {"province": "ON", "country": "GB"}}},
            "suspect.location.country",
        ),
    ],
)
def test_a_person_in_no_country_or_in_two_places_is_refused(report: dict[str, Any], field: str) -> None:
    """Found by an attack: a victim in "QC, ZZ" was taken and routed to INTERPOL, without the Quebec
    police and child protection the province alone gets (the route step follows the country)."""
    with pytest.raises(DomainError) as info:
        logic.parse_report({"description": "x", **report})
    assert info.value.field == field


@pytest.mark.parametrize("country", ["CA", "gb", "AQ", "XK", "UM"])
def test_every_country_code_in_use_is_taken(country: str) -> None:
    parsed = logic.parse_report({"description": "x", "victim": {"location": {"country": country}}})
    assert parsed.fields["victim"].location.country == country.upper()


def test_more_urls_of_one_technology_than_an_incident_holds_are_refused_naming_urls() -> None:
    """500 URLs and 500 profile URLs passed each list's limit, then failed to encode in ingest (a 202,
    then a dead letter naming body.incidents[0].urls)."""
    many = [f"https://a.example/{i}" for i in range(500)]
    more = [f"https://b.example/{i}" for i in range(500)]
    with pytest.raises(DomainError) as info:
        logic.parse_report({"description": "x", "urls": many, "suspect": {"profile_urls": more}})
    assert info.value.field == "urls"
    assert "1,000 different web_page URLs" in str(info.value)
    ok = logic.parse_report({"description": "x", "urls": many[:250], "suspect": {"profile_urls": more[:250]}})
    assert len(ok.fields["urls"]) == 250


def test_an_accepted_scheme_without_its_slashes_is_told_so() -> None:
    """ "http:example.com" was refused as "the URL scheme 'http' is not accepted; use http, ..."."""
    with pytest.raises(DomainError) as info:
        logic.normalize_url("http:example.com", "urls[0]")
    assert info.value.field == "urls[0]"
    assert "write http:// with two slashes" in str(info.value)


@pytest.mark.parametrize(
    ("victim", "field"),
    [
        (ev.Victim(age=9, location=ev.Location(province="QC", country="ZZ")), "victim.location.country"),
        (ev.Victim(age=9, location=ev.Location(province="QC", country="US")), "victim.location.country"),
        (ev.Victim(age=9, location=ev.Location(province="XX")), "victim.location.province"),
    ],
)
def test_ingest_checks_a_persons_location_an_intake_system_sent(victim: ev.Victim, field: str) -> None:
    """On the topic path (an intake system's own ReportSubmitted) the checks intake makes still hold:
    ingest rejects the report naming the field, as it does an invalid URL."""
    event = dataclasses.replace(submitted(), victim=victim)
    with pytest.raises(DomainError) as info:
        logic.normalized_content(event)
    assert info.value.field == field
