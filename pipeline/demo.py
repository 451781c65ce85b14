"""`tipline demo`: the whole pipeline on a generated report stream shaped like the tipline's traffic.

It brings up the services, creates a fresh set of topics for the run (a run suffix keeps runs apart,
so the statistics are this run's), starts every stage, the projector and the simulated analysts as
separate processes, publishes the generated reports as an intake system would, waits until every
report is closed, checks that each closed exactly once and that no referral went out twice, and prints
the statistics beside the published figures. With ``--chaos`` every process is killed with SIGKILL and
restarted at least once while the stream flows.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline import bootstrap, cpu
from pipeline.errors import TiplineError
from pipeline.fleet import Fleet
from pipeline.settings import Settings
from pipeline.tally import Verdict, Watcher
from pipeline.topics import STAGES


class DemoFailed(TiplineError):
    """The run ended without every report closed exactly once."""


@dataclass
class RunResult:
    settings: Settings
    reports: int
    seconds: float
    verdict: Verdict
    kills: dict[str, int]
    latencies_ms: list[float]
    log_dir: str
    tally_closed: set[str]
    stats: Any = None
    projection_equals_rebuild: bool | None = None
    cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    """CPU seconds each process (stage, intake system, broker, ...) used between the start and the last close."""


def run_suffix(seed: int) -> str:
    return f".run{datetime.now(UTC):%Y%m%d%H%M%S}s{seed}"


def start_fleet(settings: Settings, *, seed: int, analysts: int = 2) -> Fleet:
    fleet = Fleet(settings, settings.state_dir / "runs" / settings.topic_suffix.lstrip("."))
    for stage in STAGES:
        fleet.add(stage, "stage", stage, "--instance", "0")
    fleet.add("projections", "projections", "run")
    fleet.add("analysts", "analyst", "simulate", "--seed", str(seed), "--analysts", str(analysts))
    fleet.start_all()
    return fleet


def publish_share(
    settings: Settings, stream: tuple[int, int], share: tuple[int, int], signals: tuple[Any, Any, Any, Any]
) -> None:
    """One intake system's share of the generated reports (``stream``: how many, seed; ``share``: every
    ``count``-th from ``index``), handed in as an intake system does: the client encrypts contacts
    first. Runs in a process of its own. ``signals`` are shared with the demo: ``done`` (reports handed
    in), ``ready``, ``go`` and ``spent``. The share is generated and checked against intake's rules
    first (``ready`` counts the processes done with it), and handed in once ``go`` is set: making up
    the reports is the load generator's work, and checking them the intake system's own, not the
    pipeline's; both stay off the clock (they cost about two thirds of this process's CPU)."""
    from pipeline.generator import generate, recent_window
    from pipeline.ingest.client import IntakeClient

    reports, seed = stream
    index, count = share
    done, ready, go, spent = signals

    start, per_day = recent_window(datetime.now(UTC), reports)
    made = generate(reports, seed, start=start, reports_per_day=per_day)
    with IntakeClient(settings) as client:  # flush() on exit waits for the broker's every ack
        # Checking its own reports against intake's rules is the intake system's work too (its CPU, on
        # its own machine in real life): done here, before the clock. Their contacts are sealed and
        # their events encoded and produced on the clock.
        mine = [client.check(r) for i, r in enumerate(made) if i % count == index]
        with ready.get_lock():
            ready.value += 1
        go.wait()
        cpu_at_go = time.process_time()
        for at in range(0, len(mine), 200):
            chunk = mine[at : at + 200]
            client.submit_many(chunk)  # contact keys made in bulk, as a busy intake system would
            with done.get_lock():
                done.value += len(chunk)
    with spent.get_lock():  # this process ends before the run does: it tells its own CPU, all threads
        spent.value += time.process_time() - cpu_at_go


class Publishers:
    """``count`` intake-system processes handing the stream in side by side, apart from the demo's own
    process (a thread there shared one interpreter lock with the watcher that reads every close). Each
    generates the whole stream (the generator's repeated URLs depend on its order) and hands in its
    share; one is the default: on 2 cores a second one only competes with the stages. ``start`` lets
    them generate; ``go`` (after ``wait_ready``) lets them hand their shares in."""

    def __init__(self, settings: Settings, reports: int, seed: int, count: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.done = ctx.Value("q", 0)
        self.ready = ctx.Value("q", 0)
        self.cpu_s = ctx.Value("d", 0.0)
        """CPU seconds the processes used handing their shares in (told by each as it ends)."""
        self._go = ctx.Event()
        self.procs = [
            ctx.Process(
                target=publish_share,
                args=(settings, (reports, seed), (i, count), (self.done, self.ready, self._go, self.cpu_s)),
                name=f"intake-system-{i}",
                daemon=True,
            )
            for i in range(count)
        ]

    @property
    def published(self) -> int:
        return int(self.done.value)

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Wait until every process has generated its share (raising if one stopped)."""
        deadline = time.monotonic() + timeout_s
        while int(self.ready.value) < len(self.procs):
            self.check()
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"The intake systems did not generate their reports within {timeout_s:.0f} s."
                )
            time.sleep(0.05)

    def go(self) -> None:
        self._go.set()

    def check(self) -> None:
        for p in self.procs:
            if p.exitcode not in (None, 0):
                raise DemoFailed(
                    f"The intake system {p.name} stopped (exit {p.exitcode}) after "
                    f"{self.published} reports were handed in; its error is printed above."
                )

    def stop(self) -> None:
        self._go.set()  # one still waiting (the run failed before the clock) is let go, then stopped
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def run_pipeline(
    settings: Settings,
    *,
    reports: int,
    seed: int,
    chaos: bool = False,
    console: Console | None = None,
    timeout_s: float = 3600.0,
    verify: bool = True,
) -> RunResult:
    """Run the stream through the whole pipeline and wait for every report to end. Used by demo and bench."""
    # The generated reports name made-up hosts of real countries: the route step locates them from the
    # demo table (real addresses, checked against iptocc), never through DNS.
    settings = dataclasses.replace(settings, resolver="demo")
    bootstrap.ensure_topics(settings)
    fleet = start_fleet(settings, seed=seed)
    watcher = Watcher(settings)
    publisher = Publishers(settings, reports, seed)
    chaos_plan = _chaos_plan(fleet, seed) if chaos else []
    try:
        # A tipline's pipeline is running before reports come: the clock starts once every stage has
        # joined its consumer group, not while the processes are still importing their modules, and
        # once the intake systems have made up their reports (generated meanwhile).
        publisher.start()
        wait_until_stages_joined(settings, fleet)
        publisher.wait_ready()
        meter = cpu_meter(settings, fleet, publisher)
        meter.start()
        started = time.monotonic()
        finished = started
        publisher.go()
        with Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=console is None,
        ) as progress:
            sub = progress.add_task("submitted", total=reports)
            done = progress.add_task("closed", total=reports)
            deadline = time.monotonic() + timeout_s
            while watcher.tally.ended < reports:
                publisher.check()
                if time.monotonic() > deadline:
                    raise DemoFailed(
                        f"Only {watcher.tally.ended} of {reports} reports were closed within {timeout_s:.0f} s; "
                        f"see the process logs in {fleet.log_dir}."
                    )
                watcher.poll(0.2)
                fleet.check()
                _run_chaos(fleet, chaos_plan, watcher.tally.ended / reports)
                progress.update(sub, completed=publisher.published)
                progress.update(done, completed=watcher.tally.ended)
            finished = time.monotonic()  # the last close seen (the watcher polls every 0.2 s at most)
            cpu_s = meter.spent()
            progress.update(sub, completed=publisher.published)
        # Read on briefly so that a duplicate close or referral, if any, is seen too.
        settle_until = time.monotonic() + 2.0
        while time.monotonic() < settle_until:
            watcher.poll(0.2)
        verdict = watcher.tally.verdict(reports)
        seconds = finished - started
        stats = wait_for_projection(settings, closed=len(watcher.tally.closes))
        equal = projection_equals_rebuild(settings) if verify else None
        lat = [
            (watcher.tally.closed_at[r] - watcher.tally.received_at[r]).total_seconds() * 1000
            for r in watcher.tally.closed_at
        ]
        return RunResult(
            settings=settings,
            reports=reports,
            seconds=seconds,
            verdict=verdict,
            kills={m.name: m.kills for m in fleet.members.values()},
            latencies_ms=lat,
            log_dir=str(fleet.log_dir),
            tally_closed=set(watcher.tally.closes),
            stats=stats,
            projection_equals_rebuild=equal,
            cpu_s=cpu_s,
        )
    finally:
        watcher.close()
        fleet.stop_all()
        publisher.stop()


def cpu_meter(settings: Settings, fleet: Fleet, publisher: Publishers) -> cpu.Meter:
    """Each fleet process, the intake systems, this process (the watcher) and the local services."""
    probes: dict[str, cpu.Probe] = {
        name: cpu.process(m.proc.pid if m.proc is not None else None) for name, m in fleet.members.items()
    }
    probes["intake systems"] = lambda: float(publisher.cpu_s.value)
    probes["demo (watcher)"] = cpu.process(os.getpid())
    probes.update(cpu.service_probes(settings))
    return cpu.Meter(probes)


def wait_until_stages_joined(settings: Settings, fleet: Fleet, timeout_s: float = 120.0) -> None:
    """Wait until the consumer group of every stage is stable with its partitions assigned."""
    from confluent_kafka import ConsumerGroupState, KafkaException

    from pipeline import kafka
    from pipeline.topics import group

    admin = kafka.admin(settings)
    wanted = [group(stage, settings.topic_suffix) for stage in STAGES]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.check()
        futures = admin.describe_consumer_groups(wanted, request_timeout=10)
        ready = 0
        for fut in futures.values():
            try:
                desc = fut.result()
            except KafkaException:  # the group is not there yet: asked again below
                desc = None
            if desc is not None:
                assigned = any(m.assignment and m.assignment.topic_partitions for m in desc.members)
                ready += int(desc.state == ConsumerGroupState.STABLE and assigned)
        if ready == len(wanted):
            return
        time.sleep(0.2)
    raise DemoFailed(
        f"The stages did not all join their consumer groups within {timeout_s:.0f} s; "
        f"see the process logs in {fleet.log_dir}."
    )


def _chaos_plan(fleet: Fleet, seed: int) -> list[tuple[float, str]]:
    """Each process killed once at a point of the run (a share of reports closed), in a seeded order."""
    names = list(fleet.members)
    rng = random.Random(seed)
    rng.shuffle(names)
    return [(0.1 + 0.7 * i / max(1, len(names) - 1), n) for i, n in enumerate(names)]


def _run_chaos(fleet: Fleet, plan: list[tuple[float, str]], progress: float) -> None:
    while plan and progress >= plan[0][0]:
        _at, member = plan.pop(0)
        fleet.kill(member)
        fleet.start(member)


def run_demo(settings: Settings, *, reports: int, seed: int, chaos: bool, console: Console) -> None:
    started = time.monotonic()
    bootstrap.services_up(settings)
    console.print(f"Services ready in {time.monotonic() - started:.1f} s.")
    run = settings if settings.topic_suffix else settings.with_suffix(run_suffix(seed))
    console.print(
        f"Run [bold]{run.topic_suffix.lstrip('.')}[/]: {reports} reports, seed {seed}"
        + (", chaos: every process SIGKILLed and restarted once" if chaos else "")
    )
    result = run_pipeline(run, reports=reports, seed=seed, chaos=chaos, console=console)
    _print_result(result, console)
    if result.projection_equals_rebuild is False:
        raise DemoFailed(f"The read model differs from a rebuild of the log; see {result.log_dir}.")
    if not result.verdict.ok:
        v = result.verdict
        raise DemoFailed(
            f"{v.missing} report(s) not closed, {len(v.closed_twice)} closed twice, "
            f"{len(v.duplicate_referrals)} referral(s) duplicated; see {result.log_dir}."
        )


def wait_for_projection(settings: Settings, closed: int, timeout_s: float = 120.0) -> Any:
    """The projector runs in its own process: wait (with a deadline) until it has seen every close."""
    from projections.stats import measured

    deadline = time.monotonic() + timeout_s
    stats = measured(settings)
    while stats.closed < closed and time.monotonic() < deadline:
        time.sleep(0.5)
        stats = measured(settings)
    return stats


def projection_equals_rebuild(settings: Settings, attempts: int = 10) -> bool:
    """Replay the whole log into a fresh schema beside the live read model and compare them row by row.

    The live projector is still running; when it has not yet reached the end of the log the rebuild
    (which reads to the end) is ahead, so the comparison is retried while the live rows still change.
    """
    from pipeline import db
    from projections import pg
    from projections.rebuild import drop_schema, rebuild

    built = rebuild(settings, swap_in=False)
    try:
        with db.connect(settings, autocommit=True) as conn:
            rebuilt_rows = pg.PgView(conn, built.schema).rows()
            live = pg.PgView(conn, pg.schema_for(settings))
            for _ in range(attempts):
                if live.rows() == rebuilt_rows:
                    return True
                time.sleep(1.0)
            return False
    finally:
        with db.connect(settings, autocommit=True) as conn:
            drop_schema(conn, built.schema)


def _print_result(result: RunResult, console: Console) -> None:
    from projections.cli import print_statistics

    v = result.verdict
    console.print(
        f"{v.ended} of {v.expected} reports closed in {result.seconds:.1f} s "
        f"({v.expected / result.seconds:.0f} reports/s); closed twice: {len(v.closed_twice)}; "
        f"duplicate referrals: {len(v.duplicate_referrals)}."
    )
    if any(result.kills.values()):
        console.print(
            "Processes killed with SIGKILL and restarted: "
            + ", ".join(f"{k} x{n}" for k, n in result.kills.items() if n)
        )
    if result.projection_equals_rebuild is not None:
        console.print(
            "The read model equals a rebuild from the log, row by row."
            if result.projection_equals_rebuild
            else "[red]The read model differs from a rebuild from the log.[/]"
        )
    print_statistics(result.stats, console)
    example = min(result.tally_closed) if result.tally_closed else "REPORT_ID"
    console.print(
        f"Inspect this run: TIPLINE_TOPIC_SUFFIX={result.settings.topic_suffix} .venv/bin/tipline stats",
        highlight=False,
    )
    console.print(
        f"  one report's history: TIPLINE_TOPIC_SUFFIX={result.settings.topic_suffix} "
        f".venv/bin/tipline audit history {example}",
        highlight=False,
    )
    console.print(f"  process logs: {result.log_dir}", highlight=False)


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p99": None}
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }
