"""Notification bundles and status Parameters per the Subscriptions R5 Backport R4 profiles.

Pure builders: `backport-subscription-notification-r4` history Bundles (handshake, heartbeat,
event-notification, query-status, query-event) whose first entry is the
`backport-subscription-status-r4` Parameters; every entry carries `request` and `response`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-notification-r4"
)
STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
ERROR_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscription-error"
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status",
                      "query-event")
_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}
_RESPONSE = {"create": "201", "update": "200", "delete": "204"}


@dataclass(frozen=True)
class NotificationEvent:
    """One event to report: its number, time, focus and (optionally) the focus body."""

    event_number: int
    timestamp: str  # FHIR instant
    focus_type: str | None = None
    focus_id: str | None = None
    focus_version: str | None = None
    interaction: str = "update"
    additional_context: tuple[str, ...] = ()
    resource: dict[str, Any] | None = None  # full-resource body, when allowed
    context_resources: tuple[dict[str, Any], ...] = ()  # full-resource additional context
    include_focus: bool = True  # False when the owner may no longer read the focus


@dataclass(frozen=True)
class StatusInfo:
    """What the status Parameters say about one Subscription."""

    subscription_id: str
    topic_url: str
    status: str
    events_since_start: int
    errors: tuple[tuple[str, str], ...] = field(default=())  # (subscription-error code, text)


def instant(ts: datetime | None = None) -> str:
    """A FHIR instant (UTC, millisecond precision) for `ts` or now."""
    ts = ts or datetime.now(UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def micros_to_instant(micros: int) -> str:
    """A FHIR instant from epoch microseconds."""
    return instant(datetime.fromtimestamp(micros / 1_000_000, UTC))


def _abs(base_url: str, ref: str) -> str:
    if ref.startswith(("http://", "https://", "urn:")):
        return ref
    return f"{base_url.rstrip('/')}/{ref}"


def status_parameters(
    info: StatusInfo,
    notification_type: str,
    base_url: str,
    *,
    events: list[NotificationEvent] | None = None,
    content: str = "id-only",
    param_id: str | None = None,
) -> dict[str, Any]:
    """The backport-subscription-status-r4 Parameters resource."""
    if notification_type not in NOTIFICATION_TYPES:
        raise ValueError(f"unknown notification type {notification_type!r}")
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {
            "reference": _abs(base_url, f"Subscription/{info.subscription_id}")}},
    ]
    if content != "empty":
        params.append({"name": "topic", "valueCanonical": info.topic_url})
    params += [
        {"name": "status", "valueCode": info.status},
        {"name": "type", "valueCode": notification_type},
        {"name": "events-since-subscription-start", "valueString": str(info.events_since_start)},
    ]
    for ev in events or []:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(ev.event_number)},
            {"name": "timestamp", "valueInstant": ev.timestamp},
        ]
        if content != "empty" and ev.include_focus and ev.focus_type and ev.focus_id:
            parts.append({"name": "focus", "valueReference": {
                "reference": _abs(base_url, f"{ev.focus_type}/{ev.focus_id}")}})
            for ref in ev.additional_context:
                parts.append({"name": "additional-context",
                              "valueReference": {"reference": _abs(base_url, ref)}})
        params.append({"name": "notification-event", "part": parts})
    for code, text in info.errors:
        concept: dict[str, Any] = {"coding": [{"system": ERROR_SYSTEM, "code": code}]}
        if text:
            concept["text"] = text
        params.append({"name": "error", "valueCodeableConcept": concept})
    pid = param_id or str(uuid.uuid4())
    return {
        "resourceType": "Parameters",
        "id": pid,
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": params,
    }


def _status_entry(params: dict[str, Any], info: StatusInfo, base_url: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{params['id']}",
        "resource": params,
        "request": {"method": "GET",
                    "url": _abs(base_url, f"Subscription/{info.subscription_id}/$status")},
        "response": {"status": "200"},
    }


def _focus_entries(events: list[NotificationEvent], content: str,
                   base_url: str) -> list[dict[str, Any]]:
    if content == "empty":
        return []
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str | None, str | None]] = set()
    for ev in events:
        if not (ev.include_focus and ev.focus_type and ev.focus_id):
            continue
        key = (ev.focus_type, ev.focus_id, ev.focus_version)
        if key in seen:
            continue
        seen.add(key)
        rel = f"{ev.focus_type}/{ev.focus_id}"
        entry: dict[str, Any] = {"fullUrl": _abs(base_url, rel)}
        if content == "full-resource" and ev.resource is not None:
            entry["resource"] = ev.resource
        method = _METHOD.get(ev.interaction, "PUT")
        entry["request"] = {"method": method, "url": ev.focus_type if method == "POST" else rel}
        response: dict[str, Any] = {"status": _RESPONSE.get(ev.interaction, "200")}
        if ev.focus_version:
            response["etag"] = f'W/"{ev.focus_version}"'
        entry["response"] = response
        entries.append(entry)
        bodies = {f"{r.get('resourceType')}/{r.get('id')}": r for r in ev.context_resources}
        for ref in ev.additional_context:
            full = _abs(base_url, ref)
            rel = "/".join(ref.split("/_history/")[0].rstrip("/").split("/")[-2:])
            if (full, None, None) in seen:
                continue
            seen.add((full, None, None))
            ctx: dict[str, Any] = {"fullUrl": full}
            if content == "full-resource" and rel in bodies:
                ctx["resource"] = bodies[rel]
            ctx["request"] = {"method": "GET", "url": rel}
            ctx["response"] = {"status": "200"}
            entries.append(ctx)
    return entries


def notification_bundle(
    info: StatusInfo,
    notification_type: str,
    base_url: str,
    *,
    events: list[NotificationEvent] | None = None,
    content: str = "id-only",
) -> dict[str, Any]:
    """A backport-subscription-notification-r4 history Bundle."""
    events = events or []
    if notification_type in ("handshake", "heartbeat") and events:
        raise ValueError(f"a {notification_type} carries no events")
    params = status_parameters(info, notification_type, base_url, events=events, content=content)
    entries = [_status_entry(params, info, base_url)]
    entries += _focus_entries(events, content, base_url)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": instant(),
        "entry": entries,
    }


def handshake(info: StatusInfo, base_url: str, content: str = "id-only") -> dict[str, Any]:
    """Handshake bundle: no events (`status` should be `requested`)."""
    return notification_bundle(info, "handshake", base_url, content=content)


def heartbeat(info: StatusInfo, base_url: str, content: str = "id-only") -> dict[str, Any]:
    """Heartbeat bundle: no events, the current count."""
    return notification_bundle(info, "heartbeat", base_url, content=content)


def event_notification(info: StatusInfo, events: list[NotificationEvent], base_url: str,
                       content: str) -> dict[str, Any]:
    """Event-notification bundle for empty / id-only / full-resource content."""
    if not events:
        raise ValueError("an event-notification needs at least one event")
    return notification_bundle(info, "event-notification", base_url, events=events,
                               content=content)


def query_event(info: StatusInfo, events: list[NotificationEvent], base_url: str,
                content: str) -> dict[str, Any]:
    """`$events` result: a history bundle of type query-event."""
    return notification_bundle(info, "query-event", base_url, events=events, content=content)


def status_searchset(infos: list[StatusInfo], base_url: str) -> dict[str, Any]:
    """`$status` result: a searchset Bundle with one query-status Parameters per Subscription."""
    entries = []
    for info in infos:
        params = status_parameters(info, "query-status", base_url, content="id-only")
        entries.append({
            "fullUrl": f"urn:uuid:{params['id']}",
            "resource": params,
            "search": {"mode": "match"},
        })
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "timestamp": instant(),
        "total": len(entries),
        "entry": entries,
    }
