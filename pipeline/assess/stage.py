"""Step 6 stage: fills the analysts' work queue and records the automated pre-assessment.

Input: the four classified lanes (``CLASSIFIED``, ``ReportClassified``), drained most urgent first.
Output: ``ReportAssessed`` on ``ASSESSED``, only for the clear cases the automated rules decide
(``pipeline.assess.logic.preassess``; actor kind ``automated``). Every other report becomes a row of
``assess_queue`` in PostgreSQL, where analysts (``tipline analyst next``/``decide``) or simulated
analysts claim it; their decisions are produced by ``pipeline.assess.queue.record_decision``.
Key: the report id.
Idempotency: one queue row per report; each classification event is remembered
(``assess_queue_seen``), so a replayed batch changes nothing and re-emits the same automated event
(same deterministic id, stored bytes). The database transaction commits before the Kafka one.
Runs: ``handle_batch`` gives a run of records (at most 25: the stage is lane-aware) to
``queue.enqueue_classified_many``, a few round trips for the run instead of about five per report, with
the same outputs and rows as ``handle`` on each record in turn (which stays the reference, and what the
runner falls back to when a run fails).
Locks: a batch's queue rows are locked in report order before its first run (``lock_batch``), the
order analysts' decisions lock them in, so a batch's later runs never wait on an analyst who waits
on them.
Failure policy: an input that is not a ``ReportClassified`` is refused (``DomainError``) and
dead-lettered; database or broker errors abort the batch, which the runner retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.assess import logic, queue
from pipeline.db import YoungTableAnalyzer
from pipeline.errors import ConfigError, DomainError
from pipeline.events import ReportAssessed, ReportClassified
from pipeline.runtime import BatchHandler, Context, Item, Output, Refusal, StageSpec
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLASSIFIED

KNOWN_HASHES_SETTING = "assess.known_hashes_file"
"""``Settings.extra`` key: a known-material list to load when the stage starts (optional)."""


def handle(event: object, ctx: Context) -> Sequence[Output]:
    match event:
        case ReportClassified():
            outputs = queue.enqueue_classified(ctx.db, ctx.settings.topic_suffix, event, queue.now_utc())
            return [Output(ASSESSED, out) for out in outputs]
        case _:
            raise _unexpected(event)


def make_batch_handler(analyzer: YoungTableAnalyzer | None = None) -> BatchHandler:
    """``handle`` over a run of records: the classified ones go through the queue together.

    ``analyzer``: ANALYZE the queue tables while they are young (see ``YoungTableAnalyzer``): their
    lookups by report id otherwise scan the whole table of a fresh deployment for its first minute.
    """

    def handle_batch(items: Sequence[Item], ctx: Context) -> list[Sequence[Output] | Refusal]:
        classified = [item.event for item in items if isinstance(item.event, ReportClassified)]
        done = queue.enqueue_classified_many(ctx.db, ctx.settings.topic_suffix, classified, queue.now_utc())
        if analyzer is not None:
            analyzer.grew(ctx.db, len(classified))
        return _results(items, done)

    return handle_batch


def lock_batch(keys: Sequence[bytes], ctx: Context) -> None:
    """Lock the queue rows of a batch's reports (its keys) in report order, before its runs lock theirs."""
    queue.lock_reports(ctx.db, ctx.settings.topic_suffix, [k.decode("utf-8", "replace") for k in keys])


def _results(items: Sequence[Item], done: list[list[ReportAssessed]]) -> list[Sequence[Output] | Refusal]:
    outputs = iter(done)
    results: list[Sequence[Output] | Refusal] = []
    for item in items:
        match item.event:
            case ReportClassified():
                results.append([Output(ASSESSED, out) for out in next(outputs)])
            case _:
                results.append(_unexpected(item.event))
    return results


def _unexpected(event: object) -> DomainError:
    return DomainError(
        f"the assess step takes ReportClassified events, not {type(event).__name__}",
        reason="unexpected_event",
    )


def load_known_hashes_file(ctx: Context, path: Path, *, replace: bool = False) -> int:
    """Load an operator's known-material list (``hash_type:value`` per line) into the table."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the known-hashes file {path}: {exc.strerror}.") from exc
    keys = logic.parse_known_hashes(text.splitlines(), source=str(path))
    return queue.load_known_hashes(ctx.db, keys, source=path.name, replace=replace)


def _on_start(ctx: Context) -> None:
    path = ctx.settings.extra.get(KNOWN_HASHES_SETTING)
    if path:
        load_known_hashes_file(ctx, Path(path))


def spec(settings: Settings) -> StageSpec:
    del settings  # nothing in the wiring depends on it; the handler reads ctx.settings
    return StageSpec(
        name="assess",
        inputs=CLASSIFIED,
        handle=handle,
        handle_batch=make_batch_handler(YoungTableAnalyzer(queue.TABLES)),
        lanes=True,
        uses_db=True,
        on_start=_on_start,
        lock_batch=lock_batch,
    )
