"""The routing tables, loaded from CSV files: who receives a referral, per province and per country.

The packaged tables live in ``pipeline/route/data`` and are copies of ``shared/domain/*.csv`` that keep
each row's ``verified`` flag and cite their source. An operator replaces them without touching code by
pointing ``TIPLINE_ROUTE_TABLES`` at a folder holding files of the same names and columns
(``jurisdictions.csv``, ``hotlines.csv``, ``international.csv``); a file missing from that folder falls
back to the packaged one, so a folder holding only a corrected ``hotlines.csv`` is enough.

A table that cannot be read is refused with one sentence naming the file, the line and the column
(``ConfigError``): a stage must not start on half a table.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"
"""The packaged tables."""

JURISDICTIONS_FILE = "jurisdictions.csv"
HOTLINES_FILE = "hotlines.csv"
INTERNATIONAL_FILE = "international.csv"
DEMO_HOSTS_FILE = "demo_hosts.csv"

_CODE = re.compile(r"^[A-Z]{2}$")
_FLAGS = {"yes": True, "no": False}


@dataclass(frozen=True, kw_only=True, slots=True)
class Authority:
    """One body that can receive a referral, as a table row names it."""

    name: str
    verified: bool
    source: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Province:
    """A Canadian province or territory: its police of jurisdiction and its child-protection authority."""

    code: str
    name: str
    police: Authority
    child_protection: Authority | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Tables:
    """Everything the routing rules look up; built by ``load_tables``, or directly in tests."""

    provinces: Mapping[str, Province]
    national_default: Authority
    """The RCMP's National Child Exploitation Crime Centre (NCECC): Canada, no province known."""
    hotlines: Mapping[str, Authority]
    """INHOPE member hotlines by ISO 3166 alpha-2 country code."""
    interpol: Authority
    """INTERPOL, reached through the RCMP as Canada's National Central Bureau."""

    def has_hotline(self, country: str) -> bool:
        return country in self.hotlines


def load_tables(folder: Path | None = None) -> Tables:
    """Read the three routing tables from ``folder`` (files missing there come from the packaged data)."""
    if folder is not None and not folder.is_dir():
        raise ConfigError(
            f"routing tables folder {str(folder)!r} (TIPLINE_ROUTE_TABLES) is not a folder of CSV files."
        )
    provinces, national = _jurisdictions(_pick(folder, JURISDICTIONS_FILE))
    return Tables(
        provinces=provinces,
        national_default=national,
        hotlines=_hotlines(_pick(folder, HOTLINES_FILE)),
        interpol=_international(_pick(folder, INTERNATIONAL_FILE))["interpol"],
    )


def _pick(folder: Path | None, file_name: str) -> Path:
    if folder is not None and (folder / file_name).is_file():
        return folder / file_name
    return DATA_DIR / file_name


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise ConfigError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}."
                )
            return [
                (i, {k: (v or "").strip() for k, v in row.items() if k})
                for i, row in enumerate(reader, start=2)
            ]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: is not a readable UTF-8 CSV file ({exc}).") from exc


def _flag(path: Path, line: int, column: str, raw: str) -> bool:
    try:
        return _FLAGS[raw.lower()]
    except KeyError:
        raise ConfigError(f"{path} line {line}: {column}={raw!r}; write yes or no.") from None


def _source(path: Path, row: Mapping[str, str]) -> str:
    return row.get("source") or str(path)


def _jurisdictions(path: Path) -> tuple[dict[str, Province], Authority]:
    columns = (
        "code",
        "name",
        "police_of_jurisdiction",
        "police_verified",
        "child_protection_authority",
        "child_protection_verified",
    )
    provinces: dict[str, Province] = {}
    national: Authority | None = None
    for line, row in _rows(path, columns):
        code = row["code"].upper()
        police_name = row["police_of_jurisdiction"]
        if not police_name:
            raise ConfigError(f"{path} line {line}: police_of_jurisdiction is empty.")
        source = _source(path, row)
        police = Authority(
            name=police_name,
            verified=_flag(path, line, "police_verified", row["police_verified"]),
            source=source,
        )
        if not code:
            if national is not None:
                raise ConfigError(f"{path} line {line}: a second national default row (empty code).")
            national = police
            continue
        if not _CODE.match(code):
            raise ConfigError(f"{path} line {line}: code={row['code']!r} is not a two-letter province code.")
        if code in provinces:
            raise ConfigError(f"{path} line {line}: province {code} appears twice.")
        cp_name = row["child_protection_authority"]
        child_protection = (
            Authority(
                name=cp_name,
                verified=_flag(path, line, "child_protection_verified", row["child_protection_verified"]),
                source=source,
            )
            if cp_name
            else None
        )
        provinces[code] = Province(
            code=code, name=row["name"], police=police, child_protection=child_protection
        )
    if national is None:
        raise ConfigError(f"{path}: no national default row (a row with an empty code naming the NCECC).")
    return provinces, national


def _hotlines(path: Path) -> dict[str, Authority]:
    hotlines: dict[str, Authority] = {}
    for line, row in _rows(path, ("country", "hotline", "verified")):
        country = row["country"].upper()
        if not _CODE.match(country):
            raise ConfigError(
                f"{path} line {line}: country={row['country']!r} is not an ISO 3166 alpha-2 code."
            )
        if country in hotlines:
            raise ConfigError(f"{path} line {line}: country {country} appears twice.")
        if not row["hotline"]:
            raise ConfigError(f"{path} line {line}: hotline is empty.")
        hotlines[country] = Authority(
            name=row["hotline"],
            verified=_flag(path, line, "verified", row["verified"]),
            source=_source(path, row),
        )
    return hotlines


def _international(path: Path) -> dict[str, Authority]:
    found: dict[str, Authority] = {}
    for line, row in _rows(path, ("key", "name", "verified")):
        found[row["key"].lower()] = Authority(
            name=row["name"],
            verified=_flag(path, line, "verified", row["verified"]),
            source=_source(path, row),
        )
    if "interpol" not in found:
        raise ConfigError(
            f"{path}: no row with key 'interpol' (INTERPOL through Canada's National Central Bureau)."
        )
    return found
