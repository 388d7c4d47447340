"""Transaction-bundle throughput: ~10-entry referral bundles (examples/referral-bundle-1.json
with a new MRN and referral id each time) from 8 concurrent clients, and single 1,000-entry
bundles, on SQLite and PostgreSQL.

    python -m bench.bundle_bench [--seconds 20] [--clients 8] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
import uuid

from bench.harness import (
    ROOT,
    database_url,
    json_request,
    percentile,
    run_clients,
    start_fhir_server,
    summarise,
)

TEMPLATE = json.loads((ROOT / "examples" / "referral-bundle-1.json").read_text())


def referral_bundle() -> dict:
    """The example referral with a fresh patient MRN and referral identifier."""
    text = json.dumps(TEMPLATE)
    text = text.replace("MRN-204-7731", f"MRN-{uuid.uuid4().hex[:10]}")
    text = text.replace("REF-2026-0001", f"REF-{uuid.uuid4().hex[:10]}")
    return json.loads(text)


def big_bundle(n: int) -> dict:
    """A transaction of `n` entries: Observations referencing a Patient by urn:uuid."""
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": patient_url, "resource": {"resourceType": "Patient", "name": [
        {"family": "Bulk", "given": ["Test"]}]}, "request": {"method": "POST", "url": "Patient"}}]
    for i in range(n - 1):
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
            "subject": {"reference": patient_url}, "valueInteger": i % 28,
            "effectiveDateTime": "2026-11-20T10:00:00Z"},
            "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _clients(port: int, deadline: float, threads: int) -> tuple[list[float], int]:
    lat: list[float] = []
    errs = [0]

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.time() < deadline:
            body = referral_bundle()
            t0 = time.perf_counter()
            status, _payload, _h = json_request(conn, "POST", "/fhir", body)
            lat.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                errs[0] += 1

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return lat, errs[0]


def run(backend: str, seconds: float, clients: int) -> list[dict]:
    server = start_fhir_server(database_url(backend, os.environ.get("FHIR_TEST_PG_URL")),
                               workers=4, threads=4)
    rows = []
    try:
        run_clients(_clients, clients, 2.0, server.port)  # warm-up
        lat, errors, elapsed = run_clients(_clients, clients, seconds, server.port)
        row = summarise(f"{backend} referral bundles ({len(TEMPLATE['entry'])} entries)",
                        lat, elapsed, errors)
        row["resources_per_s"] = round(row["throughput_rps"] * len(TEMPLATE["entry"]), 1)
        row["server_rss_mb"] = round(server.rss_mb(), 1)
        rows.append(row)
        times = []
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
            body = big_bundle(1000)
            t0 = time.perf_counter()
            status, _p, _h = json_request(conn, "POST", "/fhir", body)
            times.append(time.perf_counter() - t0)
            assert status == 200, status
        rows.append({"name": f"{backend} 1000-entry transaction", "runs": len(times),
                     "median_s": round(sorted(times)[1], 2), "max_s": round(max(times), 2),
                     "resources_per_s": round(1000 / sorted(times)[1], 1),
                     "p95_s": round(percentile(times, 95), 2),
                     "server_rss_mb": round(server.rss_mb(), 1)})
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    os.environ.setdefault("FHIR_SERVER_AUTH", "off")
    for backend in args.backends.split(","):
        if backend == "postgresql" and not os.environ.get("FHIR_TEST_PG_URL"):
            print("skipping postgresql: FHIR_TEST_PG_URL not set")
            continue
        for row in run(backend, args.seconds, args.clients):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
