"""The ingest stage's batch path against its record-by-record reference, on the real database and broker:
the same outputs, the same rows, replays, refusals, and concurrent runs that share link keys."""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.db import connect
from pipeline.errors import DomainError, SerdeError
from pipeline.generator import generate_events
from pipeline.ingest import logic, stage
from pipeline.ingest.client import now_ms
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, dead_letter, name
from tests.integration.harness import CountingStage, StageThread, consume

DLQ = dead_letter("ingest")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _report(rng: random.Random, tag: str, i: int) -> ev.ReportSubmitted:
    """A report naming some of a few shared URLs and hashes (so reports link), and one URL of its own."""
    urls = [f"http://shared-{tag}-{n}.example.com/p" for n in rng.sample(range(5), rng.randint(0, 2))]
    if rng.random() < 0.7:
        urls.append(f"https://own-{tag}.example.org/{i}")
    hashes = [{"hash_type": "md5", "value": f"{n:032x}"} for n in rng.sample(range(3), rng.randint(0, 1))]
    body: dict[str, Any] = {"description": f"report {i}", "urls": urls}
    if hashes:
        body["files"] = [{"hashes": hashes}]
    return logic.to_submitted(logic.parse_report(body), channel=ev.Channel.API, now=now_ms(), contact=None)


def _stream(seed: int, n: int) -> list[Any]:
    """New reports (generated and made to link), with second copies, resubmissions, invalid content, forged
    report ids and events of the wrong type mixed in."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    fresh: list[ev.ReportSubmitted] = list(generate_events(n // 4, seed))
    fresh += [_report(rng, tag, i) for i in range(n - len(fresh))]
    rng.shuffle(fresh)
    out: list[Any] = []
    for event in fresh:
        out.append(event)
        roll = rng.random()
        if roll < 0.08:
            out.append(rng.choice(out))  # a second copy, in this run or a later one
        elif roll < 0.14:
            earlier = rng.choice([e for e in out if isinstance(e, ev.ReportSubmitted)])
            out.append(dataclasses.replace(earlier, description=earlier.description + " (again)"))
        elif roll < 0.19:
            out.append(dataclasses.replace(_report(rng, tag, -1), urls=("http://exa mple.com/",)))
        elif roll < 0.22:
            out.append(
                dataclasses.replace(
                    event, envelope=dataclasses.replace(event.envelope, report_id=str(uuid.uuid4()))
                )
            )
        elif roll < 0.24:
            out.append(
                logic.rejected(
                    event, reason_code="x", message="x", field=None, now=now_ms(), discriminator="wrong type"
                )
            )
    return out


def _runs(rng: random.Random, events: list[Any]) -> list[list[Any]]:
    runs, i = [], 0
    while i < len(events):
        size = rng.choice((1, 2, 5, 17, 40, 90))
        runs.append(events[i : i + size])
        i += size
    return runs


def _one_by_one(events: Sequence[Any], conn: Any) -> list[Any]:
    """The reference: ``receive`` on each event in turn in one transaction, a refusal in its place."""
    out: list[Any] = []
    with conn.transaction():
        for event in events:
            try:
                out.append(stage.receive(event, conn))
            except (DomainError, SerdeError) as exc:
                out.append(exc)
    return out


def _batch(events: Sequence[Any], conn: Any) -> list[Any]:
    with conn.transaction():
        return list(stage.receive_batch(events, conn))


def _masked(result: Any) -> Any:
    """A result without its times (the two ways receive at different instants)."""
    match result:
        case DomainError() | SerdeError():
            return (type(result).__name__, result.reason, result.field, str(result))
        case ev.ReportReceived():
            return dataclasses.replace(
                result,
                envelope=dataclasses.replace(result.envelope, occurred_at=EPOCH),
                body=dataclasses.replace(result.body, received_at=EPOCH),
            )
        case ev.ReportRejected():
            return dataclasses.replace(
                result, envelope=dataclasses.replace(result.envelope, occurred_at=EPOCH)
            )
        case _:
            raise AssertionError(f"unexpected result {result!r}")


def _exact(result: Any) -> Any:
    """A result as it is, times included (a refusal by what it says: exceptions compare by identity)."""
    return _masked(result) if isinstance(result, DomainError | SerdeError) else result


def _tables(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "reports": "SELECT report_id, seq, submission_id, digest, linked_to, reporters_count, closed_at IS NULL"
        " FROM ingest_reports ORDER BY seq",
        "keys": "SELECT link_key, report_id, seq FROM ingest_link_keys ORDER BY link_key, report_id",
        "heads": "SELECT link_key, first_report_id, first_seq, reports FROM ingest_link_heads ORDER BY link_key",
        "rejections": "SELECT report_id, digest FROM ingest_rejections ORDER BY report_id, digest",
        "sequence": "SELECT last_value FROM ingest_report_seq",
    }
    return {k: conn.execute(q).fetchall() for k, q in queries.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_runs_give_what_one_by_one_gives(settings: Settings, seed: int) -> None:
    """Random runs of a mixed stream give, through receive_batch, the outputs, numbers, links, counts
    and rows that receive gives record by record; a replayed run gives its first outputs again."""
    rng = random.Random(seed)
    events = _stream(seed, 160)
    one = connect(settings.with_suffix(f"{settings.topic_suffix}one"))
    many = connect(settings.with_suffix(f"{settings.topic_suffix}many"))
    try:
        for run in _runs(rng, events):
            expected = _one_by_one(run, one)
            got = _batch(run, many)
            assert [_masked(r) for r in got] == [_masked(r) for r in expected]
            if rng.random() < 0.3:  # the run again, as after a crash before the Kafka commit
                assert [_exact(r) for r in _batch(run, many)] == [_exact(r) for r in got]
                assert [_exact(r) for r in _one_by_one(run, one)] == [_exact(r) for r in expected]
            if rng.random() < 0.2:  # close a report in both (nothing closes one yet; linking skips it)
                numbered = [r for r in got if isinstance(r, ev.ReportReceived)]
                if numbered:
                    rid = rng.choice(numbered).envelope.report_id
                    for conn in (one, many):
                        with conn.transaction():
                            conn.execute(
                                "UPDATE ingest_reports SET closed_at = now() WHERE report_id = %s", (rid,)
                            )
        assert _tables(many) == _tables(one)
        linked = many.execute("SELECT count(*) FROM ingest_reports WHERE linked_to IS NOT NULL").fetchone()
        assert linked is not None
        assert linked[0] > 10, "the stream should link reports, or the test proves little"
    finally:
        one.close()
        many.close()


def test_a_run_fails_when_a_head_changed_after_its_reads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that bypasses the run's locks and moves a head between its reads and writes makes the run
    fail (to be received again one by one) rather than store a wrong count."""
    tag = uuid.uuid4().hex[:8]
    shared = f"http://moved-{tag}.example.com/p"

    def report(text: str) -> ev.ReportSubmitted:
        parsed = logic.parse_report({"description": text, "urls": [shared]})
        return logic.to_submitted(parsed, channel=ev.Channel.API, now=now_ms(), contact=None)

    conn = connect(settings)
    other = connect(settings, autocommit=True)
    try:
        _batch([report("first")], conn)
        write = stage._write

        def meddle(c: Any, view: Any) -> None:
            other.execute(
                "UPDATE ingest_link_heads SET reports = reports + 1 WHERE link_key = %s", (f"url:{shared}",)
            )
            write(c, view)

        monkeypatch.setattr(stage, "_write", meddle)
        with pytest.raises(RuntimeError, match="ingest_link_heads"):
            _batch([report("second")], conn)
        monkeypatch.setattr(stage, "_write", write)
        [second] = _batch([report("third")], conn)
        assert isinstance(second, ev.ReportReceived)
        assert second.body.reporters_count == 3  # 1 + the meddler's 1 + itself: nothing lost, nothing twice
    finally:
        conn.close()
        other.close()


def test_concurrent_runs_sharing_keys_neither_deadlock_nor_miscount(settings: Settings) -> None:
    """Two connections receiving runs that name the same keys in opposite orders, at the same time, end
    with exact counts and every report after the first of a key linked to it."""
    tag = uuid.uuid4().hex[:8]
    keys = [f"http://c-{tag}-{n}.example.com/" for n in range(12)]

    def report(i: int, urls: list[str]) -> ev.ReportSubmitted:
        parsed = logic.parse_report({"description": f"c{i}", "urls": urls})
        return logic.to_submitted(parsed, channel=ev.Channel.API, now=now_ms(), contact=None)

    forward = [[report(1000 * r + i, [keys[i], keys[-1 - i]]) for i in range(12)] for r in range(8)]
    backward = [[report(1000 * r + 500 + i, [keys[-1 - i], keys[i]]) for i in range(12)] for r in range(8)]
    errors: list[BaseException] = []
    results: list[Any] = []

    def worker(runs: list[list[ev.ReportSubmitted]]) -> None:
        conn = connect(settings)
        try:
            for run in runs:
                results.extend(_batch(run, conn))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(runs,)) for runs in (forward, backward)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 2 * 8 * 12
    with connect(settings) as conn:
        heads = dict(
            conn.execute(
                "SELECT link_key, reports FROM ingest_link_heads WHERE link_key LIKE %s", (f"url:%{tag}%",)
            )
        )
    assert len(heads) == 12
    assert set(heads.values()) == {2 * 8 * 2}
    # The runs share keys, so they took turns: the first run's reports are numbered lowest, and every
    # report of a later run finds its keys' first reports.
    numbered = sorted(results, key=lambda r: r.body.report_number)
    assert numbered[0].body.linked_to is None
    assert all(r.body.linked_to is not None for r in numbered[12:])
    assert numbered[-1].body.reporters_count == 2 * 8 * 2


def _produce_in_order(settings: Settings, events: Sequence[Any]) -> None:
    """Every record on partition 0, in order, so both ways meet the same sequence."""
    prod = kafka.producer(settings)
    for event in events:
        prod.produce(
            name(SUBMITTED, settings.topic_suffix),
            key=event.envelope.report_id.encode(),
            value=serde.encode(event),
            partition=0,
        )
    assert prod.flush(30) == 0


def test_the_stage_through_handle_batch_emits_what_handle_emits(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """On the broker, the stage with its batch handler and the stage with ``handle`` alone emit the same
    events (times apart) and dead-letter the same records, for the same mixed input."""
    events = _stream(11, 120)
    outputs: dict[str, list[Any]] = {}
    dead: dict[str, list[tuple[bytes, Any]]] = {}
    refused = sum(
        1
        for e in events
        if not isinstance(e, ev.ReportSubmitted)
        or e.envelope.report_id != logic.report_id_for(e.submission_id)
    )
    for mode in ("one", "many"):
        s = settings.with_suffix(f"{settings.topic_suffix}{mode}")
        kafka.ensure_topics(s, (SUBMITTED, RECEIVED, DLQ))
        _produce_in_order(s, events)
        full = stage.spec(s)
        counting = CountingStage(full)
        spec = dataclasses.replace(
            full,
            handle=counting.handle,
            handle_batch=counting.handle_batch if mode == "many" else None,
        )
        with StageThread(spec, s):
            got = consume(s, RECEIVED, count=len(events) - refused, timeout=90, settle=1.0)
            dlq = consume(s, DLQ, count=refused, timeout=30, settle=0.5)
        # Across the output topic's partitions the order of reading varies; compare as sorted lists.
        outputs[mode] = sorted((_masked(e) for e in got.events), key=repr)
        dead[mode] = sorted((m.key() or b"", dict(m.headers() or [])["dlq.reason"]) for m in dlq.messages)
        if mode == "many":
            assert counting.batches > 0
            assert counting.singles == 0, "the batch path failed and fell back to handle"
    assert outputs["many"] == outputs["one"]
    assert dead["many"] == dead["one"]
    assert len(outputs["one"]) == len(events) - refused
