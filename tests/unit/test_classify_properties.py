"""Properties of the classification over any valid prioritized report (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings

from pipeline import serde
from pipeline.classify.logic import classify
from pipeline.classify.rules import load_tables
from pipeline.errors import DomainError
from pipeline.events import ReportClassified, ReportPrioritized, Verdict
from tests.unit.strategies import st_event

TABLES = load_tables()
NOW = datetime(2026, 3, 1, tzinfo=UTC)


@settings(max_examples=120, deadline=None)
@given(st_event(ReportPrioritized))
def test_any_report_is_classified_consistently_or_refused(event: ReportPrioritized) -> None:
    """Every valid report gets one coherent classification per incident, encodable on the wire, or a DomainError."""
    try:
        out = classify(event, TABLES, NOW)
    except DomainError as err:
        refused: DomainError | None = err
    else:
        refused = None
    if refused is not None:
        assert refused.reason != "domain_error"  # every refusal names its own reason
        assert refused.field
        return
    assert [c.incident_id for c in out.incidents] == [i.incident_id for i in event.body.incidents]
    assert out.level == event.level
    for c in out.incidents:
        assert set(c.sections) <= set(TABLES.sections)
        assert c.reporter_category == event.body.reporter_category
        assert (c.verdict == Verdict.UNCLASSIFIABLE) == (c.assigned_category is None)
        if c.verdict == Verdict.CONFIRMED:
            assert c.assigned_category == c.reporter_category
        if c.verdict == Verdict.CORRECTED:
            assert c.assigned_category != c.reporter_category
        if c.verdict == Verdict.NOT_STATED:
            assert c.reporter_category is None
        if "346" in c.sections:
            assert "sextortion" in c.tags
            assert len(c.sections) > 1
    assert out.needs_analyst_review == any(c.verdict == Verdict.UNCLASSIFIABLE for c in out.incidents)
    back = serde.decode(serde.encode(out))
    assert isinstance(back, ReportClassified)
    assert back.incidents == out.incidents
