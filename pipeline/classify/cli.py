"""``tipline classify ...``: an analyst's override of a classification, and a report's classification history.

Errors reach the person as one sentence (``TiplineError``, printed by ``pipeline.cli.main``) and a
non-zero exit code; nothing is written when the override is refused.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline import bootstrap
from pipeline.classify.history import OverrideRefused, read_classifications, record_override
from pipeline.classify.rules import tables_from_settings
from pipeline.console import console
from pipeline.events import ActorKind, ReportClassified

app = typer.Typer(
    help="Step 5: Criminal Code classification (analyst overrides, history).", no_args_is_help=True
)

ROLES = (ActorKind.ANALYST.value, ActorKind.AUDITOR.value)


def _split_sections(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.replace(";", ",").split(",") if part.strip()]


def _summary(event: ReportClassified) -> str:
    parts = []
    for c in event.incidents:
        category = c.assigned_category.value if c.assigned_category else "unclassified"
        sections = ", ".join(c.sections) or "no section"
        parts.append(f"{c.incident_id}: {category} ({sections}; {c.verdict.value})")
    return "; ".join(parts)


@app.command("override")
def override_cmd(  # noqa: PLR0917 - typer maps each option to a parameter
    report: Annotated[str, typer.Argument(metavar="REPORT", help="The report id.")],
    category: Annotated[str, typer.Option(help="The category the analyst assigns (e.g. luring).")],
    reason: Annotated[str, typer.Option(help="Why the classification changes (kept in the event).")],
    sections: Annotated[
        list[str] | None,
        typer.Option(help="Criminal Code sections, comma-separated or repeated (e.g. '172.1,163.1(2)')."),
    ] = None,
    analyst: Annotated[
        str | None, typer.Option(help="The analyst's identity (required to override).")
    ] = None,
    role: Annotated[
        str, typer.Option(help="Who acts: analyst or auditor (auditors cannot override).")
    ] = "analyst",
    incident: Annotated[
        list[str] | None, typer.Option(help="Only these incident ids (repeatable); default: every incident.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="Seconds allowed to read the log.")
    ] = 15.0,
) -> None:
    """Reclassify a report: a new classification that supersedes the current one (which stays in the log)."""
    if role not in ROLES:
        raise OverrideRefused(f"Role {role!r} is not known; use analyst or auditor.")
    settings = bootstrap.settings()
    result = record_override(
        settings,
        tables_from_settings(settings.extra),
        report_id=report,
        category=category,
        sections=_split_sections(sections or []),
        reason=reason,
        analyst=analyst,
        role=ActorKind(role),
        incident_ids=incident or [],
        timeout=timeout,
    )
    event = result.event
    if not result.written:
        console.print(f"This override of report {report} is already on the log as {event.envelope.event_id}.")
        return
    console.print(
        f"Report {report} reclassified by analyst {event.envelope.actor.id}: {_summary(event)}. "
        f"Event {event.envelope.event_id} supersedes {event.supersedes}.",
        highlight=False,
        markup=False,
    )


@app.command("show")
def show_cmd(
    report: Annotated[str, typer.Argument(metavar="REPORT", help="The report id.")],
    timeout: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="Seconds allowed to read the log.")
    ] = 15.0,
) -> None:
    """Print every classification of a report, oldest first, with who made it and what it supersedes."""
    history = read_classifications(bootstrap.settings(), report.strip(), timeout=timeout)
    if not history:
        raise OverrideRefused(f"Report {report} has no classification on the log.")
    for event in history:
        env = event.envelope
        line = f"{env.occurred_at:%Y-%m-%d %H:%M:%S} {env.event_id} by {env.actor.kind}:{env.actor.id} "
        line += f"level {event.level}: {_summary(event)}"
        if event.supersedes:
            line += f" [supersedes {event.supersedes}: {event.override_reason}]"
        if event.needs_analyst_review:
            line += " [needs analyst review]"
        console.print(line, highlight=False, markup=False)
