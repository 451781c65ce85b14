"""`tipline projections run|rebuild|status`, `tipline audit history|replay`, `tipline stats`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline import bootstrap
from pipeline.console import console
from pipeline.errors import TiplineError
from projections.view import Statistics

projections_app = typer.Typer(
    help="The read models in PostgreSQL, built from the event log.", no_args_is_help=True
)
audit_app = typer.Typer(help="Auditors' views decoded from the event log itself.", no_args_is_help=True)
stats_app = typer.Typer(help="The published figures beside the measured ones.", invoke_without_command=True)


class BadTime(TiplineError):
    """A time given on the command line that is not ISO 8601."""


class UnknownReport(TiplineError):
    """A report id the read model does not hold."""


def _parse_time(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadTime(f"--until {raw!r} is not an ISO 8601 time such as 2026-03-01T12:00:00Z.") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def print_statistics(
    stats: Statistics, console: Console, *, figures: Path | None = None, title: str = ""
) -> None:
    """The statistics as rich tables: published beside measured, counts, and time in each step."""
    from projections import stats as st

    published = st.load_published(figures) if figures else st.load_published()
    t = Table(title=title or "Published figures beside the measured ones")
    for col in ("figure", "published", "measured", "measured over"):
        t.add_column(col)
    for c in st.compare(stats, published):
        t.add_row(c.label, _pct(c.published), _pct(c.measured), c.basis)
    console.print(t)
    counts = Table(title=f"{stats.reports} report{'' if stats.reports == 1 else 's'}; {stats.closed} closed")
    counts.add_column("by")
    counts.add_column("counts")
    for label, data in (
        ("current step", stats.by_step),
        ("category", stats.by_category),
        ("province", stats.by_province),
        ("hosting country", stats.by_hosting_country),
    ):
        counts.add_row(label, escape(", ".join(f"{k} {v}" for k, v in data.items())) or "-")
    console.print(counts)
    times = Table(title="Time in each step (first occurred_at of each step's event)")
    for col in ("from", "to", "reports", "median", "p90"):
        times.add_column(col)
    for s in stats.step_times:
        times.add_row(s.start, s.end, str(s.count), _dur(s.median_s), _dur(s.p90_s))
    console.print(times)


@projections_app.command("run")
def run_cmd() -> None:
    """Run the live projector until stopped (SIGTERM/SIGINT); it resumes exactly where it stopped."""
    from projections.runner import run

    n = run(bootstrap.settings())
    console.print(f"Projector stopped after applying {n} event(s).")


@projections_app.command("rebuild")
def rebuild_cmd(
    keep_old: Annotated[
        bool, typer.Option(help="Keep the replaced tables in a proj_old_<n> schema.")
    ] = False,
    no_swap: Annotated[
        bool, typer.Option("--no-swap", help="Build beside the live tables, do not swap.")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=0, max=32, help="Processes that decode events (0: none; they help only on idle cores)."
        ),
    ] = 0,
) -> None:
    """Replay every topic from the first offset into fresh tables, then swap them in atomically."""
    from projections.rebuild import rebuild

    r = rebuild(bootstrap.settings(), swap_in=not no_swap, keep_old=keep_old, workers=workers)
    console.print(
        f"Rebuilt {r.events} event(s) in {r.seconds:.1f} s ({r.events_per_second:,.0f} events/s) into "
        f"schema {r.schema}{' (swapped in)' if r.swapped else ''}; {r.rejected} undecodable record(s) kept aside."
        + (f" Old tables kept in {r.old_schema}." if r.old_schema else "")
    )


@projections_app.command("status")
def status_cmd() -> None:
    """Where the live projector stands in each partition, and how far behind the log it is."""
    from projections.status import status

    rows, per_step = status(bootstrap.settings())
    t = Table(title="Projector positions")
    for col in ("topic", "partition", "next offset", "end of log", "lag"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.topic, str(r.partition), str(r.next_offset), str(r.end), str(r.lag))
    console.print(t)
    console.print(
        "Reports by current step: " + (", ".join(f"{k} {v}" for k, v in per_step.items()) or "none")
    )


@projections_app.command("report")
def report_cmd(report_id: Annotated[str, typer.Argument(metavar="REPORT", help="The report id.")]) -> None:
    """One report's status from the read model: step, level, classification, determination, referrals."""
    from pipeline import db
    from projections import pg

    settings = bootstrap.settings()
    with db.connect(settings, autocommit=True) as conn:
        schema = pg.schema_for(settings)
        pg.install(conn, schema)
        status = pg.PgView(conn, schema).report(report_id)
    if status is None:
        raise UnknownReport(
            f"report {report_id} is not in the read model (yet); check the id or the projector."
        )
    t = Table(title=f"Report {escape(report_id)}", show_header=False)
    t.add_row("step", status.step)
    t.add_row("level", "-" if status.level is None else str(status.level))
    t.add_row("categories", escape(", ".join(status.categories)) or "-")
    t.add_row("sections", escape(", ".join(status.sections)) or "-")
    t.add_row("determination", status.determination or "-")
    t.add_row("outcome", status.outcome or "-")
    for r in status.referrals:
        where = "domestic" if r.domestic else "foreign"
        t.add_row("referral", escape(f"{r.kind} {r.recipient} ({r.jurisdiction}, {where})"))
    for step, at in status.times.items():
        t.add_row(f"{step} at", at.astimezone(UTC).isoformat(timespec="seconds"))
    console.print(t)


@projections_app.command("queue")
def queue_cmd(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many reports to list.")] = 20,
) -> None:
    """The analysts' queue: classified reports not yet assessed, most urgent level first, then arrival."""
    from pipeline import db
    from projections import pg

    settings = bootstrap.settings()
    with db.connect(settings, autocommit=True) as conn:
        schema = pg.schema_for(settings)
        pg.install(conn, schema)
        entries = pg.PgView(conn, schema).queue(limit)
    t = Table(title="Analysts' queue")
    for col in ("report", "level", "arrival", "classified at (UTC)", "categories"):
        t.add_column(col)
    for q in entries:
        t.add_row(
            q.report_id,
            str(q.level),
            str(q.arrival_seq),
            q.classified_at.astimezone(UTC).isoformat(timespec="seconds"),
            escape(", ".join(q.categories)),
        )
    console.print(t if entries else "The queue is empty.")


@audit_app.command("history")
def history_cmd(
    report_id: Annotated[
        str,
        typer.Argument(
            metavar="REPORT", help="The report id (a UUID: the key of every event of the report)."
        ),
    ],
    timeout: Annotated[
        float, typer.Option(min=1.0, max=86_400.0, help="Give up scanning the log after this many seconds.")
    ] = 120.0,
) -> None:
    """Every event of one report, in order, from the log (scanned from the beginning, with a deadline)."""
    from projections.audit import history

    h = history(bootstrap.settings(), report_id, timeout=timeout)
    if not h.entries:
        raise TiplineError(
            f"No event of report {report_id} in {h.scan.records} record(s) scanned; give the report id "
            "(the UUID that keys its events: a report number such as CT-2026-000123 is not one)."
        )
    t = Table(title=f"History of {escape(report_id)}")
    t.add_column("time (UTC)", no_wrap=True)
    for col in ("event", "actor", "summary"):
        t.add_column(col)
    for e in h.entries:
        t.add_row(
            e.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            e.event_type,
            escape(e.actor),
            escape(e.summary),
        )
    if h.entries:
        console.print(t)
    if not h.scan.complete:
        console.print(
            f"[yellow]The scan stopped at the {timeout:.0f} s deadline: the history may be incomplete.[/]"
        )


@audit_app.command("replay")
def replay_cmd(
    until: Annotated[str, typer.Option(help="ISO 8601 time; events that occurred after it are left out.")],
    timeout: Annotated[
        float, typer.Option(min=1.0, max=86_400.0, help="Give up scanning the log after this many seconds.")
    ] = 600.0,
) -> None:
    """The state and the statistics as of a past moment, replayed from the log."""
    from projections.audit import replay

    r = replay(bootstrap.settings(), _parse_time(until), timeout=timeout)
    console.print(
        f"Applied {r.applied} event(s) up to {r.until.isoformat()}; {r.later} later event(s) left out."
    )
    print_statistics(r.view.statistics(), console, title=f"As of {r.until.isoformat()}")
    if not r.scan.complete:
        console.print(
            f"[yellow]The scan stopped at the {timeout:.0f} s deadline: the figures may be incomplete.[/]"
        )


@stats_app.callback()
def stats_cmd(
    figures: Annotated[
        Path | None, typer.Option(help="A replacement published-figures CSV (metric,value,year,source_note).")
    ] = None,
) -> None:
    """Print the published figures beside the ones measured on the live read model."""
    from projections.stats import measured

    print_statistics(measured(bootstrap.settings()), console, figures=figures)


def mount(app: typer.Typer) -> None:
    """Mount `projections`, `audit` and `stats` on the `tipline` command."""
    app.add_typer(projections_app, name="projections")
    app.add_typer(audit_app, name="audit")
    app.add_typer(stats_app, name="stats")
