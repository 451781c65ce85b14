"""`tipline route ...`: check the routing tables an operator supplies, and see where a host would go."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline import bootstrap
from pipeline.console import console
from pipeline.errors import DomainError
from pipeline.ingest.logic import normalize_url
from pipeline.route.resolve import Resolver, SocketResolver, demo_resolver, locate
from pipeline.route.tables import Tables, load_tables
from pipeline.route.templates import check_templates

app = typer.Typer(help="Step 7: routing tables and jurisdiction of hosts.", no_args_is_help=True)

TablesOption = Annotated[
    Path | None,
    typer.Option(
        "--tables", help="A folder of routing tables (default: TIPLINE_ROUTE_TABLES, else the packaged)."
    ),
]


def _tables(folder: Path | None) -> Tables:
    return load_tables(folder if folder is not None else bootstrap.settings().route_tables)


@app.command("tables")
def tables_command(tables: TablesOption = None) -> None:
    """Load and check the routing tables; print every recipient with its verified flag and source."""
    loaded = _tables(tables)
    check_templates()
    out = Table(title="Routing tables")
    for col in ("jurisdiction", "kind", "recipient", "verified", "source"):
        out.add_column(col)
    out.add_row(
        "CA",
        "police (national default)",
        loaded.national_default.name,
        _yes(loaded.national_default.verified),
        loaded.national_default.source,
    )
    for code, row in sorted(loaded.provinces.items()):
        out.add_row(code, "police", row.police.name, _yes(row.police.verified), row.police.source)
        if row.child_protection is not None:
            cp = row.child_protection
            out.add_row(code, "child protection", cp.name, _yes(cp.verified), cp.source)
    for country, hotline in sorted(loaded.hotlines.items()):
        out.add_row(country, "INHOPE hotline", hotline.name, _yes(hotline.verified), hotline.source)
    out.add_row(
        "*", "no hotline", loaded.interpol.name, _yes(loaded.interpol.verified), loaded.interpol.source
    )
    console.print(out)
    unverified = sum(
        not a.verified
        for a in (
            *(p.police for p in loaded.provinces.values()),
            *(p.child_protection for p in loaded.provinces.values() if p.child_protection is not None),
            *loaded.hotlines.values(),
        )
    )
    console.print(f"Tables are valid; {unverified} row(s) are marked unverified.")


@app.command("locate")
def locate_command(
    hosts: Annotated[
        list[str], typer.Argument(help="Host names, IP addresses or URLs (a URL's host is located).")
    ],
    demo: Annotated[
        bool | None,
        typer.Option(
            "--demo/--dns",
            help="The demo host table, or the system resolver (default: TIPLINE_RESOLVER, as the route "
            "stage reads it).",
        ),
    ] = None,
    tables: TablesOption = None,
) -> None:
    """Say which country each host is in and which recipient its content would go to."""
    loaded = _tables(tables)
    if demo is None:
        demo = bootstrap.settings().resolver == "demo"
    resolver: Resolver = demo_resolver() if demo else SocketResolver()
    refused = 0
    for given in hosts:
        host, problem = _host_of(given)
        if host is None:
            console.print(f"{given}: {problem}", highlight=False, markup=False)
            refused += 1
            continue
        where = locate(host, resolver)
        label = host if host == given else f"{given} (host {host})"
        if where.country is None:
            line = f"{label}: {where.problem} -> {loaded.national_default.name}"
        elif where.country == "CA":
            line = f"{label}: CA ({where.address}) -> police of the province, else {loaded.national_default.name}"
        else:
            hotline = loaded.hotlines.get(where.country)
            to = hotline.name if hotline else loaded.interpol.name
            line = f"{label}: {where.country} ({where.address}) -> {to}"
        console.print(line, highlight=False, markup=False)
    if refused:
        raise typer.Exit(1)


def _host_of(given: str) -> tuple[str | None, str | None]:
    """The host an argument names: itself, or a URL's host, normalised as the ingest step does (the
    route step locates the host ingest kept). (None, the reason) when the URL has no valid host."""
    if "/" not in given:  # a host name or an address (an IPv6 address has colons, never a slash)
        return given, None
    try:
        return normalize_url(given, "url").host, None
    except DomainError as exc:
        return None, f"not a URL this tipline takes ({exc})."


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@app.command("run")
def run_command(
    demo: Annotated[
        bool,
        typer.Option(help="Locate hosts with the demo host table (data/demo_hosts.csv), never the network."),
    ] = False,
    instance: Annotated[
        str, typer.Option(help="Stable name of this replica, part of its transactional id.")
    ] = "0",
    tables: TablesOption = None,
) -> None:
    """Run the route stage until stopped; like `tipline stage route`, with a choice of resolver."""
    from pipeline.route.stage import spec
    from pipeline.runtime import run_stage

    settings = bootstrap.settings()
    resolver: Resolver = demo_resolver() if demo else SocketResolver()
    run_stage(spec(settings, tables_dir=tables, resolver=resolver), settings, instance=instance)
