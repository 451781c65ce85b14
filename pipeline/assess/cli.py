"""``tipline analyst ...``: the analysts' and auditors' terminal commands for step 6.

An analyst claims the next report (``next``), reads it, and records a determination (``decide``); an
auditor may read any report (``show``) but never claim or decide. Every decision is attributed
(``analyst:ID``). The reporter's contact details are never shown; the description is (reading it is
the analyst's job) but it is never logged.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from pipeline import bootstrap
from pipeline.assess import logic, queue
from pipeline.console import console
from pipeline.db import connect
from pipeline.errors import ConfigError
from pipeline.events import Determination, Incident, IncidentClassification, ReportBody
from pipeline.settings import Settings

app = typer.Typer(
    help="Step 6: the analysts' queue. Claim the next report, read it, record a determination.",
    no_args_is_help=True,
)

AnalystOpt = Annotated[str | None, typer.Option("--analyst", help="Your analyst identity (e.g. jdoe).")]
AuditorOpt = Annotated[
    str | None, typer.Option("--auditor", help="An auditor identity: may read, never decide.")
]
ClaimMinutes = Annotated[
    float, typer.Option("--claim-minutes", min=0.1, max=24 * 60, help="How long a claim lasts undecided.")
]


def _analyst(analyst: str | None, auditor: str | None, *, action: str) -> str:
    """The analyst identity for an action only analysts may take; one clear sentence otherwise."""
    if auditor is not None:
        logic.check_identity(auditor, role="auditor")
        raise queue.RoleError(f"Auditor {auditor} can read reports but cannot {action}; only an analyst can.")
    if analyst is None:
        raise queue.RoleError(f"To {action}, give your analyst identity with --analyst ID.")
    return logic.check_identity(analyst, role="analyst")


@app.command("next")
def next_report(
    analyst: AnalystOpt = None,
    auditor: AuditorOpt = None,
    claim_minutes: ClaimMinutes = 15.0,
) -> None:
    """Claim the most urgent waiting report (level, then arrival) and show it."""
    who = _analyst(analyst, auditor, action="claim reports")
    settings = bootstrap.settings()
    with connect(settings) as conn:
        item = queue.claim_next(
            conn,
            settings.topic_suffix,
            who,
            now=queue.now_utc(),
            ttl=timedelta(minutes=claim_minutes),
        )
    if item is None:
        console.print("No report is waiting for an analyst.")
        return
    render(item, console)
    console.print(
        f"Claimed by {who} until {_utc(item.claim_expires_at):%H:%M} UTC. Record your determination with "
        f"`tipline analyst decide {escape(item.report_number)} --analyst {who} --determination ...`.",
        highlight=False,
    )


@app.command("show")
def show(
    report: Annotated[str, typer.Argument(metavar="REPORT", help="Report number or report id.")],
    analyst: AnalystOpt = None,
    auditor: AuditorOpt = None,
) -> None:
    """Show a report as analysts see it (no reporter contact); analysts and auditors may read."""
    if analyst is None and auditor is None:
        raise queue.RoleError("To read a report, give your identity with --analyst ID or --auditor ID.")
    if analyst is not None:
        logic.check_identity(analyst, role="analyst")
    if auditor is not None:
        logic.check_identity(auditor, role="auditor")
    settings = bootstrap.settings()
    with connect(settings) as conn:
        item = queue.find(conn, settings.topic_suffix, report)
    if item is None:
        raise queue.QueueError(f"No report {report!r} is in the analysts' queue; check the report number.")
    render(item, console)


@app.command("decide")
def decide(  # noqa: PLR0917 - typer maps each command-line option to a parameter
    report: Annotated[str, typer.Argument(metavar="REPORT", help="Report number or report id.")],
    determination: Annotated[
        Determination, typer.Option("--determination", help="What the report likely relates to.")
    ],
    analyst: AnalystOpt = None,
    auditor: AuditorOpt = None,
    child_may_need_protection: Annotated[
        bool,
        typer.Option("--child-may-need-protection", help="Also refer to the child-protection authority."),
    ] = False,
    note: Annotated[str | None, typer.Option("--note", help="A note for the record (not logged).")] = None,
    revise: Annotated[
        bool, typer.Option("--revise", help="Record a new determination superseding an earlier one.")
    ] = False,
) -> None:
    """Record a determination on a report you claimed (or an unclaimed one); it is attributed to you."""
    who = _analyst(analyst, auditor, action="record a determination")
    settings = bootstrap.settings()
    request = queue.DecisionRequest(
        report=report,
        actor=logic.analyst_actor(who),
        claim_owner=who,
        determination=determination,
        child_may_need_protection=child_may_need_protection,
        note=note,
        revise=revise,
    )
    publisher = queue.Publisher(settings)
    try:
        with connect(settings) as conn:
            assessed = queue.record_decision(
                conn, publisher.publish, settings.topic_suffix, request, now=queue.now_utc()
            )
    finally:
        publisher.close()
    extra = f", superseding {assessed.supersedes}" if assessed.supersedes else ""
    console.print(
        f"Recorded {assessed.determination.value} on {escape(assessed.body.report_number)} by analyst:{who} "
        f"(event {assessed.envelope.event_id}{extra}).",
        highlight=False,
    )
    if assessed.supersedes:
        closed = _closed_before(settings, assessed.envelope.report_id)
        if closed is not None:
            console.print(
                f"Note: {escape(assessed.body.report_number)} was already closed ({closed}). The route step "
                "keeps what it has done (a referral is never recalled) and acts only on what this revision "
                "adds (a recipient not yet told); tell earlier recipients yourself if they must know.",
                highlight=False,
            )


def _closed_before(settings: Settings, report_id: str) -> str | None:
    """How the report was closed, as the read model says (None: not closed, or no read model here)."""
    import psycopg

    from projections import pg

    schema = pg.schema_for(settings)
    try:
        with connect(settings) as conn:
            if not pg.schema_exists(conn, schema):
                return None
            status = pg.PgView(conn, schema).report(report_id)
    except psycopg.Error:
        return None  # a read model of another version or none at all: the note is a courtesy
    if status is None or status.outcome is None:
        return None
    n = len(status.referrals)
    return f"outcome {status.outcome}, {n} referral{'' if n == 1 else 's'}"


@app.command("simulate")
def simulate(  # noqa: PLR0917 - typer maps each command-line option to a parameter
    seed: Annotated[int, typer.Option(help="Seed of the simulated analysts' decisions.")] = 7,
    analysts: Annotated[
        int, typer.Option(min=1, max=32, help="How many simulated analysts work at once.")
    ] = 1,
    until_empty: Annotated[
        bool,
        typer.Option(
            "--until-empty/--forever",
            help="Stop once no report is waiting, or (the default) run until SIGTERM/SIGINT.",
        ),
    ] = False,
    idle_seconds: Annotated[
        float, typer.Option(min=0, help="With --until-empty: how long the queue must stay empty first.")
    ] = 2.0,
    claim_minutes: ClaimMinutes = 15.0,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            max=500,
            help=(
                "How many reports each simulated analyst claims and decides at once (one claim and one "
                "decision transaction, one wait for the broker). A run stands in for a larger team working "
                "in parallel; a person's `analyst next` / `decide` stays one report at a time."
            ),
        ),
    ] = 50,
) -> None:
    """Run simulated analysts (labelled `simulated:seed=N` in every event) through the same queue."""
    settings = bootstrap.settings()
    stop = threading.Event()
    # A stopped (SIGTERM) analyst finishes the run in hand; a killed one (SIGKILL) leaves claims that
    # the same worker name takes back when restarted, or that expire for the others.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    summary = queue.simulate(
        settings,
        seed=seed,
        analysts=analysts,
        until_empty=until_empty,
        idle_s=idle_seconds,
        ttl=timedelta(minutes=claim_minutes),
        stop=stop,
        batch=batch,
    )
    table = Table(title=f"Simulated determinations (seed={seed})")
    table.add_column("determination")
    table.add_column("reports", justify="right")
    table.add_column("share", justify="right")
    for det in Determination:
        n = summary.determinations.get(det.value, 0)
        share = f"{100 * n / summary.decided:.1f}%" if summary.decided else "-"
        table.add_row(det.value, str(n), share)
    console.print(table)
    console.print(
        f"Simulated analysts (seed={seed}) recorded {summary.decided} determinations; "
        f"child may need protection on {summary.child_protection}.",
        highlight=False,
    )


@app.command("load-hashes")
def load_hashes(
    path: Annotated[Path, typer.Argument(help="Known-material list: one hash_type:value per line.")],
    replace: Annotated[bool, typer.Option(help="Replace the whole list instead of adding to it.")] = False,
) -> None:
    """Load the operator's known-material hash list used by the automated pre-assessment."""
    settings = bootstrap.settings()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the known-hashes file {path}: {exc.strerror}.") from exc
    keys = logic.parse_known_hashes(text.splitlines(), source=str(path))
    with connect(settings) as conn:
        added = queue.load_known_hashes(conn, keys, source=path.name, replace=replace)
    console.print(f"Loaded {len(keys)} hash(es) from {path.name}; {added} new.", highlight=False)


# --- Rendering --------------------------------------------------------------------------------------


def _utc(moment: datetime | None) -> datetime:
    """Times read back from PostgreSQL come in the session's time zone; analysts read UTC."""
    if moment is None:
        return datetime.min.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _incident_rows(incident: Incident) -> list[str]:
    lines: list[str] = []
    lines.extend(f"url {u.normalized}  (host {u.host})" for u in incident.urls)
    lines.extend(f"e-mail {e}" for e in incident.emails)
    lines.extend(f"phone {p}" for p in incident.phones)
    lines.extend(f"user name {u}" for u in incident.usernames)
    lines.extend(f"ip {ip}" for ip in incident.ip_addresses)
    for f in incident.files:
        hashes = ", ".join(f"{h.hash_type.value}:{h.value}" for h in f.hashes) or "no hash"
        seen = f" seen at {f.seen_at_url}" if f.seen_at_url else ""
        lines.append(f"file {f.file_name or '(unnamed)'} [{hashes}]{seen}")
    return lines or ["(no details)"]


def _classification_text(c: IncidentClassification | None) -> str:
    if c is None:
        return "(not classified)"
    reporter = c.reporter_category.value if c.reporter_category else "not sure"
    assigned = c.assigned_category.value if c.assigned_category else "none"
    parts = [f"{c.verdict.value}: {assigned} (reporter: {reporter})"]
    if c.sections:
        parts.append("Criminal Code " + ", ".join(c.sections))
    if c.tags:
        parts.append("tags " + ", ".join(c.tags))
    if c.reasons:
        parts.append("; ".join(c.reasons))
    return "\n".join(parts)


def _people(body: ReportBody) -> list[str]:
    lines: list[str] = []
    v = body.victim
    if v is not None:
        bits = [
            f"name {v.name}" if v.name else "",
            f"age {v.age}" if v.age is not None else "",
            f"born {v.date_of_birth}" if v.date_of_birth else "",
            f"school {v.school}" if v.school else "",
            f"screen name {v.screen_name}" if v.screen_name else "",
            f"gender {v.gender}" if v.gender else "",
        ]
        if v.location is not None:
            loc = ", ".join(x for x in (v.location.city, v.location.province, v.location.country) if x)
            bits.append(f"location {loc}" if loc else "")
        lines.append("Victim: " + ("; ".join(b for b in bits if b) or "(no details)"))
    s = body.suspect
    if s is not None:
        bits = [
            "names " + ", ".join(s.names) if s.names else "",
            "user names " + ", ".join(s.usernames) if s.usernames else "",
            "e-mails " + ", ".join(s.emails) if s.emails else "",
            "phones " + ", ".join(s.phones) if s.phones else "",
            "profiles " + ", ".join(s.profile_urls) if s.profile_urls else "",
            "ip events " + ", ".join(f"{e.ip} {e.event or ''}".strip() for e in s.ip_events)
            if s.ip_events
            else "",
        ]
        if s.location is not None:
            loc = ", ".join(x for x in (s.location.city, s.location.province, s.location.country) if x)
            bits.append(f"location {loc}" if loc else "")
        lines.append("Suspect: " + ("; ".join(b for b in bits if b) or "(no details)"))
    return lines


def render(item: queue.QueueItem, out: Console) -> None:
    """The report as an analyst needs it: never the reporter's contact details."""
    c = item.classified
    body = c.body
    header = (
        f"[bold]{escape(item.report_number)}[/]  level {item.level}  "
        f"({escape(', '.join(c.priority_reasons) or 'no reasons')})\n"
        f"status {item.status}"
        + (f", claimed by {item.claimed_by}" if item.status == "claimed" else "")
        + (f", decided {item.determination} by {item.decided_by}" if item.status == "decided" else "")
        + f"\nreceived {_utc(body.received_at):%Y-%m-%d %H:%M} UTC via {body.channel.value}, language "
        f"{body.language.value}; reporter "
        + ("anonymous" if body.anonymous else "not anonymous")
        + ("; contact details on file (encrypted, not shown)" if item.reporter_left_contact else "")
    )
    if c.needs_analyst_review:
        header += "\n[yellow]classification flagged for analyst review[/]"
    if c.override_reason:
        header += f"\nclassification override: {escape(c.override_reason)}"
    out.print(Panel(header, title="Report", expand=False), highlight=False)
    by_incident = {ic.incident_id: ic for ic in c.incidents}
    table = Table(title="Incidents", show_lines=True)
    table.add_column("incident")
    table.add_column("technology")
    table.add_column("details")
    table.add_column("classification")
    for inc in body.incidents:
        table.add_row(
            escape(inc.incident_id),
            inc.technology.value,
            escape("\n".join(_incident_rows(inc))),
            escape(_classification_text(by_incident.get(inc.incident_id))),
        )
    out.print(table)
    extra = _people(body)
    if body.annotations:
        extra.append("Annotations: " + ", ".join(a.value for a in body.annotations))
    f = body.facts
    flags = [
        n
        for n, on in (
            ("money", f.money_involved),
            ("threats", f.threats),
            ("travel", f.travel),
            ("in-person meeting", f.in_person_meeting),
            ("live stream", f.live_stream),
            ("ongoing", f.ongoing),
        )
        if on
    ]
    if f.content or flags:
        extra.append(
            "Facts: "
            + ", ".join([*(k.value for k in f.content), *(a.value for a in f.actions), *flags])
            + f" (sender {f.sender_role.value}, recipient {f.recipient_role.value})"
        )
    if extra:
        out.print(escape("\n".join(extra)), highlight=False)
    out.print(
        Panel(escape(body.description or "(no description)"), title="Description", expand=False),
        highlight=False,
    )
    for d in item.history:
        sup = f", supersedes {d.supersedes}" if d.supersedes else ""
        out.print(
            f"Decision {_utc(d.decided_at):%Y-%m-%d %H:%M} UTC: {d.determination} by {d.actor_id} ({d.actor_kind})"
            + (", child may need protection" if d.child_may_need_protection else "")
            + sup,
            highlight=False,
        )
