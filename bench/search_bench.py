"""Search benchmark: a realistic referral population loaded through the REST API, then
single-client latencies of the Gravity polling queries and of a name, a chained and two
`_has` searches (one organization's patients, and a broad one: every patient with a Task in
progress).

    python bench/search_bench.py --size 100000 [--backend sqlite|postgresql] [--runs 100]
                                 [--clients 3] [--patients-per-bundle 25]

Loading: our server runs under gunicorn (auth off) on a fresh database; `--clients`
threads POST transaction Bundles (bench/population.py): the provider directory, then each
patient's screening and referral, then the rounds of Task status changes. Every write takes
the production path (validation, profiles, workflow rules, PHQ-9 scoring with derived
Observations, index rows, history). Reported: resources stored and versions written per
second of wall time, and the database size.

Queries: one keep-alive HTTP client, `--runs` runs of each query with varying values after a
warm-up run; p50 / p95 / mean in milliseconds (JSON searchset Bundles, 20 per page).
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import random
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.harness import database_url, start_fhir_server  # noqa: E402
from bench.population import (  # noqa: E402
    N_CLINICS,
    N_ORGS,
    Patients,
    directory_entries,
    transaction,
)

RESOURCES_PER_PATIENT = 15.5  # measured average (derived Observations and flags included)


def _post_all(port: int, bundles: Iterator[list[dict[str, Any]]], clients: int) -> int:
    """POST every bundle as a transaction from `clients` threads; returns entries sent.
    Any non-200 response stops the benchmark (a population the server rejects is a bug)."""
    work: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=clients * 2)
    failures: list[str] = []
    sent = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while (entries := work.get()) is not None:
            if failures:
                continue
            conn.request("POST", "/fhir", body=orjson.dumps(transaction(entries)),
                         headers={"Content-Type": "application/fhir+json",
                                  "Prefer": "return=minimal"})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                failures.append(f"{resp.status}: {payload[:1500].decode(errors='replace')}")
            with lock:
                sent[0] += len(entries)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for entries in bundles:
        if failures:
            break
        work.put(entries)
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"the server refused a bundle: {failures[0]}")
    return sent[0]


def _chunks(patients: Patients, ids: range, step: int | None,
            per_bundle: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(ids.start, ids.stop, per_bundle):
        entries: list[dict[str, Any]] = []
        for i in range(start, min(ids.stop, start + per_bundle)):
            if step is None:
                entries += patients.first_round(i)
            elif i in patients.final_status:
                entries += patients.transition(i, step)
        if entries:
            yield entries


def ingest(port: int, size: int, clients: int, per_bundle: int) -> tuple[int, float]:
    """Load about `size` resources through the API; returns (patients, wall seconds)."""
    n_patients = max(1, int((size - 1400) / RESOURCES_PER_PATIENT))
    patients = Patients()
    start = time.perf_counter()
    _post_all(port, iter([list(directory_entries())]), 1)
    _post_all(port, _chunks(patients, range(n_patients), None, per_bundle), clients)
    for step in range(Patients.rounds()):
        _post_all(port, _chunks(patients, range(n_patients), step, per_bundle * 4), clients)
    return n_patients, time.perf_counter() - start


def database_facts(url: str) -> tuple[int, int, dict[str, int], float]:
    """(resources, versions, resources per type, database size in MB)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        by_type = dict(conn.execute(text(
            "SELECT res_type, count(*) FROM resources WHERE deleted = false "
            "GROUP BY res_type")).all())
        versions = conn.execute(text("SELECT count(*) FROM resource_history")).scalar_one()
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            size = Path(engine.url.database or "").stat().st_size
        else:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    return sum(by_type.values()), versions, by_type, size / 1e6


def poll_time(url: str, newer: int) -> str:
    """A `_lastUpdated` instant with about `newer` resources changed after it."""
    engine = create_engine(url)
    with engine.connect() as conn:
        us = conn.execute(text("SELECT last_updated FROM resources ORDER BY last_updated DESC "
                               "LIMIT 1 OFFSET :n"), {"n": newer}).scalar_one()
    engine.dispose()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + "Z"


def analyze(url: str) -> None:
    """Table statistics after the bulk load (and on PostgreSQL a VACUUM, which autovacuum
    would do in time: it sets the visibility map that index-only scans rely on)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM (ANALYZE)")
    engine.dispose()


Query = Callable[[], str]


def queries(n_patients: int, rng: random.Random, since: str) -> dict[str, Query]:
    """The polling queries with random values; `since` is a recent poll time."""
    def pat() -> str:
        return f"Patient/pat-{rng.randrange(n_patients)}"

    def q(path: str, **params: str) -> str:
        return f"/fhir/{path}?{urllib.parse.urlencode(params)}"

    return {
        "Task?owner&_lastUpdated=gt": lambda: q(
            "Task", owner=f"Organization/cbo-{rng.randrange(N_ORGS)}", _lastUpdated=f"gt{since}"),
        "Task?owner:missing=true&status=requested": lambda: q(
            "Task", **{"owner:missing": "true", "status": "requested"}),
        "Task?_id=a,b&_include=Task:focus": lambda: q(
            "Task", _id=",".join(f"task-{rng.randrange(n_patients)}" for _ in range(2)),
            _include="Task:focus"),
        "Task?requester": lambda: q(
            "Task", requester=f"Organization/clinic-{rng.randrange(N_CLINICS)}"),
        "ServiceRequest?patient&status=active&_include=supporting-info": lambda: q(
            "ServiceRequest", patient=pat(), status="active",
            _include="ServiceRequest:supporting-info"),
        "Procedure?based-on": lambda: q(
            "Procedure", **{"based-on": f"ServiceRequest/sr-{rng.randrange(n_patients)}"}),
        "Observation?patient&code&_sort=-date": lambda: q(
            "Observation", patient=pat(), code="http://loinc.org|44261-6", _sort="-date"),
        "Patient?name (string prefix)": lambda: q(
            "Patient", name=f"Family{rng.randrange(5000)}"),
        "Task?patient.identifier (chain)": lambda: q(
            "Task", **{"patient.identifier":
                       f"http://hospital.example.org/mrn|M{rng.randrange(n_patients)}"}),
        "Patient?_has:Task:patient:owner (reverse chain)": lambda: q(
            "Patient", **{"_has:Task:patient:owner":
                          f"Organization/cbo-{rng.randrange(N_ORGS)}"}),
        # every patient with a Task in progress: about 15 % of the referral Tasks
        "Patient?_has:Task:patient:status=in-progress (broad)": lambda: q(
            "Patient", **{"_has:Task:patient:status": "in-progress"}),
    }


def measure(port: int, n_patients: int, runs: int,
            since: str) -> dict[str, tuple[float, float, float]]:
    """p50 / p95 / mean milliseconds per query over one keep-alive connection."""
    rng = random.Random(11)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = {}
    for name, make in queries(n_patients, rng, since).items():
        times = []
        for i in range(runs + 1):
            path = make()
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Accept": "application/fhir+json"})
            resp = conn.getresponse()
            body = resp.read()
            elapsed = (time.perf_counter() - t0) * 1000
            if resp.status != 200:
                raise SystemExit(f"{path}: {resp.status} {body[:500]!r}")
            if i:
                times.append(elapsed)
        times.sort()
        out[name] = (statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)],
                     statistics.fmean(times))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--patients-per-bundle", type=int, default=25)
    ap.add_argument("--reuse", metavar="DATABASE_URL",
                    help="measure the queries on a database an earlier run loaded")
    args = ap.parse_args()
    url = args.reuse or database_url(args.backend, os.environ.get("FHIR_TEST_PG_URL"))
    print(f"database URL: {url}", flush=True)
    server = start_fhir_server(url, workers=args.workers, threads=2)
    try:
        if args.reuse:
            n, versions, by_type, size_mb = database_facts(url)
            n_patients = by_type.get("Patient", 1)
            print(f"reused: {n:,} resources, {versions:,} versions, {size_mb:,.0f} MB")
        else:
            n_patients, secs = ingest(server.port, args.size, args.clients,
                                      args.patients_per_bundle)
            n, versions, by_type, size_mb = database_facts(url)
            print(f"database: {args.backend}  patients: {n_patients:,}  resources: {n:,}  "
                  f"versions: {versions:,}")
            print(f"ingest through the API: {secs:.0f} s = {n / secs:,.0f} resources/s "
                  f"({versions / secs:,.0f} versions/s); database {size_mb:,.0f} MB = "
                  f"{size_mb * 1e6 / n:,.0f} MB per 1M resources")
            print("  " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_type.items())))
            analyze(url)
        since = poll_time(url, n // 100)
        print(f"{'query (single client, HTTP)':62} {'p50 ms':>8} {'p95 ms':>8} {'mean':>8}")
        for name, (p50, p95, mean) in measure(server.port, n_patients, args.runs,
                                              since).items():
            print(f"{name:62} {p50:8.2f} {p95:8.2f} {mean:8.2f}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
