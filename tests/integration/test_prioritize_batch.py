"""The prioritize stage's batch path against its record-by-record reference, on the real database and
broker: the same outputs and rows, raises and pending raises within a run, replays, refusals, and two
instances ranking a report and its linked duplicate at the same time."""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.db import connect
from pipeline.errors import DomainError, SerdeError
from pipeline.prioritize import stage
from pipeline.prioritize.logic import MemoryState, decide
from pipeline.runtime import Context, Item
from pipeline.settings import Settings
from pipeline.topics import PRIORITIZED, RECEIVED, dead_letter, name
from tests.integration.harness import CountingStage, StageThread, consume
from tests.unit.test_prioritize_rules import body, received

DLQ = dead_letter("prioritize")
NOW = datetime.now(UTC).replace(microsecond=0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEVELS: list[dict[str, Any]] = [
    {"victim": ev.Victim(name="A")},
    {"reporter_category": ev.Category.LURING, "facts": ev.Facts(ongoing=True)},
    {"reporter_category": ev.Category.CSAM},
    {"reporter_category": ev.Category.ONLINE_HARMS},
]


def _stream(seed: int, n: int) -> list[Any]:
    """Received reports of every level, many linking to another of the stream (before or after it, so
    raises and pending raises) or to a report never ranked, with second copies, a report received again
    under another event id, refused reports, rejections and an event of the wrong type mixed in."""
    rng = random.Random(seed)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    wrong_type = decide(received(body(**LEVELS[2], received_at=NOW)), MemoryState(), NOW)[0]
    out: list[Any] = []
    for i, rid in enumerate(ids):
        kw = dict(rng.choice(LEVELS))
        roll = rng.random()
        if roll < 0.4:
            kw["linked_to"] = ids[rng.randrange(max(1, i - 10), min(n, i + 10))]  # maybe itself: refused
        elif roll < 0.45:
            kw["linked_to"] = str(uuid.uuid4())
        if rng.random() < 0.04:
            kw["victim"] = ev.Victim(age=200)
        event = received(body(received_at=NOW + timedelta(seconds=i), **kw), report_id=rid)
        out.append(event)
        roll = rng.random()
        if roll < 0.08:
            out.append(rng.choice(out))
        elif roll < 0.12:
            out.append(received(body(received_at=NOW, **rng.choice(LEVELS)), report_id=rid))
        elif roll < 0.15:
            out.append(
                ev.ReportRejected(
                    envelope=dataclasses.replace(
                        event.envelope, event_id=str(uuid.uuid4()), event_type="ReportRejected"
                    ),
                    submission_id="s",
                    reason_code="invalid_field",
                    message="bad",
                )
            )
        elif roll < 0.17:
            out.append(wrong_type)
    windows = [out[i : i + 15] for i in range(0, len(out), 15)]
    for window in windows:
        rng.shuffle(window)  # links that arrive before the report they name
    return [e for w in windows for e in w]


def _runs(rng: random.Random, events: list[Any]) -> list[list[Any]]:
    runs, i = [], 0
    while i < len(events):
        size = rng.choice((1, 3, 8, 25, 60))
        runs.append(events[i : i + size])
        i += size
    return runs


def _ctx(settings: Settings, conn: Any) -> Context:
    return Context(settings, conn)


def _one_by_one(settings: Settings, conn: Any, events: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    with conn.transaction():
        for i, event in enumerate(events):
            ctx = _ctx(settings, conn)
            ctx.source = f"t:0:{i}"
            try:
                out.append(stage.handle(event, ctx))
            except (DomainError, SerdeError) as exc:
                out.append(exc)
    return out


def _batch(settings: Settings, conn: Any, events: Sequence[Any]) -> list[Any]:
    items = [Item(e, f"t:0:{i}") for i, e in enumerate(events)]
    with conn.transaction():
        return list(stage.handle_batch(items, _ctx(settings, conn)))


def _mask(event: ev.ReportPrioritized) -> ev.ReportPrioritized:
    return dataclasses.replace(event, envelope=dataclasses.replace(event.envelope, occurred_at=EPOCH))


def _masked(result: Any) -> Any:
    """A result without the times the rules stamp (the two ways run at different instants)."""
    if isinstance(result, DomainError | SerdeError):
        return (type(result).__name__, result.reason, result.field, str(result))
    return [(o.topic.name, _mask(o.event)) for o in result]


def _wire(result: Any) -> Any:
    """A result as the runner would produce it: the bytes, times included."""
    if isinstance(result, DomainError | SerdeError):
        return _masked(result)
    return [(o.topic.name, o.key, serde.encode(o.event)) for o in result]


def _tables(conn: Any) -> dict[str, list[Any]]:
    emitted = conn.execute(
        "SELECT event_id, report_id, cause_event_id, level, supersedes, payload FROM prioritize_emitted ORDER BY seq"
    ).fetchall()
    pending = conn.execute(
        "SELECT target_report_id, source_event_id, level, reasons FROM prioritize_pending_raise ORDER BY 1, 2"
    ).fetchall()
    return {
        "emitted": [(*row[:5], _mask(stage._decode(bytes(row[5])))) for row in emitted],
        "pending": pending,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_runs_give_what_one_by_one_gives(settings: Settings, seed: int) -> None:
    """Random runs of a mixed stream give, through handle_batch, the outputs and rows that handle gives
    record by record; a replayed run gives its first outputs again, byte for byte."""
    rng = random.Random(seed)
    events = _stream(seed, 150)
    one_settings = settings.with_suffix(f"{settings.topic_suffix}one")
    many_settings = settings.with_suffix(f"{settings.topic_suffix}many")
    one, many = connect(one_settings), connect(many_settings)
    try:
        for run in _runs(rng, events):
            expected = _one_by_one(one_settings, one, run)
            got = _batch(many_settings, many, run)
            assert [_masked(r) for r in got] == [_masked(r) for r in expected]
            if rng.random() < 0.3:  # the run again, as after a crash before the Kafka commit
                assert [_wire(r) for r in _batch(many_settings, many, run)] == [_wire(r) for r in got]
        assert _tables(many) == _tables(one)
        raised = many.execute(
            "SELECT count(*) FROM prioritize_emitted WHERE supersedes IS NOT NULL"
        ).fetchone()
        waited = many.execute("SELECT count(*) FROM prioritize_pending_raise").fetchone()
        assert raised is not None
        assert waited is not None
        assert raised[0] > 3, "the stream should raise earlier reports, or the test proves little"
        assert waited[0] > 3, "the stream should hold pending raises, or the test proves little"
    finally:
        one.close()
        many.close()


def test_pending_raises_of_one_level_are_taken_in_source_order(settings: Settings) -> None:
    """Several links of the same level recorded in one run, before the report they name: it takes the
    reasons of the first by source event id, as record by record."""
    target = str(uuid.uuid4())
    links = [
        received(body(**LEVELS[0], linked_to=target, received_at=NOW), report_id=str(uuid.uuid4()))
        for _ in range(6)
    ]
    early = received(body(**LEVELS[3], received_at=NOW), report_id=target)
    one_settings = settings.with_suffix(f"{settings.topic_suffix}one")
    many_settings = settings.with_suffix(f"{settings.topic_suffix}many")
    with connect(one_settings) as one, connect(many_settings) as many:
        expected = _one_by_one(one_settings, one, [*links, early])
        got = _batch(many_settings, many, [*links, early])
    assert [_masked(r) for r in got] == [_masked(r) for r in expected]
    first_source = min(link.envelope.event_id for link in links)
    [link_of_first] = [link for link in links if link.envelope.event_id == first_source]
    [own] = got[-1]
    assert own.event.level == 1
    assert own.event.reasons[0] == f"raised_by_linked_report:{link_of_first.envelope.report_id}"


def test_two_instances_ranking_linked_reports_at_once_never_miss_each_other(settings: Settings) -> None:
    """One connection ranks earlier reports while another ranks the more urgent reports linking to them,
    in runs, at the same time: every earlier report ends at the urgent level (raised, or ranked with the
    pending raise), and no run deadlocks."""
    count = 120
    earlier = [received(body(**LEVELS[2], received_at=NOW)) for _ in range(count)]
    later = [
        received(body(**LEVELS[0], linked_to=e.envelope.report_id, received_at=NOW + timedelta(1)))
        for e in reversed(earlier)
    ]
    errors: list[BaseException] = []

    def worker(events: list[ev.ReportReceived]) -> None:
        conn = connect(settings)
        try:
            for i in range(0, len(events), 10):
                _batch(settings, conn, events[i : i + 10])
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(events,)) for events in (earlier, later)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with connect(settings) as conn:
        levels = dict(
            conn.execute(
                "SELECT DISTINCT ON (report_id) report_id, level FROM prioritize_emitted"
                " WHERE report_id = ANY(%s) ORDER BY report_id, seq DESC",
                ([e.envelope.report_id for e in earlier],),
            ).fetchall()
        )
    assert len(levels) == count
    assert set(levels.values()) == {1}


def test_the_stage_through_handle_batch_emits_what_handle_emits(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """On the broker, the stage with its batch handler and with ``handle`` alone emit the same events on
    the same lanes (times apart) and dead-letter the same records, for the same input in the same order."""
    events = _stream(21, 150)
    memory, refused, emitted = MemoryState(), 0, 0
    for event in events:
        try:
            emitted += len(decide(event, memory, NOW))
        except DomainError:
            refused += 1
    outputs: dict[str, list[Any]] = {}
    dead: dict[str, list[Any]] = {}
    for mode in ("one", "many"):
        s = settings.with_suffix(f"{settings.topic_suffix}{mode}")
        kafka.ensure_topics(s, (RECEIVED, *PRIORITIZED, DLQ))
        prod = kafka.producer(s)
        for event in events:
            prod.produce(
                name(RECEIVED, s.topic_suffix),
                key=event.envelope.report_id.encode(),
                value=serde.encode(event),
                partition=0,
            )
        assert prod.flush(30) == 0
        full = stage.spec(s)
        counting = CountingStage(full)
        spec = dataclasses.replace(
            full, handle=counting.handle, handle_batch=counting.handle_batch if mode == "many" else None
        )
        with StageThread(spec, s):
            got = consume(s, PRIORITIZED, count=emitted, timeout=90, settle=1.0)
            dlq = consume(s, DLQ, count=refused, timeout=30, settle=0.5)
        # Across lanes and partitions the order of reading varies; compare as sorted lists.
        outputs[mode] = sorted(
            ((m.topic() or "").removesuffix(s.topic_suffix), repr(_mask(e)))
            for m, e in zip(got.messages, got.events, strict=True)
        )
        dead[mode] = sorted((m.key() or b"", dict(m.headers() or [])["dlq.reason"]) for m in dlq.messages)
        if mode == "many":
            assert counting.batches > 0
            assert counting.singles == 0, "the batch path failed and fell back to handle"
    assert outputs["many"] == outputs["one"]
    assert dead["many"] == dead["one"]
    assert len(outputs["one"]) == emitted
    assert len(dead["one"]) == refused
