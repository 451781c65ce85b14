"""`tipline bench` end to end on the real servers, small: its figures are written, and it leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from pipeline import db, kafka
from pipeline.bench import run_bench
from pipeline.settings import Settings
from projections.pg import schema_for


def test_the_bench_writes_its_figures_after_a_warm_up_and_deletes_what_its_runs_made(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "figures.json"
    printed = Console(record=True, width=200)
    figures = run_bench(settings, reports=150, seed=3, out=out, console=printed, warmup=100)

    saved = json.loads(out.read_text())
    assert saved["reports"] == 150
    assert saved["warmup_reports"] == 100
    assert saved["warmup"]["reports"] == 100
    assert saved["warmup"]["reports_per_s"] > 0
    assert saved["warmup"]["cpu_ms_per_report"]["ingest"] > 0
    assert saved["pipeline"]["all_closed_exactly_once"] is True
    assert saved["pipeline"]["reports_per_s"] > 0
    assert saved["raw_kafka"]["round_trip_per_s"] > 0
    assert saved["rebuild"]["events"] > 150  # every report's events, from the measured run's own topics
    assert figures["pipeline"] == saved["pipeline"]
    # Where its CPU went: every stage process, the intake system, and the services run here.
    cpu_ms = saved["pipeline"]["cpu_ms_per_report"]
    assert {"ingest", "prioritize", "classify", "assess", "route", "analysts", "intake systems"} <= set(
        cpu_ms
    )
    assert {"broker", "postgresql"} <= set(cpu_ms) or settings.kafka_external or settings.database_external
    assert all(v >= 0 for v in cpu_ms.values())
    assert cpu_ms["ingest"] > 0
    assert 0 < saved["pipeline"]["cores_busy"] <= saved["pipeline"]["cores"] * 1.2
    text = printed.export_text()
    assert "Warm-up: 100 reports" in text
    assert "pipeline end to end (reports/s)" in text
    assert "CPU per report (ms), all processes" in text

    # Its runs (the warm-up, the measured run, the priority runs) left no topic and no schema.
    run = settings.with_suffix(saved["topic_suffix"])
    assert run.topic_suffix.startswith(settings.topic_suffix + ".run")
    left = [t for t in kafka.admin(settings).list_topics(timeout=10).topics if run.topic_suffix in t]
    assert left == []
    made = [
        name
        for each in (run, run.with_suffix(run.topic_suffix + "w"))
        for name in (db.schema_name(each), schema_for(each))
    ]
    with db.connect(settings) as conn:
        found = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (made,)).fetchall()
    assert found == []
