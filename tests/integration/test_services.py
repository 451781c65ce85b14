"""The foundation against the real broker and database: round trips, topic settings, idempotent start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from pipeline import db, kafka
from pipeline.errors import ServiceError
from pipeline.services import LocalKafka
from pipeline.services.kafka import LocalKafka as _LocalKafka
from pipeline.settings import Settings
from pipeline.topics import ALL_TOPICS, SUBMITTED, name
from tests.conftest import free_port


def _consume_until(settings: Settings, topic: str, key: bytes, deadline_s: float = 30.0) -> bytes | None:
    cons = kafka.consumer(settings, f"test.{uuid.uuid4().hex}")
    try:
        cons.subscribe([topic])
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            msg = cons.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == key:
                return msg.value()
    finally:
        cons.close()
    return None


def test_record_round_trip(settings: Settings, make_topics: Callable[..., list[str]]) -> None:
    """A record produced with confluent-kafka comes back, unchanged, from the real broker."""
    make_topics(SUBMITTED)
    topic = name(SUBMITTED, settings.topic_suffix)
    prod = kafka.producer(settings)
    prod.produce(topic, key=b"k1", value=b"hello tipline")
    assert prod.flush(30) == 0
    assert _consume_until(settings, topic, b"k1") == b"hello tipline"


def test_topics_have_configured_partitions_and_infinite_retention(settings: Settings) -> None:
    """Every topic of the table exists with the configured partition count and retention.ms=-1."""
    made = kafka.ensure_topics(settings)
    assert len(made) == len(ALL_TOPICS)
    assert kafka.ensure_topics(settings) == []  # a second call creates nothing
    admin = kafka.admin(settings)
    md = admin.list_topics(timeout=10)
    for spec in ALL_TOPICS:
        assert len(md.topics[name(spec, settings.topic_suffix)].partitions) == settings.partitions
    res = ConfigResource(ResourceType.TOPIC, name(SUBMITTED, settings.topic_suffix))
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert configs["retention.ms"].value == "-1"
    assert configs["retention.bytes"].value == "-1"


def test_auto_topic_creation_is_off(settings: Settings) -> None:
    """Producing to a topic nobody created fails instead of creating it silently."""
    prod = kafka.producer(settings, **{"message.timeout.ms": 3000})
    errors: list[object] = []
    prod.produce(
        "tipline.nonexistent" + settings.topic_suffix, value=b"x", on_delivery=lambda e, _m: errors.append(e)
    )
    prod.flush(10)
    assert errors
    assert errors[0] is not None
    assert (
        "tipline.nonexistent" + settings.topic_suffix
        not in kafka.admin(settings).list_topics(timeout=10).topics
    )


def test_postgres_round_trip(base_settings: Settings) -> None:
    """A row written to the real PostgreSQL reads back."""
    with db.connect(base_settings) as conn:
        conn.execute("CREATE TEMP TABLE t (id int primary key, v text)")
        conn.execute("INSERT INTO t VALUES (1, %s)", ("été",))
        assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("été",)


def test_services_up_twice_is_harmless(base_settings: Settings) -> None:
    """A second `up` finds the running broker and starts nothing new."""
    from pipeline import services

    if base_settings.kafka_external:
        pytest.skip("the broker is the user's own (KAFKA_BOOTSTRAP_SERVERS): nothing is started")
    pid = LocalKafka(base_settings).running_pid()
    rows = services.up(base_settings)
    assert all(r.running for r in rows)
    assert LocalKafka(base_settings).running_pid() == pid


def test_records_survive_down_and_up(isolated_settings: Settings) -> None:
    """After `down` and `up`, a private broker still holds the records written before."""
    broker = _LocalKafka(isolated_settings)
    try:
        broker.up()
        kafka.ensure_topics(isolated_settings, (SUBMITTED,))
        prod = kafka.producer(isolated_settings)
        prod.produce(SUBMITTED.name, key=b"before-restart", value=b"kept")
        assert prod.flush(30) == 0
        broker.down()
        assert broker.running_pid() is None
        broker.up()
        assert _consume_until(isolated_settings, SUBMITTED.name, b"before-restart") == b"kept"
    finally:
        broker.down()


def test_port_taken_gives_one_clear_sentence(isolated_settings: Settings) -> None:
    """A broker port held by another program: a ServiceError naming the port and the variable to set."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", isolated_settings.kafka_port))
        blocker.listen(1)
        with pytest.raises(ServiceError, match=rf"Port {isolated_settings.kafka_port} .*TIPLINE_KAFKA_PORT"):
            _LocalKafka(isolated_settings).up()


def test_cli_port_taken_exits_without_trace(isolated_settings: Settings) -> None:
    """`tipline services up` on a taken port prints one error line and exits non-zero, with no traceback."""
    port = free_port()
    env = {
        **os.environ,
        "TIPLINE_STATE_DIR": str(isolated_settings.state_dir),
        "TIPLINE_KAFKA_PORT": str(port),
        "TIPLINE_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "services", "up"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"Port {port}" in " ".join(proc.stderr.split())
