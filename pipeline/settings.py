"""Settings, read once from the environment into a frozen object (the composition root passes it on).

Nothing else in the package reads ``os.environ``: a stage, a test or the CLI gets a ``Settings``.

When ``KAFKA_BOOTSTRAP_SERVERS`` or ``DATABASE_URL`` is set, that server is the user's own and the
project starts nothing for it; otherwise ``tipline services up`` runs a local one under ``state_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.errors import ConfigError

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release fetched from Maven Central (pinned in compose/kafka/pom.xml too)."""

DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEFAULT_PG_PORT = 55432
DEFAULT_HTTP_PORT = 8088


def project_root() -> Path:
    """The checkout this package lives in (the folder holding pyproject.toml)."""
    return Path(__file__).resolve().parent.parent


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a port number; set it to a number from 1024 to 65535."
        ) from None
    if not 1024 <= value <= 65535:
        raise ConfigError(f"{name}={value} is outside 1024-65535; choose a free unprivileged port.")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable, in one immutable place."""

    root: Path
    state_dir: Path
    cache_dir: Path
    kafka_bootstrap: str
    kafka_external: bool
    kafka_port: int
    kafka_controller_port: int
    database_url_env: str
    """DATABASE_URL as given; empty when the project's own cluster is used."""
    database_external: bool
    pg_port: int
    http_port: int
    topic_suffix: str = ""
    """Appended to every topic and consumer-group name; tests use it to keep runs apart."""
    partitions: int = 3
    log_format: str = "console"
    log_level: str = "info"
    """TIPLINE_LOG_LEVEL: ``debug`` adds a line per report and step (ids, levels, verdicts; never contact
    details or descriptions); ``info`` (default) logs what each process starts, stops, refuses and fails."""
    extra: Mapping[str, str] = field(default_factory=dict)
    route_tables: Path | None = None
    resolver: str = "dns"
    """How the route step finds where a URL's host is: ``dns`` (the system resolver, a short deadline) or
    ``demo`` (the fixed table of demo hosts, never the network: the demo, the benchmark, the tests)."""
    """TIPLINE_ROUTE_TABLES: a folder of routing tables replacing the packaged ones (``pipeline.route.tables``)."""

    @property
    def database_url(self) -> str:
        """The user's DATABASE_URL, or the local cluster's (its password is made at first start, so
        this is read when asked, not when the settings are)."""
        if self.database_external:
            return self.database_url_env
        return local_database_url(self.state_dir, self.pg_port)

    @property
    def kafka_home(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    def with_suffix(self, suffix: str) -> Settings:
        return replace(self, topic_suffix=suffix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        root = project_root()
        state_dir = Path(env.get("TIPLINE_STATE_DIR") or root / ".local").resolve()
        cache_dir = Path(env.get("TIPLINE_CACHE_DIR") or root / ".cache").resolve()
        kafka_port = _port(env, "TIPLINE_KAFKA_PORT", DEFAULT_KAFKA_PORT)
        controller_port = _port(env, "TIPLINE_KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT)
        if controller_port == kafka_port:
            raise ConfigError("TIPLINE_KAFKA_PORT and TIPLINE_KAFKA_CONTROLLER_PORT must differ.")
        pg_port = _port(env, "TIPLINE_PG_PORT", DEFAULT_PG_PORT)
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        database_url = env.get("DATABASE_URL", "").strip()
        log_format = env.get("TIPLINE_LOG_FORMAT", "console")
        if log_format not in {"console", "json"}:
            raise ConfigError(f"TIPLINE_LOG_FORMAT={log_format!r}: use 'console' or 'json'.")
        partitions = _partitions(env.get("TIPLINE_PARTITIONS", "3"))
        return cls(
            root=root,
            state_dir=state_dir,
            cache_dir=cache_dir,
            kafka_bootstrap=bootstrap or f"127.0.0.1:{kafka_port}",
            kafka_external=bool(bootstrap),
            kafka_port=kafka_port,
            kafka_controller_port=controller_port,
            database_url_env=database_url,
            database_external=bool(database_url),
            pg_port=pg_port,
            http_port=_port(env, "TIPLINE_HTTP_PORT", DEFAULT_HTTP_PORT),
            topic_suffix=_suffix(env.get("TIPLINE_TOPIC_SUFFIX", "")),
            partitions=partitions,
            log_format=log_format,
            log_level=_choice(env, "TIPLINE_LOG_LEVEL", ("debug", "info", "warning"), "info"),
            route_tables=Path(env["TIPLINE_ROUTE_TABLES"]).expanduser()
            if env.get("TIPLINE_ROUTE_TABLES")
            else None,
            extra=_extra(env),
            resolver=_choice(env, "TIPLINE_RESOLVER", ("dns", "demo"), "dns"),
        )


EXTRA_ENV: Mapping[str, str] = {
    "TIPLINE_CLASSIFY_RULES": "classify.rules",
    "TIPLINE_CLASSIFY_CATEGORIES": "classify.categories",
    "TIPLINE_CLASSIFY_CRIMINAL_CODE": "classify.criminal_code",
    "TIPLINE_KNOWN_HASHES": "assess.known_hashes_file",
}
"""Operator-replaceable tables, by environment variable -> the key a step reads in ``Settings.extra``."""


def _extra(env: Mapping[str, str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for var, key in EXTRA_ENV.items():
        raw = env.get(var, "").strip()
        if raw:
            path = Path(raw)
            if not path.is_file():
                raise ConfigError(f"{var}={raw!r} is not a readable file; point it at the replacement table.")
            extra[key] = str(path.resolve())
    return extra


def _choice(env: Mapping[str, str], var: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(var, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{var}={value!r}: use one of {', '.join(allowed)}.")
    return value


def _suffix(raw: str) -> str:
    """A run suffix always starts with a dot: ``run1`` and ``.run1`` name the same environment."""
    raw = raw.strip()
    return raw if not raw or raw.startswith(".") else "." + raw


def _partitions(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"TIPLINE_PARTITIONS={raw!r} is not a whole number.") from None
    if not 1 <= value <= 64:
        raise ConfigError("TIPLINE_PARTITIONS must be between 1 and 64.")
    return value


LOCAL_DB_USER = "tipline"
LOCAL_DB_NAME = "tipline"


def local_password_file(state_dir: Path) -> Path:
    return state_dir / "postgres.password"


def local_database_url(state_dir: Path, port: int) -> str:
    """The URL of the project's own cluster; its password is made at first start and kept beside it."""
    pw_file = local_password_file(state_dir)
    password = pw_file.read_text().strip() if pw_file.exists() else ""
    auth = f"{LOCAL_DB_USER}:{password}" if password else LOCAL_DB_USER
    return f"postgresql://{auth}@127.0.0.1:{port}/{LOCAL_DB_NAME}"
