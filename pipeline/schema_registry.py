"""The schemas of ``schemas/``: generated from ``pipeline.events``, loaded once, checked for evolution.

Layout: ``schemas/<stage>/<Event>.v<N>.avsc``, namespace ``ca.tipline.<stage>``. Each file is
self-contained (shared records and enums, namespace ``ca.tipline.common``, are defined inline on first
use), so any Avro implementation can load one file alone. Every version ever written stays: readers find
a writer schema by its fingerprint among all of them and resolve it to the current version.

Only the current version of each event (``events.SCHEMA_VERSIONS``) is generated; older files are
history and are never rewritten.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from pipeline import events
from pipeline.errors import TiplineError
from pipeline.settings import project_root

COMMON_NAMESPACE = "ca.tipline.common"
FINGERPRINT_ALGORITHM = "CRC-64-AVRO"
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z]+)\.v(?P<version>[0-9]+)\.avsc$")


def schemas_dir() -> Path:
    return project_root() / "schemas"


def namespace_of(cls: type) -> str:
    stage = getattr(cls, "STAGE", None)
    return f"ca.tipline.{stage}" if stage else COMMON_NAMESPACE


def schema_path(event_name: str, version: int, root: Path | None = None) -> Path:
    cls = events.EVENT_TYPES[event_name]
    stage = cls.STAGE
    return (root or schemas_dir()) / stage / f"{event_name}.v{version}.avsc"


# --- Generation from the dataclasses --------------------------------------------------------------


def _doc_of(obj: type) -> str:
    doc = obj.__doc__ or ""
    if obj.__doc__ is None or doc.startswith(obj.__name__ + "("):  # dataclass's generated signature
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _limits_doc(meta: typing.Mapping[str, Any]) -> str:
    parts = []
    if "max_length" in meta:
        parts.append(f"at most {meta['max_length']:,} characters")
    if "max_items" in meta:
        parts.append(f"at most {meta['max_items']:,} items")
    if "max_item_length" in meta:
        parts.append(f"each at most {meta['max_item_length']:,} characters")
    if not parts:
        return ""
    return "Limit enforced by pipeline.serde (Avro cannot express it): " + ", ".join(parts) + "."


class _Generator:
    def __init__(self) -> None:
        self.defined: set[str] = set()

    def named(self, cls: type, body: dict[str, Any]) -> dict[str, Any] | str:
        ns = namespace_of(cls)
        full = f"{ns}.{cls.__name__}"
        if full in self.defined:
            return full
        self.defined.add(full)
        out: dict[str, Any] = {"type": body.pop("type"), "name": cls.__name__, "namespace": ns}
        doc = _doc_of(cls)
        if doc:
            out["doc"] = doc
        out.update(body)
        return out

    def type_of(self, hint: Any) -> Any:  # noqa: PLR0911 - one return per Avro type reads best
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"only X | None unions are supported, not {hint}")
            return ["null", self.type_of(args[0])]
        if origin is tuple:
            item, ellipsis = typing.get_args(hint)
            if ellipsis is not Ellipsis:
                raise TypeError(f"only tuple[X, ...] is supported, not {hint}")
            return {"type": "array", "items": self.type_of(item)}
        if hint is str:
            return "string"
        if hint is bool:
            return "boolean"
        if hint is int:
            return "long"
        if hint is bytes:
            return "bytes"
        if hint is datetime:
            return {"type": "long", "logicalType": "timestamp-millis"}
        if hint is date:
            return {"type": "int", "logicalType": "date"}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self.named(hint, {"type": "enum", "symbols": [m.value for m in hint]})
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.record(hint)
        raise TypeError(f"no Avro type for {hint!r}")

    def record(self, cls: type) -> dict[str, Any] | str:
        ns = namespace_of(cls)
        if f"{ns}.{cls.__name__}" in self.defined:
            return f"{ns}.{cls.__name__}"
        hints = typing.get_type_hints(cls)
        # Reserve the name before the fields so a recursive reference would resolve (none today).
        fields_out: list[dict[str, Any]] = []
        node = self.named(cls, {"type": "record", "fields": fields_out})
        for f in dataclasses.fields(cls):
            entry: dict[str, Any] = {"name": f.name, "type": self.type_of(hints[f.name])}
            doc = _limits_doc(f.metadata)
            if doc:
                entry["doc"] = doc
            if f.default is not dataclasses.MISSING:
                entry["default"] = _default_json(f.default)
            fields_out.append(entry)
        return node


def _default_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, tuple):
        return [_default_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _default_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"no Avro default for {value!r}")


def generate(event_name: str) -> dict[str, Any]:
    """The Avro schema of an event's current dataclass, self-contained."""
    node = _Generator().record(events.EVENT_TYPES[event_name])
    assert isinstance(node, dict)  # noqa: S101 - a fresh generator always defines the top record
    return node


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_current(root: Path | None = None, *, check: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) the current version of every event; returns the stale files.

    An existing file whose content differs is an error, not an overwrite, unless it is absent: a
    published version never changes. Bump ``SCHEMA_VERSIONS`` instead.
    """
    stale: list[Path] = []
    for event_name, version in events.SCHEMA_VERSIONS.items():
        path = schema_path(event_name, version, root)
        text = render(generate(event_name))
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale


# --- Loading --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SchemaFile:
    """One version of one event's schema, parsed."""

    event_name: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes
    """CRC-64-AVRO of the Parsing Canonical Form, 8 bytes little-endian (as in single-object encoding)."""


def _iter_files(root: Path) -> Iterator[tuple[str, int, Path]]:
    for path in sorted(root.glob("*/*.avsc")):
        m = _FILE_RE.match(path.name)
        if m is None:
            raise TiplineError(f"{path} is not named <Event>.v<N>.avsc; rename it.")
        yield m["name"], int(m["version"]), path


def load_file(event_name: str, version: int, path: Path) -> SchemaFile:
    try:
        raw = json.loads(path.read_text())
        # A fresh name table per file: every file defines the shared records itself, and two versions
        # of one event share a name.
        parsed = fastavro.parse_schema(raw, named_schemas={})
        canonical = fastavro.schema.to_parsing_canonical_form(raw)
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise TiplineError(f"{path} is not a valid Avro schema: {exc}") from exc
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, FINGERPRINT_ALGORITHM))
    return SchemaFile(
        event_name=event_name,
        version=version,
        path=path,
        raw=raw,
        parsed=parsed,
        canonical=canonical,
        fingerprint=fp,
    )


def load_all(root: Path | None = None) -> list[SchemaFile]:
    """Every schema version in ``schemas/`` (unknown event names are an error: nothing is ignored)."""
    out = []
    for event_name, version, path in _iter_files(root or schemas_dir()):
        if event_name not in events.EVENT_TYPES:
            raise TiplineError(f"{path} names no event type in pipeline.events; remove it or add the event.")
        out.append(load_file(event_name, version, path))
    return out


@cache
def registry() -> tuple[SchemaFile, ...]:
    """All schema versions, loaded once per process."""
    return tuple(load_all())


# --- Evolution check ------------------------------------------------------------------------------


def sample_datum(schema: Any, *, fill: bool, named: dict[str, Any] | None = None) -> Any:  # noqa: PLR0911
    """A value valid for ``schema``: with ``fill`` every optional and array holds something."""
    named = {} if named is None else named
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] if fill else schema
        return sample_datum(branches[0], fill=fill, named=named)
    if isinstance(schema, str):
        if schema in named:
            return sample_datum(named[schema], fill=fill, named=named)
        return _PRIMITIVE_SAMPLES[schema]
    kind = schema["type"]
    if kind in ("record", "enum"):
        ns = schema.get("namespace", "")
        named[f"{ns}.{schema['name']}" if ns else schema["name"]] = schema
    if kind == "record":
        return {f["name"]: sample_datum(f["type"], fill=fill, named=named) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1 if fill else 0]
    if kind == "array":
        return [sample_datum(schema["items"], fill=fill, named=named)] if fill else []
    if kind == "map":
        return {"k": sample_datum(schema["values"], fill=fill, named=named)} if fill else {}
    if schema.get("logicalType") == "timestamp-millis":
        return datetime(2024, 5, 6, 7, 8, 9, 123000).astimezone()
    if schema.get("logicalType") == "date":
        return date(2012, 3, 4)
    return sample_datum(kind, fill=fill, named=named)


_PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 7,
    "long": 7,
    "float": 1.5,
    "double": 1.5,
    "bytes": b"\x00\x01",
    "string": "sample",
}


def compatibility_problems(files: list[SchemaFile] | None = None) -> list[str]:
    """One sentence per older schema version whose data the current version cannot read."""
    import io

    files = list(registry()) if files is None else files
    by_event: dict[str, list[SchemaFile]] = {}
    for f in files:
        by_event.setdefault(f.event_name, []).append(f)
    problems = []
    for event_name in events.EVENT_TYPES:
        versions = sorted(by_event.get(event_name, []), key=lambda f: f.version)
        if not versions:
            problems.append(f"{event_name} has no schema in schemas/; run `tipline schemas generate`.")
            continue
        current = versions[-1]
        if current.version != events.SCHEMA_VERSIONS[event_name]:
            problems.append(
                f"{event_name}: the newest file is v{current.version} but pipeline.events says "
                f"v{events.SCHEMA_VERSIONS[event_name]}; make them agree."
            )
        for old in versions[:-1]:
            for fill in (False, True):
                buf = io.BytesIO()
                try:
                    fastavro.schemaless_writer(buf, old.parsed, sample_datum(old.raw, fill=fill))
                    buf.seek(0)
                    fastavro.schemaless_reader(buf, old.parsed, current.parsed)
                except Exception as exc:  # noqa: BLE001 - any failure to resolve is the finding itself
                    problems.append(
                        f"{event_name} v{current.version} cannot read data written with "
                        f"v{old.version} ({type(exc).__name__}: {exc}); give new fields defaults "
                        "and never remove or retype a field."
                    )
                    break
    return problems
