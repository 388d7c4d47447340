"""Cost of FHIR XML against JSON over HTTP, measured in the same run on a live server.

    .venv/bin/python bench/xml_http_bench.py [--rounds N] [--backend sqlite|postgresql]

Starts the server (gunicorn, one worker, auth off) on a fresh database, creates 20 Patients,
then alternates JSON and XML requests for: a read, a 20-entry search and a 10-entry
transaction (XML request body and response for the XML side). Prints the median and p90
latency of each and the XML/JSON ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, Server, database_url, free_port, percentile  # noqa: E402
from fhir_server.formats import json_to_xml  # noqa: E402

JSON = "application/fhir+json"
XML = "application/fhir+xml"
NARRATIVE = ('<div xmlns="http://www.w3.org/1999/xhtml"><p>Jane Doe, referred to '
             'counselling</p></div>')


def patient(family: str, i: int) -> dict:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": NARRATIVE},
            "identifier": [{"system": "http://hospital.example/mrn", "value": f"MRN-{i}"}],
            "name": [{"family": family, "given": ["Jane", f"Q{i}"]}], "gender": "female",
            "birthDate": "1990-04-02",
            "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
            "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "01101"}]}


def transaction(family: str) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient(family, i),
         "request": {"method": "POST", "url": "Patient"}} for i in range(10)]}


def start_server(db_url: str) -> Server:
    """gunicorn (1 worker, 2 threads) over a database holding the full current schema.

    The schema comes from ``fhir_server.tables.metadata`` rather than ``init-db``, so the
    benchmark does not depend on the migrations being up to date with the tables.
    """
    import subprocess

    from bench.harness import wait_ready
    from fhir_server.storage.db import Database
    from fhir_server.tables import metadata

    db = Database(db_url)
    metadata.create_all(db.engine)
    db.dispose()
    port = free_port()
    env = dict(os.environ, DATABASE_URL=db_url, FHIR_SERVER_AUTH="off")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--workers", "1",
         "--threads", "2"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    wait_ready(port, "/fhir/metadata")
    return Server(proc, port)


def timed(session: requests.Session, method: str, url: str, expect: int, **kw) -> float:
    start = time.perf_counter()
    response = session.request(method, url, **kw)
    _ = response.content
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != expect:
        raise SystemExit(f"{method} {url}: HTTP {response.status_code} {response.text[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    server = start_server(database_url(args.backend, os.environ.get("FHIR_TEST_PG_URL")))
    base = f"http://127.0.0.1:{server.port}/fhir"
    try:
        s = requests.Session()
        family = "Bench" + uuid.uuid4().hex[:8]
        for _ in range(2):
            timed(s, "POST", base, 200, data=json.dumps(transaction(family)),
                  headers={"Content-Type": JSON})
        pid = s.get(f"{base}/Patient?family={family}&_count=1").json()["entry"][0]["resource"]["id"]
        search = f"{base}/Patient?family={family}&_count=20"
        assert len(s.get(search).json()["entry"]) == 20
        cases = {
            "read": lambda fmt: timed(s, "GET", f"{base}/Patient/{pid}", 200,
                                      headers={"Accept": fmt}),
            "search (20 entries)": lambda fmt: timed(s, "GET", search, 200,
                                                     headers={"Accept": fmt}),
            "transaction (10 entries)": lambda fmt: timed(
                s, "POST", base, 200, headers={"Accept": fmt, "Content-Type": fmt},
                data=(json_to_xml(transaction("Tx")) if fmt == XML
                      else json.dumps(transaction("Tx")))),
        }
        print(f"{'interaction':<26} {'json p50':>9} {'xml p50':>9} {'ratio':>7} "
              f"{'json p90':>9} {'xml p90':>9}   (ms, {args.rounds} rounds, {args.backend})")
        for name, run in cases.items():
            for fmt in (JSON, XML):  # warm-up
                run(fmt)
            samples: dict[str, list[float]] = {JSON: [], XML: []}
            for _ in range(args.rounds):
                for fmt in (JSON, XML):
                    samples[fmt].append(run(fmt))
            j, x = statistics.median(samples[JSON]), statistics.median(samples[XML])
            print(f"{name:<26} {j:>9.2f} {x:>9.2f} {x / j:>6.2f}x "
                  f"{percentile(samples[JSON], 90):>9.2f} {percentile(samples[XML], 90):>9.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
