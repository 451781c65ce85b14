"""An analyst's override on the real broker: it supersedes the first classification; both stay on the log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from pipeline.classify.history import OverrideRefused, read_classifications, record_override
from pipeline.classify.rules import load_tables
from pipeline.classify.samples import prioritized
from pipeline.classify.stage import spec
from pipeline.errors import DomainError
from pipeline.events import ActorKind, Category, ContentKind, ReportClassified, Role, Technology, Verdict
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, PRIORITIZED, dead_letter, lane_of
from tests.integration.harness import StageThread, consume, produce

TOPICS = (*PRIORITIZED, *CLASSIFIED, dead_letter("classify"))


def _classified_report(settings: Settings, level: int = 3) -> ReportClassified:
    """Run the stage on one report whose facts support no category, and return its classification."""
    event = prioritized(
        level=level,
        reporter=Category.CSAM,
        content=(ContentKind.SEXUAL_CONVERSATION,),
        sender=Role.ADULT,
        technologies=(Technology.CHAT_IM,),
    )
    produce(settings, PRIORITIZED[level - 1], [event])
    with StageThread(spec(settings), settings):
        (first,) = consume(settings, CLASSIFIED, count=1, timeout=60).events
    assert isinstance(first, ReportClassified)
    assert first.needs_analyst_review is True
    return first


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal, so that rich does not wrap the one sentence over several lines.
    env = {**os.environ, "TIPLINE_TOPIC_SUFFIX": settings.topic_suffix, "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "classify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_override_supersedes_and_both_stay_on_the_topic(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """The override lands on the same lane, names the first event, and the first event is still there."""
    make_topics(*TOPICS)
    first = _classified_report(settings)
    result = record_override(
        settings,
        load_tables(),
        report_id=first.envelope.report_id,
        category="luring",
        sections=["172.1"],
        reason="the chat shows the child is 13",
        analyst="analyst-3",
    )
    assert result.written is True
    got = consume(settings, CLASSIFIED, count=2, timeout=60, settle=1.0)
    assert len(got.messages) == 2
    assert {lane_of(m.topic() or "") for m in got.messages} == {3}
    events = got.events
    assert events[0] == first
    second = events[1]
    assert isinstance(second, ReportClassified)
    assert second.supersedes == first.envelope.event_id
    assert second.override_reason == "the chat shows the child is 13"
    assert (second.envelope.actor.kind, second.envelope.actor.id) == (ActorKind.ANALYST, "analyst-3")
    assert [(c.assigned_category, c.sections, c.verdict) for c in second.incidents] == [
        (Category.LURING, ("172.1",), Verdict.CORRECTED)
    ]
    assert read_classifications(settings, first.envelope.report_id) == [first, second]

    again = record_override(
        settings,
        load_tables(),
        report_id=first.envelope.report_id,
        category="luring",
        sections=["172.1"],
        reason="the chat shows the child is 13",
        analyst="analyst-3",
    )
    assert again.written is False
    assert again.event == second


def test_cli_override_and_refusals(settings: Settings, make_topics: Callable[..., list[str]]) -> None:
    """The CLI overrides for an analyst, and refuses an auditor, a missing identity and an unknown report."""
    make_topics(*TOPICS)
    first = _classified_report(settings, level=2)
    rid = first.envelope.report_id

    auditor = _cli(
        settings,
        "override",
        rid,
        "--category",
        "csam",
        "--reason",
        "x",
        "--analyst",
        "a",
        "--role",
        "auditor",
    )
    nobody = _cli(settings, "override", rid, "--category", "csam", "--reason", "x")
    missing = _cli(
        settings, "override", "R-does-not-exist", "--category", "csam", "--reason", "x", "--analyst", "a"
    )
    for refused, words in ((auditor, "auditor"), (nobody, "--analyst"), (missing, "R-does-not-exist")):
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, refused.stderr
        assert words in lines[0]
        assert "Traceback" not in refused.stderr + refused.stdout
    assert "nothing was written" in missing.stderr

    done = _cli(
        settings,
        "override",
        rid,
        "--category",
        "csam",
        "--sections",
        "163.1(2),163.1(4)",
        "--reason",
        "images found in the chat",
        "--analyst",
        "analyst-9",
    )
    assert done.returncode == 0, done.stderr
    assert "supersedes" in done.stdout
    got = consume(settings, CLASSIFIED, count=2, timeout=60, settle=1.0)
    assert len(got.messages) == 2  # the refused overrides wrote nothing
    second = got.events[1]
    assert second.supersedes == first.envelope.event_id
    assert second.incidents[0].sections == ("163.1(2)", "163.1(4)")
    assert second.incidents[0].verdict == Verdict.CONFIRMED

    shown = _cli(settings, "show", rid)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(rid) >= 2
    assert "analyst:analyst-9" in shown.stdout
    assert f"[supersedes {first.envelope.event_id}: images found in the chat]" in shown.stdout


def test_override_refused_before_reading_when_not_an_analyst(settings: Settings) -> None:
    """An auditor is refused before the log is read or written (no topic is needed)."""
    with pytest.raises(DomainError, match="auditor"):
        record_override(
            settings,
            load_tables(),
            report_id="R-x",
            category="csam",
            sections=[],
            reason="r",
            analyst="aud",
            role=ActorKind.AUDITOR,
        )


def test_override_of_unknown_report_writes_nothing(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A report with no classification on the log is refused with one sentence."""
    make_topics(*TOPICS)
    with pytest.raises(OverrideRefused, match="has no classification on the log; nothing was written"):
        record_override(
            settings,
            load_tables(),
            report_id="R-ghost",
            category="csam",
            sections=[],
            reason="r",
            analyst="a",
        )
