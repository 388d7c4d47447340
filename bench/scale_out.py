"""Scale-out: two servers behind HAProxy and two delivery workers on one PostgreSQL.

    python -m bench.scale_out [--updates 10000] [--subs 50] [--clients 8]

Starts, on a fresh PostgreSQL database (FHIR_TEST_PG_URL; `tools/test-postgres.sh` starts a
throwaway server): two `python -m fhir_server serve` processes on different ports, HAProxy
(Debian package) round-robin in front of them, two `python -m fhir_server worker`
processes, and a loopback rest-hook receiver. Every request goes through HAProxy. Then:

1. `--subs` Subscriptions on the SDOHCC Task topic, each filtered on its own owner
   organization, and two Tasks per organization (bench/subscription_bench.py's); all
   Subscriptions active.
2. A referral journey: the example referral transaction Bundle (conditional creates) sent
   by four clients at once, then the referral Task accepted and started with If-Match.
3. Conditional creates raced: for each of 20 identifiers, four clients POST the same
   Patient with If-None-Exist at once.
4. `--updates` Task updates from `--clients` clients (each client owns its Tasks, so each
   Task's updates are in a known order).

Checks (a report, and the exit status): no notification lost (every Subscription's events
delivered), none reordered (first deliveries in event-number order), duplicates counted,
no duplicate resource (one Patient per identifier, one referral package), every update
answered 2xx. The CI test `tests/test_scale_out.py` runs the same with smaller numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import select

from bench.subscription_bench import parties, subscription, task
from fhir_server.storage.db import Database
from subscriptions.outbox_schema import delivery, registry
from subscriptions.testing import HookReceiver
from tests.processes import (
    Process,
    init_db,
    start_delivery_worker,
    start_haproxy,
    start_server,
)

ROOT = Path(__file__).resolve().parents[1]
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@dataclass
class Report:
    updates: int = 0
    update_errors: int = 0
    update_seconds: float = 0.0
    subscriptions: int = 0
    events: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    reordered: int = 0
    delivery_seconds: float = 0.0
    patients_per_identifier: dict[str, int] = field(default_factory=dict)
    referral_tasks: int = 0
    referral_patients: int = 0
    journey: list[str] = field(default_factory=list)
    requests_per_server: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.update_errors == 0 and self.lost == 0 and self.reordered == 0
                and all(n == 1 for n in self.patients_per_identifier.values())
                and self.referral_tasks == 1 and self.referral_patients == 1
                and self.journey == ["accepted", "in-progress"]
                and len(self.requests_per_server) == 2 and min(self.requests_per_server) > 0)

    def lines(self) -> list[str]:
        rate = self.updates / self.update_seconds if self.update_seconds else 0
        return [
            f"Task updates: {self.updates} in {self.update_seconds:.1f} s ({rate:.0f}/s "
            f"through HAProxy to 2 servers), {self.update_errors} errors",
            f"notifications: {self.events} events on {self.subscriptions} Subscriptions, "
            f"{self.delivered} delivered, {self.lost} lost, {self.reordered} reordered, "
            f"{self.duplicates} duplicates; all delivered {self.delivery_seconds:.1f} s after "
            "the last update",
            f"conditional creates raced: {len(self.patients_per_identifier)} identifiers, "
            f"Patients per identifier {sorted(set(self.patients_per_identifier.values()))}",
            f"referral journey: package created once (Patients {self.referral_patients}, "
            f"Tasks {self.referral_tasks}), Task moved {' -> '.join(self.journey)}",
            f"requests per server (access logs): {self.requests_per_server}",
        ]


class Cluster:
    """Two servers, HAProxy, two delivery workers and a receiver on one database."""

    def __init__(self, db_url: str, *, server_workers: int = 1, threads: int = 4) -> None:
        init_db(db_url)
        self.db_url = db_url
        self.receiver = HookReceiver()
        self.servers: list[Process] = []
        self.workers: list[Process] = []
        self.proxy: Process | None = None
        logs = Path(tempfile.mkdtemp(prefix="scale-out-"))
        self.access_logs = [logs / f"access-{i}.log" for i in range(2)]
        try:
            self.servers = [start_server(db_url, workers=server_workers, threads=threads,
                                         FHIR_SERVER_ACCESS_LOG=str(log))
                            for log in self.access_logs]
            self.proxy = start_haproxy([s.port for s in self.servers])
            self.base = f"http://127.0.0.1:{self.proxy.port}/fhir"
            self.workers = [start_delivery_worker(db_url, self.base,
                                                  FHIR_SERVER_WORKER_POLL="0.02")
                            for _ in range(2)]
        except Exception:
            self.stop()
            raise

    def requests_per_server(self) -> list[int]:
        return [len(log.read_text().splitlines()) if log.exists() else 0
                for log in self.access_logs]

    def stop(self) -> None:
        for proc in [*self.workers, *([self.proxy] if self.proxy else []), *self.servers]:
            proc.stop()
        self.receiver.stop()


def subscribe(cluster: Cluster, subs: int) -> None:
    session = requests.Session()
    for body in parties(subs):
        session.put(f"{cluster.base}/{body['resourceType']}/{body['id']}", headers=JSON,
                    timeout=60, data=json.dumps(body)).raise_for_status()
    for org in range(subs):
        resp = session.post(f"{cluster.base}/Subscription", headers=JSON, timeout=60,
                            data=json.dumps(subscription(cluster.receiver.url, org)))
        resp.raise_for_status()
        for n in range(2):
            session.put(f"{cluster.base}/Task/bench-{org}-{n}", headers=JSON, timeout=60,
                        data=json.dumps(task(org, n))).raise_for_status()
    ok = cluster.receiver.wait_for(lambda r: len(r.of_kind("handshake")) >= subs, 120)
    if not ok:
        raise RuntimeError("not every Subscription got its handshake")


def referral_journey(cluster: Cluster, report: Report, marker: str) -> None:
    """The example referral package, sent by four clients at once, then the Task moved."""
    bundle = json.loads((ROOT / "examples" / "referral-bundle-1.json").read_text())
    mrn = f"MRN-{marker}"
    ref = f"REF-{marker}"
    for entry in bundle["entry"]:
        request = entry["request"]
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["identifier"][0]["value"] = mrn
            request["ifNoneExist"] = f"identifier={resource['identifier'][0]['system']}|{mrn}"
        if resource["resourceType"] == "Task":
            resource["identifier"][0]["value"] = ref
            request["ifNoneExist"] = f"identifier={resource['identifier'][0]['system']}|{ref}"
    body = json.dumps(bundle)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: requests.post(
            cluster.base, data=body, headers=JSON, timeout=120), range(4)))
    assert all(a.status_code == 200 for a in answers), [a.text[:300] for a in answers]
    patient_system = bundle["entry"][0]["resource"]["identifier"][0]["system"]
    patients = requests.get(f"{cluster.base}/Patient?identifier={patient_system}|{mrn}",
                            timeout=60).json()
    task_system = next(e["resource"]["identifier"][0]["system"] for e in bundle["entry"]
                       if e["resource"]["resourceType"] == "Task")
    tasks = requests.get(f"{cluster.base}/Task?identifier={task_system}|{ref}",
                         timeout=60).json()
    report.referral_patients = patients.get("total", 0)
    report.referral_tasks = tasks.get("total", 0)
    if report.referral_tasks != 1:
        return
    task = tasks["entry"][0]["resource"]
    for status in ("accepted", "in-progress"):
        current = requests.get(f"{cluster.base}/Task/{task['id']}", timeout=60)
        body = dict(current.json(), status=status)
        body.pop("meta", None)
        resp = requests.put(f"{cluster.base}/Task/{task['id']}", data=json.dumps(body),
                            timeout=60, headers={**JSON, "If-Match": current.headers["ETag"]})
        if resp.status_code != 200:
            raise RuntimeError(f"journey step {status}: {resp.status_code} {resp.text[:500]}")
        report.journey.append(status)


def race_conditional_creates(cluster: Cluster, report: Report, marker: str,
                             identifiers: int = 20) -> None:
    def create(value: str) -> int:
        patient = {"resourceType": "Patient", "name": [{"family": "Race"}],
                   "identifier": [{"system": "urn:scale-out", "value": value}]}
        return requests.post(f"{cluster.base}/Patient", data=json.dumps(patient), timeout=60,
                             headers={**JSON, "If-None-Exist":
                                      f"identifier=urn:scale-out|{value}"}).status_code

    values = [f"{marker}-{i}" for i in range(identifiers)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(create, [v for v in values for _ in range(4)]))
    assert all(c in (200, 201) for c in codes), codes
    for value in values:
        found = requests.get(f"{cluster.base}/Patient?identifier=urn:scale-out|{value}",
                             timeout=60).json()
        report.patients_per_identifier[value] = found.get("total", 0)


def update_tasks(cluster: Cluster, report: Report, updates: int, subs: int,
                 clients: int) -> None:
    """`updates` PUTs; client c owns the Tasks of the organizations org % clients == c."""
    per_client = updates // clients
    errors = [0] * clients

    def client(c: int) -> None:
        session = requests.Session()
        mine = [(org, n) for org in range(subs) if org % clients == c for n in range(2)]
        for k in range(per_client):
            org, n = mine[k % len(mine)]
            resp = session.put(f"{cluster.base}/Task/bench-{org}-{n}", headers=JSON,
                               timeout=60, data=json.dumps(task(org, n)))
            if resp.status_code >= 300:
                errors[c] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.update_seconds = time.monotonic() - started
    report.updates = per_client * clients
    report.update_errors = sum(errors)


def check_delivery(cluster: Cluster, report: Report, timeout: float) -> None:
    """Wait until every Subscription's events are delivered; count losses and reorders."""
    db = Database(cluster.db_url)
    started = time.monotonic()
    try:
        while True:
            with db.read() as conn:
                rows = conn.execute(select(registry.c.sub_id, registry.c.event_count,
                                           delivery.c.delivered_through).join(
                    delivery, delivery.c.sub_id == registry.c.sub_id)).all()
            if all(r.delivered_through >= r.event_count for r in rows) or \
                    time.monotonic() - started > timeout:
                break
            time.sleep(0.2)
    finally:
        db.dispose()
    report.delivery_seconds = time.monotonic() - started
    expected = {r.sub_id: r.event_count for r in rows}
    seen: dict[str, list[int]] = defaultdict(list)
    for received in cluster.receiver.of_kind("event-notification"):
        sub_id = received.param("subscription")["reference"].rsplit("/", 1)[-1]
        seen[sub_id] += received.event_numbers
    report.subscriptions = len(expected)
    report.events = sum(expected.values())
    for sub_id, count in expected.items():
        numbers = seen.get(sub_id, [])
        first: list[int] = []
        done: set[int] = set()
        for n in numbers:
            if n not in done:
                done.add(n)
                first.append(n)
        report.delivered += len(done)
        report.duplicates += len(numbers) - len(first)
        report.lost += len(set(range(1, count + 1)) - done)
        report.reordered += sum(1 for a, b in zip(first, first[1:], strict=False) if b < a)


def run(db_url: str, *, updates: int, subs: int, clients: int,
        delivery_timeout: float = 300.0) -> Report:
    report = Report()
    marker = f"{int(time.time())}"
    cluster = Cluster(db_url)
    try:
        subscribe(cluster, subs)
        referral_journey(cluster, report, marker)
        race_conditional_creates(cluster, report, marker)
        update_tasks(cluster, report, updates, subs, clients)
        check_delivery(cluster, report, delivery_timeout)
        report.requests_per_server = cluster.requests_per_server()
    finally:
        cluster.stop()
    return report


def main() -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--subs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if not os.environ.get("FHIR_TEST_PG_URL"):
        raise SystemExit("needs FHIR_TEST_PG_URL (tools/test-postgres.sh python -m ...)")
    from tests.dbs import fresh_database_url

    url = fresh_database_url("postgresql", Path(tempfile.mkdtemp()))
    report = run(url, updates=args.updates, subs=args.subs, clients=args.clients)
    for line in report.lines():
        print(line)
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
