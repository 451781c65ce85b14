"""The classification tables, read from readable CSV files: categories, Criminal Code sections, rules.

The files live in ``pipeline/classify/data`` (copied from ``shared/domain``, with their source in a
header comment); an operator may point the settings ``classify.categories``, ``classify.criminal_code``
and ``classify.rules`` (``Settings.extra``) at replacement files without touching code. A table that
names an unknown section, category, content kind or fact is refused at load time with one sentence
naming the file, the rule and the term, so a typo never turns into a silently dead rule.

The ``when`` column of a rule is a conjunction of terms (see the header of ``rules.csv``). Each term is
compiled once into a predicate over ``FactView``, the derived facts of one incident.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pipeline.errors import ConfigError
from pipeline.events import Annotation, Category, ContentKind, MaterialAction, Role

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_CATEGORIES = DATA_DIR / "categories.csv"
DEFAULT_CRIMINAL_CODE = DATA_DIR / "criminal_code.csv"
DEFAULT_RULES = DATA_DIR / "rules.csv"

SETTING_CATEGORIES = "classify.categories"
SETTING_CRIMINAL_CODE = "classify.criminal_code"
SETTING_RULES = "classify.rules"

FLAGS = (
    "money",
    "threats",
    "travel",
    "in_person_meeting",
    "live_stream",
    "ongoing",
    "telecom",
    "minor",
    "adult_victim",
    "abroad",
)
"""The yes/no facts a rule may test (see ``FactView``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FactView:
    """The facts of one incident as the rules see them: the report's facts plus a few derived ones."""

    content: frozenset[ContentKind]
    actions: frozenset[MaterialAction]
    annotations: frozenset[Annotation]
    sender: Role
    recipient: Role
    flags: frozenset[str]
    """The names (from ``FLAGS``) of the yes/no facts that hold."""


Predicate = Callable[[FactView], bool]


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    """One row of the rules table: when its terms hold, the incident gets its sections and tags."""

    name: str
    category: Category | None
    """None: a modifier (e.g. sextortion), whose sections only ride beside sections another rule gave."""
    sections: tuple[str, ...]
    tags: tuple[str, ...]
    when: str
    fallback: bool
    reason: str
    predicates: tuple[Predicate, ...]

    def holds(self, facts: FactView) -> bool:
        return all(predicate(facts) for predicate in self.predicates)


@dataclass(frozen=True, kw_only=True, slots=True)
class Section:
    section: str
    short_title: str
    note: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CategoryRow:
    code: Category
    label: str
    sections: tuple[str, ...]
    precedence: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Tables:
    """Everything the rules need, loaded once at stage start."""

    categories: Mapping[Category, CategoryRow]
    sections: Mapping[str, Section]
    """In the order of the Criminal Code table: an incident's sections are listed in this order."""
    rules: tuple[Rule, ...]
    order: Mapping[str, int] = field(default_factory=dict)
    """Each section's position in the Criminal Code table (filled in by ``load_tables``)."""

    def sort_sections(self, sections: Iterable[str]) -> tuple[str, ...]:
        order = self.order or {s: i for i, s in enumerate(self.sections)}
        return tuple(sorted(set(sections), key=order.__getitem__))


# --- Reading ---------------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            lines = [line for line in f if not line.lstrip().startswith("#") and line.strip()]
    except OSError as exc:
        raise ConfigError(f"The classification table {path} cannot be read ({exc.strerror}).") from exc
    return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in csv.DictReader(lines)]


def _need(row: Mapping[str, str], column: str, path: Path, where: str) -> str:
    if column not in row:
        raise ConfigError(f"{path}: {where} has no column {column!r}.")
    return row[column]


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(";") if part.strip())


def load_sections(path: Path = DEFAULT_CRIMINAL_CODE) -> dict[str, Section]:
    out: dict[str, Section] = {}
    for i, row in enumerate(_rows(path), start=1):
        code = _need(row, "section", path, f"row {i}")
        if not code or code in out:
            raise ConfigError(f"{path}: row {i} has an empty or repeated section {code!r}.")
        out[code] = Section(section=code, short_title=row.get("short_title", ""), note=row.get("note", ""))
    if not out:
        raise ConfigError(f"{path}: the Criminal Code table is empty.")
    return out


def load_categories(path: Path, sections: Mapping[str, Section]) -> dict[Category, CategoryRow]:
    out: dict[Category, CategoryRow] = {}
    for i, row in enumerate(_rows(path), start=1):
        raw = _need(row, "code", path, f"row {i}")
        category = _enum(Category, raw, path, f"row {i}")
        precedence_raw = _need(row, "precedence", path, f"row {i}")
        try:
            precedence = int(precedence_raw)
        except ValueError:
            raise ConfigError(
                f"{path}: row {i} ({raw}) has precedence {precedence_raw!r}, not a number."
            ) from None
        listed = _split(_need(row, "criminal_code_sections", path, f"row {i}"))
        for s in listed:
            # The categories table cites "163.1" for the whole section; subsections are in the code table.
            if s not in sections and not any(k.startswith(s + "(") for k in sections):
                raise ConfigError(
                    f"{path}: category {raw} cites section {s!r}, absent from the Criminal Code table."
                )
        out[category] = CategoryRow(
            code=category, label=row.get("label", ""), sections=listed, precedence=precedence
        )
    missing = set(Category) - set(out)
    if missing:
        raise ConfigError(f"{path}: categories {', '.join(sorted(missing))} are missing.")
    return out


def load_rules(path: Path, sections: Mapping[str, Section]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, row in enumerate(_rows(path), start=1):
        rule_name = _need(row, "rule", path, f"row {i}")
        where = f"rule {rule_name or i}"
        if not rule_name or rule_name in seen:
            raise ConfigError(f"{path}: row {i} has an empty or repeated rule name {rule_name!r}.")
        seen.add(rule_name)
        raw_category = _need(row, "category", path, where)
        category = _enum(Category, raw_category, path, where) if raw_category else None
        rule_sections = _split(_need(row, "sections", path, where))
        for s in rule_sections:
            if s not in sections:
                raise ConfigError(
                    f"{path}: {where} gives section {s!r}, absent from the Criminal Code table."
                )
        tags = _split(_need(row, "tags", path, where))
        if category is None and not rule_sections and not tags:
            raise ConfigError(f"{path}: {where} has neither a category, sections nor tags.")
        fallback_raw = _need(row, "fallback", path, where).lower()
        if fallback_raw not in {"yes", "no", ""}:
            raise ConfigError(f"{path}: {where} has fallback {fallback_raw!r}; use yes or no.")
        when = _need(row, "when", path, where)
        if not when:
            raise ConfigError(f"{path}: {where} has no condition.")
        rules.append(
            Rule(
                name=rule_name,
                category=category,
                sections=rule_sections,
                tags=tags,
                when=when,
                fallback=fallback_raw == "yes",
                reason=_need(row, "reason", path, where) or rule_name,
                predicates=tuple(compile_term(t, path, where) for t in when.split(" and ")),
            )
        )
    if not rules:
        raise ConfigError(f"{path}: the rules table is empty.")
    return tuple(rules)


def load_tables(
    *,
    categories: Path = DEFAULT_CATEGORIES,
    criminal_code: Path = DEFAULT_CRIMINAL_CODE,
    rules: Path = DEFAULT_RULES,
) -> Tables:
    sections = load_sections(criminal_code)
    return Tables(
        categories=load_categories(categories, sections),
        sections=sections,
        rules=load_rules(rules, sections),
        order={s: i for i, s in enumerate(sections)},
    )


def tables_from_settings(extra: Mapping[str, str]) -> Tables:
    """The tables an operator chose (``Settings.extra``), or the ones shipped beside this module."""
    return load_tables(
        categories=Path(extra.get(SETTING_CATEGORIES) or DEFAULT_CATEGORIES),
        criminal_code=Path(extra.get(SETTING_CRIMINAL_CODE) or DEFAULT_CRIMINAL_CODE),
        rules=Path(extra.get(SETTING_RULES) or DEFAULT_RULES),
    )


# --- Compiling conditions ----------------------------------------------------------------------------

E = TypeVar("E", bound=enum.StrEnum)


def _enum(kind: type[E], raw: str, path: Path, where: str) -> E:
    try:
        return kind(raw.strip())
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(f"{path}: {where} names {raw!r}, which is not one of: {allowed}.") from None


_SET_FIELDS: dict[str, tuple[type[enum.StrEnum], str]] = {
    "content": (ContentKind, "content"),
    "action": (MaterialAction, "actions"),
    "annotation": (Annotation, "annotations"),
}


def compile_term(term: str, path: Path = DEFAULT_RULES, where: str = "a rule") -> Predicate:
    """One term of a ``when`` condition as a predicate; an unknown word is refused with one sentence."""
    words = term.split()
    bad = ConfigError(f"{path}: {where} has a term {term.strip()!r} that the rule language does not know.")
    if not words:
        raise bad
    if words[0] in _SET_FIELDS:
        return _set_term(words, bad, path, where)
    if words[0] in {"sender", "recipient"}:
        return _role_term(words, bad, path, where)
    return _flag_term(words, bad, path, where)


def _set_term(words: list[str], bad: ConfigError, path: Path, where: str) -> Predicate:
    kind, attr = _SET_FIELDS[words[0]]
    if words[1:] == ["none"]:
        return lambda f: not getattr(f, attr)
    if len(words) != 3 or words[1] not in {"has", "has_any", "lacks"}:
        raise bad
    wanted = frozenset(_enum(kind, v, path, where) for v in words[2].split("|"))
    if words[1] == "has" and len(wanted) != 1:
        raise bad
    if words[1] == "lacks":
        return lambda f: not (getattr(f, attr) & wanted)
    return lambda f: bool(getattr(f, attr) & wanted)


def _role_term(words: list[str], bad: ConfigError, path: Path, where: str) -> Predicate:
    if len(words) != 3 or words[1] not in {"is", "is_not"}:
        raise bad
    attr = words[0]
    role = _enum(Role, words[2], path, where)
    if words[1] == "is":
        return lambda f: getattr(f, attr) == role
    return lambda f: getattr(f, attr) != role


def _flag_term(words: list[str], bad: ConfigError, path: Path, where: str) -> Predicate:
    negate = words[0] == "not"
    names = words[1:] if negate else words
    if len(names) != 1:
        raise bad
    alternatives = frozenset(names[0].split("|"))
    unknown = alternatives - set(FLAGS)
    if unknown:
        raise ConfigError(
            f"{path}: {where} tests {', '.join(sorted(unknown))}, not a known fact ({', '.join(FLAGS)})."
        )
    if negate:
        return lambda f: not (f.flags & alternatives)
    return lambda f: bool(f.flags & alternatives)
