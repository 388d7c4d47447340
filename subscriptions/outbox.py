"""Record subscription events in the writer's transaction (the transactional outbox).

`record_events` runs inside the same database transaction as the resource write: it finds
the Subscriptions whose topic fired and whose filters match, locks their counter rows in
sub_id order (no deadlocks between writers), takes the next event numbers and appends the
outbox rows. A rollback of the write rolls the events and counters back too: numbers stay
gap-free. `sync_subscription` / `remove_subscription` keep the registry in step with the
stored Subscription resources.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, update

from fhir_server.search import match
from subscriptions import candidates
from subscriptions.outbox_schema import delivery, events, registry
from subscriptions.subscription_rules import SubscriptionSpec, validate_subscription
from subscriptions.topics import fired_topics

LIVE_STATUSES = candidates.LIVE_STATUSES
ReadableBy = Callable[[str | None, dict[str, Any]], bool]
_CHANNEL_FIELDS = ("channel_type", "endpoint", "payload_mime", "content", "headers")
# Write-path statements, built once (building them costs more than running them).
_LIVE = or_(*(registry.c.status == s for s in LIVE_STATUSES))  # no expanding IN parameter
_BUMP_ONE = (update(registry).where(registry.c.sub_id == bindparam("sid"), _LIVE)
             .values(event_count=registry.c.event_count + 1)
             .returning(registry.c.sub_id, registry.c.event_count))
_INSERT_EVENTS = insert(events)


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
    return status


def remove_subscription(conn: Connection, sub_id: str) -> None:
    """Forget a deleted Subscription: its registry, delivery state and events."""
    for table in (events, delivery, registry):
        conn.execute(delete(table).where(table.c.sub_id == sub_id))


def record_events(
    conn: Connection,
    previous: dict[str, Any] | match.Indexed | None,
    current: dict[str, Any] | match.Indexed | None,
    interaction: str,
    *,
    readable_by: ReadableBy | None = None,
    timestamp_us: int | None = None,
    base_url: str | None = None,
) -> int:
    """Append outbox rows for every Subscription this change notifies; return how many.

    `current`/`previous` carry `id` and `meta.versionId`; for a delete `current` is None.
    Either may come with its index values (`match.Indexed`), or they are extracted here.
    `readable_by(owner, resource)` (when given) must allow the Subscription's owner to read
    the resource, or no event is recorded for that Subscription. `base_url` is this
    server's, so filters naming its absolute URLs match relative references.
    """
    # index values extracted once, for topic criteria and Subscription filters alike
    before = match.indexed(previous) if previous is not None else None
    after = match.indexed(current) if current is not None else None
    fired = fired_topics(before, after, interaction)
    if not fired:
        return 0
    resource = after if after is not None else before
    assert resource is not None
    by_topic = {ev.topic_url: ev for ev in fired}
    ts = timestamp_us or now_us()
    snap = candidates.snapshot(conn)
    chosen: dict[str, str] = {}
    for topic_url in by_topic:
        for cand in snap.matching(topic_url, resource, ts, base_url):
            if readable_by is not None and not readable_by(cand.owner, resource.resource):
                continue
            chosen[cand.sub_id] = topic_url
    if not chosen:
        return 0
    if len(chosen) == 1:  # a single counter: the UPDATE locks it
        numbers = conn.execute(_BUMP_ONE, {"sid": next(iter(chosen))}).all()
    else:  # lock the counters in sub_id order: writers never deadlock on each other
        locked = conn.execute(
            select(registry.c.sub_id).where(registry.c.sub_id.in_(sorted(chosen)), _LIVE)
            .order_by(registry.c.sub_id).with_for_update()
        ).scalars().all()
        if not locked:
            return 0
        numbers = conn.execute(
            update(registry).where(registry.c.sub_id.in_(locked), _LIVE)
            .values(event_count=registry.c.event_count + 1)
            .returning(registry.c.sub_id, registry.c.event_count)
        ).all()
    if not numbers:
        return 0
    out = []
    for sub_id, number in numbers:
        ev = by_topic[chosen[sub_id]]
        out.append({
            "sub_id": sub_id, "event_number": number, "focus_type": ev.resource_type,
            "focus_id": ev.resource_id, "focus_version": ev.version,
            "interaction": ev.interaction,
            "context": json.dumps(list(ev.additional_context)) if ev.additional_context else None,
            "occurred_at": ts,
        })
    conn.execute(_INSERT_EVENTS, out)
    return len(out)
