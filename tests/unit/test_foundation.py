"""Settings, the topic table, lanes and log redaction: pure parts of the foundation, no servers."""

from __future__ import annotations

import pytest
import structlog
from structlog.testing import capture_logs

from pipeline import topics
from pipeline.errors import ConfigError
from pipeline.lanes import LanePolicy, active_lanes
from pipeline.logging import REDACTED, redact
from pipeline.settings import Settings


def test_settings_default_to_local_services() -> None:
    """With no server named in the environment, the project's own broker and database are used."""
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert not s.kafka_external
    assert not s.database_external
    assert s.database_url.startswith("postgresql://tipline")
    assert ":55432/" in s.database_url


def test_settings_use_external_servers_when_named() -> None:
    """KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL switch off the local services."""
    s = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "DATABASE_URL": "postgresql://u@db/x"}
    )
    assert s.kafka_external
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert s.database_external
    assert s.database_url == "postgresql://u@db/x"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIPLINE_KAFKA_PORT": "abc"}, "not a port number"),
        ({"TIPLINE_KAFKA_PORT": "80"}, "outside 1024-65535"),
        ({"TIPLINE_KAFKA_PORT": "20000", "TIPLINE_KAFKA_CONTROLLER_PORT": "20000"}, "must differ"),
        ({"TIPLINE_LOG_FORMAT": "xml"}, "use 'console' or 'json'"),
        ({"TIPLINE_PARTITIONS": "0"}, "between 1 and 64"),
    ],
)
def test_bad_settings_give_one_sentence(env: dict[str, str], message: str) -> None:
    """A wrong setting raises ConfigError whose message says what to change."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_topic_table_names_are_unique_and_versioned() -> None:
    """Every topic name is unique, versioned, and every stage has a dead-letter topic."""
    names = [t.name for t in topics.ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(n.endswith(".v1") for n in names)
    for stage in topics.STAGES:
        assert topics.dead_letter(stage).name in names


def test_lane_of_recognises_lane_topics_with_suffix() -> None:
    """lane_of maps a lane topic (with or without a run suffix) to its level, other topics to None."""
    assert topics.lane_of(topics.PRIORITIZED[0].name + ".abc") == 1
    assert topics.lane_of(topics.CLASSIFIED[3].name) == 4
    assert topics.lane_of(topics.ASSESSED.name) is None


@pytest.mark.parametrize(
    ("waiting", "held", "now", "expected"),
    [
        ({1: False, 2: False, 3: False, 4: False}, {}, 0.0, {1, 2, 3, 4}),
        ({1: True, 2: False, 3: False, 4: True}, {}, 0.0, {1}),
        ({1: False, 2: True, 3: False, 4: True}, {}, 0.0, {1, 2}),
        ({1: True, 2: False, 3: False, 4: True}, {4: 0.0}, 4.9, {1}),
        ({1: True, 2: False, 3: False, 4: True}, {4: 0.0}, 5.0, {4}),
        ({1: False, 2: False, 3: False, 4: True}, {}, 0.0, {1, 2, 3, 4}),
    ],
)
def test_active_lanes(
    waiting: dict[int, bool], held: dict[int, float], now: float, expected: set[int]
) -> None:
    """Higher lanes with records waiting hold lower lanes back, until aging grants a held lane a batch alone."""
    assert active_lanes(waiting, held, now, LanePolicy(aging_s=5.0)) == expected


def test_redaction_removes_contact_description_and_url_paths() -> None:
    """The redact processor drops contact details, descriptions and URL paths at any depth."""
    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info(
            "report_received see https://evil.example/path/secret?x=1",
            contact={"email": "reporter@example.org"},
            description="what the reporter wrote",
            urls=["http://host.example/a/b"],
            nested={"reporter_phone": "+15145550000", "ok": 3},
            free_text="write to me at someone@example.com",
        )
    line = logs[0]
    flat = repr(line)
    assert "reporter@example.org" not in flat
    assert "someone@example.com" not in flat
    assert "what the reporter wrote" not in flat
    assert "/path/secret" not in flat
    assert "/a/b" not in flat
    assert "+15145550000" not in flat
    assert line["contact"] == REDACTED
    assert line["description"] == REDACTED
    assert line["nested"]["ok"] == 3
    assert "evil.example" in line["event"]
