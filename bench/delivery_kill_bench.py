"""Delivery under repeated SIGKILLs: duplicates per 1,000 notifications and pickup time.

    python -m bench.delivery_kill_bench [--seconds 90] [--kill-every 8] [--subs 20]
                                        [--backend postgresql|sqlite]

Two delivery worker processes (`python -m subscriptions.worker`, production lease settings)
share one database; a writer records Task events for `--subs` Subscriptions (batches of up
to 5 events) while a loopback receiver takes notifications with a little delay. Every
`--kill-every` seconds the worker holding the most leases gets SIGKILL and a new one is
started. Reported: notifications, duplicates per 1,000, lost events (must be 0), and per
kill the time until the killed worker's Subscriptions were delivered to again.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from fhir_server.storage.db import Database
from fhir_server.storage.migrate import upgrade
from subscriptions.outbox import sync_subscription
from subscriptions.outbox_schema import delivery, registry
from subscriptions.testing import HookReceiver
from tests.dbs import fresh_database_url
from tests.test_subscriptions_outbox import write_task
from tests.test_subscriptions_pure import BP, sub

ROOT = Path(__file__).resolve().parents[1]


def _worker(url: str) -> subprocess.Popen:
    env = dict(os.environ, FHIR_SERVER_BASE_URL="https://fhir.example.org/fhir",
               FHIR_SERVER_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "subscriptions.worker", "--database-url",
                             url, "--poll-interval", "0.05", "--threads", "4"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _leases(db: Database) -> dict[str, set[str]]:
    now = time.time() * 1_000_000
    with db.read() as conn:
        rows = conn.execute(select(delivery.c.sub_id, delivery.c.lease_owner,
                                   delivery.c.lease_until)).all()
    out: dict[str, set[str]] = {}
    for r in rows:
        if r.lease_owner and r.lease_until > now:
            out.setdefault(r.lease_owner.split("-")[0], set()).add(r.sub_id)
    return out


def _deliveries(receiver: HookReceiver) -> list[tuple[str, list[int], float]]:
    return [(r.param("subscription")["reference"].rsplit("/", 1)[-1], r.event_numbers, r.at)
            for r in receiver.of_kind("event-notification")]


def run(url: str, seconds: float, kill_every: float, subs: int) -> dict:
    db = Database(url)
    upgrade(db)
    receiver = HookReceiver()
    receiver.delay = 0.03
    org = uuid.uuid4().hex[:8]
    sids = []
    for i in range(subs):
        body = sub(filters=(f"requester=Organization/{org}-{i}",), endpoint=receiver.url)
        body["id"] = f"kill-{org}-{i}"
        body["channel"]["extension"] = [
            {"url": BP + "backport-timeout", "valueUnsignedInt": 5},
            {"url": BP + "backport-max-count", "valuePositiveInt": 5}]
        with db.write() as conn:
            sync_subscription(conn, body)
        sids.append(body["id"])
    workers = [_worker(url), _worker(url)]
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            write_task(db, f"kt-{org}-{n % 50}", f"{org}-{n % subs}")
            n += 1
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    kills: list[dict] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            time.sleep(kill_every)
            leases = _leases(db)
            victim = max(workers, key=lambda w: len(leases.get(str(w.pid), ())))
            held = leases.get(str(victim.pid), set())
            killed_at = time.time()
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            workers[workers.index(victim)] = _worker(url)
            kills.append({"at": killed_at, "held": held})
        stop.set()
        thread.join()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with db.read() as conn:
                rows = conn.execute(select(registry.c.sub_id, registry.c.event_count,
                                           delivery.c.delivered_through).join(
                    delivery, delivery.c.sub_id == registry.c.sub_id)).all()
            if all(r.delivered_through >= r.event_count for r in rows):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.kill()
            w.wait(10)
        receiver.stop()
        db.dispose()
    got = _deliveries(receiver)
    expected = {r.sub_id: r.event_count for r in rows}
    delivered = duplicates = lost = 0
    for sid, count in expected.items():
        numbers = [n for s, nums, _at in got if s == sid for n in nums]
        unique = set(numbers)
        delivered += len(unique)
        duplicates += len(numbers) - len(unique)
        lost += len(set(range(1, count + 1)) - unique)
    pickups = []
    for kill in kills:
        later = [at for s, _n, at in got if s in kill["held"] and at > kill["at"]]
        if kill["held"] and later:
            pickups.append(min(later) - kill["at"])
    notifications = sum(len(nums) for _s, nums, _at in got)
    return {"kills": len(kills), "events": sum(expected.values()), "delivered": delivered,
            "notified_events": notifications, "duplicates": duplicates, "lost": lost,
            "duplicates_per_1000": 1000 * duplicates / max(notifications, 1),
            "pickup_max_s": max(pickups, default=0.0),
            "pickup_mean_s": sum(pickups) / len(pickups) if pickups else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--kill-every", type=float, default=8)
    parser.add_argument("--subs", type=int, default=20)
    parser.add_argument("--backend", default="postgresql" if os.environ.get(
        "FHIR_TEST_PG_URL") else "sqlite")
    args = parser.parse_args()
    url = fresh_database_url(args.backend, Path(tempfile.mkdtemp()))
    result = run(url, args.seconds, args.kill_every, args.subs)
    print(f"{args.backend}: {result['kills']} SIGKILLs in {args.seconds:.0f} s; "
          f"{result['events']} events, {result['delivered']} delivered, {result['lost']} lost; "
          f"{result['notified_events']} event notifications with {result['duplicates']} "
          f"duplicates = {result['duplicates_per_1000']:.1f} per 1,000; pickup after a kill "
          f"mean {result['pickup_mean_s']:.1f} s, max {result['pickup_max_s']:.1f} s")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
