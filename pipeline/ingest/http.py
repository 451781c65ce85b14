"""The secure server's HTTP endpoint (step 2, the web form's way in): FastAPI, served by uvicorn.

- ``POST /v1/reports`` with a JSON report (``application/json``) answers ``202`` with
  ``{"report_id", "submission_id", "reference"}`` only once ``ReportSubmitted`` is durably on the
  submitted topic (idempotent producer, ``acks=all``, its delivery report awaited without blocking the
  event loop: the producer is polled in a background thread that resolves the request's future with
  ``loop.call_soon_threadsafe``).
- ``GET /v1/health``.

The body (``pipeline.ingest.logic.parse_report`` is the reference; unknown fields are refused)::

    {"submission_id": "<client's UUID: send one so that a retry is safe>",
     "description": "...",                       (required)
     "category": "luring" | ... | null,           (null: not sure)
     "language": "en" | "fr",
     "incident_time": "2026-01-31T20:00:00Z",
     "urls": [...], "ip_addresses": [...], "emails_reported": [...], "phones_reported": [...],
     "usernames_reported": [...],
     "suspect": {...}, "victim": {"age": 13, "location": {"province": "ON"}, ...},
     "files": [{"file_name": ..., "hashes": [{"hash_type": "sha256", "value": ...}], "seen_at_url": ...}],
     "annotations": [...], "facts": {...}, "tech": {"chat_client": ..., "game": ..., ...},
     "anonymous": true | false,                   (default: true unless a contact is given)
     "contact": {"name", "email", "phone", "preferred_language", "time_to_call"},
     "reporter_location": {"province": "ON", "country": "CA", "city": "..."}}
                                                  (each optional: where the reporter is)

``reporter_location`` is where the reporter is, not the child or the suspect: it makes the published
counts by origin. ``province`` is a Canadian province or territory code (AB BC MB NB NL NS NT NU ON PE
QC SK YT), ``country`` an ISO 3166 alpha-2 code (``FR``; a reporter abroad gives the country only), a
province with a country other than CA is refused; any bad value is a 422 naming
``reporter_location.province`` or ``reporter_location.country``.

Without a ``submission_id`` the server makes one (a retry is then a new report). The report id is
``uuid5`` of the submission id, so a resubmission maps to the same report and ingest never numbers it
twice. The contact is encrypted (``pipeline.ingest.crypto``) before the event is produced.

Bad input always gets one 4xx with ``{"error": <sentence>, "field": <field or null>, "reason": <code>}``:
a body over ``MAX_BODY_BYTES`` (413), a content type other than JSON, multipart uploads included (415),
a body that is not UTF-8 or not JSON (400), JSON nested deeper than 20 levels, a missing or unknown
field, an ``intake_system`` (only a partner's ``pipeline.ingest.client`` sets it), a category outside
the list, an invalid URL, IP, phone or e-mail address, province or country code, a time outside years
1-9999 (UTC) or more than a day ahead, a date of birth after today or disagreeing with the age, a lone
UTF-16 surrogate in a string or a key, or anything that looks like an upload (a media field, a
``data:`` URI or a long run of base64 inside any text: 422, the tipline takes URLs and hashes only).
The broker not acknowledging in time is the server's problem, said so with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline import events as ev
from pipeline.errors import DomainError, ServiceError
from pipeline.ingest import client, crypto, logic
from pipeline.logging import get_logger
from pipeline.settings import Settings

MAX_BODY_BYTES = 256 * 1024
ACK_TIMEOUT_S = client.DELIVERY_TIMEOUT_MS / 1000 + 5

log = get_logger(stage="intake")


def _error(
    status: int, message: str, field: str | None = None, reason: str = "bad_request", **headers: str
) -> JSONResponse:
    # The answer must always encode: a lone surrogate from the request never reaches it in clear.
    message = message.encode("utf-8", "replace").decode("utf-8")
    field = field.encode("utf-8", "replace").decode("utf-8") if field is not None else None
    return JSONResponse(
        {"error": message, "field": field, "reason": reason}, status_code=status, headers=headers or None
    )


class _BodyTooLarge(Exception):
    pass


class Intake:
    """The app's shared clients: one producer (polled by a thread) and a small database pool."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: Producer | None = None
        self.pool: ConnectionPool[Any] | None = None
        self.ring: crypto.Keyring | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        self.producer = client.intake_producer(self.settings)
        self.ring = crypto.keyring(self.settings)
        self.pool = ConnectionPool(
            self.settings.database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True
        )
        self._poller = threading.Thread(target=self._poll, name="intake-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        producer = self._need_producer()
        while not self._stop.is_set():
            producer.poll(0.05)

    def _need_producer(self) -> Producer:
        if self.producer is None:
            raise ServiceError("the intake is not started")
        return self.producer

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)
        if self.producer is not None:
            self.producer.flush(10)
        if self.pool is not None:
            self.pool.close()

    def encrypt(self, report_id: str, contact: dict[str, str]) -> ev.EncryptedContact:
        if self.pool is None:
            raise ServiceError("the intake is not started")
        with self.pool.connection() as conn:
            return crypto.encrypt_contact(conn, report_id, contact, ring=self.ring)

    async def publish(self, event: ev.ReportSubmitted) -> None:
        """Produce and wait for the broker's acknowledgement without blocking the event loop."""
        producer = self._need_producer()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KafkaError | None] = loop.create_future()

        def settle(err: KafkaError | None) -> None:
            if not fut.done():
                fut.set_result(err)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(settle, err)

        try:
            client.produce_submitted(producer, self.settings, event, on_delivery)
        except BufferError:
            raise ServiceError("the intake queue is full; retry in a second") from None
        try:
            err = await asyncio.wait_for(fut, ACK_TIMEOUT_S)
        except TimeoutError:
            raise ServiceError("Kafka did not acknowledge the report in time; send it again") from None
        problem = client.delivery_error(err)
        if problem is not None:
            raise problem


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def create_app(settings: Settings) -> FastAPI:
    """The intake app; its producer and pool live as long as the app (lifespan)."""
    intake = Intake(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(intake.start)
        try:
            yield
        finally:
            await run_in_threadpool(intake.stop)

    app = FastAPI(title="Tipline intake", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.intake = intake

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), reason="http_error")

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        queued = len(intake.producer) if intake.producer is not None else None
        return {"status": "ok", "producer_queue": queued}

    @app.post("/v1/reports", status_code=202)
    async def submit(request: Request) -> JSONResponse:  # noqa: PLR0911 - one answer per kind of bad input
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype.startswith("multipart/"):
            return _error(415, f"uploads are refused: {logic.MEDIA_MESSAGE}.", "(body)", "media_not_accepted")
        if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
            return _error(
                415,
                "send the report as JSON with Content-Type: application/json.",
                None,
                "unsupported_media_type",
            )
        try:
            raw = await _read_body(request)
        except _BodyTooLarge:
            return _error(
                413, f"the report is larger than {MAX_BODY_BYTES // 1024} KiB.", "(body)", "too_large"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _error(400, f"the body is not UTF-8 (byte {exc.start}).", "(body)", "not_utf8")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            return _error(
                422, f"the JSON is nested more than {logic.MAX_DEPTH} levels deep.", "(body)", "too_deep"
            )
        except ValueError as exc:
            return _error(400, f"the body is not valid JSON ({exc}).", "(body)", "not_json")
        try:
            now = client.now_ms()
            parsed = logic.parse_report(data, allow_intake_system=False, now=now)
            enc = None
            if parsed.contact is not None:
                try:
                    enc = await run_in_threadpool(intake.encrypt, parsed.report_id, dict(parsed.contact))
                except (psycopg.Error, PoolTimeout):
                    log.warning("contact_key_store_unavailable", report_id=parsed.report_id)
                    return _error(
                        503,
                        "the key store is unavailable; send the report again shortly.",
                        None,
                        "unavailable",
                        **{"Retry-After": "5"},
                    )
            event = logic.to_submitted(parsed, channel=ev.Channel.WEB, now=now, contact=enc)
        except DomainError as exc:
            return _error(422, str(exc), exc.field, exc.reason)
        try:
            await intake.publish(event)
        except ServiceError as exc:
            log.warning("report_not_acknowledged", report_id=event.envelope.report_id, error=str(exc))
            return _error(503, str(exc), None, "unavailable", **{"Retry-After": "5"})
        log.debug("report_submitted", report_id=event.envelope.report_id, channel="web")
        return JSONResponse(client.receipt_of(event).as_json(), status_code=202)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes read the settings themselves)."""
    from pipeline import bootstrap

    return create_app(bootstrap.settings())


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, workers: int = 1) -> None:
    import uvicorn

    port = port or settings.http_port
    if workers > 1:
        uvicorn.run(
            "pipeline.ingest.http:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_level="warning",
        )
    else:
        uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_level="warning")
