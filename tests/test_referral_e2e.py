"""The whole closed loop over HTTP, and the example referral bundles (examples/).

Screening QR + referral bundle -> owner accepts -> in-progress -> completes with a Procedure ->
requester completes the ServiceRequest; then history, $timeline and $referral-metrics.
Parties act through the test-only X-Test-Org header (see tests/test_workflow_http.py).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.dbs import fresh_database_url
from tests.outcomes_support import groups
from tests.test_workflow_http import _TestPartyRequest, as_org, etag, resulting

EXAMPLES = REPO_ROOT / "examples"
MRN = "http://hospital.example.org/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi"
CLINIC_NPI, CBO_NPI = "1457398021", "1902886548"


def example(n: int) -> dict:
    return json.loads((EXAMPLES / f"referral-bundle-{n}.json").read_text())


@pytest.fixture(scope="module")
def http(server):
    server.app.request_class = _TestPartyRequest
    return server


def _one(server, res_type: str, **params: str) -> dict:
    bundle = server.get(res_type, params=params).json()
    entries = [e["resource"] for e in bundle.get("entry", [])
               if e.get("search", {}).get("mode", "match") == "match"]
    assert len(entries) == 1, (res_type, params, len(entries))
    return entries[0]


def _created(response, res_type: str) -> str:
    for entry in response.json()["entry"]:
        location = entry["response"].get("location", "")
        if location.startswith(f"{res_type}/"):
            return "/".join(location.split("/")[:2])
    raise AssertionError(f"no {res_type} in the transaction response")


def test_full_direct_referral_loop(http):
    server = http
    resp = server.post("", example(1))
    assert resp.status_code == 200, resp.text
    task_ref, sr_ref = _created(resp, "Task"), _created(resp, "ServiceRequest")
    qr_ref = _created(resp, "QuestionnaireResponse")
    clinic = "Organization/" + _one(server, "Organization",
                                    identifier=f"{NPI}|{CLINIC_NPI}")["id"]
    cbo = "Organization/" + _one(server, "Organization", identifier=f"{NPI}|{CBO_NPI}")["id"]
    patient = "Patient/" + _one(server, "Patient", identifier=f"{MRN}|MRN-204-7731")["id"]
    scored = server.get("Observation", params={"derived-from": qr_ref}).json()
    assert scored.get("entry"), "the PHQ-9 was scored into Observations"

    task = server.get(task_ref).json()
    assert task["status"] == "requested" and task["owner"]["reference"] == cbo
    # the clinic (PractitionerRole's organization) is the requester, not the owner
    accept = {**copy.deepcopy(task), "status": "accepted"}
    resp = server.put(task_ref, accept, headers={**etag(task), **as_org(clinic)})
    assert resp.status_code == 403, resp.text
    task = _put(server, task_ref, {**task, "status": "accepted"}, cbo)
    task = _put(server, task_ref, {**task, "status": "in-progress"}, cbo)
    no_outcome = {**task, "status": "completed"}
    resp = server.put(task_ref, no_outcome, headers={**etag(task), **as_org(cbo)})
    assert resp.status_code == 422 and "output" in resp.text, resp.text
    procedure = server.post("Procedure", {
        "resourceType": "Procedure", "status": "completed", "subject": {"reference": patient},
        "basedOn": [{"reference": sr_ref}], "performedDateTime": "2026-11-20",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "385721005",
                             "display": "Psychotherapy"}]}}, headers=as_org(cbo))
    assert procedure.status_code == 201, procedure.text
    proc_ref = f"Procedure/{procedure.json()['id']}"
    task = _put(server, task_ref, {**task, "status": "completed",
                                   "output": [resulting(proc_ref)]}, cbo)

    sr = server.get(sr_ref).json()
    resp = server.put(sr_ref, {**sr, "status": "completed"}, headers=as_org(cbo))
    assert resp.status_code == 403, resp.text
    resp = server.put(sr_ref, {**sr, "status": "completed"}, headers=as_org(clinic))
    assert resp.status_code == 200 and resp.json()["status"] == "completed", resp.text
    assert server.get(task_ref).json()["status"] == "completed"  # closed tasks stay

    history = server.get(f"{task_ref}/_history").json()
    statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
    assert statuses == ["requested", "accepted", "in-progress", "completed"]
    timeline = server.get(f"{task_ref}/$timeline").json()
    events = [p for p in timeline["parameter"] if p["name"] == "event"]
    parts = [{q["name"]: q for q in e["part"]} for e in events]
    assert [p["status"]["valueCode"] for p in parts] == statuses
    assert parts[2]["previousStatus"]["valueCode"] == "accepted"
    metrics = server.get("$referral-metrics", params={
        "owner": cbo, "start": "2026-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}).json()
    org = groups(metrics, "owner")[cbo]
    assert org["total"] == 1 and org["funnel.completed"] == 1
    assert org["closedLoopRate"] == 1 and org["acceptanceRate"] == 1
    assert org["name"] == "Lakeside Behavioral Health Services"
    csv = server.get("$referral-metrics", params={"owner": cbo, "_format": "text/csv"})
    assert csv.status_code == 200 and cbo in csv.text
    assert "Lakeside Behavioral Health Services" in csv.text


def _put(server, ref: str, body: dict, org: str) -> dict:
    resp = server.put(ref, body, headers={**etag(body), **as_org(org)})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_second_referral_reuses_patient_and_organizations(http):
    server = http
    resp = server.post("", example(2))
    assert resp.status_code == 200, resp.text
    patients = server.get("Patient", params={"identifier": f"{MRN}|MRN-204-7731"}).json()
    assert len(patients["entry"]) == 1
    statuses = [e["response"]["status"] for e in resp.json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("200")  # reused
    task = server.get(_created(resp, "Task")).json()
    assert task["for"]["reference"] == "Patient/" + patients["entry"][0]["resource"]["id"]


def test_examples_load_with_the_cli(server, tmp_path):
    backend = server.database.engine.url.get_backend_name()
    url = fresh_database_url("postgresql" if backend.startswith("postgres") else "sqlite",
                             tmp_path)
    from fhir_server.storage.db import Database
    from fhir_server.tables import metadata

    db = Database(url)
    metadata.create_all(db.engine)
    db.dispose()
    env = {**os.environ, "DATABASE_URL": url, "FHIR_SERVER_AUTH": "off"}
    files = [str(EXAMPLES / f"referral-bundle-{n}.json") for n in (1, 2)]
    directory = str(EXAMPLES / "directory" / "directory-bundle.json")
    from sqlalchemy import text

    def load(*paths: str) -> str:
        done = subprocess.run([sys.executable, "-m", "fhir_server", "load", *paths], env=env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def stored() -> tuple[dict, int]:
        db = Database(url)
        with db.read() as conn:
            counts = dict(conn.execute(text(
                "SELECT res_type, COUNT(*) FROM resources GROUP BY res_type")).all())
            versions = conn.execute(text("SELECT COUNT(*) FROM resource_history")).scalar()
        db.dispose()
        return counts, versions

    assert load(*files).count("transaction of 9 entries") == 2
    counts, versions = stored()
    assert counts["Patient"] == 1 and counts["Organization"] == 2
    assert counts["PractitionerRole"] == 1
    assert counts["Task"] == 2 and counts["ServiceRequest"] == 2
    assert counts["QuestionnaireResponse"] == 2 and counts["Consent"] == 2
    # `make run` twice: the second load finds every resource (conditional creates) and
    # writes nothing, and an unchanged directory gets no new versions.
    first_directory = load(directory)
    assert "transaction of 563 entries" in first_directory, first_directory
    counts, versions = stored()
    again = load(*files, directory)
    assert again.count("transaction of 9 entries") == 2
    assert "transaction of 0 entries (563 unchanged, skipped)" in again, again
    assert stored() == (counts, versions)


def test_examples_claim_the_sdohcc_profiles():
    for n in (1, 2):
        resources = {e["resource"]["resourceType"]: e["resource"] for e in example(n)["entry"]}
        for res_type in ("Task", "ServiceRequest", "Consent", "Condition"):
            assert resources[res_type]["meta"]["profile"][0].startswith(
                "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-")
        assert Path(EXAMPLES / f"referral-bundle-{n}.json").stat().st_size < 20_000
