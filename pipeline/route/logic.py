"""Step 7's rules: who receives a potentially illegal report, and how every report ends.

Pure: no Kafka, database, network or logging. Where each host or IP address is located is worked out
before (``pipeline.route.resolve``) and handed in as ``located``; ``targets(event)`` says which hosts and
addresses that is. ``decide`` then returns the events to emit, in order: one ``ReportReferred`` per
recipient, a ``FollowUpRequested`` when one is owed, and one ``ReportClosed``.

Jurisdiction, in the tipline's words (``shared/domain/WORKFLOW.md``):

- Content hosted in Canada goes to the police of the province or territory where the suspect (else the
  victim) is; with no province known, to the RCMP's National Child Exploitation Crime Centre (NCECC).
- Content hosted in another country with an INHOPE member hotline goes to that hotline; in a country
  without one, to INTERPOL through the RCMP, Canada's National Central Bureau. Both are foreign referrals.
- A suspect or victim located in a Canadian province brings that province's police in, with every URL of
  the report; one located abroad brings that country's hotline (or INTERPOL) in.
- A child who may need protection also goes to the child-protection authority of the child's province or
  territory; a child abroad or of unknown province goes to the NCECC, with that reason, so a person
  follows up.
- Whatever cannot be placed (an unparseable URL, a host that does not resolve, an address that maps to no
  country, a province code that does not exist) goes to the NCECC with the reason written down: never a
  silent drop.

A recipient appears once per report, whatever the number of URLs in its country; its reasons and URLs
are merged. Every event id derives from the assessment's id and the recipient's key, so the same
assessment always yields the same ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from pipeline import __version__
from pipeline.errors import DomainError
from pipeline.events import (
    MAX_URLS,
    Actor,
    ActorKind,
    Category,
    Determination,
    Envelope,
    FollowUpKind,
    FollowUpRequested,
    Location,
    Outcome,
    Recipient,
    RecipientKind,
    ReportAssessed,
    ReportClosed,
    ReportReferred,
)
from pipeline.route.tables import Authority, Tables

PRODUCER = f"route/{__version__}"
ACTOR = Actor(kind=ActorKind.SYSTEM, id="route")
CANADA = "CA"
NATIONAL_KEY = f"{RecipientKind.POLICE}:{CANADA}"
FOLLOWUP_KEY = "followup"
CLOSE_KEY = "close"

RouteEvent = ReportReferred | FollowUpRequested | ReportClosed

_COUNTRY = re.compile(r"^[A-Z]{2}$")

_NOT_REFERRED: dict[Determination, tuple[Outcome, FollowUpKind, str]] = {
    Determination.NOT_ILLEGAL: (Outcome.NOT_ILLEGAL, FollowUpKind.EDUCATIONAL, "not_illegal"),
    Determination.INFORMATIONAL: (Outcome.INFORMATIONAL, FollowUpKind.INFORMATIONAL, "informational"),
    Determination.OUTSIDE_MANDATE: (Outcome.OUTSIDE_MANDATE, FollowUpKind.INFORMATIONAL, "outside_mandate"),
}


def template_id(determination: Determination, language: str) -> str:
    """The follow-up template of a determination in a language (``messages/followup.csv``)."""
    return f"{_NOT_REFERRED[determination][2]}.{language}"


def template_ids() -> tuple[str, ...]:
    """Every template id the rules can name: the messages file must hold each of them."""
    return tuple(template_id(d, lang) for d in _NOT_REFERRED for lang in ("en", "fr"))


@dataclass(frozen=True, kw_only=True, slots=True)
class Located:
    """Where one host or IP address is: a country, or the problem that kept it from having one."""

    target: str
    country: str | None
    address: str | None = None
    problem: str | None = None


# --- what to locate --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """One piece of content to place: a URL (with its host) or a bare IP address."""

    target: str | None  # None: the URL's host could not be read
    url: str | None
    label: str


def _host_of_url(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host or None


def _content_items(event: ReportAssessed) -> list[_Item]:
    items: list[_Item] = []
    for incident in event.body.incidents:
        for ref in incident.urls:
            host = ref.host.strip() or _host_of_url(ref.normalized)
            items.append(_Item(host or None, ref.normalized, f"host {host!r}" if host else "a URL"))
        items.extend(_Item(ip.strip() or None, None, f"IP address {ip!r}") for ip in incident.ip_addresses)
        for file in incident.files:
            if file.seen_at_url:
                host = _host_of_url(file.seen_at_url)
                items.append(_Item(host, file.seen_at_url, f"host {host!r}" if host else "a file's URL"))
    return items


def _suspect_ips(event: ReportAssessed) -> list[str]:
    suspect = event.body.suspect
    return [e.ip.strip() for e in suspect.ip_events if e.ip.strip()] if suspect else []


def targets(event: ReportAssessed) -> tuple[str, ...]:
    """The hosts and IP addresses whose country decides the jurisdiction, each once, in report order."""
    seen: dict[str, None] = {}
    for item in _content_items(event):
        if item.target:
            seen.setdefault(item.target, None)
    for ip in _suspect_ips(event):
        seen.setdefault(ip, None)
    return tuple(seen)


# --- where people are ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """A person's place as far as the report tells: a province, Canada only, a country, or nothing."""

    province: str | None = None
    country: str | None = None
    problem: str | None = None  # why a stated place could not be used


def _place(location: Location | None, tables: Tables) -> _Place:
    if location is None:
        return _Place()
    province = (location.province or "").strip().upper()
    country = (location.country or "").strip().upper()
    if country and not _COUNTRY.match(country):
        return _Place(problem=f"country code {location.country!r} is not an ISO 3166 code")
    if country and country != CANADA:
        return _Place(country=country)
    if province:
        if province not in tables.provinces:
            return _Place(country=CANADA, problem=f"province code {location.province!r} does not exist")
        return _Place(province=province, country=CANADA)
    return _Place(country=CANADA) if country else _Place()


# --- building the referrals ------------------------------------------------------------------------


@dataclass
class _Draft:
    kind: RecipientKind
    authority: Authority
    jurisdiction: str
    domestic: bool
    reasons: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return recipient_key(self.kind, self.jurisdiction)


def recipient_key(kind: RecipientKind, jurisdiction: str) -> str:
    """The identity of a recipient within a report: one referral per key, ever."""
    return f"{kind}:{jurisdiction}"


class _Plan:
    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.drafts: dict[str, _Draft] = {}

    def add(
        self,
        kind: RecipientKind,
        authority: Authority,
        jurisdiction: str,
        *,
        domestic: bool,
        reason: str,
        urls: Iterable[str] = (),
    ) -> None:
        key = recipient_key(kind, jurisdiction)
        draft = self.drafts.get(key)
        if draft is None:
            draft = self.drafts[key] = _Draft(kind, authority, jurisdiction, domestic)
        if reason not in draft.reasons:
            draft.reasons.append(reason)
        for url in urls:
            if url not in draft.urls:
                draft.urls.append(url)

    def national(self, reason: str, urls: Iterable[str] = ()) -> None:
        self.add(
            RecipientKind.POLICE,
            self.tables.national_default,
            CANADA,
            domestic=True,
            reason=reason,
            urls=urls,
        )

    def province_police(self, province: str, reason: str, urls: Iterable[str] = ()) -> None:
        row = self.tables.provinces[province]
        self.add(RecipientKind.POLICE, row.police, province, domestic=True, reason=reason, urls=urls)

    def abroad(self, country: str, reason: str, urls: Iterable[str] = ()) -> None:
        hotline = self.tables.hotlines.get(country)
        if hotline is not None:
            self.add(RecipientKind.INHOPE_HOTLINE, hotline, country, domestic=False, reason=reason, urls=urls)
        else:
            self.add(
                RecipientKind.INTERPOL,
                self.tables.interpol,
                country,
                domestic=False,
                reason=f"{reason}; no INHOPE hotline there",
                urls=urls,
            )


def _person(plan: _Plan, who: str, place: _Place, all_urls: Sequence[str]) -> None:
    if place.problem:
        plan.national(f"{who}'s {place.problem}: the national centre decides the jurisdiction", all_urls)
    elif place.province:
        plan.province_police(place.province, f"{who} located in {place.province}", all_urls)
    elif place.country == CANADA:
        plan.national(f"{who} located in Canada, province unknown", all_urls)
    elif place.country:
        plan.abroad(place.country, f"{who} located in {place.country}")


def _content(
    plan: _Plan, items: Sequence[_Item], located: Mapping[str, Located], province: str | None
) -> set[str]:
    countries: set[str] = set()
    for item in items:
        urls = (item.url,) if item.url else ()
        where = located.get(item.target) if item.target else None
        if item.target is None:
            plan.national("a URL could not be parsed: the national centre decides the jurisdiction", urls)
            continue
        if where is None or where.country is None:
            problem = where.problem if where is not None and where.problem else "was not located"
            plan.national(f"{item.label} {problem}: the national centre decides the jurisdiction", urls)
            continue
        country = where.country
        countries.add(country)
        if country == CANADA:
            if province is not None:
                plan.province_police(
                    province, f"content hosted in Canada, in the jurisdiction of {province}", urls
                )
            else:
                plan.national("content hosted in Canada, province unknown", urls)
        else:
            plan.abroad(country, f"content hosted in {country}", urls)
    return countries


def _suspect_addresses(
    plan: _Plan, ips: Sequence[str], located: Mapping[str, Located], province: str | None
) -> None:
    for ip in ips:
        where = located.get(ip)
        if where is None or where.country is None:
            problem = where.problem if where is not None and where.problem else "was not located"
            plan.national(
                f"suspect's IP address {ip!r} {problem}: the national centre decides the jurisdiction"
            )
        elif where.country == CANADA:
            if province is not None:
                plan.province_police(
                    province, f"suspect's IP address in Canada, in the jurisdiction of {province}"
                )
            else:
                plan.national("suspect's IP address in Canada, province unknown")
        else:
            plan.abroad(where.country, f"suspect's IP address located in {where.country}")


def _child_protection(plan: _Plan, victim: _Place) -> bool:
    """Refer a child who may need protection; True when a child-protection authority was reached."""
    if victim.province is not None:
        row = plan.tables.provinces[victim.province]
        if row.child_protection is not None:
            plan.add(
                RecipientKind.CHILD_PROTECTION,
                row.child_protection,
                victim.province,
                domestic=True,
                reason=f"child may need protection; child located in {victim.province}",
            )
            return True
        why = f"no child-protection authority is listed for {victim.province}"
    elif victim.problem:
        why = f"the child's {victim.problem}"
    elif victim.country and victim.country != CANADA:
        why = f"the child is located abroad ({victim.country})"
    else:
        why = "the child's province or territory is unknown"
    plan.national(f"child may need protection but {why}: a person must follow up with child protection")
    return False


# --- the rules -------------------------------------------------------------------------------------


def category_of(event: ReportAssessed) -> Category | None:
    """The report's category: the first incident's Criminal Code classification, else the reporter's."""
    for c in event.classification:
        if c.assigned_category is not None:
            return c.assigned_category
    return event.body.reporter_category


def sections_of(event: ReportAssessed) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for c in event.classification for s in c.sections))


def tags_of(event: ReportAssessed) -> tuple[str, ...]:
    """The classification's tags (sextortion...), each once, for the trend figures."""
    return tuple(dict.fromkeys(t for c in event.classification for t in c.tags))


def require_assessment(event: object) -> ReportAssessed:
    if not isinstance(event, ReportAssessed):
        kind = getattr(getattr(event, "envelope", None), "event_type", type(event).__name__)
        raise DomainError(
            f"the route step handles ReportAssessed events only, not {kind}",
            reason="unexpected_event_type",
            field="envelope.event_type",
        )
    return event


def decide(event: object, tables: Tables, located: Mapping[str, Located], now: datetime) -> list[RouteEvent]:
    """The events that end a report: referrals (one per recipient), a follow-up if owed, the close."""
    assessed = require_assessment(event)
    match assessed.determination:
        case Determination.POTENTIALLY_ILLEGAL:
            return _refer(assessed, tables, located, now)
        case Determination.NOT_ILLEGAL | Determination.INFORMATIONAL | Determination.OUTSIDE_MANDATE:
            return _close_unreferred(assessed, now)
        case other:
            raise DomainError(
                f"unknown determination {other!r}", reason="unknown_determination", field="determination"
            )


def _refer(
    event: ReportAssessed, tables: Tables, located: Mapping[str, Located], now: datetime
) -> list[RouteEvent]:
    plan = _Plan(tables)
    body = event.body
    suspect = _place(body.suspect.location if body.suspect else None, tables)
    victim = _place(body.victim.location if body.victim else None, tables)
    province = suspect.province or victim.province
    items = _content_items(event)
    all_urls = [i.url for i in items if i.url]

    _person(plan, "suspect", suspect, all_urls)
    _person(plan, "victim", victim, all_urls)
    countries = _content(plan, items, located, province)
    _suspect_addresses(plan, _suspect_ips(event), located, province)
    if not plan.drafts:
        plan.national("no hosting country or location could be determined", all_urls)
    child_protection = _child_protection(plan, victim) if event.child_may_need_protection else False

    category = category_of(event)
    sections = sections_of(event)
    out: list[RouteEvent] = [
        _referred(event, draft, category, sections, now) for draft in plan.drafts.values()
    ]
    drafts = list(plan.drafts.values())
    domestic_police = sum(1 for d in drafts if d.kind is RecipientKind.POLICE)
    foreign = sum(1 for d in drafts if d.kind in (RecipientKind.INHOPE_HOTLINE, RecipientKind.INTERPOL))
    out.append(
        ReportClosed(
            envelope=_envelope(event, "ReportClosed", now),
            outcome=Outcome.REFERRED,
            referrals=len(drafts),
            domestic_police=domestic_police,
            foreign_police=foreign,
            child_protection=child_protection,
            category=category,
            province=province,
            hosting_countries=tuple(sorted(countries)),
            received_at=body.received_at,
            closed_reason=f"referred to {len(drafts)} recipient(s): {domestic_police} police in Canada, "
            f"{foreign} abroad" + (", child protection" if child_protection else ""),
            tags=tags_of(event),
        )
    )
    return out


def _referred(
    event: ReportAssessed, draft: _Draft, category: Category | None, sections: tuple[str, ...], now: datetime
) -> ReportReferred:
    urls = draft.urls
    reasons = list(draft.reasons)
    if len(urls) > MAX_URLS:
        reasons.append(f"{len(urls) - MAX_URLS} more URL(s) not listed here: see the report")
        urls = urls[:MAX_URLS]
    return ReportReferred(
        envelope=_envelope(event, "ReportReferred", now, draft.key),
        recipient=Recipient(
            kind=draft.kind,
            name=draft.authority.name,
            jurisdiction=draft.jurisdiction,
            domestic=draft.domestic,
            verified=draft.authority.verified,
            source=draft.authority.source,
        ),
        reasons=tuple(reasons),
        urls=tuple(urls),
        category=category,
        sections=sections,
    )


def _close_unreferred(event: ReportAssessed, now: datetime) -> list[RouteEvent]:
    outcome, kind, _ = _NOT_REFERRED[event.determination]
    body = event.body
    out: list[RouteEvent] = []
    owed = body.contact is not None and not body.anonymous
    if body.contact is not None and owed:
        out.append(
            FollowUpRequested(
                envelope=_envelope(event, "FollowUpRequested", now),
                kind=kind,
                language=body.language,
                message_template=template_id(event.determination, body.language.value),
                contact=body.contact,
            )
        )
    reason = f"analyst determination: {event.determination.value}; " + (
        f"{kind.value} follow-up requested" if owed else "no contact details left, no follow-up"
    )
    out.append(
        ReportClosed(
            envelope=_envelope(event, "ReportClosed", now),
            outcome=outcome,
            category=category_of(event),
            received_at=body.received_at,
            closed_reason=reason,
            tags=tags_of(event),
        )
    )
    return out


def _envelope(event: ReportAssessed, event_type: str, now: datetime, discriminator: str = "") -> Envelope:
    return Envelope.follow(
        event.envelope,
        event_type=event_type,
        producer=PRODUCER,
        actor=ACTOR,
        occurred_at=now,
        discriminator=discriminator,
    )


def emit_key(event: RouteEvent) -> str:
    """What an emitted event stands for within its report: a recipient, the follow-up, or the close."""
    match event:
        case ReportReferred():
            return recipient_key(event.recipient.kind, event.recipient.jurisdiction)
        case FollowUpRequested():
            return FOLLOWUP_KEY
        case ReportClosed():
            return CLOSE_KEY
        case _:
            raise TypeError(f"not a route event: {type(event).__name__}")
