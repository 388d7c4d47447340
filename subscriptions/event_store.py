"""Read Subscription state and outbox events, and turn them into NotificationEvents."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select

from fhir_server.storage.repository import Repository
from subscriptions.notifications import NotificationEvent, StatusInfo, micros_to_instant
from subscriptions.outbox_schema import delivery, events, registry
from subscriptions.subscription_rules import SubscriptionSpec

ReadableBy = Callable[[str | None, dict[str, Any]], bool]


@dataclass(frozen=True)
class SubscriptionState:
    """Registry + delivery state of one Subscription."""

    sub_id: str
    status: str
    spec: SubscriptionSpec
    owner: str | None
    event_count: int
    delivered_through: int
    needs_handshake: bool
    attempts: int
    first_failure_at: int | None
    last_error: str | None
    error_code: str | None
    last_sent_at: int | None
    last_delivery_at: int | None
    lease_owner: str | None

    def status_info(self) -> StatusInfo:
        """The StatusInfo for notifications and `$status`."""
        errors: tuple[tuple[str, str], ...] = ()
        if self.status == "error":
            errors = ((self.error_code or "no-response", self.last_error or ""),)
        return StatusInfo(self.sub_id, self.spec.topic_url, self.status, self.event_count, errors)


_STATE_COLUMNS = (
    registry.c.sub_id, registry.c.status, registry.c.spec, registry.c.owner,
    registry.c.event_count, delivery.c.delivered_through, delivery.c.needs_handshake,
    delivery.c.attempts, delivery.c.first_failure_at, delivery.c.last_error,
    delivery.c.error_code, delivery.c.last_sent_at, delivery.c.last_delivery_at,
    delivery.c.lease_owner,
)


def _state(row: Row[Any]) -> SubscriptionState:
    data = row._asdict()
    data["spec"] = SubscriptionSpec.from_json(json.loads(data["spec"]))
    return SubscriptionState(**data)


def state_query():  # type: ignore[no-untyped-def]
    """SELECT of the joined state columns (callers add WHERE clauses)."""
    return select(*_STATE_COLUMNS).select_from(
        registry.join(delivery, delivery.c.sub_id == registry.c.sub_id))


# Statements run per notification, built once (building costs more than running them).
_STATE_ONE = state_query().where(registry.c.sub_id == bindparam("sid"))
_EVENTS_FROM = (select(events).where(events.c.sub_id == bindparam("sid"),
                                     events.c.event_number >= bindparam("since"))
                .order_by(events.c.event_number).limit(bindparam("lim")))
_EVENTS_BETWEEN = _EVENTS_FROM.where(events.c.event_number <= bindparam("until"))


def load_state(conn: Connection, sub_id: str) -> SubscriptionState | None:
    """The state of one Subscription, or None if it is not registered."""
    row = conn.execute(_STATE_ONE, {"sid": sub_id}).first()
    return _state(row) if row else None


def load_states(conn: Connection, ids: list[str] | None = None,
                statuses: list[str] | None = None) -> list[SubscriptionState]:
    """States of the given Subscriptions (all when `ids` is None), ordered by id."""
    q = state_query()
    if ids is not None:
        q = q.where(registry.c.sub_id.in_(ids))
    if statuses:
        q = q.where(registry.c.status.in_(statuses))
    return [_state(r) for r in conn.execute(q.order_by(registry.c.sub_id))]


def event_rows(conn: Connection, sub_id: str, since: int, until: int | None,
               limit: int) -> list[Row[Any]]:
    """Outbox rows with since <= event_number <= until, in order, at most `limit`."""
    params: dict[str, Any] = {"sid": sub_id, "since": since, "lim": limit}
    if until is None:
        return list(conn.execute(_EVENTS_FROM, params))
    return list(conn.execute(_EVENTS_BETWEEN, dict(params, until=until)))


def _version_body(conn: Connection, res_type: str, res_id: str,
                  version: str | None) -> dict[str, Any] | None:
    repo = Repository(conn)
    stored = repo.vread(res_type, res_id, int(version)) if version and version.isdigit() \
        else None
    if stored is None or stored.body is None:
        stored = repo.read(res_type, res_id)
    return stored.resource() if stored is not None and stored.body is not None else None


def _current_body(conn: Connection, ref: str) -> dict[str, Any] | None:
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2:
        return None
    stored = Repository(conn).read(parts[-2], parts[-1])
    return stored.resource() if stored is not None and stored.body is not None else None


def bind_connection(readable_by: ReadableBy | None, conn: Connection) -> ReadableBy | None:
    """`readable_by` evaluated on `conn` when it accepts a `conn` keyword (no second
    connection and transaction per check), else unchanged."""
    if readable_by is None:
        return None
    try:
        takes_conn = "conn" in inspect.signature(readable_by).parameters
    except (TypeError, ValueError):
        takes_conn = False
    if not takes_conn:
        return readable_by
    return lambda owner, resource: readable_by(owner, resource, conn=conn)  # type: ignore[call-arg]


def notification_events(
    conn: Connection, rows: list[Row[Any]], state: SubscriptionState, content: str,
    readable_by: ReadableBy | None,
) -> list[NotificationEvent]:
    """NotificationEvents for outbox rows, re-checking read access at notification time.

    A focus the owner may no longer read keeps its event number but loses focus and body;
    unreadable additional context is dropped.
    """
    readable_by = bind_connection(readable_by, conn)
    out: list[NotificationEvent] = []
    for r in rows:
        context = tuple(json.loads(r.context)) if r.context else ()
        body: dict[str, Any] | None = None
        include_focus = True
        need_body = content == "full-resource" or readable_by is not None
        if need_body and r.interaction != "delete":
            body = _version_body(conn, r.focus_type, r.focus_id, r.focus_version)
            if readable_by is not None and body is not None:
                include_focus = readable_by(state.owner, body)
        ctx_bodies: list[dict[str, Any]] = []
        if content != "empty" and context and (content == "full-resource" or readable_by):
            kept = []
            for ref in context:
                cb = _current_body(conn, ref)
                if readable_by is not None and cb is not None and not readable_by(
                        state.owner, cb):
                    continue
                kept.append(ref)
                if cb is not None:
                    ctx_bodies.append(cb)
            context = tuple(kept)
        out.append(NotificationEvent(
            event_number=r.event_number, timestamp=micros_to_instant(r.occurred_at),
            focus_type=r.focus_type, focus_id=r.focus_id, focus_version=r.focus_version,
            interaction=r.interaction,
            additional_context=context if include_focus else (),
            resource=body if (content == "full-resource" and include_focus) else None,
            context_resources=tuple(ctx_bodies) if content == "full-resource" else (),
            include_focus=include_focus,
        ))
    return out
