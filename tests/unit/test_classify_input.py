"""Bad input and bad tables: the classify step refuses them with a reason instead of guessing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.classify.logic import decide
from pipeline.classify.rules import (
    DEFAULT_CATEGORIES,
    DEFAULT_CRIMINAL_CODE,
    DEFAULT_RULES,
    Tables,
    load_tables,
)
from pipeline.classify.samples import prioritized
from pipeline.errors import ConfigError, DomainError
from pipeline.events import (
    ContentKind,
    Incident,
    MaterialAction,
    ReportPrioritized,
    ReportReceived,
    Technology,
    Victim,
)

NOW = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def tables() -> Tables:
    return load_tables()


def _with_body(event: ReportPrioritized, **changes: Any) -> ReportPrioritized:
    return replace(event, body=replace(event.body, **changes))


BASE = prioritized(content=(ContentKind.SEXUAL_IMAGE_OR_VIDEO,), actions=(MaterialAction.SHARED,))
BAD_INPUTS = [
    ("level-zero", replace(BASE, level=0), "bad_level", "level"),
    ("level-five", replace(BASE, level=5), "bad_level", "level"),
    ("no-incidents", _with_body(BASE, incidents=()), "no_incidents", "body.incidents"),
    (
        "blank-incident-id",
        _with_body(BASE, incidents=(Incident(incident_id=" ", technology=Technology.EMAIL),)),
        "missing_incident_id",
        "body.incidents[0].incident_id",
    ),
    (
        "duplicate-incident-id",
        _with_body(
            BASE,
            incidents=(
                Incident(incident_id="X-1", technology=Technology.EMAIL),
                Incident(incident_id="X-1", technology=Technology.WEB_PAGE),
            ),
        ),
        "duplicate_incident_id",
        "body.incidents[1].incident_id",
    ),
    ("negative-age", _with_body(BASE, victim=Victim(age=-1)), "bad_victim_age", "body.victim.age"),
    ("impossible-age", _with_body(BASE, victim=Victim(age=200)), "bad_victim_age", "body.victim.age"),
    (
        "birth-after-report",
        _with_body(BASE, victim=Victim(date_of_birth=date(2027, 1, 1))),
        "bad_date_of_birth",
        "body.victim.date_of_birth",
    ),
    (
        "age-and-birth-disagree",
        _with_body(BASE, victim=Victim(age=9, date_of_birth=date(2000, 1, 1))),
        "contradictory_victim_age",
        "body.victim.age",
    ),
    (
        "actions-without-content",
        prioritized(actions=(MaterialAction.MADE,)),
        "incomplete_facts",
        "body.facts.content",
    ),
    (
        "blank-report-id",
        replace(BASE, envelope=replace(BASE.envelope, report_id="  ")),
        "missing_report_id",
        "envelope.report_id",
    ),
]


@pytest.mark.parametrize(
    ("event", "reason", "field"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_refused_with_reason_and_field(
    event: ReportPrioritized, reason: str, field: str, tables: Tables
) -> None:
    """Incomplete or contradictory input raises DomainError naming the reason and the field (dead letter)."""
    with pytest.raises(DomainError) as err:
        decide(event, tables, NOW)
    assert (err.value.reason, err.value.field) == (reason, field)


def test_other_event_types_are_refused(tables: Tables) -> None:
    """A record that is not a ReportPrioritized is refused, never ignored."""
    received = ReportReceived(envelope=BASE.envelope, body=BASE.body, submission_id="s-1")
    with pytest.raises(DomainError) as err:
        decide(received, tables, NOW)
    assert err.value.reason == "unexpected_event"


def test_age_and_birth_date_one_year_apart_are_accepted(tables: Tables) -> None:
    """An age and a date of birth that differ by the birthday not yet reached are not a contradiction."""
    event = _with_body(BASE, victim=Victim(age=14, date_of_birth=date(2011, 6, 1)))
    (out,) = decide(event, tables, NOW)
    assert out.incidents[0].sections == ("163.1(3)",)


# --- Tables ------------------------------------------------------------------------------------------

HEADER = "rule,category,sections,tags,when,fallback,reason\n"
BAD_RULES = [
    ("unknown-section", "r1,csam,163.9(9),,content has intimate_image,no,x\n", "163.9(9)"),
    ("unknown-content", "r1,csam,163.1(2),,content has selfies,no,x\n", "selfies"),
    ("unknown-flag", "r1,csam,163.1(2),,teleport,no,x\n", "teleport"),
    ("unknown-category", "r1,piracy,163.1(2),,money,no,x\n", "piracy"),
    ("bad-operator", "r1,csam,163.1(2),,content maybe intimate_image,no,x\n", "content maybe"),
    ("has-with-two-values", "r1,csam,163.1(2),,content has intimate_image|other,no,x\n", "content has"),
    ("unknown-role", "r1,luring,172.1,,sender is robot,no,x\n", "robot"),
    ("bad-fallback", "r1,csam,163.1(2),,money,maybe,x\n", "fallback"),
    ("empty-condition", "r1,csam,163.1(2),,,no,x\n", "no condition"),
    ("repeated-name", "r1,csam,163.1(2),,money,no,x\nr1,csam,163.1(3),,money,no,x\n", "repeated"),
    ("nothing-given", "r1,,,,money,no,x\n", "neither"),
]


@pytest.mark.parametrize(("body", "named"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
def test_bad_rules_table_is_refused_at_load(tmp_path: Path, body: str, named: str) -> None:
    """A rules table with a typo stops the stage at start with one sentence naming the problem."""
    path = tmp_path / "rules.csv"
    path.write_text("# a replacement table\n" + HEADER + body, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules\.csv") as err:
        load_tables(rules=path)
    assert named in str(err.value)


def test_missing_table_file_is_one_sentence(tmp_path: Path) -> None:
    """A table path that does not exist is reported as a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tables(rules=tmp_path / "absent.csv")


def test_categories_table_must_list_every_category(tmp_path: Path) -> None:
    """A replacement categories table that drops a category is refused."""
    lines = DEFAULT_CATEGORIES.read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / "categories.csv"
    path.write_text("".join(line for line in lines if not line.startswith("luring,")), encoding="utf-8")
    with pytest.raises(ConfigError, match="luring"):
        load_tables(categories=path)


def test_replacement_rules_table_changes_the_outcome(tmp_path: Path) -> None:
    """An operator's replacement table is used as written: here the only rule maps money to s.286.1(2)."""
    path = tmp_path / "rules.csv"
    path.write_text(HEADER + "paid,commercial_exploitation,286.1(2),,money,no,paid\n", encoding="utf-8")
    tables = load_tables(rules=path)
    (out,) = decide(prioritized(money=True), tables, NOW)
    assert out.incidents[0].sections == ("286.1(2)",)
    (none,) = decide(BASE, tables, NOW)
    assert none.needs_analyst_review is True


def test_shipped_tables_cite_shared_domain_and_every_category_has_a_rule() -> None:
    """The shipped data names its source, and every category can be reached by at least one rule."""
    for path in (DEFAULT_CATEGORIES, DEFAULT_CRIMINAL_CODE, DEFAULT_RULES):
        assert "shared/domain" in "".join(path.read_text(encoding="utf-8").splitlines()[:3])
    tables = load_tables()
    assert {r.category for r in tables.rules if r.category} == set(tables.categories)
    listed = {
        s for row in tables.categories.values() for s in row.sections if "(" in s or s in tables.sections
    }
    given = {s for r in tables.rules for s in r.sections}
    # s.279.03(2) (withholding documents) has no fact on the report form: analysts add it by override.
    assert listed - given == {"279.03(2)"}
