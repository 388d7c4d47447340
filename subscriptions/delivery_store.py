"""The delivery worker's leases in SQL: which Subscriptions have due work, leasing them
(least recently served first) and renewing the leases (the heartbeat), releasing a lease with
the attempt's outcome, status changes, and pruning delivered events."""

from __future__ import annotations

import functools
from collections.abc import Collection

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update

from fhir_server.storage.db import Database
from subscriptions.outbox_schema import delivery, events, registry
from subscriptions.outbox_store import now_us

US = 1_000_000  # microseconds per second


def _due_condition(now: int):  # type: ignore[no-untyped-def]
    has_events = and_(registry.c.status == "active",
                      delivery.c.delivered_through < registry.c.event_count)
    handshake = and_(registry.c.status == "requested", delivery.c.needs_handshake.is_(True))
    heartbeat = and_(
        registry.c.status.in_(("active", "error")),
        registry.c.heartbeat_period.is_not(None),
        or_(delivery.c.last_sent_at.is_(None),
            delivery.c.last_sent_at + registry.c.heartbeat_period * US <= now),
    )
    return and_(delivery.c.lease_until < now, delivery.c.next_attempt_at <= now,
                or_(handshake, has_events, heartbeat))


def _due_query(now: int, exclude: Collection[str]):  # type: ignore[no-untyped-def]
    q = (select(delivery.c.sub_id, registry.c.spec)
         .select_from(delivery.join(registry, registry.c.sub_id == delivery.c.sub_id))
         .where(_due_condition(now)))
    if exclude:
        q = q.where(delivery.c.sub_id.not_in(sorted(exclude)))
    return q


def anything_due(conn: Connection, exclude: Collection[str] = ()) -> bool:
    """Whether some Subscription (other than `exclude`) has due work (a read-only query)."""
    return conn.execute(_due_query(now_us(), exclude).limit(1)).first() is not None


def claim_in(conn: Connection, worker_id: str, lease_seconds: float, limit: int,
             exclude: Collection[str] = (), *, skip_locked: bool = False) -> list[str]:
    """Lease up to `limit` Subscriptions with due work in the open write transaction, for
    `lease_seconds`. Least recently served first (round robin: no Subscription starves
    another)."""
    now = now_us()
    q = (_due_query(now, exclude)
         # least recently served first: round robin, no Subscription starves another
         .order_by(func.coalesce(delivery.c.last_sent_at, 0), delivery.c.sub_id)
         .limit(limit))
    if skip_locked:
        q = q.with_for_update(of=delivery, skip_locked=True)
    ids = [str(row.sub_id) for row in conn.execute(q)]
    if ids:
        conn.execute(update(delivery).where(delivery.c.sub_id.in_(ids)).values(
            lease_owner=worker_id, lease_until=now + int(lease_seconds * US)))
    return ids


def renew_leases(conn: Connection, worker_id: str, lease_seconds: float) -> int:
    """Extend every lease `worker_id` holds by `lease_seconds` from now (the heartbeat)."""
    res = conn.execute(update(delivery).where(delivery.c.lease_owner == worker_id).values(
        lease_until=now_us() + int(lease_seconds * US)))
    return int(res.rowcount or 0)


def claim(db: Database, worker_id: str, lease_seconds: float) -> str | None:
    """Lease one Subscription that has due work; return its id (None when nothing is due)."""
    with db.write() as conn:
        ids = claim_in(conn, worker_id, lease_seconds, 1, skip_locked=not db.is_sqlite)
    return ids[0] if ids else None


@functools.lru_cache(maxsize=64)
def _release_statement(keys: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """UPDATE releasing our lease and setting `keys` (built once per set of keys)."""
    return update(delivery).where(
        delivery.c.sub_id == bindparam("v_sid"), delivery.c.lease_owner == bindparam("v_owner"),
    ).values(lease_owner=None, lease_until=0, **{k: bindparam(f"v_{k}") for k in keys})


def release(conn: Connection, sub_id: str, worker_id: str, values: dict[str, object]) -> bool:
    """Release `worker_id`'s lease on a Subscription, storing `values` on its delivery row;
    False when the lease is no longer ours."""
    params = {f"v_{k}": v for k, v in values.items()}
    res = conn.execute(_release_statement(tuple(sorted(values))),
                       dict(params, v_sid=sub_id, v_owner=worker_id))
    return res.rowcount == 1


def set_status(conn: Connection, sub_id: str, old: str, new: str) -> bool:
    """Move a Subscription from status `old` to `new` (False when it is not `old`)."""
    res = conn.execute(update(registry).where(
        registry.c.sub_id == sub_id, registry.c.status == old).values(status=new))
    return bool(res.rowcount)


def prune_events(conn: Connection, cutoff_us: int) -> int:
    """Delete events older than `cutoff_us` that are delivered (or can no longer be:
    Subscriptions in error or off); returns how many."""
    done = select(registry.c.sub_id).where(registry.c.status.in_(("error", "off")))
    delivered = select(delivery.c.delivered_through).where(
        delivery.c.sub_id == events.c.sub_id).scalar_subquery()
    res = conn.execute(delete(events).where(
        events.c.occurred_at < cutoff_us,
        or_(events.c.event_number <= delivered, events.c.sub_id.in_(done))))
    return int(res.rowcount or 0)
