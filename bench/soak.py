"""Soak: a CRUD mix and polling searches for a long time; errors and the memory slope.

    python -m bench.soak [--minutes 30] [--resources 1000000] [--clients 8]
                         [--backend sqlite|postgresql] [--reuse DATABASE_URL]

Starts `python -m fhir_server serve` (its default process and thread counts) on a fresh
database, loads `--resources` resources (transaction Bundles of Patients with a referral
Task each; or `--reuse` a database loaded by bench/search_bench.py), measures the server's
RSS at rest,
then runs `--clients` clients for `--minutes`: each loop creates a Patient, reads it,
updates it, polls `Task?owner=…&_lastUpdated=gt…` and `Task?status=requested&_count=20`,
and deletes the Patient. RSS of the gunicorn master and workers is sampled every 5 s; the
slope is a least-squares line over the samples after the first tenth of the run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.harness import Server, database_url, json_request, start_fhir_server


def _load(port: int, resources: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    # the Tasks' owners: a write may only reference resources that exist (and it may read)
    owners = [{"request": {"method": "PUT", "url": f"Organization/soak-{n}"},
               "resource": {"resourceType": "Organization", "id": f"soak-{n}",
                            "name": f"Soak organization {n}"}} for n in range(20)]
    status, problem, _h = json_request(conn, "POST", "/fhir", {
        "resourceType": "Bundle", "type": "transaction", "entry": owners})
    if status != 200:
        raise RuntimeError(f"loading the owners failed with {status}: {problem}")
    per_bundle = 100  # 50 Patients + 50 Tasks
    for start in range(0, resources, per_bundle):
        entries = []
        for i in range(per_bundle // 2):
            pid = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": pid, "request": {"method": "POST", "url": "Patient"},
                            "resource": {"resourceType": "Patient",
                                         "name": [{"family": f"Soak{start + i}"}]}})
            entries.append({"request": {"method": "POST", "url": "Task"}, "resource": {
                "resourceType": "Task", "status": "requested", "intent": "order",
                "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                     "code": "approve"}]},
                "for": {"reference": pid},
                "owner": {"reference": f"Organization/soak-{i % 20}"}}})
        status, problem, _h = json_request(conn, "POST", "/fhir", {
            "resourceType": "Bundle", "type": "transaction", "entry": entries})
        if status != 200:
            raise RuntimeError(f"load failed with {status}: {problem}")


def _client(port: int, stop: threading.Event, counts: dict, lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    n = 0
    while not stop.is_set():
        n += 1
        steps = []
        try:
            status, body, _h = json_request(conn, "POST", "/fhir/Patient", {
                "resourceType": "Patient", "name": [{"family": "Soak"}]})
            steps.append(status)
            pid = json.loads(body)["id"] if status == 201 else "missing"
            steps.append(json_request(conn, "GET", f"/fhir/Patient/{pid}")[0])
            steps.append(json_request(conn, "PUT", f"/fhir/Patient/{pid}", {
                "resourceType": "Patient", "id": pid, "name": [{"family": f"Soak{n}"}]})[0])
            steps.append(json_request(
                conn, "GET", f"/fhir/Task?owner=Organization/soak-{n % 20}"
                f"&_lastUpdated=gt{since}")[0])
            steps.append(json_request(conn, "GET", "/fhir/Task?status=requested&_count=20")[0])
            steps.append(json_request(conn, "DELETE", f"/fhir/Patient/{pid}")[0])
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            steps.append(599)
        with lock:
            counts["requests"] += len(steps)
            counts["errors"] += sum(1 for s in steps if s >= 400)


def _slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return (cov / var) * 60 if var else 0.0


def run(server: Server, minutes: float, clients: int) -> dict:
    time.sleep(5)
    at_rest = server.rss_mb()
    stop = threading.Event()
    counts = {"requests": 0, "errors": 0}
    lock = threading.Lock()
    threads = [threading.Thread(target=_client, args=(server.port, stop, counts, lock))
               for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    samples: list[tuple[float, float]] = []
    own: list[tuple[float, float]] = []  # RssAnon: without the mapped database's pages
    while time.monotonic() - started < minutes * 60:
        time.sleep(5)
        samples.append((time.monotonic() - started, server.rss_mb()))
        own.append((samples[-1][0], server.rss_mb("RssAnon")))
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    steady = [s for s in samples if s[0] >= elapsed / 10]
    own_steady = [s for s in own if s[0] >= elapsed / 10]
    return {"minutes": elapsed / 60, "requests": counts["requests"], "errors": counts["errors"],
            "rate": counts["requests"] / elapsed, "rss_rest": at_rest,
            "rss_load_mean": sum(m for _, m in steady) / max(len(steady), 1),
            "rss_load_max": max((m for _, m in samples), default=0.0),
            "slope": _slope_mb_per_min(steady),
            "anon_max": max((m for _, m in own), default=0.0),
            "anon_slope": _slope_mb_per_min(own_steady)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--reuse", default=None, help="a loaded DATABASE_URL")
    args = parser.parse_args()
    url = args.reuse or database_url(args.backend, os.environ.get("FHIR_TEST_PG_URL"))
    server = start_fhir_server(url)
    try:
        loaded = time.monotonic()
        if not args.reuse:
            _load(server.port, args.resources)
        print(f"loaded {args.resources} resources in {time.monotonic() - loaded:.0f} s")
        result = run(server, args.minutes, args.clients)
    finally:
        server.stop()
    print(f"soak {result['minutes']:.1f} min at {args.resources} resources ({args.backend}): "
          f"{result['requests']} requests ({result['rate']:.0f}/s), {result['errors']} errors; "
          f"server RSS at rest {result['rss_rest']:.0f} MB, under load mean "
          f"{result['rss_load_mean']:.0f} MB, max {result['rss_load_max']:.0f} MB; "
          f"slope {result['slope']:+.2f} MB/min; own memory (RssAnon, without the mapped "
          f"database's pages) max {result['anon_max']:.0f} MB, slope "
          f"{result['anon_slope']:+.2f} MB/min")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
