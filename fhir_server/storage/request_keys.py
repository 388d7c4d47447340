"""Remembered responses of requests sent with an idempotency key (Idempotency-Key or
X-Request-Id): the table and the only SQL that touches it.

A write request with a key stores its response in the same database transaction as its
writes, so "committed" and "response remembered" are one fact: a client that lost the
response and sends the request again gets the remembered response instead of a second
write. Keys are scoped by the caller (two clients may pick the same key) and kept for
`idempotency_seconds` (a day by default).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from fhir_server.storage.db import Database
from fhir_server.storage.schema import metadata

_PRUNE_EVERY = 3600.0  # seconds between prunes of expired keys (per process)
_last_prune = [0.0]

request_keys = Table(
    "request_keys",
    metadata,
    Column("owner", String(200), primary_key=True),  # the caller ("" with auth off)
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # sha256 of method, URL and body
    Column("status", Integer, nullable=False),
    Column("headers", Text, nullable=False),  # JSON object
    Column("body", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),  # epoch microseconds
)
Index("ix_request_keys_created", request_keys.c.created_at)


@dataclass(frozen=True)
class RememberedResponse:
    """A response as first sent for a key."""

    fingerprint: str
    status: int
    headers: dict[str, str]
    body: bytes
    created_at: int


def find(conn: Connection, owner: str, key: str, since_us: int) -> RememberedResponse | None:
    """The response remembered for (owner, key), if it is newer than `since_us`."""
    row = conn.execute(select(request_keys).where(
        request_keys.c.owner == owner, request_keys.c.key == key,
        request_keys.c.created_at >= since_us)).first()
    if row is None:
        return None
    return RememberedResponse(row.fingerprint, row.status, json.loads(row.headers),
                              bytes(row.body), row.created_at)


def remember(conn: Connection, owner: str, key: str, response: RememberedResponse,
             expired_before_us: int) -> None:
    """Store the response for (owner, key) in the open transaction, replacing an expired
    one. A concurrent request with the same key makes this raise IntegrityError."""
    conn.execute(delete(request_keys).where(
        request_keys.c.owner == owner, request_keys.c.key == key,
        request_keys.c.created_at < expired_before_us))
    conn.execute(insert(request_keys).values(
        owner=owner, key=key, fingerprint=response.fingerprint, status=response.status,
        headers=json.dumps(response.headers), body=response.body,
        created_at=response.created_at))


def prune(conn: Connection, before_us: int) -> int:
    """Forget responses older than `before_us`."""
    res = conn.execute(delete(request_keys).where(request_keys.c.created_at < before_us))
    return int(res.rowcount or 0)


class KeyInUse(Exception):
    """A request with the same key committed first (a twin sent at the same time)."""


def find_remembered(db: Database, owner: str, key: str,
                    since_us: int) -> RememberedResponse | None:
    """`find` in a read transaction of its own (before the request runs)."""
    with db.read() as conn:
        return find(conn, owner, key, since_us)


def remember_in(conn: Connection, owner: str, key: str, response: RememberedResponse,
                expired_before_us: int) -> None:
    """`remember` in the request's own write transaction, in a savepoint: a twin that
    committed the key first raises KeyInUse (and this request's writes must not commit)."""
    try:
        with conn.begin_nested():
            remember(conn, owner, key, response, expired_before_us)
    except IntegrityError:
        raise KeyInUse(key) from None


def remember_after(db: Database, owner: str, key: str, response: RememberedResponse,
                   expired_before_us: int) -> bool:
    """`remember` in a write transaction of its own, after the request finished (pruning
    expired keys now and then); False when a concurrent request stored it first."""
    try:
        with db.write() as conn:
            remember(conn, owner, key, response, expired_before_us)
            if time.monotonic() - _last_prune[0] >= _PRUNE_EVERY:
                _last_prune[0] = time.monotonic()
                prune(conn, expired_before_us)
    except IntegrityError:
        return False
    return True
