"""The faust-streaming engine: the SAME ``StageSpec`` (same rules, same handler) run as one faust agent.

``tipline stage <name> --engine faust`` runs a stage with this module instead of ``pipeline.runtime``.
The agent's body is the runner's contract in a few lines: decode the raw record with ``pipeline.serde``,
call ``spec.handle(event, Context(settings, db))``, send each ``Output`` to its topic keyed by the report
id with the serde headers. A record that cannot be decoded (``SerdeError``) or that the rules refuse
(``DomainError``) goes to the stage's dead-letter topic with the reason in the headers
(``pipeline.runtime.dead_letter_copy``); any other error is retried with backoff and, after
``spec.max_attempts`` failures, dead-lettered as ``unexpected_error``. Nothing is dropped silently.

Delivery: what faust gives, not what the transactional runner gives. ``processing_guarantee``
``"at_least_once"`` (the default) commits offsets on a timer (``broker_commit_interval``, 2.8 s) after the
attached sends are produced, so a SIGKILL replays everything since the last commit: outputs are
duplicated. ``"exactly_once"`` uses faust's per-partition transactional producers, but faust 0.15.3
puts a sent record in a transaction only when its topic is one the app itself consumes
(``TransactionManager.send`` names the transactional id after the OUTPUT partition's topic group, known
only for consumed topics); a stage's outputs go to topics it does not consume, so they are sent by the
plain producer (the broker's log segments show them with ``isTransactional: false``) and replayed after
a SIGKILL as with at_least_once (measured). A stage that keeps
state in PostgreSQL (``uses_db``) runs each event's handler in its own database transaction; faust has
no way to commit that together with the Kafka offsets, so the stage's own idempotency (deterministic
event ids, emitted-rows tables) is what stands between a replay and a duplicate. The measured figures
are in README "Delivery" (``scripts/measure_guarantees.py``).

Lanes: faust has no lane priority. A stage with ``spec.lanes`` reads all its lane topics as one stream,
without draining higher lanes first and without aging; use the confluent engine where priority matters.

Topics: the project creates its topics (``tipline topics create``); faust never declares one
(``topic_allow_declare=False``). The only internal topic faust would want, the leader-election topic, is
disabled (``topic_disable_leader=True``); no table is used (``store="memory://"``), so there is no
changelog topic. Consumer group: the stage's group plus ``.faust``, so it never shares committed offsets
with the confluent engine.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import faust

from pipeline import serde
from pipeline.errors import ConfigError, DomainError, SerdeError
from pipeline.logging import get_logger
from pipeline.runtime import Context, Output, StageSpec, dead_letter_copy
from pipeline.settings import Settings
from pipeline.topics import dead_letter, group, name

Guarantee = Literal["at_least_once", "exactly_once"]
GUARANTEES: tuple[str, ...] = ("at_least_once", "exactly_once")


@dataclass(frozen=True)
class _Source:
    """A consumed record's place, key and value, shaped like confluent-kafka's ``Message`` for its
    dead-letter copy."""

    topic_name: str
    partition_no: int
    offset_no: int
    key_bytes: bytes | None = None
    value_bytes: bytes | None = None

    def key(self) -> bytes | None:
        return self.key_bytes

    def value(self) -> bytes | None:
        return self.value_bytes

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_no

    def offset(self) -> int:
        return self.offset_no


def app_id(spec: StageSpec, settings: Settings) -> str:
    """The faust app id, which is also its consumer group: the stage's group plus ``.faust``."""
    return group(spec.name, settings.topic_suffix) + ".faust"


def _brokers(settings: Settings) -> list[str]:
    return ["kafka://" + b.strip() for b in settings.kafka_bootstrap.split(",") if b.strip()]


class FaustStage:
    """One faust app running one stage. Built by ``run_stage_faust``; ``app`` is the ``faust.App``."""

    def __init__(
        self,
        spec: StageSpec,
        settings: Settings,
        *,
        instance: str | int = 0,
        guarantee: str = "at_least_once",
    ) -> None:
        if guarantee not in GUARANTEES:
            raise ConfigError(f"processing guarantee {guarantee!r}: use 'at_least_once' or 'exactly_once'.")
        self.spec = spec
        self.settings = settings
        self.guarantee = guarantee
        self.suffix = settings.topic_suffix
        self.log = get_logger(stage=spec.name, instance=instance, engine="faust")
        self.db: Any = None
        self.processed = 0
        self.app = faust.App(
            app_id(spec, settings),
            broker=_brokers(settings),
            store="memory://",
            web_enabled=False,
            topic_allow_declare=False,
            topic_disable_leader=True,
            processing_guarantee=guarantee,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
        )
        self.inputs = self.app.topic(
            *(name(t, self.suffix) for t in spec.inputs), key_serializer="raw", value_serializer="raw"
        )
        self.dlq = self.app.topic(
            name(dead_letter(spec.name), self.suffix), key_serializer="raw", value_serializer="raw"
        )
        self._outputs: dict[str, Any] = {}
        self.app.agent(self.inputs, name=f"{spec.name}-stage")(self._agent)

    def _topic(self, spec_name: str) -> Any:
        topic = self._outputs.get(spec_name)
        if topic is None:
            topic = self.app.topic(spec_name, key_serializer="raw", value_serializer="raw")
            self._outputs[spec_name] = topic
        return topic

    # -- the agent -----------------------------------------------------------------------------------------
    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            source = _Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"")
            await self._process(source)
            self.processed += 1

    async def _process(self, source: _Source) -> None:
        try:
            event = serde.decode(source.value_bytes or b"")
        except SerdeError as exc:
            await self._dead_letter(source, (exc.reason, str(exc), exc.field))
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                outputs = self._handle(event)
                break
            except (DomainError, SerdeError) as exc:
                await self._dead_letter(source, (exc.reason, str(exc), exc.field))
                return
            except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered: never dropped
                self.log.error(
                    "record_failed",
                    topic=source.topic_name,
                    partition=source.partition_no,
                    offset=source.offset_no,
                    error=type(exc).__name__,
                    detail=traceback.format_exception_only(exc)[-1].strip(),
                    attempt=attempt,
                )
                if attempt >= self.spec.max_attempts:
                    failed = ("unexpected_error", "failed repeatedly; see the stage's log", None)
                    await self._dead_letter(source, failed)
                    return
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        encoded: list[tuple[Output, bytes]] = []
        for out in outputs:
            try:
                encoded.append((out, serde.encode(out.event)))
            except SerdeError as exc:
                why = (exc.reason, f"output not encodable: {exc}", exc.field)
                await self._dead_letter(source, why)
                return
        for out, value in encoded:
            await self._topic(name(out.topic, self.suffix)).send(
                key=(out.key or out.event.envelope.report_id).encode(),
                value=value,
                headers=serde.headers_for(out.event),
            )

    def _handle(self, event: Any) -> Sequence[Output]:
        """The stage's rules; with ``uses_db``, inside one database transaction for this event alone."""
        if self.db is None:
            return self.spec.handle(event, Context(self.settings))
        with self.db.transaction():
            return self.spec.handle(event, Context(self.settings, self.db))

    async def _dead_letter(self, source: _Source, why: tuple[str, str, str | None]) -> None:
        """Send the raw record to the stage's dead-letter topic; ``why`` is (reason, message, field)."""
        reason, message, field_name = why
        self.log.warning(
            "record_dead_lettered",
            topic=source.topic_name,
            partition=source.partition_no,
            offset=source.offset_no,
            reason=reason,
            field=field_name,
        )
        key, value, headers = dead_letter_copy(self.spec.name, source, reason, message, field_name)  # type: ignore[arg-type]
        await self.dlq.send(key=key, value=value, headers=headers)

    # -- life cycle ----------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the database connection (``uses_db``) and run the stage's ``on_start``."""
        if self.spec.uses_db:
            from pipeline.db import connect

            self.db = connect(self.settings)
        if self.spec.on_start is not None:
            self.spec.on_start(Context(self.settings, self.db))
        self.log.info(
            "stage_started",
            inputs=[name(t, self.suffix) for t in self.spec.inputs],
            guarantee=self.guarantee,
            lanes_without_priority=self.spec.lanes,
        )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        self.log.info("stage_stopped", processed=self.processed)


def run_stage_faust(
    spec: StageSpec, settings: Settings, *, instance: str | int = 0, guarantee: str = "at_least_once"
) -> None:
    """Run a stage as a faust worker until SIGTERM/SIGINT (faust's worker handles both)."""
    stage = FaustStage(spec, settings, instance=instance, guarantee=guarantee)
    stage.open()
    try:
        worker = faust.Worker(stage.app, loglevel=logging.WARNING, quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
    finally:
        stage.close()
