"""Delivery worker against real loopback receivers (HTTP and SMTP), with fault injection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from subscriptions.channels import SmtpSettings
from subscriptions.event_store import load_state
from subscriptions.operations import events_operation
from subscriptions.outbox_store import remove_subscription, sync_subscription
from subscriptions.testing import HookReceiver, smtp_receiver
from subscriptions.worker import Worker, WorkerConfig
from tests.test_subscriptions_outbox import write_task
from tests.test_subscriptions_pure import BP, sub

REPO = Path(__file__).resolve().parents[1]


def fast_config(**kw) -> WorkerConfig:
    values = dict(base_url="https://fhir.example.org/fhir", poll_interval=0.02, threads=2,
                  lease_seconds=2.0, error_window=60.0, backoff_base=0.05, backoff_max=0.2)
    values.update(kw)
    return WorkerConfig(**values)


class Running:
    """A Worker running in threads for the duration of a `with` block."""

    def __init__(self, db, cfg):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=Worker(db, cfg).run, args=(self.stop,))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def wait_until(condition, timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def sub_state(database, sid):
    with database.read() as conn:
        return load_state(conn, sid)


@pytest.fixture
def receiver():
    r = HookReceiver()
    yield r
    r.stop()


@pytest.fixture
def make_sub(database):
    made = []

    def make(endpoint, org, *, max_count=None, heartbeat=None, timeout=2, **kw):
        body = sub(filters=(f"requester=Organization/{org}",), endpoint=endpoint, **kw)
        body["id"] = "s-" + uuid.uuid4().hex[:10]
        exts = [{"url": BP + "backport-timeout", "valueUnsignedInt": timeout}]
        if max_count:
            exts.append({"url": BP + "backport-max-count", "valuePositiveInt": max_count})
        if heartbeat:
            exts.append({"url": BP + "backport-heartbeat-period", "valueUnsignedInt": heartbeat})
        body["channel"]["extension"] = exts
        with database.write() as conn:
            sync_subscription(conn, body)
        made.append(body["id"])
        return body

    yield make
    with database.write() as conn:
        for sid in made:
            remove_subscription(conn, sid)


def delivered_numbers(receiver, sid):
    return [n for r in receiver.of_kind("event-notification")
            if r.param("subscription")["reference"].endswith("/" + sid) for n in r.event_numbers]


def dedup(nums):
    out = []
    for n in nums:
        if n not in out:
            out.append(n)
    return out


def status_of(db, sid):
    with db.read() as conn:
        return load_state(conn, sid).status


def test_handshake_then_ordered_batched_events_with_headers(database, receiver, make_sub):
    org = uuid.uuid4().hex[:8]
    body = make_sub(receiver.url, org, max_count=3)
    sid = body["id"]
    for i in range(7):  # recorded before activation: delivered after the handshake
        write_task(database, f"t-{org}-{i % 2}", org, ["requested", "accepted"][i % 2])
    with Running(database, fast_config()):
        assert receiver.wait_for(lambda r: len(delivered_numbers(r, sid)) >= 7)
    assert receiver.received[0].kind == "handshake"
    hs = receiver.received[0]
    assert hs.param("status") == "requested" and hs.param("events-since-subscription-start") == "7"
    assert delivered_numbers(receiver, sid) == list(range(1, 8))
    events = receiver.of_kind("event-notification")
    assert [len(r.event_numbers) for r in events] == [3, 3, 1]
    for r in receiver.received:
        assert r.headers["Authorization"] == "Bearer abc:def"
        assert r.headers["Content-Type"].startswith("application/fhir+json")
        assert all("request" in e and "response" in e for e in r.body["entry"])
    first = events[0]
    assert first.param("status") == "active"
    assert first.param("events-since-subscription-start") == "3"
    assert all("resource" not in e for e in first.body["entry"][1:])  # id-only
    assert status_of(database, sid) == "active"


def test_full_resource_payload_and_heartbeat(database, receiver, make_sub):
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org, heartbeat=1, content="full-resource")["id"]
    write_task(database, f"tf-{org}", org)
    with Running(database, fast_config()):
        assert receiver.wait_for(lambda r: delivered_numbers(r, sid) == [1])
        assert receiver.wait_for(lambda r: r.of_kind("heartbeat"), timeout=4)
    ev = receiver.of_kind("event-notification")[0]
    task_entry = [e for e in ev.body["entry"] if "/Task/" in e["fullUrl"]][0]
    assert task_entry["resource"]["id"] == f"tf-{org}"
    assert task_entry["resource"]["meta"]["versionId"] == "1"
    hb = receiver.of_kind("heartbeat")[0]
    assert hb.param("events-since-subscription-start") == "1" and len(hb.body["entry"]) == 1


def test_email_channel_via_smtp(database, make_sub):
    controller, messages = smtp_receiver()
    try:
        org = uuid.uuid4().hex[:8]
        make_sub("mailto:care-team@example.org", org, type="email")
        write_task(database, f"te-{org}", org)
        cfg = fast_config(smtp=SmtpSettings("127.0.0.1", controller.port, "fhir@example.org"))
        with Running(database, cfg):
            wait_until(lambda: len(messages) >= 2)
    finally:
        controller.stop()
    assert len(messages) == 2
    assert messages[0]["To"] == "care-team@example.org"
    assert "handshake" in messages[0]["Subject"]
    assert "event-notification" in messages[1]["Subject"]
    parts = [p for p in messages[1].walk() if p.get_content_type() == "application/fhir+json"]
    assert b'"event-notification"' in parts[0].get_payload(decode=True)


def test_receiver_down_then_back_gets_everything_in_order(database, receiver, make_sub):
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org, max_count=2)["id"]
    with Running(database, fast_config()):
        assert receiver.wait_for(lambda r: r.of_kind("handshake"))
        receiver.stop()
        for i in range(6):
            write_task(database, f"td-{org}-{i}", org)
        assert wait_until(lambda: sub_state(database, sid).attempts >= 1)
        receiver.start()
        assert receiver.wait_for(lambda r: len(dedup(delivered_numbers(r, sid))) == 6)
    nums = delivered_numbers(receiver, sid)
    assert dedup(nums) == [1, 2, 3, 4, 5, 6] and nums == sorted(nums)


def test_slow_receiver_beyond_timeout_is_retried(database, receiver, make_sub):
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org, timeout=1)["id"]
    with Running(database, fast_config()):
        assert receiver.wait_for(lambda r: r.of_kind("handshake"))
        receiver.delay = 1.5
        write_task(database, f"ts-{org}", org)
        assert wait_until(lambda: "within 1s" in (sub_state(database, sid).last_error or ""))
        assert sub_state(database, sid).delivered_through == 0
        receiver.delay = 0
        assert receiver.wait_for(lambda r: 1 in delivered_numbers(r, sid), timeout=6)
    assert status_of(database, sid) == "active"


def test_500s_until_error_then_reactivation_and_catch_up(database, receiver, make_sub):
    org = uuid.uuid4().hex[:8]
    body = make_sub(receiver.url, org, heartbeat=1)
    sid = body["id"]
    hook_calls = []
    cfg = fast_config(error_window=0.6,
                      status_hook=lambda conn, s, st, err: hook_calls.append((s, st)))
    with Running(database, cfg):
        assert receiver.wait_for(lambda r: r.of_kind("handshake"))
        receiver.status = 500
        write_task(database, f"tx-{org}", org)
        assert wait_until(lambda: status_of(database, sid) == "error", timeout=5)
        write_task(database, f"tx-{org}", org, "accepted")  # still counted while in error
        receiver.status = 200
        assert receiver.wait_for(  # heartbeats continue, carrying status=error
            lambda r: any(h.param("status") == "error" for h in r.of_kind("heartbeat")), 4)
        assert delivered_numbers(receiver, sid) == []  # never reactivates by itself
        with database.read() as conn:
            st = load_state(conn, sid)
            assert st.event_count == 2 and st.status == "error"
            missed = events_operation(conn, sid, cfg.base_url, events_since="1")
        params = missed["entry"][0]["resource"]["parameter"]
        assert [p for p in params if p["name"] == "error"]
        assert len([p for p in params if p["name"] == "notification-event"]) == 2
        with database.write() as conn:  # the client reactivates by updating it
            assert sync_subscription(conn, dict(body, status="requested")) == "requested"
        assert receiver.wait_for(lambda r: len(r.of_kind("handshake")) == 2)
        write_task(database, f"tx-{org}", org, "in-progress")
        assert receiver.wait_for(lambda r: delivered_numbers(r, sid) == [3])
    assert (sid, "active") in hook_calls and (sid, "error") in hook_calls


def _spawn_worker(url: str) -> subprocess.Popen:
    env = dict(os.environ, FHIR_SERVER_BASE_URL="https://fhir.example.org/fhir",
               FHIR_SERVER_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "subscriptions.worker", "--database-url", url,
         "--poll-interval", "0.02", "--threads", "2", "--backoff-base", "0.05",
         "--lease-seconds", "2"],
        cwd=REPO, env=env)


def _db_url(database) -> str:
    return database.url.render_as_string(hide_password=False)


def test_sigkill_mid_delivery_loses_nothing(database, receiver, make_sub):
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org, max_count=1, timeout=1)["id"]
    for i in range(12):
        write_task(database, f"tk-{org}-{i}", org)
    receiver.delay = 0.08
    proc = _spawn_worker(_db_url(database))
    try:
        assert receiver.wait_for(lambda r: len(delivered_numbers(r, sid)) >= 3, 15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        got_before = len(delivered_numbers(receiver, sid))
        assert got_before < 12
        proc = _spawn_worker(_db_url(database))
        assert receiver.wait_for(lambda r: len(dedup(delivered_numbers(r, sid))) == 12, 20)
    finally:
        proc.kill()
        proc.wait(5)
    nums = delivered_numbers(receiver, sid)
    assert dedup(nums) == list(range(1, 13)) and nums == sorted(nums)


def test_two_workers_keep_per_subscription_order(database, receiver, make_sub):
    if database.is_sqlite:
        pytest.skip("the two-worker SKIP LOCKED test runs on PostgreSQL")
    org = uuid.uuid4().hex[:8]
    sids = [make_sub(receiver.url, org, max_count=2)["id"] for _ in range(4)]
    procs = [_spawn_worker(_db_url(database)) for _ in range(2)]
    try:
        for i in range(15):
            write_task(database, f"tw-{org}-{i % 4}", org)
        assert receiver.wait_for(
            lambda r: all(len(dedup(delivered_numbers(r, s))) == 15 for s in sids), 30)
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
    for s in sids:
        nums = delivered_numbers(receiver, s)
        assert dedup(nums) == list(range(1, 16)) and nums == sorted(nums)


def focus_urls(received) -> list[str]:
    return [e["fullUrl"] for r in received for e in r.body["entry"][1:]
            if e["request"]["method"] != "GET"]


def test_full_resource_batch_sends_each_event_at_its_version(database, receiver, make_sub):
    """Three updates of one Task queued before delivery: one notification whose entries carry
    versions 1, 2 and 3 (the current one from the batched read, older ones from history)."""
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org, content="full-resource", max_count=5)["id"]
    for status in ("requested", "accepted", "in-progress"):
        write_task(database, f"tv-{org}", org, status)
    with Running(database, fast_config()):
        assert receiver.wait_for(lambda r: len(delivered_numbers(r, sid)) >= 3)
    (note,) = receiver.of_kind("event-notification")
    tasks = [e["resource"] for e in note.body["entry"][1:] if "/Task/" in e["fullUrl"]]
    assert [(t["meta"]["versionId"], t["status"]) for t in tasks] == [
        ("1", "requested"), ("2", "accepted"), ("3", "in-progress")]


def test_id_only_access_is_rechecked_at_notification_time(database, receiver, make_sub):
    """The owner's read access decides again when the notification is built: a focus it may
    no longer read keeps its event number but is not named (id-only: no body is read, the
    access check gets the resource's type and id)."""
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org)["id"]
    write_task(database, f"shown-{org}", org)
    write_task(database, f"hidden-{org}", org)
    seen: list[dict] = []

    def readable_by(_owner, resource):
        seen.append(resource)
        return not str(resource.get("id", "")).startswith("hidden-")

    with Running(database, fast_config(readable_by=readable_by)):
        assert receiver.wait_for(lambda r: len(delivered_numbers(r, sid)) >= 2)
    assert delivered_numbers(receiver, sid) == [1, 2]
    assert [u.rsplit("/", 1)[1] for u in focus_urls(receiver.of_kind("event-notification"))] \
        == [f"shown-{org}"]
    assert {"resourceType": "Task", "id": f"hidden-{org}"} in seen


def test_notify_wakes_an_idle_postgresql_worker(database, receiver, make_sub):
    """PostgreSQL: a new event wakes the worker by NOTIFY, long before its next poll."""
    if database.is_sqlite:
        pytest.skip("SQLite has no NOTIFY: its worker polls (backing off to idle_poll)")
    org = uuid.uuid4().hex[:8]
    sid = make_sub(receiver.url, org)["id"]
    with Running(database, fast_config(poll_interval=20.0, idle_poll=20.0)):
        assert receiver.wait_for(lambda r: r.of_kind("handshake"))
        time.sleep(1.0)  # the worker is now waiting for its next poll, 20 s away
        started = time.monotonic()
        write_task(database, f"tn-{org}", org)
        assert receiver.wait_for(lambda r: delivered_numbers(r, sid) == [1], timeout=5)
        assert time.monotonic() - started < 5
