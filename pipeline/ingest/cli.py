"""``tipline intake serve|phone`` and ``tipline privacy erase``: the ways in, and the reporter's erasure."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from pipeline import events as ev
from pipeline.console import console
from pipeline.errors import DomainError, ServiceError

intake_app = typer.Typer(
    help="Step 2: the ways a report comes in (secure web endpoint, phone line).", no_args_is_help=True
)
privacy_app = typer.Typer(
    help="Reporters' privacy: erase contact details (crypto-shredding).", no_args_is_help=True
)


def mount(app: typer.Typer) -> None:
    """Mount this part's sub-commands on the ``tipline`` app (one line in ``pipeline/cli.py``)."""
    app.add_typer(intake_app, name="intake")
    app.add_typer(privacy_app, name="privacy")


@intake_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: TIPLINE_HTTP_PORT, 8088).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=32, help="Worker processes (default: one per CPU; each parses on its own core)."
        ),
    ] = None,
) -> None:
    """Serve POST /v1/reports and GET /v1/health until stopped."""
    from pipeline import bootstrap
    from pipeline.ingest.http import serve as run

    settings = bootstrap.settings()
    count = workers or min(os.cpu_count() or 1, 32)
    console.print(
        f"Intake listening on http://{host}:{port or settings.http_port}/v1/reports ({count} worker(s))",
        highlight=False,
    )
    run(settings, host=host, port=port, workers=count)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for raw in values for v in raw.split(",") if v.strip()]


def _ask(label: str, check: Callable[[str], Any]) -> str:
    """Ask until ``check`` takes the answer (blank: skipped); a refusal is said and the question asked
    again, so one mistyped answer does not lose the rest of the call."""
    while True:
        answer = str(typer.prompt(label, default="", show_default=False)).strip()
        if not answer:
            return ""
        try:
            check(answer)
        except (DomainError, ValueError) as exc:
            console.print(
                f"Not taken: {exc}. Say it again, or leave it blank.", highlight=False, markup=False
            )
            continue
        return answer


def _ask_list(label: str, check: Callable[[str, str], Any] | None = None) -> list[str]:
    def each(answer: str) -> None:
        for i, item in enumerate(_split([answer])):
            if check is not None:
                check(item, f"item {i + 1} ({item!r})")

    return _split([_ask(f"{label} (comma-separated, blank for none)", each)])


def _age(answer: str) -> int:
    if not (answer.isascii() and answer.isdigit()) or not 0 <= int(answer) <= 120:
        raise ValueError("the age is a whole number of years from 0 to 120")
    return int(answer)


def _one_of(allowed: Iterable[str], what: str) -> Callable[[str], None]:
    codes = sorted(allowed)

    def check(answer: str) -> None:
        if answer.strip().lower() not in {c.lower() for c in codes}:
            raise ValueError(f"{what} is one of {', '.join(codes)}")

    return check


@intake_app.command("phone")
def phone(  # noqa: PLR0912, PLR0915, PLR0917 - one flag and one question per field asked
    category: Annotated[
        str | None,
        typer.Option(
            help=f"Report category: one of {', '.join(c.value for c in ev.Category)} (blank: not sure)."
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the caller saw, in their words.")] = None,
    url: Annotated[list[str] | None, typer.Option("--url", help="A web address (repeatable).")] = None,
    email: Annotated[
        list[str] | None, typer.Option("--email", help="A reported e-mail address (repeatable).")
    ] = None,
    phone_number: Annotated[
        list[str] | None, typer.Option("--phone", help="A reported phone number (repeatable).")
    ] = None,
    username: Annotated[
        list[str] | None, typer.Option("--username", help="A reported user name (repeatable).")
    ] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="A reported IP address (repeatable).")] = None,
    suspect_name: Annotated[
        list[str] | None, typer.Option("--suspect-name", help="The suspect's name, if known (repeatable).")
    ] = None,
    suspect_username: Annotated[
        list[str] | None,
        typer.Option("--suspect-username", help="The suspect's user or screen name (repeatable)."),
    ] = None,
    suspect_email: Annotated[
        list[str] | None, typer.Option("--suspect-email", help="The suspect's e-mail address (repeatable).")
    ] = None,
    suspect_phone: Annotated[
        list[str] | None, typer.Option("--suspect-phone", help="The suspect's phone number (repeatable).")
    ] = None,
    victim_age: Annotated[int | None, typer.Option(min=0, max=120, help="The child's age, if known.")] = None,
    province: Annotated[
        str | None, typer.Option(help="Province or territory of the child (e.g. ON).")
    ] = None,
    reporter_province: Annotated[
        str | None,
        typer.Option(help="Province or territory the caller is in (e.g. BC), for the counts by origin."),
    ] = None,
    chat_client: Annotated[str | None, typer.Option(help="Chat or messaging app used.")] = None,
    game: Annotated[str | None, typer.Option(help="Online game used.")] = None,
    location: Annotated[str | None, typer.Option(help="A physical location (non-internet incident).")] = None,
    language: Annotated[str, typer.Option(help="Language of the call: en or fr.")] = "en",
    anonymous: Annotated[
        bool | None, typer.Option("--anonymous/--not-anonymous", help="Caller stays anonymous.")
    ] = None,
    contact_name: Annotated[str | None, typer.Option(help="Caller's name (encrypted).")] = None,
    contact_email: Annotated[str | None, typer.Option(help="Caller's e-mail (encrypted).")] = None,
    contact_phone: Annotated[str | None, typer.Option(help="Caller's phone (encrypted).")] = None,
    call_time: Annotated[str | None, typer.Option(help="Best time to call back (encrypted).")] = None,
    submission_id: Annotated[
        str | None, typer.Option(help="Id of this submission (resending it is safe).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Ask nothing: use the flags as given and send.")
    ] = False,
) -> None:
    """Take a report over the phone: prompts for what the flags did not give, then prints its reference."""
    from pipeline import bootstrap
    from pipeline.ingest import logic
    from pipeline.ingest.client import submit_report

    urls, emails, phones, usernames, ips = (_split(v or []) for v in (url, email, phone_number, username, ip))
    # A suspect named is what puts a report in the first lane: asked for like the child's details.
    s_names = [n.strip() for n in suspect_name or [] if n.strip()]  # a name may hold a comma
    s_usernames, s_emails, s_phones = (
        _split(v or []) for v in (suspect_username, suspect_email, suspect_phone)
    )
    if not yes:
        if category is None:
            choices = [c.value for c in ev.Category]
            category = _ask(
                f"Category ({', '.join(choices)}; blank if not sure)", _one_of(choices, "the category")
            ).lower()
        while not description:
            description = typer.prompt("What did the caller see? (description)")
        urls = urls or _ask_list("Web addresses", logic.normalize_url)
        emails = emails or _ask_list("E-mail addresses reported", logic.normalize_email)
        phones = phones or _ask_list("Phone numbers reported", logic.normalize_phone)
        usernames = usernames or _ask_list("User names reported")
        if not (s_names or s_usernames or s_emails or s_phones) and typer.confirm(
            "Does the caller know who the suspect is?", default=False
        ):
            name = typer.prompt("Suspect's name (blank if unknown)", default="", show_default=False).strip()
            s_names = [name] if name else []
            s_usernames = _ask_list("Suspect's user or screen names")
            s_emails = _ask_list("Suspect's e-mail addresses", logic.normalize_email)
            s_phones = _ask_list("Suspect's phone numbers", logic.normalize_phone)
        if victim_age is None:
            age = _ask("Child's age (blank if unknown)", _age)
            victim_age = _age(age) if age else None
        in_canada = _one_of(logic.PROVINCES, "a province or territory")
        if province is None:
            province = _ask("Child's province or territory (blank if unknown)", in_canada).upper()
        if reporter_province is None:
            reporter_province = _ask(
                "Caller's own province or territory (blank if unknown or outside Canada)", in_canada
            ).upper()
        if anonymous is None and not (contact_email or contact_phone):
            anonymous = not typer.confirm("Does the caller want to leave contact details?", default=False)
        if anonymous is False and not (contact_email or contact_phone):
            contact_name = contact_name or typer.prompt("Caller's name", default="", show_default=False)
            contact_email = contact_email or typer.prompt("Caller's e-mail", default="", show_default=False)
            contact_phone = contact_phone or typer.prompt("Caller's phone", default="", show_default=False)
            call_time = call_time or typer.prompt("Best time to call back", default="", show_default=False)
    if not description:
        raise DomainError(
            "description: is required; pass --description or drop --yes to be asked.", field="description"
        )
    report: dict[str, Any] = {"description": description, "language": language}
    if category:
        report["category"] = category
    if submission_id:
        report["submission_id"] = submission_id
    for key, values in (
        ("urls", urls),
        ("emails_reported", emails),
        ("phones_reported", phones),
        ("usernames_reported", usernames),
        ("ip_addresses", ips),
    ):
        if values:
            report[key] = values
    suspect = {
        k: v
        for k, v in (
            ("names", s_names),
            ("usernames", s_usernames),
            ("emails", s_emails),
            ("phones", s_phones),
        )
        if v
    }
    if suspect:
        report["suspect"] = suspect
    victim: dict[str, Any] = {}
    if victim_age is not None:
        victim["age"] = victim_age
    if province:
        victim["location"] = {"province": province}
    if victim:
        report["victim"] = victim
    if reporter_province and reporter_province.strip():
        report["reporter_location"] = {"province": reporter_province}
    tech = {
        k: v for k, v in (("chat_client", chat_client), ("game", game), ("physical_location", location)) if v
    }
    if tech:
        report["tech"] = tech
    contact = {
        k: v
        for k, v in (
            ("name", contact_name),
            ("email", contact_email),
            ("phone", contact_phone),
            ("time_to_call", call_time),
            ("preferred_language", language if (contact_email or contact_phone) else None),
        )
        if v
    }
    if contact:
        report["contact"] = contact
    if anonymous is not None:
        report["anonymous"] = anonymous
    if not yes:
        shown = len(urls) + len(emails) + len(phones) + len(usernames) + len(ips)
        who = "with contact" if contact else "anonymous"
        named = ", a suspect named" if suspect else ""
        summary = f"category {category or 'not sure'}, {shown} address(es){named}, {who}"
        if not typer.confirm(f"Send the report ({summary})?", default=True):
            raise typer.Abort
    # One submission id for every try: if a try reached Kafka after all, the next is the same report.
    report.setdefault("submission_id", str(uuid.uuid4()))
    while True:
        try:
            receipt = submit_report(bootstrap.settings(), report, channel=ev.Channel.PHONE)
            break
        except ServiceError as exc:
            # Interactive: the call-taker still has the report; asking again loses nothing.
            if yes or not typer.confirm(f"{exc} Send it again?", default=True):
                raise
    console.print(f"Report received. Reference: [bold]{receipt.reference}[/]", highlight=False)
    console.print(f"report id {receipt.report_id}, submission id {receipt.submission_id}", highlight=False)


@privacy_app.command("erase")
def erase(
    report: Annotated[
        str, typer.Argument(metavar="REPORT", help="The report id whose contact details to erase.")
    ],
) -> None:
    """Erase a reporter's contact details by deleting their key: unrecoverable; the report stays readable."""
    from pipeline import bootstrap, db
    from pipeline.ingest import crypto

    try:
        report_id = str(uuid.UUID(report))
    except ValueError:
        raise DomainError(
            f"{report!r} is not a report id (a UUID such as the one the intake printed)."
        ) from None
    with db.connect(bootstrap.settings(), autocommit=True) as conn:
        erased = crypto.erase(conn, report_id)
    if erased:
        console.print(f"Erased the contact details of report {report_id}; they can no longer be read.")
    else:
        # Kept as it is on purpose: an erasure asked before the report arrives (or for a mistyped id)
        # leaves a marker that stops a key from ever being stored for that id; it is said plainly.
        console.print(
            f"No readable contact details are stored for report {report_id} (none given, erased before, "
            "or no such report received yet); it is marked erased, so none can be stored for it later."
        )
