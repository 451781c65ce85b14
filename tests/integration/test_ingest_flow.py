"""The ingest step end to end on the real broker and database: ways in, duplicates, links, privacy."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import structlog.testing
from fastapi.testclient import TestClient

from pipeline import db, serde
from pipeline import events as ev
from pipeline.ingest import client, crypto, logic
from pipeline.ingest.http import create_app
from pipeline.ingest.stage import spec
from pipeline.logging import redact
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, dead_letter
from tests.integration.harness import StageThread, consume, produce, produce_raw

DLQ = dead_letter("ingest")


@pytest.fixture
def topics(make_topics: Callable[..., list[str]]) -> None:
    make_topics(SUBMITTED, RECEIVED, DLQ)


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "TIPLINE_TOPIC_SUFFIX": settings.topic_suffix}


def _erase(settings: Settings, report_id: str) -> subprocess.CompletedProcess[str]:
    """`tipline privacy erase REPORT` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "privacy", "erase", report_id],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _received(events: list[Any]) -> dict[str, ev.ReportReceived]:
    return {e.envelope.report_id: e for e in events if isinstance(e, ev.ReportReceived)}


def test_three_ways_in_reach_the_received_topic(settings: Settings, topics: None) -> None:
    """The HTTP endpoint, the phone CLI and an intake system's client each end as one ReportReceived."""
    tag = uuid.uuid4().hex
    with TestClient(create_app(settings)) as http:
        web = http.post("/v1/reports", json={"description": "web report", "urls": [f"example.com/{tag}/w"]})
    assert web.status_code == 202
    phone = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "intake",
            "phone",
            "--category",
            "luring",
            "--description",
            "phone report",
            "--url",
            f"https://example.com/{tag}/p",
            "--victim-age",
            "13",
            "--province",
            "ON",
            "--reporter-province",
            "bc",
            "--anonymous",
            "--yes",
        ],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert phone.returncode == 0, phone.stderr
    assert "Reference: TIP-" in phone.stdout
    api = client.submit_report(
        settings,
        {"description": "intake system report", "intake_system": "isp-x", "ip_addresses": ["203.0.113.9"]},
    )
    with StageThread(spec(settings), settings):
        got = _received(consume(settings, RECEIVED, count=3, timeout=60).events)
    channels = {r.body.channel for r in got.values()}
    assert channels == {ev.Channel.WEB, ev.Channel.PHONE, ev.Channel.API}
    assert web.json()["report_id"] in got
    assert api.report_id in got
    phone_report = next(r for r in got.values() if r.body.channel == ev.Channel.PHONE)
    assert phone_report.body.reporter_category == ev.Category.LURING
    assert phone_report.body.victim is not None
    assert phone_report.body.victim.age == 13
    assert phone_report.body.reporter_location == ev.Location(province="BC")
    assert len({r.body.report_number for r in got.values()}) == 3


def test_phone_cli_refuses_bad_input_with_one_sentence(settings: Settings, topics: None) -> None:
    """A bad value at the phone line is one sentence at the terminal and a non-zero exit, no trace."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "intake",
            "phone",
            "--description",
            "x",
            "--url",
            "not a url",
            "--anonymous",
            "--yes",
        ],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "urls[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_phone_cli_refuses_a_bad_reporter_province_naming_it(settings: Settings, topics: None) -> None:
    """A caller's province that is not a Canadian code is one sentence naming the field, no trace."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "intake",
            "phone",
            "--description",
            "x",
            "--reporter-province",
            "Narnia",
            "--anonymous",
            "--yes",
        ],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "reporter_location.province" in result.stderr
    assert "Traceback" not in result.stderr


def test_resubmission_never_makes_a_second_report(settings: Settings, topics: None) -> None:
    """The same submission id sent twice is one ReportReceived and one duplicate_submission rejection."""
    sid = str(uuid.uuid4())
    first = client.submit_report(settings, {"submission_id": sid, "description": "first"})
    second = client.submit_report(settings, {"submission_id": sid, "description": "first, sent again"})
    assert first.report_id == second.report_id
    with StageThread(spec(settings), settings):
        events = consume(settings, RECEIVED, count=2, timeout=60, settle=1.0).events
    assert len(events) == 2
    received = [e for e in events if isinstance(e, ev.ReportReceived)]
    rejected = [e for e in events if isinstance(e, ev.ReportRejected)]
    assert len(received) == 1
    assert len(rejected) == 1
    assert received[0].body.description == "first"
    assert rejected[0].reason_code == "duplicate_submission"
    assert rejected[0].duplicate_of == first.report_id
    assert rejected[0].field == "submission_id"


def test_redelivered_record_yields_the_same_event(settings: Settings, topics: None) -> None:
    """A record handled again (as after a crash) re-emits the identical event: same id, number and time."""
    parsed = logic.parse_report({"description": "replayed", "urls": [f"example.com/{uuid.uuid4().hex}"]})
    event = logic.to_submitted(parsed, channel=ev.Channel.API, now=client.now_ms(), contact=None)
    produce(settings, SUBMITTED, [event, event])
    with StageThread(spec(settings), settings):
        a, b = consume(settings, RECEIVED, count=2, timeout=60).events
    assert a == b


def test_duplicate_urls_and_hashes_link_reports(settings: Settings, topics: None) -> None:
    """Reports sharing a normalised URL or a file hash link to the earliest, counting reporters so far."""
    tag = uuid.uuid4().hex
    digest = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits: a SHA-256
    reports = [
        {"description": "a", "urls": [f"http://Shared-{tag}.example.com/page#top"]},
        {"description": "b", "urls": [f"shared-{tag}.example.com/page"]},
        {"description": "c", "urls": [f"HTTP://shared-{tag}.EXAMPLE.com:80/page"]},
        {"description": "d", "urls": [f"http://other-{tag}.example.com/"]},
        {"description": "e", "files": [{"hashes": [{"hash_type": "sha256", "value": digest}]}]},
        {"description": "f", "files": [{"hashes": [{"hash_type": "sha256", "value": digest.upper()}]}]},
    ]
    ids = [client.submit_report(settings, r).report_id for r in reports]
    with StageThread(spec(settings), settings):
        got = _received(consume(settings, RECEIVED, count=len(reports), timeout=60).events)
    shared = sorted((got[i] for i in ids[:3]), key=lambda r: int(r.body.report_number.rsplit("-", 1)[1]))
    anchor = shared[0]
    assert (anchor.body.linked_to, anchor.body.reporters_count) == (None, 1)
    assert [(r.body.linked_to, r.body.reporters_count) for r in shared[1:]] == [
        (anchor.envelope.report_id, 2),
        (anchor.envelope.report_id, 3),
    ]
    assert (got[ids[3]].body.linked_to, got[ids[3]].body.reporters_count) == (None, 1)
    by_hash = sorted((got[i] for i in ids[4:]), key=lambda r: int(r.body.report_number.rsplit("-", 1)[1]))
    assert by_hash[0].body.linked_to is None
    assert (by_hash[1].body.linked_to, by_hash[1].body.reporters_count) == (by_hash[0].envelope.report_id, 2)


def test_reports_naming_one_very_long_url_are_received_and_linked(settings: Settings, topics: None) -> None:
    """A URL of 8,000 characters (the limit is 8,192) is a link key too long for a B-tree row: it is kept
    as its digest. Before, every batch holding it failed and the report was dead-lettered."""
    long_url = f"http://example.com/{uuid.uuid4().hex}/" + "a1B2c3" * 1330
    reports = [{"description": "first", "urls": [long_url]}, {"description": "again", "urls": [long_url]}]
    ids = [client.submit_report(settings, r).report_id for r in reports]
    with StageThread(spec(settings), settings):
        got = _received(consume(settings, RECEIVED, count=2, timeout=60).events)
    # The two may sit on different partitions: the one numbered first is the one linked to.
    first, second = sorted((got[i] for i in ids), key=lambda r: int(r.body.report_number.rsplit("-", 1)[1]))
    assert first.body.incidents[0].urls[0].normalized == long_url
    assert (first.body.linked_to, first.body.reporters_count) == (None, 1)
    assert (second.body.linked_to, second.body.reporters_count) == (first.envelope.report_id, 2)


def test_contact_is_encrypted_and_erasable(settings: Settings, topics: None) -> None:
    """The contact never travels in clear; after erasure it cannot be decrypted while all else still reads."""
    contact_email = f"parent-{uuid.uuid4().hex[:8]}@example.ca"
    receipt = client.submit_report(
        settings,
        {
            "description": "my son was sent explicit pictures",
            "contact": {"name": "Pat Doe", "email": contact_email, "phone": "416 555 0199"},
            "urls": ["example.com/x"],
        },
    )
    with StageThread(spec(settings), settings):
        collected = consume(settings, RECEIVED, count=1, timeout=60)
    raw_submitted = consume(settings, SUBMITTED, count=1, timeout=10).messages[0].value()
    for raw in (raw_submitted, collected.messages[0].value()):
        assert contact_email.encode() not in raw
        assert b"Pat Doe" not in raw
        assert b"4165550199" not in raw
    (received,) = collected.events
    assert isinstance(received, ev.ReportReceived)
    enc = received.body.contact
    assert enc is not None
    assert enc.key_id == receipt.report_id
    with db.connect(settings, autocommit=True) as conn:
        assert crypto.decrypt_contact(conn, enc, settings=settings) == {
            "name": "Pat Doe",
            "email": contact_email,
            "phone": "+14165550199",
        }
        stored = conn.execute(
            "SELECT key FROM ingest_contact_keys WHERE report_id = %s", (receipt.report_id,)
        ).fetchone()
        assert stored is not None
        assert len(bytes(stored[0])) == 12 + 32 + 16  # wrapped: nonce, key, tag; never the raw key

    erased = _erase(settings, receipt.report_id)
    assert erased.returncode == 0, erased.stderr
    assert "Erased the contact details" in erased.stdout
    twice = _erase(settings, receipt.report_id)
    assert twice.returncode == 0, twice.stderr
    assert "No readable contact details are stored" in twice.stdout
    assert "marked erased" in twice.stdout
    with db.connect(settings, autocommit=True) as conn:
        assert crypto.decrypt_contact(conn, enc, settings=settings) is None
        with pytest.raises(Exception, match="erased"):
            crypto.encrypt_contact(conn, receipt.report_id, {"email": contact_email}, settings=settings)
    again = serde.decode(collected.messages[0].value())
    assert isinstance(again, ev.ReportReceived)
    assert again.body.description == "my son was sent explicit pictures"
    assert again.body.report_number == received.body.report_number


def test_logs_never_show_contact_description_or_url(settings: Settings, topics: None) -> None:
    """Whatever the intake and ingest log, a contact, a description or a URL's path never appears."""
    secret_path = f"secret-{uuid.uuid4().hex}"
    email = f"reporter-{uuid.uuid4().hex[:6]}@example.ca"
    description = f"private words {uuid.uuid4().hex}"
    sid = str(uuid.uuid4())
    with structlog.testing.capture_logs(processors=[redact]) as logs:
        with TestClient(create_app(settings)) as http:
            body = {
                "submission_id": sid,
                "description": description,
                "urls": [f"https://example.com/{secret_path}"],
                "contact": {"email": email},
            }
            assert http.post("/v1/reports", json=body).status_code == 202
            assert (
                http.post("/v1/reports", json={**body, "description": description + "!"}).status_code == 202
            )
        produce_raw(settings, SUBMITTED, b"\x00not an event " + description.encode())
        with StageThread(spec(settings), settings):
            consume(settings, RECEIVED, count=2, timeout=60)
            consume(settings, DLQ, count=1, timeout=60)
    text = repr(logs)
    assert any(entry.get("event") == "report_rejected" for entry in logs)
    assert any(entry.get("event") == "record_dead_lettered" for entry in logs)
    for secret in (secret_path, email, description):
        assert secret not in text


def test_bad_records_on_the_topic(settings: Settings, topics: None) -> None:
    """Undecodable bytes and forged events are dead-lettered; bad content is rejected; the stage goes on."""
    parsed = logic.parse_report({"description": "fine"})
    good = logic.to_submitted(parsed, channel=ev.Channel.API, now=client.now_ms(), contact=None)
    forged = dataclasses.replace(
        good, envelope=dataclasses.replace(good.envelope, report_id=str(uuid.uuid4()))
    )
    bad_url = dataclasses.replace(
        logic.to_submitted(
            logic.parse_report({"description": "bad url"}),
            channel=ev.Channel.API,
            now=client.now_ms(),
            contact=None,
        ),
        urls=("http://exa mple.com/",),
    )
    bad_age = dataclasses.replace(
        logic.to_submitted(
            logic.parse_report({"description": "bad age"}),
            channel=ev.Channel.API,
            now=client.now_ms(),
            contact=None,
        ),
        victim=ev.Victim(age=-5),
    )
    produce_raw(settings, SUBMITTED, b"garbage", key=b"k")
    produce(settings, SUBMITTED, [forged, bad_url, bad_age, good])
    with StageThread(spec(settings), settings):
        dead = consume(settings, DLQ, count=2, timeout=60).messages
        out = consume(settings, RECEIVED, count=3, timeout=60).events
    reasons = sorted(dict(m.headers() or [])["dlq.reason"].decode() for m in dead)
    assert reasons == ["bad_marker", "report_id_mismatch"]
    rejected = sorted((e.reason_code, e.field) for e in out if isinstance(e, ev.ReportRejected))
    assert rejected == [("invalid_field", "urls[0]"), ("invalid_field", "victim.age")]
    assert any(
        isinstance(e, ev.ReportReceived) and e.envelope.report_id == good.envelope.report_id for e in out
    )


def test_intake_client_batches_and_confirms_on_flush(settings: Settings, topics: None) -> None:
    """An intake system's long-lived client queues reports, and flush() confirms every one is stored."""
    bodies = [{"description": f"batch {i}", "urls": [f"example.com/{uuid.uuid4().hex}"]} for i in range(5)]
    with client.IntakeClient(settings) as intake:
        receipts = [intake.submit(b, wait=False) for b in bodies]
        intake.flush()
        receipts.append(intake.submit({"description": "with contact", "contact": {"phone": "613 555 0142"}}))
    got = consume(settings, SUBMITTED, count=6, timeout=30).events
    assert sorted(e.envelope.report_id for e in got) == sorted(r.report_id for r in receipts)
    assert all(e.channel == ev.Channel.API for e in got)
    with_contact = [e for e in got if e.contact is not None]
    assert len(with_contact) == 1
    assert with_contact[0].anonymous is False


def _phone(settings: Settings, *args: str, answers: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "intake", "phone", *args],
        env=_env(settings),
        input=answers,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_phone_cli_takes_a_named_suspect_from_flags_and_from_prompts(
    settings: Settings, topics: None
) -> None:
    """A suspect named over the phone reaches the event (the first lane's reason), by flag or asked for."""
    flagged = _phone(
        settings,
        "--description",
        "a man asked my son for photos",
        "--suspect-name",
        "Smith, John",
        "--suspect-username",
        "jsmith99,js_99",
        "--suspect-email",
        "J.Smith@Example.COM",
        "--anonymous",
        "--yes",
    )
    assert flagged.returncode == 0, flagged.stderr
    answers = "\n".join(
        [
            "luring",  # category
            "someone in a game chat",  # description
            "",  # web addresses
            "",  # e-mail addresses reported
            "",  # phone numbers reported
            "",  # user names reported
            "y",  # the caller knows who the suspect is
            "",  # suspect's name: unknown
            "gamer_x",  # suspect's user names
            "",  # suspect's e-mails
            "+1 613 555 0199",  # suspect's phones
            "12",  # child's age
            "",  # child's province
            "",  # caller's province
            "n",  # no contact details
            "y",  # send
        ]
    )
    prompted = _phone(settings, answers=answers + "\n")
    assert prompted.returncode == 0, prompted.stdout + prompted.stderr
    assert "a suspect named" in prompted.stdout
    got = [
        e
        for e in consume(settings, SUBMITTED, count=2, timeout=60).events
        if isinstance(e, ev.ReportSubmitted)
    ]
    by_text = {e.description: e for e in got}
    first = by_text["a man asked my son for photos"].suspect
    assert first is not None
    assert first.names == ("Smith, John",)  # a name keeps its comma
    assert first.usernames == ("jsmith99", "js_99")
    assert first.emails == ("J.Smith@Example.COM",)  # as given; ingest normalises
    second = by_text["someone in a game chat"].suspect
    assert second is not None
    assert second.names == ()
    assert second.usernames == ("gamer_x",)
    assert second.phones == ("+1 613 555 0199",)


def test_phone_cli_refuses_a_bad_suspect_email_naming_it(settings: Settings, topics: None) -> None:
    result = _phone(
        settings, "--description", "x", "--suspect-email", "not-an-address", "--anonymous", "--yes"
    )
    assert result.returncode != 0
    assert "suspect.emails[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_phone_prompts_ask_again_after_a_bad_answer_and_lose_nothing(
    settings: Settings, topics: None
) -> None:
    """Found by an attack: an age of -5 was dropped without a word, and a bad URL, category or age was
    refused only after the whole call, which was then lost. Each bad answer is said and asked again."""
    answers = "\n".join(
        [
            "sextortion",  # not a category: asked again
            "luring",
            "he asked her for pictures",  # description
            "http://[::1, example.com/a",  # the first is not a URL: the list is asked again
            "example.com/a",
            "not-an-address",  # e-mail: asked again
            "kid@example.com",
            "",  # phone numbers
            "",  # user names
            "n",  # suspect unknown
            "-5",  # age: asked again
            "²",  # a digit, but not a number: asked again
            "999",  # out of range: asked again
            "13",
            "Ontario",  # not a code: asked again
            "on",
            "",  # caller's province
            "n",  # no contact
            "y",  # send
        ]
    )
    result = _phone(settings, answers=answers + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout
    assert said.count("Not taken:") == 7
    assert "the category is one of" in said
    assert "the age is a whole number of years from 0 to 120" in said
    assert "Traceback" not in said + result.stderr
    (event,) = [
        e
        for e in consume(settings, SUBMITTED, count=1, timeout=60).events
        if isinstance(e, ev.ReportSubmitted)
    ]
    assert str(event.reporter_category) == "luring"
    assert event.urls == ("example.com/a",)
    assert event.emails_reported == ("kid@example.com",)
    assert event.victim is not None
    assert event.victim.age == 13
    assert event.victim.location is not None
    assert event.victim.location.province == "ON"


def test_phone_offers_to_send_again_when_kafka_does_not_acknowledge(settings: Settings) -> None:
    """The call-taker still has the report when the broker does not answer: they are asked whether to
    send it again (same submission id, so a try that got through after all is the same report), rather
    than losing the call. A broker nobody listens on; one try (the delivery timeout, 15 s), then no."""
    answers = "\n".join(["", "a call about a chat", "", "", "", "", "n", "", "", "", "n", "y", "n"])
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "intake", "phone"],
        env={**_env(settings), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
        input=answers + "\n",
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.count("Send it again?") == 1
    assert "Kafka did not acknowledge the report" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
