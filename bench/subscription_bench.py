"""Subscription delivery under load, through the real server and the real worker process.

    python -m bench.subscription_bench [--subs 100] [--rate 50] [--seconds 60]
                                       [--burst-seconds 10] [--rounds 3] [--idle-seconds 60]
                                       [--backends sqlite,postgresql]

Per backend, on a fresh database: `python -m fhir_server serve` (gunicorn) and, once the
Subscriptions exist, `python -m fhir_server worker` as a subprocess; a loopback rest-hook
receiver (subscriptions.testing.HookReceiver) in this process.

1. Write throughput without Subscriptions: closed-loop Task PUTs from `--clients` clients.
2. `--subs` Subscriptions to the SDOHCC Task topic, each filtered on its own owner
   organization (so every Task update notifies exactly one Subscription); wait until all
   are `active` (handshakes delivered).
3. Paced Task PUTs at `--rate`/s for `--seconds` (open loop). Notification latency is
   receipt time minus the event timestamp (taken inside the write transaction, before commit,
   so it bounds commit-to-receipt from above). Delivered/expected counts unique
   (Subscription, event number) pairs; duplicates are pairs received more than once; gaps are
   missing event numbers.
4. Write throughput with the Subscriptions active and the worker delivering, in `--rounds`
   interleaved with rounds where the same Subscriptions are switched off in the registry (as
   `sync_subscription` does for status `off`; the write path still evaluates the topics):
   the ratio compares neighbouring bursts, so load from other processes on the machine
   skews it less. The burst before any Subscription existed is reported as well.
5. The idle worker: its CPU time over `--idle-seconds` with nothing to deliver (the 100
   Subscriptions still active), as a percentage of one core.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from bench.harness import (
    ROOT,
    database_url,
    json_request,
    percentile,
    run_clients,
    start_fhir_server,
    summarise,
)
from subscriptions.testing import HookReceiver

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
TASKS_PER_ORG = 2


def task(org: int, n: int = 0) -> dict:
    """A non-referral Task (code `approve`: updates need no If-Match) owned by org-<org>."""
    return {"resourceType": "Task", "id": f"bench-{org}-{n}", "status": "in-progress",
            "intent": "order", "description": f"bench update {time.time_ns()}",
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "approve"}]},
            "for": {"reference": "Patient/bench"},
            "requester": {"reference": "Organization/bench-clinic"},
            "owner": {"reference": f"Organization/org-{org}"}}


def parties(orgs: int) -> list[dict]:
    """The Patient and Organizations the bench Tasks reference (a write may only reference
    what exists on the server)."""
    patient = {"resourceType": "Patient", "id": "bench", "name": [{"family": "Bench"}]}
    return [patient] + [{"resourceType": "Organization", "id": oid, "name": oid}
                        for oid in ["bench-clinic", *(f"org-{n}" for n in range(orgs))]]


def subscription(endpoint: str, org: int) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench",
            "criteria": TASK_TOPIC,
            "_criteria": {"extension": [{"url": BP + "backport-filter-criteria",
                                         "valueString": f"Task?owner=Organization/org-{org}"}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint,
                        "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BP + "backport-payload-content",
                                                    "valueCode": "id-only"}]},
                        "extension": [{"url": BP + "backport-timeout",
                                       "valueUnsignedInt": 10}]}}


def _instant_s(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# -- load generators ------------------------------------------------------------------

def _put_loop(port: int, deadline: float, n_threads: int, orgs: int) -> tuple[list[float], int]:
    """Closed loop: each thread PUTs Tasks round-robin until the deadline."""
    lat: list[float] = []
    errs = [0]

    def loop(seed: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = seed
        while time.time() < deadline:
            org, n = i % orgs, (i // orgs) % TASKS_PER_ORG
            body = task(org, n)
            t0 = time.perf_counter()
            status, _p, _h = json_request(conn, "PUT", f"/fhir/Task/{body['id']}", body,
                                          {"Prefer": "return=minimal"})
            lat.append((time.perf_counter() - t0) * 1000)
            if status >= 400:
                errs[0] += 1
            i += 7919  # a prime stride spreads threads over orgs
    threads = [threading.Thread(target=loop, args=(os.getpid() * 31 + k,))
               for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errs[0]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def _pids(root: int) -> list[int]:
    """`root` and its descendants."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def _postgres_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def burst(port: int, seconds: float, clients: int, orgs: int,
          groups: dict[str, Callable[[], list[int]]] | None = None) -> dict:
    """Closed-loop write throughput (Task PUTs) from `clients` clients; with `groups`, also
    the CPU cores each process group used meanwhile (cpu_cores)."""
    groups = groups or {}
    before = {name: _cpu_seconds(pids()) for name, pids in groups.items()}
    lat, errors, elapsed = run_clients(partial(_put_loop, orgs=orgs), clients, seconds, port)
    row = summarise("task-put", lat, elapsed, errors)
    if groups:
        row["cpu_cores"] = {name: round((_cpu_seconds(pids()) - before[name]) / elapsed, 2)
                            for name, pids in groups.items()}
    return row


def paced(port: int, rate: float, seconds: float, orgs: int, senders: int = 16) -> dict:
    """Open loop: one Task PUT every 1/rate s; returns write stats and counts per org."""
    jobs: queue.Queue = queue.Queue()
    lat: list[float] = []
    ok_per_org = [0] * orgs
    errors = [0]
    lock = threading.Lock()

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            job = jobs.get()
            if job is None:
                return
            org, n = job
            body = task(org, n)
            t0 = time.perf_counter()
            try:
                status, _p, _h = json_request(conn, "PUT", f"/fhir/Task/{body['id']}", body,
                                              {"Prefer": "return=minimal"})
            except OSError:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 599
            with lock:
                lat.append((time.perf_counter() - t0) * 1000)
                if status < 300:
                    ok_per_org[org] += 1
                else:
                    errors[0] += 1

    pool = [threading.Thread(target=sender) for _ in range(senders)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i % orgs, (i // orgs) % TASKS_PER_ORG))
    for _ in pool:
        jobs.put(None)
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    row = summarise("paced-task-put", lat, elapsed, errors[0])
    row["ok_per_org"] = ok_per_org
    return row


# -- subscriptions ----------------------------------------------------------------------

def start_worker(db_url: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=db_url, FHIR_SERVER_AUTH="off",
               FHIR_SERVER_BASE_URL=f"http://127.0.0.1:{port}/fhir")
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "worker", "--sweep-interval", "3600"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def create_subscriptions(port: int, receiver: HookReceiver, count: int) -> dict[str, int]:
    """POST the Subscriptions; return {subscription id: org}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ids: dict[str, int] = {}
    for org in range(count):
        status, payload, _h = json_request(conn, "POST", "/fhir/Subscription",
                                           subscription(receiver.url, org))
        if status != 201:
            raise RuntimeError(f"Subscription not created: {status} {payload[:300]!r}")
        ids[json.loads(payload)["id"]] = org
    return ids


def wait_active(port: int, count: int, timeout: float = 120.0) -> float:
    """Seconds until `count` Subscriptions report `active` in $status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        _s, payload, _h = json_request(conn, "GET", "/fhir/Subscription/$status?status=active")
        if json.loads(payload).get("total", 0) >= count:
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise RuntimeError("Subscriptions did not all become active")


def delivery_stats(receiver: HookReceiver, subs: dict[str, int], expected: int) -> dict:
    """Latency, delivered/expected, duplicates and gaps from what the receiver got."""
    seen: dict[tuple[str, int], int] = {}
    latencies: list[float] = []
    for note in receiver.of_kind("event-notification"):
        sid = note.param("subscription")["reference"].rsplit("/", 1)[1]
        for p in note.status_parameters["parameter"]:
            if p["name"] != "notification-event":
                continue
            parts = {x["name"]: x for x in p["part"]}
            key = (sid, int(parts["event-number"]["valueString"]))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                latencies.append((note.at - _instant_s(parts["timestamp"]["valueInstant"]))
                                 * 1000)
    per_sub: dict[str, list[int]] = {}
    for sid, number in seen:
        per_sub.setdefault(sid, []).append(number)
    gaps = sum(max(ns) - len(ns) for ns in per_sub.values())
    return {
        "expected": expected, "delivered": len(seen),
        "delivered_ratio": round(len(seen) / expected, 4) if expected else None,
        "duplicates": sum(c - 1 for c in seen.values()), "gaps": gaps,
        "notifications": len(receiver.of_kind("event-notification")),
        "latency_p50_ms": round(percentile(latencies, 50), 1),
        "latency_p95_ms": round(percentile(latencies, 95), 1),
        "latency_p99_ms": round(percentile(latencies, 99), 1),
        "latency_max_ms": round(max(latencies), 1) if latencies else None,
    }


def idle_cpu_percent(pid: int, seconds: float, settle: float = 5.0) -> float:
    """CPU of an idle process over `seconds` (after `settle` s to finish what is in flight),
    in percent of one core."""
    time.sleep(settle)
    before = _cpu_seconds([pid])
    time.sleep(seconds)
    return round((_cpu_seconds([pid]) - before) / seconds * 100, 2)


def switch_subscriptions(url: str, live: bool) -> None:
    """All Subscriptions `active` or `off` in the registry (bench only: no handshake, the
    undelivered events stay and are sent when they are back on)."""
    from sqlalchemy import create_engine, update

    from subscriptions.outbox_schema import registry
    from subscriptions.outbox_store import now_us

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(update(registry).where(registry.c.status.in_(("active", "off")))
                         .values(status="active" if live else "off", updated_at=now_us()))
    finally:
        engine.dispose()


def seed_tasks(port: int, orgs: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for body in parties(orgs):
        path = f"/fhir/{body['resourceType']}/{body['id']}"
        status, payload, _h = json_request(conn, "PUT", path, body)
        if status >= 300:
            raise RuntimeError(f"seed {path} failed: {status} {payload[:300]!r}")
    for org in range(orgs):
        for n in range(TASKS_PER_ORG):
            body = task(org, n)
            status, payload, _h = json_request(conn, "PUT", f"/fhir/Task/{body['id']}", body)
            if status >= 300:
                raise RuntimeError(f"seed Task failed: {status} {payload[:300]!r}")


def prepare_database(url: str) -> None:
    """`init-db`: the Alembic migrations and the published definitions."""
    env = dict(os.environ, DATABASE_URL=url, FHIR_SERVER_AUTH="off")
    subprocess.run([sys.executable, "-m", "fhir_server", "init-db"], env=env, check=True,
                   cwd=ROOT, capture_output=True)


def _keep_alive(receiver: HookReceiver) -> None:
    """Let the loopback receiver keep connections open (HTTP/1.1), like real endpoints do.
    (HookReceiver answers HTTP/1.0 by default: one TCP connection per notification.)"""
    server = receiver._server  # noqa: SLF001 - bench-only tuning of the test receiver
    if server is not None:
        server.RequestHandlerClass.protocol_version = "HTTP/1.1"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(backend: str, args: argparse.Namespace) -> dict:
    url = database_url(backend, os.environ.get("FHIR_TEST_PG_URL"))
    prepare_database(url)
    _log("database ready; starting the server")
    server = start_fhir_server(url, workers=args.workers, threads=args.threads)
    receiver = HookReceiver()
    if args.keepalive:
        _keep_alive(receiver)
    worker: subprocess.Popen | None = None
    out: dict = {"backend": backend, "subscriptions": args.subs, "rate": args.rate,
                 "seconds": args.seconds, "receiver_keepalive": args.keepalive}
    try:
        _log("server up; seeding Tasks")
        seed_tasks(server.port, args.subs)
        _log("warm-up")
        burst(server.port, 3, args.clients, args.subs)  # warm-up
        groups: dict[str, Callable[[], list[int]]] = {
            "server": lambda: _pids(server.process.pid),
            "worker": lambda: [worker.pid] if worker is not None else [],
            "receiver": lambda: [os.getpid()]}
        if backend == "postgresql":
            groups["postgres (all)"] = _postgres_pids
        out["writes_without_subs"] = burst(server.port, args.burst_seconds, args.clients,
                                           args.subs, groups)
        _log("starting the worker; creating Subscriptions")
        worker = start_worker(url, server.port)
        subs = create_subscriptions(server.port, receiver, args.subs)
        out["seconds_to_all_active"] = round(wait_active(server.port, args.subs), 2)
        _log("all active; paced load")
        load = paced(server.port, args.rate, args.seconds, args.subs)
        expected = sum(load.pop("ok_per_org"))
        receiver.wait_for(lambda r: len({(n.param("subscription")["reference"], x)
                                          for n in r.of_kind("event-notification")
                                          for x in n.event_numbers}) >= expected, 30)
        out["paced_writes"] = load
        out["delivery"] = delivery_stats(receiver, subs, expected)
        _log("throughput with Subscriptions (interleaved with them switched off)")
        rounds: dict[str, list[dict]] = {"off": [], "on": []}
        for _round in range(args.rounds):
            for live in (False, True):
                switch_subscriptions(url, live)
                rounds["on" if live else "off"].append(
                    burst(server.port, args.burst_seconds, args.clients, args.subs, groups))
        out["writes_subs_off"] = rounds["off"]
        out["writes_with_subs"] = rounds["on"]
        total = {k: sum(r["requests"] for r in v) for k, v in rounds.items()}
        out["with_over_without"] = round(total["on"] / total["off"], 3)
        out["with_over_no_subs"] = round(
            total["on"] / (args.rounds * args.burst_seconds)
            / out["writes_without_subs"]["throughput_rps"], 3)
        if args.idle_seconds > 0:
            _log("idle worker")
            out["idle_worker_cpu_percent"] = idle_cpu_percent(worker.pid, args.idle_seconds)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        receiver.stop()
        server.stop()
    return out


def micro(backend: str, subs: int, writes: int = 200, rounds: int = 5) -> dict:
    """In-process write-path cost with 0 vs `subs` live Subscriptions, interleaved: the
    Subscriptions are switched off/on in the registry between rounds (one process, one
    thread, no HTTP: the difference is the cost of `record_events`)."""
    import statistics

    from sqlalchemy import update

    from fhir_server.auth.context import SYSTEM
    from fhir_server.config import Settings
    from fhir_server.interactions import crud
    from fhir_server.interactions.context import Call
    from fhir_server.wiring import build_services
    from subscriptions.outbox import record_events
    from subscriptions.outbox_schema import registry

    url = database_url(backend, os.environ.get("FHIR_TEST_PG_URL"))
    prepare_database(url)
    services = build_services(Settings.from_env(database_url=url, auth_mode="off"))
    call = Call(services=services, base_url="http://127.0.0.1/fhir", prefer_return="minimal",
                access=SYSTEM)
    for body in parties(subs):
        crud.update(call, body["resourceType"], body["id"], body)
    for org in range(subs):
        crud.update(call, "Task", f"bench-{org}-0", task(org))
        crud.create(call, "Subscription", subscription("http://127.0.0.1:9/hook", org))
    prev, cur = task(0), task(0)
    prev["meta"], cur["meta"] = {"versionId": "1"}, {"versionId": "2"}
    timings: dict[str, list[float]] = {"write_ms_0": [], f"write_ms_{subs}": [],
                                       "record_events_ms_0": [], f"record_events_ms_{subs}": []}
    for _round in range(rounds):
        for live, label in ((False, "0"), (True, str(subs))):
            with services.db.write() as conn:
                conn.execute(update(registry).values(  # as sync_subscription does
                    status="active" if live else "off", updated_at=time.time_ns() // 1000))
            t0 = time.perf_counter()
            for i in range(writes):
                crud.update(call, "Task", f"bench-{i % subs}-0", task(i % subs))
            timings[f"write_ms_{label}"].append((time.perf_counter() - t0) / writes * 1000)
            with services.db.write() as conn:
                t0 = time.perf_counter()
                for _i in range(writes):
                    record_events(conn, prev, cur, "update")
                timings[f"record_events_ms_{label}"].append(
                    (time.perf_counter() - t0) / writes * 1000)
                conn.rollback()
    services.db.dispose()
    out: dict = {"backend": backend, "micro": True, "subscriptions": subs}
    out.update({k: round(statistics.median(v), 3) for k, v in timings.items()})
    out["write_overhead_ms"] = round(out[f"write_ms_{subs}"] - out["write_ms_0"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--burst-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bursts with the Subscriptions on, each after one with them off")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="measure the idle worker's CPU this long (0: skip)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                        help="receiver answers HTTP/1.0 (a new connection per notification)")
    parser.add_argument("--out", type=Path, default=None, help="also write JSON here")
    parser.add_argument("--micro", action="store_true",
                        help="only the in-process record_events overhead (0 vs --subs)")
    args = parser.parse_args()
    results = []
    for backend in args.backends.split(","):
        if backend == "postgresql" and not os.environ.get("FHIR_TEST_PG_URL"):
            print("skipping postgresql: FHIR_TEST_PG_URL not set")
            continue
        row = micro(backend, args.subs) if args.micro else run(backend, args)
        print(json.dumps(row))
        results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
