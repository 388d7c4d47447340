"""Real processes on loopback for tests: our gunicorn server, delivery workers, HAProxy.

Each helper starts the same command an operator would run (`python -m fhir_server serve`,
`python -m fhir_server worker`, `haproxy -f cfg`), waits until it is ready, and stops it by
its own process id. Nothing here is a stand-in: the tests kill these processes for real.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until `url` answers below 500 (fail early when `proc` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers of its master)."""
    out = []
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(task.name))
    return sorted(out)


@dataclass
class Process:
    """A started process with its log file."""

    proc: subprocess.Popen
    log_path: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no clean-up runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def server_env(db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=db_url, FHIR_SERVER_AUTH="off",
               FHIR_SERVER_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def _spawn(args: list[str], env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path]:
    log_path = Path(tempfile.mkdtemp(prefix=f"{name}-")) / f"{name}.log"
    handle = open(log_path, "wb")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return proc, log_path


def init_db(db_url: str) -> None:
    """`python -m fhir_server init-db` (migrations and definitional resources)."""
    subprocess.run([sys.executable, "-m", "fhir_server", "init-db"], env=server_env(db_url),
                   cwd=ROOT, check=True, capture_output=True)


def start_server(db_url: str, *, workers: int = 1, threads: int = 4,
                 port: int | None = None, **env: str) -> Process:
    """`python -m fhir_server serve` (gunicorn) on a free loopback port."""
    port = port or free_port()
    full_env = server_env(db_url, **env)
    proc, log_path = _spawn([sys.executable, "-m", "fhir_server", "serve", "--port", str(port),
                             "--workers", str(workers), "--threads", str(threads)],
                            full_env, "server")
    return _ready(Process(proc, log_path, port, full_env))


def gunicorn_workers(server: Process) -> list[int]:
    return child_pids(server.pid)


def start_delivery_worker(db_url: str, base_url: str, **env: str) -> Process:
    """`python -m fhir_server worker` (Subscription delivery and the stalled sweep)."""
    full_env = server_env(db_url, FHIR_SERVER_BASE_URL=base_url, **env)
    proc, log_path = _spawn([sys.executable, "-m", "fhir_server", "worker"], full_env, "worker")
    return Process(proc, log_path, 0, full_env)


def haproxy_path() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None)


def start_haproxy(backend_ports: list[int]) -> Process:
    """HAProxy round-robin over our servers on loopback (HTTP mode, health-checked)."""
    binary = haproxy_path()
    if binary is None:
        raise RuntimeError("haproxy is not installed (Debian package haproxy)")
    port = free_port()
    # a busy server answers its health check late: down only after 5 misses
    servers = "\n".join(f"    server app{i} 127.0.0.1:{p} check inter 2s fall 5 rise 1"
                        for i, p in enumerate(backend_ports))
    config = f"""global
    maxconn 512
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout check 10s
    retries 3
    option redispatch
    option http-server-close
frontend fhir
    bind 127.0.0.1:{port}
    default_backend app
backend app
    balance roundrobin
    option httpchk GET /fhir/metadata
{servers}
"""
    cfg = Path(tempfile.mkdtemp(prefix="haproxy-")) / "haproxy.cfg"
    cfg.write_text(config)
    proc, log_path = _spawn([binary, "-db", "-f", str(cfg)], dict(os.environ), "haproxy")
    return _ready(Process(proc, log_path, port))


def _ready(started: Process) -> Process:
    """`started` once it answers on /fhir/metadata (killed, with its log, if it never
    does)."""
    try:
        wait_http(f"http://127.0.0.1:{started.port}/fhir/metadata", proc=started.proc)
    except RuntimeError as exc:
        started.kill()
        raise RuntimeError(f"{exc}\n{started.log()[-3000:]}") from None
    return started
