"""The audit log: AuditEvent JSON rows in `auth_audit_events`, with the entities, agents and
patients each names in `auth_audit_links`, so administrators can ask "who saw this
patient's record" (`AuditEvent?patient=`, `?entity=`, `?agent=`, `?date=`).

Three ways in:
* `insert_audit(conn, event)`: inside the caller's transaction (kept only if it commits):
  writes and token grants.
* `record_audit(db, event)`: its own short transaction: denials, which must be recorded
  even though the request's own transaction rolls back.
* `AuditQueue.put(event)`: reads of patient data by partners, the high-volume case:
  queued in memory and written in batches (one transaction per batch, every
  `flush_seconds` or `batch` events) by a background thread, so a read pays a queue append
  and not a database write. A process that is killed loses at most the last interval's
  read events (documented in fhir_server/auth/README.md).
The log is append-only; `purge_before` removes events older than the retention period.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select

from fhir_server.auth.audit import CLIENT_ID_SYSTEM
from fhir_server.auth.auth_schema import audit_links, audit_log
from fhir_server.storage.db import Database

AuditSink = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)


def _client_of(event: dict[str, Any]) -> str | None:
    for agent in event.get("agent", []):
        ident = agent.get("who", {}).get("identifier", {})
        if ident.get("system") == CLIENT_ID_SYSTEM:
            return ident.get("value")
    return None


def _plain(ref: str) -> str:
    """`Task/1/_history/2` -> `Task/1` (a relative reference without its version)."""
    return ref.split("/_history/")[0]


def links_of(event: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, ref) pairs an AuditEvent is found by: its entities, its patients, and its
    agents (their references, and client ids)."""
    out: set[tuple[str, str]] = set()
    for entity in event.get("entity", []):
        ref = (entity.get("what") or {}).get("reference")
        if not ref:
            continue
        out.add(("entity", _plain(ref)))
        if (entity.get("role") or {}).get("code") == "1" or ref.startswith("Patient/"):
            out.add(("patient", _plain(ref)))
    for agent in event.get("agent", []):
        who = agent.get("who") or {}
        if who.get("reference"):
            out.add(("agent", _plain(who["reference"])))
        ident = who.get("identifier") or {}
        if ident.get("value"):
            out.add(("agent", ident["value"]))
    return {(kind, ref[:300]) for kind, ref in out}


def _recorded_us(event: dict[str, Any]) -> int:
    try:
        moment = datetime.fromisoformat(event["recorded"].replace("Z", "+00:00"))
        return int(moment.timestamp() * 1_000_000)
    except (KeyError, ValueError, AttributeError):
        return int(time.time() * 1_000_000)


def insert_audit(conn: Connection, event: dict[str, Any]) -> None:
    """Append an AuditEvent inside the caller's transaction (kept only if it commits)."""
    seq = conn.execute(insert(audit_log).values(
        event_id=event["id"], recorded=_recorded_us(event),
        outcome=event.get("outcome", "0"), client_id=_client_of(event),
        body=orjson.dumps(event).decode()).returning(audit_log.c.seq)).scalar_one()
    links = [{"seq": seq, "kind": kind, "ref": ref} for kind, ref in sorted(links_of(event))]
    if links:
        conn.execute(insert(audit_links), links)


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


class AuditQueue:
    """Batches AuditEvents into the log from a background thread (see module doc)."""

    def __init__(self, db: Database, *, flush_seconds: float = 0.5, batch: int = 500) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.batch = batch
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        atexit.register(self.flush)

    def put(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="audit-queue")
                self._thread.start()
            if len(self._events) >= self.batch:
                self._wake.set()

    def flush(self) -> int:
        """Write every queued event now; returns how many were written."""
        with self._lock:
            events, self._events = self._events, []
        if not events:
            return 0
        try:
            with self.db.write() as conn:
                for event in events:
                    insert_audit(conn, event)
        except Exception:  # noqa: BLE001 - never lose the serving thread to the audit log
            log.exception("could not write %d AuditEvents", len(events))
            return 0
        return len(events)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()


@dataclass(frozen=True)
class AuditQuery:
    """An administrator's search of the audit log (all conditions AND-ed)."""

    entity: tuple[str, ...] = ()  # any of these (OR), as in FHIR `entity=a,b`
    agent: tuple[str, ...] = ()
    patient: tuple[str, ...] = ()
    since_us: int | None = None  # recorded >= since
    before_us: int | None = None  # recorded < before
    outcome: str | None = None
    client_id: str | None = None
    after_seq: int | None = None  # keyset paging: older than this seq (newest first)
    count: int = 100


def search_audit(db: Database, query: AuditQuery) -> tuple[list[dict[str, Any]], int | None]:
    """AuditEvents matching `query`, newest first; returns (page, seq to continue after)."""
    log_ = audit_log
    conds = []
    for kind, refs in (("entity", query.entity), ("agent", query.agent),
                       ("patient", query.patient)):
        if refs:
            conds.append(log_.c.seq.in_(select(audit_links.c.seq).where(
                audit_links.c.kind == kind, audit_links.c.ref.in_(refs))))
    if query.since_us is not None:
        conds.append(log_.c.recorded >= query.since_us)
    if query.before_us is not None:
        conds.append(log_.c.recorded < query.before_us)
    if query.outcome is not None:
        conds.append(log_.c.outcome == query.outcome)
    if query.client_id is not None:
        conds.append(log_.c.client_id == query.client_id)
    if query.after_seq is not None:
        conds.append(log_.c.seq < query.after_seq)
    with db.read() as conn:
        rows = conn.execute(select(log_.c.seq, log_.c.body).where(*conds)
                            .order_by(log_.c.seq.desc()).limit(query.count + 1)).all()
    page = [orjson.loads(row.body) for row in rows[:query.count]]
    more = rows[query.count - 1].seq if len(rows) > query.count else None
    return page, more


def read_audit(db: Database, event_id: str) -> dict[str, Any] | None:
    """One AuditEvent by its id."""
    with db.read() as conn:
        body = conn.execute(select(audit_log.c.body)
                            .where(audit_log.c.event_id == event_id)).scalar()
    return orjson.loads(body) if body else None


def list_audit_events(
    db: Database,
    *,
    outcome: str | None = None,
    client_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Recorded AuditEvents, oldest first, optionally filtered (for administrators)."""
    page, _ = search_audit(db, AuditQuery(outcome=outcome, client_id=client_id, count=limit))
    return list(reversed(page))


def purge_before(db: Database, recorded_us: int) -> int:
    """Delete the events recorded before `recorded_us` (retention); returns how many."""
    with db.write() as conn:
        old = select(audit_log.c.seq).where(audit_log.c.recorded < recorded_us)
        conn.execute(delete(audit_links).where(audit_links.c.seq.in_(old)))
        removed = conn.execute(delete(audit_log).where(audit_log.c.recorded < recorded_us))
    return removed.rowcount or 0


def count_audit(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
