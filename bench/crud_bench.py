"""CRUD mix driven by wrk against our server and against the bare ceiling, same run.

    python -m bench.crud_bench [--seconds 20] [--connections 32] [--rounds 2]
                               [--backends sqlite,postgresql] [--workers N --threads N]

The mix is `bench/crud_mix.lua` (create, read, update, search, delete of a Patient, in
turn on each of wrk's connections); the ceiling is `bench/ceiling_app.py` (the same Flask,
gunicorn and `Database` doing one bare statement per row, with the same process and thread
counts as our server's defaults). wrk is a C load generator
(Debian package `wrk`), so the client takes little of the cores the servers need.

Per backend and round, on a fresh database each: the ceiling, then our server (`python -m
fhir_server serve` with its default process count unless --workers/--threads are given),
each warmed up for 3 s and then measured. Prints one JSON line per measurement, and our
throughput as a ratio of the ceiling measured in the same round. It also prints the servers'
CPU time per request (gunicorn master and workers, from /proc) and the ceiling's CPU per
request divided by ours (`cpu_ratio_of_ceiling`): on a shared machine, other jobs shift
throughput and latency far more than they shift CPU per request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from bench.harness import ROOT, database_url, start_fhir_server, start_module_server
from fhir_server.cli import default_workers
from fhir_server.config import Settings

SCRIPT = Path(__file__).with_name("crud_mix.lua")


def wrk(port: int, prefix: str, seconds: float, connections: int, threads: int = 2) -> dict:
    """Run the mix once; the Lua script's `done` prints the JSON summary."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench.crud_bench needs wrk (Debian: apt-get install wrk)")
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--timeout", "30s", "-s", str(SCRIPT), f"http://127.0.0.1:{port}"],
        env=dict(os.environ, CRUD_PREFIX=prefix), capture_output=True, text=True, check=True,
        cwd=ROOT)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["throughput_rps"] = round(summary["requests"] / summary["seconds"], 1)
    return summary


def measure(name: str, server, prefix: str, seconds: float, connections: int) -> dict:  # type: ignore[no-untyped-def]
    try:
        wrk(server.port, prefix, 3, connections)  # warm-up
        cpu_before = server.cpu_seconds()
        row = {"name": name, **wrk(server.port, prefix, seconds, connections)}
        row["server_cpu_ms_per_request"] = round(
            1000 * (server.cpu_seconds() - cpu_before) / max(1, row["requests"]), 3)
        row["server_rss_mb"] = round(server.rss_mb(), 1)
        return row
    finally:
        server.stop()


def run(backend: str, seconds: float, connections: int, rounds: int,
        workers: int | None, threads: int | None) -> list[dict]:
    pg = os.environ.get("FHIR_TEST_PG_URL")
    processes = {} if workers is None else {"workers": workers, "threads": threads or 8}
    rows = []
    for round_number in range(1, rounds + 1):
        ceiling = start_module_server("bench.ceiling_app:app", database_url(backend, pg),
                                      workers=workers or default_workers(),
                                      threads=threads or Settings().serve_threads)
        bare = measure(f"{backend} ceiling", ceiling, "/bare", seconds, connections)
        ours_server = start_fhir_server(database_url(backend, pg), **processes)
        ours = measure(f"{backend} ours", ours_server, "/fhir/Patient", seconds, connections)
        ours["ratio_of_ceiling"] = round(ours["throughput_rps"] / bare["throughput_rps"], 3)
        ours["cpu_ratio_of_ceiling"] = round(bare["server_cpu_ms_per_request"]
                                             / ours["server_cpu_ms_per_request"], 3)
        for row in (bare, ours):
            row["round"] = round_number
            print(json.dumps(row), flush=True)
        rows += [bare, ours]
    ratios = [r["ratio_of_ceiling"] for r in rows if "ratio_of_ceiling" in r]
    cpu_ratios = [r["cpu_ratio_of_ceiling"] for r in rows if "cpu_ratio_of_ceiling" in r]
    print(json.dumps({"backend": backend, "ratio_of_ceiling_median": statistics.median(ratios),
                      "ratios": ratios, "cpu_ratios": cpu_ratios}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: the server's)")
    parser.add_argument("--threads", type=int, help="threads per worker (with --workers)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "postgresql" and not os.environ.get("FHIR_TEST_PG_URL"):
            print("skipping postgresql: FHIR_TEST_PG_URL not set")
            continue
        run(backend, args.seconds, args.connections, args.rounds, args.workers, args.threads)


if __name__ == "__main__":
    main()
