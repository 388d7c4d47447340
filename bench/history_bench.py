"""History storage benchmark: bytes per resource of `resource_history` and of the whole
database, write throughput and read latencies, for this code and for a baseline commit
(before history compression), in the same run, on the same population.

    python bench/history_bench.py [--size 20000] [--backend sqlite|postgresql|both]
                                  [--baseline REF] [--reads 300]

For each backend and each code (baseline first, then this checkout): a fresh database, our
server under gunicorn (auth off) started from that code, then
1. ingest: the search benchmark's referral population (bench/population.py) POSTed as
   transaction Bundles through the full write path; resources/s of wall time;
2. sizes after `VACUUM (ANALYZE)` (PostgreSQL; autovacuum would do the same) or `ANALYZE`
   (SQLite): `resource_history` with its indexes (PostgreSQL `pg_total_relation_size`,
   SQLite the `dbstat` pages of the table and its indexes) and the whole database (PostgreSQL
   `pg_database_size`, SQLite pages in use), per resource and extrapolated to 1M resources;
3. reads over one keep-alive connection, `--reads` each, the same ids for both codes:
   current read (`GET Task/id`), vread of a superseded version (`GET Task/id/_history/1`),
   instance history (`GET Task/id/_history`); p50 / p95 ms;
4. updates: every Patient rewritten once (PUT in transaction Bundles of 100): the write path
   that now compresses the version it supersedes; updates/s.
Ratios are this code against the baseline. `--baseline` defaults to the parent of the commit
that introduced `fhir_server/storage/history_bodies.py`. PostgreSQL uses FHIR_TEST_PG_URL
(an admin URL; a database per run is created and dropped).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.harness import ROOT, Server, database_url, free_port, wait_ready  # noqa: E402
from bench.population import Patients  # noqa: E402
from bench.search_bench import _post_all, analyze, ingest  # noqa: E402


def baseline_ref() -> str:
    """The parent of the commit that added history_bodies.py."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "--diff-filter=A", "-1", "--",
         "fhir_server/storage/history_bodies.py"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    if not added:
        raise SystemExit("history_bodies.py is not committed: pass --baseline")
    return f"{added}~1"


def checkout(ref: str) -> Path:
    """The tree of `ref` in a temporary directory (git archive: no worktree to clean up)."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT,
                             capture_output=True, check=True).stdout
    target = Path(tempfile.mkdtemp(prefix="history-baseline-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def start_server(code: Path, url: str) -> Server:
    """Our server from the tree at `code` (its own migrations and modules) on `url`."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=url, FHIR_SERVER_AUTH="off", PYTHONPATH=str(code))
    subprocess.run([sys.executable, "-m", "fhir_server", "init-db"], env=env, check=True,
                   cwd=code, capture_output=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port),
         "--workers", "2", "--threads", "2"],
        env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/fhir/metadata")
    return Server(proc, port)


def sizes(url: str) -> dict[str, float]:
    """Resources, versions, superseded versions and bytes of history and database."""
    engine = create_engine(url)
    with engine.connect() as conn:
        out: dict[str, float] = {
            "resources": conn.execute(text("SELECT count(*) FROM resources")).scalar_one(),
            "versions": conn.execute(text("SELECT count(*) FROM resource_history")
                                     ).scalar_one(),
            "revision": conn.execute(text("SELECT version_num FROM alembic_version")
                                     ).scalar_one(),
        }
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            out["history_bytes"] = conn.exec_driver_sql(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'resource_history' OR name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'resource_history' "
                "AND type = 'index')").scalar_one()
            page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            used = (conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                    - conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
            out["database_bytes"] = used * page
        else:
            out["history_bytes"] = conn.execute(text(
                "SELECT pg_total_relation_size('resource_history')")).scalar_one()
            out["database_bytes"] = conn.execute(text(
                "SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    return out


def read_ids(url: str, n: int) -> list[str]:
    """Ids of Tasks with more than one version (so version 1 is superseded), seeded order."""
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = sorted(conn.execute(text(
            "SELECT res_id FROM resources WHERE res_type = 'Task' AND version > 1")).scalars())
    engine.dispose()
    rng = random.Random(5)
    return [rng.choice(ids) for _ in range(n)]


def latency(port: int, paths: list[str]) -> tuple[float, float]:
    """p50 / p95 ms of GETs of `paths` over one keep-alive connection (one warm-up)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for i, path in enumerate([paths[0], *paths]):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "application/fhir+json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"{path}: {resp.status} {body[:300]!r}")
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


def patient_updates(n_patients: int) -> Iterator[list[dict[str, Any]]]:
    """Every Patient rewritten once (a new telecom), 100 to a transaction Bundle."""
    rng = random.Random(9)
    patients = Patients()
    for start in range(0, n_patients, 100):
        entries = []
        for i in range(start, min(n_patients, start + 100)):
            patient = patients.first_round(i)[0]["resource"]
            patient["telecom"] = [{"system": "phone", "value": f"555-{rng.randrange(10**7):07d}"}]
            entries.append({"resource": patient, "request": {
                "method": "PUT", "url": f"Patient/pat-{i}"}})
        yield entries


def run(code: Path, url: str, size: int, reads: int, ids: list[str] | None,
        ) -> tuple[dict[str, float], list[str]]:
    """One code on one fresh database: the figures and the ids read."""
    server = start_server(code, url)
    try:
        n_patients, secs = ingest(server.port, size, 3, 25)
        analyze(url)
        out = sizes(url)
        out["ingest_per_s"] = out["resources"] / secs
        ids = ids or read_ids(url, reads)
        for name, path in (("current", "/fhir/Task/{}"), ("vread", "/fhir/Task/{}/_history/1"),
                           ("history", "/fhir/Task/{}/_history")):
            out[f"{name}_p50"], out[f"{name}_p95"] = latency(
                server.port, [path.format(i) for i in ids])
        t0 = time.perf_counter()
        sent = _post_all(server.port, patient_updates(n_patients), 3)
        out["updates_per_s"] = sent / (time.perf_counter() - t0)
    finally:
        server.stop()
    return out, ids


def drop(url: str) -> None:
    """Remove a PostgreSQL benchmark database (SQLite files stay in their temp dir)."""
    target = make_url(url)
    if target.get_backend_name() != "postgresql":
        return
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


def report(backend: str, before: dict[str, float], after: dict[str, float]) -> None:
    print(f"\n{backend}: {after['resources']:,.0f} resources, {after['versions']:,.0f} "
          f"versions (baseline at {before['revision']}, this code at {after['revision']})")
    print(f"{'':34} {'baseline':>12} {'this code':>12} {'ratio':>7}")

    def row(label: str, key: str, fmt: str, scale: float = 1.0) -> None:
        b, a = before[key] * scale, after[key] * scale
        print(f"{label:34} {b:12{fmt}} {a:12{fmt}} {a / b:7.2f}")

    for key, label in (("history_bytes", "history"), ("database_bytes", "database")):
        before[f"{key}_per"] = before[key] / before["resources"]
        after[f"{key}_per"] = after[key] / after["resources"]
        row(f"{label} bytes per resource", f"{key}_per", ",.0f")
        row(f"{label} GB per 1M (extrapolated)", f"{key}_per", ",.2f", 1e6 / 1e9)
    row("ingest resources/s", "ingest_per_s", ",.0f")
    row("Patient updates/s", "updates_per_s", ",.0f")
    for name in ("current", "vread", "history"):
        row(f"{name} read p50 ms", f"{name}_p50", ".2f")
        row(f"{name} read p95 ms", f"{name}_p95", ".2f")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--baseline", help="git ref of the code to compare with")
    ap.add_argument("--reads", type=int, default=300)
    args = ap.parse_args()
    ref = args.baseline or baseline_ref()
    base_code = checkout(ref)
    print(f"baseline {ref} in {base_code}; this code {ROOT}", flush=True)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        results = []
        ids = None
        for code in (base_code, ROOT):
            url = database_url(backend, os.environ.get("FHIR_TEST_PG_URL"))
            try:
                figures, ids = run(code, url, args.size, args.reads, ids)
            finally:
                drop(url)
            results.append(figures)
            print(f"{backend} {'baseline' if code == base_code else 'this code'}: done",
                  flush=True)
        report(backend, *results)


if __name__ == "__main__":
    main()
