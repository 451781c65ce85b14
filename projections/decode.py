"""What the read model needs from each event, read straight from its Avro bytes.

``pipeline.serde.decode`` builds the whole event (``ReportBody`` and all) to hand the projections
about a dozen fields: most of a rebuild's time went there. ``Reader.fact(data)`` returns only what
``projections.model`` folds (a ``model.Fact``), read by Python source generated once per schema
version in ``schemas/`` (found by fingerprint, like serde). The generated reader walks the whole record
in order, keeps the fields of ``SELECTIONS`` and checks everything it passes over exactly as far as
serde would refuse it: every length within the record, every string valid UTF-8 and within serde's
size limits (``max_length``, ``max_items``, ``max_item_length`` of ``pipeline.events``), enum and
union indexes in range, booleans 0 or 1, times within the years 1-9999, no byte left over.

Whenever a record is anything but plainly valid, the reader *declines* and ``fact`` falls back on
``pipeline.serde.decode`` + ``model.fact``, which accept it or raise serde's ``SerdeError`` with its
usual reason. So the fast path never accepts a record serde would refuse, and never reads a value
differently (tests compare the two on generated, old-version and corrupted records). A schema version
whose shape the generator does not cover (a map, a float, a change other than added or removed
fields against the current version) is always read through serde.

Old versions resolve as serde resolves them: a field the writer lacks takes the current schema's
default, a field the current schema dropped is checked and passed over.

This module imports no Kafka, psycopg or logging.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from pipeline import events as ev
from pipeline import schema_registry, serde
from pipeline.errors import SerdeError
from projections import model

COUNT = "#count"
"""In a selection: the number of items of an array, not the items."""

Selection = Mapping[str, Any]
"""Field name -> ``True`` (the value), ``COUNT`` (an array's length) or a nested selection (a record's,
an optional record's or an array of records' chosen fields, as tuples in the selection's order)."""

_ENVELOPE: Selection = {"event_id": True, "report_id": True, "occurred_at": True}

SELECTIONS: dict[str, Selection] = {
    "ReportSubmitted": {"envelope": _ENVELOPE, "channel": True},
    "ReportReceived": {
        "envelope": _ENVELOPE,
        "body": {
            "report_number": True,
            "channel": True,
            "language": True,
            "reporter_category": True,
            "incidents": COUNT,
            "anonymous": True,
            "reporter_location": {"province": True, "country": True},
        },
    },
    "ReportRejected": {"envelope": _ENVELOPE, "reason_code": True},
    "ReportPrioritized": {"envelope": _ENVELOPE, "level": True, "arrival_seq": True},
    "ReportClassified": {
        "envelope": _ENVELOPE,
        "level": True,
        "arrival_seq": True,
        "incidents": {"assigned_category": True, "sections": True},
        "needs_analyst_review": True,
    },
    "ReportAssessed": {"envelope": _ENVELOPE, "determination": True, "child_may_need_protection": True},
    "ReportReferred": {
        "envelope": _ENVELOPE,
        "recipient": {"kind": True, "name": True, "jurisdiction": True, "domestic": True},
    },
    "FollowUpRequested": {"envelope": _ENVELOPE, "kind": True},
    "ReportClosed": {
        "envelope": _ENVELOPE,
        "outcome": True,
        "referrals": True,
        "domestic_police": True,
        "foreign_police": True,
        "child_protection": True,
        "category": True,
        "province": True,
        "hosting_countries": True,
    },
}
"""Per event type, the fields the read model reads (``model._values`` and ``model.patch``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Times serde can turn into a datetime (UTC, years 1-9999; a day's margin each side keeps clear of
# the edges) and dates it can turn into a date.
_MS_MIN = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // _MS
_MS_MAX = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // _MS
_DAYS_MIN = date(1, 1, 2).toordinal() - _EPOCH.date().toordinal()
_DAYS_MAX = date(9999, 12, 30).toordinal() - _EPOCH.date().toordinal()


class _Decline(ValueError):
    """The fast reader is not sure: serde decides."""


class _Unsupported(Exception):
    """A schema shape the generator does not cover: that version is always read through serde."""


def _varint(d: bytes, p: int, b: int) -> tuple[int, int]:
    """The rest of a multi-byte varint whose first byte was ``b`` (continuation bit set)."""
    v = b & 0x7F
    shift = 7
    while True:
        b = d[p]
        p += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, p
        shift += 7
        if shift > 56:
            raise _Decline


_LENGTHS = tuple(b >> 1 if b < 0x80 and not b & 1 else -1 for b in range(256))
"""A one-byte length by its byte; -1 for a negative one or the first byte of a longer varint."""

_ONE_BYTE_INDEXES = 64
"""Enum and union indexes up to 63 take one byte (zig-zag 0-126)."""


def _length(d: bytes, p: int) -> tuple[int, int]:
    """A length (zig-zag varint) at p that is not one even byte, and the position after it."""
    b = d[p]
    v, p = _varint(d, p + 1, b) if b > 0x7F else (b, p + 1)
    n = (v >> 1) ^ -(v & 1)
    if n < 0:
        raise _Decline
    return n, p


@cache
def _limits() -> dict[str, dict[str, Mapping[str, Any]]]:
    """Record name -> field name -> serde's size limits (the dataclass field's metadata)."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name, obj in vars(ev).items():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            out[name] = {f.name: f.metadata for f in dataclasses.fields(obj) if f.metadata}
    return out


@cache
def _enum_values() -> dict[str, set[str]]:
    return {
        name: {m.value for m in obj}
        for name, obj in vars(ev).items()
        if isinstance(obj, type) and issubclass(obj, enum.Enum)
    }


# --- Schema helpers -------------------------------------------------------------------------------


def _fullname(t: Mapping[str, Any], ns: str) -> str:
    name = str(t["name"])
    if "." in name:
        return name
    space = t.get("namespace", ns)
    return f"{space}.{name}" if space else name


def _collect(t: Any, ns: str, table: dict[str, Any]) -> None:
    """Every named type defined in a schema, by full name, with the namespace its fields resolve in."""
    if isinstance(t, list):
        for x in t:
            _collect(x, ns, table)
    elif isinstance(t, dict):
        kind = t["type"]
        if kind in ("record", "enum", "fixed", "error"):
            full = _fullname(t, ns)
            table[full] = t
            inner = full.rpartition(".")[0]
            for f in t.get("fields", ()):
                _collect(f["type"], inner, table)
        elif kind == "array":
            _collect(t["items"], ns, table)
        elif kind == "map":
            _collect(t["values"], ns, table)


def _resolve(t: Any, ns: str, table: Mapping[str, Any]) -> tuple[Any, str]:
    """A type with a name reference replaced by its definition; and the namespace it sits in."""
    if isinstance(t, str) and t not in _PRIMITIVES:
        full = t if t in table else f"{ns}.{t}"
        if full not in table:
            raise _Unsupported(f"unknown type {t}")
        return table[full], full.rpartition(".")[0]
    if isinstance(t, dict) and t.get("type") in ("record", "enum", "fixed", "error"):
        return t, _fullname(t, ns).rpartition(".")[0]
    return t, ns


_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


def _kind(t: Any) -> str:
    if isinstance(t, list):
        return "union"
    if isinstance(t, str):
        return t
    kind = t["type"]
    if isinstance(kind, (dict, list)):
        raise _Unsupported("a nested type declaration")
    return str(kind)


def _same(  # noqa: PLR0911 - one answer per kind of type
    w: tuple[Any, str], r: tuple[Any, str], tables: tuple[Mapping[str, Any], Mapping[str, Any]]
) -> bool:
    """True when the writer's type (and its namespace) reads as the reader's with no resolution but
    fields added (with a default) or removed."""
    w_table, r_table = tables
    wt, w_ns = _resolve(w[0], w[1], w_table)
    rt, r_ns = _resolve(r[0], r[1], r_table)
    wk, rk = _kind(wt), _kind(rt)
    if wk != rk:
        return False
    if wk == "union":
        return len(wt) == len(rt) and all(
            _same((a, w_ns), (b, r_ns), tables) for a, b in zip(wt, rt, strict=True)
        )
    if wk == "array":
        return _same((wt["items"], w_ns), (rt["items"], r_ns), tables)
    if wk == "enum":
        return bool(_fullname(wt, w_ns) == _fullname(rt, r_ns) and wt["symbols"] == rt["symbols"])
    if wk == "record":
        if _fullname(wt, w_ns) != _fullname(rt, r_ns):
            return False
        w_inner, r_inner = _fullname(wt, w_ns).rpartition(".")[0], _fullname(rt, r_ns).rpartition(".")[0]
        r_fields = {f["name"]: f for f in rt["fields"]}
        w_names = {f["name"] for f in wt["fields"]}
        for f in wt["fields"]:
            rf = r_fields.get(f["name"])
            if rf is not None and not _same((f["type"], w_inner), (rf["type"], r_inner), tables):
                return False
        # A field only the reader has must have a default (fastavro would refuse the record otherwise).
        return all("default" in rf for name, rf in r_fields.items() if name not in w_names)
    if wk in _PRIMITIVES:
        w_logical = wt.get("logicalType") if isinstance(wt, dict) else None
        r_logical = rt.get("logicalType") if isinstance(rt, dict) else None
        return bool(w_logical == r_logical)
    return False


# --- Code generation ------------------------------------------------------------------------------


class _Gen:
    """Writes one reader function: a walk over the writer schema, keeping what the selection names."""

    def __init__(self, table: Mapping[str, Any], reader_table: Mapping[str, Any]) -> None:
        self.table = table
        self.reader_table = reader_table
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {
            "_Decline": _Decline,
            "_varint": _varint,
            "_LENGTHS": _LENGTHS,
            "_length": _length,
        }
        self.n = 0
        self.limits = _limits()
        self.enums = _enum_values()

    def var(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def const(self, value: Any, stem: str) -> str:
        name = self.var(f"_{stem}")
        self.ns[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def length(self, depth: int, n: str) -> None:
        """``n`` = the length at p (a string's or bytes'): one even byte through ``_LENGTHS``.

        A length that overruns the record is not checked here: p then lies beyond the end, where the
        next read raises IndexError and the last check (p == end) fails, so the reader declines."""
        self.emit(depth, f"{n} = _LENGTHS[d[p]]")
        self.emit(depth, f"if {n} < 0:")
        self.emit(depth + 1, f"{n}, p = _length(d, p)")
        self.emit(depth, "else:")
        self.emit(depth + 1, "p += 1")

    def long(self, depth: int, v: str) -> None:
        """``v`` = the zig-zag varint at p (one byte inline; more through ``_varint``)."""
        self.emit(depth, f"{v} = d[p]")
        self.emit(depth, "p += 1")
        self.emit(depth, f"if {v} > 127:")
        self.emit(depth + 1, f"{v}, p = _varint(d, p, {v})")
        self.emit(depth, f"{v} = ({v} >> 1) ^ -({v} & 1)")

    def walk(  # noqa: PLR0911, PLR0912, PLR0915 - one case per Avro type, like serde's converters
        self,
        t: Any,
        ns: str,
        sel: Any,
        depth: int,
        *,
        meta: Mapping[str, Any],
        reader: Any,
        reader_ns: str,
        tail: bool = False,
    ) -> str | None:
        """Emit the walk of one value at p; return the variable holding what ``sel`` asks for, if any."""
        t, ns = _resolve(t, ns, self.table)
        if reader is not None:
            reader, reader_ns = _resolve(reader, reader_ns, self.reader_table)
        kind = _kind(t)
        if sel is not None and kind not in ("null", "record", "union", "array") and not isinstance(sel, bool):
            raise _Unsupported(f"selection {sel!r} on a {kind}")
        if kind == "null":
            return "None" if sel else None
        if kind == "boolean":
            self.emit(depth, "if d[p] > 1:")
            self.emit(depth + 1, "raise _Decline")
            out = None
            if sel:
                out = self.var("v")
                self.emit(depth, f"{out} = d[p] == 1")
            self.emit(depth, "p += 1")
            return out
        if kind in ("int", "long"):
            v = self.var("v")
            self.long(depth, v)
            logical = t.get("logicalType") if isinstance(t, dict) else None
            if logical == "timestamp-millis":
                self.emit(depth, f"if not {_MS_MIN} <= {v} <= {_MS_MAX}:")
                self.emit(depth + 1, "raise _Decline")
            elif logical == "date":
                self.emit(depth, f"if not {_DAYS_MIN} <= {v} <= {_DAYS_MAX}:")
                self.emit(depth + 1, "raise _Decline")
            elif logical is not None:
                raise _Unsupported(f"logical type {logical}")
            return v if sel else None
        if kind in ("string", "bytes"):
            n = self.var("n")
            self.length(depth, n)
            limit = meta.get("max_length")
            if kind == "string" and limit is not None:
                self.emit(depth, f"if {n} > {int(limit)}:")
                self.emit(depth + 1, "raise _Decline")
            out = None
            if kind == "string":
                # Every string is decoded, kept or not: invalid UTF-8 anywhere makes serde refuse the record.
                if sel:
                    out = self.var("v")
                    self.emit(depth, f"{out} = d[p : p + {n}].decode()")
                else:
                    self.emit(depth, f"d[p : p + {n}].decode()")
            elif sel:
                raise _Unsupported("bytes in a selection")
            self.emit(depth, f"p += {n}")
            return out
        if kind == "enum":
            symbols = list(t["symbols"])
            known = self.enums.get(str(t["name"]).rpartition(".")[2])
            if known is None or not set(symbols) <= known:
                raise _Unsupported(f"enum {t['name']} has symbols pipeline.events does not know")
            if len(symbols) > _ONE_BYTE_INDEXES:
                raise _Unsupported(f"enum {t['name']} has more than {_ONE_BYTE_INDEXES} symbols")
            # An index is one zig-zag byte (2 * index); anything else (negative, odd, multi-byte) declines.
            i = self.var("i")
            self.emit(depth, f"{i} = d[p]")
            self.emit(depth, "p += 1")
            self.emit(depth, f"if {i} & 1 or {i} > {2 * len(symbols) - 2}:")
            self.emit(depth + 1, "raise _Decline")
            if sel:
                out = self.var("v")
                self.emit(depth, f"{out} = {self.const(tuple(symbols), 'symbols')}[{i} >> 1]")
                return out
            return None
        if kind == "union":
            if len(t) > _ONE_BYTE_INDEXES:
                raise _Unsupported("a union of more than 64 branches")
            i = self.var("i")
            self.emit(depth, f"{i} = d[p]")
            self.emit(depth, "p += 1")
            out = self.var("v") if sel else None
            r_branches = reader if isinstance(reader, list) else [None] * len(t)
            for k, branch in enumerate(t):
                self.emit(depth, f"{'if' if k == 0 else 'elif'} {i} == {2 * k}:")
                mark = len(self.lines)
                got = self.walk(
                    branch, ns, sel, depth + 1, meta=meta, reader=r_branches[k], reader_ns=reader_ns
                )
                if out is not None:
                    self.emit(depth + 1, f"{out} = {got}")
                if len(self.lines) == mark:
                    self.emit(depth + 1, "pass")
            self.emit(depth, "else:")
            self.emit(depth + 1, "raise _Decline")
            return out
        if kind == "array":
            c, total, it = self.var("c"), self.var("total"), self.var("_")
            count_only = sel == COUNT
            item_sel = None if count_only else sel
            out = self.var("v") if sel else None
            max_items = meta.get("max_items")
            item_meta = {"max_length": meta["max_item_length"]} if "max_item_length" in meta else {}
            self.emit(depth, f"{total} = 0")
            if out is not None and not count_only:
                self.emit(depth, f"{out} = []")
            # Most arrays are empty: one byte, 0.
            self.emit(depth, "if d[p] == 0:")
            self.emit(depth + 1, "p += 1")
            self.emit(depth, "else:")
            self.emit(depth + 1, "while True:")
            self.long(depth + 2, c)
            self.emit(depth + 2, f"if {c} == 0:")
            self.emit(depth + 3, "break")
            self.emit(depth + 2, f"if {c} < 0:")
            self.emit(depth + 3, f"{c} = -{c}")
            self.long(depth + 3, self.var("size"))
            # Every item takes at least one byte: a count beyond the record is corrupt, not a long loop.
            self.emit(depth + 2, f"{total} += {c}")
            self.emit(depth + 2, f"if {total} > {int(max_items) if max_items is not None else 'end'}:")
            self.emit(depth + 3, "raise _Decline")
            self.emit(depth + 2, f"for {it} in range({c}):")
            r_items = reader["items"] if isinstance(reader, dict) and reader.get("type") == "array" else None
            mark = len(self.lines)
            got = self.walk(
                t["items"], ns, item_sel, depth + 3, meta=item_meta, reader=r_items, reader_ns=reader_ns
            )
            if out is not None and not count_only:
                self.emit(depth + 3, f"{out}.append({got})")
            if len(self.lines) == mark:
                raise _Unsupported("an array of items that take no bytes")
            if count_only:
                return total
            return out
        if kind == "record":
            return self.record(t, ns, sel, depth, reader=reader, reader_ns=reader_ns, tail=tail)
        raise _Unsupported(f"type {kind}")

    def record(
        self, t: Mapping[str, Any], ns: str, sel: Any, depth: int, *, reader: Any, reader_ns: str, tail: bool
    ) -> str | None:
        memo = None
        if _fullname(t, ns) in CARRIED:
            memo = self.const(_MEMOS.setdefault(self.key(t, ns), _Memo()), "memo")
        if sel is None and memo is not None and tail:
            # The record ends the event: the rest of the bytes is the record. Seen before, it passed.
            rest = self.var("rest")
            self.emit(depth, f"{rest} = d[p:]")
            self.emit(depth, f"if {rest} in {memo}:")
            self.emit(depth + 1, "p = end")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"p = {self.skipper(t, ns)}(d, p, end)")
            self.emit(depth + 1, "if p == end:")
            self.emit(depth + 2, f"{memo}.add({rest})")
            return None
        start = self.var("start")
        if memo is not None:
            self.emit(depth, f"{start} = p")
        if sel is None:
            # Records passed over are checked by one function per shape, shared by every reader that
            # meets it (the ReportBody of four event types compiles once).
            self.emit(depth, f"p = {self.skipper(t, ns)}(d, p, end)")
            out = None
        else:
            out = self.fields(t, ns, sel, depth, reader=reader, reader_ns=reader_ns)
        if memo is not None:
            # Only a record that lies within the bytes passed (a string running past the end does not
            # raise until the next read).
            self.emit(depth, "if p <= end:")
            self.emit(depth + 1, f"{memo}.add(d[{start}:p])")
        return out

    def key(self, t: Mapping[str, Any], ns: str) -> str:
        return json.dumps(_expand(t, ns, self.table, 0), sort_keys=True)

    def skipper(self, t: Mapping[str, Any], ns: str) -> str:
        key = self.key(t, ns)
        fn = _SKIPPERS.get(key)
        if fn is None:
            gen = _Gen(self.table, self.reader_table)
            gen.fields(t, ns, None, 1, reader=None, reader_ns="")
            if not gen.lines:
                gen.emit(1, "pass")
            fn = gen.compile("def skip(d, p, end):\n{}\n    return p\n", "skip", _fullname(t, ns))
            _SKIPPERS[key] = fn
        return self.const(fn, "skip")

    def fields(
        self,
        t: Mapping[str, Any],
        ns: str,
        sel: Any,
        depth: int,
        *,
        reader: Any,
        reader_ns: str,
        top: bool = False,
    ) -> str | None:
        full = _fullname(t, ns)
        inner = full.rpartition(".")[0]
        limits = self.limits.get(full.rpartition(".")[2], {})
        r_fields: dict[str, Any] = {}
        r_inner = reader_ns
        if isinstance(reader, dict) and reader.get("type") == "record":
            r_fields = {f["name"]: f for f in reader["fields"]}
            r_inner = _fullname(reader, reader_ns).rpartition(".")[0]
        chosen = sel if isinstance(sel, Mapping) else {}
        if sel is not None and not isinstance(sel, Mapping):
            raise _Unsupported(f"selection {sel!r} on a record")
        got: dict[str, str] = {}
        last = t["fields"][-1]["name"] if t["fields"] else None
        for f in t["fields"]:
            name = f["name"]
            rf = r_fields.get(name)
            # serde checks the limits of the fields the current dataclass has; a field it dropped is
            # checked here too (stricter is safe: a decline only means serde reads it).
            value = self.walk(
                f["type"],
                inner,
                chosen.get(name),
                depth,
                meta=limits.get(name, {}),
                reader=None if rf is None else rf["type"],
                reader_ns=r_inner,
                tail=top and name == last,
            )
            if value is not None:
                got[name] = value
        if sel is None:
            return None
        parts: list[str] = []
        for name in chosen:
            if name in got:
                parts.append(got[name])
            elif name in r_fields and "default" in r_fields[name]:
                parts.append(self.const(self.default(r_fields[name], chosen[name]), "default"))
            else:
                raise _Unsupported(f"{full}.{name} is neither written nor defaulted")
        out = self.var("r")
        self.emit(depth, f"{out} = ({', '.join(parts)}{',' if len(parts) == 1 else ''})")
        return out

    @staticmethod
    def default(field: Mapping[str, Any], sel: Any) -> Any:
        value = field["default"]
        if sel == COUNT:
            return len(value)
        if isinstance(value, (dict, list)) and value:
            raise _Unsupported(f"a non-empty default of {field['name']}")
        return [] if isinstance(value, list) else value

    def compile(self, template: str, fn_name: str, what: str) -> Callable[..., Any]:
        src = template.format("\n".join(self.lines))
        code = compile(src, f"<projections.decode {fn_name} of {what}>", "exec")
        exec(code, self.ns)  # noqa: S102 - source generated above from the schemas in schemas/
        fn: Callable[..., Any] = self.ns[fn_name]
        return fn

    def build(
        self, schema: Mapping[str, Any], reader: Mapping[str, Any], sel: Selection
    ) -> Callable[..., Any]:
        self.emit(1, "end = len(d)")
        self.emit(1, "p = 10")
        out = self.fields(schema, "", sel, 1, reader=reader, reader_ns="", top=True)
        self.emit(1, "if p != end:")
        self.emit(2, "raise _Decline")
        self.emit(1, f"return {out}")
        return self.compile("def read(d):\n{}\n", "read", str(schema["name"]))


_SKIPPERS: dict[str, Callable[[bytes, int, int], int]] = {}
"""Compiled checks of records passed over, by their shape (names resolved, docs left out)."""

CARRIED = frozenset({f"{schema_registry.COMMON_NAMESPACE}.ReportBody"})
"""Records carried forward unchanged from event to event (the received report rides on four event
types): once one passed the checks, the same bytes of the same shape pass again without a walk."""


class _Memo:
    """The bytes of records of one shape that passed the checks, kept in two bounded generations."""

    BUDGET = 16 * 1024 * 1024
    """Bytes per generation: at most twice this is held."""

    def __init__(self) -> None:
        self.new: set[bytes] = set()
        self.old: set[bytes] = set()
        self.size = 0

    def __contains__(self, data: bytes) -> bool:
        return data in self.new or data in self.old

    def add(self, data: bytes) -> None:
        if data in self.new:
            return
        self.new.add(data)
        self.size += len(data) + 64
        if self.size > self.BUDGET:
            self.old, self.new, self.size = self.new, set(), 0


_MEMOS: dict[str, _Memo] = {}
"""The memo of each carried shape, shared by every reader that meets it."""


def _expand(t: Any, ns: str, table: Mapping[str, Any], depth: int) -> Any:
    """A type with every name reference replaced by its definition and docs left out: a shape's key."""
    if depth > 64:
        raise _Unsupported("a recursive type")
    t, ns = _resolve(t, ns, table)
    if isinstance(t, list):
        return [_expand(x, ns, table, depth + 1) for x in t]
    if isinstance(t, str):
        return t
    out = {k: v for k, v in t.items() if k not in ("doc", "default", "fields", "items", "values")}
    if "name" in t:
        out["name"] = _fullname(t, ns)
        out.pop("namespace", None)
        ns = out["name"].rpartition(".")[0]
    if "fields" in t:
        out["fields"] = [[f["name"], _expand(f["type"], ns, table, depth + 1)] for f in t["fields"]]
    if "items" in t:
        out["items"] = _expand(t["items"], ns, table, depth + 1)
    if "values" in t:
        out["values"] = _expand(t["values"], ns, table, depth + 1)
    return out


def generate(
    writer: Mapping[str, Any], current: Mapping[str, Any], sel: Selection, *, same: bool = False
) -> Callable[..., Any]:
    """The fast reader of one writer schema (raises ``_Unsupported`` for a shape it does not cover);
    ``same``: the writer is the current schema itself."""
    w_table: dict[str, Any] = {}
    r_table: dict[str, Any] = {}
    _collect(writer, "", w_table)
    _collect(current, "", r_table)
    if not same and not _same((writer, ""), (current, ""), (w_table, r_table)):
        raise _Unsupported("the writer differs from the current schema by more than added/removed fields")
    return _Gen(w_table, r_table).build(writer, current, sel)


# --- From the selected values to a fact -----------------------------------------------------------


# Each event's fact from its selection's values (``SELECTIONS``' order); the same values as
# ``model._values`` and ``model.fact`` give for the decoded event (a test holds them together).


def _distinct(items: list[str | None]) -> list[str]:
    """``model._distinct`` of strings: first occurrences in order, None left out."""
    if len(items) == 1:
        first = items[0]
        return [] if first is None else [first]
    return list(dict.fromkeys(i for i in items if i is not None))


def _submitted(r: Any) -> model.Fact:
    (event_id, report_id, ms), channel = r
    return (report_id, "submitted", event_id, _EPOCH + _MS * ms, (channel,), None)


def _received(r: Any) -> model.Fact:
    (event_id, report_id, ms), (number, channel, language, category, incidents, anonymous, location) = r
    origin = None if location is None else model.origin(location[0], location[1])
    values = (number, channel, language, category, incidents, anonymous, origin)
    return (report_id, "received", event_id, _EPOCH + _MS * ms, values, None)


def _rejected(r: Any) -> model.Fact:
    (event_id, report_id, ms), reason = r
    if reason == ev.DUPLICATE_SUBMISSION:
        return (report_id, "resubmitted", event_id, _EPOCH + _MS * ms, (), None)
    return (report_id, "rejected", event_id, _EPOCH + _MS * ms, (reason,), None)


def _prioritized(r: Any) -> model.Fact:
    (event_id, report_id, ms), level, seq = r
    return (report_id, "prioritized", event_id, _EPOCH + _MS * ms, (level, seq), None)


def _classified(r: Any) -> model.Fact:
    (event_id, report_id, ms), level, seq, incidents, review = r
    if len(incidents) == 1:
        ((category, sections_of),) = incidents
        categories = [] if category is None else [category]
        sections = sorted(set(sections_of))
    else:
        categories = _distinct([c for c, _ in incidents])
        sections = sorted({s for _, ss in incidents for s in ss})
    values = (level, seq, categories, sections, review)
    return (report_id, "classified", event_id, _EPOCH + _MS * ms, values, None)


def _assessed(r: Any) -> model.Fact:
    (event_id, report_id, ms), determination, child = r
    return (report_id, "assessed", event_id, _EPOCH + _MS * ms, (determination, child), None)


def _referred(r: Any) -> model.Fact:
    (event_id, report_id, ms), (kind, name, jurisdiction, domestic) = r
    at = _EPOCH + _MS * ms
    return (
        report_id,
        "referred",
        event_id,
        at,
        (),
        (event_id, report_id, kind, name, jurisdiction, domestic, at),
    )


def _followup(r: Any) -> model.Fact:
    (event_id, report_id, ms), kind = r
    return (report_id, "followup", event_id, _EPOCH + _MS * ms, (kind,), None)


def _closed(r: Any) -> model.Fact:
    (event_id, report_id, ms), outcome, referrals, domestic, foreign, child, category, province, hosts = r
    values = (outcome, referrals, domestic, foreign, child, category, province, sorted(set(hosts)))
    return (report_id, "closed", event_id, _EPOCH + _MS * ms, values, None)


_FACTS: dict[str, Callable[[Any], model.Fact]] = {
    "ReportSubmitted": _submitted,
    "ReportReceived": _received,
    "ReportRejected": _rejected,
    "ReportPrioritized": _prioritized,
    "ReportClassified": _classified,
    "ReportAssessed": _assessed,
    "ReportReferred": _referred,
    "FollowUpRequested": _followup,
    "ReportClosed": _closed,
}


# --- The reader -----------------------------------------------------------------------------------


_Fast = tuple[Callable[[bytes], Any], Callable[[tuple[Any, ...]], model.Fact]]

_EMPTY = SerdeError("the record has no value.", reason="empty")


class Reader:
    """Facts from encoded events: a generated reader per schema version (made at its first record),
    ``pipeline.serde`` for a version the generator does not cover and for whatever a reader declines."""

    def __init__(self, files: Sequence[schema_registry.SchemaFile]) -> None:
        self._files = {f.fingerprint: f for f in files}
        self._current = {f.event_name: f for f in files if f.version == ev.SCHEMA_VERSIONS[f.event_name]}
        self.fast: dict[bytes, _Fast] = {}
        self.unsupported: dict[bytes, str] = {}
        """Fingerprints always read through serde, with the reason."""

    def prepare(self) -> None:
        """Generate the reader of every schema version now rather than at its first record."""
        for fp in self._files:
            self._generate(fp)

    def _generate(self, fp: bytes) -> _Fast | None:
        found = self.fast.get(fp)
        if found is not None or fp in self.unsupported:
            return found
        f = self._files.get(fp)
        if f is None:
            return None  # an unknown fingerprint: serde names it
        sel = SELECTIONS.get(f.event_name)
        current = self._current.get(f.event_name)
        if sel is None or current is None or f.event_name not in _FACTS:
            self.unsupported[fp] = f"no selection or current schema for {f.event_name}"
            return None
        try:
            found = (generate(f.raw, current.raw, sel, same=f is current), _FACTS[f.event_name])
        except _Unsupported as exc:
            self.unsupported[fp] = str(exc)
            return None
        self.fast[fp] = found
        return found

    def fast_fact(self, data: bytes) -> model.Fact | None:
        """The generated reader's fact alone; None where it declines (tests check it is used)."""
        found = self._generate(data[2:10]) if data[:2] == serde.MAGIC else None
        if found is None:
            return None
        try:
            return found[1](found[0](data))
        except (IndexError, ValueError):
            return None

    def fact(self, data: bytes) -> model.Fact:
        """What one encoded event says about its report; ``SerdeError`` as ``serde.decode`` raises it."""
        facts, rejected = self.facts([(data, "", 0, 0)])
        if rejected:
            raise SerdeError(rejected[0][4], reason=rejected[0][3])
        return facts[0]

    def facts(
        self, chunk: list[tuple[bytes | None, str, int, int]]
    ) -> tuple[list[model.Fact], list[tuple[str, int, int, str, str]]]:
        """Facts of records (value, topic, partition, offset), and the ones that do not decode."""
        facts: list[model.Fact] = []
        rejected: list[tuple[str, int, int, str, str]] = []
        fast = self.fast
        magic = serde.MAGIC
        for value, t, p, o in chunk:
            if value is not None and value[:2] == magic:
                fp = value[2:10]
                found = fast.get(fp) or self._generate(fp)
                if found is not None:
                    try:
                        facts.append(found[1](found[0](value)))
                        continue
                    except (IndexError, ValueError):
                        pass  # declined (or not plainly valid): serde decides, with its own reason
            if value is None:
                rejected.append((t, p, o, _EMPTY.reason, str(_EMPTY)))
                continue
            try:
                facts.append(model.fact(serde.decode(value)))
            except SerdeError as exc:
                rejected.append((t, p, o, exc.reason, str(exc)))
        return facts, rejected


def reset() -> None:
    """Forget every generated reader and every body checked (a benchmark's cold start)."""
    reader.cache_clear()
    _SKIPPERS.clear()
    _MEMOS.clear()


@cache
def reader() -> Reader:
    """The process's reader (its generated readers are made as their schema versions turn up)."""
    return Reader(schema_registry.registry())
