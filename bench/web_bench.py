"""Server time per page of the care team's app at 10,000 referrals (goal: p95 < 300 ms).

    python -m bench.web_bench [--referrals 10000] [--runs 40] [--backend sqlite|postgresql]

A fresh database gets the example directory (240 services), a clinic with one signed-in
clinician, and N referrals of that clinic (Patient, SDOHCC ServiceRequest, Task requested,
written as the system in transactions of 100 referrals). One patient also has six
PHQ-9 and six GAD-7 responses (scored by the server: Observations, the item-9 Flag and risk
Task) and five referrals. The whole server (auth on) runs on a loopback port; a
`requests` session signs in through the authorization server and then times, one request
at a time, the summary, the providers page ($match), the tracker and the referral page.
Each page is a full SMART client round: every read goes through the FHIR API in process with
the user's token (policy in SQL, audit). The baseline, measured in the same run, is the
single API search the tracker makes (`Task?code=fulfill&_sort=-_lastUpdated&_count=25`
with the same token), so the ratio shows what the page adds (names, rendering, session).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition"
TASK_PROFILE = f"{SDOHCC}/SDOHCC-TaskForReferralManagement"
SR_PROFILE = f"{SDOHCC}/SDOHCC-ServiceRequest"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1)]


def referral_entries(i: int, role: str, owner: str) -> list[dict]:
    """A patient, its ServiceRequest and referral Task, as transaction entries."""
    pid, sid = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    task = {"resourceType": "Task", "meta": {"profile": [TASK_PROFILE]},
            "status": "requested", "intent": "order", "priority": ("routine", "urgent")[i % 2],
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill"}]},
            "focus": {"reference": sid}, "for": {"reference": pid},
            "authoredOn": "2026-11-01T10:00:00Z", "requester": {"reference": role},
            "owner": {"reference": owner}}
    return [
        {"fullUrl": pid, "resource": {
            "resourceType": "Patient", "name": [{"given": [f"Pat{i}"], "family": f"Bench{i}"}],
            "birthDate": "1980-01-01",
            "identifier": [{"system": "http://bench.example/mrn", "value": f"B{i}"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": sid, "resource": {
            "resourceType": "ServiceRequest", "meta": {"profile": [SR_PROFILE]},
            "status": "active", "intent": "order", "priority": task["priority"],
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "410606002"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306226009"}]},
            "subject": {"reference": pid}, "requester": {"reference": role},
            "authoredOn": "2026-11-01T10:00:00Z"},
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": task,
         "request": {"method": "POST", "url": "Task"}},
    ]


def populate(server, referrals: int) -> dict:
    """The directory, the clinic, its clinician and the referrals."""
    from fhir_server.auth.context import SYSTEM
    from fhir_server.interactions.bundles import process_bundle
    from fhir_server.interactions.context import Call

    net = server.network
    call = Call(services=server.services, base_url=server.base, access=SYSTEM,
                prefer_return="minimal")
    directory = json.loads((ROOT / "examples/directory/directory-bundle.json").read_text())
    process_bundle(call, directory)
    net.organization("bench-clinic", "Bench Family Health Center")
    doctor = net.staff("bench_doctor", "bench-clinic", "Dana", "Bench")
    owners = [f"Organization/dir-org-{i:03d}" for i in range(40)]
    started = time.perf_counter()
    batch: list[dict] = []
    for i in range(referrals):
        batch += referral_entries(i, doctor.role, owners[i % len(owners)])
        if len(batch) >= 300 or i == referrals - 1:
            process_bundle(call, {"resourceType": "Bundle", "type": "transaction",
                                  "entry": batch})
            batch = []
    load_seconds = time.perf_counter() - started
    clinic = net.client_for("bench-clinic")
    patient = net.screened_patient(clinic, doctor, "Marisol", "Delgado",
                                   [2, 2, 2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 1, 1, 1, 1],
                                   earlier_phq9=[1, 1, 1, 1, 1, 1, 1, 0, 0])
    for k in range(4):
        from tests.test_screening_http import qr_for

        for key, scores in (("phq-9", [1] * 8 + [0]), ("gad-7", [1] * 7)):
            qr = qr_for(key, scores, f"Patient/{patient}", author=doctor.role)
            qr["authored"] = f"2026-0{k + 5}-01T10:00:00Z"
            clinic.post("QuestionnaireResponse", qr)
    task_ids = []
    for i in range(5):
        entries = referral_entries(referrals + i, doctor.role, owners[i])
        entries[0] = {"resource": {}, "request": {}}  # the existing patient instead
        entries = entries[1:]
        for entry in entries:
            for key in ("subject", "for"):
                if key in entry["resource"]:
                    entry["resource"][key] = {"reference": f"Patient/{patient}"}
        answer = process_bundle(Call(services=server.services, base_url=server.base,
                                     access=SYSTEM), {"resourceType": "Bundle",
                                                      "type": "transaction", "entry": entries})
        task_ids.append(answer.resource["entry"][1]["response"]["location"].split("/")[1])
    return {"patient": patient, "task": task_ids[0], "load_seconds": load_seconds}


def measure(session, url: str, runs: int) -> dict:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = session.get(url, allow_redirects=False, timeout=120)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
    return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(_pct(times, 95), 1),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--referrals", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    import logging

    logging.disable(logging.INFO)
    from fhir_server.storage.db import Database
    from fhir_server.storage.migrate import upgrade
    from tests.dbs import fresh_database_url
    from tests.web_support import sign_in_http, start_web_server

    tmp = Path(tempfile.mkdtemp(prefix="web-bench-"))
    if args.backend == "postgresql" and not os.environ.get("FHIR_TEST_PG_URL"):
        raise SystemExit("--backend postgresql needs FHIR_TEST_PG_URL (tools/test-postgres.sh)")
    db = Database(fresh_database_url(args.backend, tmp))
    upgrade(db)
    server, live = start_web_server(db, tmp)
    try:
        data = populate(server, args.referrals)
        session = sign_in_http(server, "bench_doctor")
        hub = session.cookies.get("mhr_clinician", path="/app")
        from fhir_server.web.sealing import Sealer

        token = Sealer.from_file(server.secret_file).open(hub, 3600)["hub"]["access_token"]
        import requests

        api = requests.Session()
        api.headers.update({"Authorization": f"Bearer {token}",
                            "Accept": "application/fhir+json"})
        root, patient = server.root, data["patient"]
        pages = {
            "summary": f"{root}/app/patients/{patient}",
            "providers ($match)": f"{root}/app/patients/{patient}/providers",
            "tracker": f"{root}/app/referrals",
            "tracker, filtered": f"{root}/app/referrals?status=requested&priority=urgent",
            "needs attention": f"{root}/app/referrals/attention",
            "referral": f"{root}/app/referrals/{data['task']}",
        }
        for url in pages.values():  # warm: discovery, directory cache, plans
            measure(session, url, 2)
        baseline = measure(api, f"{server.base}/Task?code=http://hl7.org/fhir/CodeSystem/"
                                f"task-code|fulfill&_sort=-_lastUpdated&_count=25", args.runs)
        results = {name: measure(session, url, args.runs) for name, url in pages.items()}
        report = {"backend": args.backend, "referrals": args.referrals,
                  "load_seconds": round(data["load_seconds"], 1),
                  "baseline_api_search": baseline, "pages": results,
                  "ratio_p95_to_baseline": {n: round(r["p95_ms"] / baseline["p95_ms"], 1)
                                            for n, r in results.items()},
                  "goal_p95_ms": 300,
                  "met": all(r["p95_ms"] < 300 for n, r in results.items()
                             if n in ("summary", "providers ($match)", "tracker"))}
        print(json.dumps(report, indent=2))
    finally:
        live.stop()
        db.dispose()


if __name__ == "__main__":
    main()
