"""Measure what each stage engine delivers when its process is SIGKILLed mid-stream, on the real broker.

Run: ``PYTHONPATH=. .venv/bin/python scripts/measure_guarantees.py [--n 3000] [--only route|classify]``
(it reuses the tests' report builders). Prints a table of figures; asserts nothing. Importable:
``measure(settings, engine, guarantee, n, stage=...) -> dict``.

For each engine - ``confluent`` (``pipeline.runtime``, one Kafka transaction per batch), ``faust``
``at_least_once`` and ``faust`` ``exactly_once`` (``pipeline.faust_engine``) - and each stage:

- ``route`` (keeps its dedupe state in PostgreSQL, ``route_emitted``): N valid ``ReportAssessed`` events
  (potentially illegal, URLs on addresses of the demo's fixed host table - GB, NL, DE, US - so that
  ``tipline stage route`` places them without DNS; every tenth with a child who may need protection).
  Counted: reports closed, reports closed more than once, duplicate referral records (one report and
  recipient on more than one record), double referrals (one report and recipient under more than one
  event id: a recipient really referred twice) and lost reports (never closed).
- ``classify`` (stateless): N valid ``ReportPrioritized`` events over the four lanes. Counted:
  duplicate ``ReportClassified`` records (same event id more than once) and lost inputs. This shows the
  ENGINE's guarantee, which route's own dedupe partly hides.

Each run uses its own topic suffix. ``tipline stage <stage> --engine X`` runs as a subprocess while the
inputs arrive as a live stream (``--rate`` per second, 25 by default); it is SIGKILLed three times, as its
output passes 20 %, 45 % and 70 % of N (watched with a read_uncommitted consumer; a process is killed only
after it produced something since its start), and restarted at once each time. The counts are read with a
read_committed consumer once every input is accounted for (or at the deadline) and the last process was
stopped with SIGTERM. A restart after a SIGKILL waits for the group coordinator to drop the dead member
(its session timeout: 45 s for librdkafka, 60 s for faust), so each run takes a few minutes; the runs
go in parallel.

Measured on the shared 2-core VM (Dec 2026, Kafka 4.1.1 single broker, faust-streaming 0.15.3, N=3000 at
25/s, three SIGKILLs per run, three runs; figures per run):

=========================  ==========  ============  ====================  ===========  ====
route                      closed      closed twice  dup. referral recs    double ref.  lost
=========================  ==========  ============  ====================  ===========  ====
confluent, transactional   3000 x3     0, 0, 0       0, 0, 0               0            0
faust at_least_once        3000 x3     0, 27, 7      0, 47, 14             0            0
faust exactly_once         3000 x3     70, 48, 226   124, 85, 401          0            0
=========================  ==========  ============  ====================  ===========  ====

classify (stateless): duplicate ``ReportClassified`` records per run - confluent 0, 0, 0; faust
at_least_once 440, 28, 61; faust exactly_once 13, 18, 23; no input lost by any engine. With the whole
input produced before the stage starts (a backlog), faust's duplicates were larger (route at_least_once
152 and 278 duplicate referral records, exactly_once 987 and 163; confluent 0). Route's double referrals
(one recipient under two event ids) stay 0 with every engine because of its PostgreSQL dedupe: faust's
duplicates are the same records delivered again, which a reader keyed on event id counts once.
faust's exactly_once does not cover a stage's outputs (see ``pipeline.faust_engine``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline import events as ev
from pipeline import kafka, serde
from pipeline.classify.samples import prioritized
from pipeline.route import logic as route_logic
from pipeline.settings import Settings
from pipeline.topics import (
    ASSESSED,
    CLASSIFIED,
    CLOSED,
    FOLLOWUP,
    PRIORITIZED,
    REFERRED,
    TopicSpec,
    dead_letter,
)
from pipeline.topics import name as topic_name
from tests.unit.route_builders import assessed

KILL_AT = (0.20, 0.45, 0.70)
"""Fractions of N of output records (seen uncommitted) at which the running process is SIGKILLed."""

DEMO_ADDRESSES = ("212.58.244.22", "81.2.69.142", "193.0.6.139", "145.100.1.1", "194.25.0.1", "8.8.8.8")
"""Addresses from ``pipeline/route/data/demo_hosts.csv`` (GB, NL, DE) and one in the US."""

RUNS: tuple[tuple[str, str], ...] = (
    ("confluent", "transactional"),
    ("faust", "at_least_once"),
    ("faust", "exactly_once"),
)


# -- inputs ----------------------------------------------------------------------------------------------
def _route_inputs(n: int) -> list[tuple[TopicSpec, Any]]:
    out: list[tuple[TopicSpec, Any]] = []
    for i in range(n):
        urls = [f"http://{DEMO_ADDRESSES[(i + j) % len(DEMO_ADDRESSES)]}/m/{i}/{j}" for j in range(1 + i % 3)]
        out.append((ASSESSED, assessed(urls=urls, child=i % 10 == 0)))
    return out


def _classify_inputs(n: int) -> list[tuple[TopicSpec, Any]]:
    out: list[tuple[TopicSpec, Any]] = []
    for i in range(n):
        level = 1 + i % 4
        event = prioritized(
            level=level,
            reporter=ev.Category.CSAM,
            content=(ev.ContentKind.SEXUAL_IMAGE_OR_VIDEO,),
            actions=(ev.MaterialAction.POSSESSED,),
        )
        out.append((PRIORITIZED[level - 1], event))
    return out


STAGES: dict[str, dict[str, Any]] = {
    "route": {
        "inputs": _route_inputs,
        "topics": (ASSESSED, REFERRED, FOLLOWUP, CLOSED, dead_letter("route")),
        "progress": (CLOSED,),
        "outputs": (REFERRED, CLOSED),
    },
    "classify": {
        "inputs": _classify_inputs,
        "topics": (*PRIORITIZED, *CLASSIFIED, dead_letter("classify")),
        "progress": CLASSIFIED,
        "outputs": CLASSIFIED,
    },
}


class _Feeder(threading.Thread):
    """Produces the inputs at a steady rate while the stage runs (a live stream, not a backlog)."""

    def __init__(self, settings: Settings, records: Sequence[tuple[TopicSpec, Any]], rate: float) -> None:
        super().__init__(name="measure-feeder", daemon=True)
        self.settings = settings
        self.records = records
        self.rate = rate
        self.error: BaseException | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        prod = kafka.producer(self.settings)
        try:
            started = time.monotonic()
            for i, (spec, event) in enumerate(self.records):
                if self.stopped.is_set():
                    return
                ahead = i / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the input stream, not waiting for a result
                headers: list[tuple[str, str | bytes | None]] = list(serde.headers_for(event))
                prod.produce(
                    topic_name(spec, self.settings.topic_suffix),
                    key=event.envelope.report_id.encode(),
                    value=serde.encode(event),
                    headers=headers,
                )
                prod.poll(0)
            left = prod.flush(60)
            if left:
                self.error = RuntimeError(f"{left} input records were not acknowledged by the broker")
        except BaseException as exc:  # noqa: BLE001 - reported with the run's figures
            self.error = exc


# -- readers ---------------------------------------------------------------------------------------------
class _Reader:
    """Reads whole topics from the beginning (assigned partitions, no group offsets), keeping every record."""

    def __init__(self, settings: Settings, specs: Sequence[TopicSpec], *, committed: bool) -> None:
        self.consumer: Consumer = kafka.consumer(
            settings,
            f"measure.reader.{uuid.uuid4().hex}",
            **{"isolation.level": "read_committed" if committed else "read_uncommitted"},
        )
        parts = [
            TopicPartition(topic_name(s, settings.topic_suffix), p, OFFSET_BEGINNING)
            for s in specs
            for p in range(settings.partitions)
        ]
        self.consumer.assign(parts)
        self.records: list[tuple[str, bytes]] = []

    def poll(self, timeout: float = 0.05) -> int:
        got = 0
        for m in self.consumer.consume(1000, timeout):
            if m.error() is None:
                self.records.append((m.topic() or "", m.value() or b""))
                got += 1
        return got

    def drain(self, idle_s: float = 3.0) -> None:
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            if self.poll(0.2):
                last = time.monotonic()

    def close(self) -> None:
        self.consumer.close()


# -- the stage process -----------------------------------------------------------------------------------
class _Process:
    def __init__(self, settings: Settings, stage: str, engine: str, guarantee: str, log_dir: Path) -> None:
        self.cmd = [sys.executable, "-m", "pipeline.cli", "stage", stage, "--engine", engine]
        if engine == "faust":
            self.cmd += ["--guarantee", guarantee]
        self.env = dict(os.environ, TIPLINE_TOPIC_SUFFIX=settings.topic_suffix, TIPLINE_LOG_FORMAT="json")
        self.env["PYTHONPATH"] = str(settings.root)
        self.cwd = settings.root
        self.log_dir = log_dir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"run{self.starts}.log"
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdout=fh, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 6) -> str:
        log = self.log_dir / f"run{self.starts}.log"
        text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        return " | ".join(line.strip()[:300] for line in text[-lines:])


# -- counting --------------------------------------------------------------------------------------------
def _count(stage: str, n: int, records: list[tuple[str, bytes]], suffix: str) -> dict[str, Any]:
    events = [(t, serde.decode(v)) for t, v in records]
    ids = Counter(e.envelope.event_id for _t, e in events)
    figures: dict[str, Any] = {
        "output_records": len(events),
        "duplicate_records": sum(c - 1 for c in ids.values()),
    }
    if stage == "route":
        closed = Counter(e.envelope.report_id for _t, e in events if isinstance(e, ev.ReportClosed))
        referral_records: Counter[tuple[str, str]] = Counter()
        referral_ids: dict[tuple[str, str], set[str]] = {}
        for _t, e in events:
            if isinstance(e, ev.ReportReferred):
                key = (e.envelope.report_id, route_logic.emit_key(e))
                referral_records[key] += 1
                referral_ids.setdefault(key, set()).add(e.envelope.event_id)
        figures |= {
            "reports_closed": len(closed),
            "closed_more_than_once": sum(1 for c in closed.values() if c > 1),
            "duplicate_referral_records": sum(1 for c in referral_records.values() if c > 1),
            "double_referrals": sum(1 for s in referral_ids.values() if len(s) > 1),
            "lost": n - len(closed),
        }
    else:
        done = {e.envelope.causation_id for _t, e in events}
        figures |= {"inputs_done": len(done), "lost": n - len(done)}
    return figures


class _Accounted:
    """How many inputs the committed output accounts for so far (closed reports, or classified inputs)."""

    def __init__(self, stage: str, suffix: str) -> None:
        self.closed_topic = topic_name(CLOSED, suffix) if stage == "route" else None
        self.seen: set[str] = set()
        self.read = 0

    def update(self, records: list[tuple[str, bytes]]) -> int:
        for topic, value in records[self.read :]:
            if self.closed_topic is None:
                self.seen.add(serde.decode(value).envelope.causation_id or "")
            elif topic == self.closed_topic:
                self.seen.add(serde.decode(value).envelope.report_id)
        self.read = len(records)
        return len(self.seen)


# -- one run ---------------------------------------------------------------------------------------------
class _Run:
    """One measured run: the stage process, the readers, the kills."""

    def __init__(self, settings: Settings, stage: str, n: int, proc: _Process) -> None:
        run = STAGES[stage]
        self.n = n
        self.proc = proc
        self.progress = _Reader(settings, run["progress"], committed=False)
        self.result = _Reader(settings, run["outputs"], committed=True)
        self.accounted = _Accounted(stage, settings.topic_suffix)
        self.kills = 0
        self.errors: list[str] = []

    def drive(self, deadline: float) -> None:
        """Kill at the thresholds, restart at once, until every input is accounted for (or the deadline)."""
        seen = seen_at_start = 0
        last_check = 0.0
        while time.monotonic() < deadline:
            seen += self.progress.poll(0.05)
            # Kill only a process that has produced since it started: each kill lands mid-work.
            if self.kills < len(KILL_AT) and seen >= KILL_AT[self.kills] * self.n and seen > seen_at_start:
                self.proc.kill()
                self.kills += 1
                seen_at_start = seen
                self.proc.start()
                continue
            rc = self.proc.exited()
            if rc is not None:
                self.errors.append(f"exit {rc}: {self.proc.tail()}")
                if len(self.errors) >= 3:
                    return
                self.proc.start()
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                while self.result.poll(0.1):
                    pass
                if self.kills == len(KILL_AT) and self.accounted.update(self.result.records) >= self.n:
                    return

    def finish(self) -> None:
        self.proc.stop()
        rc = self.proc.exited()
        if rc not in (0, None, -signal.SIGTERM) and not self.errors:
            self.errors.append(f"exit {rc}: {self.proc.tail()}")
        self.result.drain(3.0)
        self.progress.close()
        self.result.close()


def measure(
    settings: Settings,
    engine: str,
    guarantee: str = "at_least_once",
    n: int = 3000,
    *,
    stage: str = "route",
    rate: float = 25.0,
    deadline_s: float = 900.0,
) -> dict[str, Any]:
    """SIGKILL the stage three times mid-stream while N inputs arrive at ``rate`` per second; count
    what came out."""
    settings = settings.with_suffix(f".measure.{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, STAGES[stage]["topics"])
    feeder = _Feeder(settings, STAGES[stage]["inputs"](n), rate)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        run = _Run(settings, stage, n, _Process(settings, stage, engine, guarantee, Path(tmp)))
        try:
            run.proc.start()
            feeder.start()
            run.drive(started + deadline_s)
        finally:
            feeder.stopped.set()
            feeder.join(90)
            if feeder.error is not None:
                run.errors.append(f"input producer: {feeder.error}")
            run.finish()
    return {
        "stage": stage,
        "engine": engine,
        "guarantee": "transactional" if engine == "confluent" else guarantee,
        "n": n,
        "rate": rate,
        "kills": run.kills,
        "seconds": round(time.monotonic() - started, 1),
        "errors": run.errors,
        **_count(stage, n, run.result.records, settings.topic_suffix),
    }


# -- the table -------------------------------------------------------------------------------------------
COLUMNS: dict[str, tuple[str, ...]] = {
    "route": (
        "reports_closed",
        "closed_more_than_once",
        "duplicate_referral_records",
        "double_referrals",
        "lost",
        "duplicate_records",
    ),
    "classify": ("inputs_done", "duplicate_records", "lost"),
}


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    for stage in ("route", "classify"):
        mine = [r for r in rows if r["stage"] == stage]
        if not mine:
            continue
        cols = ("engine", "guarantee", "n", "rate", "kills", *COLUMNS[stage], "seconds")
        print(f"\n{stage} stage, SIGKILLed {len(KILL_AT)} times mid-stream and restarted:")
        print(" | ".join(cols))
        for r in mine:
            print(" | ".join(str(r.get(c, "")) for c in cols))
        for r in mine:
            for err in r["errors"]:
                print(f"  {r['engine']} {r['guarantee']}: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="inputs per run")
    parser.add_argument("--rate", type=float, default=25.0, help="inputs produced per second")
    parser.add_argument("--only", choices=tuple(STAGES), help="measure one stage only")
    args = parser.parse_args()
    settings = Settings.from_env()
    stages = (args.only,) if args.only else tuple(STAGES)
    jobs = [(stage, engine, guarantee) for stage in stages for engine, guarantee in RUNS]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [
            pool.submit(
                measure,
                settings,
                engine,
                "at_least_once" if guarantee == "transactional" else guarantee,
                args.n,
                stage=stage,
                rate=args.rate,
            )
            for stage, engine, guarantee in jobs
        ]
        rows = [f.result() for f in futures]
    print_table(rows)


if __name__ == "__main__":
    main()
