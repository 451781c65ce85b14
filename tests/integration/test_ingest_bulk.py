"""Intake in bulk on the real broker and database: data keys made together, submit_many, the HTTP key store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline import db
from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.ingest import client, crypto, logic
from pipeline.ingest.http import create_app
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, dead_letter
from tests.integration.harness import consume


@pytest.fixture
def topics(make_topics: Callable[..., list[str]]) -> None:
    make_topics(SUBMITTED, RECEIVED, dead_letter("ingest"))


def _ids(n: int) -> list[str]:
    return [logic.report_id_for(str(uuid.uuid4())) for _ in range(n)]


def test_data_keys_in_bulk_agree_with_one_at_a_time(settings: Settings) -> None:
    """data_keys makes missing keys, returns stored ones unchanged, and leaves an erased report erased."""
    ring = crypto.keyring(settings)
    fresh, stored, erased = _ids(3), _ids(2), _ids(1)
    with db.connect(settings, autocommit=True) as conn:
        before = {rid: ring.data_key(conn, rid, create=True) for rid in stored}
        assert crypto.erase(conn, erased[0]) is False  # never had a key: a tombstone is left
        keys = ring.data_keys(conn, [*fresh, *stored, *erased, fresh[0]])
        assert set(keys) == {*fresh, *stored, *erased}
        assert all(keys[rid] == before[rid] for rid in stored)
        assert keys[erased[0]] is None
        for rid in fresh:
            key = keys[rid]
            assert key is not None
            assert len(key) == crypto.KEY_BYTES
            assert ring.data_key(conn, rid, create=False) == key  # committed, and read back the same
        assert len({keys[rid] for rid in fresh}) == len(fresh)  # one key per report


def test_async_data_keys_match_the_blocking_ones(settings: Settings) -> None:
    """The HTTP server's async variant stores and reads the same keys in the same table."""
    import psycopg

    ring = crypto.keyring(settings)
    ids = _ids(4)
    schema = db.schema_name(settings)
    db.connect(settings).close()  # the environment's tables

    async def fetch() -> dict[str, bytes | None]:
        conn = await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True, options=f"-c search_path={schema},public"
        )
        async with conn:
            return await ring.data_keys_async(conn, ids)

    got = asyncio.run(fetch())
    with db.connect(settings, autocommit=True) as conn:
        assert ring.data_keys(conn, ids) == got


def _bodies(n: int, *, contact_every: int = 2) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        body: dict[str, Any] = {
            "submission_id": str(uuid.uuid4()),
            "description": f"bulk report {i}",
            "urls": [f"example.com/{uuid.uuid4().hex}"],
        }
        if i % contact_every == 0:
            body["contact"] = {"email": f"reporter{i}-{uuid.uuid4().hex[:6]}@example.ca"}
        out.append(body)
    return out


def test_submit_many_queues_every_report_with_its_contact_sealed(settings: Settings, topics: None) -> None:
    """submit_many publishes each report once, contacts encrypted under keys that open them."""
    bodies = _bodies(client.SUBMIT_MANY_CHUNK + 7)
    with client.IntakeClient(settings) as intake:
        receipts = intake.submit_many(bodies)
        intake.flush()
    assert [r.submission_id for r in receipts] == [b["submission_id"] for b in bodies]
    got = consume(settings, SUBMITTED, count=len(bodies), timeout=60).events
    by_id = {e.envelope.report_id: e for e in got}
    assert len(got) == len(by_id) == len(bodies)
    with db.connect(settings, autocommit=True) as conn:
        for body, receipt in zip(bodies, receipts, strict=True):
            event = by_id[receipt.report_id]
            assert isinstance(event, ev.ReportSubmitted)
            if "contact" in body:
                assert event.contact is not None
                assert body["contact"]["email"].encode() not in event.contact.ciphertext
                opened = crypto.decrypt_contact(conn, event.contact, settings=settings)
                assert opened == body["contact"]
            else:
                assert event.contact is None


def test_reports_checked_ahead_are_handed_in_as_checked(settings: Settings, topics: None) -> None:
    """check() validates without sending; submit_many of the checked reports sends each once, contacts
    sealed, with the time of the check as submission time; an invalid report fails at check()."""
    bodies = _bodies(5)
    with client.IntakeClient(settings) as intake:
        checked = [intake.check(b) for b in bodies]
        assert intake.check(checked[0]) is checked[0]
        bad = {**_bodies(1)[0], "category": "not-a-category"}
        with pytest.raises(DomainError) as info:
            intake.check(bad)
        assert info.value.field == "category"
        assert len(intake.producer) == 0  # nothing queued by checking
        receipts = intake.submit_many(checked)
        intake.flush()
    got = consume(settings, SUBMITTED, count=len(bodies), timeout=60, settle=1.0).events
    assert sorted(e.submission_id for e in got) == sorted(r.submission_id for r in receipts)
    assert sorted(r.submission_id for r in receipts) == sorted(b["submission_id"] for b in bodies)
    by_sub = {e.submission_id: e for e in got if isinstance(e, ev.ReportSubmitted)}
    with db.connect(settings, autocommit=True) as conn:
        for body, one in zip(bodies, checked, strict=True):
            event = by_sub[body["submission_id"]]
            assert event.submitted_at == one.now
            if "contact" in body:
                assert event.contact is not None
                assert crypto.decrypt_contact(conn, event.contact, settings=settings) == body["contact"]
            else:
                assert event.contact is None


def test_submit_many_stops_at_an_invalid_report_naming_its_field(settings: Settings, topics: None) -> None:
    """The reports before an invalid one are queued, its error names the field, none after it is sent."""
    bodies = _bodies(6)
    bodies[3]["urls"] = ["http://exa mple.com"]
    with client.IntakeClient(settings) as intake:
        with pytest.raises(DomainError) as info:
            intake.submit_many(bodies)
        intake.flush()
    assert info.value.field == "urls[0]"
    assert any("report 3" in note for note in getattr(info.value, "__notes__", []))
    got = consume(settings, SUBMITTED, count=3, timeout=30, settle=2.0).events
    assert sorted(e.submission_id for e in got) == sorted(b["submission_id"] for b in bodies[:3])


def test_submit_many_refuses_a_report_whose_contact_was_erased(settings: Settings, topics: None) -> None:
    """An erased contact stays erased in bulk too: that report is refused, the ones before it are sent."""
    bodies = _bodies(4, contact_every=1)
    erased_id = logic.report_id_for(bodies[2]["submission_id"])
    with db.connect(settings, autocommit=True) as conn:
        crypto.erase(conn, erased_id)
    with client.IntakeClient(settings) as intake:
        with pytest.raises(DomainError) as info:
            intake.submit_many(bodies)
        intake.flush()
    assert (info.value.field, info.value.reason) == ("contact", "contact_erased")
    got = consume(settings, SUBMITTED, count=2, timeout=30, settle=2.0).events
    assert sorted(e.submission_id for e in got) == sorted(b["submission_id"] for b in bodies[:2])


def test_http_contact_keys_live_in_the_environment_and_erase(settings: Settings, topics: None) -> None:
    """Keys the web endpoint makes for concurrent requests (batched) are in the environment's schema, each
    opens its own report's contact, and `privacy erase` there shreds them."""
    bodies = _bodies(40, contact_every=1)
    with TestClient(create_app(settings)) as http, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: http.post("/v1/reports", json=b), bodies))
    assert [a.status_code for a in answers] == [202] * len(bodies)
    got = consume(settings, SUBMITTED, count=len(bodies), timeout=60).events
    ring = crypto.keyring(settings)
    sent = {logic.report_id_for(b["submission_id"]): b["contact"] for b in bodies}
    with db.connect(settings, autocommit=True) as conn:
        for event in got:
            assert isinstance(event, ev.ReportSubmitted)
            assert event.contact is not None
            assert crypto.decrypt_contact(conn, event.contact, ring=ring) == sent[event.envelope.report_id]
        target = got[0]
        assert isinstance(target, ev.ReportSubmitted)
        assert target.contact is not None
        assert crypto.erase(conn, target.envelope.report_id) is True
        assert crypto.decrypt_contact(conn, target.contact, ring=ring) is None


def test_http_key_store_down_answers_503_and_publishes_nothing(settings: Settings, topics: None) -> None:
    """With the key store unreachable, a report with a contact gets 503 and Retry-After, and is not sent;
    a report without one is still accepted."""
    with TestClient(create_app(settings)) as http:
        intake = http.app.intake  # type: ignore[attr-defined]
        assert intake.pool is not None
        http.portal.call(intake.pool.close)  # type: ignore[union-attr]
        with_contact = _bodies(3, contact_every=1)
        answers = [http.post("/v1/reports", json=b) for b in with_contact]
        anonymous = http.post("/v1/reports", json=_bodies(1, contact_every=2)[0] | {"contact": None})
    assert [a.status_code for a in answers] == [503] * 3
    assert all(a.headers["retry-after"] == "5" and a.json()["reason"] == "unavailable" for a in answers)
    assert anonymous.status_code == 202, anonymous.text
    got = consume(settings, SUBMITTED, count=1, timeout=30, settle=2.0).events
    assert [e.envelope.report_id for e in got] == [anonymous.json()["report_id"]]
