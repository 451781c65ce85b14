"""PostgreSQL connections, built in one place from the settings."""

from __future__ import annotations

from typing import Any

import psycopg

from pipeline.errors import ServiceError
from pipeline.settings import Settings


def connect(settings: Settings, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(settings.database_url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise ServiceError(
            "PostgreSQL did not accept a connection; start it with `tipline services up` or check DATABASE_URL."
        ) from exc
