"""confluent-kafka helpers: client configs built in one place, topic creation, readiness.

The clients at the edges (intake producers, analysts' and auditors' consumers, projections) and the
transactional stage runner all get their configuration here, so delivery guarantees are decided once:
producers are idempotent with ``acks=all``; consumers read only committed records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.errors import ServiceError
from pipeline.settings import Settings
from pipeline.topics import ALL_TOPICS, TopicSpec, name


def _quiet(_err: Any) -> None:
    """librdkafka's own error callback: connection noise is handled by our deadlines instead."""


EDGE_LOG_LEVEL = 2
"""librdkafka's log level (syslog numbers) for the short-lived clients of commands and of intake: only
critical lines. Its error lines (``%3|...|FAIL|... Connection refused``, several a second) came before
the one sentence the command says about the same failure (the services keep librdkafka's default)."""


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "error_cb": _quiet,
    }
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "error_cb": _quiet,
    }
    conf.update(overrides)
    return conf


def producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


def admin(settings: Settings) -> AdminClient:
    # Short-lived: besides connection errors, it logged an info line "Purging unserved events from
    # background queue" when dropped with an answer still on its way (it showed in the demo's output).
    conf = {"bootstrap.servers": settings.kafka_bootstrap, "error_cb": _quiet, "log_level": EDGE_LOG_LEVEL}
    return AdminClient(conf)  # type: ignore[arg-type]


def broker_answers(bootstrap: str, *, timeout: float = 2.0) -> bool:
    """True when a broker answers a metadata request."""
    # Refused connections are expected while the broker starts: the deadline reports them, not librdkafka.
    client = AdminClient({"bootstrap.servers": bootstrap, "error_cb": _quiet, "log_level": 0})  # type: ignore[dict-item]
    try:
        md = client.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(md.brokers)


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS, *, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet, with their partitions and retention; return those made."""
    client = admin(settings)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ServiceError(
            f"Kafka at {settings.kafka_bootstrap} did not answer; start it with `tipline services up`."
        ) from exc
    wanted = [
        NewTopic(
            name(s, settings.topic_suffix),
            num_partitions=settings.partitions,
            replication_factor=1,
            config=s.config(),
        )
        for s in specs
        if name(s, settings.topic_suffix) not in existing
    ]
    if not wanted:
        return []
    made: list[str] = []
    for topic, fut in client.create_topics(wanted, operation_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            made.append(topic)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise ServiceError(f"Kafka refused to create topic {topic}: {exc.args[0].str()}.") from exc
    return made


def delete_topics_containing(settings: Settings, fragment: str, *, timeout: float = 10.0) -> int:
    """Delete every topic whose name contains ``fragment`` (a run's suffix); how many were asked.

    A topic already gone is not an error. Each partition a run leaves behind costs the broker CPU while
    it idles, so runs that nobody inspects afterwards (tests, benchmarks) delete theirs.
    """
    if not fragment:
        raise ValueError("an empty fragment would name every topic")
    client = admin(settings)
    names = [t for t in client.list_topics(timeout=timeout).topics if fragment in t]
    if names:
        for fut in client.delete_topics(names, operation_timeout=timeout).values():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
    return len(names)
