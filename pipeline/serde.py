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

import collections
import dataclasses
import enum
import io
import json
import threading
import types
import typing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

import fastavro

from pipeline import events, schema_registry
from pipeline.errors import SerdeError
from pipeline.events import EVENT_TYPES, Event

MAGIC = b"\xc3\x01"
TIME_MIN = datetime(1, 1, 2, tzinfo=UTC)
TIME_MAX = datetime(9999, 12, 30, tzinfo=UTC)
"""The times an event may carry (UTC): a day inside the years a datetime holds, so that no reader's
timezone conversion of one can overflow. Intake refuses times outside them, naming the field."""
HEADER_LEN = 10

HEADER_EVENT_TYPE = "event_type"
HEADER_EVENT_ID = "event_id"
HEADER_FINGERPRINT = "schema_fingerprint"


# --- Generated converters -------------------------------------------------------------------------


class _Codegen:
    """Writes ``to_avro``/``from_avro`` functions for every dataclass reachable from the events."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {
            "_check_str": _check_str,
            "_new": object.__new__,
            "_not_bool": _not_bool,
            "_NULL": ("null", None),
            "_EPOCH": _EPOCH,
            "_EPOCH_DATE": _EPOCH.date(),
            "_EPOCH_ORDINAL": _EPOCH.date().toordinal(),
            "_MS": timedelta(milliseconds=1),
            "_MS_MIN": (TIME_MIN - _EPOCH) // timedelta(milliseconds=1),
            "_MS_MAX": (TIME_MAX - _EPOCH) // timedelta(milliseconds=1),
            "_out_of_range": _out_of_range,
            "_timedelta": timedelta,
            "_date_fromordinal": date.fromordinal,
        }
        self.done: set[type] = set()
        self.src: list[str] = []

    def sym(self, obj: Any, prefix: str) -> str:
        name = f"_{prefix}_{getattr(obj, '__name__', id(obj))}"
        self.ns[name] = obj
        return name

    def enc(self, hint: Any, expr: str, path: str, meta: typing.Mapping[str, Any]) -> str:  # noqa: PLR0911
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
            # fastavro's tuple notation names the union branch; without it the writer validates the
            # value (a whole record, for optional records) against each branch to guess.
            inner_expr = f"({_branch_name(inner)!r}, {self.enc(inner, '_v', path, meta)})"
            return f"(_NULL if (_v := {expr}) is None else {inner_expr})"
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
        if hint is bool:
            # fastavro writes any truthy value as true; a stray "no" must not become a yes.
            return f"(_b if ((_b := {expr}) is True or _b is False) else _not_bool())"
        if hint is datetime:
            # Timestamps are converted here, not by fastavro's logical-type layer (several times slower).
            # The range check keeps out what could never be read back (UTC outside years 1-9999).
            return f"(_ms if _MS_MIN <= (_ms := (({expr}) - _EPOCH) // _MS) <= _MS_MAX else _out_of_range())"
        if hint is date:
            return f"(({expr}) - _EPOCH_DATE).days"
        if hint is str and "max_length" in meta:
            return f"_check_str({expr}, {meta['max_length']}, {path!r})"
        if _is_record(hint):
            self.add(hint)
            return f"{self.sym(hint, 'enc')}({expr})"
        return expr

    def dec(self, hint: Any, expr: str, path: str, meta: typing.Mapping[str, Any]) -> str:  # noqa: PLR0911
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
        if hint is datetime:
            return f"(_EPOCH + _timedelta(milliseconds={expr}))"
        if hint is date:
            return f"_date_fromordinal(_EPOCH_ORDINAL + {expr})"
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            # A dict lookup is several times faster than calling the enum class.
            return f"{self.sym(dict(hint._value2member_map_), 'members_' + hint.__name__)}[{expr}]"
        if hint is str and "max_length" in meta:
            return f"_check_str({expr}, {meta['max_length']}, {path!r})"
        if _is_record(hint):
            self.add(hint)
            return f"{self.sym(hint, 'dec')}({expr})"
        return expr

    def add(self, cls: type) -> None:
        if cls in self.done:
            return
        self.done.add(cls)
        hints = typing.get_type_hints(cls)
        enc_lines, dec_lines = [], []
        cls_sym = self.sym(cls, "cls")
        for f in dataclasses.fields(cls):
            hint, meta = hints[f.name], f.metadata
            enc_lines.append(f"        {f.name!r}: {self.enc(hint, f'o.{f.name}', f.name, meta)},")
            # Frozen dataclasses set each field through object.__setattr__ in __init__; calling the slot
            # descriptors directly builds the same object in half the time (no __post_init__ exists).
            setter = self.sym(cls.__dict__[f.name].__set__, f"set_{cls.__name__}_{f.name}")
            dec_lines.append(f"    {setter}(o, {self.dec(hint, f'd[{f.name!r}]', f.name, meta)})")
        self.src.append(f"def _enc_{cls.__name__}(o):\n    return {{\n" + "\n".join(enc_lines) + "\n    }\n")
        if cls in EVENT_TYPES.values() and "body" in hints:
            # The same without the body: for writing an event around a body's stored bytes.
            rest = [line for line in enc_lines if not line.lstrip().startswith("'body':")]
            self.src.append(f"def _encnb_{cls.__name__}(o):\n    return {{\n" + "\n".join(rest) + "\n    }\n")
        self.src.append(
            f"def _dec_{cls.__name__}(d):\n    o = _new({cls_sym})\n"
            + "\n".join(dec_lines)
            + "\n    return o\n"
        )

    def build(self) -> dict[str, Any]:
        for cls in EVENT_TYPES.values():
            self.add(cls)
        code = compile("\n".join(self.src), "<pipeline.serde generated converters>", "exec")
        exec(code, self.ns)  # noqa: S102 - source generated above from our own dataclass definitions
        return self.ns


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _is_record(hint: Any) -> bool:
    """A dataclass type (a plain bool, unlike ``is_dataclass``, so ``hint`` stays a type for mypy)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _branch_name(hint: Any) -> str:
    """The name fastavro's tuple notation uses for a union branch of this type."""
    if _is_record(hint) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return f"{schema_registry.namespace_of(hint)}.{hint.__name__}"
    if typing.get_origin(hint) is tuple:
        return "array"
    return {str: "string", int: "long", bool: "boolean", bytes: "bytes", datetime: "long", date: "int"}[hint]


def _strip_logical(schema: Any) -> Any:
    """The schema with logical types removed: serde converts times itself, fastavro sees plain numbers.

    Parsing Canonical Form drops logical types too, so fingerprints are unchanged.
    """
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and isinstance(schema.get("type"), str):
            return schema["type"]
        return {
            k: _strip_logical(v) if k in ("type", "items", "values", "fields") else v
            for k, v in schema.items()
        }
    return schema


def _not_bool() -> bool:
    raise TypeError("a boolean field holds something else")


def _out_of_range() -> int:
    raise SerdeError("a time is outside the years 1-9999 in UTC.", reason="out_of_range")


def _check_dt(value: Any, path: str) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise SerdeError(
            f"{path} is a naive datetime; give it a timezone (UTC).", reason="wrong_type", field=path
        )
    if isinstance(value, datetime):
        try:
            value.astimezone(UTC)
        except OverflowError:
            # Written, it could never be read back: its UTC time is outside years 1-9999.
            raise SerdeError(
                f"{path} is outside the years 1-9999 in UTC.", reason="out_of_range", field=path
            ) from None
    return value


def _check_str(value: Any, limit: int, path: str) -> Any:
    if isinstance(value, str) and len(value) > limit:
        raise SerdeError(
            f"{path} has {len(value):,} characters; at most {limit:,} are allowed.",
            reason="too_long",
            field=path,
        )
    return value


def _check_len(value: Any, limit: int, path: str) -> Any:
    if len(value) > limit:
        raise SerdeError(
            f"{path} has {len(value):,} items; at most {limit:,} are allowed.", reason="too_many", field=path
        )
    return value


_SIMPLE_TYPES: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), bool: (bool,), bytes: (bytes,)}


def _wrong(path: str, expected: str, value: Any) -> SerdeError:
    return SerdeError(
        f"{path or 'the event'} must be {expected}, not {type(value).__name__}.",
        reason="wrong_type",
        field=path,
    )


def _diagnose(  # noqa: PLR0911, PLR0912 - one case per type shape, like the converters
    hint: Any, value: Any, path: str, meta: typing.Mapping[str, Any], attr: bool
) -> SerdeError | None:
    """Re-walk a value slowly to name the dotted field the fast path failed on, and why.

    ``attr`` walks a dataclass (encode: types and limits are checked); otherwise an Avro dict (decode:
    fastavro has checked the types already, so only the limits are).
    """
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _diagnose(inner, value, path, meta, attr)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return _wrong(path, "a tuple", value)
        item_meta = {"max_length": meta["max_item_length"]} if "max_item_length" in meta else {}
        if "max_items" in meta and len(value) > meta["max_items"]:
            return _catch(_check_len, value, meta["max_items"], path)
        for i, item in enumerate(value):
            found = _diagnose(typing.get_args(hint)[0], item, f"{path}[{i}]", item_meta, attr)
            if found is not None:
                return found
        return None
    if hint is str and "max_length" in meta and isinstance(value, str):
        return _catch(_check_str, value, meta["max_length"], path)
    if not attr:
        if _is_record(hint) and isinstance(value, dict):
            hints = typing.get_type_hints(hint)
            for f in dataclasses.fields(hint):
                found = _diagnose(
                    hints[f.name], value.get(f.name), f"{path}.{f.name}".lstrip("."), f.metadata, attr
                )
                if found is not None:
                    return found
        return None
    if hint in _SIMPLE_TYPES:
        ok = isinstance(value, _SIMPLE_TYPES[hint]) and (hint is bool or not isinstance(value, bool))
        article = "an" if hint is int else "a"
        return None if ok else _wrong(path, f"{article} {hint.__name__}", value)
    if hint is datetime:
        if not isinstance(value, datetime):
            return _wrong(path, "a datetime", value)
        return _catch(_check_dt, value, path)
    if hint is date:
        return None if isinstance(value, date) else _wrong(path, "a date", value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return None if value in hint._value2member_map_ else _wrong(path, f"a {hint.__name__}", value)
    if _is_record(hint):
        if not isinstance(value, hint):
            return _wrong(path, f"a {hint.__name__}", value)
        hints = typing.get_type_hints(hint)
        for f in dataclasses.fields(hint):
            sub = getattr(value, f.name)
            found = _diagnose(hints[f.name], sub, f"{path}.{f.name}".lstrip("."), f.metadata, attr)
            if found is not None:
                return found
    return None


def _catch(check: Any, *args: Any) -> SerdeError | None:
    try:
        check(*args)
    except SerdeError as err:
        return err
    return None


# --- The schema table -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Codec:
    event_name: str
    cls: type
    encode: Any
    decode: Any
    current: schema_registry.SchemaFile
    parsed: Any
    """The current schema, logical types stripped, parsed for fastavro."""
    split: _Split | None = None
    """For an event carrying a report body: its current schema cut around the body (see ``_Split``)."""


@dataclass(frozen=True, kw_only=True)
class _Split:
    """An event's current schema as three consecutive parts: the fields before ``body``, the body, the
    fields after it (Avro writes a record's fields one after another, so the three parts read and write
    exactly the bytes of the whole). Lets a stage's output carry the body's bytes as they were read
    instead of converting and writing the body again (``_BodyBytes``)."""

    head: Any
    body: Any
    tail: Any
    body_key: str
    """The body's schema with every named type written out in full: two events share body bytes only
    when their keys are equal."""
    encode_rest: Any


@dataclass(frozen=True, kw_only=True)
class _Table:
    by_type: dict[type, _Codec]
    by_fingerprint: dict[bytes, tuple[_Codec, Any]]
    """Fingerprint -> (codec of the event, the writer schema parsed; None when it is the current one)."""


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
            event_name=name,
            cls=cls,
            encode=ns[f"_enc_{name}"],
            decode=ns[f"_dec_{name}"],
            current=current[name],
            parsed=_parse(current[name].raw),
            split=_split(current[name].raw, ns.get(f"_encnb_{name}")),
        )
    by_fp: dict[bytes, tuple[_Codec, Any]] = {}
    for f in files:
        codec = by_type[EVENT_TYPES[f.event_name]]
        by_fp[f.fingerprint] = (codec, None if f is codec.current else _parse(f.raw))
    return _Table(by_type=by_type, by_fingerprint=by_fp)


def _parse(raw: dict[str, Any]) -> Any:
    return fastavro.parse_schema(_strip_logical(raw), named_schemas={})


def _split(raw: dict[str, Any], encode_rest: Any) -> _Split | None:
    fields = raw["fields"]
    at = next((i for i, f in enumerate(fields) if f["name"] == "body"), None)
    if at is None or encode_rest is None:
        return None
    named: dict[str, Any] = {}
    parts = []
    for label, chunk in (("Head", fields[:at]), ("Body", None), ("Tail", fields[at + 1 :])):
        if chunk is None:
            schema: Any = _strip_logical(fields[at]["type"])
        else:
            schema = {
                "type": "record",
                "name": f"tipline.serde.{raw['name']}{label}",
                "fields": _strip_logical(chunk),
            }
        # One shared table of names, in field order: a type defined in the head is known to the body.
        parts.append(fastavro.parse_schema(schema, named_schemas=named))
    return _Split(
        head=parts[0],
        body=parts[1],
        tail=parts[2],
        body_key=json.dumps(_expand(fields[at]["type"], _names(raw)), sort_keys=True),
        encode_rest=encode_rest,
    )


def _names(schema: Any, found: dict[str, Any] | None = None, namespace: str = "") -> dict[str, Any]:
    """Every named type defined in ``schema``, by full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for s in schema:
            _names(s, found, namespace)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            full, namespace = _full_name(schema, namespace)
            found[full] = schema
        for key in ("fields", "items", "values"):
            if key in schema:
                _names(schema[key], found, namespace)
        if "type" in schema and not isinstance(schema["type"], str):
            _names(schema["type"], found, namespace)
    return found


def _full_name(schema: dict[str, Any], namespace: str) -> tuple[str, str]:
    name = schema["name"]
    if "." in name:
        return name, name.rsplit(".", 1)[0]
    ns = schema.get("namespace", namespace)
    return (f"{ns}.{name}" if ns else name), ns


def _expand(schema: Any, names: dict[str, Any], namespace: str = "") -> Any:
    """``schema`` with every reference to a named type replaced by its definition, docs left out."""
    if isinstance(schema, str):
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        target = names.get(full) or names.get(schema)
        return _expand(target, names, namespace) if target is not None else schema
    if isinstance(schema, list):
        return [_expand(s, names, namespace) for s in schema]
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            full, namespace = _full_name(schema, namespace)
            out: dict[str, Any] = {"type": schema["type"], "name": full}
            if schema["type"] == "record":
                out["fields"] = [
                    {"name": f["name"], "type": _expand(f["type"], names, namespace)}
                    for f in schema["fields"]
                ]
            elif schema["type"] == "enum":
                out["symbols"] = schema["symbols"]
            else:
                out["size"] = schema["size"]
            return out
        return {
            k: _expand(v, names, namespace) if k in ("type", "items", "values") else v
            for k, v in schema.items()
            if k not in ("doc", "default", "aliases")
        }
    return schema


class _BodyBytes:
    """Bytes kept by object identity: here, the bytes each recently decoded report body was read from.

    A stage decodes an event, and its rules usually hand the same (immutable) ``ReportBody`` object on
    to the event they emit: encoding that event then writes the stored bytes instead of converting and
    writing the body again (about 60% of the cost of encoding a typical ReportClassified). Only bodies
    read with the current schema are kept, only reused under an identical body schema (``body_key``), and
    only for the very object that was decoded (a changed body is a new object, encoded in full). The
    table holds the objects it names, so an id is never reused while its entry lives; it keeps the
    most recent ``LIMIT`` bodies.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        # An OrderedDict drops its oldest entry in constant time; a plain dict's first key is found by
        # scanning past the slots of every entry deleted before it (4 us a put at this size, measured).
        self._by_id: collections.OrderedDict[int, tuple[Any, str, bytes]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, body: Any, key: str, raw: bytes) -> None:
        with self._lock:
            self._by_id[id(body)] = (body, key, raw)
            if len(self._by_id) > self.LIMIT:
                self._by_id.popitem(last=False)

    def get(self, body: Any, key: str) -> bytes | None:
        found = self._by_id.get(id(body))
        if found is None or found[0] is not body or found[1] != key:
            return None
        return found[2]

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()


_BODIES = _BodyBytes()
_ENCODED = _BodyBytes()
"""The bytes of the most recently encoded or decoded events, by event object: a stage that encodes an
output to store it (route, prioritize, assess keep what they emitted) and then hands it to the runner,
which encodes it to produce it, writes it once; an event decoded from a record of its current schema is
encoded as the bytes it was read from. Keyed by the event's type name (its schema is the current one)."""


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
    done = _ENCODED.get(event, codec.event_name)
    if done is not None:
        return done
    split = codec.split
    raw_body = _BODIES.get(getattr(event, "body", None), split.body_key) if split is not None else None
    try:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(codec.current.fingerprint)
        if split is not None and raw_body is not None:
            rest = split.encode_rest(event)
            fastavro.schemaless_writer(buf, split.head, rest)
            buf.write(raw_body)
            fastavro.schemaless_writer(buf, split.tail, rest)
        else:
            record = codec.encode(event)
            fastavro.schemaless_writer(buf, codec.parsed, record)
    except (SerdeError, TypeError, ValueError, AttributeError, OverflowError, KeyError) as exc:
        found = _diagnose(codec.cls, event, "", {}, True)
        if isinstance(exc, SerdeError):
            # Our own limit checks: no library error to chain, only a more precise field name to add.
            raise (found or exc) from None
        raise (
            found or SerdeError(f"{codec.event_name} cannot be encoded ({exc}).", reason="wrong_type")
        ) from exc
    out = buf.getvalue()
    _ENCODED.put(event, codec.event_name, out)
    return out


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


def _lookup(data: bytes) -> tuple[_Codec, Any]:
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
    split = codec.split if writer is None else None
    body_span: tuple[int, int] | None = None
    try:
        if split is not None:
            record: Any = fastavro.schemaless_reader(buf, split.head, None)
            start = buf.tell()
            record["body"] = fastavro.schemaless_reader(buf, split.body, None)
            body_span = (start, buf.tell())
            record.update(fastavro.schemaless_reader(buf, split.tail, None))
        elif writer is None:
            record = fastavro.schemaless_reader(buf, codec.parsed, None)
        else:
            record = fastavro.schemaless_reader(buf, writer, codec.parsed)
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
        raise (_diagnose(codec.cls, record, "", {}, False) or err) from None
    except KeyError as exc:
        raise SerdeError(f"the {codec.event_name} record lacks {exc}.", reason="corrupt") from exc
    except (ValueError, OverflowError, TypeError) as exc:
        # e.g. a timestamp outside the years a datetime can hold, written by another implementation.
        raise SerdeError(
            f"the {codec.event_name} record holds a value out of range ({exc}).", reason="out_of_range"
        ) from exc
    if split is not None and body_span is not None:
        _BODIES.put(getattr(event, "body", None), split.body_key, bytes(data[body_span[0] : body_span[1]]))
    if writer is None:
        # Written with the current schema: encoding this very object again (the ingest stage's digest of
        # a submission does) is these bytes. An older version's event is encoded anew, in the current one.
        _ENCODED.put(event, codec.event_name, bytes(data))
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
