"""Record subscription events in the writer's transaction (the transactional outbox).

`record_events` runs inside the same database transaction as the resource write: it finds
the Subscriptions whose topic fired and whose filters match, takes their next event numbers
and appends the outbox rows (`outbox_store`). A rollback of the write rolls the events and
counters back too: numbers stay gap-free. The registry is kept in step with the stored
Subscription resources by `outbox_store.sync_subscription` / `remove_subscription`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fhir_server.search import match
from fhir_server.storage.db import Connection
from subscriptions import candidates
from subscriptions.outbox_store import append_events, next_event_numbers, now_us
from subscriptions.topics import fired_topics

ReadableBy = Callable[[str | None, dict[str, Any]], bool]


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
    numbers = next_event_numbers(conn, sorted(chosen))
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
    append_events(conn, out)
    return len(out)
