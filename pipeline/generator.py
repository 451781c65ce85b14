"""Realistic, reproducible report streams for the demo and the benchmarks.

``generate(n, seed)`` yields report dicts in the shape the HTTP intake endpoint accepts (the fields of
``ReportSubmitted`` with JSON values: enums as their string values, times ISO 8601 in UTC, the contact as
a plain ``{"name", "email", "phone", "preferred_language"}`` dict that intake encrypts, the reporter's
choice under ``category``, and a ``submission_id``; the channel and the time come from the way in).
``generate_submissions`` adds how and when each came in (channel, time) and its ``Truth``;
``generate_events`` turns them into ``ReportSubmitted`` events with intake's own rules, so the demo can
publish either way.

The stream is shaped like the tipline's published figures (``pipeline/generator_data/*.csv`` cite them):
the 2022 category mix, about 4.9 URLs per child-sexual-abuse-material report, about 1.5 incidents
(technologies) per report, victim or suspect details on about one report in ten, the 2022 reporters'
origins, INHOPE's 2023 hosting countries (real addresses of each country, on reserved ``.example`` host
names), French and English, 60% anonymous, some URLs reported again and again by many people. The
reporter says where they are (``reporter_location``): their province, or their country when abroad;
a reporter of unknown origin says nothing.

Each report is drawn from its TRUE category: its ``facts``, technologies and annotations follow that
category, while the category the reporter chose is sometimes "not sure" (``None``) or wrong, so the
classification step has something to correct. The true category and the hosting countries travel beside
the report in a ``Truth`` (``generate_submissions``), never inside it: outcomes are for the pipeline's
rules and the simulated analyst to produce. (The reporter's origin is in both: the report says it as
``reporter_location``, the ``Truth`` keeps the drawn origin.)

Everything random comes from ``random.Random`` seeded by ``seed`` (one stream per report, one for the
arrival times, one for the pool of "viral" URLs), so the first ``k`` reports of ``generate(n, seed)`` do
not depend on ``n``. Nothing reads the clock: without ``start``, times begin at ``DEFAULT_START``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pipeline.events import (
    MAX_URLS,
    Annotation,
    Category,
    Channel,
    ContentKind,
    EncryptedContact,
    HashType,
    Language,
    MaterialAction,
    ReportSubmitted,
    Role,
    Technology,
)

T = TypeVar("T")

DATA_DIR = Path(__file__).with_name("generator_data")
ROUTE_DEMO_HOSTS = Path(__file__).parent / "route" / "data" / "demo_hosts.csv"
"""The route step's table of demo host names and their addresses: used first when it exists."""

DEFAULT_START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
REPORTS_PER_DAY = 18_891 / 365
"""2022's reports processed (shared/domain/published_figures.csv), as a mean arrival rate."""

MEAN_URLS_CSAM = 70_186 / 14_260
"""2022: 70,186 URLs in 14,260 child-sexual-abuse-material reports (about 4.9 each)."""

VIRAL_URL_SHARE = 0.10
VIRAL_POOL_SIZE = 40
ANONYMOUS_SHARE = 0.60
IP_LITERAL_URL_SHARE = 0.05

DOMESTIC = ("AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT")
"""Canadian province and territory codes (an origin that is not one is "international" or "unknown")."""


# --- Tables -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    """The weights the generator draws from; ``load_tables`` reads them from CSV files."""

    categories: tuple[tuple[Category, float], ...]
    origins: tuple[tuple[str, float], ...]
    hosting: tuple[tuple[str, float], ...]
    hosts: dict[str, tuple[tuple[str, str], ...]]
    """country -> ((host name, IP address), ...)."""


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        lines = [line for line in fh if line.strip() and not line.startswith("#")]
    return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(lines)]


def _demo_hosts(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Host names and addresses per country from a CSV with host(name), ip and country columns."""
    by_country: dict[str, list[tuple[str, str]]] = {}
    for row in _rows(path):
        host = row.get("host") or row.get("hostname") or ""
        ip = row.get("ip") or row.get("ip_address") or ""
        country = (row.get("country") or row.get("country_code") or "").upper()
        if host and ip and country:
            by_country.setdefault(country, []).append((host.lower(), ip))
    return by_country


def load_tables(data_dir: Path = DATA_DIR, route_hosts: Path | None = ROUTE_DEMO_HOSTS) -> Tables:
    """Read the weights from ``data_dir``; host names come from the route step's table where it has them."""
    categories = tuple(
        (Category(r["category"]), float(r["weight"])) for r in _rows(data_dir / "categories.csv")
    )
    origins = tuple((r["origin"], float(r["weight"])) for r in _rows(data_dir / "origins.csv"))
    hosting = tuple(
        (r["country"].upper(), float(r["share"])) for r in _rows(data_dir / "hosting_countries.csv")
    )
    hosts = _demo_hosts(data_dir / "hosts.csv")
    if route_hosts is not None and route_hosts.is_file():
        hosts.update(_demo_hosts(route_hosts))
    missing = [c for c, _ in hosting if c not in hosts]
    if missing:
        raise ValueError(f"no demo host for hosting countries {', '.join(missing)}")
    return Tables(
        categories=categories,
        origins=origins,
        hosting=hosting,
        hosts={c: tuple(v) for c, v in hosts.items()},
    )


@cache
def default_tables() -> Tables:
    return load_tables()


# --- The report beside its truth ----------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """What the generator knows about a report that the report itself does not say."""

    submission_id: str
    category: Category
    origin: str
    """A province code, "international" or "unknown" (the reporter's whereabouts)."""
    url_countries: tuple[str, ...] = ()
    """The hosting country of each of the report's ``urls``, in the same order."""
    technologies: frozenset[Technology] = field(default_factory=frozenset)
    """The incidents ingest will make of the report, one per technology."""

    @property
    def hosting_countries(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.url_countries))


@dataclass(frozen=True)
class Submission:
    """A report dict as intake takes it, how and when it came in, and the truth beside it."""

    report: dict[str, Any]
    channel: Channel
    submitted_at: datetime
    truth: Truth


EncryptContact = Callable[[str, Mapping[str, str]], EncryptedContact]
"""``(report_id, contact) -> EncryptedContact``: e.g. ``pipeline.ingest.crypto.encrypt_contact`` bound to a
connection."""


def recent_window(today: datetime, n: int) -> tuple[datetime, float]:
    """A start and a daily rate for ``n`` reports that end just before ``today``, over at most about 200
    days: the intake refuses times in the future and checks a child's stated age against a date of birth
    at the time it receives the report, so a stream must be recent (at the published 52 reports a day,
    20,000 reports would span more than a year). Times move with the day of the run; nothing else does."""
    per_day = max(REPORTS_PER_DAY, n / 180)
    span = timedelta(days=n / per_day * 1.1 + 1)
    start = (today - span).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, per_day


def generate(
    n: int,
    seed: int,
    *,
    start: datetime | None = None,
    reports_per_day: float = REPORTS_PER_DAY,
    tables: Tables | None = None,
) -> Iterator[dict[str, Any]]:
    """``n`` report dicts as the intake endpoint accepts them (its JSON body), reproducible from ``seed``."""
    for sub in generate_submissions(n, seed, start=start, reports_per_day=reports_per_day, tables=tables):
        yield sub.report


def generate_submissions(
    n: int,
    seed: int,
    *,
    start: datetime | None = None,
    reports_per_day: float = REPORTS_PER_DAY,
    tables: Tables | None = None,
) -> Iterator[Submission]:
    """Each report with its channel, submission time and ``Truth``; times rise from ``start``."""
    if n < 0:
        raise ValueError("n must be zero or more")
    if reports_per_day <= 0:
        raise ValueError("reports_per_day must be positive")
    t = tables if tables is not None else default_tables()
    clock = _Arrivals(random.Random(f"{seed}:arrivals"), start or DEFAULT_START, reports_per_day)
    viral = _viral_pool(random.Random(f"{seed}:viral"), t)
    for i in range(n):
        submitted_at = clock.next()
        yield _Report(random.Random(f"{seed}:report:{i}"), t, viral, submitted_at).build()


def generate_events(
    n: int,
    seed: int,
    *,
    encrypt: EncryptContact | None = None,
    start: datetime | None = None,
    reports_per_day: float = REPORTS_PER_DAY,
    tables: Tables | None = None,
) -> Iterator[ReportSubmitted]:
    """The same reports as ``ReportSubmitted`` events, made by intake's own rules.

    Each dict goes through ``pipeline.ingest.logic.parse_report`` and ``to_submitted`` (so an event is
    exactly what the HTTP endpoint would publish, with ``occurred_at`` = the submission time); a contact
    is encrypted with ``encrypt``. Without it, contacts are encrypted under a throwaway key that is never
    kept: each event has the size and shape of a real one and nobody can read the contact (for benchmarks;
    a demo that sends follow-ups binds ``pipeline.ingest.crypto.encrypt_contact``).
    """
    # Imported here: the generator itself needs only the event classes.
    from pipeline.ingest import logic

    if encrypt is None:
        encrypt = _throwaway_encryption()
    for sub in generate_submissions(n, seed, start=start, reports_per_day=reports_per_day, tables=tables):
        parsed = logic.parse_report(sub.report)
        contact = None if parsed.contact is None else encrypt(parsed.report_id, parsed.contact)
        yield logic.to_submitted(parsed, channel=sub.channel, now=sub.submitted_at, contact=contact)


def _throwaway_encryption() -> EncryptContact:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def encrypt(report_id: str, contact: Mapping[str, str]) -> EncryptedContact:
        nonce = secrets.token_bytes(12)
        plaintext = json.dumps(dict(contact), sort_keys=True, separators=(",", ":")).encode()
        return EncryptedContact(
            key_id=report_id, nonce=nonce, ciphertext=aead.encrypt(nonce, plaintext, report_id.encode())
        )

    return encrypt


def technologies(report: dict[str, Any]) -> frozenset[Technology]:
    """The technologies (incidents) a report dict names, one incident per technology.

    The ingest step's rule (``pipeline.ingest.logic.normalized_content``), for dicts made here: screen
    names belong to the chat, game or peer-to-peer incident when one is named, else to social media; a
    suspect's profile URLs are web pages, and IP addresses join the peer-to-peer incident or a web page.
    """
    tech = report.get("tech") or {}
    suspect = report.get("suspect") or {}
    found: set[Technology] = set()
    if report.get("urls") or suspect.get("profile_urls"):
        found.add(Technology.WEB_PAGE)
    if report.get("emails_reported"):
        found.add(Technology.EMAIL)
    if report.get("phones_reported"):
        found.add(Technology.PHONE_SMS)
    if tech.get("chat_client") or tech.get("chat_room"):
        found.add(Technology.CHAT_IM)
    if tech.get("game") or tech.get("console"):
        found.add(Technology.ONLINE_GAMING)
    if tech.get("p2p_client") or tech.get("p2p_file_names"):
        found.add(Technology.PEER_TO_PEER)
    if tech.get("physical_location"):
        found.add(Technology.NON_INTERNET)
    if (report.get("ip_addresses") or suspect.get("ip_events")) and Technology.PEER_TO_PEER not in found:
        found.add(Technology.WEB_PAGE)  # addresses belong to the peer-to-peer incident, else the web page's
    platforms = {Technology.CHAT_IM, Technology.ONLINE_GAMING, Technology.PEER_TO_PEER}
    if (report.get("usernames_reported") or suspect.get("usernames")) and not found & platforms:
        found.add(Technology.SOCIAL_MEDIA)
    return frozenset(found)


# --- Drawing ----------------------------------------------------------------------------------------


def _weighted(rng: random.Random, options: Sequence[tuple[T, float]]) -> T:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options], k=1)[0]


def _geometric(rng: random.Random, mean: float) -> int:
    """A count of at least 1 with the given mean (geometric: many small, a long tail of large)."""
    if mean <= 1:
        return 1
    p = 1 / mean
    return 1 + int(math.log(1 - rng.random()) / math.log(1 - p))


def _ms(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds")


class _Arrivals:
    """Submission times: a Poisson stream whose rate swings over the day (evenings in Canada busiest)."""

    SWING = 0.5
    PEAK_HOUR_UTC = 2.0  # 21:00 in Toronto

    def __init__(self, rng: random.Random, start: datetime, per_day: float) -> None:
        self._rng = rng
        self._now = start.astimezone(UTC)
        self._max_per_s = per_day * (1 + self.SWING) / 86_400

    def next(self) -> datetime:
        while True:  # thinning: draw at the peak rate, keep each arrival with rate(t) / peak
            self._now += timedelta(seconds=self._rng.expovariate(self._max_per_s))
            hour = self._now.hour + self._now.minute / 60
            rate = 1 + self.SWING * math.cos(2 * math.pi * (hour - self.PEAK_HOUR_UTC) / 24)
            if self._rng.random() * (1 + self.SWING) <= rate:
                return _ms(self._now)


_WORDS = (
    "amber", "birch", "cedar", "delta", "ember", "fjord", "glade", "harbor", "indigo", "juniper", "kestrel",
    "lumen", "maple", "nova", "orbit", "pine", "quartz", "raven", "sable", "tundra", "umber", "vale",
    "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip
_FIRST = (
    "Alex", "Jordan", "Sam", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn", "Chris", "Pat",
    "Émilie", "Mathieu", "Chloé", "Olivier", "Léa", "Gabriel", "Noah", "Olivia", "Liam", "Emma", "Maya",
)  # fmt: skip
_LAST = (
    "Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Smith", "Brown", "Wilson", "MacDonald", "Martin",
    "Singh", "Chen", "Nguyen", "Campbell", "Anderson", "Leblanc", "Thompson", "Young", "White", "Clark",
)  # fmt: skip
_AREA_CODES = {
    "AB": ("403", "780", "587"), "BC": ("604", "250", "778"), "MB": ("204", "431"), "NB": ("506",),
    "NL": ("709",), "NS": ("902", "782"), "NT": ("867",), "NU": ("867",), "ON": ("416", "613", "519", "905"),
    "PE": ("902",), "QC": ("514", "418", "450", "819"), "SK": ("306", "639"), "YT": ("867",),
}  # fmt: skip
_CITIES = {
    "AB": ("Calgary", "Edmonton"), "BC": ("Vancouver", "Victoria", "Surrey"), "MB": ("Winnipeg", "Brandon"),
    "NB": ("Moncton", "Fredericton"), "NL": ("St. John's",), "NS": ("Halifax", "Sydney"),
    "NT": ("Yellowknife",), "NU": ("Iqaluit",), "ON": ("Toronto", "Ottawa", "Hamilton", "London"),
    "PE": ("Charlottetown",),
    "QC": ("Montréal", "Québec", "Gatineau", "Sherbrooke"), "SK": ("Regina", "Saskatoon"),
    "YT": ("Whitehorse",),
}  # fmt: skip
_ABROAD = (("US", 0.45), ("GB", 0.12), ("AU", 0.08), ("FR", 0.07), ("IN", 0.06), ("PH", 0.06), ("DE", 0.04),
           ("BE", 0.03), ("NZ", 0.03), ("MX", 0.03), ("ZA", 0.03))  # fmt: skip
_DESTINATIONS = (("PH", 0.3), ("TH", 0.2), ("KH", 0.1), ("DO", 0.1), ("MX", 0.1), ("CO", 0.1), ("US", 0.1))
_CHAT = ("Discord", "Snapchat", "Instagram", "Kik", "Telegram", "WhatsApp", "Omegle-like video chat")
_GAMES = (("Roblox", None), ("Minecraft", "PC"), ("Fortnite", "PlayStation"), ("Call of Duty", "Xbox"),
          ("Among Us", "Switch"))  # fmt: skip
_P2P = ("BitTorrent", "eMule", "Shareaza")
_PLACES = {
    Language.EN: (
        "a public library",
        "a community centre",
        "a shopping mall",
        "a school parking lot",
        "a park",
    ),
    Language.FR: ("une bibliothèque publique", "un centre communautaire", "un centre commercial", "un parc"),
}
_GENDERS = (("female", 0.36), ("male", 0.42), ("other", 0.01), (None, 0.21))

_CONFUSIONS: dict[Category, tuple[Category, ...]] = {
    Category.CSAM: (Category.NCII_MINOR, Category.ONLINE_HARMS),
    Category.ONLINE_HARMS: (Category.LURING, Category.CSAM),
    Category.LURING: (Category.ONLINE_HARMS, Category.EXPLICIT_MATERIAL_TO_CHILD, Category.CSAM),
    Category.TRAFFICKING: (Category.COMMERCIAL_EXPLOITATION, Category.LURING),
    Category.NCII_MINOR: (Category.CSAM,),
    Category.TRAVELLING: (Category.TRAFFICKING, Category.LURING),
    Category.COMMERCIAL_EXPLOITATION: (Category.TRAFFICKING, Category.CSAM),
    Category.EXPLICIT_MATERIAL_TO_CHILD: (Category.LURING, Category.CSAM),
    Category.AGREEMENT_ARRANGEMENT: (Category.LURING, Category.TRAVELLING),
}
# (not sure, wrong) shares of the reporter's choice, by true category.
_CHOICE_ERRORS: dict[Category, tuple[float, float]] = {
    Category.CSAM: (0.04, 0.04),
    Category.ONLINE_HARMS: (0.15, 0.12),
    Category.NCII_MINOR: (0.10, 0.35),
}
_DEFAULT_CHOICE_ERRORS = (0.10, 0.12)

W, EM, PH, CH, SO, GA, P2, NI = (
    Technology.WEB_PAGE,
    Technology.EMAIL,
    Technology.PHONE_SMS,
    Technology.CHAT_IM,
    Technology.SOCIAL_MEDIA,
    Technology.ONLINE_GAMING,
    Technology.PEER_TO_PEER,
    Technology.NON_INTERNET,
)
# Per true category: the main technology (weighted), then the chance of each further one.
_TECH_PROFILES: dict[
    Category, tuple[tuple[tuple[Technology, float], ...], tuple[tuple[Technology, float], ...]]
] = {
    Category.CSAM: (((W, 1.0),), ((SO, 0.22), (EM, 0.12), (CH, 0.07), (P2, 0.06), (PH, 0.03), (NI, 0.01))),
    Category.ONLINE_HARMS: (
        ((SO, 0.4), (W, 0.3), (CH, 0.2), (GA, 0.1)),
        ((W, 0.2), (SO, 0.15), (CH, 0.1), (PH, 0.05), (NI, 0.05)),
    ),
    Category.LURING: (
        ((CH, 0.45), (SO, 0.35), (GA, 0.1), (PH, 0.1)),
        ((PH, 0.25), (EM, 0.2), (SO, 0.25), (W, 0.15), (NI, 0.05)),
    ),
    Category.TRAFFICKING: (
        ((W, 0.5), (PH, 0.3), (SO, 0.2)),
        ((PH, 0.4), (EM, 0.2), (NI, 0.25), (SO, 0.2)),
    ),
    Category.NCII_MINOR: (((SO, 0.5), (CH, 0.3), (W, 0.2)), ((W, 0.3), (SO, 0.2), (EM, 0.1))),
    Category.TRAVELLING: (
        ((EM, 0.3), (CH, 0.3), (W, 0.2), (NI, 0.2)),
        ((PH, 0.3), (W, 0.2), (NI, 0.2)),
    ),
    Category.COMMERCIAL_EXPLOITATION: (((W, 0.5), (PH, 0.5)), ((PH, 0.3), (EM, 0.2), (NI, 0.2))),
    Category.EXPLICIT_MATERIAL_TO_CHILD: (((CH, 0.5), (SO, 0.3), (GA, 0.2)), ((PH, 0.15), (EM, 0.1))),
    Category.AGREEMENT_ARRANGEMENT: (((CH, 0.5), (EM, 0.3), (SO, 0.2)), ((PH, 0.3), (NI, 0.2))),
}
# Share of reports naming a victim or a suspect, by true category (about 10% overall: ~6 a day of ~52).
_PERSON_SHARE: dict[Category, float] = {
    Category.CSAM: 0.03,
    Category.ONLINE_HARMS: 0.15,
    Category.LURING: 0.50,
    Category.TRAFFICKING: 0.40,
    Category.NCII_MINOR: 0.45,
    Category.TRAVELLING: 0.50,
    Category.COMMERCIAL_EXPLOITATION: 0.30,
    Category.EXPLICIT_MATERIAL_TO_CHILD: 0.40,
    Category.AGREEMENT_ARRANGEMENT: 0.40,
}
SEXTORTION_SHARE_OF_LURING = 0.40
"""About 10 sextortion reports a day in 2024 against ~6 luring reports a day in 2022: a large share."""

_DESCRIPTIONS: dict[Category, dict[Language, tuple[str, ...]]] = {
    Category.CSAM: {
        Language.EN: (
            "I came across a website that appears to show sexual images of children.",
            "These links were posted in a forum and seem to lead to child sexual abuse material.",
            "A page I was sent has pictures that look like sexual abuse of kids. Please check.",
        ),
        Language.FR: (
            "Je suis tombé sur un site qui semble montrer des images sexuelles d'enfants.",
            "Ces liens circulent sur un forum et semblent mener à du matériel d'abus pédosexuel.",
        ),
    },
    Category.ONLINE_HARMS: {
        Language.EN: (
            "Someone keeps sending my child inappropriate messages and I am worried.",
            "An account is posting pictures of kids from a school with creepy comments.",
            "I am not sure this is illegal but this user makes me uncomfortable around kids.",
        ),
        Language.FR: (
            "Quelqu'un envoie des messages inappropriés à mon enfant et je suis inquiète.",
            "Un compte publie des photos d'enfants avec des commentaires déplacés.",
        ),
    },
    Category.LURING: {
        Language.EN: (
            "An adult has been chatting with my 13-year-old and asked her to keep it secret.",
            "A man online asked my son for pictures and wants to meet him.",
            "Someone is threatening to share my daughter's pictures unless she pays.",
        ),
        Language.FR: (
            "Un adulte discute avec ma fille de 13 ans et lui demande de garder le secret.",
            "Quelqu'un menace de diffuser les photos de mon fils s'il ne paie pas.",
        ),
    },
    Category.TRAFFICKING: {
        Language.EN: (
            "An ad seems to offer a teenage girl for money.",
            "I think a minor is being sold for sex.",
        ),
        Language.FR: ("Une annonce semble offrir une adolescente contre de l'argent.",),
    },
    Category.NCII_MINOR: {
        Language.EN: (
            "A nude picture of a student at my school is being passed around.",
            "My ex shared my private pictures from when I was 16.",
        ),
        Language.FR: ("Une photo intime d'une élève circule à l'école.",),
    },
    Category.TRAVELLING: {
        Language.EN: ("A person said he is travelling abroad to meet children for sex.",),
        Language.FR: ("Une personne dit qu'elle part à l'étranger pour rencontrer des enfants.",),
    },
    Category.COMMERCIAL_EXPLOITATION: {
        Language.EN: ("Someone is offering paid sexual services with a person who looks underage.",),
        Language.FR: ("Quelqu'un offre des services sexuels payants avec une personne qui semble mineure.",),
    },
    Category.EXPLICIT_MATERIAL_TO_CHILD: {
        Language.EN: ("An adult sent sexually explicit pictures to my 11-year-old in a game chat.",),
        Language.FR: ("Un adulte a envoyé des images sexuellement explicites à mon enfant de 11 ans.",),
    },
    Category.AGREEMENT_ARRANGEMENT: {
        Language.EN: ("Two adults in a chat were arranging to abuse a child.",),
        Language.FR: ("Deux adultes dans un clavardage planifiaient d'abuser d'un enfant.",),
    },
}
# --- Facts by true category: what a reporter of such a report saw ----------------------------------------

_FactsFn = Callable[[random.Random, dict[str, Any], list[Annotation]], None]


def _facts_csam(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.SEXUAL_IMAGE_OR_VIDEO]
    f["actions"] = [MaterialAction.SHARED] + ([MaterialAction.POSSESSED] if rng.random() < 0.15 else [])
    if rng.random() < 0.05:
        f["actions"].insert(0, MaterialAction.MADE)
    f["money_involved"] = rng.random() < 0.04
    if rng.random() < 0.03:
        f["live_stream"] = True
        notes.append(Annotation.LIVE_STREAMING)
    for note, p in (
        (Annotation.SELF_PRODUCTION, 0.12),
        (Annotation.GENERATIVE_AI, 0.04),
        (Annotation.INFANT, 0.01),
        (Annotation.SADISTIC, 0.01),
    ):
        if rng.random() < p:
            notes.append(note)


def _facts_online_harms(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    # A concern with no offence in it: sexual talk from an adult to a child would be luring.
    f["content"] = [ContentKind.OTHER]
    f["recipient_role"] = Role.MINOR
    if rng.random() < 0.2:
        f["sender_role"] = Role.MINOR
        notes.append(Annotation.MINOR_TO_MINOR)
        if rng.random() < 0.5:
            f["content"] = [ContentKind.SEXUAL_CONVERSATION]
    f["ongoing"] = rng.random() < 0.3


def _facts_luring(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.SEXUAL_CONVERSATION]
    f["sender_role"], f["recipient_role"] = Role.ADULT, Role.MINOR
    f["ongoing"] = rng.random() < 0.6
    f["in_person_meeting"] = rng.random() < 0.25
    if rng.random() < SEXTORTION_SHARE_OF_LURING:
        f["content"].append(ContentKind.INTIMATE_IMAGE)
        f["threats"] = True
        f["money_involved"] = rng.random() < 0.7
        notes.append(Annotation.SEXTORTION)
    if rng.random() < 0.3:
        notes.append(Annotation.SOLICITATION)
    if rng.random() < 0.08:
        f["live_stream"] = True
        notes.append(Annotation.LIVE_STREAMING)


def _facts_trafficking(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.OFFER_OF_SEXUAL_SERVICES]
    f["sender_role"], f["recipient_role"] = Role.ADULT, Role.MINOR
    f["money_involved"], f["in_person_meeting"], f["ongoing"] = True, True, True
    # Trafficking is control or movement of the child: threats, travel, or both.
    f["travel"], f["threats"] = rng.choice(((True, False), (False, True), (True, True)))


def _facts_ncii(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.INTIMATE_IMAGE]
    f["actions"] = [MaterialAction.SHARED]
    f["recipient_role"] = Role.MINOR
    if rng.random() < 0.5:
        notes.append(Annotation.SELF_PRODUCTION)
    if rng.random() < 0.4:
        f["sender_role"] = Role.MINOR
        notes.append(Annotation.MINOR_TO_MINOR)
    if rng.random() < 0.15:
        f["threats"] = True
        notes.append(Annotation.SEXTORTION)


def _facts_travelling(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.TRAVEL_PLAN]
    f["sender_role"] = Role.ADULT
    f["travel"], f["in_person_meeting"] = True, rng.random() < 0.7
    f["money_involved"] = rng.random() < 0.5


def _facts_commercial(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.OFFER_OF_SEXUAL_SERVICES]
    f["sender_role"], f["recipient_role"] = Role.ADULT, Role.MINOR
    f["money_involved"], f["in_person_meeting"] = True, rng.random() < 0.8


def _facts_explicit_to_child(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.EXPLICIT_MATERIAL_SENT_TO_CHILD]
    f["actions"] = [MaterialAction.SHARED]
    f["sender_role"], f["recipient_role"] = Role.ADULT, Role.MINOR
    f["ongoing"] = rng.random() < 0.3


def _facts_arrangement(rng: random.Random, f: dict[str, Any], notes: list[Annotation]) -> None:
    f["content"] = [ContentKind.ARRANGEMENT_WITH_OTHER_ADULT]
    f["sender_role"], f["recipient_role"] = Role.ADULT, Role.ADULT
    f["in_person_meeting"] = True
    f["travel"] = rng.random() < 0.2


_FACTS: dict[Category, _FactsFn] = {
    Category.CSAM: _facts_csam,
    Category.ONLINE_HARMS: _facts_online_harms,
    Category.LURING: _facts_luring,
    Category.TRAFFICKING: _facts_trafficking,
    Category.NCII_MINOR: _facts_ncii,
    Category.TRAVELLING: _facts_travelling,
    Category.COMMERCIAL_EXPLOITATION: _facts_commercial,
    Category.EXPLICIT_MATERIAL_TO_CHILD: _facts_explicit_to_child,
    Category.AGREEMENT_ARRANGEMENT: _facts_arrangement,
}
"""Every category has its facts (a test checks the table is complete)."""


_PATHS = ("/gallery/{t}", "/v/{t}", "/f/{t}/{n}.jpg", "/album/{t}?page={p}", "/i/{t}.png", "/watch?v={t}")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _token(rng: random.Random, k: int = 10) -> str:
    return "".join(rng.choices(_ALNUM, k=k))


def _url(rng: random.Random, tables: Tables) -> tuple[str, str]:
    """A fresh URL on a host of a country drawn from the hosting shares: (url, country)."""
    country = _weighted(rng, tables.hosting)
    host, ip = rng.choice(tables.hosts[country])
    where = host
    if rng.random() < IP_LITERAL_URL_SHARE:
        where = f"[{ip}]" if ":" in ip else ip
    path = rng.choice(_PATHS).format(t=_token(rng), n=rng.randint(1, 9999), p=rng.randint(2, 30))
    scheme = "https" if rng.random() < 0.85 else "http"
    return f"{scheme}://{where}{path}", country


@dataclass(frozen=True)
class _Viral:
    urls: tuple[tuple[str, str], ...]
    weights: tuple[float, ...]


def _viral_pool(rng: random.Random, tables: Tables) -> _Viral:
    """A few URLs that many people report (Zipf-weighted: the first is the most reported)."""
    urls = tuple(_url(rng, tables) for _ in range(VIRAL_POOL_SIZE))
    return _Viral(urls=urls, weights=tuple(1 / (k + 1) for k in range(VIRAL_POOL_SIZE)))


class _Report:
    """One report drawn from its true category; ``build`` returns the dict and its truth."""

    def __init__(self, rng: random.Random, tables: Tables, viral: _Viral, submitted_at: datetime) -> None:
        self.rng = rng
        self.tables = tables
        self.viral = viral
        self.submitted_at = submitted_at
        self.category: Category = _weighted(rng, tables.categories)
        self.origin: str = _weighted(rng, tables.origins)
        self.language = self._language()
        self.countries: list[str] = []

    # The pieces, each a small draw ------------------------------------------------------------------

    def _language(self) -> Language:
        french = {"QC": 0.85, "NB": 0.30, "ON": 0.03, "international": 0.08, "unknown": 0.05}.get(
            self.origin, 0.01
        )
        return Language.FR if self.rng.random() < french else Language.EN

    def _reporter_choice(self) -> Category | None:
        not_sure, wrong = _CHOICE_ERRORS.get(self.category, _DEFAULT_CHOICE_ERRORS)
        roll = self.rng.random()
        if roll < not_sure:
            return None
        if roll < not_sure + wrong:
            return self.rng.choice(_CONFUSIONS[self.category])
        return self.category

    def _technologies(self) -> list[Technology]:
        main, extras = _TECH_PROFILES[self.category]
        chosen = [_weighted(self.rng, main)]
        chosen += [tech for tech, p in extras if tech not in chosen and self.rng.random() < p]
        # Ingest files screen names under the chat, game or peer-to-peer incident when there is one, so
        # social media would not be an incident of its own beside them.
        if SO in chosen and {CH, GA, P2} & set(chosen):
            chosen.remove(SO)
        return chosen

    def _urls(self, count: int) -> list[str]:
        urls: list[str] = []
        for _ in range(count):
            if self.rng.random() < VIRAL_URL_SHARE:
                url, country = self.rng.choices(self.viral.urls, weights=self.viral.weights, k=1)[0]
            else:
                url, country = _url(self.rng, self.tables)
            if url not in urls:
                urls.append(url)
                self.countries.append(country)
        return urls

    def _username(self) -> str:
        sep = self.rng.choice(("", "_", ".", ""))
        return f"{self.rng.choice(_WORDS)}{sep}{self.rng.choice(_WORDS)}{self.rng.randint(1, 9999)}"

    def _email(self, local: str | None = None) -> str:
        domain = self.rng.choice(("example.org", "example.com", "example.net"))
        return f"{(local or self._username()).lower()}@{domain}"

    def _phone(self) -> str:
        province = self.origin if self.origin in _AREA_CODES else self.rng.choice(DOMESTIC)
        # 555-0100 to 555-0199 are the North American numbers reserved for fiction.
        return f"+1{self.rng.choice(_AREA_CODES[province])}5550{self.rng.randint(100, 199)}"

    def _name(self) -> str:
        return f"{self.rng.choice(_FIRST)} {self.rng.choice(_LAST)}"

    def _location(self, *, same_place: float) -> dict[str, Any] | None:
        if self.origin in DOMESTIC and self.rng.random() < same_place:
            city = self.rng.choice(_CITIES[self.origin]) if self.rng.random() < 0.6 else None
            return {"province": self.origin, "country": "CA", "city": city}
        if self.origin == "international" and self.rng.random() < same_place:
            return {"province": None, "country": _weighted(self.rng, _ABROAD), "city": None}
        if self.rng.random() < 0.3:
            return {"province": None, "country": "CA" if self.rng.random() < 0.5 else "US", "city": None}
        return None

    def _reporter_location(self) -> dict[str, Any] | None:
        """Where the reporter says they are: the province of a Canadian, the country of one abroad.

        Drawn last, from the report's own stream, so the rest of the report is as before.
        """
        if self.origin in DOMESTIC:
            return {"province": self.origin, "country": "CA"}
        if self.origin == "international":
            return {"country": _weighted(self.rng, _ABROAD)}
        return None

    def _hashes(self) -> list[dict[str, str]]:
        kinds = self.rng.sample(
            ((HashType.MD5, 32), (HashType.SHA1, 40), (HashType.PDQ, 64)), self.rng.randint(1, 3)
        )
        # Random hex of the right length: never the hash of any real file.
        return [{"hash_type": str(k), "value": f"{self.rng.getrandbits(4 * n):0{n}x}"} for k, n in kinds]

    def _files(self, urls: list[str], count: int) -> list[dict[str, Any]]:
        files = []
        for _ in range(count):
            stem, ext = self.rng.choice((("IMG", "jpg"), ("IMG", "jpg"), ("image", "png"), ("VID", "mp4")))
            name = f"{stem}_{self.rng.randint(1, 9999):04d}.{ext}"
            files.append(
                {
                    "file_name": name if self.rng.random() < 0.8 else None,
                    "hashes": self._hashes(),
                    "seen_at_url": self.rng.choice(urls) if urls and self.rng.random() < 0.7 else None,
                }
            )
        return files

    def _facts_and_annotations(self) -> tuple[dict[str, Any], list[Annotation]]:
        f: dict[str, Any] = {
            "content": [],
            "actions": [],
            "sender_role": Role.UNKNOWN,
            "recipient_role": Role.UNKNOWN,
            "money_involved": False,
            "threats": False,
            "travel": False,
            "in_person_meeting": False,
            "live_stream": False,
            "ongoing": False,
        }
        notes: list[Annotation] = []
        _FACTS[self.category](self.rng, f, notes)
        facts = {k: [str(x) for x in v] if isinstance(v, list) else (str(v) if isinstance(v, Role) else v)
                 for k, v in f.items()}  # fmt: skip
        return facts, notes

    def _school(self) -> str:
        kind = ("École", "Middle School", "Secondary School")
        return f"{self.rng.choice(_WORDS).title()} {self.rng.choice(kind)}"

    def _victim(self) -> dict[str, Any]:
        rng = self.rng
        low, high = {Category.CSAM: (4, 15), Category.NCII_MINOR: (13, 17)}.get(self.category, (10, 16))
        age = rng.randint(low, high)
        dob = None
        if rng.random() < 0.15:
            born = self.submitted_at.date() - timedelta(days=365 * age + rng.randint(0, 364))
            dob = date(born.year, born.month, min(born.day, 28)).isoformat()
        return {
            "name": rng.choice(_FIRST) if rng.random() < 0.7 else None,
            "age": age if rng.random() < 0.6 else None,
            "date_of_birth": dob,
            "school": self._school() if rng.random() < 0.2 else None,
            "screen_name": self._username() if rng.random() < 0.4 else None,
            "gender": _weighted(rng, _GENDERS),
            "location": self._location(same_place=0.8),
        }

    def _suspect(self, usernames: list[str], emails: list[str], phones: list[str]) -> dict[str, Any]:
        rng = self.rng
        ip_events = []
        if rng.random() < 0.1:
            country = _weighted(rng, self.tables.hosting)
            ip_events.append(
                {
                    "ip": rng.choice(self.tables.hosts[country])[1],
                    "event": rng.choice(("login", "upload", "message")),
                    "at": _iso(self.submitted_at - timedelta(hours=rng.randint(1, 240))),
                }
            )
        profile = []
        if rng.random() < 0.2:
            host = _url(rng, self.tables)[0].split("/")[2]
            profile.append(f"https://{host}/u/{usernames[0] if usernames else self._username()}")
        return {
            "names": [self._name()] if rng.random() < 0.4 else [],
            "usernames": usernames[:1],
            "emails": emails[:1],
            "phones": phones[:1],
            "profile_urls": profile,
            "ip_events": ip_events,
            "location": self._location(same_place=0.5),
        }

    def _contact(self) -> dict[str, Any]:
        name = self._name()
        local = name.split()[0].lower().encode("ascii", "ignore").decode() + str(self.rng.randint(1, 999))
        return {
            "name": name,
            "email": f"{local}@example.org",
            "phone": self._phone() if self.rng.random() < 0.6 else None,
            "preferred_language": str(self.language),
        }

    def _channel(self) -> tuple[Channel, str | None]:
        roll = self.rng.random()
        if self.category is Category.CSAM and roll < 0.03:
            # Internet services' mandatory reports (Canada's reporting act) come in through a system.
            return Channel.API, "isp-mandatory-reporting"
        if roll < 0.08:
            return Channel.PHONE, None
        return Channel.WEB, None

    def _tech_details(self, techs: list[Technology]) -> dict[str, Any]:
        rng = self.rng
        tech: dict[str, Any] = {}
        if CH in techs:
            tech["chat_client"] = rng.choice(_CHAT)
            if rng.random() < 0.2:
                tech["chat_room"] = f"#{rng.choice(_WORDS)}-{rng.randint(1, 99)}"
        if GA in techs:
            tech["game"], console = rng.choice(_GAMES)
            if console:
                tech["console"] = console
        if P2 in techs:
            tech["p2p_client"] = rng.choice(_P2P)
            tech["p2p_file_names"] = [f"{_token(rng, 8)}.{rng.choice(('zip', 'rar', 'mp4'))}"]
        if NI in techs:
            tech["physical_location"] = rng.choice(_PLACES[self.language])
        return tech

    def _people(
        self, usernames: list[str], emails: list[str], phones: list[str]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(victim, suspect): details of either on a share of reports that depends on the category."""
        victim = suspect = None
        if self.category is Category.TRAVELLING and self.rng.random() < 0.8:
            # Travelling to exploit a child is about a child abroad: the reporter says where.
            victim = self._victim()
            victim["location"] = {
                "province": None,
                "country": _weighted(self.rng, _DESTINATIONS),
                "city": None,
            }
            return victim, self._suspect(usernames, emails, phones) if self.rng.random() < 0.5 else None
        if self.rng.random() < _PERSON_SHARE[self.category]:
            who = self.rng.random()
            if who < 0.45 or (self.category is Category.CSAM and who < 0.6):
                victim = self._victim()
            elif who < 0.75:
                suspect = self._suspect(usernames, emails, phones)
            else:
                victim = self._victim()
                suspect = self._suspect(usernames, emails, phones)
        return victim, suspect

    # The whole report ---------------------------------------------------------------------------------

    def build(self) -> Submission:
        rng = self.rng
        submission_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        channel, intake_system = self._channel()
        reporter_category = self._reporter_choice()
        techs = self._technologies()
        facts, annotations = self._facts_and_annotations()

        urls: list[str] = []
        if W in techs:
            mean = MEAN_URLS_CSAM if self.category is Category.CSAM else 1.4
            urls = self._urls(min(_geometric(rng, mean), MAX_URLS))
        emails = [self._email() for _ in range(1 if rng.random() < 0.85 else 2)] if EM in techs else []
        phones = [self._phone()] if PH in techs else []
        usernames = (
            [self._username() for _ in range(1 if rng.random() < 0.8 else 2)]
            if {CH, GA, SO} & set(techs)
            else []
        )
        tech = self._tech_details(techs)

        ip_addresses: list[str] = []
        if urls and rng.random() < 0.05:
            country = _weighted(rng, self.tables.hosting)
            ip_addresses.append(rng.choice(self.tables.hosts[country])[1])

        victim, suspect = self._people(usernames, emails, phones)

        file_share = {Category.CSAM: 0.12, Category.NCII_MINOR: 0.35}.get(self.category, 0.0)
        if Annotation.SEXTORTION in annotations:
            file_share = 0.2
        files = self._files(urls, rng.randint(1, 3)) if rng.random() < file_share else []

        anonymous = channel is not Channel.API and rng.random() < ANONYMOUS_SHARE
        incident_time = None
        if rng.random() < 0.75:
            delay_s = min(rng.lognormvariate(math.log(6 * 3600), 1.8), 2 * 365 * 86_400)
            incident_time = _iso(_ms(self.submitted_at - timedelta(seconds=max(delay_s, 60))))

        report: dict[str, Any] = {
            "submission_id": submission_id,
            "intake_system": intake_system,
            "category": str(reporter_category) if reporter_category else None,
            "description": rng.choice(_DESCRIPTIONS[self.category][self.language]),
            "language": str(self.language),
            "incident_time": incident_time,
            "urls": urls,
            "ip_addresses": ip_addresses,
            "emails_reported": emails,
            "phones_reported": phones,
            "usernames_reported": usernames,
            "suspect": suspect,
            "victim": victim,
            "files": files,
            "annotations": [str(a) for a in annotations],
            "facts": facts,
            "tech": tech or None,
            "anonymous": anonymous,
            "contact": None if anonymous else self._contact(),
        }
        reporter_location = self._reporter_location()
        if reporter_location is not None:
            report["reporter_location"] = reporter_location
        truth = Truth(
            submission_id=submission_id,
            category=self.category,
            origin=self.origin,
            url_countries=tuple(self.countries),
            technologies=technologies(report),
        )
        return Submission(report=report, channel=channel, submitted_at=self.submitted_at, truth=truth)


# --- Figures of a stream -------------------------------------------------------------------------------


def summarize(subs: Sequence[Submission]) -> dict[str, float]:
    """The figures of a generated stream that the published ones constrain (shares are 0..1)."""
    n = len(subs)
    if n == 0:
        return {"reports": 0.0}
    csam = [s for s in subs if s.truth.category is Category.CSAM]
    countries = [c for s in subs for c in s.truth.url_countries]
    urls = [u for s in subs for u in s.report["urls"]]
    seen: dict[str, int] = {}
    for u in urls:
        seen[u] = seen.get(u, 0) + 1
    days = (subs[-1].submitted_at - subs[0].submitted_at).total_seconds() / 86_400
    figures = {
        "reports": float(n),
        "urls_per_csam_report": sum(len(s.report["urls"]) for s in csam) / max(len(csam), 1),
        "incidents_per_report": sum(len(s.truth.technologies) for s in subs) / n,
        "share_victim_or_suspect": sum(1 for s in subs if s.report["victim"] or s.report["suspect"]) / n,
        "share_anonymous": sum(1 for s in subs if s.report["anonymous"]) / n,
        "share_french": sum(1 for s in subs if s.report["language"] == "fr") / n,
        "share_not_sure": sum(1 for s in subs if s.report["category"] is None) / n,
        "share_wrong_category": sum(1 for s in subs if s.report["category"] not in (None, s.truth.category))
        / n,
        "share_url_mentions_repeated": sum(c for c in seen.values() if c > 1) / max(len(urls), 1),
        "reports_per_day": (n - 1) / days if days > 0 else 0.0,
    }
    for cat in Category:
        figures[f"category_{cat}"] = sum(1 for s in subs if s.truth.category is cat) / n
    for origin in ("ON", "international", "unknown", "BC", "AB", "QC"):
        figures[f"origin_{origin}"] = sum(1 for s in subs if s.truth.origin == origin) / n
    for country in ("GB", "NL", "DE", "US", "CA"):
        figures[f"hosting_{country}"] = countries.count(country) / max(len(countries), 1)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pipeline.generator [n] [seed]``: generate a stream, print its figures and the speed."""
    import sys
    import time

    args = list(sys.argv[1:] if argv is None else argv)
    n = int(args[0]) if args else 10_000
    seed = int(args[1]) if len(args) > 1 else 1
    began = time.perf_counter()
    subs = list(generate_submissions(n, seed))
    took = time.perf_counter() - began
    for key, value in summarize(subs).items():
        print(f"{key:36} {value:10.4f}")
    print(f"{'generated_reports_per_s':36} {n / took:10.0f}")


if __name__ == "__main__":
    main()
