"""The authorization layer's audit log: AuditEvent JSON rows in `auth_audit_events`.

Denials must be recorded even when the request's own transaction rolls back, so
`record_audit` uses its own short write transaction. The REST layer can expose these
rows as AuditEvent resources to administrators (`list_audit_events`), or pass another
`AuditSink` to `create_auth_blueprint` to store them elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select

from fhir_server.auth.audit import CLIENT_ID_SYSTEM
from fhir_server.auth.auth_schema import audit_log
from fhir_server.storage.db import Database

AuditSink = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)


def _client_of(event: dict[str, Any]) -> str | None:
    for agent in event.get("agent", []):
        ident = agent.get("who", {}).get("identifier", {})
        if ident.get("system") == CLIENT_ID_SYSTEM:
            return ident.get("value")
    return None


_INSERT = insert(audit_log)


def insert_audit(conn: Connection, event: dict[str, Any]) -> None:
    """Append an AuditEvent inside the caller's transaction (kept only if it commits)."""
    conn.execute(_INSERT, {
        "event_id": event["id"], "recorded": int(time.time() * 1_000_000),
        "outcome": event.get("outcome", "0"), "client_id": _client_of(event),
        "body": orjson.dumps(event).decode(),
    })


def record_audit(db: Database, event: dict[str, Any]) -> None:
    """Append an AuditEvent to the audit log (own transaction; failures are logged)."""
    try:
        with db.write() as conn:
            insert_audit(conn, event)
    except Exception:  # noqa: BLE001 - auditing must never turn a denial into a 500
        log.exception("could not record AuditEvent %s", event.get("id"))


def db_sink(db: Database) -> AuditSink:
    """An AuditSink writing to this database's audit log."""
    return lambda event: record_audit(db, event)


def list_audit_events(
    db: Database,
    *,
    outcome: str | None = None,
    client_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Recorded AuditEvents, oldest first, optionally filtered (for administrators)."""
    query = select(audit_log.c.body).order_by(audit_log.c.seq).limit(limit)
    if outcome is not None:
        query = query.where(audit_log.c.outcome == outcome)
    if client_id is not None:
        query = query.where(audit_log.c.client_id == client_id)
    with db.read() as conn:
        return [orjson.loads(row.body) for row in conn.execute(query)]
