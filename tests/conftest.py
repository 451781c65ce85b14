"""Shared fixtures. Integration tests get the real servers the project starts (or the user's own, when
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL name them) and a topic suffix of their own."""

from __future__ import annotations

import logging
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from pipeline.settings import Settings
from pipeline.topics import TopicSpec


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """Per-report lines are debug: let them reach capture_logs whatever level an earlier test configured."""
    old = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(wrapper_class=old)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """The settings of the real services, started once per test session (idempotent)."""
    from pipeline import bootstrap

    s = Settings.from_env()
    bootstrap.services_up(s)
    return s


@pytest.fixture
def suffix() -> str:
    return "." + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(base_settings: Settings, suffix: str) -> Iterator[Settings]:
    """Settings whose topic and group names carry this test's own suffix (topics made on demand).

    The test's topics are deleted after it: a broker's idle CPU grows with its partitions (measured: 26%
    of a core with 14,000 left by earlier runs), and the suite makes thousands.
    """
    yield base_settings.with_suffix(suffix)
    _delete_topics_of(base_settings, suffix)


def _delete_topics_of(base: Settings, suffix: str) -> None:
    from confluent_kafka import KafkaException

    from pipeline import kafka

    try:
        kafka.delete_topics_containing(base, suffix)
    except KafkaException as exc:  # the broker was stopped by the test, say
        warnings.warn(f"could not delete the test's topics ({exc})", stacklevel=1)


@pytest.fixture
def make_topics(settings: Settings) -> Callable[..., list[str]]:
    from pipeline import kafka

    def make(*specs: TopicSpec) -> list[str]:
        return kafka.ensure_topics(settings, specs)

    return make


@pytest.fixture
def isolated_settings(tmp_path: Path) -> Settings:
    """Settings for a second, private broker: own state folder and ports (the jar cache is shared)."""
    base = Settings.from_env()
    env = {
        "TIPLINE_STATE_DIR": str(tmp_path / "state"),
        "TIPLINE_CACHE_DIR": str(base.cache_dir),
        "TIPLINE_KAFKA_PORT": str(free_port()),
        "TIPLINE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "TIPLINE_PG_PORT": str(free_port()),
    }
    return Settings.from_env(env)
