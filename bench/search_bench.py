"""Search benchmark: a realistic referral population, ingest rate and query latencies.

    python bench/search_bench.py --size 100000 [--database-url URL] [--runs 200]

Resources are inserted directly (resources rows + `index_store`), in batches of 500 per
transaction. Then each Gravity polling query runs `--runs` times through `search_bundle`
(parse, SQL, JSON bundle) with varying values; p50 and p95 are reported in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

import fhir_server.storage.index_schema  # noqa: E402,F401
from fhir_server.interactions.search import search_bundle  # noqa: E402
from fhir_server.storage.db import Database  # noqa: E402
from fhir_server.storage.index_store import insert_many  # noqa: E402
from fhir_server.storage.schema import metadata, resources  # noqa: E402

BASE = "http://bench.local/fhir"
STATUSES = ["requested", "received", "accepted", "rejected", "in-progress", "on-hold",
            "completed", "cancelled", "failed", "draft"]
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare"
N_ORGS, N_CLINICS, N_PRACTITIONERS = 200, 20, 500


def _iso(us: int) -> str:
    t = time.gmtime(us // 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{us % 1_000_000:06d}Z"


def directory() -> Iterator[dict[str, Any]]:
    """Organizations (CBOs and clinics), HealthcareServices, Locations, Practitioners."""
    for i in range(N_ORGS):
        yield {"resourceType": "Organization", "id": f"cbo-{i}", "active": True,
               "name": f"Community Service {i}",
               "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "organization-type", "code": "cg"}]}],
               "address": [{"city": f"City{i % 37}", "state": "MA"}]}
        yield {"resourceType": "HealthcareService", "id": f"hs-{i}", "active": True,
               "providedBy": {"reference": f"Organization/cbo-{i}"},
               "name": f"Counselling {i}",
               "category": [{"coding": [{"system": f"{SDOHCC}/CodeSystem/"
                                                   "SDOHCC-CodeSystemTemporaryCodes",
                                         "code": "mental-health"}]}]}
        yield {"resourceType": "Location", "id": f"loc-{i}", "name": f"Site {i}",
               "position": {"latitude": 42 + (i % 50) / 100, "longitude": -71 - i / 1000}}
    for i in range(N_CLINICS):
        yield {"resourceType": "Organization", "id": f"clinic-{i}", "name": f"Clinic {i}"}
    for i in range(N_PRACTITIONERS):
        yield {"resourceType": "Practitioner", "id": f"pr-{i}",
               "name": [{"family": f"Doctor{i}", "given": ["Sam"]}]}


def patient_bundle(i: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """One patient and their referral trail: screening, observations, referral, tasks."""
    pid = f"pat-{i}"
    subject = {"reference": f"Patient/{pid}"}
    clinic = {"reference": f"Organization/clinic-{rng.randrange(N_CLINICS)}"}
    day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    yield {"resourceType": "Patient", "id": pid, "gender": rng.choice(["female", "male"]),
           "birthDate": f"{rng.randint(1940, 2008)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
           "name": [{"family": f"Family{i % 5000}", "given": [f"Given{i % 700}"]}],
           "identifier": [{"system": "http://hospital.example.org/mrn", "value": f"M{i}"}]}
    score = rng.randint(0, 27)
    yield {"resourceType": "QuestionnaireResponse", "id": f"qr-{i}", "status": "completed",
           "questionnaire": "http://loinc.org/q/44249-1", "subject": subject,
           "authored": f"{day}T10:00:00Z"}
    for code, value in (("44261-6", score), ("44260-8", rng.randint(0, 3))):
        yield {"resourceType": "Observation", "id": f"obs-{code}-{i}", "status": "final",
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                   "observation-category",
                                         "code": "survey"}]}],
               "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
               "subject": subject, "effectiveDateTime": f"{day}T10:05:00Z",
               "valueInteger": value,
               "derivedFrom": [{"reference": f"QuestionnaireResponse/qr-{i}"}]}
    if score < 5:
        return
    status = rng.choice(STATUSES)
    sr_status = "completed" if status == "completed" else "active"
    yield {"resourceType": "ServiceRequest", "id": f"sr-{i}", "status": sr_status,
           "intent": "order", "subject": subject, "requester": clinic,
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": "390866009"}]},
           "supportingInfo": [{"reference": f"QuestionnaireResponse/qr-{i}"}],
           "authoredOn": f"{day}T10:10:00Z"}
    task: dict[str, Any] = {
        "resourceType": "Task", "id": f"task-{i}", "status": status, "intent": "order",
        "meta": {"profile": [f"{SDOHCC}/StructureDefinition/SDOHCC-TaskForReferralManagement"]},
        "focus": {"reference": f"ServiceRequest/sr-{i}"}, "for": subject,
        "requester": clinic, "authoredOn": f"{day}T10:11:00Z",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]}}
    if status not in ("requested", "draft"):
        task["owner"] = {"reference": f"Organization/cbo-{rng.randrange(N_ORGS)}"}
    if status == "completed":
        yield {"resourceType": "Procedure", "id": f"proc-{i}", "status": "completed",
               "subject": subject, "basedOn": [{"reference": f"ServiceRequest/sr-{i}"}],
               "performedDateTime": f"{day}T15:00:00Z"}
        task["output"] = [{"type": {"text": "outcome"},
                           "valueReference": {"reference": f"Procedure/proc-{i}"}}]
    yield task


def population(size: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """About `size` resources: the directory, then patients until the size is reached."""
    rng = random.Random(seed)
    n = 0
    for r in directory():
        n += 1
        yield r
    i = 0
    while n < size:
        for r in patient_bundle(i, rng):
            n += 1
            yield r
        i += 1


def ingest(db: Database, size: int,
           batch: int = 500) -> tuple[int, float, float, dict[str, int], int]:
    """Insert the population; returns (count, wall seconds, CPU seconds of this process,
    counts per type, last timestamp)."""
    counts: dict[str, int] = {}
    buf: list[dict[str, Any]] = []
    total = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    clock = [int(time.time() * 1_000_000) - size * 1000]

    def flush() -> None:
        rows = []
        for r in buf:
            clock[0] += 1000
            r["meta"] = {**r.get("meta", {}), "versionId": "1", "lastUpdated": _iso(clock[0])}
            rows.append({"res_type": r["resourceType"], "res_id": r["id"], "version": 1,
                         "last_updated": clock[0], "deleted": False, "body": json.dumps(r)})
        with db.write() as conn:
            pids = conn.execute(insert(resources).returning(
                resources.c.pid, sort_by_parameter_order=True), rows).scalars().all()
            insert_many(conn, [(pid, r["resourceType"], r) for pid, r in zip(pids, buf,
                                                                              strict=True)])
        buf.clear()

    for r in population(size):
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
        buf.append(r)
        total += 1
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return (total, time.perf_counter() - start, time.process_time() - cpu_start, counts,
            clock[0])


def queries(n_patients: int, rng: random.Random,
            recent_us: int) -> dict[str, Callable[[], tuple[str, list]]]:
    """The Gravity polling queries with random parameter values; `recent_us` is the last
    poll time (about the newest 1% of writes are after it)."""
    def pat() -> str:
        return f"Patient/pat-{rng.randrange(n_patients)}"

    recent = _iso(recent_us)
    return {
        "Task?owner&_lastUpdated=gt": lambda: ("Task", [
            ("owner", f"Organization/cbo-{rng.randrange(N_ORGS)}"),
            ("_lastUpdated", f"gt{recent}")]),
        "Task?owner:missing=true&status=requested": lambda: ("Task", [
            ("owner:missing", "true"), ("status", "requested")]),
        "Task?_id=a,b&_include=Task:focus": lambda: ("Task", [
            ("_id", ",".join(f"task-{rng.randrange(n_patients)}" for _ in range(2))),
            ("_include", "Task:focus")]),
        "Task?requester": lambda: ("Task", [
            ("requester", f"Organization/clinic-{rng.randrange(N_CLINICS)}")]),
        "ServiceRequest?patient&status=active&_include=supporting-info": lambda: (
            "ServiceRequest", [("patient", pat()), ("status", "active"),
                               ("_include", "ServiceRequest:supporting-info")]),
        "Procedure?based-on": lambda: ("Procedure", [
            ("based-on", f"ServiceRequest/sr-{rng.randrange(n_patients)}")]),
        "Observation?patient&code&_sort=-date": lambda: ("Observation", [
            ("patient", pat()), ("code", "http://loinc.org|44261-6"), ("_sort", "-date")]),
    }


def measure(db: Database, n_patients: int, runs: int,
            recent_us: int) -> dict[str, tuple[float, float, float, float]]:
    """p50 / p95 / mean wall ms and p95 CPU ms per query, after one warm-up run each.

    CPU time (of this process: Python plus SQLite, not a PostgreSQL server) is reported
    because wall time on a shared machine includes waiting for other processes."""
    rng = random.Random(11)
    out = {}
    for name, make in queries(n_patients, rng, recent_us).items():
        times, cpu = [], []
        for i in range(runs + 1):
            res_type, params = make()
            t0, c0 = time.perf_counter(), time.process_time()
            with db.read() as conn:
                search_bundle(conn, res_type, params, base_url=BASE, strict=True)
            if i:
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
        times.sort()
        cpu.sort()
        p95 = int(len(times) * 0.95) - 1
        out[name] = (statistics.median(times), times[p95], statistics.fmean(times), cpu[p95])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    db = Database(url)
    metadata.drop_all(db.engine)
    metadata.create_all(db.engine)
    n, secs, cpu, counts, last_us = ingest(db, args.size)
    print(f"database: {db.url.get_backend_name()}  resources: {n}  "
          f"ingest: {secs:.1f} s wall = {n / secs:,.0f} resources/s; "
          f"{cpu:.1f} s CPU = {n / cpu:,.0f} resources/CPU-s")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if not db.is_sqlite:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    else:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    print(f"{'query':62} {'p50 ms':>8} {'p95 ms':>8} {'mean':>8} {'p95 CPU':>8}")
    recent = last_us - n * 10  # timestamps are 1 ms apart: the newest 1% changed since
    results = measure(db, counts.get("Patient", 1), args.runs, recent)
    for name, (p50, p95, mean, cpu95) in results.items():
        print(f"{name:62} {p50:8.2f} {p95:8.2f} {mean:8.2f} {cpu95:8.2f}")
    db.dispose()


if __name__ == "__main__":
    main()
