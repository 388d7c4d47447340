"""History storage benchmark: bytes per resource of `resource_history` and of the whole
database, write throughput and read latencies, for this code and for a baseline commit
(before history compression), in the same run, on the same population.

    python bench/history_bench.py [--size 20000] [--backend sqlite|postgresql|both]
                                  [--baseline REF] [--reads 300]

For each backend, both codes side by side (the baseline and this checkout), each with a
fresh database and our server under gunicorn (auth off, 2 workers) started from that code:
1. ingest: the search benchmark's referral population (bench/population.py) POSTed as
   transaction Bundles through the full write path, to both servers at the same time (the
   machine's noise falls on both alike); resources/s of wall time;
2. sizes after `VACUUM (ANALYZE)` (PostgreSQL; autovacuum would do the same) or `ANALYZE`
   (SQLite): `resource_history` with its indexes (PostgreSQL `pg_total_relation_size`,
   SQLite the `dbstat` pages of the table and its indexes) and the whole database (PostgreSQL
   `pg_database_size`, SQLite pages in use), per resource and extrapolated to 1M resources;
3. reads over one keep-alive connection per server, requests alternating between them,
   `--reads` each, the same ids for both codes:
   current read (`GET Task/id`), vread of a superseded version (`GET Task/id/_history/1`),
   instance history (`GET Task/id/_history`); p50 / p95 ms;
4. updates: every Patient rewritten once (PUT in transaction Bundles of 100), both servers
   at the same time: the write path that now compresses the version it supersedes;
   updates/s.
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
import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.harness import ROOT, Server, database_url, free_port, wait_ready  # noqa: E402
from bench.population import Patients  # noqa: E402
from bench.search_bench import (  # noqa: E402
    RESOURCES_PER_PATIENT,
    _post_all,
    analyze,
    ingest,
)


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
    # Two servers load at once on a shared machine: a 100-patient Bundle may wait past the
    # default 30 s request budget, which is not what this benchmark measures.
    env = dict(os.environ, DATABASE_URL=url, FHIR_SERVER_AUTH="off", PYTHONPATH=str(code),
               FHIR_SERVER_REQUEST_SECONDS="600")
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


def latencies(ports: list[int], paths: list[str]) -> list[tuple[float, float]]:
    """p50 / p95 ms of GETs of `paths` on each server, one keep-alive connection each, the
    servers' requests interleaved (the machine's noise falls on both alike); one warm-up."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for port in ports]
    times: list[list[float]] = [[] for _ in ports]
    for i, path in enumerate([paths[0], *paths]):
        order = range(len(ports)) if i % 2 else reversed(range(len(ports)))
        for k in order:
            t0 = time.perf_counter()
            conns[k].request("GET", path, headers={"Accept": "application/fhir+json"})
            resp = conns[k].getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{path}: {resp.status} {body[:300]!r}")
            if i:
                times[k].append((time.perf_counter() - t0) * 1000)
    out = []
    for series in times:
        series.sort()
        out.append((statistics.median(series), series[max(0, int(len(series) * 0.95) - 1)]))
    return out


def both(task: Callable[[int], float], count: int) -> list[float]:
    """`task(k)` for k in range(count) at the same time (threads); their results. A task
    that fails (SystemExit included: a refused bundle) fails the benchmark."""
    results = [0.0] * count
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            results[k] = task(k)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


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


def run(codes: list[Path], urls: list[str], size: int, reads: int) -> list[dict[str, float]]:
    """Each code on its fresh database, side by side: loads and update rounds run at the
    same time, reads alternate between the servers."""
    servers = [start_server(code, url) for code, url in zip(codes, urls, strict=True)]
    out: list[dict[str, float]] = [{} for _ in codes]
    n_patients = max(1, int((size - 1400) / RESOURCES_PER_PATIENT))
    try:
        seconds = both(lambda k: ingest(servers[k].port, size, 3, 25)[1], len(codes))
        for k, url in enumerate(urls):
            analyze(url)
            out[k].update(sizes(url))
            out[k]["ingest_per_s"] = out[k]["resources"] / seconds[k]
        ids = read_ids(urls[-1], reads)
        for name, path in (("current", "/fhir/Task/{}"), ("vread", "/fhir/Task/{}/_history/1"),
                           ("history", "/fhir/Task/{}/_history")):
            figures = latencies([s.port for s in servers], [path.format(i) for i in ids])
            for k, (p50, p95) in enumerate(figures):
                out[k][f"{name}_p50"], out[k][f"{name}_p95"] = p50, p95

        def update_round(k: int) -> float:
            t0 = time.perf_counter()
            sent = _post_all(servers[k].port, patient_updates(n_patients), 3)
            return sent / (time.perf_counter() - t0)

        for k, per_s in enumerate(both(update_round, len(codes))):
            out[k]["updates_per_s"] = per_s
    finally:
        for server in servers:
            server.stop()
    return out


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
        urls = [database_url(backend, os.environ.get("FHIR_TEST_PG_URL")) for _ in range(2)]
        try:
            before, after = run([base_code, ROOT], urls, args.size, args.reads)
        finally:
            for url in urls:
                drop(url)
        report(backend, before, after)


if __name__ == "__main__":
    main()
