"""The HTTP intake against the real broker and database: 202 only once stored, every bad body a 4xx."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline import events as ev
from pipeline.ingest import logic
from pipeline.ingest.http import MAX_BODY_BYTES, create_app
from pipeline.ingest.stage import spec
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, dead_letter
from tests.integration.harness import StageThread, consume

JSON = {"content-type": "application/json"}


@pytest.fixture
def http(settings: Settings, make_topics: Callable[..., list[str]]) -> Iterator[TestClient]:
    make_topics(SUBMITTED, RECEIVED, dead_letter("ingest"))
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        yield client


def _deep(depth: int) -> str:
    return '{"description": "x", "suspect": ' + '{"names": ' * 0 + "[" * depth + "]" * depth + "}"


BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, str | None, str]] = [
    ("missing description", b'{"category": "luring"}', JSON, 422, "description", "missing_field"),
    (
        "category outside the list",
        b'{"description": "x", "category": "spam"}',
        JSON,
        422,
        "category",
        "invalid_field",
    ),
    (
        "invalid URL",
        b'{"description": "x", "urls": ["http://exa mple.com"]}',
        JSON,
        422,
        "urls[0]",
        "invalid_field",
    ),
    (
        "invalid IP",
        b'{"description": "x", "ip_addresses": ["10.0.0.256"]}',
        JSON,
        422,
        "ip_addresses[0]",
        "invalid_field",
    ),
    (
        "invalid phone",
        b'{"description": "x", "phones_reported": ["12"]}',
        JSON,
        422,
        "phones_reported[0]",
        "invalid_field",
    ),
    ("unknown field", b'{"description": "x", "colour": "red"}', JSON, 422, "colour", "invalid_field"),
    ("wrong type", b'{"description": 12}', JSON, 422, "description", "invalid_field"),
    ("top level not an object", b'["description"]', JSON, 422, "(body)", "invalid_field"),
    ("too large", b'{"description": "' + b"x" * MAX_BODY_BYTES + b'"}', JSON, 413, "(body)", "too_large"),
    ("not UTF-8", b'{"description": "caf\xe9"}', JSON, 400, "(body)", "not_utf8"),
    ("not JSON", b"description=hello", JSON, 400, "(body)", "not_json"),
    ("empty body", b"", JSON, 400, "(body)", "not_json"),
    ("NaN", b'{"description": "x", "victim": {"age": NaN}}', JSON, 400, "(body)", "not_json"),
    ("nested 25 deep", _deep(25).encode(), JSON, 422, "(body)", "too_deep"),
    ("nested 100000 deep", _deep(100_000).encode(), JSON, 422, "(body)", "too_deep"),
    (
        "multipart upload",
        b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nxx\r\n--b--\r\n",
        {"content-type": "multipart/form-data; boundary=b"},
        415,
        "(body)",
        "media_not_accepted",
    ),
    (
        "form encoded",
        b"description=x",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        None,
        "unsupported_media_type",
    ),
    ("no content type", b'{"description": "x"}', {}, 415, None, "unsupported_media_type"),
    (
        "a plain body labelled gzip",
        b'{"description": "x"}',
        {"content-type": "application/json", "content-encoding": "gzip"},
        415,
        None,
        "unsupported_media_type",
    ),
    (
        "image field",
        b'{"description": "x", "image": "iVBORw0KGgo="}',
        JSON,
        422,
        "image",
        "media_not_accepted",
    ),
    (
        "attachment inside files",
        b'{"description": "x", "files": [{"attachment": "AAAA"}]}',
        JSON,
        422,
        "files[0].attachment",
        "media_not_accepted",
    ),
    (
        "data URI",
        b'{"description": "x", "urls": ["data:image/jpeg;base64,/9j/4AAQ"]}',
        JSON,
        422,
        "urls[0]",
        "media_not_accepted",
    ),
    (
        "anonymous with contact",
        b'{"description": "x", "anonymous": true, "contact": {"email": "a@b.ca"}}',
        JSON,
        422,
        "anonymous",
        "invalid_field",
    ),
    (
        "bad contact e-mail",
        b'{"description": "x", "contact": {"email": "not-an-address"}}',
        JSON,
        422,
        "contact.email",
        "invalid_field",
    ),
    (
        "reporter province not Canadian",
        b'{"description": "x", "reporter_location": {"province": "NY"}}',
        JSON,
        422,
        "reporter_location.province",
        "invalid_field",
    ),
    (
        "reporter country not alpha-2",
        b'{"description": "x", "reporter_location": {"country": "USA"}}',
        JSON,
        422,
        "reporter_location.country",
        "invalid_field",
    ),
    (
        "URL with a backslash before the userinfo",
        b'{"description": "x", "urls": ["http://evil.example\\\\@files.nl-host.example/x"]}',
        JSON,
        422,
        "urls[0]",
        "invalid_field",
    ),
    (
        "URL with a hexadecimal IPv4 host",
        b'{"description": "x", "suspect": {"profile_urls": ["http://0x7f.0.0.1/"]}}',
        JSON,
        422,
        "suspect.profile_urls[0]",
        "invalid_field",
    ),
    (
        "URL with port 0",
        b'{"description": "x", "urls": ["http://example.com:0/"]}',
        JSON,
        422,
        "urls[0]",
        "invalid_field",
    ),
    (
        "lone surrogate in the description",
        b'{"description": "x\\ud800"}',
        JSON,
        422,
        "description",
        "invalid_field",
    ),
    (
        "lone surrogate in a URL",
        b'{"description": "x", "urls": ["http://a.example/\\udc00"]}',
        JSON,
        422,
        "urls[0]",
        "invalid_field",
    ),
    (
        "lone surrogate in a contact name",
        b'{"description": "x", "contact": {"name": "\\ud800", "email": "a@b.ca"}}',
        JSON,
        422,
        "contact.name",
        "invalid_field",
    ),
    (
        "lone surrogate in a key",
        b'{"description": "x", "victim": {"\\udc00": 1}}',
        JSON,
        422,
        "victim",
        "invalid_field",
    ),
    (
        "data URI inside the description",
        b'{"description": "look at this data:;base64,iVBORw0KGgo="}',
        JSON,
        422,
        "description",
        "media_not_accepted",
    ),
    (
        "base64 run in a file name",
        b'{"description": "x", "files": [{"file_name": "' + b"QUJD" * 300 + b'"}]}',
        JSON,
        422,
        "files[0].file_name",
        "media_not_accepted",
    ),
    (
        "incident time past year 9999 in UTC",
        b'{"description": "x", "incident_time": "9999-12-31T23:00:00-05:00"}',
        JSON,
        422,
        "incident_time",
        "invalid_field",
    ),
    (
        "incident time before year 1 in UTC",
        b'{"description": "x", "incident_time": "0001-01-01T00:00:00+05:00"}',
        JSON,
        422,
        "incident_time",
        "invalid_field",
    ),
    (
        # Taken with a 202, then dead-lettered: PostgreSQL text cannot hold a NUL (its link key).
        "a NUL inside a PhotoDNA hash",
        b'{"description": "x", "files": [{"hashes": [{"hash_type": "photodna", "value": "abc\\u0000def"}]}]}',
        JSON,
        422,
        "files[0].hashes[0]",
        "invalid_field",
    ),
    (
        # Intake took it; encoding the event refused it: a 500 (found by an attack with bad input).
        "incident time on the first day of year 1 in UTC",
        b'{"description": "x", "incident_time": "0001-01-01T23:59:59Z"}',
        JSON,
        422,
        "incident_time",
        "invalid_field",
    ),
    (
        "incident time far in the future",
        b'{"description": "x", "incident_time": "2999-01-01T00:00:00Z"}',
        JSON,
        422,
        "incident_time",
        "invalid_field",
    ),
    (
        "IP event time past year 9999 in UTC",
        b'{"description": "x", "suspect": {"ip_events": [{"ip": "1.2.3.4", "at": "9999-12-31T23:00:00-05:00"}]}}',
        JSON,
        422,
        "suspect.ip_events[0].at",
        "invalid_field",
    ),
    (
        "date of birth in the future",
        b'{"description": "x", "victim": {"date_of_birth": "2099-01-01"}}',
        JSON,
        422,
        "victim.date_of_birth",
        "invalid_field",
    ),
    (
        "negative victim age",
        b'{"description": "x", "victim": {"age": -5}}',
        JSON,
        422,
        "victim.age",
        "invalid_field",
    ),
    (
        "huge victim age",
        b'{"description": "x", "victim": {"age": 2147483647}}',
        JSON,
        422,
        "victim.age",
        "invalid_field",
    ),
    (
        "age disagreeing with date of birth",
        b'{"description": "x", "victim": {"age": 9, "date_of_birth": "1990-05-05"}}',
        JSON,
        422,
        "victim.age",
        "invalid_field",
    ),
    (
        "web form claiming to be a partner system",
        b'{"description": "x", "intake_system": "partner-a"}',
        JSON,
        422,
        "intake_system",
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_BODIES],
)
def test_bad_bodies_get_one_clear_4xx(  # noqa: PLR0917 - the parameters of one table row
    http: TestClient, body: bytes, headers: dict[str, str], status: int, field: str | None, reason: str
) -> None:
    """Each kind of bad input gets its 4xx with a JSON body naming the field, never a 5xx."""
    response = http.post("/v1/reports", content=body, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["field"] == field
    assert payload["reason"] == reason
    assert isinstance(payload["error"], str)
    assert payload["error"]


def test_wrong_method_and_path_answer_json_4xx(http: TestClient) -> None:
    """Unknown paths and methods get a JSON error too, in the same shape."""
    for response in (http.get("/v1/reports"), http.post("/v1/nothing", json={})):
        assert 400 <= response.status_code < 500
        assert set(response.json()) == {"error", "field", "reason"}


def test_health(http: TestClient) -> None:
    """The health endpoint answers 200 once the producer is up."""
    response = http.get("/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_accepted_report_is_on_the_topic_and_received(http: TestClient, settings: Settings) -> None:
    """A 202 means the event is on the submitted topic; ingest then numbers and splits it."""
    submission_id = str(uuid.uuid4())
    body: dict[str, Any] = {
        "submission_id": submission_id,
        "category": "luring",
        "description": "An adult asked a 13-year-old for pictures",
        "urls": ["https://www.Instagram.com/someone", f"http://example.com/{uuid.uuid4().hex}"],
        "emails_reported": ["Someone@Example.com"],
        "victim": {"age": 13, "location": {"province": "on"}},
    }
    response = http.post("/v1/reports", content=json.dumps(body), headers=JSON)
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert set(receipt) == {"report_id", "submission_id", "reference"}
    assert receipt["report_id"] == logic.report_id_for(submission_id)
    assert receipt["reference"] == logic.reference_for(receipt["report_id"])

    (submitted,) = consume(settings, SUBMITTED, count=1, timeout=10).events
    assert isinstance(submitted, ev.ReportSubmitted)
    assert submitted.channel == ev.Channel.WEB
    assert submitted.envelope.report_id == receipt["report_id"]

    with StageThread(spec(settings), settings):
        (received,) = consume(settings, RECEIVED, count=1, timeout=30).events
    assert isinstance(received, ev.ReportReceived)
    assert received.body.report_number.startswith(f"CT-{received.body.received_at.year}-")
    assert {i.technology for i in received.body.incidents} == {
        ev.Technology.SOCIAL_MEDIA,
        ev.Technology.WEB_PAGE,
        ev.Technology.EMAIL,
    }
    assert received.body.victim is not None
    assert received.body.victim.location is not None
    assert received.body.victim.location.province == "ON"
    assert received.body.anonymous is True
