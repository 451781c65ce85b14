"""The priority rules, as a table an analyst lead can review: rule name, condition, level.

A report gets the most urgent (lowest) level of every rule it matches; the rules that set that level
are its reasons. Within a level, reports go in order of arrival. Level 4 has a catch-all rule, so
every well-formed report gets a level.

Level 1 - information about a child victim or a suspect (the tipline analyses these first):

==========================  ==================================================================
victim_name                 the report names the child victim
victim_age                  it gives the victim's age or date of birth (a child: under 18)
victim_school               it names the victim's school
victim_location             it gives the victim's city, province or country
victim_screen_name          it gives the victim's screen name
suspect_name                it names the suspect (the person or user reported)
suspect_username            it gives a suspect's username or screen name
suspect_email               it gives a suspect's e-mail address
suspect_phone               it gives a suspect's phone number
suspect_profile             it gives a suspect's profile URL
suspect_ip                  it gives a suspect's IP capture event
==========================  ==================================================================

Level 2 - a child at risk now (above the distribution of material):

==========================  ==================================================================
sextortion                  annotated sextortion, or threats over intimate or sexual images
ongoing_luring              luring that is still going on: the luring category, a solicitation
                            annotation, or a sexual conversation / explicit material sent to a
                            minor, with ``facts.ongoing``
live_streamed_abuse         live streaming (``facts.live_stream`` or the live_streaming annotation)
in_person_contact_risk      a planned meeting or travel, a travel plan, an arrangement with another
                            adult, or the travelling / trafficking / agreement_arrangement category
==========================  ==================================================================

Level 3 - the making or distribution of material, or exploitation already over (above informational
concerns):

==========================  ==================================================================
material_made_or_shared     the reporter saw material made or shared (``facts.actions``)
sexual_material_reported    sexual images, video or text, intimate images, or described files
exploitation_category       the reporter chose an exploitation category (any but online_harms)
solicitation_or_grooming    a solicitation annotation, a sexual conversation, explicit material
                            sent to a child, or an offer of sexual services (not ongoing)
==========================  ==================================================================

Level 4 - informational concerns:

==========================  ==================================================================
informational_concern       none of the rules above: online harms, a question, or a description
                            the reporter could not put in a category
==========================  ==================================================================

Only the structured fields count (``ReportBody.victim``, ``.suspect``, ``.facts``, ``.annotations``,
``.reporter_category``, files described in incidents): free text is never read, so a report is never
ranked on a guess. Blank strings count as absent. The identifiers of an incident (a web page's URLs,
an e-mail incident's address) say where something was seen, not who a suspect is; they do not count
as suspect information unless the reporter put them in the suspect record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.events import Annotation, Category, ContentKind, MaterialAction, ReportBody, Role

ADULT_AGE = 18


@dataclass(frozen=True)
class Rule:
    """One row of the table: a name (the reason on the event), its level, and its condition."""

    name: str
    level: int
    condition: str
    test: Callable[[ReportBody], bool]


def _filled(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def _any_filled(values: tuple[str, ...]) -> bool:
    return any(_filled(v) for v in values)


# --- level 1: victim or suspect information -------------------------------------------------------


def _victim_name(b: ReportBody) -> bool:
    return b.victim is not None and _filled(b.victim.name)


def _victim_age(b: ReportBody) -> bool:
    v = b.victim
    if v is None:
        return False
    if v.age is not None and v.age < ADULT_AGE:
        return True
    if v.date_of_birth is not None:
        dob = v.date_of_birth
        received = b.received_at.date()
        years = received.year - dob.year - ((received.month, received.day) < (dob.month, dob.day))
        return years < ADULT_AGE
    return False


def _victim_school(b: ReportBody) -> bool:
    return b.victim is not None and _filled(b.victim.school)


def _victim_location(b: ReportBody) -> bool:
    loc = b.victim.location if b.victim is not None else None
    return loc is not None and (_filled(loc.city) or _filled(loc.province) or _filled(loc.country))


def _victim_screen_name(b: ReportBody) -> bool:
    return b.victim is not None and _filled(b.victim.screen_name)


def _suspect_name(b: ReportBody) -> bool:
    return b.suspect is not None and _any_filled(b.suspect.names)


def _suspect_username(b: ReportBody) -> bool:
    return b.suspect is not None and _any_filled(b.suspect.usernames)


def _suspect_email(b: ReportBody) -> bool:
    return b.suspect is not None and _any_filled(b.suspect.emails)


def _suspect_phone(b: ReportBody) -> bool:
    return b.suspect is not None and _any_filled(b.suspect.phones)


def _suspect_profile(b: ReportBody) -> bool:
    return b.suspect is not None and _any_filled(b.suspect.profile_urls)


def _suspect_ip(b: ReportBody) -> bool:
    return b.suspect is not None and any(_filled(e.ip) for e in b.suspect.ip_events)


# --- level 2: a child at risk now -----------------------------------------------------------------

_IMAGE_CONTENT = frozenset({ContentKind.INTIMATE_IMAGE, ContentKind.SEXUAL_IMAGE_OR_VIDEO})
_GROOMING_CONTENT = frozenset({ContentKind.SEXUAL_CONVERSATION, ContentKind.EXPLICIT_MATERIAL_SENT_TO_CHILD})
_CONTACT_CONTENT = frozenset({ContentKind.TRAVEL_PLAN, ContentKind.ARRANGEMENT_WITH_OTHER_ADULT})
_CONTACT_CATEGORIES = frozenset({Category.TRAVELLING, Category.TRAFFICKING, Category.AGREEMENT_ARRANGEMENT})
_SEXUAL_CONTENT = frozenset(
    {ContentKind.SEXUAL_IMAGE_OR_VIDEO, ContentKind.SEXUAL_TEXT, ContentKind.INTIMATE_IMAGE}
)


def _sextortion(b: ReportBody) -> bool:
    if Annotation.SEXTORTION in b.annotations:
        return True
    return b.facts.threats and bool(_IMAGE_CONTENT.intersection(b.facts.content))


def _luring(b: ReportBody) -> bool:
    if b.reporter_category is Category.LURING or Annotation.SOLICITATION in b.annotations:
        return True
    return b.facts.recipient_role is Role.MINOR and bool(_GROOMING_CONTENT.intersection(b.facts.content))


def _ongoing_luring(b: ReportBody) -> bool:
    return b.facts.ongoing and _luring(b)


def _live_streamed_abuse(b: ReportBody) -> bool:
    return b.facts.live_stream or Annotation.LIVE_STREAMING in b.annotations


def _in_person_contact_risk(b: ReportBody) -> bool:
    f = b.facts
    return (
        f.in_person_meeting
        or f.travel
        or bool(_CONTACT_CONTENT.intersection(f.content))
        or b.reporter_category in _CONTACT_CATEGORIES
    )


# --- level 3: material, or exploitation already over ----------------------------------------------


def _material_made_or_shared(b: ReportBody) -> bool:
    return MaterialAction.MADE in b.facts.actions or MaterialAction.SHARED in b.facts.actions


def _sexual_material_reported(b: ReportBody) -> bool:
    if _SEXUAL_CONTENT.intersection(b.facts.content) or b.facts.actions:
        return True
    return any(f.hashes or _filled(f.file_name) for i in b.incidents for f in i.files)


def _exploitation_category(b: ReportBody) -> bool:
    return b.reporter_category is not None and b.reporter_category is not Category.ONLINE_HARMS


def _solicitation_or_grooming(b: ReportBody) -> bool:
    content = b.facts.content
    return (
        Annotation.SOLICITATION in b.annotations
        or bool(_GROOMING_CONTENT.intersection(content))
        or ContentKind.OFFER_OF_SEXUAL_SERVICES in content
    )


RULES: tuple[Rule, ...] = (
    Rule("victim_name", 1, "the report names the child victim", _victim_name),
    Rule("victim_age", 1, "it gives the victim's age or date of birth (under 18)", _victim_age),
    Rule("victim_school", 1, "it names the victim's school", _victim_school),
    Rule("victim_location", 1, "it gives the victim's city, province or country", _victim_location),
    Rule("victim_screen_name", 1, "it gives the victim's screen name", _victim_screen_name),
    Rule("suspect_name", 1, "it names the suspect", _suspect_name),
    Rule("suspect_username", 1, "it gives a suspect's username", _suspect_username),
    Rule("suspect_email", 1, "it gives a suspect's e-mail address", _suspect_email),
    Rule("suspect_phone", 1, "it gives a suspect's phone number", _suspect_phone),
    Rule("suspect_profile", 1, "it gives a suspect's profile URL", _suspect_profile),
    Rule("suspect_ip", 1, "it gives a suspect's IP capture event", _suspect_ip),
    Rule("sextortion", 2, "sextortion annotation, or threats over intimate or sexual images", _sextortion),
    Rule(
        "ongoing_luring",
        2,
        "luring (category, solicitation annotation, or sexual conversation / explicit material sent to a "
        "minor) that is still going on",
        _ongoing_luring,
    ),
    Rule("live_streamed_abuse", 2, "live streaming (facts or annotation)", _live_streamed_abuse),
    Rule(
        "in_person_contact_risk",
        2,
        "a planned meeting or travel, a travel plan, an arrangement with another adult, or the travelling, "
        "trafficking or agreement_arrangement category",
        _in_person_contact_risk,
    ),
    Rule("material_made_or_shared", 3, "material made or shared", _material_made_or_shared),
    Rule(
        "sexual_material_reported",
        3,
        "sexual images, video or text, intimate images, material seen, or described files",
        _sexual_material_reported,
    ),
    Rule(
        "exploitation_category", 3, "an exploitation category (any but online_harms)", _exploitation_category
    ),
    Rule(
        "solicitation_or_grooming",
        3,
        "solicitation annotation, sexual conversation, explicit material sent to a child, or an offer of "
        "sexual services",
        _solicitation_or_grooming,
    ),
    Rule("informational_concern", 4, "none of the rules above", lambda _b: True),
)
"""The rule table, most urgent first. Names are stable: projections and analysts read them as reasons."""

LEVELS: dict[int, str] = {
    1: "information about a child victim or a suspect",
    2: "a child at risk now: ongoing luring or sextortion, live-streamed abuse, risk of in-person contact",
    3: "the making or distribution of material, or exploitation already over",
    4: "informational concerns",
}
