"""The faust engine on the real broker: the same classify stage, run as a faust agent, gives the same events
as the transactional confluent runner, and dead-letters what it cannot decode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from faust.types.enums import ProcessingGuarantee

from pipeline import kafka
from pipeline.classify.samples import prioritized
from pipeline.classify.stage import spec
from pipeline.events import Category, ContentKind, MaterialAction, ReportClassified
from pipeline.faust_engine import FaustStage, app_id
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, PRIORITIZED, dead_letter, group, lane_of
from tests.integration.harness import StageThread, consume, produce, produce_raw

TOPICS = (*PRIORITIZED, *CLASSIFIED, dead_letter("classify"))
N = 40


def _inputs() -> list[object]:
    return [
        prioritized(
            level=1 + i % 4,
            reporter=Category.CSAM,
            content=(ContentKind.SEXUAL_IMAGE_OR_VIDEO,),
            actions=(MaterialAction.POSSESSED,) if i % 2 else (MaterialAction.MADE,),
        )
        for i in range(N)
    ]


@contextmanager
def faust_stage(settings: Settings, log: Path, guarantee: str = "at_least_once") -> Iterator[None]:
    """``tipline stage classify --engine faust`` in a subprocess, stopped with SIGTERM at the end."""
    env = dict(os.environ, TIPLINE_TOPIC_SUFFIX=settings.topic_suffix)
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "stage",
        "classify",
        "--engine",
        "faust",
        "--guarantee",
        guarantee,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=settings.root, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise
    assert rc == 0, f"the faust stage exited with {rc}: {log.read_text()[-2000:]}"


def _by_lane(messages: Sequence[Any], events: Sequence[Any]) -> set[tuple[int | None, str]]:
    return {(lane_of(m.topic() or ""), e.envelope.event_id) for m, e in zip(messages, events, strict=True)}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_faust_engine_gives_the_same_events_as_the_confluent_engine(
    settings: Settings, make_topics: Callable[..., list[str]], tmp_path: Path, guarantee: str
) -> None:
    """N reports in, the same N classified events (ids and lanes) out of each engine; bad bytes dead-lettered."""
    inputs = _inputs()
    make_topics(*TOPICS)
    for event in inputs:
        produce(settings, PRIORITIZED[event.level - 1], [event])  # type: ignore[attr-defined]
    with StageThread(spec(settings), settings):
        confluent = consume(settings, CLASSIFIED, count=N, timeout=60, settle=1.0)

    faust_settings = settings.with_suffix(settings.topic_suffix + "f")
    kafka.ensure_topics(faust_settings, TOPICS)
    for event in inputs:
        produce(faust_settings, PRIORITIZED[event.level - 1], [event])  # type: ignore[attr-defined]
    produce_raw(faust_settings, PRIORITIZED[0], b"not an event", key=b"R-bad")
    with faust_stage(faust_settings, tmp_path / "faust.log", guarantee):
        via_faust = consume(faust_settings, CLASSIFIED, count=N, timeout=90, settle=1.0)
        dead = consume(faust_settings, dead_letter("classify"), count=1, timeout=30)

    assert all(isinstance(e, ReportClassified) for e in via_faust.events)
    assert len(via_faust.messages) == len(confluent.messages) == N
    assert _by_lane(via_faust.messages, via_faust.events) == _by_lane(confluent.messages, confluent.events)
    assert {m.key() for m in via_faust.messages} == {e.envelope.report_id.encode() for e in inputs}  # type: ignore[attr-defined]
    (bad,) = dead.messages
    headers = dict(bad.headers() or [])
    assert bad.value() == b"not an event"
    assert headers["dlq.stage"] == b"classify"
    assert headers["dlq.source.topic"] == PRIORITIZED[0].name.encode() + faust_settings.topic_suffix.encode()
    assert headers["dlq.reason"]


def test_faust_app_is_configured_not_to_declare_topics_nor_share_offsets(settings: Settings) -> None:
    """The faust app never creates topics, has no leader topic, and uses its own consumer group."""
    stage = FaustStage(spec(settings), settings, guarantee="exactly_once")
    conf: Any = stage.app.conf
    assert conf.topic_allow_declare is False
    assert conf.topic_disable_leader is True
    assert conf.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
    assert app_id(stage.spec, settings) == group("classify", settings.topic_suffix) + ".faust"
    assert conf.id == group("classify", settings.topic_suffix) + ".faust"
