"""Benchmark plumbing: start our server (gunicorn) on a free port, drive it from several
client processes, and summarise latencies. Everything stays on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start")


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    def pids(self) -> list[int]:
        """The gunicorn master and its workers."""
        return [self.process.pid] + _children(self.process.pid)

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory of the gunicorn master and its workers, in MB. `RssAnon` counts
        the processes' own memory alone: VmRSS also holds the file pages of a memory-mapped
        SQLite database they have read (page cache the kernel reclaims under pressure)."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(f"{field}:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the gunicorn master and its workers: per
        request, a cost figure that other jobs on the machine do not inflate as they do
        latency and throughput."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / ticks

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def database_url(backend: str, pg_url: str | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='bench-')}/bench.sqlite3"
    if not pg_url:
        raise SystemExit("PostgreSQL benchmark needs FHIR_TEST_PG_URL (make bench starts one)")
    from tests.dbs import fresh_database_url

    return fresh_database_url("postgresql", Path(tempfile.mkdtemp()))


def start_fhir_server(db_url: str, *, workers: int | None = None, threads: int | None = None,
                      extra_env: dict[str, str] | None = None) -> Server:
    """`python -m fhir_server serve` on a free port; without workers/threads, the server's
    default process count."""
    port = free_port()
    processes = [] if workers is None else ["--workers", str(workers)]
    processes += [] if threads is None else ["--threads", str(threads)]
    env = dict(os.environ, DATABASE_URL=db_url, FHIR_SERVER_AUTH="off", **(extra_env or {}))
    subprocess.run([sys.executable, "-m", "fhir_server", "init-db"], env=env, check=True,
                   cwd=ROOT, capture_output=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), *processes],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/fhir/metadata")
    return Server(proc, port)


def start_module_server(module: str, db_url: str, *, workers: int, threads: int) -> Server:
    """Start another WSGI app (bench ceiling) under the same gunicorn settings."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=db_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads),
         "-k", "gthread", "-b", f"127.0.0.1:{port}", module],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/ping")
    return Server(proc, port)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def summarise(name: str, latencies_ms: list[float], seconds: float, errors: int = 0) -> dict:
    return {
        "name": name,
        "requests": len(latencies_ms),
        "errors": errors,
        "throughput_rps": round(len(latencies_ms) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p95_ms": round(percentile(latencies_ms, 95), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "mean_ms": round(statistics.fmean(latencies_ms), 2) if latencies_ms else 0.0,
    }


def json_request(conn: http.client.HTTPConnection, method: str, path: str,
                 body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes, dict]:
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    return resp.status, payload, dict(resp.getheaders())


def run_clients(worker: Callable[[int, float, int], tuple[list[float], int]], clients: int,
                seconds: float, port: int, processes: int = 4) -> tuple[list[float], int, float]:
    """Run `clients` closed-loop clients spread over `processes` processes for `seconds`.
    worker(port, deadline, n_threads) -> (latencies_ms, errors)."""
    import multiprocessing as mp

    per_proc = [clients // processes + (1 if i < clients % processes else 0)
                for i in range(processes)]
    start = time.time()
    deadline = start + seconds
    with mp.get_context("fork").Pool(processes) as pool:
        results = pool.starmap(worker, [(port, deadline, n) for n in per_proc if n])
    elapsed = time.time() - start
    latencies = [x for lat, _ in results for x in lat]
    errors = sum(e for _, e in results)
    return latencies, errors, elapsed
