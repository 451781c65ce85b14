"""The composition root: settings are read once here, and servers and clients are set up from here.

CLI commands, stage processes, the demo and the tests all start from these functions.
"""

from __future__ import annotations

import logging
from functools import cache

from pipeline import kafka, services
from pipeline.logging import configure
from pipeline.services.common import ServiceStatus
from pipeline.settings import Settings
from pipeline.topics import ALL_TOPICS, TopicSpec


@cache
def settings() -> Settings:
    """The process's settings, read from the environment exactly once; logging configured with them."""
    s = Settings.from_env()
    configure(s.log_format, getattr(logging, s.log_level.upper()))
    return s


def services_up(s: Settings) -> list[ServiceStatus]:
    rows = services.up(s)
    kafka.ensure_topics(s)
    # Schema of every projection and stage-owned table, created idempotently once the database answers.
    from pipeline.schema_sql import ensure_database_schema

    ensure_database_schema(s)
    return rows


def services_down(s: Settings) -> None:
    services.down(s)


def services_status(s: Settings) -> list[ServiceStatus]:
    return services.status(s)


def ensure_topics(s: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[str]:
    return kafka.ensure_topics(s, specs)


__all__ = [
    "ServiceStatus",
    "Settings",
    "ensure_topics",
    "services_down",
    "services_status",
    "services_up",
    "settings",
]
