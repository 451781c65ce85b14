"""The `tipline` command. A person at a terminal gets one clear sentence and an exit code, never a trace.

Sub-commands of each step live beside the step (``pipeline/<step>/cli.py``) and are mounted here; the
settings are read once here and passed down (the composition root is ``pipeline.bootstrap``).
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipeline import bootstrap
from pipeline.console import console, err_console
from pipeline.errors import TiplineError

app = typer.Typer(
    name="tipline",
    help="Event-sourced report-processing pipeline for child-exploitation tiplines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="Start, stop and inspect the local Kafka broker and PostgreSQL.", no_args_is_help=True
)
topics_app = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")


def _mount_step_commands() -> None:
    """Each part's own sub-commands live beside its code; they are mounted here, one line each."""
    from pipeline.assess.cli import app as analyst_app
    from pipeline.classify.cli import app as classify_app
    from pipeline.ingest.cli import mount as mount_ingest
    from pipeline.prioritize.cli import app as prioritize_app
    from pipeline.route.cli import app as route_app
    from pipeline.schemas_cli import schemas_app
    from projections.cli import mount as mount_projections

    app.add_typer(schemas_app, name="schemas")
    mount_ingest(app)  # intake, privacy
    app.add_typer(prioritize_app, name="prioritize")
    app.add_typer(classify_app, name="classify")
    app.add_typer(analyst_app, name="analyst")
    app.add_typer(route_app, name="route")
    mount_projections(app)  # projections, audit, stats


_mount_step_commands()


def _print_status(rows: list[bootstrap.ServiceStatus]) -> None:
    for s in rows:
        state = "[green]running[/]" if s.running else "[red]down[/]"
        console.print(f"[bold]{s.name:<10}[/] {state}  {s.address}", highlight=False)
        console.print(f"           log: {s.log}", highlight=False)
        if s.detail:
            console.print(f"           {s.detail}", highlight=False)


@services_app.command("up")
def services_up() -> None:
    """Start the local broker and database if they are not running (harmless when they are)."""
    settings = bootstrap.settings()
    started = time.monotonic()
    rows = bootstrap.services_up(settings)
    _print_status(rows)
    console.print(f"Ready in {time.monotonic() - started:.1f} s; topics checked.")


@services_app.command("down")
def services_down() -> None:
    """Stop the local broker and database; their data stays on disk."""
    settings = bootstrap.settings()
    bootstrap.services_down(settings)
    console.print("Stopped the local services; their data is kept.")


@services_app.command("status")
def services_status() -> None:
    """Say where each service listens, whether it answers, and where its log is."""
    rows = bootstrap.services_status(bootstrap.settings())
    _print_status(rows)
    if not all(r.running for r in rows):
        raise typer.Exit(code=1)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the topic table that does not exist yet."""
    settings = bootstrap.settings()
    made = bootstrap.ensure_topics(settings)
    if not made:
        console.print("Every topic already existed; none created.")
    else:
        console.print(f"Created {len(made)} topic(s); the others already existed.")


@topics_app.command("list")
def topics_list() -> None:
    """Print the topic table: name (with this environment's TIPLINE_TOPIC_SUFFIX), events carried, producer."""
    from pipeline.topics import ALL_TOPICS, name

    suffix = bootstrap.settings().topic_suffix
    table = Table(title=f"Topics (suffix {suffix})" if suffix else "Topics")
    for col in ("topic", "events", "produced by"):
        table.add_column(col)
    for spec in ALL_TOPICS:
        table.add_row(name(spec, suffix), ", ".join(spec.events) or "(raw dead letters)", spec.produced_by)
    console.print(table)


STAGE_NAMES = ("ingest", "prioritize", "classify", "assess", "route")


@app.command("stage")
def stage(
    stage_name: Annotated[
        str, typer.Argument(metavar="NAME", help="ingest, prioritize, classify, assess or route.")
    ],
    instance: Annotated[
        str,
        typer.Option(
            help="Stable name of this replica ('auto': the host name), part of its transactional id."
        ),
    ] = "0",
    engine: Annotated[
        str, typer.Option(help="confluent (transactional, exactly once) or faust.")
    ] = "confluent",
    guarantee: Annotated[
        str, typer.Option(help="With --engine faust: at_least_once or exactly_once (faust's own).")
    ] = "at_least_once",
) -> None:
    """Run one step processor until stopped (SIGTERM/SIGINT); scale by running more instances."""
    if engine not in ("confluent", "faust"):
        raise typer.BadParameter(f"unknown engine {engine!r}; choose confluent or faust.")
    if stage_name not in STAGE_NAMES:
        raise typer.BadParameter(f"unknown stage {stage_name!r}; choose one of {', '.join(STAGE_NAMES)}.")
    import importlib

    from pipeline.runtime import run_stage

    if instance == "auto":
        import socket

        instance = socket.gethostname()
    settings = bootstrap.settings()
    module = importlib.import_module(f"pipeline.{stage_name}.stage")
    if engine == "faust":
        from pipeline.faust_engine import run_stage_faust

        run_stage_faust(module.spec(settings), settings, instance=instance, guarantee=guarantee)
        return
    run_stage(module.spec(settings), settings, instance=instance)


@app.command("demo")
def demo(
    reports: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many reports to generate.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the report generator (same seed, same stream).")] = 7,
    chaos: Annotated[
        bool, typer.Option("--chaos", help="SIGKILL and restart every process at least once during the run.")
    ] = False,
) -> None:
    """Bring up the services, run every step on a generated report stream, print the statistics."""
    from pipeline.demo import run_demo

    run_demo(bootstrap.settings(), reports=reports, seed=seed, chaos=chaos, console=console)


@app.command("bench")
def bench(
    reports: Annotated[
        int,
        typer.Option(
            min=100,
            max=1_000_000,
            help="Reports in the end-to-end run (long enough that filling and draining the stages weigh little).",
        ),
    ] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the report generator.")] = 11,
    out: Annotated[
        str, typer.Option(help="Where to write the figures as JSON.")
    ] = "bench-results/latest.json",
    warmup: Annotated[
        int,
        typer.Option(
            min=0,
            max=100_000,
            help="Reports run through the pipeline first, not measured, while the broker's JIT warms (0: none).",
        ),
    ] = 5000,  # pipeline.bench.WARMUP_REPORTS, not imported: every command would load the bench
) -> None:
    """Measure this version's figures against a raw Kafka baseline in the same run; print and save them."""
    from pathlib import Path

    from pipeline.bench import run_bench

    settings = bootstrap.settings()
    run_bench(
        settings, reports=reports, seed=seed, out=settings.root / Path(out), console=console, warmup=warmup
    )


def main() -> None:
    """Entry point: runs the app and turns the project's errors into one sentence and an exit code."""
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of exiting with it.
        code = app(standalone_mode=False)
    except TiplineError as exc:
        # The sentence may quote the user's input: never read as markup ("[/]" is text, not a tag).
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)
    except typer.Abort:
        err_console.print("Aborted.")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - click's usage errors and anything unexpected: one line, no trace
        import click

        # typer brings a copy of click of its own (typer._click): its usage errors are not
        # click.ClickException, but show themselves the same way, naming the option.
        if isinstance(exc, click.ClickException) or (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            exc.show()
            sys.exit(exc.exit_code)
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
