"""Step 5 stage: secondary classification under the Criminal Code of Canada.

- Input: the four prioritized lanes ``tipline.report.prioritized.p1..p4.v1`` (``ReportPrioritized``),
  read with ``lanes=True`` so a higher lane is drained before a lower one (with aging, ``pipeline.lanes``).
- Output: ``ReportClassified`` on the classified lane of the SAME level
  (``tipline.report.classified.p<level>.v1``), the analysts' queue.
- Key: the report id (all of one report's events stay on one partition, in order).
- Idempotency: the output's id is derived from the input's id (``Envelope.follow``), and the runner commits
  the output with the input offsets in one Kafka transaction: a replayed input yields the same event id and
  is never visible twice. No database: the rules are a pure function of the event and the tables.
- Tables: ``pipeline/classify/data/*.csv`` (or the files named by the ``Settings.extra`` keys
  ``classify.rules``, ``classify.categories``, ``classify.criminal_code``), loaded once by ``spec``;
  a bad table stops the stage at start with one sentence (``ConfigError``), before any record is read.
- Failure policy: an event that is not a ``ReportPrioritized`` or that is incomplete or contradictory
  (no incidents, duplicate incident ids, an impossible victim age, actions with no content, a level outside
  1-4) raises ``DomainError``; the runner dead-letters the raw record to ``tipline.deadletter.classify.v1``
  with the reason and field in the headers, and goes on. Undecodable records are dead-lettered the same way.
  Facts that support no category are not an error: the incident is marked unclassifiable and the report
  flagged ``needs_analyst_review``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.classify.logic import decide
from pipeline.classify.rules import Tables, tables_from_settings
from pipeline.logging import get_logger
from pipeline.runtime import Context, Handler, Output, StageSpec
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, PRIORITIZED

STAGE = "classify"
log = get_logger(stage=STAGE)


def make_handler(tables: Tables) -> Handler:
    """The runner's handler: the pure rules, the lane of the output, a debug log line (TIPLINE_LOG_LEVEL=debug)."""

    def handle(event: object, ctx: Context) -> Sequence[Output]:
        del ctx  # the step keeps no state
        outputs: list[Output] = []
        for classified in decide(event, tables, datetime.now(UTC)):
            outputs.append(Output(CLASSIFIED[classified.level - 1], classified))
            log.debug(
                "report_classified",
                report_id=classified.envelope.report_id,
                event_id=classified.envelope.event_id,
                level=classified.level,
                verdicts=[c.verdict.value for c in classified.incidents],
                categories=[
                    c.assigned_category.value if c.assigned_category else None for c in classified.incidents
                ],
                needs_analyst_review=classified.needs_analyst_review,
            )
        return outputs

    return handle


def spec(settings: Settings) -> StageSpec:
    tables = tables_from_settings(settings.extra)
    return StageSpec(name=STAGE, inputs=PRIORITIZED, handle=make_handler(tables), lanes=True)
