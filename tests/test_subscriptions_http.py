"""Subscriptions end to end over HTTP: REST writes -> outbox -> `python -m fhir_server worker`
(run in a thread against the same database) -> a real loopback rest-hook receiver."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_server.config import Settings
from subscriptions.testing import HookReceiver, Received
from subscriptions.topics import (
    BACKPORT_SUBSCRIPTION_PROFILE,
    REFERRAL_RECEIVED_TOPIC,
    SAFETY_FLAG_TOPIC,
    SERVICEREQUEST_TOPIC,
    STALLED_TOPIC,
    TASK_TOPIC,
    TOPIC_CANONICAL_EXT,
)
from tests.samples import sample
from tests.snapshot import db_snapshot

pytestmark = pytest.mark.usefixtures("sample_world")

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC_CODE = "http://hl7.org/fhir/fhir-types|SubscriptionTopic"
WAIT = 15.0


@pytest.fixture(scope="module")
def worker(server) -> Iterator[None]:
    """`python -m fhir_server worker` (fhir_server.worker.run) in a thread, tuned for tests."""
    from fhir_server.worker import run

    settings = Settings.from_env(
        database_url=server.database.url.render_as_string(hide_password=False),
        base_url=server.base, auth_mode="off")
    stop = threading.Event()
    overrides = {"poll_interval": 0.02, "threads": 2, "lease_seconds": 2.0,
                 "error_window": 0.3, "backoff_base": 0.05, "backoff_max": 0.1}
    thread = threading.Thread(target=run, args=(settings,), daemon=True,
                              kwargs={"sweep_interval": 3600.0, "stop": stop,
                                      "overrides": overrides})
    thread.start()
    yield
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def receiver() -> Iterator[HookReceiver]:
    r = HookReceiver()
    yield r
    r.stop()


@pytest.fixture
def plain_http_full_resource(server) -> Iterator[None]:
    """Allow full-resource payloads to the plain-http loopback receiver (development setting)."""
    services = server.app.extensions["fhir_services"]
    saved = services.settings
    services.settings = dataclasses.replace(saved, allow_plain_http_full_resource=True)
    yield
    services.settings = saved


def subscription(endpoint: str, org: str, *, content: str = "id-only",
                 filters: tuple[str, ...] | None = None, **channel: Any) -> dict[str, Any]:
    """A backport Subscription to the Task topic filtered on the Task owner."""
    flt = filters if filters is not None else (f"Task?owner=Organization/{org}",)
    body: dict[str, Any] = {
        "resourceType": "Subscription", "status": "requested", "reason": "referral updates",
        "criteria": TASK_TOPIC,
        "_criteria": {"extension": [{"url": BP + "backport-filter-criteria", "valueString": f}
                                    for f in flt]},
        "channel": {"type": "rest-hook", "endpoint": endpoint,
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BP + "backport-payload-content",
                                                "valueCode": content}]},
                    "extension": [{"url": BP + "backport-timeout", "valueUnsignedInt": 2}]},
        "meta": {"profile": [BACKPORT_SUBSCRIPTION_PROFILE]},
    }
    body["channel"].update(channel)
    return body


def task(org: str, **changes: Any) -> dict[str, Any]:
    """A non-referral Task owned by Organization/<org> (updates need no If-Match)."""
    return sample("Task", owner={"reference": f"Organization/{org}"}, **changes)


def ensure_org(server, org: str) -> None:
    """Organization/<org> exists (Tasks owned by it may then reference it)."""
    resp = server.put(f"Organization/{org}", sample("Organization", id=org, name=f"Org {org}"))
    assert resp.status_code in (200, 201), resp.text


def create_active(server, receiver: HookReceiver, org: str, **kw: Any) -> dict[str, Any]:
    """POST a Subscription, wait for its handshake and for `active`; return the stored body."""
    ensure_org(server, org)
    resp = server.post("Subscription", subscription(receiver.url, org, **kw))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "requested"
    sid = created["id"]
    assert receiver.wait_for(lambda r: any(
        x.kind == "handshake" and x.param("subscription")["reference"].endswith(
            f"Subscription/{sid}") for x in r.received), WAIT)
    assert wait_status(server, sid, "active")
    return created


def wait_status(server, sid: str, status: str, timeout: float = WAIT) -> bool:
    """Poll GET Subscription/<sid> until its status is `status`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.get(f"Subscription/{sid}").json()["status"] == status:
            return True
        time.sleep(0.05)
    return False


def events_of(receiver: HookReceiver) -> list[Received]:
    return receiver.of_kind("event-notification")


def all_numbers(receiver: HookReceiver) -> list[int]:
    return [n for r in events_of(receiver) for n in r.event_numbers]


def bundle_numbers(bundle: dict[str, Any]) -> list[int]:
    """Event numbers in a notification / $events Bundle."""
    return [int(part["valueString"]) for p in bundle["entry"][0]["resource"]["parameter"]
            if p["name"] == "notification-event"
            for part in p["part"] if part["name"] == "event-number"]


def focus_refs(notification: Received) -> list[str]:
    return [part["valueReference"]["reference"]
            for p in notification.status_parameters["parameter"]
            if p["name"] == "notification-event"
            for part in p["part"] if part["name"] == "focus"]


# ---- discovery --------------------------------------------------------------------------

def test_topics_are_searchable_and_advertised(server):
    bundle = server.get(f"Basic?code={TOPIC_CODE}").json()
    urls = {e["valueUri"] for entry in bundle["entry"] for e in entry["resource"]["extension"]
            if e["url"].endswith("SubscriptionTopic.url")}
    assert urls == {TASK_TOPIC, SERVICEREQUEST_TOPIC, STALLED_TOPIC, SAFETY_FLAG_TOPIC,
                    REFERRAL_RECEIVED_TOPIC}
    # the raw session: schema-checking the whole CapabilityStatement takes seconds (other
    # suites check it); here only the Subscription entry matters
    cap = server.session.get(f"{server.base}/metadata").json()
    res = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Subscription")
    assert BACKPORT_SUBSCRIPTION_PROFILE in res["supportedProfile"]
    advertised = {e["valueCanonical"] for e in res["extension"]
                  if e["url"] == TOPIC_CANONICAL_EXT}
    assert advertised == urls
    ops = {o["name"] for o in res.get("operation", [])}
    assert {"status", "events"} <= ops


# ---- rejections -------------------------------------------------------------------------

def _unknown_topic(s: dict) -> None:
    s["criteria"] = "http://example.org/SubscriptionTopic/nope"


def _unknown_filter(s: dict) -> None:
    s["_criteria"]["extension"][0]["valueString"] = "Task?patient=Patient/p1"


def _ftp_endpoint(s: dict) -> None:
    s["channel"]["endpoint"] = "ftp://127.0.0.1/hook"


def _csv_payload(s: dict) -> None:
    s["channel"]["payload"] = "text/csv"


def _plain_http_full(s: dict) -> None:
    s["channel"]["_payload"]["extension"][0]["valueCode"] = "full-resource"


@pytest.mark.parametrize("mutate, expression", [
    (_unknown_topic, "Subscription.criteria"),
    (_unknown_filter, "Subscription._criteria.extension[0]"),
    (_ftp_endpoint, "Subscription.channel.endpoint"),
    (_csv_payload, "Subscription.channel.payload"),
    (_plain_http_full, "Subscription.channel.payload"),
])
def test_invalid_subscriptions_are_refused_and_nothing_is_stored(server, mutate, expression):
    body = subscription("http://127.0.0.1:9/hook", "o-invalid")
    mutate(body)
    before = db_snapshot(server.database)
    put_id = "bad-" + uuid.uuid4().hex[:8]
    for resp in (server.post("Subscription", body),
                 server.put(f"Subscription/{put_id}", dict(body, id=put_id))):
        assert 400 <= resp.status_code < 500 and resp.status_code != 404, resp.text
        issue = resp.json()["issue"][0]
        assert issue["expression"] == [expression], issue
    assert db_snapshot(server.database) == before


# ---- the lifecycle ---------------------------------------------------------------------

def test_every_rest_write_notifies_in_order(server, worker, receiver):
    org = "o-" + uuid.uuid4().hex[:8]
    sub = create_active(server, receiver, org)
    sid = sub["id"]
    handshake = receiver.of_kind("handshake")[0]
    assert handshake.param("status") == "requested"
    assert handshake.headers["Content-Type"] == "application/fhir+json"

    ensure_org(server, "someone-else")
    created = server.post("Task", task(org)).json()
    tid = created["id"]
    server.put(f"Task/{tid}", dict(created, status="accepted"))
    server.patch(f"Task/{tid}", [{"op": "replace", "path": "/status", "value": "in-progress"}])
    other = server.post("Task", task("someone-else")).json()  # filtered out
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": task(org),
         "request": {"method": "POST", "url": "Task"}},
        {"resource": dict(task(org, status="completed"), id=tid),
         "request": {"method": "PUT", "url": f"Task/{tid}"}},
        {"resource": dict(task(org), id=other["id"]),  # moves into the filter
         "request": {"method": "PUT", "url": f"Task/{other['id']}"}},
    ]}
    resp = server.post("", bundle)
    assert resp.status_code == 200, resp.text
    new_tid = resp.json()["entry"][0]["response"]["location"].split("/")[1]
    server.delete(f"Task/{tid}")

    assert receiver.wait_for(lambda r: len(all_numbers(r)) >= 7, WAIT), all_numbers(receiver)
    assert all_numbers(receiver) == list(range(1, 8))  # gap-free, in order, no duplicates
    focus = [ref.split("/fhir/")[1] for n in events_of(receiver) for ref in focus_refs(n)]
    assert focus == [f"Task/{tid}"] * 3 + [f"Task/{new_tid}", f"Task/{tid}",
                                           f"Task/{other['id']}", f"Task/{tid}"]
    entries = [e for n in events_of(receiver) for e in n.body["entry"][1:]]
    assert all("resource" not in e for e in entries)  # id-only
    context = {e["request"]["url"] for e in entries if e["request"]["method"] == "GET"}
    assert context == {"Consent/c1", "Patient/p1"}  # the topic's notificationShape includes
    methods = [(e["request"]["method"], e["response"]["etag"]) for e in entries
               if e["request"]["method"] != "GET" and e["fullUrl"].endswith(tid)]
    assert methods == [("POST", 'W/"1"'), ("PUT", 'W/"2"'), ("PUT", 'W/"3"'), ("PUT", 'W/"4"'),
                       ("DELETE", 'W/"5"')]
    assert receiver.received[-1].param("status") == "active"
    assert receiver.received[-1].param("events-since-subscription-start") == "7"

    status = server.get(f"Subscription/{sid}/$status").json()
    assert status["type"] == "searchset" and status["total"] == 1
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "active"
    assert params["type"]["valueCode"] == "query-status"
    assert params["events-since-subscription-start"]["valueString"] == "7"

    page = server.get(f"Subscription/{sid}/$events?eventsSinceNumber=2&eventsUntilNumber=4")
    page = page.json()
    assert bundle_numbers(page) == [2, 3, 4]
    assert page["entry"][0]["resource"]["parameter"][3]["valueCode"] == "query-event"
    posted = server.post(f"Subscription/{sid}/$events", {
        "resourceType": "Parameters",
        "parameter": [{"name": "eventsSinceNumber", "valueString": "7"}]}).json()
    assert bundle_numbers(posted) == [7]
    bad = server.get(f"Subscription/{sid}/$events?eventsSinceNumber=x")
    assert bad.status_code == 400
    assert server.get("Subscription/nope/$events").status_code == 404


def test_type_level_status_lists_subscriptions(server, worker, receiver):
    org = "o-" + uuid.uuid4().hex[:8]
    first = create_active(server, receiver, org)["id"]
    second = create_active(server, receiver, org + "b")["id"]
    bundle = server.get(f"Subscription/$status?id={first},{second}").json()
    refs = sorted(e["resource"]["parameter"][0]["valueReference"]["reference"]
                  for e in bundle["entry"])
    assert [r.rsplit("/", 1)[1] for r in refs] == sorted([first, second])
    active = server.get("Subscription/$status?status=active").json()
    assert {first, second} <= {e["resource"]["parameter"][0]["valueReference"]["reference"]
                               .rsplit("/", 1)[1] for e in active["entry"]}
    posted = server.post("Subscription/$status", {"resourceType": "Parameters", "parameter": [
        {"name": "id", "valueString": first}]}).json()
    assert posted["total"] == 1
    assert server.get("Subscription/unknown/$status").status_code == 404


def test_full_resource_payload(server, worker, receiver, plain_http_full_resource):
    org = "o-" + uuid.uuid4().hex[:8]
    create_active(server, receiver, org, content="full-resource")
    created = server.post("Task", task(org)).json()
    updated = server.put(f"Task/{created['id']}", dict(created, status="accepted")).json()
    assert receiver.wait_for(lambda r: len(all_numbers(r)) >= 2, WAIT)
    bodies = [e["resource"] for n in events_of(receiver) for e in n.body["entry"][1:]
              if e["request"]["method"] != "GET"]
    assert [b["meta"]["versionId"] for b in bodies] == ["1", "2"]
    assert bodies[0] == created and bodies[1] == updated


def test_receiver_error_then_client_reactivates(server, worker, receiver):
    org = "o-" + uuid.uuid4().hex[:8]
    sid = create_active(server, receiver, org)["id"]
    receiver.status = 500
    server.post("Task", task(org))
    assert wait_status(server, sid, "error")
    errored = server.get(f"Subscription/{sid}").json()
    assert "HTTP 500" in errored["error"]
    status = server.get(f"Subscription/{sid}/$status").json()["entry"][0]["resource"]
    assert any(p["name"] == "error" for p in status["parameter"])

    receiver.status = 200
    resp = server.put(f"Subscription/{sid}", dict(errored, status="requested"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "requested"
    assert receiver.wait_for(lambda r: len(r.of_kind("handshake")) >= 2, WAIT)
    assert wait_status(server, sid, "active")
    server.post("Task", task(org))
    assert receiver.wait_for(lambda r: len(all_numbers(r)) >= 1, WAIT)
    assert all_numbers(receiver) == [2]  # event 1 is skipped (the client uses $events)
    missed = server.get(f"Subscription/{sid}/$events?eventsSinceNumber=1").json()
    assert bundle_numbers(missed) == [1, 2]


def test_only_readable_resources_notify(server, worker, receiver):
    """The auth layer's `readable_by(owner, resource)` decides; here a policy that hides Tasks
    whose description says 'confidential' stands in for it."""
    services = server.app.extensions["fhir_services"]
    saved = services.readable_by
    services.readable_by = lambda _owner, res: "confidential" not in res.get("description", "")
    try:
        org = "o-" + uuid.uuid4().hex[:8]
        sid = create_active(server, receiver, org)["id"]
        hidden = server.post("Task", task(org, description="confidential")).json()
        shown = server.post("Task", task(org, description="routine")).json()
        assert receiver.wait_for(lambda r: len(all_numbers(r)) >= 1, WAIT)
    finally:
        services.readable_by = saved
    assert all_numbers(receiver) == [1]
    assert [ref.rsplit("/", 1)[1] for n in events_of(receiver) for ref in focus_refs(n)] == [
        shown["id"]]
    assert hidden["id"] not in str(server.get(f"Subscription/{sid}/$events").json())


def test_filter_kinds_select_the_right_subscriptions(server, receiver):
    """Reference (typed and bare id), token (code, system-only, :not) and ANDed filters, as
    the write path's candidate index must honour them."""
    org = "o-" + uuid.uuid4().hex[:8]
    system_only = "http://hl7.org/fhir/CodeSystem/task-code|"
    cases = {
        "bare-id": ((f"Task?owner={org}",), 2),
        "and": ((f"Task?owner=Organization/{org}&status=completed",), 1),
        "not": ((f"Task?status:not=completed&owner=Organization/{org}",), 1),
        "system": ((f"Task?code={system_only}&requester=Organization/{org}",), 2),
        "code": ((f"Task?code=approve&requester=Organization/{org}",), 2),
        "two-exts": ((f"Task?owner=Organization/{org}", "Task?owner=Organization/x"), 0),
    }
    ensure_org(server, org)
    ensure_org(server, "elsewhere")
    ids = {}
    for name, (filters, _n) in cases.items():
        resp = server.post("Subscription", subscription(receiver.url, org, filters=filters))
        assert resp.status_code == 201, resp.text
        ids[name] = resp.json()["id"]
    mine = {"requester": {"reference": f"Organization/{org}"}}
    server.post("Task", task(org, **mine))
    server.post("Task", task(org, status="completed", **mine))
    server.post("Task", task("elsewhere"))
    bundle = server.get("Subscription/$status?id=" + ",".join(ids.values())).json()
    counts = {}
    for entry in bundle["entry"]:
        params = {p["name"]: p for p in entry["resource"]["parameter"]}
        sid = params["subscription"]["valueReference"]["reference"].rsplit("/", 1)[1]
        counts[sid] = int(params["events-since-subscription-start"]["valueString"])
    assert {name: counts[sid] for name, sid in ids.items()} == {
        name: n for name, (_f, n) in cases.items()}
    for sid in ids.values():
        assert server.delete(f"Subscription/{sid}").status_code == 200
