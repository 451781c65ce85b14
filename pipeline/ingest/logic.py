"""Steps 2-3, the pure rules: validate a submission, normalise it, split it into incidents.

Nothing here talks to Kafka, PostgreSQL or a log. Three ways in (the HTTP endpoint, the phone line, an
intake system's client) share ``parse_report``: a JSON object becomes a ``ParsedReport`` or a
``DomainError`` naming the offending field (``urls[2]``, ``victim.age``...). The ingest stage then calls
``receive`` to turn a ``ReportSubmitted`` into the content of a ``ReportReceived``.

Normalisation:
- URLs: scheme and host lower-cased, an internationalised host to punycode (``idna``, UTS #46), default
  ports, ``user:password@`` and the fragment dropped, an empty path made ``/``; the original is kept
  beside it. A backslash, port 0 or a numeric host other than a dotted-decimal IPv4 address (browsers
  read ``0x7f.0.0.1`` as 127.0.0.1) is refused. A URL
  without a scheme is read as ``http://`` (reporters paste ``example.com/page``).
- IP addresses: ``ipaddress`` (IPv6 compressed). Phones: E.164 (``phonenumbers``, region CA by default).
  E-mail addresses: ``email_validator`` syntax check and normalisation, no DNS lookup.
- Locations (the victim's, the suspect's, and ``reporter_location``, where the reporter is): province
  and country codes upper-cased; a province must be a Canadian province or territory code, a country an
  ISO 3166 alpha-2 code. The reporter's location is what the published counts by origin are made of.

Incident splitting (one incident per technology, as the tipline counts them): web page URLs -> one
``web_page`` incident; URLs on known social-media / chat / gaming hosts go to ``social_media`` /
``chat_im`` / ``online_gaming``; e-mail addresses -> ``email``; chat details -> ``chat_im``; game or
console -> ``online_gaming``; peer-to-peer client or file names -> ``peer_to_peer``; phone numbers ->
``phone_sms``; a physical location -> ``non_internet``. A report naming no technology at all (a
description only) is one ``non_internet`` incident, so that every report has something to classify.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import idna
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from pipeline import events as ev
from pipeline import serde
from pipeline.errors import DomainError

REPORT_ID_NAMESPACE = uuid.UUID("0b6e3c1d-8f4a-5e2b-9d7c-2a4f6e8b1c3d")
"""The uuid5 namespace of report ids. Never change it: a resubmission must map to the same report id."""

PRODUCER_INTAKE = "intake/0.1.0"
PRODUCER_INGEST = "ingest/0.1.0"

DEFAULT_REGION = "CA"
HOST_CACHE_SIZE = 8_192
"""Hosts whose normal form and technology are remembered (pure functions of the host)."""
MAX_DEPTH = 20
MAX_TEXT = 1_000
MAX_ITEMS = 500
MAX_SUBMISSION_ID = 128
MAX_VICTIM_AGE = 120
"""Ages beyond this are not possible (the prioritize step refuses beyond 130; intake is stricter)."""
MAX_AHEAD = timedelta(days=1)
"""How far after its arrival a reported time may be (clock skew and time zones), no further."""

PROVINCES = frozenset({"AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT"})
URL_SCHEMES = frozenset({"http", "https", "ftp"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}

MEDIA_FIELDS = frozenset(
    {
        "file",
        "attachment",
        "attachments",
        "image",
        "images",
        "video",
        "videos",
        "media",
        "photo",
        "photos",
        "picture",
        "pictures",
        "upload",
        "uploads",
        "file_data",
        "file_content",
        "content_base64",
        "base64",
        "blob",
    }
)
MEDIA_MESSAGE = "the tipline accepts URLs and file hashes only, never images, videos or other files"

SOCIAL_HOSTS = frozenset(
    {
        "facebook.com",
        "fb.com",
        "instagram.com",
        "tiktok.com",
        "snapchat.com",
        "x.com",
        "twitter.com",
        "discord.com",
        "discord.gg",
        "reddit.com",
        "tumblr.com",
        "pinterest.com",
        "youtube.com",
        "youtu.be",
        "linkedin.com",
        "threads.net",
        "vk.com",
        "omegle.com",
        "onlyfans.com",
        "bsky.app",
    }
)
CHAT_HOSTS = frozenset(
    {"t.me", "telegram.me", "telegram.org", "whatsapp.com", "wa.me", "kik.com", "signal.me"}
)
GAMING_HOSTS = frozenset(
    {"roblox.com", "minecraft.net", "steamcommunity.com", "fortnite.com", "epicgames.com"}
)

_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# A data: URI anywhere in a string, with or without a media type (``data:,x``, ``data:;base64,x``); a
# word ending in "data" (``metadata:``) or "data: " followed by a space is prose, not a URI.
_DATA_URI = re.compile(
    r"(?<![a-z0-9])data:(?:[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)?(?:;[^,;\s]*)*,", re.IGNORECASE
)
MIN_BASE64_RUN = 1_000
"""A run this long of base64 characters without a space, in text, is an encoded file."""
# Tried only where a run starts (the look-behind), so a text of runs just short of the limit is read once,
# not once per character of each run (250 KB of 999-character runs took a quarter of a second).
_BASE64_RUN = re.compile(rf"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/=]{{{MIN_BASE64_RUN}}}")
_BASE64_EXEMPT = frozenset({"urls", "profile_urls", "seen_at_url", "value"})
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")
_SCHEME_ONLY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(?!\d)")
COUNTRY_CODES: frozenset[str] = frozenset(phonenumbers.SUPPORTED_REGIONS) | {
    "AQ",
    "BV",
    "GS",
    "HM",
    "PN",
    "TF",
    "UM",
}
"""ISO 3166-1 alpha-2 codes: the regions of libphonenumber (every assigned code but the seven added here,
uninhabited or without a telephone plan, plus AC and TA, reserved, and XK, Kosovo's code in common use)."""
# scheme, host, port, path, query (and a fragment, dropped): what urlsplit would find in such a URL.
_PLAIN_URL = re.compile(
    r"(https?|ftp)://([a-z0-9_.-]+)(?::([0-9]{1,5}))?(/[^?#]*)?(?:\?([^#]*))?(?:#.*)?",
    re.ASCII | re.IGNORECASE | re.DOTALL,
)
_BAD_URL_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_SUBMISSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_HASH_PATTERNS = {
    ev.HashType.MD5: re.compile(r"^[0-9a-f]{32}$"),
    ev.HashType.SHA1: re.compile(r"^[0-9a-f]{40}$"),
    ev.HashType.SHA256: re.compile(r"^[0-9a-f]{64}$"),
    ev.HashType.PDQ: re.compile(r"^[0-9a-f]{64}$"),
}


# --- Ids ------------------------------------------------------------------------------------------


_REPORT_ID_PREFIX = REPORT_ID_NAMESPACE.bytes
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def report_id_for(submission_id: str) -> str:
    """The report id of a submission: derived, so a resubmission (same submission id) has the same one.

    ``str(uuid.uuid5(REPORT_ID_NAMESPACE, submission_id))``, computed without the UUID object (a test
    holds them equal): it is made for every report that comes in.
    """
    name = _REPORT_ID_PREFIX + submission_id.encode("utf-8")
    digest = bytearray(
        hashlib.sha1(name, usedforsecurity=False).digest()[:16]
    )  # uuid5 is SHA-1 by definition
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def reference_for(report_id: str) -> str:
    """A short reference a reporter can read out on the phone (the report number comes at ingest):
    the base32 of the report id's first five bytes."""
    if _CANONICAL_UUID.fullmatch(report_id):
        head = int(report_id[:8] + report_id[9:11], 16)
    else:
        head = int.from_bytes(uuid.UUID(report_id).bytes[:5], "big")
    code = "".join(_BASE32[(head >> shift) & 31] for shift in range(35, -1, -5))
    return f"TIP-{code[:4]}-{code[4:8]}"


def incident_id_for(report_id: str, technology: ev.Technology) -> str:
    return ev.derive_event_id(report_id, "incident", technology.value)


# --- Normalisation --------------------------------------------------------------------------------


def _refuse(field: str, message: str, reason: str = "invalid_field") -> DomainError:
    return DomainError(f"{field}: {message}", reason=reason, field=field)


def normalize_host(host: str, field: str) -> str:
    """A host lower-cased, IDN to punycode; an IP literal validated. Raises DomainError."""
    known = _normalized_host(host)
    return known if known is not None else _normalize_host(host, field)


@lru_cache(maxsize=HOST_CACHE_SIZE)
def _normalized_host(host: str) -> str | None:
    """``normalize_host`` remembered for the hosts seen lately (a few platforms make most reports);
    None for a refused host, which ``_normalize_host`` refuses again naming the field."""
    try:
        return _normalize_host(host, "")
    except DomainError:
        return None


def _normalize_host(host: str, field: str) -> str:
    host = host.rstrip(".")
    if not host:
        raise _refuse(field, "the URL has no host")
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise _refuse(field, "the URL's IPv6 address is not valid") from None
    if host.isascii():
        host = host.lower()
    else:
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise _refuse(field, "the URL's host is not a valid domain name") from None
    if _DIGITS_AND_DOTS.fullmatch(host) or _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        # A browser reads a host whose last label is a number (``0x7f.0.0.1``, ``2130706433``) as an
        # IPv4 address in its own notation: only the plain dotted-decimal form is accepted.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _refuse(field, "the URL's host looks like an IPv4 address but is not a valid one") from None
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise _refuse(field, "the URL's host is not a public domain name")
    return host


def _check_url_text(text: str, field: str) -> None:
    if not text:
        raise _refuse(field, "the URL is empty")
    if len(text) > ev.MAX_URL_LENGTH:
        raise _refuse(field, f"the URL is longer than {ev.MAX_URL_LENGTH} characters")
    if _BAD_URL_CHARS.search(text):
        raise _refuse(field, "the URL contains spaces or control characters")
    if "\\" in text:
        # Browsers read a backslash as a slash: ``http://evil.example\@host/`` goes to evil.example.
        raise _refuse(field, "the URL contains a backslash")


def normalize_url(raw: str, field: str = "url") -> ev.UrlRef:
    """The URL as reported and normalised, with its host. Raises DomainError naming ``field``."""
    if not isinstance(raw, str):
        raise _refuse(field, "must be a string")
    text = raw.strip()
    _check_url_text(text, field)
    if text.lower().startswith("data:"):
        raise _refuse(field, MEDIA_MESSAGE, "media_not_accepted")
    if "://" not in text:
        scheme_only = _SCHEME_ONLY.match(text)
        if scheme_only and scheme_only.group(1).lower() in URL_SCHEMES:
            raise _refuse(field, f"write {scheme_only.group(1).lower()}:// with two slashes before the host")
        if scheme_only:
            raise _refuse(
                field,
                f"the URL scheme {scheme_only.group(1).lower()!r} is not accepted; use http, https or ftp",
            )
        text = "http://" + text
    fast = _normalize_plain_url(raw, text, field)
    return fast if fast is not None else _normalize_split_url(raw, text, field)


def _normalize_plain_url(original: str, text: str, field: str) -> ev.UrlRef | None:
    """The usual URL (an accepted scheme, a host name of plain letters, digits, '.', '-' or '_', an
    optional port, no user@ nor brackets) normalised without urllib, at a third of the cost: the same
    result or refusal as ``_normalize_split_url`` (a property test holds them equal). None: not such a
    URL, ask ``_normalize_split_url``."""
    plain = _PLAIN_URL.fullmatch(text)
    if plain is None:
        return None
    scheme, hostname, port_text, path, query = plain.groups()
    scheme = scheme.lower()
    port = None if port_text is None else int(port_text)
    if port == 0 or (port is not None and port > 65_535):
        return None  # refused by urllib's reading, in its words
    host = normalize_host(hostname.lower(), field)
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    base = f"{scheme}://{netloc}{path or '/'}"
    normalized = f"{base}?{query}" if query else base
    if len(normalized) > ev.MAX_URL_LENGTH:
        raise _refuse(field, f"the URL is longer than {ev.MAX_URL_LENGTH} characters once normalised")
    return ev.UrlRef(original=original, normalized=normalized, host=host.strip("[]"))


def _normalize_split_url(original: str, text: str, field: str) -> ev.UrlRef:
    """``normalize_url`` of any URL through ``urllib.parse`` (``text``: stripped, checked, with a scheme)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _refuse(field, "the URL is not valid (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise _refuse(field, f"the URL scheme {scheme!r} is not accepted; use http, https or ftp")
    hostname = parts.hostname or ""
    if parts.netloc.rsplit("@", 1)[-1].startswith("["):
        hostname = f"[{hostname}]"
    host = normalize_host(hostname, field)
    if port == 0:
        raise _refuse(field, "the URL's port 0 is not a usable port")
    netloc = host  # user:password@ is dropped (the original keeps it)
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    normalized = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    if len(normalized) > ev.MAX_URL_LENGTH:
        raise _refuse(field, f"the URL is longer than {ev.MAX_URL_LENGTH} characters once normalised")
    return ev.UrlRef(original=original, normalized=normalized, host=host.strip("[]"))


def normalize_ip(raw: str, field: str = "ip") -> str:
    try:
        return ipaddress.ip_address(raw.strip()).compressed
    except (ValueError, AttributeError):
        raise _refuse(field, "not a valid IPv4 or IPv6 address") from None


def normalize_phone(raw: str, field: str = "phone", region: str = DEFAULT_REGION) -> str:
    """E.164 (``+14165550199``); a number without a country code is read in ``region``."""
    try:
        number = phonenumbers.parse(raw, region)
    except (phonenumbers.NumberParseException, TypeError):
        raise _refuse(field, "not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise _refuse(field, "not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str, field: str = "email") -> str:
    try:
        return str(validate_email(raw, check_deliverability=False).normalized)
    except (EmailNotValidError, TypeError):
        raise _refuse(field, "not a valid e-mail address") from None


def normalize_hash(h: ev.FileHash, field: str) -> ev.FileHash:
    value = h.value.strip().lower() if h.hash_type in _HASH_PATTERNS else h.value.strip()
    pattern = _HASH_PATTERNS.get(h.hash_type)
    if pattern is not None and not pattern.match(value):
        raise _refuse(field, f"not a valid {h.hash_type.value} hash (hexadecimal of the right length)")
    if not value or len(value) > 4096:
        raise _refuse(field, "the hash is empty or too long")
    if not value.isprintable():
        # A hash is printable text (hex, base64); a NUL could not even be stored with its link.
        raise _refuse(field, "the hash holds a control character")
    return ev.FileHash(hash_type=h.hash_type, value=value)


@lru_cache(maxsize=HOST_CACHE_SIZE)
def technology_of_host(host: str) -> ev.Technology:
    """Which technology a URL belongs to, by its host (a sub-domain counts as its parent)."""
    labels = host.split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate in SOCIAL_HOSTS:
            return ev.Technology.SOCIAL_MEDIA
        if candidate in CHAT_HOSTS:
            return ev.Technology.CHAT_IM
        if candidate in GAMING_HOSTS:
            return ev.Technology.ONLINE_GAMING
    return ev.Technology.WEB_PAGE


# --- Parsing a JSON report ------------------------------------------------------------------------


def json_depth(value: Any) -> int:
    """How deeply nested a parsed JSON value is (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            depth += 1
            stack.extend((v, depth) for v in item.values())
        elif isinstance(item, list):
            depth += 1
            stack.extend((v, depth) for v in item)
        deepest = max(deepest, depth)
    return deepest


def _is_encodable(text: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate (JSON ``\\ud800``): no UTF-8 form exists."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string_problem(text: str, path: str, owner: str) -> DomainError | None:
    if not _is_encodable(text):
        return _refuse(path, "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    if _DATA_URI.search(text):
        return _refuse(path, MEDIA_MESSAGE, "media_not_accepted")
    if owner not in _BASE64_EXEMPT and _BASE64_RUN.search(text):
        return _refuse(path, MEDIA_MESSAGE, "media_not_accepted")
    return None


def _text_is_clean(text: str, exempt: bool) -> bool:
    """``_string_problem`` without the error: True when it would find nothing (the common case, fast)."""
    if not text.isascii() and not _is_encodable(text):
        return False
    # Every data: URI has a colon, and most text has none: the regular expression runs on the rest.
    if ":" in text and _DATA_URI.search(text):
        return False
    return exempt or len(text) < MIN_BASE64_RUN or not _BASE64_RUN.search(text)


_SCALARS = frozenset({type(None), bool, int, float})


def _looks_clean(value: Any, depth: int, exempt: bool) -> bool:  # noqa: PLR0911, PLR0912 - unrolled: runs on every value of every report
    """True when ``scan_json`` would refuse nothing in ``value``: the same rules without building a path
    for every value. False sends the value through the reference walk, which names the field, or finds
    nothing (a key that is not a string, a subclass of str, dict or list: rare, and judged there)."""
    kind = type(value)
    if kind is str:
        return _text_is_clean(value, exempt)
    if kind is dict:
        if depth >= MAX_DEPTH:
            return False
        for key in value:
            if type(key) is not str or not key.isascii() or key.lower() in MEDIA_FIELDS:
                return False
        for key, item in value.items():
            kind = type(item)
            if kind is str:
                # Short ASCII text without a colon, most of what a report holds, is clean by every rule.
                if (len(item) >= MIN_BASE64_RUN or not item.isascii() or ":" in item) and not _text_is_clean(
                    item, key in _BASE64_EXEMPT
                ):
                    return False
            elif kind is dict or kind is list:
                if not _looks_clean(item, depth + 1, key in _BASE64_EXEMPT):
                    return False
            elif kind not in _SCALARS:
                return False
        return True
    if kind is list:
        if depth >= MAX_DEPTH:
            return False
        for item in value:
            kind = type(item)
            if kind is str:
                if (len(item) >= MIN_BASE64_RUN or not item.isascii() or ":" in item) and not _text_is_clean(
                    item, exempt
                ):
                    return False
            elif kind is dict or kind is list:
                if not _looks_clean(item, depth + 1, exempt):
                    return False
            elif kind not in _SCALARS:
                return False
        return True
    return kind in _SCALARS


def scan_json(value: Any) -> None:
    """Walk a parsed JSON value once, in document order, refusing the first of: a lone surrogate in a
    string or a key (the key's parent is named), nesting deeper than ``MAX_DEPTH``, a media field name,
    a ``data:`` URI anywhere inside a string, a run of ``MIN_BASE64_RUN`` base64 characters in text.

    Raises ``DomainError`` naming the field; no other check should see a value before this one did.
    """
    if _looks_clean(value, 0, False):
        return
    _scan_json_naming(value)


def _scan_json_naming(value: Any) -> None:
    """The reference walk of ``scan_json``: in document order, keeping each value's path to name it."""
    # (value, path, depth, owner): owner is the name of the field a value belongs to (a list's items
    # belong to the list's field), which exempts URLs and hash values from the base64 rule.
    stack: list[tuple[Any, str, int, str]] = [(value, "", 0, "")]
    while stack:
        item, path, depth, owner = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            raise _refuse("(body)", f"the JSON is nested more than {MAX_DEPTH} levels deep", "too_deep")
        if isinstance(item, dict):
            children: list[tuple[Any, str, int, str]] = []
            for k, v in item.items():
                key = str(k)
                if not _is_encodable(key):
                    raise _refuse(
                        path or "(body)",
                        "has a field name holding a lone UTF-16 surrogate, which is not text",
                    )
                p = _key_path(path, key)
                if key.lower() in MEDIA_FIELDS:
                    raise _refuse(p, MEDIA_MESSAGE, "media_not_accepted")
                children.append((v, p, depth + 1, key))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(v, f"{path}[{i}]", depth + 1, owner) for i, v in enumerate(item)]))
        elif isinstance(item, str):
            problem = _string_problem(item, path or "(body)", owner)
            if problem is not None:
                raise problem


def _type_name(hint: Any) -> str:  # noqa: PLR0911 - one sentence per type
    if hint is str:
        return "a string"
    if hint is int:
        return "a whole number"
    if hint is bool:
        return "true or false"
    if hint is datetime:
        return "an ISO 8601 time with a timezone"
    if hint is date:
        return "an ISO 8601 date"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(m.value for m in hint)
    return "an object"


def _parse_time(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise _refuse(path, f"must be {_type_name(datetime)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _refuse(path, f"must be {_type_name(datetime)}") from None
    if parsed.tzinfo is None:
        raise _refuse(path, "the time needs a timezone (e.g. 2026-01-31T20:00:00Z)")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        utc = None  # 9999-12-31T23:00:00-05:00 is in year 10000 in UTC: no event can carry it.
    if utc is None or not serde.TIME_MIN <= utc <= serde.TIME_MAX:
        raise _refuse(path, "the time is outside 0001-01-02 to 9999-12-30 (UTC)")
    return parsed


_Converter = Callable[[Any, str], Any]
"""``(json_value, path) -> field value``: made once per type (``_converter``), raises DomainError."""


def _convert(hint: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    """A JSON value as a field of type ``hint`` (``meta``: the field's limits). Raises DomainError."""
    return _converter(hint, _meta_key(meta))(value, path)


def _meta_key(meta: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(meta.items()))


@cache
def _converter(hint: Any, meta: tuple[tuple[str, Any], ...]) -> _Converter:  # noqa: PLR0911 - one case per JSON type
    """The conversion of one field type, decided once: a report is converted by calling these closures,
    never by inspecting types again (``typing.get_origin`` and friends cost more than the checks)."""
    limits = dict(meta)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _optional(_converter(inner, meta))
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        item_meta = (("max_length", limits["max_item_length"]),) if "max_item_length" in limits else ()
        text_limit = dict(item_meta).get("max_length", MAX_TEXT) if item_hint is str else None
        return _many(_converter(item_hint, item_meta), limits.get("max_items", MAX_ITEMS), text_limit)
    if dataclasses.is_dataclass(hint):
        return _record_converter(typing.cast(type, hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _choice(hint)
    if hint is bool:
        return _boolean
    if hint is int:
        return _whole_number
    if hint is str:
        return _text(limits.get("max_length", MAX_TEXT))
    if hint is datetime:
        return _parse_time
    if hint is date:
        return _parse_date
    raise TypeError(f"no JSON conversion for {hint!r}")  # a new field type must be handled here


def _optional(convert: _Converter) -> _Converter:
    def optional(value: Any, path: str) -> Any:
        return None if value is None else convert(value, path)

    return optional


def _many(convert_item: _Converter, limit: int, text_limit: int | None) -> _Converter:
    def many(value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _refuse(path, "must be a list")
        if len(value) > limit:
            raise _refuse(path, f"has more than {limit} items")
        if text_limit is not None and all(isinstance(v, str) and len(v) <= text_limit for v in value):
            return tuple(value)  # a list of short strings, the usual case: nothing to refuse
        return tuple(convert_item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return many


def _choice(cls: type[enum.Enum]) -> _Converter:
    expected = _type_name(cls)
    members = {m.value: m for m in cls}

    def choice(value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise _refuse(path, f"must be {expected}")
        key = value.strip().lower()
        member = members.get(key)
        if member is not None:
            return member
        try:
            return cls(key)
        except ValueError:
            raise _refuse(path, f"{value!r} is not {expected}") from None

    return choice


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _refuse(path, "must be true or false")
    return value


def _whole_number(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(path, "must be a whole number")
    return value


def _text(limit: int) -> _Converter:
    def text(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _refuse(path, "must be a string")
        if len(value) > limit:
            raise _refuse(path, f"is longer than {limit} characters", "too_long")
        return value

    return text


def _parse_date(value: Any, path: str) -> date:
    if not isinstance(value, str):
        raise _refuse(path, f"must be {_type_name(date)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _refuse(path, f"must be {_type_name(date)}") from None


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


@cache
def _record_converter(cls: type) -> _Converter:
    hints = _hints(cls)
    fields = _fields(cls)
    specs = [
        (
            name,
            _converter(hints[name], _meta_key(f.metadata)),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for name, f in fields.items()
    ]

    def record(data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            raise _refuse(path, "must be an object")
        for key in data:
            if key not in fields:
                raise _refuse(f"{path}.{key}", "is not a known field")
        kwargs: dict[str, Any] = {}
        for name, convert, required in specs:
            if name in data:
                kwargs[name] = convert(data[name], f"{path}.{name}")
            elif required:
                raise _refuse(f"{path}.{name}", "is required", "missing_field")
        return cls(**kwargs)

    return record


def build_record(cls: type, data: Any, path: str) -> Any:
    """A value record (Suspect, Victim, FileRef...) from a JSON object; unknown fields are refused."""
    return _record_converter(cls)(data, path)


CONTACT_FIELDS = ("name", "email", "phone", "preferred_language", "time_to_call")

_TOP_LEVEL: dict[str, str] = {
    # JSON name -> ReportSubmitted field
    "category": "reporter_category",
    "description": "description",
    "language": "language",
    "incident_time": "incident_time",
    "urls": "urls",
    "ip_addresses": "ip_addresses",
    "emails_reported": "emails_reported",
    "phones_reported": "phones_reported",
    "usernames_reported": "usernames_reported",
    "suspect": "suspect",
    "victim": "victim",
    "files": "files",
    "annotations": "annotations",
    "facts": "facts",
    "tech": "tech",
    "reporter_location": "reporter_location",
}
OTHER_FIELDS = ("submission_id", "anonymous", "contact", "intake_system")
KNOWN_FIELDS = frozenset((*_TOP_LEVEL, *OTHER_FIELDS))


@cache
def _top_level_converters() -> tuple[tuple[str, str, _Converter], ...]:
    hints = _hints(ev.ReportSubmitted)
    fields = _fields(ev.ReportSubmitted)
    return tuple(
        (json_name, name, _converter(hints[name], _meta_key(fields[name].metadata)))
        for json_name, name in _TOP_LEVEL.items()
    )


@dataclass(frozen=True, kw_only=True)
class ParsedReport:
    """A validated submission: the event's fields, and the contact still in clear (to be encrypted)."""

    submission_id: str
    report_id: str
    fields: Mapping[str, Any]
    anonymous: bool
    contact: Mapping[str, str] | None
    intake_system: str | None


def _parse_contact(value: Any) -> dict[str, str] | None:  # noqa: PLR0912 - one check per contact field
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _refuse(
            "contact", "must be an object with name, email, phone, preferred_language, time_to_call"
        )
    contact: dict[str, str] = {}
    for key, raw in value.items():
        p = f"contact.{key}"
        if key not in CONTACT_FIELDS:
            raise _refuse(p, "is not a known field")
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise _refuse(p, "must be a string")
        if len(raw) > MAX_TEXT:
            raise _refuse(p, f"is longer than {MAX_TEXT} characters", "too_long")
        text = raw.strip()
        if not text:
            continue
        if key == "email":
            text = normalize_email(text, p)
        elif key == "phone":
            text = normalize_phone(text, p)
        elif key == "preferred_language" and text.lower() not in {"en", "fr"}:
            raise _refuse(p, "must be en or fr")
        contact[key] = text
    if not contact:
        return None
    if not ("email" in contact or "phone" in contact):
        raise _refuse("contact", "a contact needs an e-mail address or a phone number to be of use")
    return contact


def _check_submission_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _refuse("submission_id", "must be a non-empty string (the client's id of this submission)")
    if len(value) > MAX_SUBMISSION_ID or not _SUBMISSION_ID.match(value):
        raise _refuse(
            "submission_id",
            f"use up to {MAX_SUBMISSION_ID} letters, digits, '.', '_', ':' or '-' (a UUID is best)",
        )
    return value


def parse_report(
    data: Any,
    *,
    new_submission_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    allow_intake_system: bool = True,
    now: datetime | None = None,
) -> ParsedReport:
    """Validate a JSON report (already parsed): the one function every way in shares.

    Raises ``DomainError`` naming the first offending field. The content is checked the way ingest
    will read it (URLs, IPs, phones and e-mail addresses must normalise), so a report accepted here is
    not rejected later for its content. ``allow_intake_system=False`` (the public web form) refuses an
    ``intake_system`` field: only a partner's ``pipeline.ingest.client`` may say which system it is.
    ``now`` (default: the clock) is when the report arrives: times more than ``MAX_AHEAD`` after it and
    a date of birth after its day are refused.
    """
    scan_json(data)
    if not isinstance(data, dict):
        raise _refuse("(body)", "the report must be a JSON object")
    for key in data:
        if key not in KNOWN_FIELDS:
            raise _refuse(str(key), "is not a known field")
    if not allow_intake_system and "intake_system" in data:
        raise _refuse("intake_system", "is set by a partner's intake client, never by the public web form")
    if "description" not in data or data["description"] is None:
        raise _refuse("description", "is required: say in a few words what you saw", "missing_field")
    fields: dict[str, Any] = {}
    for json_name, field_name, convert in _top_level_converters():
        value = data.get(json_name)
        if value is not None:
            fields[field_name] = convert(value, json_name)
    if not str(fields["description"]).strip():
        raise _refuse("description", "is empty: say in a few words what you saw", "missing_field")
    fields.setdefault("language", ev.Language.EN)
    raw_sid = data.get("submission_id")
    submission_id = new_submission_id() if raw_sid is None else _check_submission_id(raw_sid)
    contact = _parse_contact(data.get("contact"))
    anonymous_raw = data.get("anonymous")
    if anonymous_raw is not None and not isinstance(anonymous_raw, bool):
        raise _refuse("anonymous", "must be true or false")
    anonymous = contact is None if anonymous_raw is None else anonymous_raw
    if anonymous and contact is not None:
        raise _refuse("anonymous", "an anonymous report cannot carry contact details; drop one of them")
    intake_system = data.get("intake_system")
    if intake_system is not None:
        intake_system = _text(200)(intake_system, "intake_system")
    fields = _check_content(fields, now or datetime.now(UTC))
    return ParsedReport(
        submission_id=submission_id,
        report_id=report_id_for(submission_id),
        fields=fields,
        anonymous=anonymous,
        contact=contact,
        intake_system=intake_system,
    )


def _check_content(fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Province and country codes upper-cased and checked; URLs, IPs, phones, e-mails must normalise."""
    if "reporter_location" in fields:
        where = check_reporter_location(fields.pop("reporter_location"))
        if where is not None:
            fields["reporter_location"] = where
    for name in ("suspect", "victim"):
        person = fields.get(name)
        loc = getattr(person, "location", None)
        if person is not None and loc is not None:
            checked = check_person_location(loc, f"{name}.location")
            if checked != loc:  # codes given in lower case or with spaces
                fields[name] = dataclasses.replace(person, location=checked)
    probe = ev.ReportSubmitted(
        envelope=_PROBE_ENVELOPE,
        submission_id="probe",
        channel=ev.Channel.API,
        anonymous=True,
        submitted_at=now,
        **fields,
    )
    # Raises DomainError naming the field. The reporter's location, the only check of the split that is
    # not an address, was made above (and is idempotent).
    _normalise_addresses(probe, now)
    return fields


def _check_location(loc: ev.Location, path: str) -> ev.Location:
    province = loc.province.strip().upper() if loc.province else None
    country = loc.country.strip().upper() if loc.country else None
    if province is not None and province not in PROVINCES:
        raise _refuse(
            f"{path}.province", "must be a two-letter Canadian province or territory code (e.g. ON)"
        )
    if country is not None and country not in COUNTRY_CODES:
        raise _refuse(f"{path}.country", "must be a two-letter ISO 3166 country code (e.g. CA)")
    return ev.Location(province=province, country=country, city=loc.city)


def check_person_location(loc: ev.Location, path: str) -> ev.Location:
    """A victim's or suspect's location, codes upper-cased and checked (``path``: where it is, for the
    error). A province with a country other than CA is refused: the route step would follow the country
    and drop the province, and with it the province's police and child protection."""
    checked = _check_location(loc, path)
    if checked.province is not None and checked.country not in (None, DEFAULT_REGION):
        raise _refuse(
            f"{path}.country",
            f"province {checked.province} is in CA, not {checked.country}; drop one of them",
        )
    return checked


def check_reporter_location(loc: ev.Location | None) -> ev.Location | None:
    """The reporter's own location, codes upper-cased and checked; None when it says nothing.

    A province is one of the thirteen Canadian codes (``PROVINCES``, the list of
    ``pipeline/route/data/jurisdictions.csv``); a country is an ISO 3166 alpha-2 code; a province with a
    country other than CA contradicts itself. Raises ``DomainError`` naming ``reporter_location.<field>``.
    """
    if loc is None:
        return None
    where = _check_location(loc, "reporter_location")
    city = where.city.strip() if where.city else None
    where = ev.Location(province=where.province, country=where.country, city=city or None)
    if where.province is not None and where.country not in (None, DEFAULT_REGION):
        raise _refuse(
            "reporter_location.country",
            f"a reporter in province {where.province} is in CA, not {where.country}; drop one of them",
        )
    if where.province is None and where.country is None and where.city is None:
        return None
    return where


_PROBE_ENVELOPE = ev.Envelope(
    event_id="probe",
    event_type="ReportSubmitted",
    report_id="probe",
    occurred_at=datetime(2000, 1, 1, tzinfo=UTC),
    producer=PRODUCER_INTAKE,
    causation_id=None,
    correlation_id="probe",
    actor=ev.Actor(kind=ev.ActorKind.SYSTEM, id="probe"),
)


def to_submitted(
    parsed: ParsedReport,
    *,
    channel: ev.Channel,
    now: datetime,
    contact: ev.EncryptedContact | None,
    actor: ev.Actor | None = None,
) -> ev.ReportSubmitted:
    """The ``ReportSubmitted`` event of a validated report; ``contact`` is already encrypted."""
    if (contact is None) != (parsed.contact is None):
        raise ValueError("the contact must be encrypted exactly when the report carries one")
    if actor is None:
        actor = (
            ev.Actor(kind=ev.ActorKind.INTAKE_SYSTEM, id=parsed.intake_system)
            if parsed.intake_system
            else ev.Actor(
                kind=ev.ActorKind.REPORTER, id="anonymous" if parsed.anonymous else parsed.report_id
            )
        )
    envelope = ev.Envelope.first(
        submission_id=parsed.submission_id,
        event_type="ReportSubmitted",
        report_id=parsed.report_id,
        producer=PRODUCER_INTAKE,
        actor=actor,
        occurred_at=now,
    )
    return ev.ReportSubmitted(
        envelope=envelope,
        submission_id=parsed.submission_id,
        channel=channel,
        intake_system=parsed.intake_system,
        anonymous=parsed.anonymous,
        contact=contact,
        submitted_at=now,
        **parsed.fields,
    )


def check_submitted(event: ev.ReportSubmitted) -> None:
    """The structural rules of a ``ReportSubmitted`` from any producer. Raises DomainError."""
    if event.envelope.event_type != "ReportSubmitted":
        raise _refuse("envelope.event_type", "must be ReportSubmitted", "wrong_event_type")
    _check_submission_id(event.submission_id)
    if event.envelope.report_id != report_id_for(event.submission_id):
        raise _refuse(
            "envelope.report_id",
            "must be derived from the submission id (pipeline.ingest.logic.report_id_for)",
            "report_id_mismatch",
        )
    if event.anonymous and event.contact is not None:
        raise _refuse("anonymous", "an anonymous report cannot carry contact details")
    if event.contact is not None and event.contact.key_id != event.envelope.report_id:
        raise _refuse("contact.key_id", "must be the report id (the contact's data key is kept per report)")
    if not event.description.strip():
        raise _refuse("description", "is empty", "missing_field")


# --- Receiving: normalise and split into incidents ------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Content:
    """A submission's normalised content: its incidents and what links it to other reports."""

    incidents: tuple[ev.Incident, ...]
    suspect: ev.Suspect | None
    link_keys: tuple[str, ...]
    reporter_location: ev.Location | None = None


def _dedupe(items: list[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def check_times_and_victim(event: ev.ReportSubmitted, reference: datetime) -> None:
    """Refuse what the later steps refuse or cannot use: a time more than ``MAX_AHEAD`` after
    ``reference`` (when the report arrived), an impossible age, a date of birth after the day of
    ``reference`` or more than ``MAX_VICTIM_AGE`` years before it, an age and a date of birth more than a
    year apart (the prioritize step's ``validate`` dead-letters the first ones). Raises DomainError.
    """
    latest = reference + MAX_AHEAD
    if event.incident_time is not None and event.incident_time > latest:
        raise _refuse("incident_time", "the time is in the future")
    if event.suspect is not None:
        for i, ip_event in enumerate(event.suspect.ip_events):
            if ip_event.at is not None and ip_event.at > latest:
                raise _refuse(f"suspect.ip_events[{i}].at", "the time is in the future")
    victim = event.victim
    if victim is None:
        return
    if victim.age is not None and not 0 <= victim.age <= MAX_VICTIM_AGE:
        raise _refuse("victim.age", f"must be an age in years from 0 to {MAX_VICTIM_AGE}")
    born = victim.date_of_birth
    if born is None:
        return
    today = reference.astimezone(UTC).date()
    if born > today:
        raise _refuse("victim.date_of_birth", "the date of birth is in the future")
    years = _age_on(born, today)
    if years > MAX_VICTIM_AGE:
        raise _refuse("victim.date_of_birth", f"the date of birth is more than {MAX_VICTIM_AGE} years ago")
    if victim.age is not None and abs(years - victim.age) > 1:
        raise _refuse(
            "victim.age", f"an age of {victim.age} does not agree with the date of birth (age {years})"
        )


@dataclass(slots=True)
class _Addresses:
    """A submission's addresses normalised (the part of ``normalized_content`` that can refuse a field)."""

    suspect: ev.Suspect | None
    urls: dict[ev.Technology, list[ev.UrlRef]]
    url_index: dict[str, ev.Technology]
    emails: list[str]
    phones: list[str]
    ips: list[str]
    usernames: list[str]
    files: list[tuple[ev.FileRef, ev.Technology | None]]


def _normalise_addresses(event: ev.ReportSubmitted, now: datetime | None) -> _Addresses:
    """Check the times and normalise every address, in field order. Raises DomainError naming the first
    invalid field. Intake (``parse_report``) stops here; ingest goes on to split into incidents."""
    check_times_and_victim(event, event.submitted_at if now is None else min(event.submitted_at, now))
    # Intake checked these already; an intake system publishing straight to the topic did not.
    for name, person in (("suspect", event.suspect), ("victim", event.victim)):
        if person is not None and person.location is not None:
            check_person_location(person.location, f"{name}.location")
    suspect = event.suspect
    urls: dict[ev.Technology, list[ev.UrlRef]] = {}
    url_index: dict[str, ev.Technology] = {}

    def add_url(raw: str, path: str) -> None:
        ref = normalize_url(raw, path)
        tech = technology_of_host(ref.host)
        if ref.normalized not in url_index:
            url_index[ref.normalized] = tech
            urls.setdefault(tech, []).append(ref)

    for i, raw in enumerate(event.urls):
        add_url(raw, f"urls[{i}]")
    emails = [normalize_email(e, f"emails_reported[{i}]") for i, e in enumerate(event.emails_reported)]
    phones = [normalize_phone(p, f"phones_reported[{i}]") for i, p in enumerate(event.phones_reported)]
    ips = [normalize_ip(a, f"ip_addresses[{i}]") for i, a in enumerate(event.ip_addresses)]
    usernames = [u.strip() for u in event.usernames_reported if u.strip()]
    if suspect is not None:
        for i, raw in enumerate(suspect.profile_urls):
            add_url(raw, f"suspect.profile_urls[{i}]")
        s_emails = tuple(normalize_email(e, f"suspect.emails[{i}]") for i, e in enumerate(suspect.emails))
        s_phones = tuple(normalize_phone(p, f"suspect.phones[{i}]") for i, p in enumerate(suspect.phones))
        s_ips = tuple(
            dataclasses.replace(e, ip=normalize_ip(e.ip, f"suspect.ip_events[{i}].ip"))
            for i, e in enumerate(suspect.ip_events)
        )
        suspect = dataclasses.replace(suspect, emails=s_emails, phones=s_phones, ip_events=s_ips)
        emails += s_emails
        phones += s_phones
        ips += [e.ip for e in s_ips]
        usernames += [u.strip() for u in suspect.usernames if u.strip()]

    files: list[tuple[ev.FileRef, ev.Technology | None]] = []
    for i, f in enumerate(event.files):
        hashes = tuple(normalize_hash(h, f"files[{i}].hashes[{j}]") for j, h in enumerate(f.hashes))
        seen = f.seen_at_url
        tech: ev.Technology | None = None
        if seen is not None:
            ref = normalize_url(seen, f"files[{i}].seen_at_url")
            seen = ref.normalized
            tech = url_index.get(ref.normalized)
            if tech is None:
                tech = technology_of_host(ref.host)
                url_index[ref.normalized] = tech
                urls.setdefault(tech, []).append(ref)
        files.append((ev.FileRef(file_name=f.file_name, hashes=hashes, seen_at_url=seen), tech))
    for tech, refs in urls.items():
        if len(refs) > ev.MAX_URLS:
            # Each list is capped on its own, but one technology's incident gathers them all.
            raise _refuse(
                "urls",
                f"the report names {len(refs):,} different {tech.value} URLs in urls, suspect.profile_urls "
                f"and files[].seen_at_url together; at most {ev.MAX_URLS} are taken",
            )
    return _Addresses(
        suspect=suspect,
        urls=urls,
        url_index=url_index,
        emails=emails,
        phones=phones,
        ips=ips,
        usernames=usernames,
        files=files,
    )


def normalized_content(event: ev.ReportSubmitted, now: datetime | None = None) -> Content:  # noqa: PLR0912 - the whole split in one readable pass
    """Normalise every address of a submission and split it into one incident per technology.

    ``now`` (when ingest receives it; default: the submission time) bounds the times and the date of
    birth, see ``check_times_and_victim``. Raises ``DomainError`` naming the first invalid field
    (``urls[1]``, ``suspect.phones[0]``, ``victim.date_of_birth``...).
    """
    found = _normalise_addresses(event, now)
    report_id = event.envelope.report_id
    suspect, urls, url_index, files = found.suspect, found.urls, found.url_index, found.files
    emails, phones, ips, usernames = found.emails, found.phones, found.ips, found.usernames
    tech_details = event.tech
    parts: dict[ev.Technology, dict[str, list[Any]]] = {}

    def part(tech: ev.Technology) -> dict[str, list[Any]]:
        return parts.setdefault(
            tech, {"urls": [], "emails": [], "phones": [], "usernames": [], "ips": [], "files": []}
        )

    for tech, refs in urls.items():
        part(tech)["urls"].extend(refs)
    if emails:
        part(ev.Technology.EMAIL)["emails"].extend(emails)
    if phones:
        part(ev.Technology.PHONE_SMS)["phones"].extend(phones)
    if tech_details is not None:
        if tech_details.chat_client or tech_details.chat_room:
            part(ev.Technology.CHAT_IM)
        if tech_details.game or tech_details.console:
            part(ev.Technology.ONLINE_GAMING)
        if tech_details.p2p_client or tech_details.p2p_file_names:
            part(ev.Technology.PEER_TO_PEER)
        if tech_details.physical_location and tech_details.physical_location.strip():
            part(ev.Technology.NON_INTERNET)
    if usernames:
        # A screen name belongs to the platform it was seen on; without one, to social media.
        for tech in (
            ev.Technology.SOCIAL_MEDIA,
            ev.Technology.CHAT_IM,
            ev.Technology.ONLINE_GAMING,
            ev.Technology.PEER_TO_PEER,
        ):
            if tech in parts:
                parts[tech]["usernames"].extend(usernames)
                break
        else:
            part(ev.Technology.SOCIAL_MEDIA)["usernames"].extend(usernames)
    if ips:
        # IP capture events are peer-to-peer evidence when there is a p2p incident, else the web page's.
        target = ev.Technology.PEER_TO_PEER if ev.Technology.PEER_TO_PEER in parts else ev.Technology.WEB_PAGE
        part(target)["ips"].extend(ips)
    for fref, seen_tech in files:
        owner = seen_tech
        if owner is None:
            owner = next(
                (t for t in (ev.Technology.PEER_TO_PEER, ev.Technology.WEB_PAGE) if t in parts),
                next(iter(parts), ev.Technology.WEB_PAGE),
            )
        part(owner)["files"].append(fref)
    if not parts:
        part(ev.Technology.NON_INTERNET)

    incidents = tuple(
        ev.Incident(
            incident_id=incident_id_for(report_id, tech),
            technology=tech,
            urls=tuple(p["urls"]),
            emails=_dedupe(p["emails"]),
            phones=_dedupe(p["phones"]),
            usernames=_dedupe(p["usernames"]),
            ip_addresses=_dedupe(p["ips"]),
            files=tuple(p["files"]),
        )
        for tech in ev.Technology
        if (p := parts.get(tech)) is not None
    )
    link_keys = [link_key("url", u) for u in url_index]
    for fref, _tech in files:
        link_keys += [link_key(f"hash:{h.hash_type.value}", h.value) for h in fref.hashes]
    return Content(
        incidents=incidents,
        suspect=suspect,
        link_keys=_dedupe(link_keys),
        reporter_location=check_reporter_location(event.reporter_location),
    )


LINK_KEY_MAX_BYTES = 1024
"""A link key longer than this is stored as its digest: the link tables' primary keys are B-tree indexes,
whose rows hold at most about 2,700 bytes (a URL of 3,000 characters failed every batch that held it)."""


def link_key(kind: str, value: str) -> str:
    """What links reports naming the same thing: ``kind:value`` (``url:https://a.example/x``,
    ``hash:sha256:...``), or ``kind~sha256:<hex of value>`` when that is over ``LINK_KEY_MAX_BYTES``."""
    key = f"{kind}:{value}"
    if len(key) <= LINK_KEY_MAX_BYTES // 4 or len(key.encode()) <= LINK_KEY_MAX_BYTES:
        return key
    return f"{kind}~sha256:{hashlib.sha256(value.encode()).hexdigest()}"


@dataclass(frozen=True, kw_only=True)
class Numbering:
    """What the ingest table holds about a report: its number, receipt time, and the link found."""

    report_number: str
    received_at: datetime
    linked_to: str | None
    reporters_count: int


def report_number(seq: int, received_at: datetime, prefix: str = "CT") -> str:
    """``CT-2026-000123``: the year of receipt and a sequence shared by all years (unique, never reused)."""
    return f"{prefix}-{received_at.year:04d}-{seq:06d}"


def received(event: ev.ReportSubmitted, content: Content, numbering: Numbering) -> ev.ReportReceived:
    """The ``ReportReceived`` of a submission: deterministic for the same inputs (a replay emits it again)."""
    envelope = ev.Envelope.follow(
        event.envelope,
        event_type="ReportReceived",
        producer=PRODUCER_INGEST,
        actor=ev.Actor(kind=ev.ActorKind.SYSTEM, id="ingest"),
        occurred_at=numbering.received_at,
    )
    victim = event.victim
    body = ev.ReportBody(
        report_number=numbering.report_number,
        channel=event.channel,
        language=event.language,
        received_at=numbering.received_at,
        reporter_category=event.reporter_category,
        description=event.description,
        incidents=content.incidents,
        suspect=content.suspect,
        victim=victim,
        annotations=event.annotations,
        facts=event.facts,
        tech=event.tech,
        anonymous=event.anonymous,
        contact=event.contact,
        linked_to=numbering.linked_to,
        reporters_count=numbering.reporters_count,
        reporter_location=content.reporter_location,
    )
    return ev.ReportReceived(envelope=envelope, body=body, submission_id=event.submission_id)


def rejected(
    event: ev.ReportSubmitted,
    *,
    reason_code: str,
    message: str,
    field: str | None,
    now: datetime,
    discriminator: str,
    duplicate_of: str | None = None,
) -> ev.ReportRejected:
    """A ``ReportRejected``; ``discriminator`` (a digest of the submission) keeps its id deterministic."""
    envelope = ev.Envelope.follow(
        event.envelope,
        event_type="ReportRejected",
        producer=PRODUCER_INGEST,
        actor=ev.Actor(kind=ev.ActorKind.SYSTEM, id="ingest"),
        occurred_at=now,
        discriminator=discriminator,
    )
    return ev.ReportRejected(
        envelope=envelope,
        submission_id=event.submission_id,
        reason_code=reason_code,
        field=field,
        message=message,
        duplicate_of=duplicate_of,
    )
