"""serde: every event round-trips, other Avro implementations agree, malformed input fails clearly."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import events as ev
from pipeline import schema_registry, serde
from pipeline.errors import SerdeError
from tests.unit.strategies import st_event

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_serde import typical_report_classified

EVENT_CLASSES = list(ev.EVENT_TYPES.values())


def _current(cls: type) -> schema_registry.SchemaFile:
    version = ev.SCHEMA_VERSIONS[cls.__name__]
    return next(
        f for f in schema_registry.registry() if f.event_name == cls.__name__ and f.version == version
    )


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_round_trips(cls: type, data: st.DataObject) -> None:
    """decode(encode(event)) gives back an equal event, and the bytes name its type and schema."""
    event = data.draw(st_event(cls))
    raw = serde.encode(event)
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == _current(cls).fingerprint
    assert serde.event_type_of(raw) == cls.__name__
    assert serde.decode(raw) == event


def test_typical_event_round_trips_and_is_deterministic() -> None:
    """The same event always encodes to the same bytes (a redelivered input re-produces identical output)."""
    event = typical_report_classified()
    assert serde.encode(event) == serde.encode(event)
    assert serde.decode(serde.encode(event)) == event


def test_headers_name_type_id_and_fingerprint() -> None:
    """headers_for gives the event type, the event id and the schema fingerprint in hex."""
    event = typical_report_classified()
    headers = dict(serde.headers_for(event))
    assert headers == {
        "event_type": b"ReportClassified",
        "event_id": event.envelope.event_id.encode(),
        "schema_fingerprint": _current(ev.ReportClassified).fingerprint.hex().encode(),
    }


def test_decoded_times_are_utc_aware() -> None:
    """Times come back timezone-aware in UTC, whatever offset they were written with."""
    event = typical_report_classified()

    shifted = event.body.received_at.astimezone(timezone(timedelta(hours=-5)))
    body = dataclasses.replace(event.body, received_at=shifted)
    back = serde.decode(serde.encode(dataclasses.replace(event, body=body)))
    assert isinstance(back, ev.ReportClassified)
    assert back.body.received_at.tzinfo == UTC
    assert back.body.received_at == shifted


# --- Cross-implementation ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_official_avro_reads_our_bytes(cls: type, data: st.DataObject) -> None:
    """The Apache avro package decodes our body with the .avsc file alone, to the same record as fastavro."""
    event = data.draw(st_event(cls))
    raw = serde.encode(event)
    schema_file = _current(cls)
    reader = avro.io.DatumReader(avro.schema.parse(schema_file.path.read_text()))
    theirs = reader.read(avro.io.BinaryDecoder(io.BytesIO(raw[10:])))
    ours = fastavro.schemaless_reader(io.BytesIO(raw[10:]), schema_file.parsed, None)
    assert theirs == ours


def test_our_decoder_reads_official_avro_bytes() -> None:
    """Bytes written by the Apache avro package, with the single-object header, decode to the same event."""
    event = typical_report_classified()
    schema_file = _current(ev.ReportClassified)
    record = fastavro.schemaless_reader(io.BytesIO(serde.encode(event)[10:]), schema_file.parsed, None)
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + schema_file.fingerprint)
    avro.io.DatumWriter(avro.schema.parse(schema_file.path.read_text())).write(
        record, avro.io.BinaryEncoder(buf)
    )
    assert serde.decode(buf.getvalue()) == event


@pytest.mark.parametrize("schema_file", schema_registry.registry(), ids=lambda f: f.path.name)
def test_fingerprints_agree_with_official_avro(schema_file: schema_registry.SchemaFile) -> None:
    """The Apache avro package computes the same CRC-64-AVRO fingerprint as ours.

    avro 1.12's canonical form keeps ``{"type": "long"}`` for logical types where the specification (and
    Java, and fastavro) reduce it to ``"long"``, so its fingerprint is compared on the schema without
    logical types, whose canonical form is the same by definition; the Rabin function is compared on our
    canonical form directly.
    """
    assert avro.schema._crc_64_fingerprint(schema_file.canonical.encode()) == schema_file.fingerprint
    plain = avro.schema.parse(json.dumps(serde._strip_logical(schema_file.raw)))
    assert plain.fingerprint("CRC-64-AVRO") == schema_file.fingerprint


def test_fingerprint_matches_the_specification_vector() -> None:
    """The fingerprint of the schema "null" is the one given by the Avro specification."""
    fp = bytes.fromhex(fastavro.schema.fingerprint('"null"', "CRC-64-AVRO"))
    assert struct.unpack("<q", fp)[0] == 7195948357588979594


# --- Malformed input ------------------------------------------------------------------------------


def _encoded() -> bytes:
    return serde.encode(typical_report_classified())


BAD_BYTES: list[tuple[str, Callable[[bytes], Any], str]] = [
    ("no marker", lambda b: b"\x00\x01" + b[2:], "bad_marker"),
    ("empty", lambda b: b"", "bad_marker"),
    ("header only part", lambda b: b[:6], "truncated"),
    ("unknown fingerprint", lambda b: b[:2] + b"\x00" * 8 + b[10:], "unknown_fingerprint"),
    ("truncated body", lambda b: b[:-40], "truncated"),
    ("trailing bytes", lambda b: b + b"\x00", "trailing_bytes"),
    ("not bytes", lambda b: "text", "wrong_type"),
]


@pytest.mark.parametrize(("label", "mangle", "reason"), BAD_BYTES, ids=[c[0] for c in BAD_BYTES])
def test_malformed_bytes_raise_serde_error(label: str, mangle: Callable[[bytes], Any], reason: str) -> None:
    """Each kind of malformed input raises SerdeError with its short reason code."""
    with pytest.raises(SerdeError) as info:
        serde.decode(mangle(_encoded()))
    assert info.value.reason == reason, label


def test_truncation_is_chained_from_the_library_error() -> None:
    """A truncated body's SerdeError is raised from fastavro's own error."""
    with pytest.raises(SerdeError) as info:
        serde.decode(_encoded()[:-40])
    assert info.value.__cause__ is not None


def _with_body(**changes: Any) -> ev.ReportClassified:
    event = typical_report_classified()
    return dataclasses.replace(event, body=dataclasses.replace(event.body, **changes))


def _incident_urls(n: int, length: int = 20) -> ev.ReportClassified:
    event = typical_report_classified()
    url = ev.UrlRef(
        original="https://a.ca/" + "x" * length, normalized="https://a.ca/" + "x" * length, host="a.ca"
    )
    incident = dataclasses.replace(event.body.incidents[0], urls=(url,) * n)
    return _with_body(incidents=(incident,))


BAD_EVENTS: list[tuple[str, Callable[[], Any], str, str | None]] = [
    ("description too long", lambda: _with_body(description="x" * 20_001), "too_long", "body.description"),
    ("too many urls", lambda: _incident_urls(501), "too_many", "body.incidents[0].urls"),
    ("url too long", lambda: _incident_urls(1, 8_193), "too_long", "body.incidents[0].urls[0].original"),
    ("str field holds an int", lambda: _with_body(description=5), "wrong_type", "body.description"),
    (
        "int field holds a str",
        lambda: dataclasses.replace(typical_report_classified(), level="1"),
        "wrong_type",
        "level",
    ),
    ("bool field holds a str", lambda: _with_body(anonymous="no"), "wrong_type", "body.anonymous"),
    ("enum field holds an unknown value", lambda: _with_body(channel="fax"), "wrong_type", "body.channel"),
    (
        "naive datetime",
        lambda: _with_body(received_at=datetime(2026, 1, 1)),
        "wrong_type",
        "body.received_at",
    ),
    (
        "mismatched envelope type",
        lambda: dataclasses.replace(
            typical_report_classified(),
            envelope=dataclasses.replace(typical_report_classified().envelope, event_type="ReportClosed"),
        ),
        "wrong_type",
        "envelope.event_type",
    ),
]


@pytest.mark.parametrize(("label", "make", "reason", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_invalid_events_raise_serde_error(
    label: str, make: Callable[[], Any], reason: str, field: str | None
) -> None:
    """Each invalid value raises SerdeError naming the reason and the dotted field."""
    with pytest.raises(SerdeError) as info:
        serde.encode(make())
    assert (info.value.reason, info.value.field) == (reason, field), label


def test_note_limit_is_enforced() -> None:
    """An analyst's note over 4,000 characters is refused."""
    base = typical_report_classified()
    event = ev.ReportAssessed(
        envelope=dataclasses.replace(base.envelope, event_type="ReportAssessed"),
        determination=ev.Determination.POTENTIALLY_ILLEGAL,
        child_may_need_protection=False,
        note="n" * 4_001,
        level=2,
        classification=base.incidents,
        body=base.body,
    )
    with pytest.raises(SerdeError) as info:
        serde.encode(event)
    assert (info.value.reason, info.value.field) == ("too_long", "note")


def test_limits_are_checked_on_decode_too() -> None:
    """Bytes from another producer that exceed a limit are refused on decode with the field named."""
    event = _with_body(description="ok")
    schema_file = _current(ev.ReportClassified)
    record = fastavro.schemaless_reader(io.BytesIO(serde.encode(event)[10:]), schema_file.parsed, None)
    record["body"]["description"] = "x" * 20_001
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + schema_file.fingerprint)
    fastavro.schemaless_writer(buf, schema_file.parsed, record)
    with pytest.raises(SerdeError) as info:
        serde.decode(buf.getvalue())
    assert (info.value.reason, info.value.field) == ("too_long", "body.description")


def test_non_event_is_refused() -> None:
    """Encoding something that is not an event raises SerdeError(unknown_event)."""
    with pytest.raises(SerdeError) as info:
        serde.encode(ev.Actor(kind=ev.ActorKind.SYSTEM, id="x"))  # type: ignore[arg-type]
    assert info.value.reason == "unknown_event"


def test_a_time_outside_utc_years_1_to_9999_is_refused_at_encode() -> None:
    """A time whose UTC value falls outside years 1-9999 could never be read back: encode refuses it."""
    event = typical_report_classified()
    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    bad = dataclasses.replace(event, envelope=dataclasses.replace(event.envelope, occurred_at=late))
    with pytest.raises(SerdeError) as err:
        serde.encode(bad)
    assert err.value.reason == "out_of_range"
    assert err.value.field is not None
    assert "occurred_at" in err.value.field


def test_a_timestamp_no_datetime_can_hold_is_a_serde_error_at_decode() -> None:
    """Bytes from another writer holding a timestamp past year 9999 decode to a SerdeError, not a crash."""
    event = typical_report_classified()
    record = serde.to_avro_dict(event)
    record["envelope"]["occurred_at"] = 2**62  # milliseconds: far past year 9999
    schema = _current(type(event))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(json.loads(schema.path.read_text())), record)
    data = serde.encode(event)[: serde.HEADER_LEN] + body.getvalue()
    with pytest.raises(SerdeError) as err:
        serde.decode(data)
    assert err.value.reason in {"out_of_range", "corrupt"}


BODY_CARRIERS = [c for c in EVENT_CLASSES if "body" in {f.name for f in dataclasses.fields(c)}]


def _fresh(event: Any) -> bytes:
    """The event's bytes written from scratch: a copy of its body that no decode has seen."""
    return serde.encode(dataclasses.replace(event, body=dataclasses.replace(event.body)))


@pytest.mark.parametrize("source", BODY_CARRIERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("target", BODY_CARRIERS, ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_decoded_body_handed_on_is_written_byte_for_byte_as_from_scratch(
    source: type, target: type, data: st.DataObject
) -> None:
    """A stage that hands a decoded body on to the event it emits gets the bytes a fresh encode gives."""
    decoded = serde.decode(serde.encode(data.draw(st_event(source))))
    emitted = data.draw(st_event(target))
    emitted = dataclasses.replace(emitted, body=decoded.body)  # type: ignore[attr-defined]
    assert serde.encode(emitted) == _fresh(emitted)
    assert serde.decode(serde.encode(emitted)) == emitted


def test_a_body_read_with_an_older_schema_is_written_from_scratch() -> None:
    """A v1 body decodes into the current version; its v1 bytes must never be copied into a v2 event."""
    event = typical_report_classified()
    old = _current(ev.ReportClassified)  # the current file, then its v1 sibling
    v1 = next(f for f in schema_registry.registry() if f.event_name == "ReportClassified" and f.version == 1)
    assert v1.version != old.version
    buf = io.BytesIO()
    buf.write(serde.MAGIC + v1.fingerprint)
    record = serde.to_avro_dict(event)
    record["body"].pop("reporter_location", None)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(serde._strip_logical(v1.raw)), record)
    decoded = serde.decode(buf.getvalue())
    assert serde.encode(decoded) == _fresh(decoded)


def test_an_event_decoded_from_its_current_schema_encodes_as_the_bytes_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoding a decoded event again (the ingest stage hashes submissions so) writes nothing and gives
    the same bytes; a changed copy is encoded anew; an older version's event is written in the current one."""
    data = serde.encode(typical_report_classified())
    decoded = serde.decode(data)

    def no_writing(*_: object) -> None:
        raise AssertionError("the decoded event was written again")

    with monkeypatch.context() as m:
        m.setattr(fastavro, "schemaless_writer", no_writing)
        assert serde.encode(decoded) == data
    changed = dataclasses.replace(decoded, level=1 if decoded.level != 1 else 2)  # type: ignore[attr-defined]
    assert serde.encode(changed) != data
    assert serde.decode(serde.encode(changed)) == changed

    v1 = next(f for f in schema_registry.registry() if f.event_name == "ReportClassified" and f.version == 1)
    buf = io.BytesIO()
    buf.write(serde.MAGIC + v1.fingerprint)
    record = serde.to_avro_dict(typical_report_classified())
    record["body"].pop("reporter_location", None)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(serde._strip_logical(v1.raw)), record)
    old = serde.decode(buf.getvalue())
    again = serde.encode(old)
    assert again[2:10] == serde.fingerprint_of(ev.ReportClassified) != v1.fingerprint
    assert serde.decode(again) == old


def test_a_changed_body_is_written_from_scratch() -> None:
    decoded = serde.decode(serde.encode(typical_report_classified()))
    assert isinstance(decoded, ev.ReportClassified)
    changed = dataclasses.replace(decoded, body=dataclasses.replace(decoded.body, description="other words"))
    assert serde.decode(serde.encode(changed)).body.description == "other words"  # type: ignore[attr-defined]


def test_body_bytes_table_keeps_the_most_recent_entries_only() -> None:
    table = serde._BodyBytes()
    objs = [object() for _ in range(table.LIMIT + 10)]
    for i, obj in enumerate(objs):
        table.put(obj, "k", str(i).encode())
    assert len(table._by_id) == table.LIMIT
    assert all(table.get(obj, "k") is None for obj in objs[:10])  # the oldest ten were dropped
    assert table.get(objs[10], "k") == b"10"
    assert table.get(objs[-1], "k") == str(len(objs) - 1).encode()
    assert table.get(objs[-1], "other-schema") is None  # only reused under the same body schema
    assert table.get(object(), "k") is None
