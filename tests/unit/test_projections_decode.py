"""projections.decode: the generated readers give the very facts serde and the model give, refuse what
serde refuses (with serde's reason), and read every schema version in schemas/."""

from __future__ import annotations

import copy
import dataclasses
import io
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import events as ev
from pipeline import schema_registry, serde
from pipeline.errors import SerdeError
from projections import decode, model, samples
from tests.unit.strategies import st_any_event, st_event

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_serde import typical_report_classified

EVENT_CLASSES = list(ev.EVENT_TYPES.values())
OLD_FILES = [f for f in schema_registry.registry() if f.version != ev.SCHEMA_VERSIONS[f.event_name]]


def _reference(data: bytes) -> tuple[Any, ...]:
    """What serde and the model make of the bytes: the fact, or serde's refusal."""
    try:
        return ("fact", model.fact(serde.decode(data)))
    except SerdeError as exc:
        return ("refused", exc.reason, str(exc))


def _projected(data: bytes) -> tuple[Any, ...]:
    """What the projector makes of the bytes (the generated reader, serde where it declines)."""
    facts, rejected = decode.reader().facts([(data, "topic", 0, 7)])
    if rejected:
        ((topic, partition, offset, reason, message),) = rejected
        assert (topic, partition, offset) == ("topic", 0, 7)
        return ("refused", reason, message)
    (fact,) = facts
    return ("fact", fact)


def _current(name: str) -> schema_registry.SchemaFile:
    return next(
        f
        for f in schema_registry.registry()
        if f.event_name == name and f.version == ev.SCHEMA_VERSIONS[name]
    )


def _write(schema_file: schema_registry.SchemaFile, record: dict[str, Any], schema: Any = None) -> bytes:
    """A record written as another producer might: straight through fastavro, with ``schema_file``'s
    fingerprint, the record as given (serde's checks skipped) and, if given, a doctored ``schema``."""
    parsed = fastavro.parse_schema(serde._strip_logical(schema or schema_file.raw), named_schemas={})
    buf = io.BytesIO()
    buf.write(serde.MAGIC + schema_file.fingerprint)
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def test_every_schema_version_gets_a_generated_reader() -> None:
    """No version in schemas/ is left to the slow path: each one has its generated reader."""
    reader = decode.Reader(schema_registry.registry())
    reader.prepare()
    assert reader.unsupported == {}
    assert set(reader.fast) == {f.fingerprint for f in schema_registry.registry()}


def test_every_event_type_has_a_selection_and_a_fact() -> None:
    """A new event type cannot be left out of the read model's decoding unnoticed."""
    assert set(decode.SELECTIONS) == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_event_gives_the_fact_the_model_gives(cls: type, data: st.DataObject) -> None:
    """Whatever a valid event holds, the projector's fact is the model's fact of the decoded event."""
    event = data.draw(st_event(cls))
    raw = serde.encode(event)
    assert _projected(raw) == _reference(raw) == ("fact", model.fact(event))
    fast = decode.reader().fast_fact(raw)
    assert fast is None or fast == model.fact(event)


def test_typical_events_take_the_generated_reader() -> None:
    """The events of whole reports (and a typical web report) never need serde: the fast path is used."""
    rng = random.Random(3)
    events = [e for i in range(150) for e in samples.lifecycle(i, rng)] + [typical_report_classified()]
    for event in events:
        assert decode.reader().fast_fact(serde.encode(event)) == model.fact(event), type(event).__name__


@pytest.mark.parametrize("old", OLD_FILES, ids=lambda f: f"{f.event_name}.v{f.version}")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_old_schema_versions_read_as_serde_reads_them(
    old: schema_registry.SchemaFile, data: st.DataObject
) -> None:
    """An event written with an older schema gives the fact serde gives (new fields take their defaults)."""
    event = data.draw(st_event(ev.EVENT_TYPES[old.event_name]))
    raw = _write(old, serde.to_avro_dict(event))
    reference = _reference(raw)
    assert reference[0] == "fact"
    assert _projected(raw) == reference
    assert decode.reader().fast_fact(raw) == reference[1]


def _mutations(raw: bytes, rng: random.Random) -> list[bytes]:
    out = [raw[:n] for n in range(len(raw))]  # every truncation
    out += [raw + b"\x00", raw + b"\x02\x02"]
    for i in range(2, len(raw)):
        for value in (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, raw[i] ^ 0x01, rng.randrange(256)):
            if value != raw[i]:
                out.append(raw[:i] + bytes([value]) + raw[i + 1 :])
    for _ in range(200):
        i = rng.randrange(2, len(raw))
        out.append(raw[:i] + raw[i + 1 :])
        out.append(raw[:i] + bytes([rng.randrange(256)]) + raw[i:])
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: samples.lifecycle(1, rng)[0],
        lambda rng: samples.lifecycle(2, rng)[1],
        lambda rng: samples.lifecycle(3, rng)[2],
        lambda rng: samples.lifecycle(4, rng)[3],
        lambda rng: next(e for e in samples.lifecycle(5, rng) if isinstance(e, ev.ReportReferred)),
        lambda rng: samples.lifecycle(6, rng)[-1],
        lambda _rng: typical_report_classified(),
    ],
    ids=["received", "prioritized", "classified", "assessed", "referred", "closed", "typical-classified"],
)
def test_damaged_records_are_refused_or_read_exactly_as_serde_does(
    make: Callable[[random.Random], ev.Event],
) -> None:
    """Every truncation and thousands of changed, dropped or added bytes: the projector refuses a record
    with serde's reason and message, or reads the very fact serde and the model read."""
    rng = random.Random(11)
    raw = serde.encode(make(rng))
    mutated = _mutations(raw, rng)
    assert len(mutated) > 1000
    for data in mutated:
        assert _projected(data) == _reference(data), data.hex()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=st_any_event(), data=st.data())
def test_any_damaged_event_is_refused_or_read_exactly_as_serde_does(
    event: ev.Event, data: st.DataObject
) -> None:
    """The same for any event and any damage: one byte changed, a slice cut out, or bytes added."""
    raw = serde.encode(event)
    at = data.draw(st.integers(0, len(raw) - 1))
    kind = data.draw(st.sampled_from(["change", "cut", "insert"]))
    if kind == "change":
        damaged = raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1 :]
    elif kind == "cut":
        damaged = raw[:at] + raw[at + data.draw(st.integers(1, 8)) :]
    else:
        damaged = raw[:at] + data.draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    assert _projected(damaged) == _reference(damaged)


def _field(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The field at ``path`` in a schema whose named types are defined at their first use."""
    fields = schema["fields"]
    for name in path[:-1]:
        fields = next(f for f in fields if f["name"] == name)["type"]["fields"]
    found: dict[str, Any] = next(f for f in fields if f["name"] == path[-1])
    return found


def _doctored(name: str, path: tuple[str, ...], avro_type: Any, value: Any, event: ev.Event) -> bytes:
    """``event`` written with the field at ``path`` holding ``value`` written as ``avro_type``: bytes no
    serde encoder would write (the layout is the field's own, so the real schema reads them)."""
    current = _current(name)
    schema = copy.deepcopy(current.raw)
    if avro_type is not None:
        field = _field(schema, path)
        field["type"] = avro_type
        field.pop("default", None)
    record = serde.to_avro_dict(event)
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return _write(current, record, schema)


def _prioritized() -> ev.ReportPrioritized:
    event = samples.lifecycle(9, random.Random(9))[1]
    assert isinstance(event, ev.ReportPrioritized)
    return event


def _classified() -> ev.ReportClassified:
    event = typical_report_classified()
    assert isinstance(event, ev.ReportClassified)
    return event


def _assessed() -> ev.ReportAssessed:
    event = samples.lifecycle(9, random.Random(9))[3]
    assert isinstance(event, ev.ReportAssessed)
    return event


DOCTORED: list[tuple[str, Callable[[], bytes], str | None]] = [
    (
        "a description over the limit, in a body the read model skips",
        lambda: _doctored("ReportPrioritized", ("body", "description"), None, "a" * 20_001, _prioritized()),
        "too_long",
    ),
    (
        "a description within the limit in characters, over it in bytes",
        lambda: _doctored("ReportPrioritized", ("body", "description"), None, "é" * 12_000, _prioritized()),
        None,
    ),
    (
        "invalid UTF-8 in a skipped string",
        lambda: _doctored("ReportPrioritized", ("body", "description"), "bytes", b"\xff\xfe", _prioritized()),
        "corrupt",
    ),
    (
        "a skipped time no datetime can hold",
        lambda: _doctored("ReportPrioritized", ("body", "received_at"), None, 2**62, _prioritized()),
        "out_of_range",
    ),
    (
        "a kept time no datetime can hold",
        lambda: _doctored("ReportPrioritized", ("envelope", "occurred_at"), None, -(2**61), _prioritized()),
        "out_of_range",
    ),
    (
        "a boolean written as 2 (fastavro reads true)",
        lambda: _doctored("ReportClassified", ("needs_analyst_review",), "int", 1, _classified()),
        None,
    ),
    (
        "an enum index written negative (fastavro counts from the end)",
        lambda: _doctored("ReportAssessed", ("determination",), "int", -1, _assessed()),
        None,
    ),
    (
        "a union index beyond its branches",
        lambda: _doctored("ReportClassified", ("supersedes",), "int", 2, _classified()),
        "corrupt",
    ),
    (
        "more URLs than allowed in a skipped incident",
        lambda: _doctored(
            "ReportPrioritized",
            ("body", "incidents"),
            None,
            [
                {
                    **serde.to_avro_dict(_prioritized())["body"]["incidents"][0],
                    "urls": [
                        {"original": "https://a.example/", "normalized": "https://a.example/", "host": "a"}
                    ]
                    * (ev.MAX_URLS + 1),
                }
            ],
            _prioritized(),
        ),
        "too_many",
    ),
]


@pytest.mark.parametrize(("label", "make", "reason"), DOCTORED, ids=[c[0] for c in DOCTORED])
def test_records_other_producers_might_write_are_judged_as_serde_judges_them(
    label: str, make: Callable[[], bytes], reason: str | None
) -> None:
    """Values serde's encoder never writes: refused with serde's reason, or read as serde reads them."""
    data = make()
    reference = _reference(data)
    assert reference[0] == ("fact" if reason is None else "refused"), label
    if reason is not None:
        assert reference[1] == reason, label
    assert decode.reader().fast_fact(data) is None, label  # the generated reader leaves these to serde
    assert _projected(data) == reference, label


def test_a_body_cut_short_is_never_taken_for_one_already_checked() -> None:
    """A received report whose body runs past the end of its record is refused, and the truncated body
    it leaves behind does not pass later as a body already checked."""
    rng = random.Random(21)
    received, prioritized = samples.lifecycle(21, rng)[:2]
    assert isinstance(received, ev.ReportReceived)
    assert isinstance(prioritized, ev.ReportPrioritized)
    # The body ends with the reporter's city: its bytes close the body.
    body = dataclasses.replace(
        received.body, reporter_location=ev.Location(province="ON", country="CA", city="Ottawa")
    )
    received = dataclasses.replace(received, body=body, submission_id="")
    prioritized = dataclasses.replace(prioritized, body=body)
    raw_received = serde.encode(received)
    raw_prioritized = serde.encode(prioritized)
    # The received record without its last bytes: the body's last string claims bytes that are not there.
    cut_received = raw_received[:-3]
    # A prioritized record ending in the same cut body.
    cut_prioritized = raw_prioritized[:-2]
    assert _reference(cut_received)[0] == "refused"
    assert _reference(cut_prioritized)[0] == "refused"
    for data in (cut_received, cut_prioritized, raw_received, cut_prioritized, raw_prioritized):
        assert _projected(data) == _reference(data)


def test_fold_rows_equals_the_model_fold() -> None:
    """Flat rows folded from facts are the model's rows, column for column, and merge like them."""
    rng = random.Random(5)
    events = [e for i in range(40) for e in samples.lifecycle(i, rng, steps=rng.choice((2, 4, 7)))]
    events += events[:30]
    rng.shuffle(events)
    rows, referrals = model.fold_rows(model.fact(e) for e in events)
    expected, expected_referrals = model.fold(events)
    assert {rid: _flat(row) for rid, row in expected.items()} == rows
    assert {k: model.referral_of(v) for k, v in referrals.items()} == expected_referrals
    halves: dict[str, list[Any]] = {}
    for part in (events[::2], events[1::2]):
        model.merge_rows(halves, model.fold_rows(model.fact(e) for e in part)[0])
    assert halves == rows


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st_any_event(), min_size=1, max_size=8), rnd=st.randoms())
def test_fold_rows_equals_the_model_fold_for_any_events(events: list[ev.Event], rnd: random.Random) -> None:
    """For any events, repeated and in any order, split in any two parts."""
    same_report = [
        _with_report(e, "CT-2026-000001") if rnd.random() < 0.7 else e for e in events + events[:2]
    ]
    rnd.shuffle(same_report)
    rows, _ = model.fold_rows(model.fact(e) for e in same_report)
    expected, _ = model.fold(same_report)
    assert {rid: _flat(row) for rid, row in expected.items()} == rows
    cut = rnd.randrange(len(same_report) + 1)
    merged: dict[str, list[Any]] = {}
    model.merge_rows(merged, model.fold_rows(model.fact(e) for e in same_report[:cut])[0])
    model.merge_rows(merged, model.fold_rows(model.fact(e) for e in same_report[cut:])[0])
    assert merged == rows


def _with_report(event: ev.Event, report_id: str) -> ev.Event:
    return dataclasses.replace(event, envelope=dataclasses.replace(event.envelope, report_id=report_id))


def _flat(row: model.ReportRow) -> list[Any]:
    out: list[Any] = [row.report_id, row.step]
    for g in model.GROUPS:
        gv = row.groups.get(g.name)
        out.extend(
            [None] * (3 + len(g.columns)) if gv is None else [gv.first_at, gv.at, gv.event_id, *gv.values]
        )
    return out


def test_a_refused_resubmission_is_read_as_such_by_both_paths() -> None:
    """ReportRejected(duplicate_submission) is the "resubmitted" group (no step) for the generated reader
    and the model alike; any other reason stays "rejected"."""
    env = ev.Envelope.first(
        submission_id="s-again",
        event_type="ReportRejected",
        report_id="3f1c7a52-0000-5000-8000-000000000001",
        producer="ingest/0.1.0",
        actor=samples.SYSTEM,
        occurred_at=samples.START,
    )
    for reason, group, values in (
        (ev.DUPLICATE_SUBMISSION, "resubmitted", ()),
        ("invalid_field", "rejected", ("invalid_field",)),
    ):
        event = ev.ReportRejected(envelope=env, submission_id="s-again", reason_code=reason, message="m")
        data = serde.encode(event)
        assert _projected(data) == _reference(data)
        fact = _projected(data)[1]
        assert (fact[1], fact[4]) == (group, values)
