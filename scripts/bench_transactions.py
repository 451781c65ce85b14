"""Benchmark: what one Kafka transaction costs the broker, by how many records it holds.

Run: ``.venv/bin/python scripts/bench_transactions.py [--records 2000]`` with the local broker up (its
pid is read from the state folder; the broker's CPU time comes from /proc). Prints figures; asserts
nothing (not a timed test).

For 1, 10 and 100 records of 2 KB per transaction, a transactional confluent-kafka producer (as the
stage runner uses) commits the same number of records; printed: wall time, the broker's CPU seconds
spent meanwhile, and that CPU per transaction and per record. On the 2-core VM of Dec 2026 it printed
1.7-2.6 ms of broker CPU per transaction whatever its size (1 record per transaction: 1.7-2.6 ms a
record; 100: 0.01-0.03 ms a record). This is why the stage runner gathers a batch for ``linger_s`` before
committing (``pipeline.runtime.StageSpec.linger_s``).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path

from pipeline import kafka
from pipeline.services.common import read_pid
from pipeline.settings import Settings
from pipeline.topics import TopicSpec, name


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    settings = Settings.from_env()
    pid = read_pid(settings.kafka_dir / "broker.pid")
    if pid is None:
        raise SystemExit(
            "The local broker is not running (its pid file is missing); run `tipline services up`."
        )
    run = settings.with_suffix(f".txbench{uuid.uuid4().hex[:6]}")
    spec = TopicSpec(name="tipline.bench.tx.v1", events=(), description="benchmark", produced_by="bench")
    kafka.ensure_topics(run, (spec,))
    topic = name(spec, run.topic_suffix)
    prod = kafka.producer(run, **{"transactional.id": topic, "linger.ms": 2})
    prod.init_transactions(30)
    payload = b"x" * 2000
    print(f"{'records/tx':>10} {'tx':>6} {'wall s':>7} {'broker cpu s':>12} {'ms/tx':>7} {'ms/record':>9}")
    for per_tx in (1, 10, 100):
        n = args.records
        c0, w0 = cpu_seconds(pid), time.perf_counter()
        for i in range(0, n, per_tx):
            prod.begin_transaction()
            for j in range(per_tx):
                prod.produce(topic, key=str(i + j).encode(), value=payload)
            prod.commit_transaction(30)
        cpu, wall = cpu_seconds(pid) - c0, time.perf_counter() - w0
        tx = n / per_tx
        print(
            f"{per_tx:>10} {tx:>6.0f} {wall:>7.2f} {cpu:>12.2f} {cpu / tx * 1000:>7.2f} {cpu / n * 1000:>9.3f}"
        )
    kafka.admin(run).delete_topics([topic])


if __name__ == "__main__":
    main()
