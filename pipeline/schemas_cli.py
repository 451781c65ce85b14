"""``tipline schemas ...``: keep the event contract (schemas/, asyncapi.yaml) honest.

Mounted in ``pipeline.cli`` as ``app.add_typer(schemas_app, name="schemas")``. Failures raise
``TiplineError`` with one sentence; ``pipeline.cli.main`` prints it and exits non-zero.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline import asyncapi, schema_registry
from pipeline.console import console, err_console
from pipeline.errors import TiplineError

schemas_app = typer.Typer(
    help="The event contract: Avro schemas in schemas/ and the AsyncAPI document.", no_args_is_help=True
)
_out = console
_err = err_console


def _fail(problems: list[str], what: str) -> None:
    for p in problems[1:]:
        _err.print(f"  - {p}", highlight=False)
    more = f" (and {len(problems) - 1} more, listed above)" if len(problems) > 1 else ""
    raise TiplineError(f"{problems[0]}{more}" if problems else what)


@schemas_app.command("check")
def check() -> None:
    """Fail if a current schema cannot read an older version's data, or schemas/ lags the dataclasses."""
    problems = [
        f"{p.relative_to(schema_registry.schemas_dir().parent)} is out of date with pipeline/events.py; "
        "run `tipline schemas generate` (and bump SCHEMA_VERSIONS if that version was ever published)."
        for p in schema_registry.write_current(check=True)
    ]
    problems += schema_registry.compatibility_problems(schema_registry.load_all())
    if problems:
        _fail(problems, "the schemas are inconsistent")
    n = len(schema_registry.load_all())
    _out.print(f"{n} schema versions: every current schema reads every older version.")


@schemas_app.command("generate")
def generate(
    check_only: Annotated[
        bool, typer.Option("--check", help="Only say whether schemas/ is up to date.")
    ] = False,
) -> None:
    """Write the current version of each event's schema from pipeline/events.py."""
    stale = schema_registry.write_current(check=check_only)
    if check_only and stale:
        _fail([f"{p.name} is out of date; run `tipline schemas generate`." for p in stale], "")
    verb = "would change" if check_only else "written"
    _out.print(f"{len(stale)} schema file(s) {verb}.")


@schemas_app.command("asyncapi")
def asyncapi_cmd(
    check_only: Annotated[
        bool, typer.Option("--check", help="Only say whether asyncapi.yaml is up to date.")
    ] = False,
) -> None:
    """Regenerate asyncapi.yaml (AsyncAPI 3.0) from schemas/ and the topic table."""
    stale = asyncapi.write(check=check_only)
    if check_only and stale:
        raise TiplineError("asyncapi.yaml is out of date; run `tipline schemas asyncapi`.")
    _out.print("asyncapi.yaml is up to date." if not stale else "asyncapi.yaml written.")
