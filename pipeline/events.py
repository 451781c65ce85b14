"""The event contract: immutable, past-tense facts about a report, one class per event type.

Every event is a frozen, keyword-only dataclass whose first field is its ``Envelope`` (ids, time,
causation and correlation, producer, actor). Collections are tuples, enumerations ``StrEnum``s, times
timezone-aware ``datetime`` in UTC (on the wire: Avro ``timestamp-millis``, so sub-millisecond parts are
dropped).

Each event carries forward everything the next step needs (the received report travels on as a
``ReportBody``), so no stage ever reads another stage's state. The Avro schemas in ``schemas/`` are
generated from these classes (``pipeline.schema_registry``); a test keeps the two in step.

Size limits that Avro cannot express live in field metadata (``max_length``, ``max_items``,
``max_item_length``); ``pipeline.serde`` enforces them and the generator writes them into each field's
``doc``.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar

MAX_DESCRIPTION = 20_000
MAX_NOTE = 4_000
MAX_URLS = 500
MAX_URL_LENGTH = 8_192

EVENT_ID_NAMESPACE = uuid.UUID("6f1c7e0a-3b8e-5d2a-9c4f-7a1e2b3c4d5e")
"""The uuid5 namespace of derived event ids. Never change it: redelivered inputs must keep their ids."""


def _limit(max_length: int) -> dict[str, Any]:
    return {"max_length": max_length}


def _url_list() -> dict[str, Any]:
    return {"max_items": MAX_URLS, "max_item_length": MAX_URL_LENGTH}


def derive_event_id(causation_id: str, kind: str, *parts: str) -> str:
    """A deterministic event id: the same input handled again yields the same id (idempotent output)."""
    # The unit separator cannot appear in ids or kinds, so ("a", "bc") and ("ab", "c") never collide.
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join((causation_id, kind, *parts))))


# --- Enumerations ---------------------------------------------------------------------------------


class ActorKind(enum.StrEnum):
    SYSTEM = "system"
    REPORTER = "reporter"
    INTAKE_SYSTEM = "intake_system"
    ANALYST = "analyst"
    AUTOMATED = "automated"
    SIMULATED = "simulated"
    AUDITOR = "auditor"


class HashType(enum.StrEnum):
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"
    PDQ = "pdq"
    PHOTODNA = "photodna"


class ContentKind(enum.StrEnum):
    SEXUAL_IMAGE_OR_VIDEO = "sexual_image_or_video"
    SEXUAL_TEXT = "sexual_text"
    INTIMATE_IMAGE = "intimate_image"
    SEXUAL_CONVERSATION = "sexual_conversation"
    OFFER_OF_SEXUAL_SERVICES = "offer_of_sexual_services"
    EXPLICIT_MATERIAL_SENT_TO_CHILD = "explicit_material_sent_to_child"
    TRAVEL_PLAN = "travel_plan"
    ARRANGEMENT_WITH_OTHER_ADULT = "arrangement_with_other_adult"
    OTHER = "other"


class MaterialAction(enum.StrEnum):
    MADE = "made"
    SHARED = "shared"
    POSSESSED = "possessed"
    VIEWED = "viewed"


class Role(enum.StrEnum):
    ADULT = "adult"
    MINOR = "minor"
    UNKNOWN = "unknown"


class Annotation(enum.StrEnum):
    SEXTORTION = "sextortion"
    SOLICITATION = "solicitation"
    MINOR_TO_MINOR = "minor_to_minor"
    SADISTIC = "sadistic"
    SELF_PRODUCTION = "self_production"
    LIVE_STREAMING = "live_streaming"
    INFANT = "infant"
    GENERATIVE_AI = "generative_ai"


class Category(enum.StrEnum):
    """The tipline's report categories (``categories.csv``); ``None`` where one is used means "not sure"."""

    CSAM = "csam"
    ONLINE_HARMS = "online_harms"
    LURING = "luring"
    TRAFFICKING = "trafficking"
    NCII_MINOR = "ncii_minor"
    TRAVELLING = "travelling"
    COMMERCIAL_EXPLOITATION = "commercial_exploitation"
    EXPLICIT_MATERIAL_TO_CHILD = "explicit_material_to_child"
    AGREEMENT_ARRANGEMENT = "agreement_arrangement"


class Channel(enum.StrEnum):
    WEB = "web"
    PHONE = "phone"
    API = "api"


class Language(enum.StrEnum):
    EN = "en"
    FR = "fr"


class Technology(enum.StrEnum):
    WEB_PAGE = "web_page"
    EMAIL = "email"
    CHAT_IM = "chat_im"
    SOCIAL_MEDIA = "social_media"
    ONLINE_GAMING = "online_gaming"
    PEER_TO_PEER = "peer_to_peer"
    PHONE_SMS = "phone_sms"
    NON_INTERNET = "non_internet"


class Verdict(enum.StrEnum):
    CONFIRMED = "confirmed"
    CORRECTED = "corrected"
    UNCLASSIFIABLE = "unclassifiable"
    NOT_STATED = "not_stated"


class Determination(enum.StrEnum):
    POTENTIALLY_ILLEGAL = "potentially_illegal"
    NOT_ILLEGAL = "not_illegal"
    INFORMATIONAL = "informational"
    OUTSIDE_MANDATE = "outside_mandate"


class RecipientKind(enum.StrEnum):
    POLICE = "police"
    INHOPE_HOTLINE = "inhope_hotline"
    INTERPOL = "interpol"
    CHILD_PROTECTION = "child_protection"


class FollowUpKind(enum.StrEnum):
    INFORMATIONAL = "informational"
    EDUCATIONAL = "educational"


class Outcome(enum.StrEnum):
    REFERRED = "referred"
    NOT_ILLEGAL = "not_illegal"
    INFORMATIONAL = "informational"
    OUTSIDE_MANDATE = "outside_mandate"
    REJECTED = "rejected"


# --- Envelope -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Actor:
    """Who or what caused an event: a system stage, a reporter, an analyst, a simulation."""

    kind: ActorKind
    id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """Ids, time, causation and correlation of an event, apart from its payload."""

    event_id: str
    event_type: str
    report_id: str
    occurred_at: datetime
    producer: str
    causation_id: str | None
    correlation_id: str
    actor: Actor

    @staticmethod
    def follow(
        cause: Envelope,
        *,
        event_type: str,
        producer: str,
        actor: Actor,
        occurred_at: datetime,
        discriminator: str = "",
    ) -> Envelope:
        """The envelope of an event made from ``cause``: same report and correlation, derived id.

        The id is derived from the cause's id, the event type and the discriminator (e.g. a recipient
        name when one input yields several events of a type), so a redelivered input yields the same id.
        """
        return Envelope(
            event_id=derive_event_id(cause.event_id, event_type, discriminator),
            event_type=event_type,
            report_id=cause.report_id,
            occurred_at=occurred_at,
            producer=producer,
            causation_id=cause.event_id,
            correlation_id=cause.correlation_id,
            actor=actor,
        )

    @staticmethod
    def first(
        *,
        submission_id: str,
        event_type: str,
        report_id: str,
        producer: str,
        actor: Actor,
        occurred_at: datetime,
    ) -> Envelope:
        """The envelope of a report's first event: its id is derived from the client's submission id."""
        event_id = derive_event_id(submission_id, event_type)
        return Envelope(
            event_id=event_id,
            event_type=event_type,
            report_id=report_id,
            occurred_at=occurred_at,
            producer=producer,
            causation_id=None,
            correlation_id=event_id,
            actor=actor,
        )


# --- Shared value records -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class UrlRef:
    """A URL as reported and as normalised, with its host."""

    original: str = field(metadata=_limit(MAX_URL_LENGTH))
    normalized: str = field(metadata=_limit(MAX_URL_LENGTH))
    host: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FileHash:
    hash_type: HashType
    value: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FileRef:
    """A file described, never sent: its name, hashes, and where it was seen."""

    file_name: str | None = None
    hashes: tuple[FileHash, ...] = ()
    seen_at_url: str | None = field(default=None, metadata=_limit(MAX_URL_LENGTH))


@dataclass(frozen=True, kw_only=True, slots=True)
class IpEvent:
    """An IP capture event: the address, what happened (login, upload...), and when."""

    ip: str
    event: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Location:
    """An estimated location: province (2-letter Canadian code), country (ISO 3166 alpha-2), city."""

    province: str | None = None
    country: str | None = None
    city: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Suspect:
    """The person or user reported."""

    names: tuple[str, ...] = ()
    usernames: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    profile_urls: tuple[str, ...] = field(default=(), metadata=_url_list())
    ip_events: tuple[IpEvent, ...] = ()
    location: Location | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Victim:
    """A child the report is about, as far as the reporter knows."""

    name: str | None = None
    age: int | None = None
    date_of_birth: date | None = None
    school: str | None = None
    screen_name: str | None = None
    gender: str | None = None
    location: Location | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Facts:
    """What the reporter saw, in structured form: the classification step's input."""

    content: tuple[ContentKind, ...] = ()
    actions: tuple[MaterialAction, ...] = ()
    sender_role: Role = Role.UNKNOWN
    recipient_role: Role = Role.UNKNOWN
    money_involved: bool = False
    threats: bool = False
    travel: bool = False
    in_person_meeting: bool = False
    live_stream: bool = False
    ongoing: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class EncryptedContact:
    """The reporter's contact details, encrypted: never in clear on a topic."""

    key_id: str
    nonce: bytes
    ciphertext: bytes
    algorithm: str = "AES-256-GCM"


@dataclass(frozen=True, kw_only=True, slots=True)
class TechDetails:
    """Optional per-technology extras (chat, gaming, peer-to-peer, non-internet)."""

    chat_client: str | None = None
    chat_room: str | None = None
    game: str | None = None
    console: str | None = None
    p2p_client: str | None = None
    p2p_file_names: tuple[str, ...] = ()
    physical_location: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Incident:
    """One technology's part of a report, analysed on its own."""

    incident_id: str
    technology: Technology
    urls: tuple[UrlRef, ...] = field(default=(), metadata={"max_items": MAX_URLS})
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    """E.164."""
    usernames: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    files: tuple[FileRef, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportBody:
    """The received report's content, carried forward by every event after ``ReportReceived``."""

    report_number: str
    channel: Channel
    language: Language
    received_at: datetime
    reporter_category: Category | None
    description: str = field(metadata=_limit(MAX_DESCRIPTION))
    incidents: tuple[Incident, ...]
    suspect: Suspect | None = None
    victim: Victim | None = None
    annotations: tuple[Annotation, ...] = ()
    facts: Facts
    tech: TechDetails | None = None
    anonymous: bool
    contact: EncryptedContact | None = None
    linked_to: str | None = None
    reporters_count: int = 1
    reporter_location: Location | None = None
    """Where the reporter is (province, or country when abroad), as they said; added in v2."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IncidentClassification:
    """The Criminal Code classification of one incident, confirming or correcting the reporter's choice."""

    incident_id: str
    reporter_category: Category | None
    assigned_category: Category | None
    sections: tuple[str, ...] = ()
    verdict: Verdict
    tags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipient:
    """Who a referral goes to; jurisdiction is a province code, a country code, or "CA" for national."""

    kind: RecipientKind
    name: str
    jurisdiction: str
    domestic: bool
    verified: bool
    source: str


# --- Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportSubmitted:
    """Step 2: a report as the web form, the phone line or an intake system handed it in."""

    STAGE: ClassVar[str] = "intake"
    envelope: Envelope
    submission_id: str
    channel: Channel
    intake_system: str | None = None
    reporter_category: Category | None = None
    description: str = field(metadata=_limit(MAX_DESCRIPTION))
    language: Language
    incident_time: datetime | None = None
    urls: tuple[str, ...] = field(default=(), metadata=_url_list())
    ip_addresses: tuple[str, ...] = ()
    emails_reported: tuple[str, ...] = ()
    phones_reported: tuple[str, ...] = ()
    usernames_reported: tuple[str, ...] = ()
    suspect: Suspect | None = None
    victim: Victim | None = None
    files: tuple[FileRef, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    facts: Facts = Facts()
    tech: TechDetails | None = None
    anonymous: bool
    contact: EncryptedContact | None = None
    submitted_at: datetime
    reporter_location: Location | None = None
    """Where the reporter is (province, or country when abroad), as they said; added in v2."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportReceived:
    """Step 3: the secure server received a report: numbered, normalised, split into incidents."""

    STAGE: ClassVar[str] = "ingest"
    envelope: Envelope
    body: ReportBody
    submission_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportRejected:
    """Step 3: a submission that could not be received (invalid, or a resubmission of a known report).

    A resubmission (``reason_code`` ``DUPLICATE_SUBMISSION``) carries the report id of the report it
    repeats, which stays as it was: the read model records it beside that report, not as its step."""

    STAGE: ClassVar[str] = "ingest"
    envelope: Envelope
    submission_id: str
    reason_code: str
    field: str | None = None
    message: str
    duplicate_of: str | None = None


DUPLICATE_SUBMISSION = "duplicate_submission"
"""``ReportRejected.reason_code`` of a resubmission: the same submission id again, with other bytes."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportPrioritized:
    """Step 4: a report ranked by the nature of its content (level 1 most urgent), then by arrival."""

    STAGE: ClassVar[str] = "prioritize"
    envelope: Envelope
    level: int
    reasons: tuple[str, ...] = ()
    arrival_seq: int
    supersedes: str | None = None
    body: ReportBody


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportClassified:
    """Step 5: each incident's Criminal Code classification (or an analyst's override of one)."""

    STAGE: ClassVar[str] = "classify"
    envelope: Envelope
    level: int
    priority_reasons: tuple[str, ...] = ()
    arrival_seq: int
    incidents: tuple[IncidentClassification, ...]
    needs_analyst_review: bool
    supersedes: str | None = None
    override_reason: str | None = None
    body: ReportBody


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportAssessed:
    """Step 6: the determination of an analyst, or of a clearly labelled automated or simulated one."""

    STAGE: ClassVar[str] = "assess"
    envelope: Envelope
    determination: Determination
    child_may_need_protection: bool
    note: str | None = field(default=None, metadata=_limit(MAX_NOTE))
    supersedes: str | None = None
    level: int
    classification: tuple[IncidentClassification, ...]
    body: ReportBody


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportReferred:
    """Step 7: a report forwarded to one recipient (one event per recipient)."""

    STAGE: ClassVar[str] = "route"
    envelope: Envelope
    recipient: Recipient
    reasons: tuple[str, ...] = ()
    urls: tuple[str, ...] = field(default=(), metadata=_url_list())
    category: Category | None = None
    sections: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class FollowUpRequested:
    """Step 7: a message owed to a reporter who left contact details (a template id, never the text)."""

    STAGE: ClassVar[str] = "route"
    envelope: Envelope
    kind: FollowUpKind
    language: Language
    message_template: str
    contact: EncryptedContact


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportClosed:
    """Step 7: the end of a report, with its outcome and what the published figures need."""

    STAGE: ClassVar[str] = "route"
    envelope: Envelope
    outcome: Outcome
    referrals: int = 0
    domestic_police: int = 0
    foreign_police: int = 0
    child_protection: bool = False
    category: Category | None = None
    province: str | None = None
    hosting_countries: tuple[str, ...] = ()
    received_at: datetime
    closed_reason: str
    tags: tuple[str, ...] = ()
    """Classification tags (e.g. "sextortion", tracked as a trend, not a category); added in v2."""


Event = (
    ReportSubmitted
    | ReportReceived
    | ReportRejected
    | ReportPrioritized
    | ReportClassified
    | ReportAssessed
    | ReportReferred
    | FollowUpRequested
    | ReportClosed
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        ReportSubmitted,
        ReportReceived,
        ReportRejected,
        ReportPrioritized,
        ReportClassified,
        ReportAssessed,
        ReportReferred,
        FollowUpRequested,
        ReportClosed,
    )
}
"""Every event type by name; ``envelope.event_type`` is one of these keys."""

SCHEMA_VERSIONS: dict[str, int] = {
    **dict.fromkeys(EVENT_TYPES, 1),
    # v2: ReportBody and ReportSubmitted gained reporter_location (default null).
    "ReportSubmitted": 2,
    "ReportReceived": 2,
    "ReportPrioritized": 2,
    "ReportClassified": 2,
    "ReportAssessed": 2,
    # v2: classification tags.
    "ReportClosed": 2,
}
"""The current schema version of each event: bump it (and keep the old file) when an event changes."""
