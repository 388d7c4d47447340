"""`$match` latency against 1k and 10k-service directories, and the HSDS import rate.

    python bench/match_bench.py [--sizes 1000 10000] [--runs 200] [--database-url URL]

The directory comes from examples/directory/generate.py (same model, more services), inserted
directly (resources rows + search index, 500 per transaction). Each run POSTs
HealthcareService/$match with varied criteria through the Flask app in process (routing,
parsing, candidate cache check, ranking, Bundle JSON). The first call builds the directory
cache and is reported apart ("cold"); "after_write" is the first call after one service
was updated (the cache re-reads only changed rows). HSDS import goes through `import-hsds`
code (mapping, one transaction through the FHIR transaction path).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from fhir_server.app import create_app  # noqa: E402
from fhir_server.auth.context import SYSTEM  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.directory_cli import import_tables  # noqa: E402
from fhir_server.interactions.context import Call  # noqa: E402
from fhir_server.storage.db import Database  # noqa: E402
from fhir_server.storage.index_store import insert_many  # noqa: E402
from fhir_server.storage.schema import resources  # noqa: E402
from fhir_server.tables import metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ["therapy", "psychiatry", "collaborative-care", "substance-use", "peer-support",
              "community"]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("dir_generate",
                                                  ROOT / "examples/directory/generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _fresh_db(url: str | None, tag: str) -> Database:
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp()}/match-{tag}.sqlite3"
    db = Database(url)
    metadata.drop_all(db.engine)
    metadata.create_all(db.engine)
    return db


def ingest(db: Database, bundle: dict, batch: int = 500) -> None:
    """Insert every resource of a generated transaction Bundle directly."""
    now = int(time.time() * 1_000_000)
    items = [e["resource"] for e in bundle["entry"]]
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        rows = []
        for r in chunk:
            now += 1
            r["meta"] = {"versionId": "1", "lastUpdated": "2026-11-27T00:00:00Z"}
            rows.append({"res_type": r["resourceType"], "res_id": r["id"], "version": 1,
                         "last_updated": now, "deleted": False, "body": json.dumps(r)})
        with db.write() as conn:
            pids = conn.execute(insert(resources).returning(
                resources.c.pid, sort_by_parameter_order=True), rows).scalars().all()
            insert_many(conn, [(pid, r["resourceType"], r)
                               for pid, r in zip(pids, chunk, strict=True)])


def _criteria(rng: random.Random) -> dict:
    params = [{"name": "service-category", "valueCode": rng.choice(CATEGORIES)},
              {"name": "near", "valueString": f"{42.36 + rng.uniform(-0.2, 0.2):.4f}|"
                                              f"{-71.06 + rng.uniform(-0.2, 0.2):.4f}|25|km"}]
    if rng.random() < 0.5:
        params.append({"name": "language", "valueCode": rng.choice(["en", "es", "pt"])})
    if rng.random() < 0.5:
        params.append({"name": "coverage", "valueCode": rng.choice(["medicaid", "private"])})
    if rng.random() < 0.3:
        params.append({"name": "age", "valueDecimal": rng.randint(10, 80)})
    return {"resourceType": "Parameters", "parameter": params}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def bench_match(size: int, runs: int, url: str | None) -> dict:
    """p50/p95 of $match over a directory of `size` services."""
    db = _fresh_db(url, str(size))
    ingest(db, _generator().generate(services=size))
    app = create_app(Settings.from_env(database_url=db.url.render_as_string(
        hide_password=False), auth_mode="off"), db=db)
    client = app.test_client()
    rng = random.Random(size)
    headers = {"Content-Type": "application/fhir+json"}
    t0 = time.perf_counter()
    first = client.post("/fhir/HealthcareService/$match", json=_criteria(rng), headers=headers)
    cold = (time.perf_counter() - t0) * 1000
    assert first.status_code == 200, first.get_data(as_text=True)[:300]
    times, matches = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = client.post("/fhir/HealthcareService/$match", json=_criteria(rng),
                               headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
        matches.append(response.get_json()["total"])
    service = client.get("/fhir/HealthcareService/dir-svc-0000").get_json()
    service["name"] = service["name"] + " (renamed)"
    assert client.put("/fhir/HealthcareService/dir-svc-0000", json=service,
                      headers=headers).status_code == 200
    t0 = time.perf_counter()
    assert client.post("/fhir/HealthcareService/$match", json=_criteria(rng),
                       headers=headers).status_code == 200
    after_write = (time.perf_counter() - t0) * 1000
    db.dispose()
    return {"services": size, "runs": runs, "cold_ms": round(cold, 1),
            "p50_ms": round(_pct(times, 50), 2), "p95_ms": round(_pct(times, 95), 2),
            "after_write_ms": round(after_write, 1),
            "mean_matches": round(statistics.mean(matches), 1)}


def bench_import(organizations: int, url: str | None) -> dict:
    """HSDS rows mapped and stored per second (first import, then an unchanged re-import)."""
    db = _fresh_db(url, "hsds")
    app = create_app(Settings.from_env(database_url=db.url.render_as_string(
        hide_password=False), auth_mode="off"), db=db)
    call = Call(services=app.extensions["fhir_services"], base_url="http://bench/fhir",
                access=SYSTEM)
    tables = _generator().hsds_sample(organizations=organizations)
    rows = sum(len(v) for v in tables.values())
    t0 = time.perf_counter()
    summary = import_tables(call, tables)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    import_tables(call, tables)
    again = time.perf_counter() - t0
    db.dispose()
    return {"hsds_rows": rows, "services": summary.services, "import_s": round(first, 2),
            "services_per_s": round(summary.services / first, 1),
            "rows_per_s": round(rows / first, 1), "reimport_unchanged_s": round(again, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--hsds-organizations", type=int, default=100)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    for size in args.sizes:
        print(json.dumps({"bench": "match", **bench_match(size, args.runs, args.database_url)}))
    print(json.dumps({"bench": "hsds-import",
                      **bench_import(args.hsds_organizations, args.database_url)}))


if __name__ == "__main__":
    main()
