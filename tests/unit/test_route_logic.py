"""The route step's rules: who receives a report, and how every report ends (pure, no servers)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.route import logic
from pipeline.route.resolve import demo_resolver, locate_all
from pipeline.route.tables import Tables, load_tables
from tests.unit.route_builders import CONTACT, NOW, assessed

TABLES = load_tables()
RESOLVER = demo_resolver()

CA = "https://cdn1.ca-host.example/p/1"
CA2 = "https://files.ca-host.example/p/2"
NL = "https://cdn1.nl-host.example/a"
NL2 = "https://files.nl-host.example/b"
GB = "https://cdn1.gb-host.example/c"
RU = "http://cdn1.ru-host.example/d"
IN = "http://cdn1.in-host.example/e"


def route(event: ev.ReportAssessed, tables: Tables = TABLES) -> list[logic.RouteEvent]:
    return logic.decide(event, tables, locate_all(logic.targets(event), RESOLVER), NOW)


def referrals(events: list[logic.RouteEvent]) -> dict[str, ev.ReportReferred]:
    found = {logic.emit_key(e): e for e in events if isinstance(e, ev.ReportReferred)}
    assert len(found) == sum(isinstance(e, ev.ReportReferred) for e in events), "a recipient appeared twice"
    return found


def closed(events: list[logic.RouteEvent]) -> ev.ReportClosed:
    (close,) = [e for e in events if isinstance(e, ev.ReportClosed)]
    assert events[-1] is close, "the close comes last"
    return close


@pytest.mark.parametrize(
    ("case", "event", "expected"),
    [
        (
            "hosted in Canada, suspect in Ontario",
            assessed(urls=(CA,), suspect=ev.Location(province="ON", country="CA")),
            {"police:ON"},
        ),
        ("hosted in Canada, nobody placed", assessed(urls=(CA, CA2)), {"police:CA"}),
        ("hosted in the Netherlands", assessed(urls=(NL,)), {"inhope_hotline:NL"}),
        ("hosted in a country without a hotline", assessed(urls=(RU,)), {"interpol:RU"}),
        (
            "an IPv6 literal host in Germany",
            assessed(urls=("http://[2001:638::1]/x",)),
            {"inhope_hotline:DE"},
        ),
        (
            "an IPv6 host name in France",
            assessed(urls=("https://v6.fr-host.example/x",)),
            {"inhope_hotline:FR"},
        ),
        ("an IPv6 address given in the report", assessed(ips=("2001:67c:2e8::2",)), {"inhope_hotline:NL"}),
        ("an IPv4 address given in the report", assessed(ips=("8.8.8.8",)), {"inhope_hotline:US"}),
        ("unknown location and no content", assessed(), {"police:CA"}),
        (
            "three countries",
            assessed(urls=(CA, NL, NL2, GB, IN)),
            {"police:CA", "inhope_hotline:NL", "inhope_hotline:GB", "interpol:IN"},
        ),
        ("suspect abroad, no content", assessed(suspect=ev.Location(country="US")), {"inhope_hotline:US"}),
        ("suspect IP in Russia", assessed(suspect_ips=("77.88.55.88",)), {"interpol:RU"}),
        (
            "victim in Quebec, content in the Netherlands",
            assessed(urls=(NL,), victim=ev.Location(province="QC")),
            {"police:QC", "inhope_hotline:NL"},
        ),
        ("province code that does not exist", assessed(suspect=ev.Location(province="ZZ")), {"police:CA"}),
        ("a host that does not resolve", assessed(urls=("https://nowhere.example/x",)), {"police:CA"}),
        ("an address in no country", assessed(urls=("http://10.1.2.3/x",)), {"police:CA"}),
        ("an unparseable URL", assessed(urls=("http://[::1/x",)), {"police:CA"}),
    ],
)
def test_recipients(case: str, event: ev.ReportAssessed, expected: set[str]) -> None:
    """Each potentially illegal report reaches exactly the recipients its jurisdiction calls for."""
    assert set(referrals(route(event))) == expected, case


def test_canada_with_suspect_in_ontario_is_one_domestic_police_referral() -> None:
    """Content hosted in Canada with a suspect in Ontario goes to Ontario's police, once, with the URL."""
    events = route(assessed(urls=(CA, CA2), suspect=ev.Location(province="ON")))
    (referral,) = referrals(events).values()
    assert referral.recipient == ev.Recipient(
        kind=ev.RecipientKind.POLICE,
        name="Ontario Provincial Strategy (OPP-led) and municipal child exploitation units",
        jurisdiction="ON",
        domestic=True,
        verified=False,
        source="shared/domain/jurisdictions.csv",
    )
    assert referral.urls == (CA, CA2)
    assert referral.category is ev.Category.CSAM
    assert referral.sections == ("163.1(2)", "163.1(4)")
    close = closed(events)
    assert (close.outcome, close.referrals, close.domestic_police, close.foreign_police) == (
        ev.Outcome.REFERRED,
        1,
        1,
        0,
    )
    assert (close.province, close.hosting_countries) == ("ON", ("CA",))


def test_netherlands_goes_to_offlimits_as_foreign_unverified() -> None:
    """Content hosted in the Netherlands goes to its INHOPE hotline, foreign, keeping the unverified flag."""
    events = route(assessed(urls=(NL, NL2)))
    referral = referrals(events)["inhope_hotline:NL"]
    assert (referral.recipient.name, referral.recipient.domestic, referral.recipient.verified) == (
        "Offlimits",
        False,
        False,
    )
    assert referral.urls == (NL, NL2)
    close = closed(events)
    assert (close.domestic_police, close.foreign_police, close.hosting_countries) == (0, 1, ("NL",))


def test_country_without_hotline_goes_to_interpol_through_rcmp() -> None:
    """Content hosted where INHOPE has no hotline goes to INTERPOL through the RCMP, as a foreign referral."""
    referral = referrals(route(assessed(urls=(IN,))))["interpol:IN"]
    assert referral.recipient.kind is ev.RecipientKind.INTERPOL
    assert "RCMP" in referral.recipient.name
    assert referral.recipient.domestic is False
    assert referral.reasons == ("content hosted in IN; no INHOPE hotline there",)


def test_three_countries_one_referral_each_with_their_own_urls() -> None:
    """URLs in three countries give one referral per country, each with its own URLs; the close counts."""
    events = route(assessed(urls=(NL, CA, GB, NL2)))
    found = referrals(events)
    assert {k: v.urls for k, v in found.items()} == {
        "inhope_hotline:NL": (NL, NL2),
        "police:CA": (CA,),
        "inhope_hotline:GB": (GB,),
    }
    close = closed(events)
    assert (close.referrals, close.domestic_police, close.foreign_police) == (3, 1, 2)
    assert close.hosting_countries == ("CA", "GB", "NL")


def test_child_in_quebec_reaches_child_protection() -> None:
    """A child in Quebec who may need protection also goes to Quebec's youth protection (DPJ), domestic."""
    events = route(assessed(urls=(NL,), victim=ev.Location(province="QC", country="CA"), child=True))
    found = referrals(events)
    assert set(found) == {"police:QC", "inhope_hotline:NL", "child_protection:QC"}
    cp = found["child_protection:QC"]
    assert (cp.recipient.name, cp.recipient.domestic, cp.recipient.verified) == (
        "Director of Youth Protection (DPJ) of the region",
        True,
        True,
    )
    assert cp.urls == ()
    close = closed(events)
    assert (close.child_protection, close.province, close.domestic_police, close.foreign_police) == (
        True,
        "QC",
        1,
        1,
    )


@pytest.mark.parametrize(
    ("victim", "why"),
    [
        (None, "the child's province or territory is unknown"),
        (ev.Location(country="CA"), "the child's province or territory is unknown"),
        (ev.Location(country="FR"), "the child is located abroad (FR)"),
        (ev.Location(province="XQ"), "the child's province code 'XQ' does not exist"),
    ],
)
def test_child_without_known_province_goes_to_ncecc_with_reason(victim: ev.Location | None, why: str) -> None:
    """A child who may need protection, abroad or of unknown province, is sent to the NCECC, saying why."""
    events = route(assessed(urls=(NL,), victim=victim, child=True))
    ncecc = referrals(events)["police:CA"]
    assert ncecc.recipient.name == "RCMP National Child Exploitation Crime Centre (NCECC)"
    assert any(why in r and "child protection" in r for r in ncecc.reasons), ncecc.reasons
    assert closed(events).child_protection is False


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://nowhere.example/x", "host 'nowhere.example' does not resolve"),
        ("http://10.1.2.3/x", "host '10.1.2.3' is an address that maps to no country"),
        ("http://[::1/x", "a URL could not be parsed"),
    ],
)
def test_unplaceable_content_goes_to_ncecc_with_reason(url: str, reason: str) -> None:
    """Content that cannot be placed is referred to the NCECC with the reason recorded, URL included."""
    ncecc = referrals(route(assessed(urls=(url, NL))))["police:CA"]
    assert any(r.startswith(reason) for r in ncecc.reasons), ncecc.reasons
    assert ncecc.urls == (url,)


def test_same_assessment_same_ids_and_different_assessment_different_ids() -> None:
    """The same assessment always yields the same event ids; ids are unique within one report's events."""
    event = assessed(urls=(CA, NL, RU), child=True, victim=ev.Location(province="AB"))
    first, again = route(event), route(event)
    assert first == again
    ids = [e.envelope.event_id for e in first]
    assert len(set(ids)) == len(ids)
    other = route(dataclasses.replace(event, envelope=dataclasses.replace(event.envelope, event_id="other")))
    assert not {e.envelope.event_id for e in other} & set(ids)
    assert all(e.envelope.causation_id == event.envelope.event_id for e in first)
    assert all(e.envelope.report_id == event.envelope.report_id for e in first)


@pytest.mark.parametrize(
    ("determination", "outcome", "kind", "language", "template"),
    [
        (
            ev.Determination.NOT_ILLEGAL,
            ev.Outcome.NOT_ILLEGAL,
            ev.FollowUpKind.EDUCATIONAL,
            "en",
            "not_illegal.en",
        ),
        (
            ev.Determination.NOT_ILLEGAL,
            ev.Outcome.NOT_ILLEGAL,
            ev.FollowUpKind.EDUCATIONAL,
            "fr",
            "not_illegal.fr",
        ),
        (
            ev.Determination.INFORMATIONAL,
            ev.Outcome.INFORMATIONAL,
            ev.FollowUpKind.INFORMATIONAL,
            "fr",
            "informational.fr",
        ),
        (
            ev.Determination.OUTSIDE_MANDATE,
            ev.Outcome.OUTSIDE_MANDATE,
            ev.FollowUpKind.INFORMATIONAL,
            "en",
            "outside_mandate.en",
        ),
    ],
)
def test_unreferred_report_with_contact_gets_follow_up_and_close(
    determination: ev.Determination, outcome: ev.Outcome, kind: ev.FollowUpKind, language: str, template: str
) -> None:
    """An unreferred report with contact details closes and is owed a follow-up in the reporter's language."""
    events = route(
        assessed(
            urls=(NL,),
            determination=determination,
            contact=CONTACT,
            anonymous=False,
            language=ev.Language(language),
        )
    )
    follow_up, close = events
    assert isinstance(follow_up, ev.FollowUpRequested)
    assert (follow_up.kind, follow_up.language, follow_up.message_template) == (
        kind,
        ev.Language(language),
        template,
    )
    assert follow_up.contact == CONTACT
    assert isinstance(close, ev.ReportClosed)
    assert (close.outcome, close.referrals, close.domestic_police, close.foreign_police) == (outcome, 0, 0, 0)


@pytest.mark.parametrize(("contact", "anonymous"), [(None, True), (None, False), (CONTACT, True)])
def test_unreferred_report_without_usable_contact_only_closes(
    contact: ev.EncryptedContact | None, anonymous: bool
) -> None:
    """An unreferred report whose reporter left no contact (or stays anonymous) closes without a follow-up."""
    events = route(assessed(determination=ev.Determination.NOT_ILLEGAL, contact=contact, anonymous=anonymous))
    assert [type(e) for e in events] == [ev.ReportClosed]
    assert closed(events).outcome is ev.Outcome.NOT_ILLEGAL


def test_potentially_illegal_report_gets_no_follow_up() -> None:
    """A referred report emits referrals and a close but no follow-up, even with contact details."""
    events = route(assessed(urls=(NL,), contact=CONTACT, anonymous=False))
    assert not any(isinstance(e, ev.FollowUpRequested) for e in events)


def test_not_an_assessment_is_refused() -> None:
    """A record that is not an assessment is refused with a DomainError naming the event type."""
    event = assessed()
    received = ev.ReportReceived(
        envelope=dataclasses.replace(event.envelope, event_type="ReportReceived"),
        body=event.body,
        submission_id="s",
    )
    with pytest.raises(DomainError, match="ReportReceived") as err:
        logic.decide(received, TABLES, {}, NOW)
    assert err.value.reason == "unexpected_event_type"


def test_many_urls_in_one_country_are_one_referral() -> None:
    """Forty URLs on the same Dutch hosts make one referral carrying all forty."""
    urls = tuple(f"https://cdn1.nl-host.example/item/{i}" for i in range(40))
    found = referrals(route(assessed(urls=urls)))
    assert list(found) == ["inhope_hotline:NL"]
    assert found["inhope_hotline:NL"].urls == urls


@pytest.mark.parametrize(
    "determination", [ev.Determination.POTENTIALLY_ILLEGAL, ev.Determination.NOT_ILLEGAL]
)
def test_close_carries_the_classification_tags(determination: ev.Determination) -> None:
    """The close carries the classification's tags (sextortion is a trend, not a category), each once."""
    close = closed(
        route(assessed(urls=(NL,), determination=determination, tags=("sextortion", "sextortion")))
    )
    assert close.tags == ("sextortion",)
