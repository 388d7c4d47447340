"""What auditing reads of patient data costs: the same authenticated read load with
`FHIR_SERVER_AUDIT_READS` on and off, in one run, driven by `wrk` (a separate C process, so
the client does not steal the Python server's CPU).

Each round starts gunicorn (auth on) on a fresh database holding one clinic's referral,
gets a partner's Backend Services token, and runs `wrk` on `GET Patient/<id>` (BALP
PatientRead: one AuditEvent per request) and on `GET QuestionnaireResponse?subject=`
(PatientQuery). It prints requests/s, p50/p95/p99 and the AuditEvents written, and the
ratio of audited to unaudited throughput.

Usage: python -m bench.audit_bench [--seconds 15] [--connections 8] [--workers 2]
       [--backend sqlite|postgresql]   (PostgreSQL needs FHIR_TEST_PG_URL; make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import requests
from joserfc.jwk import RSAKey

from bench.harness import ROOT, database_url, free_port, wait_ready
from fhir_server.auth.audit_store import count_audit
from fhir_server.auth.cli import add_client
from fhir_server.storage.db import Database
from tests.auth_support import assertion


def _start(db_url: str, port: int, workers: int, audit: bool) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=db_url, FHIR_SERVER_AUTH="on",
               FHIR_SERVER_BASE_URL=f"http://127.0.0.1:{port}/fhir",
               FHIR_SERVER_AUDIT_READS="on" if audit else "off",
               FHIR_SERVER_REQUIRED_PROFILES="none")
    subprocess.run([sys.executable, "-m", "fhir_server", "init-db"], env=env, check=True,
                   cwd=ROOT, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "fhir_server", "serve", "--port", str(port),
                             "--workers", str(workers), "--threads", "4"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/fhir/metadata")
    return proc


def _token(base: str, key: RSAKey, client_id: str) -> str:
    token_url = base.replace("/fhir", "/auth/token")
    resp = requests.post(token_url, data={
        "grant_type": "client_credentials", "scope": "system/*.cruds",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(key, client_id, token_url)}, timeout=30)
    resp.raise_for_status()
    return resp.json()["access_token"]


def _data(base: str, clinic: str) -> tuple[str, str]:
    """A clinic's patient and screening; returns (patient id, query for its responses)."""
    h = {"Authorization": f"Bearer {clinic}", "Content-Type": "application/fhir+json"}
    org = {"resourceType": "Organization", "id": "clinic", "name": "Clinic"}
    requests.put(f"{base}/Organization/clinic", json=org, headers=h, timeout=30)
    patient = requests.post(f"{base}/Patient", headers=h, timeout=30, json={
        "resourceType": "Patient", "name": [{"family": "Rivera"}],
        "managingOrganization": {"reference": "Organization/clinic"}}).json()["id"]
    for _ in range(3):
        requests.post(f"{base}/QuestionnaireResponse", headers=h, timeout=30, json={
            "resourceType": "QuestionnaireResponse", "status": "completed",
            "subject": {"reference": f"Patient/{patient}"}})
    return patient, f"QuestionnaireResponse?subject=Patient/{patient}"


_PERCENTILES = """done = function(summary, latency, requests)
  for _, p in pairs({50, 95, 99}) do
    io.write(string.format("P%d_US %d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("ERRORS %d\\n", summary.errors.status + summary.errors.connect
                                          + summary.errors.read + summary.errors.timeout))
end
"""


def _wrk(url: str, token: str, seconds: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_PERCENTILES)
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                          "-s", script.name, "-H", f"Authorization: Bearer {token}", url],
                         capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "errors": int(re.search(r"ERRORS (\d+)", out).group(1))}
    for p in (50, 95, 99):
        result[f"p{p}_ms"] = round(int(re.search(rf"P{p}_US (\d+)", out).group(1)) / 1000, 2)
    return result


def round_(audit: bool, args: argparse.Namespace) -> dict:
    db_url = database_url(args.backend, os.environ.get("FHIR_TEST_PG_URL"))
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    key = RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True)
    db = Database(db_url)
    proc = _start(db_url, port, args.workers, audit)
    try:
        jwks = {"keys": [key.as_dict(private=False)]}
        add_client(db, "clinic", "Organization/clinic", "system/*.cruds", jwks=jwks)
        add_client(db, "reader", "Organization/clinic", "system/*.cruds", jwks=jwks)
        patient, query = _data(base, _token(base, key, "clinic"))
        token = _token(base, key, "reader")
        before = count_audit(db)
        read = _wrk(f"{base}/Patient/{patient}", token, args.seconds, args.connections)
        search = _wrk(f"{base}/{query}", token, args.seconds, args.connections)
        time.sleep(1.5)  # the last batch of the audit queue
        return {"audit": audit, "read": read, "search": search,
                "audit_events": count_audit(db) - before}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    off = round_(False, args)
    on = round_(True, args)
    print(json.dumps({"off": off, "on": on}, indent=2))
    for kind in ("read", "search"):
        print(f"{kind}: audited {on[kind]['rps']:.0f} req/s, p95 {on[kind]['p95_ms']} ms; "
              f"unaudited {off[kind]['rps']:.0f} req/s, p95 {off[kind]['p95_ms']} ms; "
              f"ratio {on[kind]['rps'] / max(off[kind]['rps'], 1e-9):.2f}")
    print(f"AuditEvents written with auditing on: {on['audit_events']}")


if __name__ == "__main__":
    main()
