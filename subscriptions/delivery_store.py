"""The delivery worker's leases in SQL: which Subscriptions have due work, leasing them
(least recently served first) and renewing the leases (the heartbeat), releasing a lease with
the attempt's outcome, status changes, and pruning delivered events."""

from __future__ import annotations

import functools
from collections.abc import Collection

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)

from subscriptions.outbox_schema import delivery, events, registry
from subscriptions.outbox_store import now_us

US = 1_000_000  # microseconds per second


_NOW = bindparam("now", type_=BigInteger)


def _due_condition():  # type: ignore[no-untyped-def]
    has_events = and_(registry.c.status == "active",
                      delivery.c.delivered_through < registry.c.event_count)
    handshake = and_(registry.c.status == "requested", delivery.c.needs_handshake.is_(True))
    heartbeat = and_(
        registry.c.status.in_(("active", "error")),
        registry.c.heartbeat_period.is_not(None),
        or_(delivery.c.last_sent_at.is_(None),
            delivery.c.last_sent_at + registry.c.heartbeat_period * US <= _NOW),
    )
    return and_(delivery.c.lease_until < _NOW, delivery.c.next_attempt_at <= _NOW,
                or_(handshake, has_events, heartbeat))


# Statements run every worker cycle, built once (building costs more than running them).
_DUE = (select(delivery.c.sub_id)
        .select_from(delivery.join(registry, registry.c.sub_id == delivery.c.sub_id))
        .where(_due_condition(),
               delivery.c.sub_id.not_in(bindparam("exclude", expanding=True))))
_ANY_DUE = _DUE.limit(1)
# least recently served first: round robin, no Subscription starves another
_CLAIMABLE = (_DUE.order_by(func.coalesce(delivery.c.last_sent_at, 0), delivery.c.sub_id)
              .limit(bindparam("lim")))
_CLAIMABLE_SKIP_LOCKED = _CLAIMABLE.with_for_update(of=delivery, skip_locked=True)
_LEASE = (update(delivery).where(delivery.c.sub_id.in_(bindparam("ids", expanding=True)))
          .values(lease_owner=bindparam("owner"), lease_until=bindparam("until")))


def anything_due(conn: Connection, exclude: Collection[str] = ()) -> bool:
    """Whether some Subscription (other than `exclude`) has due work (a read-only query)."""
    return conn.execute(_ANY_DUE, {"now": now_us(), "exclude": sorted(exclude)}
                        ).first() is not None


def claim_in(conn: Connection, worker_id: str, lease_seconds: float, limit: int,
             exclude: Collection[str] = (), *, skip_locked: bool = False) -> list[str]:
    """Lease up to `limit` Subscriptions with due work in the open write transaction, for
    `lease_seconds`. Least recently served first (round robin: no Subscription starves
    another)."""
    now = now_us()
    q = _CLAIMABLE_SKIP_LOCKED if skip_locked else _CLAIMABLE
    ids = [str(sub_id) for sub_id in conn.execute(
        q, {"now": now, "exclude": sorted(exclude), "lim": limit}).scalars()]
    if ids:
        conn.execute(_LEASE, {"ids": ids, "owner": worker_id,
                              "until": now + int(lease_seconds * US)})
    return ids


def renew_leases(conn: Connection, worker_id: str, lease_seconds: float) -> int:
    """Extend every lease `worker_id` holds by `lease_seconds` from now (the heartbeat)."""
    res = conn.execute(update(delivery).where(delivery.c.lease_owner == worker_id).values(
        lease_until=now_us() + int(lease_seconds * US)))
    return int(res.rowcount or 0)


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


def release_many(conn: Connection, worker_id: str,
                 outcomes: list[tuple[str, dict[str, object]]]) -> None:
    """Release `worker_id`'s leases on several Subscriptions, storing each one's values (one
    statement per set of columns; a lease no longer ours is left alone)."""
    by_keys: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for sub_id, values in sorted(outcomes, key=lambda item: item[0]):
        params = {f"v_{k}": v for k, v in values.items()}
        by_keys.setdefault(tuple(sorted(values)), []).append(
            dict(params, v_sid=sub_id, v_owner=worker_id))
    for keys, rows in by_keys.items():
        conn.execute(_release_statement(keys), rows)


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
