"""The Subscription registry and the event outbox in SQL: keeping the registry in step
with the stored Subscriptions, numbering and appending events in the writer's transaction,
and the registry snapshot and event ranges the notification code reads. (The delivery
worker's leases are `delivery_store.py`.)"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from subscriptions.outbox_schema import delivery, events, registry
from subscriptions.subscription_rules import SubscriptionSpec, validate_subscription
from subscriptions.wakeup import CHANNEL

LIVE_STATUSES = ("requested", "active", "error")
_CHANNEL_FIELDS = ("channel_type", "endpoint", "payload_mime", "content", "headers")
_CHECKSUM_MOD = 1_000_003
_LIVE = or_(*(registry.c.status == s for s in LIVE_STATUSES))  # no expanding IN parameter
# Statements of every write that records events, run on the transaction's DB-API cursor (as
# Repository reads): SQLAlchemy's statement handling costs several times their own time.
_LIVE_SQL = "status IN (" + ", ".join(f"'{s}'" for s in LIVE_STATUSES) + ")"
_EVENT_COLUMNS = ("sub_id", "event_number", "focus_type", "focus_id", "focus_version",
                  "interaction", "context", "occurred_at")
_WRITE_SQL = {
    "stamp": f"SELECT count(*), max(updated_at), sum(updated_at % {_CHECKSUM_MOD}) "
             f"FROM {registry.name}",
    "bump": f"UPDATE {registry.name} SET event_count = event_count + 1 "
            f"WHERE sub_id = ? AND {_LIVE_SQL} RETURNING sub_id, event_count",
    "append": f"INSERT INTO {events.name} ({', '.join(_EVENT_COLUMNS)}) "
              f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})",
}
_WRITE_SQL_PG = {name: sql.replace("%", "%%").replace("?", "%s")
                 for name, sql in _WRITE_SQL.items()}
# On PostgreSQL the bump also wakes the delivery workers at commit (wakeup.py): the NOTIFY
# rides on this statement, so recording events costs no extra round trip.
_WRITE_SQL_PG["bump"] += f", pg_notify('{CHANNEL}', '')"


def _run(conn: Connection, name: str, params: Any, *, many: bool = False) -> Any:
    """Run one of `_WRITE_SQL` on the transaction's DB-API cursor; the cursor."""
    sql = (_WRITE_SQL if conn.dialect.paramstyle == "qmark" else _WRITE_SQL_PG)[name]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    if many:
        cursor.executemany(sql, params)
    else:
        cursor.execute(sql, params)
    return cursor


def now_us() -> int:
    """Current time in epoch microseconds."""
    return time.time_ns() // 1000


def _end_micros(end: str | None) -> int | None:
    if not end:
        return None
    try:
        dt = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(dt.timestamp() * 1_000_000) if dt.tzinfo else None


def sync_subscription(
    conn: Connection,
    subscription: dict[str, Any],
    *,
    owner: str | None = None,
    spec: SubscriptionSpec | None = None,
) -> str:
    """Create or update the registry row for a stored Subscription; return its status.

    Call in the transaction that creates/updates the Subscription and store the returned
    status in the resource. A new Subscription starts `requested` (handshake pending). An
    update that changes the channel, or re-activates an `error`/`off` Subscription, goes back
    to `requested` with a new handshake; after an error the backlog is not re-sent (the
    client catches up with `$events`). A client may set `off`. Otherwise the server-owned
    status is kept.
    """
    if spec is None:
        spec = validate_subscription(subscription, allow_plain_http_full_resource=True)
    sub_id = str(subscription["id"])
    ts = now_us()
    row = conn.execute(
        select(registry.c.status, registry.c.spec, registry.c.event_count, registry.c.owner)
        .where(registry.c.sub_id == sub_id)
    ).first()
    values = {
        "topic_url": spec.topic_url,
        "spec": json.dumps(spec.to_json()),
        "heartbeat_period": spec.heartbeat_period,
        "end_at": _end_micros(spec.end),
        "updated_at": ts,
    }
    if row is None:
        status = "off" if spec.status == "off" else "requested"
        conn.execute(insert(registry).values(
            sub_id=sub_id, status=status, owner=owner, event_count=0, created_at=ts, **values))
        conn.execute(insert(delivery).values(
            sub_id=sub_id, delivered_through=0, needs_handshake=status == "requested",
            lease_until=0, next_attempt_at=0, attempts=0))
        if status == "requested":
            notify(conn)  # a handshake is due
        return status
    old = SubscriptionSpec.from_json(json.loads(row.spec))
    channel_changed = any(getattr(old, f) != getattr(spec, f) for f in _CHANNEL_FIELDS)
    reset: dict[str, Any] = {}
    if spec.status == "off":
        status = "off"
    elif row.status in ("error", "off") and spec.status in ("requested", "active"):
        status = "requested"
        reset = {"delivered_through": row.event_count}
    elif channel_changed and row.status != "off":
        status = "requested"
    else:
        status = row.status
    conn.execute(update(registry).where(registry.c.sub_id == sub_id).values(
        status=status, owner=owner if owner is not None else row.owner, **values))
    if status == "requested" and (reset or row.status != "requested" or channel_changed):
        conn.execute(update(delivery).where(delivery.c.sub_id == sub_id).values(
            needs_handshake=True, attempts=0, first_failure_at=None, last_error=None,
            error_code=None, next_attempt_at=0, **reset))
        notify(conn)  # a handshake is due
    return status


def notify(conn: Connection) -> None:
    """Wake the delivery workers when this transaction commits (PostgreSQL; see wakeup.py)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANNEL, "")))


def remove_subscription(conn: Connection, sub_id: str) -> None:
    """Forget a deleted Subscription: its registry, delivery state and events."""
    for table in (events, delivery, registry):
        conn.execute(delete(table).where(table.c.sub_id == sub_id))


def next_event_numbers(conn: Connection, sub_ids: list[str]) -> list[tuple[str, int]]:
    """Take the next event number of each live Subscription, locking the counters in
    sub_id order (writers never deadlock on each other); (sub_id, number) pairs."""
    if len(sub_ids) == 1:  # a single counter: the UPDATE locks it
        return [(row[0], row[1]) for row in _run(conn, "bump", (sub_ids[0],)).fetchall()]
    locked = conn.execute(
        select(registry.c.sub_id).where(registry.c.sub_id.in_(sorted(sub_ids)), _LIVE)
        .order_by(registry.c.sub_id).with_for_update()
    ).scalars().all()
    if not locked:
        return []
    numbered = [(row[0], row[1]) for row in conn.execute(
        update(registry).where(registry.c.sub_id.in_(locked), _LIVE)
        .values(event_count=registry.c.event_count + 1)
        .returning(registry.c.sub_id, registry.c.event_count)
    ).all()]
    notify(conn)
    return numbered


def append_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Append numbered outbox rows (one executemany)."""
    _run(conn, "append", [tuple(row[c] for c in _EVENT_COLUMNS) for row in rows], many=True)


def registry_stamp(conn: Connection) -> tuple[int, ...]:
    """Changes whenever a Subscription is synced or removed (rows, newest and checksum of
    `updated_at`)."""
    return tuple(int(v or 0) for v in _run(conn, "stamp", ()).fetchone())


def live_registry(conn: Connection) -> list[Any]:
    """sub_id, topic_url, spec, owner, end_at of every live Subscription."""
    return list(conn.execute(
        select(registry.c.sub_id, registry.c.topic_url, registry.c.spec, registry.c.owner,
               registry.c.end_at).where(registry.c.status.in_(LIVE_STATUSES))).all())


def first_event_number(conn: Connection, sub_id: str) -> int:
    """The oldest event number still kept for a Subscription (1 when none)."""
    return conn.execute(
        select(func.min(events.c.event_number)).where(events.c.sub_id == sub_id)
    ).scalar() or 1
