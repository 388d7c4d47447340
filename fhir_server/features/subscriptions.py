"""Topic-based Subscriptions wired into every write path, operations and the capability.

Access control plugs in through two `Services` fields (None means "everything is visible";
fhir_server/features/auth.py sets `readable_by`, which lets a None owner, i.e. a Subscription
created with auth off or by an administrator, read everything):

- `services.readable_by(owner, resource, conn=None) -> bool`: may the Subscription's owner (the
  `organization` of the AccessContext that created it, stored in the registry) read this
  resource? Checked when an event is recorded (no event, no number for an unreadable focus;
  the write path passes its own connection as `conn` so the uncommitted write is visible)
  and again at delivery / `$events` time (a focus that became unreadable is dropped).
- `services.subscription_filter(call) -> predicate | None`: which Subscription states the
  caller may see in `$status` (e.g. `lambda s: s.owner == ctx.organization`).
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.search import match
from fhir_server.storage import index_store
from subscriptions import operations as sub_ops
from subscriptions import outbox, outbox_store, topics
from subscriptions.event_store import bind_connection
from subscriptions.subscription_rules import validate_subscription

OWN_OPERATION_BASE = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"


def install(services: Services, registry: OperationRegistry) -> None:
    """Register the Subscription hooks, $status/$events and the capability entries."""
    services.phases.add("prepare", "subscriptions.registry", _before_write, order=300,
                        types={"Subscription"})
    services.phases.add("after-write", "subscriptions.outbox", _after_write, order=500)
    registry.register(Operation(
        name="status", handler=_status, types=frozenset({"Subscription"}), type_level=True,
        instance_level=True, methods=frozenset({"GET", "POST"}),
        definition=f"{OWN_OPERATION_BASE}/backport-subscription-status",
        documentation="Subscription status (backport $status)"))
    registry.register(Operation(
        name="events", handler=_events, types=frozenset({"Subscription"}),
        instance_level=True, methods=frozenset({"GET", "POST"}),
        definition=f"{OWN_OPERATION_BASE}/backport-subscription-events",
        documentation="Retained notification events (backport $events)"))
    services.seed_providers.append(topics.basic_resources)
    extras = services.capability_extras
    extras.supported_profiles.setdefault("Subscription", set()).add(
        topics.BACKPORT_SUBSCRIPTION_PROFILE)
    extras.resource_extensions.setdefault("Subscription", []).append(
        lambda _call: topics.capability_topic_extensions())


def _owner(call: Call) -> str | None:
    access = call.access
    return getattr(access, "organization", None) if access is not None else None


def _before_write(event: WriteEvent) -> dict | None:
    """Validate a Subscription and keep the delivery registry in step (its status is the
    registry's); a deleted Subscription leaves the registry."""
    conn, call, previous, new = event.conn, event.call, event.previous, event.resource
    if event.interaction == "delete":
        if previous is not None:
            outbox_store.remove_subscription(conn, previous["id"])
        return None
    if new is None:
        return None
    spec = validate_subscription(
        new, allow_plain_http_full_resource=call.settings.allow_plain_http_full_resource)
    new["status"] = outbox_store.sync_subscription(conn, new, owner=_owner(call), spec=spec)
    return new


def _after_write(event: WriteEvent) -> None:
    conn, call, interaction = event.conn, event.call, event.interaction
    new, previous = event.stored, event.previous_stored
    assert new is not None
    if not topics.topics_for_type(new.res_type):
        return  # no topic watches this type: no need to parse the bodies on the write path
    current = None
    if new.body is not None:  # with the index values the write just extracted
        current = match.Indexed(new.resource(), new.last_updated,
                                index_store.recent_values(conn, new.pid, new.version))
    before = previous.resource() if previous is not None and previous.body is not None else None
    if current is None and before is not None:  # a delete: the event names the deletion version
        before.setdefault("meta", {})["versionId"] = str(new.version)
    outbox.record_events(conn, before, current, interaction,
                         # on the writer's connection: it sees the uncommitted write
                         readable_by=bind_connection(call.services.readable_by, conn),
                         timestamp_us=new.last_updated, base_url=call.base_url or None)


def _param(params: list[tuple[str, str]], body: Any, name: str) -> list[str]:
    values = [v for k, v in params if k == name]
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if p.get("name") == name:
                for key, value in p.items():
                    if key.startswith("value"):
                        values.append(str(value))
    return values


def _status(call: Call, res_type: str | None, res_id: str | None,
            params: list[tuple[str, str]], body: Any) -> Result:
    ids = [res_id] if res_id else [i for v in _param(params, body, "id") for i in v.split(",")]
    statuses = [s for v in _param(params, body, "status") for s in v.split(",")]
    with call.db.read() as conn:
        bundle = sub_ops.status_operation(conn, call.base_url, ids=ids or None,
                                          statuses=statuses or None,
                                          visible=call.services.subscription_visible(call))
    return Result(200, resource=bundle)


def _events(call: Call, res_type: str | None, res_id: str | None,
            params: list[tuple[str, str]], body: Any) -> Result:
    if res_id is None:
        raise FhirError(400, "invalid", "$events is an instance-level operation")
    def one(name: str) -> str | None:
        values = _param(params, body, name)
        return values[0] if values else None
    with call.db.read() as conn:
        bundle = sub_ops.events_operation(
            conn, res_id, call.base_url, events_since=one("eventsSinceNumber"),
            events_until=one("eventsUntilNumber"), content=one("content"),
            readable_by=call.services.readable_by)
    return Result(200, resource=bundle)
