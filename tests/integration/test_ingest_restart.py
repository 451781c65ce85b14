"""The ingest stage as a real process, SIGKILLed mid-stream and restarted: no report lost, none doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Consumer

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.ingest import client, logic
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, dead_letter, name
from tests.integration.harness import produce

N = 6000


def _start(settings: Settings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TIPLINE_TOPIC_SUFFIX": settings.topic_suffix, "TIPLINE_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "stage", "ingest"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _read_until(cons: Consumer, into: list[Any], done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        for m in cons.consume(500, 0.2):
            if m.error() is None:
                into.append(serde.decode(m.value() or b""))


def test_sigkill_and_restart_lose_and_duplicate_nothing(
    settings: Settings, make_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    """Every submission yields exactly one ReportReceived with its own number across a SIGKILL and a restart."""
    make_topics(SUBMITTED, RECEIVED, dead_letter("ingest"))
    tag = uuid.uuid4().hex
    now = client.now_ms()
    events = [
        logic.to_submitted(
            logic.parse_report(
                {
                    "submission_id": f"{tag}-{i}",
                    "description": f"report {i}",
                    "urls": [f"example.com/{tag}/{i % 40}"],
                }
            ),
            channel=ev.Channel.API,
            now=now,
            contact=None,
        )
        for i in range(N)
    ]
    produce(settings, SUBMITTED, events)

    seen: list[Any] = []
    cons = kafka.consumer(settings, f"test.reader.{uuid.uuid4().hex}")
    cons.subscribe([name(RECEIVED, settings.topic_suffix)])
    log_path = tmp_path / "ingest.log"
    try:
        with log_path.open("ab") as log:
            first = _start(settings, log)
            try:
                _read_until(cons, seen, lambda: len(seen) >= N // 6, timeout=120)
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(30)
            at_kill = len(seen)
            assert N // 6 <= at_kill < N, f"the kill did not land mid-stream ({at_kill} of {N} seen)"

            second = _start(settings, log)
            try:
                _read_until(cons, seen, lambda: len(seen) >= N, timeout=300)
                _read_until(cons, seen, lambda: False, timeout=2.0)  # catch any duplicate that follows
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(60) == 0, log_path.read_text()[-2000:]
    finally:
        cons.close()

    received = [e for e in seen if isinstance(e, ev.ReportReceived)]
    assert len(seen) == len(received) == N, f"{len(seen)} records, {len(received)} ReportReceived"
    per_report = Counter(e.envelope.report_id for e in received)
    assert set(per_report) == {e.envelope.report_id for e in events}
    assert max(per_report.values()) == 1
    assert len({e.body.report_number for e in received}) == N
    # Linking survived the replay: per shared URL, counts run 1..k in report-number order.
    by_url: dict[str, list[ev.ReportReceived]] = {}
    for e in received:
        by_url.setdefault(e.body.incidents[0].urls[0].normalized, []).append(e)
    for group in by_url.values():
        group.sort(key=lambda e: int(e.body.report_number.rsplit("-", 1)[1]))
        assert [e.body.reporters_count for e in group] == list(range(1, len(group) + 1))
        assert {e.body.linked_to for e in group[1:]} == {group[0].envelope.report_id}
