"""The servers the pipeline needs, started by the project when the environment names none."""

from __future__ import annotations

from pipeline.services.common import ServiceStatus
from pipeline.services.kafka import LocalKafka
from pipeline.services.postgres import LocalPostgres
from pipeline.settings import Settings


def up(settings: Settings) -> list[ServiceStatus]:
    """Start whatever is not running (idempotent) and wait until each answers."""
    return [LocalKafka(settings).up(), LocalPostgres(settings).up()]


def down(settings: Settings) -> None:
    LocalKafka(settings).down()
    LocalPostgres(settings).down()


def status(settings: Settings) -> list[ServiceStatus]:
    return [LocalKafka(settings).status(), LocalPostgres(settings).status()]


__all__ = ["LocalKafka", "LocalPostgres", "ServiceStatus", "down", "status", "up"]
