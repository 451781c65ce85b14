"""Helpers for integration tests against the real broker: produce events, read them back with a
deadline (never a sleep), and run a stage in a background thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from pipeline import kafka, serde
from pipeline.runtime import Context, Item, Output, Refusal, StageRunner, StageSpec
from pipeline.settings import Settings
from pipeline.topics import TopicSpec, name


def produce(settings: Settings, spec: TopicSpec, events: Iterable[Any]) -> int:
    """Produce events (encoded by serde, keyed by report id) and wait until all are acknowledged."""
    prod = kafka.producer(settings)
    n = 0
    for ev in events:
        prod.produce(
            name(spec, settings.topic_suffix),
            key=ev.envelope.report_id.encode(),
            value=serde.encode(ev),
            headers=list[tuple[str, str | bytes | None]](serde.headers_for(ev)),
        )
        n += 1
    remaining = prod.flush(30)
    assert remaining == 0, f"{remaining} records not acknowledged"
    return n


def produce_raw(settings: Settings, spec: TopicSpec, value: bytes, key: bytes = b"raw") -> None:
    prod = kafka.producer(settings)
    prod.produce(name(spec, settings.topic_suffix), key=key, value=value)
    assert prod.flush(30) == 0


@dataclass
class Collected:
    messages: list[Message] = field(default_factory=list)

    @property
    def events(self) -> list[Any]:
        return [serde.decode(m.value() or b"") for m in self.messages]


def consume(
    settings: Settings,
    specs: TopicSpec | Iterable[TopicSpec],
    *,
    count: int,
    timeout: float = 60.0,
    settle: float = 0.0,
) -> Collected:
    """Read committed records from the topics until ``count`` arrived (then ``settle`` s more to catch
    extras, for tests that assert there is no duplicate), or fail at the deadline."""
    specs = (specs,) if isinstance(specs, TopicSpec) else tuple(specs)
    cons = kafka.consumer(settings, f"test.reader.{uuid.uuid4().hex}")
    got = Collected()
    try:
        cons.subscribe([name(s, settings.topic_suffix) for s in specs])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(got.messages) < count:
            for m in cons.consume(500, 0.2):
                if m.error() is None:
                    got.messages.append(m)
        if len(got.messages) < count:
            raise AssertionError(f"only {len(got.messages)} of {count} records arrived within {timeout} s")
        end = time.monotonic() + settle
        while time.monotonic() < end:
            for m in cons.consume(500, 0.2):
                if m.error() is None:
                    got.messages.append(m)
    finally:
        cons.close()
    return got


class StageThread:
    """Runs one stage instance in a thread; ``stop()`` ends it cleanly. Use as a context manager."""

    def __init__(self, spec: StageSpec, settings: Settings, instance: str | int = 0) -> None:
        self.runner = StageRunner(spec, settings, instance=instance)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"stage-{spec.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.runner.start()
            while not self._stop.is_set():
                self.runner.poll_once(0.2)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test by stop()
            self.error = exc
        finally:
            self.runner.close()

    def __enter__(self) -> StageThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


class CountingStage:
    """A stage's handlers, counting how often the runner used each (did the batch path carry the load?)."""

    def __init__(self, spec: StageSpec) -> None:
        self.spec = spec
        self.batches = 0
        self.singles = 0

    def handle(self, event: Any, ctx: Context) -> Sequence[Output]:
        self.singles += 1
        return self.spec.handle(event, ctx)

    def handle_batch(self, items: Sequence[Item], ctx: Context) -> Sequence[Sequence[Output] | Refusal]:
        assert self.spec.handle_batch is not None
        self.batches += 1
        return self.spec.handle_batch(items, ctx)
