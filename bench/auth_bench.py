"""Benchmark of the authorization layer.

1. Request overhead of token validation + policy: `authenticate()` + `check_interaction()`
   + `restrict_for()` per request (p50/p95; goal < 1 ms).
2. Backend Services token endpoint throughput (client_credentials + RS384 private_key_jwt,
   assertions pre-signed by the clients): first on an in-process werkzeug server (clients
   share the GIL: a floor), then under gunicorn as in production with clients in separate
   processes (goal >= 200 tokens/s).

Usage: python -m bench.auth_bench [--database-url URL] [--requests N] [--tokens N]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import requests
from flask import Flask
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

import fhir_server.auth.auth_schema  # noqa: F401
from bench.harness import start_module_server
from fhir_server.auth.bearer import authenticate
from fhir_server.auth.cli import add_client
from fhir_server.auth.policy import check_interaction, restrict_for
from fhir_server.auth.server import create_auth_blueprint
from fhir_server.config import Settings
from fhir_server.storage.db import Database
from fhir_server.storage.schema import metadata

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    tmp = tempfile.mkdtemp()
    db = Database(args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
    metadata.create_all(db.engine)

    key = RSAKey.generate_key(2048, parameters={"kid": "b1"}, private=True)
    add_client(db, "bench", "Organization/b", "system/Task.rsu system/ServiceRequest.rs",
               jwks={"keys": [key.as_dict(private=False)]})
    app = Flask("bench")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    root = f"http://127.0.0.1:{server.server_port}"
    settings = Settings(base_url=f"{root}/fhir")
    app.register_blueprint(create_auth_blueprint(db, settings))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token_url = f"{root}/auth/token"

    def sign() -> str:
        claims = {"iss": "bench", "sub": "bench", "aud": token_url,
                  "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}
        return jwt.encode({"alg": "RS384", "kid": "b1"}, claims, key, algorithms=["RS384"])

    def token_request(session: requests.Session, assertion: str | None = None) -> str:
        assertion = assertion or sign()
        r = session.post(token_url, data={
            "grant_type": "client_credentials", "scope": "system/Task.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        r.raise_for_status()
        return r.json()["access_token"]

    # warm up, then 1: per-request validation + policy overhead
    access = token_request(requests.Session())
    headers = {"Authorization": f"Bearer {access}"}
    samples = []
    for _ in range(200):  # warm-up (statement cache, connection pool)
        authenticate(headers, db, settings)
    cpu_start = time.process_time()
    for _ in range(args.requests):
        start = time.perf_counter()
        ctx = authenticate(headers, db, settings)
        check_interaction(ctx, "search-type", "Task")
        restrict_for(ctx, "Task")
        samples.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu_start) / args.requests * 1000
    print(f"validation+policy per request: CPU {cpu_ms:.3f} ms mean, "
          f"wall p50 {statistics.median(samples):.3f} ms, "
          f"p95 {_pct(samples, 0.95):.3f} ms, p99 {_pct(samples, 0.99):.3f} ms "
          f"({args.requests} requests, {db.url.get_backend_name()})")

    # 2a: token endpoint, in-process Flask client on one thread (server-side cost per core)
    client = app.test_client()
    signed = [sign() for _ in range(args.tokens)]
    start, cpu_start = time.perf_counter(), time.process_time()
    for assertion in signed:
        r = client.post("/auth/token", base_url=root, data={
            "grant_type": "client_credentials", "scope": "system/Task.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        assert r.status_code == 200, r.data
    elapsed = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu_start) / args.tokens * 1000
    print(f"backend services token endpoint, in-process, 1 thread: "
          f"{args.tokens / elapsed:.0f} tokens/s ({elapsed / args.tokens * 1000:.2f} ms/token "
          f"wall, {cpu_ms:.2f} ms CPU = {1000 / cpu_ms:.0f} tokens/s per core)")

    # 2b: token endpoint throughput over HTTP
    sessions = threading.local()

    def one(assertion: str) -> None:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        token_request(sessions.s, assertion)

    assertions = [sign() for _ in range(args.tokens)]  # client-side work, not timed
    start = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(one, assertions))
    elapsed = time.perf_counter() - start
    print(f"backend services token endpoint: {args.tokens / elapsed:.0f} tokens/s "
          f"({args.tokens} tokens, {args.threads} client threads, RS384, HTTP loopback)")
    server.shutdown()
    gunicorn_throughput(db, key, args.tokens, args.workers)


def _send(port: int, assertions: list[str]) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    for assertion in assertions:
        body = urlencode({"grant_type": "client_credentials", "scope": "system/Task.rs",
                          "client_assertion_type": ASSERTION_TYPE,
                          "client_assertion": assertion})
        start = time.perf_counter()
        conn.request("POST", "/auth/token", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"token request failed: {resp.status}")
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def gunicorn_throughput(db: Database, key: RSAKey, count: int, workers: int) -> None:
    """Token endpoint under gunicorn (the production server), clients in other processes."""
    import multiprocessing as mp

    server = start_module_server("bench.auth_bench_app:app", str(db.url), workers=workers,
                                 threads=2)
    try:
        token_url = f"http://127.0.0.1:{server.port}/auth/token"
        assertions = [
            jwt.encode({"alg": "RS384", "kid": "b1"},
                       {"iss": "bench", "sub": "bench", "aud": token_url,
                        "exp": int(time.time()) + 280, "jti": uuid.uuid4().hex},
                       key, algorithms=["RS384"])
            for _ in range(count)
        ]
        chunks = [assertions[i::4] for i in range(4)]
        start = time.perf_counter()
        with mp.get_context("fork").Pool(4) as pool:
            results = pool.starmap(_send, [(server.port, c) for c in chunks])
        elapsed = time.perf_counter() - start
    finally:
        server.stop()
    latencies = [x for r in results for x in r]
    print(f"backend services token endpoint (gunicorn {workers} workers x 2 threads, "
          f"4 client processes): {count / elapsed:.0f} tokens/s, "
          f"p50 {statistics.median(latencies):.2f} ms, p95 {_pct(latencies, 0.95):.2f} ms")


if __name__ == "__main__":
    main()
