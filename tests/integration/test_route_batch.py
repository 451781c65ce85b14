"""The route stage's batch handler against its per-record handler, on the real PostgreSQL and broker:
the same outputs, event ids and ``route_emitted`` rows for any sequence of new, copied, replayed,
superseding and refused inputs; a race with a fenced predecessor handed back to the per-record path."""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
import structlog
import structlog.testing
from psycopg import sql

from pipeline import db, serde
from pipeline import events as ev
from pipeline.errors import DomainError, SerdeError
from pipeline.route import stage as route_stage
from pipeline.route.resolve import SocketResolver, demo_resolver
from pipeline.runtime import Context, Item, Output, StageSpec
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLOSED, FOLLOWUP, REFERRED, dead_letter, name
from tests.integration.harness import StageThread, consume, produce, wait_for
from tests.unit.route_builders import CONTACT, NOW, assessed

DLQ = dead_letter("route")
OUTPUT_TOPICS = (REFERRED, FOLLOWUP, CLOSED)
HOSTS = (
    "https://cdn1.ca-host.example/p/1",
    "https://cdn1.nl-host.example/a",
    "https://files.nl-host.example/b",
    "http://cdn1.ru-host.example/d",
    "https://cdn1.gb-host.example/e",
    "https://nowhere.invalid/x",  # does not resolve: the national centre
    "http://[2001:638::1]/f",
)
PROVINCES = ("ON", "QC", "BC", "AB", "ZZ", None)


def _fixed() -> Any:
    return NOW


def _spec(settings: Settings) -> StageSpec:
    return route_stage.spec(settings, resolver=demo_resolver(), clock=_fixed)


@pytest.fixture
def two_namespaces(base_settings: Settings) -> Iterator[tuple[Settings, Settings]]:
    """Two environments of their own (schemas and topics): one for each path; schemas dropped after."""
    one = base_settings.with_suffix(f".{uuid.uuid4().hex[:10]}")
    other = base_settings.with_suffix(f".{uuid.uuid4().hex[:10]}")
    yield one, other
    with db.connect(one, autocommit=True) as conn:
        for s in (one, other):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(db.schema_name(s)))
            )


# -- a random sequence through both paths ---------------------------------------------------------------
def _location(rng: random.Random) -> ev.Location | None:
    province = rng.choice(PROVINCES)
    if province is None:
        return rng.choice((None, ev.Location(country="NL"), ev.Location(country="CA")))
    return ev.Location(province=province)


def _assessment(rng: random.Random, report_id: str, supersedes: str | None = None) -> ev.ReportAssessed:
    return assessed(
        report_id=report_id,
        supersedes=supersedes,
        urls=tuple(rng.sample(HOSTS, rng.randint(0, 4))),
        suspect=_location(rng),
        victim=_location(rng),
        child=rng.random() < 0.4,
        determination=rng.choice(
            (ev.Determination.POTENTIALLY_ILLEGAL,) * 3
            + (ev.Determination.NOT_ILLEGAL, ev.Determination.INFORMATIONAL, ev.Determination.OUTSIDE_MANDATE)
        ),
        contact=CONTACT if rng.random() < 0.5 else None,
        anonymous=rng.random() < 0.3,
        language=rng.choice((ev.Language.EN, ev.Language.FR)),
    )


def _not_an_assessment(event: ev.ReportAssessed) -> ev.ReportReceived:
    return ev.ReportReceived(
        envelope=dataclasses.replace(event.envelope, event_type="ReportReceived", event_id=str(uuid.uuid4())),
        body=event.body,
        submission_id="s",
    )


def _runs(rng: random.Random) -> list[list[Item]]:
    """Runs of inputs as the runner would hand them over: new assessments, superseding ones, second
    copies at another offset (in the same run or a later one), refusals, and replays of whole runs."""
    reports = [str(uuid.uuid4()) for _ in range(5)]
    latest: dict[str, ev.ReportAssessed] = {}
    seen: list[ev.ReportAssessed] = []
    offset = 0
    runs: list[list[Item]] = []
    for _ in range(rng.randint(6, 10)):
        if runs and rng.random() < 0.25:
            runs.append(list(rng.choice(runs)))  # the same records again: a replayed batch
            continue
        run: list[Item] = []
        for _ in range(rng.randint(1, 12)):
            roll = rng.random()
            report = rng.choice(reports)
            if roll < 0.2 and seen:
                event: Any = rng.choice(seen)  # a second copy of an assessment, at another offset
            elif roll < 0.27:
                event = _not_an_assessment(_assessment(rng, report))
            elif report in latest and roll < 0.55:
                event = _assessment(rng, report, supersedes=latest[report].envelope.event_id)
            else:
                event = _assessment(rng, report)
            if isinstance(event, ev.ReportAssessed):
                latest[event.envelope.report_id] = event
                seen.append(event)
            run.append(Item(event, f"{name(ASSESSED, '.t')}:{offset % 3}:{offset}"))
            offset += 1
        runs.append(run)
    return runs


Result = list[bytes] | tuple[str, str, str | None]


def _per_record(
    spec: StageSpec, conn: psycopg.Connection[Any], settings: Settings, run: list[Item]
) -> list[Result]:
    """What the runner does with ``handle``: each record in turn, in one transaction for the run."""
    out: list[Result] = []
    with conn.transaction():
        for item in run:
            ctx = Context(settings, conn, source=item.source)
            try:
                out.append([serde.encode(o.event) for o in spec.handle(item.event, ctx)])
            except (DomainError, SerdeError) as exc:
                out.append((type(exc).__name__, exc.reason, exc.field))
    return out


def _batched(
    spec: StageSpec, conn: psycopg.Connection[Any], settings: Settings, run: list[Item]
) -> list[Result]:
    assert spec.handle_batch is not None
    out: list[Result] = []
    with conn.transaction():
        for result in spec.handle_batch(run, Context(settings, conn)):
            if isinstance(result, DomainError | SerdeError):
                out.append((type(result).__name__, result.reason, result.field))
            else:
                out.append([serde.encode(o.event) for o in result])
    return out


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT report_id, emit_key, event_id, event_type, causation_id, seq, payload, source"
        " FROM route_emitted ORDER BY report_id, emit_key"
    ).fetchall()


@pytest.mark.parametrize("seed", range(6))
def test_a_random_sequence_gives_the_same_through_both_paths(
    seed: int, two_namespaces: tuple[Settings, Settings]
) -> None:
    """Runs of new, superseding, copied, replayed and refused inputs give the same outputs (byte for byte,
    refusals with the same reason) and the same route_emitted rows through handle_batch as through handle."""
    one, other = two_namespaces
    runs = _runs(random.Random(seed))
    spec_one, spec_other = _spec(one), _spec(other)
    seen: list[Result] = []
    with db.connect(one) as conn_one, db.connect(other) as conn_other:
        for run in runs:
            expected = _per_record(spec_one, conn_one, one, run)
            got = _batched(spec_other, conn_other, other, run)
            assert got == expected
            seen.extend(expected)
        rows = _rows(conn_one)
        assert _rows(conn_other) == rows
    # The sequence exercised what it is meant to: refusals, inputs emitting nothing, and emitting ones.
    assert any(isinstance(r, tuple) for r in seen)
    assert any(r == [] for r in seen)
    assert sum(1 for r in seen if isinstance(r, list) and r) >= 5


def test_duplicates_within_one_run_and_its_replay(settings: Settings) -> None:
    """In one run: an assessment, its second copy (emits nothing), a superseding one (only what it adds);
    then the run replayed re-emits the same records, and the copy still emits nothing."""
    spec = _spec(settings)
    first = assessed(
        urls=(HOSTS[0], HOSTS[1]), suspect=ev.Location(province="ON"), victim=ev.Location(province="QC")
    )
    superseding = dataclasses.replace(
        first,
        envelope=dataclasses.replace(first.envelope, event_id=str(uuid.uuid4())),
        supersedes=first.envelope.event_id,
        child_may_need_protection=True,
    )
    run = [Item(first, "a:0:1"), Item(first, "a:0:2"), Item(superseding, "a:0:3")]
    with db.connect(settings) as conn:
        once = _batched(spec, conn, settings, run)
        again = _batched(spec, conn, settings, run)
        count = conn.execute("SELECT count(*) FROM route_emitted").fetchone()
    original, copy, revised = once
    assert isinstance(original, list)
    assert [type(serde.decode(b)).__name__ for b in original] == ["ReportReferred"] * 3 + ["ReportClosed"]
    assert copy == []
    assert isinstance(revised, list)
    (child_protection,) = [serde.decode(b) for b in revised]
    assert isinstance(child_protection, ev.ReportReferred)
    assert child_protection.recipient.kind is ev.RecipientKind.CHILD_PROTECTION
    assert child_protection.envelope.causation_id == superseding.envelope.event_id
    assert again == once
    assert count == (5,)  # police:ON, police:QC, inhope_hotline:NL, close, child_protection:QC


# -- on the broker, through the runner -------------------------------------------------------------------
class _Counting:
    """A spec whose handlers count their calls (to show which path the runner took)."""

    def __init__(self, spec: StageSpec, *, batch: bool) -> None:
        self.records = 0
        self.runs = 0
        self.lock = threading.Lock()
        inner, inner_batch = spec.handle, spec.handle_batch
        assert inner_batch is not None

        def handle(event: object, ctx: Context) -> Sequence[Output]:
            with self.lock:
                self.records += 1
            return inner(event, ctx)

        def handle_batch(items: Sequence[Item], ctx: Context) -> Any:
            with self.lock:
                self.runs += 1
            return inner_batch(items, ctx)

        self.spec = dataclasses.replace(spec, handle=handle, handle_batch=handle_batch if batch else None)


def _route_on_broker(settings: Settings, events: list[Any], *, batch: bool, replayed: int) -> dict[str, Any]:
    """Produce ``events``; route the first ``replayed`` of each partition in the database only (an earlier
    attempt whose Kafka transaction was lost); then run the stage and collect every output and dead letter."""
    from pipeline import kafka

    kafka.ensure_topics(settings, (ASSESSED, *OUTPUT_TOPICS, DLQ))
    produce(settings, ASSESSED, events)
    inputs = consume(settings, ASSESSED, count=len(events), timeout=60)
    spec = _spec(settings)
    head = [
        Item(serde.decode(m.value() or b""), f"{m.topic()}:{m.partition()}:{m.offset()}")
        for m in sorted(inputs.messages, key=lambda m: (m.partition(), m.offset()))
        if (m.offset() or 0) < replayed
    ]
    with db.connect(settings) as conn:
        if batch:
            _batched(spec, conn, settings, head)
        else:
            _per_record(spec, conn, settings, head)
    counting = _Counting(spec, batch=batch)
    with StageThread(counting.spec, settings) as running:
        wait_for(lambda: running.runner.processed >= len(events), timeout=90, what="every input routed")
    outputs = consume(settings, OUTPUT_TOPICS, count=1, timeout=30, settle=2.0)
    dead = consume(settings, DLQ, count=1, timeout=30, settle=0.5)
    with db.connect(settings) as conn:
        # The source names this namespace's own topic: compare partition and offset.
        rows = [(*row[:7], str(row[7]).split(":", 1)[1]) for row in _rows(conn)]
    return {
        "outputs": sorted(((m.topic() or "").split(".v1")[0], m.key(), m.value()) for m in outputs.messages),
        "dead": sorted(dict(m.headers() or [])["dlq.reason"] for m in dead.messages),
        "rows": rows,
        "records": counting.records,
        "runs": counting.runs,
    }


def test_the_runner_with_handle_batch_emits_what_it_does_record_by_record(
    two_namespaces: tuple[Settings, Settings],
) -> None:
    """Through the runner on the real broker, a stream with copies, superseding assessments, records that
    are not assessments and a replayed head gives the same records, dead letters and rows with the batch
    handler (used for every run, no fallback) as with the per-record handler."""
    rng = random.Random(99)
    reports = [str(uuid.uuid4()) for _ in range(12)]
    events: list[Any] = []
    for i in range(40):
        report = reports[i % len(reports)]
        earlier = [e for e in events if isinstance(e, ev.ReportAssessed) and e.envelope.report_id == report]
        if earlier and rng.random() < 0.3:
            events.append(earlier[-1])  # a second copy, a few offsets later
        elif earlier and rng.random() < 0.4:
            events.append(_assessment(rng, report, supersedes=earlier[-1].envelope.event_id))
        elif rng.random() < 0.1:
            events.append(_not_an_assessment(_assessment(rng, report)))
        else:
            events.append(_assessment(rng, report))
    per_record = _route_on_broker(two_namespaces[0], events, batch=False, replayed=3)
    batched = _route_on_broker(two_namespaces[1], events, batch=True, replayed=3)
    assert batched["runs"] >= 1
    assert batched["records"] == 0  # never fell back to one record at a time
    assert per_record["runs"] == 0
    assert batched["dead"] == per_record["dead"]
    assert batched["dead"]
    assert set(batched["dead"]) == {b"unexpected_event_type"}
    assert batched["rows"] == per_record["rows"]
    assert batched["outputs"] == per_record["outputs"]
    event_ids = [serde.decode(value).envelope.event_id for _, _, value in batched["outputs"]]
    assert len(event_ids) == len(set(event_ids))  # no record twice, replayed head included


# -- a fenced predecessor ---------------------------------------------------------------------------------
def test_a_predecessor_committing_first_sends_the_run_back_to_the_per_record_path(settings: Settings) -> None:
    """A zombie that wrote an assessment's rows (uncommitted) while the successor's run was planned: the
    run's insert waits for it, finds the keys taken and raises RouteRaced (the runner then redoes the run
    record by record); per record, after the rollback, the successor emits exactly the zombie's records."""
    spec = _spec(settings)
    assert spec.handle_batch is not None
    event = assessed(urls=(HOSTS[0], HOSTS[1]), suspect=ev.Location(province="BC"))
    other = assessed(urls=(HOSTS[3],))
    source = "topic:0:7"
    result: dict[str, Any] = {}
    with db.connect(settings) as zombie, db.connect(settings) as successor:
        zombie_tx = zombie.transaction()
        zombie_tx.__enter__()
        ctx = Context(settings, zombie, source=source)
        result["zombie"] = [serde.encode(o.event) for o in spec.handle(event, ctx)]
        batch = spec.handle_batch

        def run_successor() -> None:
            try:
                with successor.transaction():
                    batch([Item(other, "topic:0:6"), Item(event, source)], Context(settings, successor))
            except route_stage.RouteRaced as exc:
                result["raced"] = exc
            with successor.transaction():
                again = Context(settings, successor, source=source)
                result["successor"] = [serde.encode(o.event) for o in spec.handle(event, again)]

        thread = threading.Thread(target=run_successor)
        thread.start()
        wait_for(
            lambda: _waiting_on_lock(settings), timeout=30, what="the successor waiting on the zombie's rows"
        )
        zombie_tx.__exit__(None, None, None)
        thread.join(30)
        kept = successor.execute(
            "SELECT count(*) FROM route_emitted WHERE report_id = %s", (other.envelope.report_id,)
        ).fetchone()
    assert isinstance(result.get("raced"), route_stage.RouteRaced)
    assert result["successor"] == result["zombie"]
    assert len(result["zombie"]) == 3  # two referrals and the close
    assert kept == (0,)  # the raced run's other rows were rolled back with it


def _waiting_on_lock(settings: Settings) -> bool:
    with db.connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            ('INSERT INTO "route_emitted"%SELECT%',),
        ).fetchone()
    return bool(row and row[0])


# -- logs ---------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("debug_logging")
def test_per_report_lines_are_debug_and_name_no_url_host_or_contact(settings: Settings) -> None:
    """The batch path logs each referral, follow-up and close at debug, a copy ignored and keys already
    taken at info, and never a URL, a host name or the encrypted contact."""
    spec = _spec(settings)
    referred = assessed(urls=(HOSTS[0], HOSTS[1], HOSTS[3]), suspect=ev.Location(province="ON"))
    followed = assessed(determination=ev.Determination.INFORMATIONAL, contact=CONTACT, anonymous=False)
    revised = dataclasses.replace(
        referred, envelope=dataclasses.replace(referred.envelope, event_id=str(uuid.uuid4()))
    )
    run = [Item(referred, "t:0:1"), Item(followed, "t:0:2"), Item(referred, "t:0:3"), Item(revised, "t:0:4")]
    with structlog.testing.capture_logs() as logs, db.connect(settings) as conn:
        _batched(spec, conn, settings, run)
    levels = {(entry["event"], entry["log_level"]) for entry in logs}
    assert levels == {
        ("report_referred", "debug"),
        ("report_closed", "debug"),
        ("follow_up_requested", "debug"),
        ("route_copy_ignored", "info"),
        ("route_already_done", "info"),
    }
    text = repr(logs)
    for secret in ("ca-host", "nl-host", "ru-host", "https://", "http://", "ciphertext"):
        assert secret not in text


def test_a_run_with_no_assessment_touches_no_row(settings: Settings) -> None:
    """A run of records that are all refused reads and writes nothing and refuses each one by name."""
    spec = _spec(settings)
    assert spec.handle_batch is not None
    refused = _not_an_assessment(assessed())
    with db.connect(settings) as conn, conn.transaction():
        (result,) = spec.handle_batch([Item(refused, "t:0:1")], Context(settings, conn))
        count = conn.execute("SELECT count(*) FROM route_emitted").fetchone()
    assert isinstance(result, DomainError)
    assert (result.reason, result.field) == ("unexpected_event_type", "envelope.event_type")
    assert count == (0,)


def test_batches_are_small_only_when_hosts_are_asked_of_the_network(settings: Settings) -> None:
    """With DNS a batch holds 16 reports (each may wait 1.5 s within a 30 s transaction); with the fixed
    table of the demo and the tests, which never waits, the runner's full 500."""
    network = SocketResolver()
    try:
        assert route_stage.spec(settings, resolver=network).batch_size == 16
    finally:
        network.close()
    assert route_stage.spec(settings, resolver=demo_resolver()).batch_size == 500
