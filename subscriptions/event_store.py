"""Read Subscription state and outbox events, and turn them into NotificationEvents."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1024)
def parse_spec(stored: str) -> SubscriptionSpec:
    """The SubscriptionSpec of a registry row's `spec` text (cached: specs are immutable and
    every notification of a Subscription reads the same text)."""
    return SubscriptionSpec.from_json(json.loads(stored))


def _state(row: Row[Any]) -> SubscriptionState:
    data = row._asdict()
    data["spec"] = parse_spec(data["spec"])
    return SubscriptionState(**data)


def state_query():  # type: ignore[no-untyped-def]
    """SELECT of the joined state columns (callers add WHERE clauses)."""
    return select(*_STATE_COLUMNS).select_from(
        registry.join(delivery, delivery.c.sub_id == registry.c.sub_id))


# Statements run per notification, built once (building costs more than running them).
_STATE_ONE = state_query().where(registry.c.sub_id == bindparam("sid"))
_STATES_IN = (state_query().where(registry.c.sub_id.in_(bindparam("ids", expanding=True)))
              .order_by(registry.c.sub_id))
_EVENTS_FROM = (select(events).where(events.c.sub_id == bindparam("sid"),
                                     events.c.event_number >= bindparam("since"))
                .order_by(events.c.event_number).limit(bindparam("lim")))
_EVENTS_BETWEEN = _EVENTS_FROM.where(events.c.event_number <= bindparam("until"))
_UNDELIVERED = (
    select(events).select_from(events.join(delivery, delivery.c.sub_id == events.c.sub_id))
    .where(events.c.sub_id.in_(bindparam("sids", expanding=True)),
           events.c.event_number > delivery.c.delivered_through,
           events.c.event_number <= delivery.c.delivered_through + bindparam("lim"))
    .order_by(events.c.sub_id, events.c.event_number))


def load_state(conn: Connection, sub_id: str) -> SubscriptionState | None:
    """The state of one Subscription, or None if it is not registered."""
    row = conn.execute(_STATE_ONE, {"sid": sub_id}).first()
    return _state(row) if row else None


def load_states(conn: Connection, ids: list[str] | None = None,
                statuses: list[str] | None = None) -> list[SubscriptionState]:
    """States of the given Subscriptions (all when `ids` is None), ordered by id."""
    if ids is not None and not statuses:
        return [_state(r) for r in conn.execute(_STATES_IN, {"ids": ids})]
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


def undelivered_rows(conn: Connection, limits: dict[str, int]) -> dict[str, list[Row[Any]]]:
    """The next undelivered outbox rows of several Subscriptions in one statement: for each
    sub_id, the rows after its delivered watermark, in order, at most `limits[sub_id]`."""
    if not limits:
        return {}
    out: dict[str, list[Row[Any]]] = {}
    for row in conn.execute(_UNDELIVERED, {"sids": sorted(limits),
                                           "lim": max(limits.values())}):
        rows = out.setdefault(row.sub_id, [])
        if len(rows) < limits[row.sub_id]:
            rows.append(row)
    return out


def _key(ref: str) -> tuple[str, str] | None:
    """(type, id) of a relative or absolute reference (`[base/]Type/id[/_history/n]`)."""
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _body(stored: Any) -> dict[str, Any] | None:
    return stored.resource() if stored is not None and stored.body is not None else None


def _focus_bodies(conn: Connection, rows: list[Row[Any]]) -> dict[int, dict[str, Any] | None]:
    """Each event's focus body at the event's version (by event number): current versions
    in one read, older versions from history (deletions have none)."""
    repo = Repository(conn)
    current = repo.read_many([(r.focus_type, r.focus_id) for r in rows
                              if r.interaction != "delete"])
    out: dict[int, dict[str, Any] | None] = {}
    for r in rows:
        if r.interaction == "delete":
            continue
        stored = current.get((r.focus_type, r.focus_id))
        version = r.focus_version
        if stored is not None and version and version.isdigit() and int(version) != stored.version:
            older = repo.vread(r.focus_type, r.focus_id, int(version))
            stored = older if older is not None and older.body is not None else stored
        out[r.event_number] = _body(stored)
    return out


def _current_bodies(conn: Connection, refs: set[str]) -> dict[str, dict[str, Any] | None]:
    """The current body of each reference (one read per resource type)."""
    keys = {ref: _key(ref) for ref in refs}
    found = Repository(conn).read_many([k for k in keys.values() if k is not None])
    return {ref: _body(found.get(key)) if key else None for ref, key in keys.items()}


def _stub(key: tuple[str, str] | None) -> dict[str, Any]:
    return {"resourceType": key[0], "id": key[1]} if key else {}


def bind_connection(readable_by: ReadableBy | None, conn: Connection) -> ReadableBy | None:
    """`readable_by` evaluated on `conn` when it accepts a `conn` keyword (no second
    connection and transaction per check), else unchanged."""
    if readable_by is None:
        return None
    if not _takes_conn(readable_by):
        return readable_by
    return lambda owner, resource: readable_by(owner, resource, conn=conn)  # type: ignore[call-arg]


@functools.lru_cache(maxsize=64)
def _takes_conn(func: Callable[..., Any]) -> bool:
    try:
        return "conn" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def notification_events(
    conn: Connection, rows: list[Row[Any]], state: SubscriptionState, content: str,
    readable_by: ReadableBy | None,
) -> list[NotificationEvent]:
    """NotificationEvents for outbox rows, re-checking read access at notification time.

    A focus the owner may no longer read keeps its event number but loses focus and body;
    unreadable additional context is dropped. Bodies are read only for `full-resource`
    payloads (one read per resource type, history only for superseded versions); for
    `id-only` the access check gets a `{resourceType, id}` stub (the access layer decides
    on the stored current version, see fhir_server/features/auth.py), and `empty` payloads
    reveal nothing to check.
    """
    readable_by = bind_connection(readable_by, conn) if content != "empty" else None
    full = content == "full-resource"
    contexts = {r.event_number: tuple(json.loads(r.context)) if r.context else ()
                for r in rows}
    bodies = _focus_bodies(conn, rows) if full else {}
    ctx_bodies = _current_bodies(conn, {ref for refs in contexts.values() for ref in refs}) \
        if full else {}
    out: list[NotificationEvent] = []
    for r in rows:
        context = contexts[r.event_number]
        body = bodies.get(r.event_number)
        include_focus = True
        if readable_by is not None and r.interaction != "delete":
            include_focus = readable_by(
                state.owner, body if body is not None else _stub((r.focus_type, r.focus_id)))
        if readable_by is not None and context:
            context = tuple(ref for ref in context if readable_by(
                state.owner, ctx_bodies.get(ref) or _stub(_key(ref))))
        out.append(NotificationEvent(
            event_number=r.event_number, timestamp=micros_to_instant(r.occurred_at),
            focus_type=r.focus_type, focus_id=r.focus_id, focus_version=r.focus_version,
            interaction=r.interaction,
            additional_context=context if include_focus else (),
            resource=body if (content == "full-resource" and include_focus) else None,
            context_resources=tuple(b for ref in context if (b := ctx_bodies.get(ref)))
            if full else (),
            include_focus=include_focus,
        ))
    return out
