"""Delivery recovery: a killed delivery worker's Subscriptions are picked up by another
worker within 10 s (heartbeated leases, production default lease), and only the batch that
was in flight is sent twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from sqlalchemy import select

from subscriptions.outbox_schema import delivery
from tests.test_subscriptions_delivery import (  # noqa: F401 - fixtures
    REPO,
    _db_url,
    dedup,
    delivered_numbers,
    make_sub,
    receiver,
)
from tests.test_subscriptions_outbox import write_task

PICKUP_LIMIT = 10.0


def _worker(url: str) -> subprocess.Popen:
    """A delivery worker with production lease settings (6 s, heartbeat every 2 s)."""
    env = dict(os.environ, FHIR_SERVER_BASE_URL="https://fhir.example.org/fhir",
               FHIR_SERVER_LOG_LEVEL="WARNING")
    env.pop("FHIR_SERVER_WORKER_LEASE_SECONDS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "subscriptions.worker", "--database-url", url,
         "--poll-interval", "0.05", "--threads", "4", "--backoff-base", "0.05"],
        cwd=REPO, env=env)


def _held_by(database, pid: int) -> set[str]:
    """Subscriptions whose lease a worker process holds now."""
    with database.read() as conn:
        rows = conn.execute(select(delivery.c.sub_id, delivery.c.lease_owner,
                                   delivery.c.lease_until)).all()
    now = time.time() * 1_000_000
    return {r.sub_id for r in rows
            if r.lease_owner and r.lease_owner.startswith(f"{pid}-") and r.lease_until > now}


def test_killed_worker_subscriptions_picked_up_within_10s(database, receiver, make_sub):  # noqa: F811
    org = uuid.uuid4().hex[:8]
    batch = 2
    sids = [make_sub(receiver.url, org, max_count=batch, timeout=5)["id"] for _ in range(6)]
    events = 12
    receiver.delay = 0.25  # keeps batches in flight when the worker dies
    workers = [_worker(_db_url(database)), _worker(_db_url(database))]
    try:
        for i in range(events):  # every Subscription matches every write: one event each
            write_task(database, f"kr-{org}-{i}", org)
        deadline = time.monotonic() + 60
        held: set[str] = set()
        while time.monotonic() < deadline and not held:
            if sum(len(delivered_numbers(receiver, s)) for s in sids) >= 6:
                # the victim: a worker holding leases with deliveries under way
                victim = next((w for w in workers if _held_by(database, w.pid)), None)
                held = _held_by(database, victim.pid) if victim else set()
            time.sleep(0.05)
        assert held, "no worker held a lease"
        received_before = {s: len(receiver.received) for s in held}
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        pickup: dict[str, float] = {}
        while time.monotonic() - killed_at < 30 and len(pickup) < len(held):
            for sid in held - set(pickup):
                later = receiver.received[received_before[sid]:]
                if any(r.kind == "event-notification"
                       and r.param("subscription")["reference"].endswith("/" + sid)
                       for r in later):
                    pickup[sid] = time.monotonic() - killed_at
            time.sleep(0.05)
        assert set(pickup) == held
        assert max(pickup.values()) <= PICKUP_LIMIT, pickup
        print(f"picked up {len(held)} Subscriptions after {max(pickup.values()):.1f} s")
        total = len(sids) * events
        assert receiver.wait_for(lambda r: sum(
            len(dedup(delivered_numbers(r, s))) for s in sids) == total, 60)
    finally:
        for proc in workers:
            proc.kill()
            proc.wait(5)
    for sid in sids:
        nums = delivered_numbers(receiver, sid)
        # first deliveries in event order: nothing lost, nothing reordered
        assert dedup(nums) == list(range(1, events + 1)), nums
        duplicates = len(nums) - events
        # only the batch that was in flight when the worker died is sent again
        assert duplicates <= (batch if sid in held else 0), (sid, nums)
