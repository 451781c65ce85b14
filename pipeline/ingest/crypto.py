"""Reporters' contact details, encrypted before they go on any topic, and erasable (crypto-shredding).

Each report with contact details gets its own random 256-bit data key. The contact (a small JSON
object: name, e-mail, phone, preferred language, time to call) is encrypted with AES-256-GCM under that
key, with the report id as associated data, and travels in the events as ``EncryptedContact(key_id=
report_id, nonce, ciphertext)``. Only the follow-up step decrypts it.

Keys live in PostgreSQL (``ingest_contact_keys``), *wrapped*: each data key is itself encrypted with
AES-256-GCM under a master key kept in a file, ``settings.state_dir / "master.key"`` (created 0600 on
first use). A database dump alone therefore does not reveal any contact: it also takes the master key
file, which is never in the database nor on a topic. Back the file up apart from the database; losing it
makes every stored contact unrecoverable.

``erase`` deletes a report's data key (the row stays, with ``key`` NULL and ``erased_at`` set, so that a
later submission cannot silently re-create it): every copy of the ciphertext on every topic becomes
unreadable while every other field of the report still reads.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.errors import ConfigError, DomainError
from pipeline.events import EncryptedContact
from pipeline.settings import Settings

KEY_BYTES = 32
NONCE_BYTES = 12
MASTER_KEY_FILE = "master.key"
_WRAP_AAD = b"tipline.ingest.contact-key.v1:"


def master_key_path(settings: Settings) -> Path:
    return settings.state_dir / MASTER_KEY_FILE


@cache
def _load_master_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".master.key.")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if another process made the file first: then everyone uses theirs.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise ConfigError(f"{path} is not a {KEY_BYTES}-byte master key; restore it from your backup.")
    return data


def master_key(settings: Settings) -> bytes:
    """The master key of this installation, created 0600 in the state folder on first use."""
    return _load_master_key(master_key_path(settings))


def _wrap(master: bytes, report_id: str, data_key: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, data_key, _WRAP_AAD + report_id.encode())


def _unwrap(master: bytes, report_id: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_AAD + report_id.encode()
        )
    except InvalidTag:
        raise ConfigError(
            "A contact key does not open with this master key; the state folder's master.key is not the one "
            "the keys were made with."
        ) from None


class Keyring:
    """Makes, reads and erases per-report data keys in PostgreSQL, wrapped under the master key."""

    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self.master = master

    def data_key(self, conn: Any, report_id: str, *, create: bool) -> bytes | None:
        """The report's data key; made on first use when ``create``; None once erased (or never made)."""
        if create:
            wrapped_new = _wrap(self.master, report_id, AESGCM.generate_key(bit_length=256))
            conn.execute(
                "INSERT INTO ingest_contact_keys (report_id, key) VALUES (%s, %s) "
                "ON CONFLICT (report_id) DO NOTHING",
                (report_id, wrapped_new),
            )
        row = conn.execute(
            "SELECT key, erased_at FROM ingest_contact_keys WHERE report_id = %s", (report_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return _unwrap(self.master, report_id, bytes(row[0]))

    def data_keys(self, conn: Any, report_ids: Sequence[str]) -> dict[str, bytes | None]:
        """The data keys of many reports, made where missing: one round trip for the lot.

        The same as ``data_key(conn, id, create=True)`` for each id: a key already stored is reused, an
        erased one stays erased (None). ``conn`` is a psycopg connection in autocommit: the two
        statements are pipelined in one implicit transaction, committed before this returns, so a key
        is stored before any event carrying a contact sealed with it is produced.
        """
        ids = list(dict.fromkeys(report_ids))
        if not ids:
            return {}
        with conn.pipeline():
            conn.execute(_INSERT_KEYS, (ids, self._wrapped(ids)))
            cur = conn.execute(_SELECT_KEYS, (ids,))
        return self._opened(ids, cur.fetchall())

    async def data_keys_async(self, conn: Any, report_ids: Sequence[str]) -> dict[str, bytes | None]:
        """``data_keys`` on a psycopg ``AsyncConnection`` (autocommit)."""
        ids = list(dict.fromkeys(report_ids))
        if not ids:
            return {}
        async with conn.pipeline():
            await conn.execute(_INSERT_KEYS, (ids, self._wrapped(ids)))
            cur = await conn.execute(_SELECT_KEYS, (ids,))
        return self._opened(ids, await cur.fetchall())

    def _wrapped(self, ids: list[str]) -> list[bytes]:
        return [_wrap(self.master, rid, AESGCM.generate_key(bit_length=256)) for rid in ids]

    def _opened(self, ids: list[str], rows: list[tuple[Any, Any]]) -> dict[str, bytes | None]:
        stored = {str(rid): key for rid, key in rows}
        keys: dict[str, bytes | None] = {}
        for rid in ids:
            key = stored.get(str(uuid.UUID(rid)))
            keys[rid] = None if key is None else _unwrap(self.master, rid, bytes(key))
        return keys


_INSERT_KEYS = (
    "INSERT INTO ingest_contact_keys (report_id, key) "
    "SELECT * FROM unnest(%s::uuid[], %s::bytea[]) ON CONFLICT (report_id) DO NOTHING"
)
_SELECT_KEYS = "SELECT report_id::text, key FROM ingest_contact_keys WHERE report_id = ANY(%s::uuid[])"


def keyring(settings: Settings) -> Keyring:
    return Keyring(master_key(settings))


def encrypt_contact(
    conn: Any,
    report_id: str,
    contact: dict[str, str],
    *,
    settings: Settings | None = None,
    ring: Keyring | None = None,
) -> EncryptedContact:
    """Encrypt a contact under the report's data key (made and stored on first use).

    ``conn`` is a psycopg connection (autocommit, or the caller commits). A resubmission reuses the
    report's key. Raises ``DomainError`` (field ``contact``) when the report's contact was erased.
    """
    ring = ring or keyring(_need(settings))
    return seal(report_id, ring.data_key(conn, report_id, create=True), contact)


def seal(report_id: str, key: bytes | None, contact: Mapping[str, str]) -> EncryptedContact:
    """Encrypt a contact under its report's data key (from ``Keyring.data_keys``); None: erased.

    Raises ``DomainError`` (field ``contact``) when the report's contact was erased.
    """
    if key is None:
        raise DomainError(
            "contact: this report's contact details were erased at the reporter's request; "
            "send the report again without them or under a new submission id",
            reason="contact_erased",
            field="contact",
        )
    nonce = secrets.token_bytes(NONCE_BYTES)
    plaintext = json.dumps(dict(contact), sort_keys=True, separators=(",", ":")).encode()
    return EncryptedContact(
        key_id=report_id, nonce=nonce, ciphertext=AESGCM(key).encrypt(nonce, plaintext, report_id.encode())
    )


def decrypt_contact(
    conn: Any, enc: EncryptedContact, *, settings: Settings | None = None, ring: Keyring | None = None
) -> dict[str, str] | None:
    """The contact in clear, or None once its key was erased. Only the follow-up step should call this."""
    ring = ring or keyring(_need(settings))
    key = ring.data_key(conn, enc.key_id, create=False)
    if key is None:
        return None
    try:
        plaintext = AESGCM(key).decrypt(enc.nonce, enc.ciphertext, enc.key_id.encode())
    except InvalidTag:
        raise DomainError(
            "contact: the ciphertext does not open with its report's key (altered or misfiled)",
            reason="contact_tampered",
            field="contact",
        ) from None
    result: dict[str, str] = json.loads(plaintext)
    return result


def erase(conn: Any, report_id: str, *, now: datetime | None = None) -> bool:
    """Delete a report's contact key (crypto-shredding). True if a key was erased, False if none was left."""
    now = now or datetime.now(UTC)
    row = conn.execute(
        "UPDATE ingest_contact_keys SET key = NULL, erased_at = %s WHERE report_id = %s AND key IS NOT NULL "
        "RETURNING report_id",
        (now, report_id),
    ).fetchone()
    if row is None:
        # Leave a tombstone so that a later resubmission cannot re-create a key for this report.
        conn.execute(
            "INSERT INTO ingest_contact_keys (report_id, key, erased_at) VALUES (%s, NULL, %s) "
            "ON CONFLICT (report_id) DO NOTHING",
            (report_id, now),
        )
        return False
    return True


def _need(settings: Settings | None) -> Settings:
    if settings is None:
        from pipeline import bootstrap

        return bootstrap.settings()
    return settings
