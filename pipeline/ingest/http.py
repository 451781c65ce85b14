"""The secure server's HTTP endpoint (step 2, the web form's way in): FastAPI, served by uvicorn.

- ``POST /v1/reports`` with a JSON report (``application/json``) answers ``202`` with
  ``{"report_id", "submission_id", "reference"}`` only once ``ReportSubmitted`` is durably on the
  submitted topic (idempotent producer, ``acks=all``, its delivery report awaited without blocking the
  event loop: the producer is polled in a background thread that hands each poll's deliveries to the
  event loop in one ``loop.call_soon_threadsafe``). The endpoint is answered by ``IntakeApp`` as a plain
  ASGI handler, ahead of FastAPI's routing (see there why).
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
twice. The contact is encrypted (``pipeline.ingest.crypto``) before the event is produced, under its
report's data key; the keys of the requests in flight are made and stored together, one database round
trip per batch (``_KeyStore``), in the environment's schema like every other table.

Bad input always gets one 4xx with ``{"error": <sentence>, "field": <field or null>, "reason": <code>}``:
a body over ``MAX_BODY_BYTES`` (413), a content type other than JSON, multipart uploads included, or a
compressed body (415), a body that does not all arrive within ``BODY_TIMEOUT_S`` (408), a body that is not
UTF-8 or not JSON (400), JSON nested deeper than 20 levels, a missing or unknown
field, an ``intake_system`` (only a partner's ``pipeline.ingest.client`` sets it), a category outside
the list, an invalid URL, IP, phone or e-mail address, province or country code (a province with
another country than CA), more than 500 different URLs of one technology, a time outside 0001-01-02 to
9999-12-30 (UTC) or more than a day ahead, a date of birth after today or disagreeing with the age, a lone
UTF-16 surrogate in a string or a key, or anything that looks like an upload (a media field, a
``data:`` URI or a long run of base64 inside any text: 422, the tipline takes URLs and hashes only).
The broker not acknowledging in time is the server's problem, said so with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from pipeline import db
from pipeline import events as ev
from pipeline.errors import DomainError, SerdeError, ServiceError
from pipeline.ingest import client, crypto, logic
from pipeline.logging import get_logger
from pipeline.settings import Settings

MAX_BODY_BYTES = 256 * 1024
BODY_TIMEOUT_S = 30.0
"""How long a request's whole body may take to arrive once its headers have."""
LINGER_MS = 5
"""Reports from concurrent requests travel to the broker together within this window (fewer, larger
produce requests: less broker CPU), at the cost of as much latency before the 202."""
REPORTS_PATH = "/v1/reports"
ACK_TIMEOUT_S = client.DELIVERY_TIMEOUT_MS / 1000 + 5

log = get_logger(stage="intake")


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the endpoint answers: a status, a JSON payload and any extra headers."""

    status: int
    payload: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        # As Starlette's JSONResponse renders it.
        return json.dumps(
            self.payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8")

    def response(self) -> JSONResponse:
        return JSONResponse(self.payload, status_code=self.status, headers=dict(self.headers) or None)


def _error(
    status: int, message: str, field: str | None = None, reason: str = "bad_request", **headers: str
) -> _Answer:
    # The answer must always encode: a lone surrogate from the request never reaches it in clear.
    message = message.encode("utf-8", "replace").decode("utf-8")
    field = field.encode("utf-8", "replace").decode("utf-8") if field is not None else None
    return _Answer(status, {"error": message, "field": field, "reason": reason}, tuple(headers.items()))


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected before sending its whole body: there is no one to answer."""


KEY_BATCH_MAX = 1_000
"""At most this many reports' contact keys are made and read in one database round trip."""


class _KeyStore:
    """Contact data keys for the requests in flight, made and read in one statement per batch.

    Group commit: the first request with a contact starts a round trip at once; every request that
    arrives while it runs waits for the next one, which takes them all. An idle server adds no delay; a
    busy one makes one round trip (and one commit) for many reports instead of one each. A key is
    committed before its request goes on to encrypt with it and produce.
    """

    def __init__(self, pool: AsyncConnectionPool[Any], ring: crypto.Keyring) -> None:
        self.pool = pool
        self.ring = ring
        self._waiting: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def key_for(self, report_id: str) -> bytes | None:
        """The report's data key (made on first use); None once erased. Raises psycopg.Error, PoolTimeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes | None] = loop.create_future()
        self._waiting.append((report_id, fut))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:KEY_BATCH_MAX]
                del self._waiting[:KEY_BATCH_MAX]
                try:
                    async with self.pool.connection(timeout=ACK_TIMEOUT_S) as conn:
                        keys = await self.ring.data_keys_async(conn, [rid for rid, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiting request gets it (a 503 or a 500)
                    for _rid, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for rid, fut in batch:
                    if not fut.done():
                        fut.set_result(keys[rid])
        finally:
            self._draining = None


class Intake:
    """The app's shared clients: one producer (polled by a thread) and a small database pool."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log: Any = log
        self.producer: Producer | None = None
        self.pool: AsyncConnectionPool[Any] | None = None
        self.keys: _KeyStore | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # (future, error) of deliveries, appended by the poll thread's callbacks and handed to the event
        # loop in one call per poll rather than one wake-up per report.
        self._delivered: collections.deque[tuple[asyncio.Future[KafkaError | None], KafkaError | None]] = (
            collections.deque()
        )

    async def start(self) -> None:
        # Bound once logging is configured: the module's lazy proxy would bind again on every line, and
        # a filtered-out debug line on a bound logger costs nothing.
        self.log = log.bind()
        self._loop = asyncio.get_running_loop()
        await run_in_threadpool(self._start_clients)
        # The environment's schema (search_path), as every other connection of the project uses it: a
        # contact key must be where `tipline privacy erase` looks for it.
        schema = db.schema_name(self.settings)
        options = {} if schema == "public" else {"options": f"-c search_path={schema},public"}
        self.pool = AsyncConnectionPool(
            self.settings.database_url,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True, "connect_timeout": 10, **options},
            open=False,
        )
        await self.pool.open()
        self.keys = _KeyStore(self.pool, crypto.keyring(self.settings))
        self._poller = threading.Thread(target=self._poll, name="intake-producer-poll", daemon=True)
        self._poller.start()

    def _start_clients(self) -> None:
        db.connect(self.settings, autocommit=True).close()  # creates the environment's tables once
        self.producer = client.intake_producer(self.settings, **{"linger.ms": LINGER_MS})

    def _poll(self) -> None:
        producer = self._need_producer()
        loop = self._loop
        if loop is None:
            raise ServiceError("the intake is not started")
        while not self._stop.is_set():
            producer.poll(0.05)
            if self._delivered:
                batch = []
                while self._delivered:
                    batch.append(self._delivered.popleft())
                loop.call_soon_threadsafe(_settle, batch)

    def _need_producer(self) -> Producer:
        if self.producer is None:
            raise ServiceError("the intake is not started")
        return self.producer

    async def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            await run_in_threadpool(self._poller.join, 5)
        if self.producer is not None:
            await run_in_threadpool(self.producer.flush, 10)
        if self.pool is not None:
            await self.pool.close()

    async def encrypt(self, report_id: str, contact: Mapping[str, str]) -> ev.EncryptedContact:
        if self.keys is None:
            raise ServiceError("the intake is not started")
        return crypto.seal(report_id, await self.keys.key_for(report_id), contact)

    async def publish(self, event: ev.ReportSubmitted) -> None:
        """Produce and wait for the broker's acknowledgement without blocking the event loop."""
        producer = self._need_producer()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KafkaError | None] = loop.create_future()
        delivered = self._delivered

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            delivered.append((fut, err))

        try:
            client.produce_submitted(producer, self.settings, event, on_delivery)
        except BufferError:
            raise ServiceError("the intake queue is full; retry in a second") from None
        # The delivery report comes within message.timeout.ms, failed or not; this timer is a safety net.
        timer = loop.call_later(ACK_TIMEOUT_S, _expire, fut)
        try:
            err = await fut
        except TimeoutError:
            raise ServiceError("Kafka did not acknowledge the report in time; send it again") from None
        finally:
            timer.cancel()
        problem = client.delivery_error(err)
        if problem is not None:
            raise problem


def _expire(fut: asyncio.Future[KafkaError | None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _settle(batch: list[tuple[asyncio.Future[KafkaError | None], KafkaError | None]]) -> None:
    for fut, err in batch:
        if not fut.done():
            fut.set_result(err)


async def _read_body(receive: Receive, declared: str | None) -> bytes:
    """The whole body; ``_BodyTooLarge`` past ``MAX_BODY_BYTES``, ``_BodyTimeout`` when it has not all come
    within ``BODY_TIMEOUT_S`` (a Content-Length larger than what is sent held the request open for good)."""
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    task = asyncio.current_task()
    if task is None:  # not inside a task: nothing to time out (never under a server)
        return await _receive_body(receive)
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    # One timer per request (call_later: about a microsecond), not a wait_for task per chunk.
    timer = asyncio.get_running_loop().call_later(BODY_TIMEOUT_S, expire)
    try:
        return await _receive_body(receive)
    except asyncio.CancelledError:
        if not fired:
            raise
        task.uncancel()
        raise _BodyTimeout from None
    finally:
        timer.cancel()


async def _receive_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _first_header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _answer_report(intake: Intake, scope: Scope, receive: Receive) -> _Answer:  # noqa: PLR0911, PLR0912 - one answer per kind of bad input
    """``POST /v1/reports``: the whole exchange, from the request's headers and body to its answer."""
    ctype = (_first_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if ctype.startswith("multipart/"):
        return _error(415, f"uploads are refused: {logic.MEDIA_MESSAGE}.", "(body)", "media_not_accepted")
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        return _error(
            415,
            "send the report as JSON with Content-Type: application/json.",
            None,
            "unsupported_media_type",
        )
    encoding = (_first_header(scope, b"content-encoding") or "identity").strip().lower()
    if encoding != "identity":
        # The body is read as it comes: a compressed one was refused as not UTF-8, and a plain one
        # labelled gzip was taken.
        return _error(
            415,
            f"send the report uncompressed (Content-Encoding {encoding!r} is not taken).",
            None,
            "unsupported_media_type",
        )
    try:
        raw = await _read_body(receive, _first_header(scope, b"content-length"))
    except _BodyTooLarge:
        return _error(413, f"the report is larger than {MAX_BODY_BYTES // 1024} KiB.", "(body)", "too_large")
    except _BodyTimeout:
        return _error(
            408,
            f"the body did not all arrive within {BODY_TIMEOUT_S:g} s (is Content-Length right?).",
            "(body)",
            "timeout",
            Connection="close",
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
                enc = await intake.encrypt(parsed.report_id, parsed.contact)
            except (psycopg.Error, PoolTimeout):
                intake.log.warning("contact_key_store_unavailable", report_id=parsed.report_id)
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
    except SerdeError as exc:
        # Whatever intake accepted must encode; should a value slip past it, it is still the sender's
        # input at fault, named, never a 500.
        return _error(422, str(exc), exc.field, exc.reason)
    except ServiceError as exc:
        intake.log.warning("report_not_acknowledged", report_id=event.envelope.report_id, error=str(exc))
        return _error(503, str(exc), None, "unavailable", **{"Retry-After": "5"})
    intake.log.debug("report_submitted", report_id=event.envelope.report_id, channel="web")
    return _Answer(202, client.receipt_of(event).as_json())


async def _send(send: Send, answer: _Answer) -> None:
    body = answer.body()
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class IntakeApp(FastAPI):
    """The intake's FastAPI app, which answers ``POST /v1/reports`` itself, as a plain ASGI handler.

    Every other request (health, unknown paths and methods, the lifespan) goes through FastAPI as usual.
    The report endpoint is the hot path and needs none of FastAPI's routing, dependency solving or
    middleware: skipping them halves the framework's cost per report (measured by
    ``scripts/bench_ingest.py``). An exception escaping the handler still answers 500 (in the error's
    JSON shape) and is raised on to the server, as Starlette's error middleware does.
    """

    intake: Intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == REPORTS_PATH and scope["method"] == "POST":
            try:
                answer = await _answer_report(self.intake, scope, receive)
            except _ClientGone:
                return
            except Exception:
                self.intake.log.error("report_request_failed")
                await _send(send, _error(500, "the intake failed; send the report again.", None, "internal"))
                raise
            await _send(send, answer)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> IntakeApp:
    """The intake app; its producer and pool live as long as the app (lifespan)."""
    intake = Intake(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await intake.start()
        try:
            yield
        finally:
            await intake.stop()

    app = IntakeApp(title="Tipline intake", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.intake = intake
    app.state.intake = intake

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), reason="http_error").response()

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        queued = len(intake.producer) if intake.producer is not None else None
        return {"status": "ok", "producer_queue": queued}

    # POST /v1/reports is answered by IntakeApp.__call__; other methods on it get FastAPI's 405.
    @app.api_route(REPORTS_PATH, methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def reports_other_methods() -> JSONResponse:
        return _error(405, "send a report with POST.", None, "http_error", Allow="POST").response()

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes read the settings themselves)."""
    from pipeline import bootstrap

    return create_app(bootstrap.settings())


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, workers: int = 1) -> None:
    """Run the intake under uvicorn: its C event loop (uvloop) and HTTP parser (httptools), both brought
    by ``uvicorn[standard]``; several workers each parse reports on their own CPU."""
    import uvicorn

    port = port or settings.http_port
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "warning",
        # The intake never uses a reporter's address (no X-Forwarded-For to trust), and its answers do
        # not name the server software. (No measurable speed difference: measured.)
        "proxy_headers": False,
        "server_header": False,
    }
    if workers > 1:
        uvicorn.run("pipeline.ingest.http:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
