"""Batch decoding for the projector: many records of one writer schema read in one fastavro call.

``pipeline.serde.decode`` reads one record per call and builds the whole event dataclass; at the
projector's volumes the per-call overhead and the dataclass building cost most of a rebuild's time.
The read model only reads a few fields and does not care about the order within a batch (its merge is
order-free, ``projections.model``). So records are grouped by the writer schema named in their
single-object header (the same fingerprint lookup as serde, over the same ``schemas/`` files), their
bodies are concatenated into one block of an Avro object container, and fastavro reads the block in
one call, in C. The records come back as ``Record``s: attribute access over the decoded dicts, enum
values as strings, times as epoch milliseconds except ``envelope.occurred_at`` (a UTC datetime), which
is all ``model.patch`` needs.

Safety: each decoded record must carry the event type its fingerprint names and the report id of its
Kafka key, and a block must yield exactly as many records as went in; otherwise (a truncated, padded or
foreign record upsets the framing) the group is decoded again record by record with ``serde.decode``,
which names the bad record's reason. Size limits are checked by serde on encode (this path does not
re-check them on read).
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

import fastavro

from pipeline import schema_registry, serde
from pipeline.errors import SerdeError
from pipeline.events import Event
from pipeline.serde import HEADER_LEN, MAGIC

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SYNC = b"tipline-proj-blk"


class Record:
    """A decoded record: its fields as attributes, nested records wrapped too."""

    __slots__ = ("_d",)

    def __init__(self, d: Mapping[str, Any]) -> None:
        self._d = d

    def __getattr__(self, key: str) -> Any:
        try:
            v = self._d[key]
        except KeyError:
            raise AttributeError(key) from None
        if type(v) is dict:
            return Record(v)
        if type(v) is list:
            return tuple(Record(x) if type(x) is dict else x for x in v)
        return v


@dataclass(frozen=True, kw_only=True, slots=True)
class Item:
    """One record to decode: its bytes, its Kafka key, and an opaque tag the caller gets back."""

    value: bytes | None
    key: bytes | None
    tag: Any


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _plain(schema: Any) -> Any:
    """The schema without logical types (fingerprints ignore them; times stay epoch numbers)."""
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and isinstance(schema.get("type"), str):
            return schema["type"]
        return {k: _plain(v) if k in ("type", "items", "values", "fields") else v for k, v in schema.items()}
    return schema


@cache
def _headers() -> dict[bytes, tuple[str, bytes]]:
    """Fingerprint -> (event type, the header of an object container holding that writer schema)."""
    out: dict[bytes, tuple[str, bytes]] = {}
    for f in schema_registry.registry():
        meta = {"avro.schema": json.dumps(_plain(f.raw)).encode(), "avro.codec": b"null"}
        head = bytearray(b"Obj\x01")
        head += _zigzag(len(meta))
        for k, v in meta.items():
            head += _zigzag(len(k)) + k.encode() + _zigzag(len(v)) + v
        head += _zigzag(0) + _SYNC
        out[f.fingerprint] = (f.event_name, bytes(head))
    return out


def _one(item: Item) -> Event:
    if item.value is None:
        raise SerdeError("the record has no value.", reason="empty")
    return serde.decode(item.value)


def _checked(rec: dict[str, Any], event_type: str, key: bytes | None) -> Record:
    """The record, if it is the event its header names and belongs to the report of its key."""
    env = rec["envelope"]
    if env["event_type"] != event_type or (key is not None and env["report_id"].encode() != key):
        raise ValueError("record does not match its header or key")
    env["occurred_at"] = _EPOCH + timedelta(milliseconds=env["occurred_at"])
    return Record(rec)


def decode_batch(
    items: Sequence[Item],
) -> tuple[list[tuple[Item, Event | Record]], list[tuple[Item, SerdeError]]]:
    """Decode many records: (item, record) for each good one, (item, error) for each bad one."""
    headers = _headers()
    groups: dict[bytes, list[Item]] = defaultdict(list)
    good: list[tuple[Item, Event | Record]] = []
    bad: list[tuple[Item, SerdeError]] = []
    for it in items:
        v = it.value
        if v is None or len(v) < HEADER_LEN or v[:2] != MAGIC or v[2:HEADER_LEN] not in headers:
            try:
                good.append((it, _one(it)))
            except SerdeError as exc:
                bad.append((it, exc))
            continue
        groups[v[2:HEADER_LEN]].append(it)
    for fp, members in groups.items():
        event_type, head = headers[fp]
        body = b"".join(it.value[HEADER_LEN:] for it in members if it.value is not None)
        block = head + _zigzag(len(members)) + _zigzag(len(body)) + body + _SYNC
        decoded: list[tuple[Item, Event | Record]] = []
        try:
            for it, rec in zip(members, fastavro.reader(io.BytesIO(block)), strict=True):
                decoded.append((it, _checked(cast("dict[str, Any]", rec), event_type, it.key)))
        except (ValueError, EOFError, StopIteration, TypeError, KeyError, IndexError, UnicodeDecodeError):
            decoded = []
            for it in members:
                try:
                    decoded.append((it, _one(it)))
                except SerdeError as exc:
                    bad.append((it, exc))
        good.extend(decoded)
    return good, bad
