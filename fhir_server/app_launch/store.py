"""Server-side state of our app's launches: one row per EHR launch.

The browser holds only a random binding cookie; the row holds its SHA-256, the SHA-256 of the
OAuth `state`, the fhirclient state (PKCE verifier, then the EHR access token; never the
client secret) and, after the callback, the patient summary. A launch expires after
`LAUNCH_TTL` seconds (the EHR's access tokens live one hour).

The table is part of the Alembic-managed schema (migration 0003).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, String, Table, Text, delete, select, update

from fhir_server.storage.db import Database
from fhir_server.storage.schema import metadata

LAUNCH_TTL = 3600
AUTHORIZE_TTL = 600  # from /app/launch to /app/callback

launches = Table(
    "app_launches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("state_hash", String(64), nullable=False, unique=True),
    Column("browser_hash", String(64), nullable=False),
    Column("iss", Text, nullable=False),
    Column("status", String(16), nullable=False),  # authorizing | exchanging | ready
    Column("client_state", Text, nullable=False),  # fhirclient state JSON, no client secret
    Column("data", Text, nullable=False, default="{}"),  # patient summary, csrf, results
    Column("created", BigInteger, nullable=False),
)

@dataclass
class Launch:
    """One stored launch."""

    id: str
    iss: str
    status: str
    client_state: dict[str, Any]
    data: dict[str, Any]
    created: int


def sha256(value: str) -> str:
    """Hex SHA-256 of a random value (how state and cookies are stored)."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_launch_id() -> str:
    """A URL-safe random launch id (128 bits)."""
    return secrets.token_urlsafe(16)


def insert(db: Database, launch_id: str, state: str, browser: str, iss: str,
           client_state: dict[str, Any]) -> None:
    """Store a launch that is waiting for the EHR's callback; prune expired rows."""
    now = int(time.time())
    with db.write() as conn:
        conn.execute(delete(launches).where(launches.c.created < now - 24 * 3600))
        conn.execute(launches.insert().values(
            id=launch_id, state_hash=sha256(state), browser_hash=sha256(browser), iss=iss,
            status="authorizing", client_state=json.dumps(client_state), data="{}",
            created=now))


def claim_for_callback(db: Database, state: str, browser: str | None) -> Launch | None:
    """The launch waiting for this `state` in this browser, moved to `exchanging` so that a
    replayed callback finds nothing; None when unknown, expired, spent or another browser."""
    if not state or not browser:
        return None
    now = int(time.time())
    with db.write() as conn:
        row = conn.execute(select(launches).where(
            launches.c.state_hash == sha256(state))).mappings().first()
        if (row is None or row["status"] != "authorizing"
                or row["browser_hash"] != sha256(browser)
                or row["created"] < now - AUTHORIZE_TTL):
            return None
        claimed = conn.execute(update(launches).where(
            launches.c.id == row["id"], launches.c.status == "authorizing").values(
            status="exchanging")).rowcount
        if claimed != 1:
            return None
    return _launch(row, status="exchanging")


def finish(db: Database, launch_id: str, client_state: dict[str, Any],
           data: dict[str, Any]) -> None:
    """Store the token state and the patient summary of a completed launch."""
    with db.write() as conn:
        conn.execute(update(launches).where(launches.c.id == launch_id).values(
            status="ready", client_state=json.dumps(client_state), data=json.dumps(data)))


def save_data(db: Database, launch_id: str, data: dict[str, Any]) -> None:
    """Replace the data of a launch (e.g. the referrals created)."""
    with db.write() as conn:
        conn.execute(update(launches).where(launches.c.id == launch_id).values(
            data=json.dumps(data)))


def load_ready(db: Database, launch_id: str, browser: str | None) -> Launch | None:
    """A completed, unexpired launch of this browser, else None."""
    if not browser:
        return None
    with db.read() as conn:
        row = conn.execute(select(launches).where(
            launches.c.id == launch_id)).mappings().first()
    if (row is None or row["status"] != "ready" or row["browser_hash"] != sha256(browser)
            or row["created"] < int(time.time()) - LAUNCH_TTL):
        return None
    return _launch(row)


def _launch(row: Any, status: str | None = None) -> Launch:
    return Launch(id=row["id"], iss=row["iss"], status=status or row["status"],
                  client_state=json.loads(row["client_state"]), data=json.loads(row["data"]),
                  created=row["created"])
