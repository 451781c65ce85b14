"""Benchmark: HTTP intake and the ingest stage on the real Kafka and PostgreSQL. Prints figures, asserts nothing.

Run: ``.venv/bin/python scripts/bench_ingest.py [--reports 10000] [--warmup 5000] [--concurrency 64]
[--workers 2] [--client raw|httpx] [--only http|stage]`` with the services up. The reports are the project's generated
stream (``pipeline.generator``) as the public web form sends them (no ``intake_system``), with fresh
submission ids so that a second run is not a stream of resubmissions.

1. HTTP intake: ``tipline intake serve`` runs in a subprocess (uvicorn, ``--workers``); the load client
   first posts ``--warmup`` other reports, not measured (the steady state is measured: a broker just
   started spends several times the CPU per record until its JIT has compiled the hot paths), then
   posts the reports with ``--concurrency`` requests in flight (many reporters at once); each 202 means
   the event was acknowledged by the broker (acks=all). The default client is cheap on purpose, since it
   shares the machine's CPUs with the server and the broker: keep-alive HTTP/1.1 connections on uvloop,
   each request serialised before the clock starts; ``--client httpx`` is the former one. Printed: the
   CPU per report of the server (all workers), the client, the broker and PostgreSQL, and beside it a raw
   confluent-kafka produce of the same encoded records (idempotent, acks=all, one flush at the end).
2. Ingest stage: the transactional stage runner (in this process) consumes the submitted topic and emits
   ``ReportReceived`` (numbering and linking in PostgreSQL, one Kafka transaction per batch). Printed
   beside: raw produce of the same records again.

Everything runs under a topic suffix of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pipeline import cpu, kafka, serde
from pipeline import events as ev
from pipeline.generator import generate, recent_window
from pipeline.ingest import client, logic
from pipeline.ingest.stage import spec
from pipeline.logging import configure
from pipeline.runtime import StageRunner
from pipeline.settings import Settings
from pipeline.topics import RECEIVED, SUBMITTED, TopicSpec, dead_letter, name

SCRATCH = TopicSpec(
    name="tipline.bench.ingest-baseline.v1", events=(), description="bench", produced_by="bench"
)


def reports(n: int, seed: int) -> list[dict[str, Any]]:
    """Generated reports as the public web form sends them: no ``intake_system`` (the form refuses one)."""
    out = []
    # Times end just before now, as the demo's: the intake refuses times in the future, and from the
    # generator's fixed start a long stream would run past today.
    start, per_day = recent_window(datetime.now(UTC), n)
    for r in generate(n, seed, start=start, reports_per_day=per_day):
        body = {k: v for k, v in r.items() if k != "intake_system"}
        out.append({**body, "submission_id": str(uuid.uuid4())})
    return out


def raw_produce(settings: Settings, values: list[tuple[bytes, bytes]], topic: str | None = None) -> float:
    """Reports per second for plain produce of the same bytes (idempotent, acks=all), flushed once."""
    prod = kafka.producer(settings)
    topic = topic or name(SCRATCH, settings.topic_suffix)
    started = time.perf_counter()
    for key, value in values:
        while True:
            try:
                prod.produce(topic, key=key, value=value)
                break
            except BufferError:
                prod.poll(0.05)
    remaining = prod.flush(60)
    elapsed = time.perf_counter() - started
    if remaining:
        print(f"  (baseline: {remaining} records not acknowledged)")
    return len(values) / elapsed


def encoded(bodies: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """The records the intake would publish for these bodies (a stand-in ciphertext of the same size)."""
    out = []
    for body in bodies:
        parsed = logic.parse_report(body, allow_intake_system=False)
        enc = None
        if parsed.contact is not None:
            enc = ev.EncryptedContact(key_id=parsed.report_id, nonce=b"\0" * 12, ciphertext=b"\0" * 96)
        event = logic.to_submitted(parsed, channel=ev.Channel.WEB, now=client.now_ms(), contact=enc)
        out.append((event.envelope.report_id.encode(), serde.encode(event)))
    return out


async def post_all_httpx(
    base: str, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[float, dict[int, int]]:
    """The former load client (httpx, JSON encoded per request): costly in CPU on a shared machine."""
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def worker() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                r = await http.post("/v1/reports", json=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(bodies) / elapsed, statuses


def raw_requests(host: str, port: int, bodies: list[dict[str, Any]]) -> list[bytes]:
    """Each report as a complete HTTP/1.1 POST, serialised before the clock starts."""
    out = []
    for body in bodies:
        data = json.dumps(body).encode()
        head = (
            f"POST /v1/reports HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


async def post_all_raw(
    host: str, port: int, requests: list[bytes], concurrency: int
) -> tuple[float, dict[int, int]]:
    """A cheap load client: ``concurrency`` keep-alive HTTP/1.1 connections, one request in flight each."""
    statuses: dict[int, int] = {}
    pending = iter(requests)
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for request in pending:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(r, w) for r, w in connections))
        elapsed = time.perf_counter() - started
    finally:
        for _r, w in connections:
            w.close()
        await asyncio.gather(*(w.wait_closed() for _r, w in connections), return_exceptions=True)
    return len(requests) / elapsed, statuses


def run_client(
    kind: str, host: str, port: int, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[float, dict[int, int]]:
    """Post every body; the raw client's requests are serialised before its CPU is counted."""
    if kind == "httpx":
        return asyncio.run(post_all_httpx(f"http://{host}:{port}", bodies, concurrency))
    return run_raw(host, port, raw_requests(host, port, bodies), concurrency)


def run_raw(host: str, port: int, requests: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(post_all_raw(host, port, requests, concurrency))


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return None
    return uvloop.new_event_loop


def _service_pids() -> dict[str, list[int]]:
    """The local broker's and PostgreSQL's processes (their CPU is shown beside, other users included)."""
    found: dict[str, list[int]] = {"broker": [], "postgres": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline:
            found["broker"].append(int(entry.name))
        elif cmdline.startswith(b"postgres"):
            found["postgres"].append(int(entry.name))
    return found


def _own_cpu(pids: list[int]) -> dict[int, float]:
    return {pid: sec for pid in pids if (sec := cpu.own_seconds(pid)) is not None}


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples by the processes alive at both."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the intake server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the intake server did not answer within 30 s")


def bench_http(  # noqa: PLR0917 - a benchmark's knobs
    settings: Settings,
    bodies: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    concurrency: int,
    workers: int,
    port: int,
    load_client: str = "raw",
) -> float:
    env = {**os.environ, "TIPLINE_TOPIC_SUFFIX": settings.topic_suffix, "TIPLINE_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "intake",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    host = "127.0.0.1"
    base = f"http://{host}:{port}"
    try:
        wait_healthy(base, proc)
        if warm:  # other reports, not resubmissions
            run_client(load_client, host, port, warm, concurrency)
        services = _service_pids()  # after the warm-up: the server's database sessions exist by now
        server_cpu = cpu.tree_seconds(proc.pid) or 0.0
        requests = raw_requests(host, port, bodies)
        client_cpu = time.process_time()
        service_cpu = {k: _own_cpu(v) for k, v in services.items()}
        if load_client == "raw":
            rate, statuses = run_raw(host, port, requests, concurrency)
        else:
            rate, statuses = run_client(load_client, host, port, bodies, concurrency)
        per_report = {
            k: _spent(service_cpu[k], _own_cpu(v)) / len(bodies) * 1000 for k, v in services.items()
        }
        server_ms = ((cpu.tree_seconds(proc.pid) or 0.0) - server_cpu) / len(bodies) * 1000
        client_ms = (time.process_time() - client_cpu) / len(bodies) * 1000
    finally:
        proc.terminate()
        proc.wait(30)
    print(
        f"  HTTP intake:    {rate:8.0f} reports/s  ({len(bodies)} posts, {concurrency} in flight, "
        f"{workers} worker(s); statuses {statuses})"
    )
    print(
        f"  CPU per report: server {server_ms:.2f} ms (all workers), {load_client} load client "
        f"{client_ms:.2f} ms (this process), broker "
        f"{per_report['broker']:.2f} ms, PostgreSQL {per_report['postgres']:.2f} ms (whoever else uses "
        f"them included); all share the machine's {os.cpu_count()} CPUs"
    )
    return rate


def bench_stage(settings: Settings, expected: int) -> float:
    runner = StageRunner(spec(settings), settings, instance="bench")
    runner.start()
    try:
        # The first poll joins the group; start the clock at the first batch.
        joined = time.monotonic() + 120
        while runner.poll_once(1.0) == 0:
            if time.monotonic() > joined:
                print("  ingest stage:   no record within 120 s of joining; not measured")
                return float("nan")
        started = time.perf_counter()
        first = runner.processed
        deadline = time.monotonic() + 600
        while runner.processed < expected and time.monotonic() < deadline:
            runner.poll_once(0.5)
        elapsed = time.perf_counter() - started
        done = runner.processed - first
    finally:
        runner.close()
    rate = done / elapsed if elapsed > 0 else float("nan")
    print(
        f"  ingest stage:   {rate:8.0f} reports/s  ({runner.processed} of {expected} records, "
        f"batch {runner.spec.batch_size}, one instance)"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument(
        "--warmup",
        type=int,
        default=5_000,
        help="reports posted first, not measured: a broker just started spends 3-5 times the CPU per "
        "record until its JIT has compiled the hot paths (measured), and the server's connections are made",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--client", choices=("raw", "httpx"), default="raw", help="load client (raw: asyncio HTTP/1.1)"
    )
    parser.add_argument("--only", choices=("http", "stage"), help="run one part only (default: both)")
    args = parser.parse_args()
    configure("json", level=logging.WARNING)

    settings = Settings.from_env().with_suffix(f".bench{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(settings, (SUBMITTED, RECEIVED, dead_letter("ingest"), SCRATCH))
    bodies = reports(args.reports, args.seed)
    with_contact = sum(1 for b in bodies if b.get("contact"))
    print(
        f"ingest benchmark: {len(bodies)} generated reports ({with_contact} with contact details), "
        f"topic suffix {settings.topic_suffix}, {os.cpu_count()} CPU(s)"
    )

    values = encoded(bodies)
    warm = reports(args.warmup, args.seed + 1)
    rates: list[tuple[str, float]] = []
    if args.only in (None, "http"):
        baseline_http = raw_produce(settings, values)
        http_rate = bench_http(settings, bodies, warm, args.concurrency, args.workers, args.port, args.client)
        print(f"  raw produce:    {baseline_http:8.0f} reports/s  (same records, confluent-kafka, acks=all)")
        print(f"  ratio:          {http_rate / baseline_http:8.3f} of raw produce")
        rates.append(("HTTP intake", http_rate))
    if args.only in (None, "stage"):
        if args.only == "stage":
            # The stage reads what the HTTP part would have published: publish the same records directly.
            raw_produce(settings, values, topic=name(SUBMITTED, settings.topic_suffix))
        baseline_stage = raw_produce(settings, values)
        expected = len(bodies) + (len(warm) if args.only is None else 0)
        stage_rate = bench_stage(settings, expected)
        print(f"  raw produce:    {baseline_stage:8.0f} reports/s  (same records, same run)")
        print(f"  ratio:          {stage_rate / baseline_stage:8.3f} of raw produce")
        rates.append(("ingest stage", stage_rate))
    target = 2000
    for label, rate in rates:
        verdict = "meets" if rate >= target else "is BELOW"
        print(f"  {label} {verdict} the {target} reports/s target ({rate:.0f}).")


if __name__ == "__main__":
    main()
