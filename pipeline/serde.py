"""The only place that decides what goes on the wire: events <-> Avro single-object encoding.

Wire format (Avro specification, "single-object encoding"): ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary body.

A reader finds the writer schema by fingerprint among every version in ``schemas/`` and resolves it to
the current version of that event, so old records stay readable after a schema evolves.

Conversion between dataclasses and Avro dicts is generated once per class as plain Python source (no
per-field reflection on the hot path). Limits Avro cannot express (description, note, URL counts and
lengths) are checked on encode and on decode. Every failure is a ``SerdeError`` with a short ``reason``
(``bad_marker``, ``unknown_fingerprint``, ``truncated``, ``trailing_bytes``, ``wrong_type``,
``too_long``, ``too_many``, ``unknown_event``) and, when known, the dotted ``field``.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import fastavro
import fastavro.validation

from pipeline import events, schema_registry
from pipeline.errors import SerdeError
from pipeline.events import EVENT_TYPES, Event

MAGIC = b"\xc3\x01"
HEADER_LEN = 10

HEADER_EVENT_TYPE = "event_type"
HEADER_EVENT_ID = "event_id"
HEADER_FINGERPRINT = "schema_fingerprint"


# --- Generated converters -------------------------------------------------------------------------


class _Codegen:
    """Writes ``to_avro``/``from_avro`` functions for every dataclass reachable from the events."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_check_dt": _check_dt, "_check_str": _check_str, "_SerdeError": SerdeError}
        self.done: set[type] = set()
        self.src: list[str] = []

    def sym(self, obj: Any, prefix: str) -> str:
        name = f"_{prefix}_{getattr(obj, '__name__', id(obj))}"
        self.ns[name] = obj
        return name

    def enc(self, hint: Any, expr: str, path: str, meta: typing.Mapping[str, Any]) -> str:
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
            inner_expr = self.enc(inner, "_v", path, meta)
            if inner_expr == "_v":
                return expr
            return f"(None if (_v := {expr}) is None else {inner_expr})"
        if origin is tuple:
            item = typing.get_args(hint)[0]
            item_meta = {"max_length": meta["max_item_length"]} if "max_item_length" in meta else {}
            item_expr = self.enc(item, "_x", f"{path}[]", item_meta)
            if "max_items" in meta:
                expr = f"_check_len({expr}, {meta['max_items']}, {path!r})"
                self.ns["_check_len"] = _check_len
            if item_expr == "_x":
                return expr
            return f"[{item_expr} for _x in {expr}]"
        if hint is datetime:
            return f"_check_dt({expr}, {path!r})"
        if hint is str and "max_length" in meta:
            return f"_check_str({expr}, {meta['max_length']}, {path!r})"
        if dataclasses.is_dataclass(hint):
            self.add(hint)
            return f"{self.sym(hint, 'enc')}({expr})"
        return expr

    def dec(self, hint: Any, expr: str, path: str, meta: typing.Mapping[str, Any]) -> str:
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
            inner_expr = self.dec(inner, "_v", path, meta)
            if inner_expr == "_v":
                return expr
            return f"(None if (_v := {expr}) is None else {inner_expr})"
        if origin is tuple:
            item = typing.get_args(hint)[0]
            item_meta = {"max_length": meta["max_item_length"]} if "max_item_length" in meta else {}
            item_expr = self.dec(item, "_x", f"{path}[]", item_meta)
            if "max_items" in meta:
                expr = f"_check_len({expr}, {meta['max_items']}, {path!r})"
                self.ns["_check_len"] = _check_len
            if item_expr == "_x":
                return f"tuple({expr})"
            return f"tuple([{item_expr} for _x in {expr}])"
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            # A dict lookup is several times faster than calling the enum class.
            return f"{self.sym(dict(hint._value2member_map_), 'members_' + hint.__name__)}[{expr}]"
        if hint is str and "max_length" in meta:
            return f"_check_str({expr}, {meta['max_length']}, {path!r})"
        if dataclasses.is_dataclass(hint):
            self.add(hint)
            return f"{self.sym(hint, 'dec')}({expr})"
        return expr

    def add(self, cls: type) -> None:
        if cls in self.done:
            return
        self.done.add(cls)
        hints = typing.get_type_hints(cls)
        enc_lines, dec_lines = [], []
        for f in dataclasses.fields(cls):
            path = f.name
            enc_lines.append(f"        {f.name!r}: {self.enc(hints[f.name], f'o.{f.name}', path, f.metadata)},")
            dec_lines.append(f"        {f.name}={self.dec(hints[f.name], f'd[{f.name!r}]', path, f.metadata)},")
        cls_sym = self.sym(cls, "cls")
        self.src.append(
            f"def _enc_{cls.__name__}(o):\n    return {{\n" + "\n".join(enc_lines) + "\n    }\n"
        )
        self.src.append(
            f"def _dec_{cls.__name__}(d):\n    return {cls_sym}(\n" + "\n".join(dec_lines) + "\n    )\n"
        )

    def build(self) -> dict[str, Any]:
        for cls in EVENT_TYPES.values():
            self.add(cls)
        code = compile("\n".join(self.src), "<pipeline.serde generated converters>", "exec")
        exec(code, self.ns)  # noqa: S102 - source generated above from our own dataclass definitions
        return self.ns


def _check_dt(value: Any, path: str) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise SerdeError(f"{path} is a naive datetime; give it a timezone (UTC).", reason="wrong_type", field=path)
    return value


def _check_str(value: Any, limit: int, path: str) -> Any:
    if isinstance(value, str) and len(value) > limit:
        raise SerdeError(
            f"{path} has {len(value):,} characters; at most {limit:,} are allowed.", reason="too_long", field=path
        )
    return value


def _check_len(value: Any, limit: int, path: str) -> Any:
    if len(value) > limit:
        raise SerdeError(
            f"{path} has {len(value):,} items; at most {limit:,} are allowed.", reason="too_many", field=path
        )
    return value


def _locate(hint: Any, value: Any, path: str, meta: typing.Mapping[str, Any], attr: bool) -> SerdeError | None:
    """Re-walk a value slowly to name the dotted field a fast converter complained about."""
    origin = typing.get_origin(hint)
    if value is None:
        return None
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _locate(inner, value, path, meta, attr)
    if origin is tuple:
        item_meta = {"max_length": meta["max_item_length"]} if "max_item_length" in meta else {}
        try:
            if "max_items" in meta:
                _check_len(value, meta["max_items"], path)
        except SerdeError as err:
            return err
        for i, item in enumerate(value):
            found = _locate(typing.get_args(hint)[0], item, f"{path}[{i}]", item_meta, attr)
            if found is not None:
                return found
        return None
    try:
        if hint is datetime:
            _check_dt(value, path)
        if hint is str and "max_length" in meta:
            _check_str(value, meta["max_length"], path)
    except SerdeError as err:
        return err
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        for f in dataclasses.fields(hint):
            sub = getattr(value, f.name) if attr else value[f.name]
            found = _locate(hints[f.name], sub, f"{path}.{f.name}".lstrip("."), f.metadata, attr)
            if found is not None:
                return found
    return None


# --- The schema table -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Codec:
    event_name: str
    cls: type
    encode: Any
    decode: Any
    current: schema_registry.SchemaFile


@dataclass(frozen=True, kw_only=True)
class _Table:
    by_type: dict[type, _Codec]
    by_fingerprint: dict[bytes, tuple[_Codec, schema_registry.SchemaFile]]


@cache
def _table() -> _Table:
    ns = _Codegen().build()
    files = schema_registry.registry()
    current: dict[str, schema_registry.SchemaFile] = {}
    for f in files:
        if f.version == events.SCHEMA_VERSIONS[f.event_name]:
            current[f.event_name] = f
    by_type: dict[type, _Codec] = {}
    for name, cls in EVENT_TYPES.items():
        if name not in current:
            raise SerdeError(
                f"schemas/ has no v{events.SCHEMA_VERSIONS[name]} schema for {name}; "
                "run `tipline schemas generate`.",
                reason="missing_schema",
            )
        by_type[cls] = _Codec(
            event_name=name, cls=cls, encode=ns[f"_enc_{name}"], decode=ns[f"_dec_{name}"], current=current[name]
        )
    by_fp = {f.fingerprint: (by_type[EVENT_TYPES[f.event_name]], f) for f in files}
    return _Table(by_type=by_type, by_fingerprint=by_fp)


def fingerprint_of(event_type: type[Event] | str) -> bytes:
    """The 8-byte fingerprint of an event type's current schema."""
    cls = EVENT_TYPES[event_type] if isinstance(event_type, str) else event_type
    return _table().by_type[cls].current.fingerprint


# --- Encoding -------------------------------------------------------------------------------------


def encode(event: Event) -> bytes:
    """The event in Avro single-object encoding with its current schema."""
    codec = _table().by_type.get(type(event))
    if codec is None:
        raise SerdeError(f"{type(event).__name__} is not an event type.", reason="unknown_event")
    if event.envelope.event_type != codec.event_name:
        raise SerdeError(
            f"envelope.event_type is {event.envelope.event_type!r} but the event is a {codec.event_name}.",
            reason="wrong_type",
            field="envelope.event_type",
        )
    try:
        record = codec.encode(event)
    except SerdeError as err:
        raise (_locate(codec.cls, event, "", {}, True) or err) from None
    except (AttributeError, TypeError) as exc:
        raise SerdeError(
            f"{codec.event_name} holds a value of the wrong type ({exc}).", reason="wrong_type"
        ) from exc
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(codec.current.fingerprint)
    try:
        fastavro.schemaless_writer(buf, codec.current.parsed, record)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        field = _invalid_field(codec.current.parsed, record)
        where = f" in {field}" if field else ""
        raise SerdeError(
            f"{codec.event_name} cannot be encoded: a value{where} has the wrong type.",
            reason="wrong_type",
            field=field,
        ) from exc
    return buf.getvalue()


def _invalid_field(schema: Any, record: Any) -> str | None:
    """The dotted name of the first invalid field (slow; only on the error path)."""
    try:
        fastavro.validation.validate(record, schema, raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        for err in exc.errors:
            parts = str(getattr(err, "field", "")).split(".")
            # fastavro names fields "<namespace>.<Record>.<field>"; keep the field names only.
            return ".".join(p for p in parts if p and not p[0].isupper() and p != "ca" and p != "tipline")
    except Exception:  # noqa: BLE001 - the diagnosis must never hide the original error
        return None
    return None


# --- Decoding -------------------------------------------------------------------------------------


def _header(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SerdeError(f"expected bytes, got {type(data).__name__}.", reason="wrong_type")
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        raise SerdeError(
            "not an Avro single-object record (the bytes do not start with C3 01 and a fingerprint).",
            reason="bad_marker" if data[:2] != MAGIC else "truncated",
        )
    return bytes(data[2:HEADER_LEN])


def _lookup(data: bytes) -> tuple[_Codec, schema_registry.SchemaFile]:
    fp = _header(data)
    found = _table().by_fingerprint.get(fp)
    if found is None:
        raise SerdeError(
            f"no schema in schemas/ has fingerprint {fp.hex()}; the producer uses a schema this "
            "reader does not have (deploy the newer schemas).",
            reason="unknown_fingerprint",
        )
    return found


def event_type_of(data: bytes) -> str:
    """The event type of encoded bytes, from the fingerprint alone (the body is not read)."""
    return _lookup(data)[0].event_name


def decode(data: bytes) -> Event:
    """The event in ``data``, resolved to the current schema of its type whatever version wrote it."""
    codec, writer = _lookup(data)
    buf = io.BytesIO(data)
    buf.seek(HEADER_LEN)
    reader = None if writer is codec.current else codec.current.parsed
    try:
        record = fastavro.schemaless_reader(buf, writer.parsed, reader)
    except (EOFError, StopIteration) as exc:
        raise SerdeError(f"the {codec.event_name} record is truncated.", reason="truncated") from exc
    except UnicodeDecodeError as exc:
        raise SerdeError(f"the {codec.event_name} record holds invalid UTF-8.", reason="corrupt") from exc
    except (ValueError, IndexError, TypeError, OverflowError, MemoryError) as exc:
        raise SerdeError(f"the {codec.event_name} record is corrupt ({exc}).", reason="corrupt") from exc
    if buf.tell() != len(data):
        raise SerdeError(
            f"the {codec.event_name} record has {len(data) - buf.tell()} unread bytes after its body.",
            reason="trailing_bytes",
        )
    try:
        event: Event = codec.decode(record)
    except SerdeError as err:
        raise (_locate(codec.cls, record, "", {}, False) or err) from None
    except KeyError as exc:
        raise SerdeError(f"the {codec.event_name} record lacks {exc}.", reason="corrupt") from exc
    return event


def headers_for(event: Event) -> list[tuple[str, bytes]]:
    """Kafka headers: event type, event id and schema fingerprint (hex), readable without decoding."""
    return [
        (HEADER_EVENT_TYPE, type(event).__name__.encode()),
        (HEADER_EVENT_ID, event.envelope.event_id.encode()),
        (HEADER_FINGERPRINT, fingerprint_of(type(event)).hex().encode()),
    ]


def to_avro_dict(event: Event) -> dict[str, Any]:
    """The Avro record of an event (its current schema), for tools and tests that need the dict."""
    codec = _table().by_type[type(event)]
    record: dict[str, Any] = codec.encode(event)
    return record
