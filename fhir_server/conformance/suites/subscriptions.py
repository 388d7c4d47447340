"""Subscriptions (R5 Backport 1.1.0 on R4, as the IG uses them): topic discovery, a rest-hook
Subscription to the Gravity Task topic delivered to the kit's own receiver, the handshake,
an event after a status change, id-only and full-resource payloads, `$status`, e-mail."""

from __future__ import annotations

import time
from typing import Any

from fhir_server.conformance import resources as fx
from fhir_server.conformance.context import TestContext
from fhir_server.conformance.http import bundle_resources, ref_of
from fhir_server.conformance.model import TestCase
from fhir_server.conformance.receiver import Notification
from fhir_server.conformance.requirements import actor_spec, ig, spec
from fhir_server.conformance.scenario import Prerequisite, describe

GROUP = "subscriptions"
TOPIC_EXT = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
             "capabilitystatement-subscriptiontopic-canonical")


def _supported(t: TestContext) -> bool:
    res = t.session.server_resource("Subscription") or {}
    return "create" in {i.get("code") for i in res.get("interaction") or []}


def _need_support(t: TestContext) -> None:
    t.need_capability()
    if not _supported(t):
        t.not_applicable("the server does not declare Subscription create (the IG makes "
                         "Subscriptions a SHOULD)")
    if t.session.receiver is None:
        t.skip("the kit's notification receiver is not running")


def subscription_status(t: TestContext, sub_id: str) -> str:
    """The Subscription's status from `$status` or a read; "" when neither is allowed (the
    IG requires neither: read is not listed, $status is a SHOULD)."""
    resp = t.client().get(f"Subscription/{sub_id}/$status")
    body = resp.json() if resp.status == 200 else None
    if isinstance(body, dict):
        params = [r for r in bundle_resources(body, None) if r.get("resourceType") ==
                  "Parameters"] if body.get("resourceType") == "Bundle" else [body]
        for p in (params[0].get("parameter") or []) if params else []:
            if p.get("name") == "status":
                return str(p.get("valueCode", ""))
    resp = t.client().get(f"Subscription/{sub_id}")
    return str((resp.json() or {}).get("status", "")) if resp.status == 200 else ""


def _wait_status(t: TestContext, sub_id: str, wanted: str) -> str:
    deadline = time.monotonic() + t.config.wait
    while True:
        status = subscription_status(t, sub_id)
        if status in (wanted, "") or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def _events_for(notes: list[Notification], task_ref: str) -> list[Notification]:
    found = []
    for n in notes:
        if n.kind != "event-notification":
            continue
        for ev in n.params("notification-event"):
            for part in ev.get("part") or []:
                ref = (part.get("valueReference") or {}).get("reference", "")
                if part.get("name") == "focus" and ref.endswith(task_ref):
                    found.append(n)
    return found


def subscribed(t: TestContext, content: str = "id-only") -> dict[str, Any]:
    """Create a Subscription (requester filter), see it activated, then change a referral:
    the recipient accepts it. Memoized per payload type."""
    def build() -> dict[str, Any]:
        s = t.data
        receiver = t.session.receiver
        assert receiver is not None
        body = fx.subscription(receiver.url, f"Task?requester={s.orgs()['source']}", content,
                               lifetime=max(300.0, 4 * t.config.wait))
        resp = t.client("source").post("Subscription", body,
                                       headers={"Prefer": "return=representation"})
        if resp.status not in (200, 201) or not isinstance(resp.json(), dict):
            raise Prerequisite(f"creating a {content} rest-hook Subscription: {describe(resp)}")
        created = resp.json()
        sub_id = created["id"]
        s.created.append(("source", f"Subscription/{sub_id}"))
        started = time.monotonic()
        handshake = receiver.wait_for(lambda _n: [
            x for x in receiver.for_subscription(sub_id) if x.kind == "handshake"],
            t.config.wait if created.get("status") == "requested" else 2.0)
        handshake_s = time.monotonic() - started
        active = _wait_status(t, sub_id, "active")
        _sr, task = s.new_referral()
        task = s.advance("recipient", task, "accepted")
        changed = time.monotonic()
        events = receiver.wait_for(
            lambda _n: _events_for(receiver.for_subscription(sub_id), ref_of(task)),
            t.config.wait)
        return {"id": sub_id, "created": created, "handshake": handshake or [],
                "active": active, "task": task, "events": events or [],
                "timing": f"handshake {handshake_s:.1f} s after the create; the event "
                          f"{time.monotonic() - changed:.1f} s after the change"}
    return t.data._once(f"subscription-{content}", build)


def _first_event(t: TestContext, content: str = "id-only") -> tuple[dict[str, Any],
                                                                    Notification]:
    state = subscribed(t, content)
    t.require(state["events"], f"no event notification about {ref_of(state['task'])} reached "
                               f"the kit's receiver within {t.config.wait:.0f} s of the "
                               "recipient accepting it")
    return state, state["events"][0]


def _declared(t: TestContext) -> None:
    t.need_capability()
    t.check(_supported(t), "the CapabilityStatement does not declare Subscription create")


def _discovery(t: TestContext) -> None:
    _need_support(t)
    res = t.session.server_resource("Subscription") or {}
    topics = [e.get("valueCanonical") for e in res.get("extension") or []
              if e.get("url") == TOPIC_EXT]
    t.check(fx.TASK_TOPIC in [str(x).split("|")[0] for x in topics],
            f"the Subscription entry does not advertise the Gravity Task topic "
            f"({fx.TASK_TOPIC}); advertised: {topics}")


def _create(t: TestContext) -> None:
    _need_support(t)
    state = subscribed(t)
    t.note(state["timing"])
    t.check(state["created"].get("status") in ("requested", "active"),
            f"the created Subscription has status {state['created'].get('status')!r}")
    if state["active"] == "":
        t.note("the Subscription's status is not readable by its creator (no read, no "
               "$status); activation inferred from the notifications it received")
        t.check(state["events"], "the Subscription's status is not readable and no event "
                                 "notification arrived")
        return
    t.check(state["active"] == "active", f"the Subscription did not become active "
                                         f"(reads {state['active']!r})")


def _handshake(t: TestContext) -> None:
    _need_support(t)
    state = subscribed(t)
    if state["created"].get("status") == "active" and not state["handshake"]:
        t.note("the server activated the Subscription without a handshake")
        return
    t.require(state["handshake"], "no handshake reached the kit's receiver although the "
                                  "Subscription was created as 'requested'")
    hs: Notification = state["handshake"][0]
    t.check((hs.bundle or {}).get("type") == "history", "the handshake is not a history "
                                                        "Bundle")
    t.check(hs.param("status") == "requested", f"the handshake's status is "
                                               f"{hs.param('status')!r}, expected 'requested'")
    t.check(str(hs.param("topic")).split("|")[0] == fx.TASK_TOPIC,
            f"the handshake names topic {hs.param('topic')!r}")
    t.check(state["active"] in ("active", ""), "the Subscription did not become active "
                                               "after the handshake")


def _shape(t: TestContext) -> None:
    _need_support(t)
    state, event = _first_event(t)
    bundle = event.bundle or {}
    t.check(bundle.get("resourceType") == "Bundle" and bundle.get("type") == "history",
            f"the notification is a {bundle.get('resourceType')} of type "
            f"{bundle.get('type')!r}, not a history Bundle")
    status = event.status or {}
    t.require(status.get("resourceType") == "Parameters", "the first entry of the "
              "notification is not the SubscriptionStatus Parameters")
    t.check(event.subscription.endswith(f"Subscription/{state['id']}"),
            f"the notification names subscription {event.subscription!r}")
    t.check(str(event.param("topic")).split("|")[0] == fx.TASK_TOPIC,
            f"the notification names topic {event.param('topic')!r}")
    t.check(event.param("status") == "active", f"status is {event.param('status')!r}")
    parts = {p.get("name") for ev in event.params("notification-event")
             for p in ev.get("part") or []}
    t.check("event-number" in parts, "notification-event has no event-number")


def _events_since(t: TestContext) -> None:
    _need_support(t)
    state, _event = _first_event(t)
    for n in state["events"]:
        value = n.param("events-since-subscription-start")
        t.require(value is not None, "an event notification has no "
                                     "events-since-subscription-start")
        numbers = [int(p.get("valueString") or p.get("valueInteger64") or
                       p.get("valueInteger") or 0)
                   for ev in n.params("notification-event") for p in ev.get("part") or []
                   if p.get("name") == "event-number"]
        t.check(all(int(value) >= x for x in numbers),
                f"events-since-subscription-start {value} is below an event-number "
                f"{numbers}")


def _id_only(t: TestContext) -> None:
    _need_support(t)
    state, event = _first_event(t)
    entries = (event.bundle or {}).get("entry") or []
    focus = [e for e in entries[1:] if str(e.get("fullUrl", "")).endswith(
        ref_of(state["task"]))]
    t.check(focus, f"the id-only notification has no entry for {ref_of(state['task'])}")
    t.check(not any(e.get("resource") for e in entries[1:]),
            "the id-only notification carries resource bodies")
    resp = t.client("source").get("Task", params={"_id": state["task"]["id"],
                                                  "_include": "Task:focus"})
    t.check(state["task"]["id"] in {r.get("id") for r in bundle_resources(resp.json())},
            "Task?_id=<notified id>&_include=Task:focus did not return the notified Task")


def _full_resource(t: TestContext) -> None:
    _need_support(t)
    state = subscribed(t, "full-resource")
    t.require(state["events"], "no full-resource event notification arrived")
    entries = (state["events"][0].bundle or {}).get("entry") or []
    bodies = [e.get("resource") for e in entries[1:] if isinstance(e.get("resource"), dict)]
    t.check(any(b.get("resourceType") == "Task" and b.get("id") == state["task"]["id"]
                for b in bodies), "the full-resource notification does not carry the Task")


def _status_op(t: TestContext) -> None:
    _need_support(t)
    state, _event = _first_event(t)
    resp = t.client("source").get(f"Subscription/{state['id']}/$status")
    t.require(resp.status == 200, f"Subscription/{state['id']}/$status: {describe(resp)}")
    body = resp.json() or {}
    params = [r for r in bundle_resources(body, None) if r.get("resourceType") == "Parameters"] \
        if body.get("resourceType") == "Bundle" else [body]
    t.require(params, "$status returned no SubscriptionStatus Parameters")
    values = {p.get("name"): p for p in params[0].get("parameter") or []}
    t.check((values.get("type") or {}).get("valueCode") == "query-status",
            "$status: type is not query-status")
    t.check((values.get("status") or {}).get("valueCode") == "active",
            "$status: the Subscription is not reported active")
    t.check("events-since-subscription-start" in values,
            "$status: events-since-subscription-start is missing")


def _email(t: TestContext) -> None:
    _need_support(t)
    body = fx.subscription("mailto:conformance-kit@example.org",
                           f"Task?requester={t.data.orgs()['source']}", "id-only", "email")
    resp = t.client("source").post("Subscription", body)
    t.check(resp.status in (200, 201), f"an e-mail Subscription was refused: {describe(resp)}")
    created = resp.json() or {}
    if created.get("id"):
        t.data.created.append(("source", f"Subscription/{created['id']}"))


def tests(actor: str) -> list[TestCase]:
    cs = actor_spec(actor)
    sub_req = cs.requirement("Subscription", "resource")
    create = cs.requirement("Subscription", "interaction", "create")
    backport = spec("backport-notification")
    return [
        TestCase("subs.declared", "Subscription create is declared", GROUP, "SHOULD",
                 (sub_req, create), _declared),
        TestCase("subs.topic-discovery", "The Gravity Task topic is discoverable", GROUP,
                 "SHOULD", (spec("backport-topic-discovery"),), _discovery),
        TestCase("subs.create", "A rest-hook Subscription to the Task topic becomes active",
                 GROUP, "SHALL", (create, ig("task-2"), ig("task-4")), _create),
        TestCase("subs.handshake", "The handshake says status=requested, then active", GROUP,
                 "SHALL", (spec("backport-handshake"),), _handshake),
        TestCase("subs.event-notification", "A status change is notified (history Bundle, "
                 "SubscriptionStatus, event-number)", GROUP, "SHALL", (backport,), _shape),
        TestCase("subs.events-since-start", "Notifications carry "
                 "events-since-subscription-start", GROUP, "SHALL", (backport,),
                 _events_since),
        TestCase("subs.id-only", "id-only payload: the focus reference, no body; then read "
                 "by _id", GROUP, "SHALL", (ig("task-6"), spec("backport-id-only"),
                                            ig("task-7")), _id_only),
        TestCase("subs.full-resource", "full-resource payload carries the Task", GROUP, "MAY",
                 (spec("backport-full-resource"),), _full_resource),
        TestCase("subs.status-operation", "$status reports the Subscription", GROUP, "SHOULD",
                 (cs.requirement("Subscription", "operation", "status"),), _status_op),
        TestCase("subs.email-channel", "An e-mail channel Subscription is accepted", GROUP,
                 "SHALL", (ig("task-2"),), _email),
    ]
