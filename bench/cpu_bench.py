"""CPU time per request of the write path, in process: the figure that a busy machine
disturbs least, to compare two checkouts (e.g. main before and after a change).

    python -m bench.cpu_bench [--requests 1500] [--patients 150] [--rounds 2]
                              [--repo OTHER_CHECKOUT]

Each measurement runs in a fresh process on a fresh SQLite database, through the Flask app
(no HTTP, no gunicorn: what is left is our code, SQLAlchemy and SQLite), with the process's
own CPU clock (`time.process_time`):
- the CRUD mix of `bench/crud_mix.lua` (create, read, update, search by identifier,
  delete of a Patient), `--requests` requests after a warm-up;
- ingest: the search benchmark's population (`bench/population.py`: Patients, PHQ-9
  screenings with their derived Observations, referrals, Tasks moving through their
  statuses) as transaction Bundles, `--patients` patients; CPU per stored resource.
With `--repo`, the other checkout is measured the same way, rounds interleaved, and the
ratios (other / this) printed: above 1 means this checkout spends less CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
MRN = "http://hospital.example/mrn"


def _patient(i: int, gender: str, pid: str | None = None) -> dict:
    body = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": f"MRN-{i}"}],
            "name": [{"family": "Rivera", "given": ["Ana", "Maria"]}], "gender": gender,
            "birthDate": "1990-04-02"}
    return {**body, "id": pid} if pid else body


def _crud(client, first: int, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` rounds of the mix: create, read, update, search, delete (5 requests each)."""
    for i in range(first, first + count):
        created = client.post("/fhir/Patient", json=_patient(i, "female"), headers=HEADERS)
        assert created.status_code == 201, created.get_data(as_text=True)
        pid = created.get_json()["id"]
        for response in (
            client.get(f"/fhir/Patient/{pid}", headers=HEADERS),
            client.put(f"/fhir/Patient/{pid}", json=_patient(i, "male", pid), headers=HEADERS),
            client.get(f"/fhir/Patient?identifier={MRN}|MRN-{i}", headers=HEADERS),
            client.delete(f"/fhir/Patient/{pid}", headers=HEADERS),
        ):
            assert response.status_code < 300, response.get_data(as_text=True)


def _measure(requests: int, patients: int) -> dict:
    """Run in the checkout being measured (cwd and sys.path): one fresh database."""
    os.environ.update(FHIR_SERVER_AUTH="off",
                      DATABASE_URL=f"sqlite:///{tempfile.mkdtemp(prefix='cpu-')}/cpu.sqlite3")
    subprocess.run([sys.executable, "-m", "fhir_server", "init-db"], check=True,
                   capture_output=True)
    from sqlalchemy import create_engine, text

    from bench.population import Patients, directory_entries
    from bench.search_bench import _chunks
    from fhir_server.app import create_app
    from fhir_server.config import Settings

    client = create_app(Settings.from_env()).test_client()
    rounds = max(1, requests // 5)
    _crud(client, 0, 50)  # warm-up: caches, compiled statements
    started = time.process_time()
    _crud(client, 50, rounds)
    crud_ms = 1000 * (time.process_time() - started) / (5 * rounds)

    def transaction(entries: list[dict]) -> None:
        response = client.post("/fhir", headers=HEADERS, json={
            "resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert response.status_code == 200, response.get_data(as_text=True)[:500]

    engine = create_engine(os.environ["DATABASE_URL"])

    def stored() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM resources")).scalar_one()

    transaction(list(directory_entries()))
    population, before = Patients(), stored()
    started = time.process_time()
    for entries in _chunks(population, range(patients), None, 25):
        transaction(entries)
    for step in range(Patients.rounds()):
        for entries in _chunks(population, range(patients), step, 100):
            transaction(entries)
    ingest_cpu = time.process_time() - started
    resources = stored() - before
    return {"crud_cpu_ms_per_request": round(crud_ms, 3), "ingest_resources": resources,
            "ingest_cpu_ms_per_resource": round(1000 * ingest_cpu / resources, 3)}


def _run_in(checkout: Path, requests: int, patients: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", "--requests",
         str(requests), "--patients", str(patients)],
        cwd=checkout, env=dict(os.environ, PYTHONPATH=str(checkout)), capture_output=True,
        text=True)
    if out.returncode != 0:
        raise SystemExit(f"measuring {checkout} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repo", help="another checkout to compare with (e.g. main)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.requests, args.patients)))
        return
    checkouts = {"this": ROOT, **({"other": Path(args.repo).resolve()} if args.repo else {})}
    rows: dict[str, list[dict]] = {name: [] for name in checkouts}
    for round_number in range(1, args.rounds + 1):
        for name, checkout in checkouts.items():
            row = _run_in(checkout, args.requests, args.patients)
            rows[name].append(row)
            print(json.dumps({"checkout": str(checkout), "round": round_number, **row}),
                  flush=True)
    if args.repo:
        for key in ("crud_cpu_ms_per_request", "ingest_cpu_ms_per_resource"):
            ratios = [o[key] / t[key] for o, t in zip(rows["other"], rows["this"], strict=True)]
            print(json.dumps({"figure": key, "other_over_this": round(statistics.median(ratios), 3),
                              "ratios": [round(r, 3) for r in ratios]}), flush=True)


if __name__ == "__main__":
    main()
