"""The classify stage's wiring, without servers: inputs, lanes, output topic, and what it logs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from pipeline.classify.samples import prioritized
from pipeline.classify.stage import spec
from pipeline.errors import ConfigError
from pipeline.events import ContentKind, MaterialAction, Role, Technology
from pipeline.runtime import Context
from pipeline.settings import Settings
from pipeline.topics import CLASSIFIED, PRIORITIZED


@pytest.fixture
def offline_settings() -> Settings:
    return Settings.from_env({})


def test_spec_drains_the_four_prioritized_lanes(offline_settings: Settings) -> None:
    """The stage reads all four prioritized lanes in lane order, with the lane policy on, and no database."""
    s = spec(offline_settings)
    assert (s.name, s.inputs, s.lanes, s.uses_db) == ("classify", PRIORITIZED, True, False)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_output_goes_to_the_classified_lane_of_the_same_level(offline_settings: Settings, level: int) -> None:
    """A level-N report is produced on classified.pN, keyed by its report id."""
    event = prioritized(
        level=level, content=(ContentKind.SEXUAL_IMAGE_OR_VIDEO,), actions=(MaterialAction.SHARED,)
    )
    (out,) = spec(offline_settings).handle(event, Context(offline_settings))
    assert out.topic == CLASSIFIED[level - 1]
    assert out.event.level == level
    assert out.key is None  # the runner keys by the report id


@pytest.mark.usefixtures("debug_logging")
def test_log_line_names_ids_and_verdicts_never_the_description(offline_settings: Settings) -> None:
    """The stage logs report_classified with ids, level and verdicts, never the reporter's description."""
    event = prioritized(
        level=1,
        content=(ContentKind.SEXUAL_CONVERSATION,),
        sender=Role.ADULT,
        recipient=Role.MINOR,
        age=13,
        technologies=(Technology.CHAT_IM,),
    )
    with structlog.testing.capture_logs() as logs:
        spec(offline_settings).handle(event, Context(offline_settings))
    (line,) = [entry for entry in logs if entry["event"] == "report_classified"]
    assert line["report_id"] == event.envelope.report_id
    assert line["verdicts"] == ["not_stated"]
    assert line["categories"] == ["luring"]
    assert event.body.description not in repr(logs)


def test_operator_tables_are_read_from_settings(offline_settings: Settings, tmp_path: Path) -> None:
    """Settings.extra may point at a replacement rules file; a broken one stops the stage at start."""
    broken = tmp_path / "rules.csv"
    broken.write_text(
        "rule,category,sections,tags,when,fallback,reason\nr,csam,999,,money,no,x\n", encoding="utf-8"
    )
    settings = replace(offline_settings, extra={"classify.rules": str(broken)})
    with pytest.raises(ConfigError, match="999"):
        spec(settings)
