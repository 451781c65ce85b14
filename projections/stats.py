"""The published figures beside the measured ones: `tipline stats` and the demo print these.

``compare(stats, published)`` pairs each figure the tipline publishes with the same figure measured on
the read model; ``measured(settings)`` reads the live PostgreSQL view. Published values come from
``data/published_figures.csv`` (a copy of ``shared/domain/published_figures.csv``); pass another path to
use an operator's own table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline import db
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from projections import pg
from projections.view import Statistics

DEFAULT_FIGURES = Path(__file__).resolve().parent / "data" / "published_figures.csv"


@dataclass(frozen=True, kw_only=True)
class PublishedFigure:
    metric: str
    value: float
    year: int | None
    note: str


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One figure: what the tipline publishes and what the read model measures."""

    metric: str
    label: str
    published: float | None
    measured: float | None
    basis: str
    """What the measured figure is computed over (e.g. "412 closed reports")."""


def load_published(path: Path = DEFAULT_FIGURES) -> list[PublishedFigure]:
    """The published figures table; lines starting with ``#`` are comments (the source note)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the published figures at {path}: {exc.strerror}.") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    out: list[PublishedFigure] = []
    for i, row in enumerate(csv.DictReader(lines), start=2):
        try:
            out.append(
                PublishedFigure(
                    metric=row["metric"],
                    value=float(row["value"]),
                    year=int(row["year"]) if row.get("year") else None,
                    note=row.get("source_note") or "",
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: row {i} needs metric,value[,year,source_note] ({exc}).") from exc
    return out


def _published(figures: list[PublishedFigure], metric: str) -> float | None:
    for f in figures:
        if f.metric == metric:
            return f.value
    return None


def compare(stats: Statistics, figures: list[PublishedFigure]) -> list[Comparison]:
    """The published shares beside the measured ones (measured is None while nothing was closed)."""
    closed = f"{stats.closed} closed report{'' if stats.closed == 1 else 's'}"
    return [
        Comparison(
            metric="share_referred_police_or_child_protection",
            label="referred to police or child protection",
            published=_published(figures, "share_referred_police_or_child_protection"),
            measured=stats.share_referred,
            basis=closed,
        ),
        Comparison(
            metric="share_legal_or_informational",
            label="legal content or informational follow-up",
            published=_published(figures, "share_legal_or_informational"),
            measured=stats.share_legal_or_informational,
            basis=closed,
        ),
        Comparison(
            metric="share_police_referrals_staying_in_canada",
            label="police referrals that stayed in Canada",
            published=_published(figures, "share_police_referrals_staying_in_canada"),
            measured=stats.share_police_in_canada,
            basis=f"{stats.police_reports} report{'' if stats.police_reports == 1 else 's'} referred to police",
        ),
    ]


def measured(settings: Settings) -> Statistics:
    """The statistics of the live read model in PostgreSQL."""
    with db.connect(settings, autocommit=True) as conn:
        schema = pg.schema_for(settings)
        if not pg.schema_exists(conn, schema):
            pg.install(conn, schema)
        return pg.PgView(conn, schema).statistics()


def published_vs_measured(
    settings: Settings, figures: Path = DEFAULT_FIGURES
) -> tuple[Statistics, list[Comparison]]:
    """The live statistics and the published figures beside them: what the demo prints."""
    stats = measured(settings)
    return stats, compare(stats, load_published(figures))
