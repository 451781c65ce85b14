"""Step 6's pure rules: the automated pre-assessment, the known-material list, analyst identities.

Nothing here touches Kafka, PostgreSQL or logging. The automated pre-assessment decides only the clear
cases and says so in every event it writes (actor kind ``automated``):

* a file hash on the operator's known-material list -> ``potentially_illegal`` (the hash was matched
  against material already confirmed by people; it needs no second look to be forwarded);
* an unclassifiable report that carries nothing anyone could act on (no URL, IP address, e-mail, phone,
  user name, file, suspect or victim details, no sign of an ongoing risk) -> ``informational``.
  Not ``outside_mandate``: that is a judgement on the subject (not about the sexual exploitation of a
  child, or not within Canadian jurisdiction) which a report saying nothing specific cannot support;
  ``informational`` only says there is nothing to forward, and lets step 7 owe the reporter an
  informational follow-up when they left contact details.

Everything else goes to a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pipeline.errors import DomainError
from pipeline.events import (
    Actor,
    ActorKind,
    Determination,
    Envelope,
    FileHash,
    HashType,
    ReportAssessed,
    ReportBody,
    ReportClassified,
    Verdict,
)

PRODUCER = "assess/0.1.0"
AUTOMATED_ACTOR = Actor(kind=ActorKind.AUTOMATED, id="automated:assess-rules/1")

IDENTITY_RE = re.compile(r"^[a-z0-9._-]{2,40}$")

_HEX_LENGTHS = {HashType.MD5: 32, HashType.SHA1: 40, HashType.SHA256: 64, HashType.PDQ: 64}
_PHOTODNA_RE = re.compile(r"^[A-Za-z0-9+/=,]{16,2048}$")


# --- Identities -----------------------------------------------------------------------------------


def check_identity(raw: str, *, role: str) -> str:
    """An analyst or auditor identity as given at the terminal, validated; raises DomainError if not."""
    if not IDENTITY_RE.fullmatch(raw):
        raise DomainError(
            f"{role} identity {raw!r} is not valid: use 2 to 40 lower-case letters, digits, '.', '_' or '-'.",
            reason="bad_identity",
            field=role,
        )
    return raw


def analyst_actor(analyst_id: str) -> Actor:
    return Actor(kind=ActorKind.ANALYST, id=f"analyst:{check_identity(analyst_id, role='analyst')}")


# --- The known-material list ----------------------------------------------------------------------


def hash_key(hash_type: HashType | str, value: str) -> str:
    """The comparable form of a hash: ``type:value``, hex digests lower-cased, surrounding space removed."""
    kind = HashType(hash_type)
    value = value.strip()
    if kind in _HEX_LENGTHS:
        value = value.lower()
    return f"{kind.value}:{value}"


def _check_value(kind: HashType, value: str) -> str | None:
    """Why ``value`` is not a valid hash of ``kind``, or None when it is."""
    if kind in _HEX_LENGTHS:
        want = _HEX_LENGTHS[kind]
        if len(value) != want or not re.fullmatch(r"[0-9a-fA-F]+", value):
            return f"a {kind.value} hash is {want} hexadecimal digits"
        return None
    if not _PHOTODNA_RE.fullmatch(value):
        return "a photodna hash is 16 to 2048 characters of base64 or comma-separated numbers"
    return None


def parse_known_hashes(lines: Iterable[str], *, source: str = "known-hashes file") -> list[str]:
    """Parse an operator's known-material list: one ``hash_type:value`` per line, ``#`` comments.

    Returns the hash keys (see ``hash_key``), without duplicates, in file order. A bad line refuses the
    whole file (``DomainError`` naming the line), so a half-loaded list never passes for a full one.
    """
    keys: dict[str, None] = {}
    types = ", ".join(t.value for t in HashType)
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind_raw, sep, value = line.partition(":")
        if not sep:
            raise DomainError(
                f"{source}, line {number}: expected 'hash_type:value' (hash types: {types}).",
                reason="bad_hash_line",
                field="line",
            )
        try:
            kind = HashType(kind_raw.strip().lower())
        except ValueError:
            raise DomainError(
                f"{source}, line {number}: unknown hash type {kind_raw.strip()!r}; use one of {types}.",
                reason="bad_hash_type",
                field="hash_type",
            ) from None
        problem = _check_value(kind, value.strip())
        if problem:
            raise DomainError(f"{source}, line {number}: {problem}.", reason="bad_hash_value", field="value")
        keys[hash_key(kind, value)] = None
    return list(keys)


def report_hashes(body: ReportBody) -> list[FileHash]:
    """Every file hash a report describes, in incident order."""
    return [h for inc in body.incidents for f in inc.files for h in f.hashes]


def report_hash_keys(body: ReportBody) -> list[str]:
    return list(dict.fromkeys(hash_key(h.hash_type, h.value) for h in report_hashes(body)))


# --- What a report gives to act on ----------------------------------------------------------------


def _victim_details(body: ReportBody) -> bool:
    v = body.victim
    if v is None:
        return False
    loc = v.location
    located = loc is not None and any((loc.province, loc.country, loc.city))
    return any((v.name, v.age is not None, v.date_of_birth, v.school, v.screen_name, located))


def _suspect_details(body: ReportBody) -> bool:
    s = body.suspect
    if s is None:
        return False
    loc = s.location
    located = loc is not None and any((loc.province, loc.country, loc.city))
    return any((s.names, s.usernames, s.emails, s.phones, s.profile_urls, s.ip_events, located))


def actionable_leads(body: ReportBody) -> list[str]:
    """What in a report someone could act on (URL, IP, contact point, file, suspect, victim, risk)."""
    leads: list[str] = []
    incidents = body.incidents
    if any(inc.urls for inc in incidents) or any(f.seen_at_url for inc in incidents for f in inc.files):
        leads.append("url")
    if any(inc.ip_addresses for inc in incidents):
        leads.append("ip")
    if any(inc.emails or inc.phones or inc.usernames for inc in incidents):
        leads.append("account")
    if any(inc.files for inc in incidents):
        leads.append("file")
    if _suspect_details(body):
        leads.append("suspect")
    if _victim_details(body):
        leads.append("victim")
    f = body.facts
    if f.threats or f.ongoing or f.in_person_meeting or f.travel or f.live_stream or body.annotations:
        leads.append("risk")
    if body.tech is not None and (body.tech.physical_location or body.tech.p2p_file_names):
        leads.append("tech")
    return leads


def child_may_need_protection(body: ReportBody) -> bool:
    """A child victim is identified and located in Canada: the provincial child-protection body may act."""
    v = body.victim
    if v is None or not _victim_details(body) or v.location is None:
        return False
    loc = v.location
    identified = any((v.name, v.school, v.screen_name, v.date_of_birth))
    in_canada = bool(loc.province) or (loc.country or "").upper() == "CA"
    return identified and in_canada


# --- The automated pre-assessment -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Preassessment:
    """A clear case the rules decide, and why (the note goes on the event, labelled automated)."""

    determination: Determination
    child_may_need_protection: bool
    note: str
    rule: str


def preassess(event: ReportClassified, known_hashes: frozenset[str] | set[str]) -> Preassessment | None:
    """The automated decision for a classified report, or None when a person must decide.

    ``known_hashes`` holds (at least) the keys of this report's hashes that are on the known list.
    """
    body = event.body
    matched = [k for k in report_hash_keys(body) if k in known_hashes]
    if matched:
        kinds = sorted({k.split(":", 1)[0] for k in matched})
        return Preassessment(
            determination=Determination.POTENTIALLY_ILLEGAL,
            child_may_need_protection=child_may_need_protection(body),
            note=(
                f"Automated pre-assessment: {len(matched)} file hash(es) on the known-material list "
                f"({', '.join(kinds)})."
            ),
            rule="known_hash",
        )
    unclassifiable = all(c.verdict is Verdict.UNCLASSIFIABLE for c in event.incidents)
    if unclassifiable and not actionable_leads(body):
        return Preassessment(
            determination=Determination.INFORMATIONAL,
            child_may_need_protection=False,
            note=(
                "Automated pre-assessment: unclassifiable and nothing to act on "
                "(no URL, IP address, account, file, suspect or victim details)."
            ),
            rule="nothing_to_act_on",
        )
    return None


def assessment(
    classified: ReportClassified,
    *,
    actor: Actor,
    determination: Determination,
    child_may_need_protection: bool,
    note: str | None,
    supersedes: str | None,
    occurred_at: datetime,
) -> ReportAssessed:
    """The ``ReportAssessed`` event for a determination on ``classified``.

    Its id derives from the classification, the actor, the determination and the assessment it
    supersedes: the same decision recorded again (a retry after a crash) keeps its id, and a later
    decision gets a new one and points at the earlier.
    """
    discriminator = "\x1f".join(
        (actor.id, determination.value, "child" if child_may_need_protection else "-", supersedes or "")
    )
    envelope = Envelope.follow(
        classified.envelope,
        event_type="ReportAssessed",
        producer=PRODUCER,
        actor=actor,
        occurred_at=occurred_at,
        discriminator=discriminator,
    )
    return ReportAssessed(
        envelope=envelope,
        determination=determination,
        child_may_need_protection=child_may_need_protection,
        note=note,
        supersedes=supersedes,
        level=classified.level,
        classification=classified.incidents,
        body=classified.body,
    )
