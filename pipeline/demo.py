"""`tipline demo`: bring up the services and push reports through the pipeline.

This first version proves the foundation: services up, topics created, one record produced with
confluent-kafka and read back from the real broker. The whole-pipeline demo grows from here.
"""

from __future__ import annotations

import time
import uuid

from rich.console import Console

from pipeline import bootstrap, kafka
from pipeline.errors import ServiceError
from pipeline.settings import Settings
from pipeline.topics import SUBMITTED, name


def run_demo(settings: Settings, *, reports: int, seed: int, console: Console) -> None:
    started = time.monotonic()
    bootstrap.services_up(settings)
    console.print(f"Services ready in {time.monotonic() - started:.1f} s.")
    topic = name(SUBMITTED, settings.topic_suffix)
    marker = uuid.uuid4().hex.encode()
    prod = kafka.producer(settings)
    prod.produce(topic, key=marker, value=b"demo-ping")
    if prod.flush(30) != 0:
        raise ServiceError("The demo record was not acknowledged by Kafka within 30 s.")
    cons = kafka.consumer(settings, f"tipline.demo.{marker.decode()}")
    try:
        cons.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = cons.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == marker:
                console.print(f"A record went through {topic} and came back (seed {seed}, {reports} requested).")
                return
    finally:
        cons.close()
    raise ServiceError("The demo record did not come back from Kafka within 60 s.")
