"""Outbox: registry sync, event recording in the write transaction, gap-free counters,
`$status` and `$events` (SQLite and, with FHIR_TEST_PG_URL, PostgreSQL)."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from fhir_server.errors import FhirError
from fhir_server.storage.repository import Repository
from subscriptions import outbox_schema as obs
from subscriptions.event_store import load_state
from subscriptions.operations import events_operation, status_operation, status_parameters
from subscriptions.outbox import record_events
from subscriptions.outbox_store import remove_subscription, sync_subscription
from subscriptions.topics import TASK_TOPIC
from tests.test_subscriptions_pure import sub, task

BASE = "https://fhir.example.org/fhir"


def new_sub(db, requester, **kw):
    body = sub(filters=(f"Task?requester=Organization/{requester}",), **kw)
    body["id"] = "s-" + uuid.uuid4().hex[:10]
    with db.write() as conn:
        status = sync_subscription(conn, body, owner=kw.get("owner_name"))
    return body, status


def write_task(db, res_id, requester, status="requested", *, readable_by=None, fail=False):
    t = task(status, requester={"reference": f"Organization/{requester}"})
    t.pop("meta")
    with db.write() as conn:
        stored, prev = Repository(conn).update(t, res_id)
        n = record_events(conn, prev.resource() if prev else None, stored.resource(),
                          "update" if prev else "create", readable_by=readable_by)
        if fail:
            raise RuntimeError("rollback")
    return n


def numbers(db, sub_id):
    with db.read() as conn:
        return list(conn.execute(select(obs.events.c.event_number).where(
            obs.events.c.sub_id == sub_id).order_by(obs.events.c.event_number)).scalars())


def test_records_only_matching_and_rolls_back(database):
    org = uuid.uuid4().hex[:8]
    body, status = new_sub(database, org)
    assert status == "requested"
    assert write_task(database, "ta-" + org, org) == 1
    assert write_task(database, "tb-" + org, "someone-else") == 0
    with pytest.raises(RuntimeError):
        write_task(database, "ta-" + org, org, "accepted", fail=True)
    assert write_task(database, "ta-" + org, org, "in-progress") == 1
    assert numbers(database, body["id"]) == [1, 2]
    with database.read() as conn:
        rows = conn.execute(select(obs.events).where(obs.events.c.sub_id == body["id"])).all()
        assert [(r.focus_type, r.focus_id, r.focus_version, r.interaction) for r in rows] == [
            ("Task", "ta-" + org, "1", "create"), ("Task", "ta-" + org, "2", "update")]
        assert load_state(conn, body["id"]).event_count == 2


def test_readable_by_is_checked_in_the_transaction(database):
    org = uuid.uuid4().hex[:8]
    body = sub(filters=(f"requester=Organization/{org}",))
    body["id"] = "s-" + uuid.uuid4().hex[:10]
    with database.write() as conn:
        sync_subscription(conn, body, owner="org:" + org)
    seen = []

    def policy(owner, resource):
        seen.append(owner)
        return resource["status"] != "accepted"

    assert write_task(database, "tr-" + org, org, readable_by=policy) == 1
    assert write_task(database, "tr-" + org, org, "accepted", readable_by=policy) == 0
    assert seen == ["org:" + org, "org:" + org]
    assert numbers(database, body["id"]) == [1]


def test_concurrent_writers_get_gap_free_numbers(database):
    org = uuid.uuid4().hex[:8]
    subs = [new_sub(database, org)[0]["id"] for _ in range(3)]
    errors = []

    def writer(i):
        try:
            for j in range(12):
                write_task(database, f"tc-{org}-{i}-{j % 3}", org, ["requested", "accepted"][j % 2])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for sid in subs:
        assert numbers(database, sid) == list(range(1, 49))


def test_sync_lifecycle_rules(database):
    org = uuid.uuid4().hex[:8]
    body, _ = new_sub(database, org)
    sid = body["id"]
    for _ in range(3):
        write_task(database, "tl-" + org, org)
    with database.write() as conn:  # server activates, then errors
        conn.execute(obs.registry.update().where(obs.registry.c.sub_id == sid)
                     .values(status="error"))
        conn.execute(obs.delivery.update().where(obs.delivery.c.sub_id == sid)
                     .values(needs_handshake=False, last_error="HTTP 500"))
    with database.write() as conn:  # the worker's own status write-back keeps error
        assert sync_subscription(conn, dict(body, status="error")) == "error"
    with database.write() as conn:  # client reactivates
        assert sync_subscription(conn, dict(body, status="active")) == "requested"
        st = load_state(conn, sid)
        assert st.needs_handshake and st.delivered_through == 3 and st.last_error is None
    with database.write() as conn:
        conn.execute(obs.registry.update().where(obs.registry.c.sub_id == sid)
                     .values(status="active"))
        assert sync_subscription(conn, dict(body, status="requested")) == "active"
        moved = dict(body, channel=dict(body["channel"], endpoint="https://other.example/h"))
        assert sync_subscription(conn, moved) == "requested"
        assert sync_subscription(conn, dict(moved, status="off")) == "off"
    assert write_task(database, "tl-" + org, org) == 0  # off: not counted
    with database.write() as conn:
        remove_subscription(conn, sid)
        assert load_state(conn, sid) is None


def test_status_and_events_operations(database):
    org = uuid.uuid4().hex[:8]
    body, _ = new_sub(database, org)
    sid = body["id"]
    for i in range(5):
        write_task(database, f"to-{org}-{i}", org)
    with database.read() as conn:
        params = status_parameters(conn, sid, BASE)
        p = {x["name"]: x for x in params["parameter"]}
        assert p["type"]["valueCode"] == "query-status"
        assert p["status"]["valueCode"] == "requested"
        assert p["events-since-subscription-start"]["valueString"] == "5"
        assert p["subscription"]["valueReference"]["reference"] == f"{BASE}/Subscription/{sid}"
        bundle = status_operation(conn, BASE, ids=[sid, "nope"])
        assert bundle["type"] == "searchset" and bundle["total"] == 1
        with pytest.raises(FhirError) as info:
            status_operation(conn, BASE, ids=["missing"])
        assert info.value.status == 404
        ev = events_operation(conn, sid, BASE, events_since="2", events_until="4")
        assert ev["type"] == "history"
        ps = ev["entry"][0]["resource"]["parameter"]
        assert [x for x in ps if x["name"] == "type"][0]["valueCode"] == "query-event"
        nums = [int(part["valueString"]) for x in ps if x["name"] == "notification-event"
                for part in x["part"] if part["name"] == "event-number"]
        assert nums == [2, 3, 4]
        assert [e["fullUrl"] for e in ev["entry"] if "/Task/" in e["fullUrl"]] == [
            f"{BASE}/Task/to-{org}-{i}" for i in (1, 2, 3)]
        assert {e["fullUrl"] for e in ev["entry"][1:]} >= {f"{BASE}/ServiceRequest/sr1"}
        empty = events_operation(conn, sid, BASE, content="empty")
        assert len(empty["entry"]) == 1
        with pytest.raises(FhirError):
            events_operation(conn, sid, BASE, events_since="x")
    assert TASK_TOPIC in {x["valueCanonical"] for x in ps if x["name"] == "topic"}
