"""`Subscription/$status` and `Subscription/[id]/$events`, given a database connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.errors import FhirError, not_found
from fhir_server.storage.db import Connection
from subscriptions import notifications as nb
from subscriptions.event_store import (
    ReadableBy,
    SubscriptionState,
    event_rows,
    load_state,
    load_states,
    notification_events,
)
from subscriptions.outbox_store import first_event_number

CONTENT_LEVELS = ("empty", "id-only", "full-resource")
MAX_EVENTS_PER_CALL = 1000
Visible = Callable[[SubscriptionState], bool]


def subscription_state(conn: Connection, sub_id: str) -> SubscriptionState | None:
    """Server-side state (status, counters, errors) of a Subscription, for overlaying reads."""
    return load_state(conn, sub_id)


def status_parameters(conn: Connection, sub_id: str, base_url: str) -> dict[str, Any]:
    """The query-status Parameters of one Subscription (404 if unknown)."""
    state = load_state(conn, sub_id)
    if state is None:
        raise not_found("Subscription", sub_id)
    return nb.status_parameters(state.status_info(), "query-status", base_url)


def status_operation(
    conn: Connection,
    base_url: str,
    *,
    ids: list[str] | None = None,
    statuses: list[str] | None = None,
    visible: Visible | None = None,
) -> dict[str, Any]:
    """`$status` (instance: ids=[id]; type level: ids/statuses ORed): a searchset Bundle.

    For an instance call with an unknown id this raises 404. `visible` limits the result to
    Subscriptions the caller may see.
    """
    states = load_states(conn, ids, statuses)
    if ids is not None and len(ids) == 1 and not states:
        raise not_found("Subscription", ids[0])
    if visible is not None:
        states = [s for s in states if visible(s)]
    return nb.status_searchset([s.status_info() for s in states], base_url)


def _parse_number(value: str | int | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise FhirError(400, "invalid", f"{name} must be an integer event number",
                        f"Parameters.parameter.where(name='{name}')") from exc
    if number < 0:
        raise FhirError(400, "invalid", f"{name} must not be negative",
                        f"Parameters.parameter.where(name='{name}')")
    return number


def events_operation(
    conn: Connection,
    sub_id: str,
    base_url: str,
    *,
    events_since: str | int | None = None,
    events_until: str | int | None = None,
    content: str | None = None,
    readable_by: ReadableBy | None = None,
) -> dict[str, Any]:
    """`$events`: a query-event history Bundle of the retained events in the range.

    The range is inclusive; defaults are the oldest retained event and the latest event.
    `content` may lower the Subscription's payload level (never raise it). At most
    1000 events are returned per call; page with `eventsSinceNumber`.
    """
    state = load_state(conn, sub_id)
    if state is None:
        raise not_found("Subscription", sub_id)
    since = _parse_number(events_since, "eventsSinceNumber")
    until = _parse_number(events_until, "eventsUntilNumber")
    if since is not None and until is not None and since > until:
        raise FhirError(400, "invalid", "eventsSinceNumber is after eventsUntilNumber")
    level = state.spec.content
    if content is not None:
        if content not in CONTENT_LEVELS:
            raise FhirError(400, "invalid", f"Unknown content {content!r}",
                            "Parameters.parameter.where(name='content')")
        level = CONTENT_LEVELS[min(CONTENT_LEVELS.index(content),
                                   CONTENT_LEVELS.index(level))]
    if since is None:
        since = first_event_number(conn, sub_id)
    rows = event_rows(conn, sub_id, since, until, MAX_EVENTS_PER_CALL)
    evs = notification_events(conn, rows, state, level, readable_by)
    return nb.query_event(state.status_info(), evs, base_url, level)
