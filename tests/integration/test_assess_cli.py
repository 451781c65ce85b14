"""`tipline analyst ...` as a person uses it: roles, bad input, reading, deciding, simulated analysts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pipeline.assess import queue, simulated
from pipeline.db import connect
from pipeline.events import ActorKind, Determination, HashType, ReportClassified, ReportClosed
from pipeline.settings import Settings
from pipeline.topics import ASSESSED
from tests.integration.harness import consume
from tests.unit.test_assess_support import canadian_victim, classified

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def tipline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIPLINE_TOPIC_SUFFIX": settings.topic_suffix, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "analyst", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def enqueue(settings: Settings, *events: ReportClassified) -> None:
    with connect(settings) as c, c.transaction():
        for ev in events:
            queue.enqueue_classified(c, settings.topic_suffix, ev, NOW)


@pytest.mark.parametrize(
    ("args", "code", "sentence"),
    [
        (
            ("decide", "CT-x", "--auditor", "aud.one", "--determination", "not_illegal"),
            5,
            "Auditor aud.one can read reports but cannot record a determination; only an analyst can.",
        ),
        (("next", "--auditor", "aud.one"), 5, "Auditor aud.one can read reports but cannot claim reports"),
        (
            ("decide", "CT-x", "--determination", "not_illegal"),
            5,
            "To record a determination, give your analyst identity with --analyst ID.",
        ),
        (
            ("decide", "CT-x", "--analyst", "J Doe", "--determination", "not_illegal"),
            1,
            "analyst identity 'J Doe' is not valid",
        ),
        (
            ("decide", "CT-nope", "--analyst", "jdoe", "--determination", "not_illegal"),
            4,
            "No report 'CT-nope' is in the analysts' queue",
        ),
        (("show", "CT-nope", "--auditor", "aud.one"), 4, "No report 'CT-nope' is in the analysts' queue"),
        (("show", "CT-nope"), 5, "give your identity with --analyst ID or --auditor ID"),
    ],
)
def test_refusals_are_one_sentence_and_a_non_zero_exit(
    settings: Settings, make_topics: Callable[..., list[str]], args: tuple[str, ...], code: int, sentence: str
) -> None:
    """Auditors cannot decide or claim, identities are checked, unknown reports refused: one line each."""
    make_topics(ASSESSED)
    result = tipline(settings, *args)
    assert result.returncode == code, result.stderr
    assert sentence in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_auditor_reads_a_report_without_the_reporters_contact(settings: Settings) -> None:
    """`show` by an auditor prints the report, URLs, hashes, victim and description, never the contact."""
    report = classified(
        with_contact=True,
        victim=canadian_victim(),
        description="seen on a [red]forum[/red]",
        hashes=((HashType.MD5, "ab" * 16),),
    )
    enqueue(settings, report)
    result = tipline(settings, "show", report.body.report_number, "--auditor", "aud.one")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert report.body.report_number in out
    assert "https://example.test/a" in out
    assert "A. Child" in out
    assert "seen on a [red]forum[/red]" in out  # reporters' text is shown as typed, never as markup
    assert f"md5:{'ab' * 16}" in out
    assert "contact details on file (encrypted, not shown)" in out
    assert "sealed-contact-bytes" not in out
    assert "k1" not in out.split()


def test_next_then_decide_records_an_attributed_determination(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """An analyst claims the most urgent report with `next` and decides it; the event names the analyst."""
    make_topics(ASSESSED)
    low, urgent = classified(level=4, arrival_seq=1), classified(level=1, arrival_seq=2)
    enqueue(settings, low, urgent)
    claimed = tipline(settings, "next", "--analyst", "jdoe")
    assert claimed.returncode == 0, claimed.stderr
    assert urgent.body.report_number in claimed.stdout
    assert "Claimed by jdoe" in claimed.stdout
    other = tipline(
        settings, "decide", urgent.body.report_number, "--analyst", "mary", "--determination", "not_illegal"
    )
    assert other.returncode == 4
    assert "claimed by jdoe" in other.stderr
    done = tipline(
        settings,
        "decide",
        urgent.body.report_number,
        "--analyst",
        "jdoe",
        "--determination",
        "potentially_illegal",
        "--child-may-need-protection",
        "--note",
        "forward",
    )
    assert done.returncode == 0, done.stderr
    assert "Recorded potentially_illegal" in done.stdout
    (event,) = consume(settings, ASSESSED, count=1, timeout=60, settle=1.0).events
    assert event.envelope.report_id == urgent.envelope.report_id
    assert event.envelope.actor.kind is ActorKind.ANALYST
    assert event.envelope.actor.id == "analyst:jdoe"
    assert event.child_may_need_protection is True
    assert event.note == "forward"


def test_simulated_analysts_decide_everything_reproducibly(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """`simulate --seed 7 --analysts 2` decides every waiting report as the pure policy says, labelled."""
    make_topics(ASSESSED)
    reports = [classified(level=1 + i % 4, arrival_seq=i) for i in range(24)]
    enqueue(settings, *reports)
    result = tipline(
        settings, "simulate", "--seed", "7", "--analysts", "2", "--until-empty", "--idle-seconds", "0.5"
    )
    assert result.returncode == 0, result.stderr
    assert "recorded 24 determinations" in " ".join(result.stdout.split())
    events = consume(settings, ASSESSED, count=24, timeout=60, settle=1.0).events
    assert len(events) == 24
    expected = {r.envelope.report_id: simulated.decide(r, 7).determination for r in reports}
    assert {e.envelope.report_id: e.determination for e in events} == expected
    assert {(e.envelope.actor.kind, e.envelope.actor.id) for e in events} == {
        (ActorKind.SIMULATED, "simulated:seed=7")
    }
    assert Counter(e.determination for e in events)[Determination.POTENTIALLY_ILLEGAL] > 0


def test_simulate_runs_until_sigterm_and_decides_reports_arriving_meanwhile(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """By default simulated analysts wait for work, decide what arrives, and exit cleanly on SIGTERM."""
    make_topics(ASSESSED)
    env = {**os.environ, "TIPLINE_TOPIC_SUFFIX": settings.topic_suffix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "analyst", "simulate", "--seed", "3", "--analysts", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        reports = [classified(arrival_seq=i) for i in range(6)]
        enqueue(settings, *reports)
        events = consume(settings, ASSESSED, count=6, timeout=60).events
        assert {e.envelope.report_id for e in events} == {r.envelope.report_id for r in reports}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "recorded 6 determinations" in " ".join(out.decode().split())


def test_a_restarted_simulated_analyst_takes_back_its_own_claim(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """A claim left by a killed simulated worker is resumed by the same worker name, without waiting."""
    make_topics(ASSESSED)
    report = classified()
    enqueue(settings, report)
    with connect(settings) as c:
        held = queue.claim_next(c, settings.topic_suffix, "simulated.seed7.0", now=datetime.now(UTC))
    assert held is not None
    summary = queue.simulate(settings, seed=7, analysts=1, until_empty=True, idle_s=0.0)
    assert summary.decided == 1
    assert summary.by_worker == Counter({"simulated.seed7.0": 1})


def test_a_revision_of_a_closed_report_says_what_stays_done(
    settings: Settings, make_topics: Callable[..., list[str]]
) -> None:
    """Revising after the route step closed the report: recorded, and the analyst is told that referrals
    already made stand (the route step never recalls one); before it closed, no such note."""
    import dataclasses
    import random

    from projections import pg, samples

    make_topics(ASSESSED)
    report = classified(level=2, arrival_seq=1)
    enqueue(settings, report)
    number = report.body.report_number
    first = tipline(settings, "decide", number, "--analyst", "jdoe", "--determination", "potentially_illegal")
    assert first.returncode == 0, first.stderr
    assert "Note:" not in first.stdout
    # The read model as the projector leaves it once the route step closed the report (referred).
    story = samples.lifecycle(1, random.Random(5))
    story = [
        dataclasses.replace(e, envelope=dataclasses.replace(e.envelope, report_id=report.envelope.report_id))
        for e in story
    ]
    closed = next(e for e in story if isinstance(e, ReportClosed))
    schema = pg.schema_for(settings)
    with connect(settings, autocommit=True) as conn:
        pg.install(conn, schema)
        pg.PgView(conn, schema).apply(story)
    try:
        revised = tipline(
            settings, "decide", number, "--analyst", "jdoe", "--determination", "not_illegal", "--revise"
        )
        assert revised.returncode == 0, revised.stderr
        said = " ".join(revised.stdout.split())
        assert "Recorded not_illegal" in said
        assert f"Note: {number} was already closed (outcome {closed.outcome.value}" in said
        assert "a referral is never recalled" in said
    finally:
        with connect(settings, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
