"""The assess stage on the real broker and database: queue rows, automated decisions, dead letters."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pipeline.assess import logic, queue, stage
from pipeline.db import connect
from pipeline.events import ActorKind, Category, Determination, HashType
from pipeline.settings import Settings
from pipeline.topics import ASSESSED, CLASSIFIED, dead_letter
from tests.integration.harness import StageThread, consume, produce, wait_for
from tests.unit.test_assess_support import classified


def _rows(settings: Settings) -> dict[str, tuple[Any, ...]]:
    with connect(settings) as c:
        rows = c.execute(
            "SELECT report_id, level, status, decided_by, classification_event_id FROM assess_queue "
            "WHERE namespace = %s",
            (settings.topic_suffix,),
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_stage_queues_reports_and_decides_only_the_clear_cases(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Known-hash and empty reports are decided (automated); the others wait in one row each, re-levelled."""
    make_topics(*CLASSIFIED, ASSESSED, dead_letter("assess"))
    digest = uuid.uuid4().hex
    with connect(settings) as c:
        queue.load_known_hashes(c, [logic.hash_key(HashType.MD5, digest)], source="test")
    known = classified(level=1, arrival_seq=1, hashes=((HashType.MD5, digest),))
    empty = classified(category=None, urls=(), level=4, arrival_seq=2)
    csam = classified(level=3, arrival_seq=3, with_contact=True)
    harms = classified(category=Category.ONLINE_HARMS, level=4, arrival_seq=4)
    raised = classified(
        report_id=csam.envelope.report_id, level=1, arrival_seq=3, supersedes=csam.envelope.event_id
    )
    produce(settings, CLASSIFIED[0], [known])
    produce(settings, CLASSIFIED[3], [empty, harms])
    produce(settings, CLASSIFIED[2], [csam])
    produce(settings, CLASSIFIED[0], [raised])
    with StageThread(stage.spec(settings), settings):
        # A valid event of the wrong type on a lane is refused and dead-lettered.
        produce(settings, CLASSIFIED[1], [_assessed_from(known)])
        got = consume(settings, ASSESSED, count=2, timeout=60, settle=2.0).events
        dlq = consume(settings, dead_letter("assess"), count=1, timeout=60).messages
        wait_for(lambda: len(_rows(settings)) == 4, timeout=30, what="four queue rows")
    by_report = {e.envelope.report_id: e for e in got}
    assert len(got) == 2
    assert by_report[known.envelope.report_id].determination is Determination.POTENTIALLY_ILLEGAL
    assert by_report[empty.envelope.report_id].determination is Determination.INFORMATIONAL
    assert {e.envelope.actor.kind for e in got} == {ActorKind.AUTOMATED}
    assert all(e.note and e.note.startswith("Automated pre-assessment") for e in got)
    rows = _rows(settings)
    assert rows[known.envelope.report_id][1:3] == ("decided", logic.AUTOMATED_ACTOR.id)
    assert rows[empty.envelope.report_id][1] == "decided"
    assert rows[harms.envelope.report_id][:2] == (4, "open")
    assert rows[csam.envelope.report_id] == (1, "open", None, raised.envelope.event_id)
    assert dict(dlq[0].headers())["dlq.reason"] == b"unexpected_event"


def _assessed_from(event: Any) -> Any:
    return logic.assessment(
        event,
        actor=logic.AUTOMATED_ACTOR,
        determination=Determination.NOT_ILLEGAL,
        child_may_need_protection=False,
        note=None,
        supersedes=None,
        occurred_at=event.envelope.occurred_at,
    )
