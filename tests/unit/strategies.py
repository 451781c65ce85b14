"""Hypothesis strategies that build valid events, for any test of the pipeline to reuse.

``st_event(ReportClassified)`` draws a whole event; ``st_report_body()``, ``st_envelope(...)`` and
``st_value(SomeRecord)`` draw the parts. Strategies follow the dataclasses' type hints, so a field added
to an event is covered without editing this file; fields with domain rules (province and country codes,
URLs, E.164 phones, priority levels, size limits) get realistic values.

    from tests.unit.strategies import st_event
    @given(st_event(ReportReceived))
    def test_something(event): ...
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st

from pipeline import events as ev

T = TypeVar("T")

PROVINCES = ("AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT")
COUNTRIES = ("CA", "US", "NL", "GB", "DE", "FR", "RU", "BR", "JP", "AU")
SECTIONS = ("163.1(2)", "163.1(3)", "163.1(4)", "163.1(4.1)", "172.1", "171.1", "172.2", "162.1", "286.1(2)")
STAGE_PRODUCERS = ("intake/0.1.0", "ingest/0.1.0", "prioritize/0.1.0", "classify/0.1.0", "assess/0.1.0")

_EPOCH_START = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH_END = datetime(2099, 12, 31, tzinfo=UTC)


def st_time() -> st.SearchStrategy[datetime]:
    """A UTC datetime with millisecond precision (what Avro ``timestamp-millis`` keeps)."""
    span_ms = int((_EPOCH_END - _EPOCH_START).total_seconds() * 1000)
    return st.integers(0, span_ms).map(lambda ms: _EPOCH_START + timedelta(milliseconds=ms))


def st_uuid_text() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


def st_short_text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


def st_url() -> st.SearchStrategy[str]:
    host = st.from_regex(r"[a-z][a-z0-9-]{0,12}\.(com|ca|nl|ru|net)", fullmatch=True)
    path = st.from_regex(r"(/[A-Za-z0-9_.~-]{0,10}){0,3}", fullmatch=True)
    return st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(("http", "https")), host, path)


def st_url_ref() -> st.SearchStrategy[ev.UrlRef]:
    def make(url: str, upper: bool) -> ev.UrlRef:
        host = url.split("://", 1)[1].split("/", 1)[0]
        return ev.UrlRef(original=url.upper() if upper else url, normalized=url, host=host)

    return st.builds(make, st_url(), st.booleans())


def st_phone() -> st.SearchStrategy[str]:
    return st.from_regex(r"\+1[2-9][0-9]{9}", fullmatch=True)


def st_email() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|ca)", fullmatch=True)


def st_location() -> st.SearchStrategy[ev.Location]:
    return st.builds(
        ev.Location,
        province=st.none() | st.sampled_from(PROVINCES),
        country=st.none() | st.sampled_from(COUNTRIES),
        city=st.none() | st_short_text(20),
    )


def st_actor(kind: ev.ActorKind | None = None) -> st.SearchStrategy[ev.Actor]:
    kinds = st.just(kind) if kind is not None else st.sampled_from(ev.ActorKind)
    return st.builds(ev.Actor, kind=kinds, id=st.sampled_from(("ingest", "analyst:jdoe", "simulated:seed=7")))


def st_envelope(event_type: str = "ReportReceived") -> st.SearchStrategy[ev.Envelope]:
    """An envelope for an event of ``event_type`` (correlation and causation ids look like real ones)."""
    return st.builds(
        ev.Envelope,
        event_id=st_uuid_text(),
        event_type=st.just(event_type),
        report_id=st.from_regex(r"CT-20[0-9]{2}-[0-9]{6}", fullmatch=True),
        occurred_at=st_time(),
        producer=st.sampled_from(STAGE_PRODUCERS),
        causation_id=st.none() | st_uuid_text(),
        correlation_id=st_uuid_text(),
        actor=st_actor(),
    )


# Fields whose values follow a domain rule, by field name (any class) or by (class, field name).
_BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "urls": st.lists(st_url(), max_size=3).map(tuple),
    "profile_urls": st.lists(st_url(), max_size=2).map(tuple),
    "seen_at_url": st.none() | st_url(),
    "province": st.none() | st.sampled_from(PROVINCES),
    "country": st.none() | st.sampled_from(COUNTRIES),
    "hosting_countries": st.lists(st.sampled_from(COUNTRIES), max_size=3, unique=True).map(tuple),
    "phones": st.lists(st_phone(), max_size=2).map(tuple),
    "phones_reported": st.lists(st_phone(), max_size=2).map(tuple),
    "emails": st.lists(st_email(), max_size=2).map(tuple),
    "emails_reported": st.lists(st_email(), max_size=2).map(tuple),
    "sections": st.lists(st.sampled_from(SECTIONS), max_size=3, unique=True).map(tuple),
    "level": st.integers(1, 4),
    "arrival_seq": st.integers(0, 2**50),
    "age": st.none() | st.integers(0, 17),
    "reporters_count": st.integers(1, 5),
    "referrals": st.integers(0, 10),
    "domestic_police": st.integers(0, 3),
    "foreign_police": st.integers(0, 5),
    "description": st.text(max_size=200),
    "note": st.none() | st.text(max_size=200),
    "nonce": st.binary(min_size=12, max_size=12),
    "ciphertext": st.binary(min_size=1, max_size=64),
}
_BY_CLASS_FIELD: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (ev.Incident, "urls"): st.lists(st_url_ref(), max_size=3).map(tuple),
    (ev.Recipient, "jurisdiction"): st.sampled_from(PROVINCES + COUNTRIES),
}


def st_for(hint: Any) -> st.SearchStrategy[Any]:
    """A strategy for any type used in the events (follows the type hint)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | st_for(inner)
    if origin is tuple:
        return st.lists(st_for(typing.get_args(hint)[0]), max_size=2).map(tuple)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st_short_text(),
        int: st.integers(-(2**40), 2**40),
        bool: st.booleans(),
        bytes: st.binary(max_size=32),
        datetime: st_time(),
        date: st.dates(date(1990, 1, 1), date(2030, 12, 31)),
    }
    if hint in simple:
        return simple[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return st_value(hint)
    raise TypeError(f"no strategy for {hint!r}")


def st_value(cls: type[T], **overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """Any of the events' value records (``st_value(Suspect)``), with optional per-field overrides."""
    if cls is ev.Envelope and not overrides:
        return typing.cast(st.SearchStrategy[T], st_envelope())
    if cls is ev.UrlRef and not overrides:
        return typing.cast(st.SearchStrategy[T], st_url_ref())
    if cls is ev.Location and not overrides:
        return typing.cast(st.SearchStrategy[T], st_location())
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        elif (cls, f.name) in _BY_CLASS_FIELD:
            kwargs[f.name] = _BY_CLASS_FIELD[(cls, f.name)]
        elif f.name in _BY_NAME:
            kwargs[f.name] = _BY_NAME[f.name]
        else:
            kwargs[f.name] = st.deferred(lambda h=hints[f.name]: st_for(h))
    return st.builds(cls, **kwargs)


def st_report_body(**overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[ev.ReportBody]:
    """A received report's body (1 to 3 incidents), e.g. ``st_report_body(anonymous=st.just(True))``."""
    defaults: dict[str, st.SearchStrategy[Any]] = {
        "incidents": st.lists(st_value(ev.Incident), min_size=1, max_size=3).map(tuple),
        "report_number": st.from_regex(r"CT-20[0-9]{2}-[0-9]{6}", fullmatch=True),
    }
    return st_value(ev.ReportBody, **{**defaults, **overrides})


def st_event(cls: type[T], **overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """A valid event of type ``cls`` (its envelope's event_type matches), with per-field overrides."""
    name = cls.__name__
    if name not in ev.EVENT_TYPES:
        raise TypeError(f"{name} is not an event type")
    defaults: dict[str, st.SearchStrategy[Any]] = {"envelope": st_envelope(name)}
    field_names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "body" in field_names:
        defaults["body"] = st_report_body()
    return st_value(cls, **{**defaults, **overrides})


def st_any_event() -> st.SearchStrategy[ev.Event]:
    """An event of any type."""
    return st.one_of([st_event(cls) for cls in ev.EVENT_TYPES.values()])
