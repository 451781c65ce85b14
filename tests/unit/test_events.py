"""The event classes: immutable, keyword-only, tuples and StrEnums, envelopes with derived ids."""

from __future__ import annotations

import csv
import dataclasses
import enum
import types
import typing
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import events as ev
from pipeline import topics

NOW = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
# shared/ sits beside the checkout (as it does beside CI's clone).
DOMAIN = Path(__file__).resolve().parents[3] / "shared" / "domain"


def _all_dataclasses() -> set[type]:
    seen: set[type] = set()

    def visit(hint: object) -> None:
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union, tuple):
            for arg in typing.get_args(hint):
                if arg is not Ellipsis:
                    visit(arg)
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint not in seen:
            seen.add(hint)
            for name, sub in typing.get_type_hints(hint).items():
                if name != "STAGE":
                    visit(sub)

    for cls in ev.EVENT_TYPES.values():
        visit(cls)
    return seen


ALL_RECORDS = sorted(_all_dataclasses(), key=lambda c: c.__name__)


def _hints(cls: type) -> dict[str, object]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def _flatten(hint: object) -> list[object]:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union, tuple, list, dict, set, frozenset):
        out: list[object] = [origin]
        for arg in typing.get_args(hint):
            out += _flatten(arg)
        return out
    return [hint]


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
def test_records_are_frozen_keyword_only_slotted(cls: type) -> None:
    """Every event and value record is a frozen, keyword-only dataclass with slots."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen
    assert all(f.kw_only for f in dataclasses.fields(cls))
    assert hasattr(cls, "__slots__")


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
def test_collections_are_tuples_and_enums_are_strenums(cls: type) -> None:
    """No field uses a mutable collection, and every enumeration is a StrEnum."""
    for name, hint in _hints(cls).items():
        parts = _flatten(hint)
        assert not {list, dict, set, frozenset} & set(parts), f"{cls.__name__}.{name}"
        for part in parts:
            if isinstance(part, type) and issubclass(part, enum.Enum):
                assert issubclass(part, enum.StrEnum), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("cls", list(ev.EVENT_TYPES.values()), ids=lambda c: c.__name__)
def test_every_event_starts_with_its_envelope(cls: type) -> None:
    """The first field of every event is its Envelope."""
    first = dataclasses.fields(cls)[0]
    assert first.name == "envelope"
    assert typing.get_type_hints(cls)["envelope"] is ev.Envelope


def test_event_types_match_the_topic_table() -> None:
    """Every event type is carried by some topic and every topic's events are known types."""
    carried = {name for spec in topics.EVENT_TOPICS for name in spec.events}
    assert carried == set(ev.EVENT_TYPES)
    assert set(typing.get_args(ev.Event)) == set(ev.EVENT_TYPES.values())


def test_categories_match_the_domain_table() -> None:
    """Category codes are exactly the codes of categories.csv."""
    path = DOMAIN / "categories.csv"
    if not path.exists():
        pytest.skip("the shared domain tables are not available here")
    with path.open() as fh:
        codes = {row["code"] for row in csv.DictReader(fh)}
    assert {c.value for c in ev.Category} == codes


def test_events_are_immutable() -> None:
    """Assigning to a field of an event raises."""
    actor = ev.Actor(kind=ev.ActorKind.SYSTEM, id="ingest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        actor.id = "other"  # type: ignore[misc]


def test_derive_event_id_is_deterministic_and_distinct() -> None:
    """The same causation, kind and parts give the same UUID; any difference gives another."""
    a = ev.derive_event_id("cause-1", "ReportReferred", "RCMP")
    assert a == ev.derive_event_id("cause-1", "ReportReferred", "RCMP")
    assert uuid.UUID(a).version == 5
    others = {
        ev.derive_event_id("cause-2", "ReportReferred", "RCMP"),
        ev.derive_event_id("cause-1", "ReportClosed", "RCMP"),
        ev.derive_event_id("cause-1", "ReportReferred", "OPP"),
        ev.derive_event_id("cause-1", "ReportReferred", "RC", "MP"),
    }
    assert a not in others
    assert len(others) == 4


def test_follow_carries_report_and_correlation_and_sets_causation() -> None:
    """Envelope.follow keeps report and correlation ids, points causation at the cause, derives the id."""
    reporter = ev.Actor(kind=ev.ActorKind.REPORTER, id="web")
    first = ev.Envelope.first(
        submission_id="sub-1",
        event_type="ReportSubmitted",
        report_id="CT-1",
        producer="intake/0.1.0",
        actor=reporter,
        occurred_at=NOW,
    )
    assert first.correlation_id == first.event_id
    assert first.causation_id is None
    system = ev.Actor(kind=ev.ActorKind.SYSTEM, id="ingest")
    nxt = ev.Envelope.follow(
        first, event_type="ReportReceived", producer="ingest/0.1.0", actor=system, occurred_at=NOW
    )
    assert nxt.report_id == "CT-1"
    assert nxt.correlation_id == first.event_id
    assert nxt.causation_id == first.event_id
    assert nxt.event_id == ev.derive_event_id(first.event_id, "ReportReceived", "")
    again = ev.Envelope.follow(
        first, event_type="ReportReceived", producer="ingest/0.1.0", actor=system, occurred_at=NOW
    )
    assert again == nxt
    other = ev.Envelope.follow(
        first,
        event_type="ReportReceived",
        producer="ingest/0.1.0",
        actor=system,
        occurred_at=NOW,
        discriminator="x",
    )
    assert other.event_id != nxt.event_id


def test_schema_versions_cover_every_event() -> None:
    """Each event type has a current schema version of at least 1."""
    assert set(ev.SCHEMA_VERSIONS) == set(ev.EVENT_TYPES)
    assert all(v >= 1 for v in ev.SCHEMA_VERSIONS.values())
