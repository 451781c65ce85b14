"""``tipline prioritize rules``: the priority rule table an analyst lead reviews (name, level, condition)."""

from __future__ import annotations

import typer
from rich.table import Table

from pipeline.console import console
from pipeline.prioritize.rules import LEVELS, RULES

app = typer.Typer(help="Step 4: prioritization (the rule table).", no_args_is_help=True)


@app.callback()
def prioritize() -> None:
    """Step 4: prioritization (the rule table)."""


@app.command("rules")
def rules() -> None:
    """Print the rule table: a report gets the most urgent level of the rules it matches."""
    table = Table(title="Priority rules (level 1 most urgent; within a level, order of arrival)")
    for col in ("level", "rule", "condition"):
        table.add_column(col)
    for rule in RULES:
        table.add_row(str(rule.level), rule.name, rule.condition)
    console.print(table)
    for level, meaning in LEVELS.items():
        console.print(f"level {level}: {meaning}", highlight=False)
