"""CRUD mix from 32 concurrent clients against our server and against the bare ceiling.

    python -m bench.crud_bench [--seconds 20] [--clients 32] [--backends sqlite,postgresql]

Each client loops: create Patient, read it, update it, read it, delete it (5 requests).
Reports throughput, p50/p95/p99 and server RSS, and ours as a ratio of the ceiling measured
in the same run on the same database backend.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time

from bench.harness import (
    database_url,
    json_request,
    run_clients,
    start_fhir_server,
    start_module_server,
    summarise,
)

PATIENT = {"resourceType": "Patient",
           "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1"}],
           "name": [{"family": "Rivera", "given": ["Ana", "Maria"]}], "gender": "female",
           "birthDate": "1990-04-02",
           "address": [{"line": ["12 Harbor St"], "city": "Boston", "state": "MA",
                        "postalCode": "02110"}],
           "telecom": [{"system": "phone", "value": "555-0100"}]}


def _loop(port: int, deadline: float, prefix: str, lat: list[float], errs: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def timed(method: str, path: str, body: dict | None = None) -> tuple[int, bytes, dict]:
        t0 = time.perf_counter()
        status, payload, headers = json_request(conn, method, path, body)
        lat.append((time.perf_counter() - t0) * 1000)
        if status >= 400:
            errs[0] += 1
        return status, payload, headers

    while time.time() < deadline:
        _s, payload, headers = timed("POST", f"{prefix}", PATIENT)
        location = headers.get("Location", "")
        if prefix == "/fhir/Patient":
            rid = json.loads(payload)["id"]
        else:
            rid = location.rsplit("/", 1)[-1]
        path = f"{prefix}/{rid}"
        timed("GET", path)
        body = dict(PATIENT, id=rid, gender="male")
        timed("PUT", path, body)
        timed("GET", path)
        timed("DELETE", path)


def _worker(prefix: str):  # type: ignore[no-untyped-def]
    def work(port: int, deadline: float, threads: int) -> tuple[list[float], int]:
        lat: list[float] = []
        errs = [0]
        pool = [threading.Thread(target=_loop, args=(port, deadline, prefix, lat, errs))
                for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return lat, errs[0]
    return work


def _ours(port: int, deadline: float, threads: int) -> tuple[list[float], int]:
    return _worker("/fhir/Patient")(port, deadline, threads)


def _ceiling(port: int, deadline: float, threads: int) -> tuple[list[float], int]:
    return _worker("/bare")(port, deadline, threads)


def run(backend: str, seconds: float, clients: int, workers: int, threads: int) -> list[dict]:
    pg = os.environ.get("FHIR_TEST_PG_URL")
    out = []
    for name, starter, fn in (
        ("ceiling", lambda url: start_module_server("bench.ceiling_app:app", url,
                                                    workers=workers, threads=threads), _ceiling),
        ("ours", lambda url: start_fhir_server(url, workers=workers, threads=threads), _ours),
    ):
        url = database_url(backend, pg)
        server = starter(url)
        try:
            run_clients(fn, clients, 2.0, server.port)  # warm-up
            lat, errors, elapsed = run_clients(fn, clients, seconds, server.port)
            row = summarise(f"{backend} {name}", lat, elapsed, errors)
            row["server_rss_mb"] = round(server.rss_mb(), 1)
            out.append(row)
        finally:
            server.stop()
    ours, ceiling = out[1], out[0]
    ours["ratio_of_ceiling"] = round(ours["throughput_rps"] / ceiling["throughput_rps"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "postgresql" and not os.environ.get("FHIR_TEST_PG_URL"):
            print("skipping postgresql: FHIR_TEST_PG_URL not set")
            continue
        for row in run(backend, args.seconds, args.clients, args.workers, args.threads):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
