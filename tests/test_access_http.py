"""The access layer on the real server with authentication on: bearer tokens from the
SMART Backend Services flow, scopes, and the organization policy narrowing reads, searches,
includes, chains, _has, history and bundle entries (searches narrowed, never post-filtered)."""

from __future__ import annotations

import pytest
import requests

from fhir_server.auth.audit import OUTCOME_DENIED
from fhir_server.auth.audit_store import list_audit_events
from fhir_server.auth.cli import add_client
from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.auth.scopes import parse_scopes
from fhir_server.interactions.bundles import process_bundle
from fhir_server.interactions.context import Call
from fhir_server.storage.repository import Repository
from fhir_server.storage.search_sql import find_ids
from tests.auth_support import Keys, assertion
from tests.live import FhirHttp, LiveServer
from tests.samples import sample

SNOMED = "http://snomed.info/sct"


def _task(tid: str, sr: str, patient: str, owner: str) -> dict:
    task = sample("Task", id=tid, focus={"reference": f"ServiceRequest/{sr}"},
                  requester={"reference": "Organization/A"},
                  owner={"reference": f"Organization/{owner}"})
    task["code"]["coding"][0]["code"] = "fulfill"
    task["for"] = {"reference": f"Patient/{patient}"}
    return task


def _put(resource: dict) -> dict:
    return {"resource": resource, "request": {
        "method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def _data() -> dict:
    consent = sample("Consent", id="consent1", patient={"reference": "Patient/P1"})
    qr1 = sample("QuestionnaireResponse", id="QR1", subject={"reference": "Patient/P1"})
    qr2 = sample("QuestionnaireResponse", id="QR2", subject={"reference": "Patient/P2"})
    qr1["status"] = qr2["status"] = "in-progress"
    sr1 = sample("ServiceRequest", id="SR1", subject={"reference": "Patient/P1"},
                 requester={"reference": "Organization/A"},
                 supportingInfo=[{"reference": "Consent/consent1"},
                                 {"reference": "QuestionnaireResponse/QR1"}])
    sr2 = sample("ServiceRequest", id="SR2", subject={"reference": "Patient/P2"},
                 requester={"reference": "Organization/A"},
                 supportingInfo=[{"reference": "QuestionnaireResponse/QR2"}])
    resources = [sample("Patient", id="P1"), sample("Patient", id="P2"), consent, qr1, qr2,
                  sr1, sr2, _task("T1", "SR1", "P1", "B"), _task("T2", "SR2", "P2", "C")]
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [_put(r) for r in resources]}


@pytest.fixture(scope="module")
def secured(database):
    from fhir_server.app import create_app
    from fhir_server.config import Settings
    from fhir_server.seed import seed_definitions

    settings = Settings.from_env(database_url=database.url.render_as_string(hide_password=False),
                                 base_url="", auth_mode="on", required_profiles="none",
                                 require_if_match_for_tasks=False)
    app = create_app(settings, db=database)
    services = app.extensions["fhir_services"]
    seed_definitions(services)
    live = LiveServer(app)
    base = live.base
    # The referring clinic (Organization/A) writes the referrals: it is their author.
    clinic = AccessContext(client_id="ehr-a", organization="Organization/A",
                           scopes=parse_scopes("system/*.cruds"))
    directory = [sample("Organization", id=o, name=f"Org {o}") for o in ("A", "B", "C")]
    process_bundle(Call(services=services, base_url=base, access=SYSTEM), {
        "resourceType": "Bundle", "type": "transaction", "entry": [_put(r) for r in directory]})
    process_bundle(Call(services=services, base_url=base, access=clinic), _data())
    keys = Keys()
    for client, org, scope in (("cbo-b", "B", "system/*.cruds"), ("cbo-c", "C", "system/*.cruds"),
                               ("ehr-a", "A", "system/*.cruds"),
                               ("narrow", "B", "system/Patient.rs")):
        add_client(database, client, f"Organization/{org}", scope,
                   jwks=Keys.public(keys.rsa))
    token_url = f"http://127.0.0.1:{live.port}/auth/token"

    def client_for(client_id: str, scope: str = "system/*.cruds") -> FhirHttp:
        resp = requests.post(token_url, data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(keys.rsa, client_id, token_url)}, timeout=30)
        assert resp.status_code == 200, resp.text
        token = resp.json()["access_token"]
        return FhirHttp(base, headers={"Authorization": f"Bearer {token}"})

    client_for.base = base
    client_for.database = database
    yield client_for
    live.stop()


def _ids(bundle: dict, mode: str = "match") -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if e.get("search", {}).get("mode", mode) == mode}


def test_missing_and_bad_tokens_are_401_and_metadata_is_open(secured):
    anonymous = FhirHttp(secured.base)
    resp = anonymous.get("Task")
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    bad = FhirHttp(secured.base, headers={"Authorization": "Bearer not-a-token"})
    assert bad.get("Task/T1").status_code == 401
    cap = anonymous.get("metadata")
    assert cap.status_code == 200
    security = cap.json()["rest"][0]["security"]
    assert any("oauth-uris" in e["url"] for e in security["extension"])
    assert requests.get(secured.base + "/.well-known/smart-configuration",
                        timeout=10).status_code == 200


def test_owner_sees_only_its_referral(secured):
    b = secured("cbo-b")
    tasks = b.get("Task").json()
    assert _ids(tasks) == {"Task/T1"} and tasks["total"] == 1
    assert b.get("Task/T1").status_code == 200
    assert b.get("Task/T2").status_code == 404
    assert b.get("ServiceRequest/SR1").status_code == 200
    assert b.get("ServiceRequest/SR2").status_code == 404
    assert b.get("Patient/P1").status_code == 200
    assert b.get("Patient/P2").status_code == 404
    assert _ids(b.get("Patient").json()) == {"Patient/P1"}
    assert b.get("Organization/C").status_code == 200  # directory data is shared


def test_consent_gates_clinical_details(secured):
    assert secured("cbo-b").get("QuestionnaireResponse/QR1").status_code == 200
    c = secured("cbo-c")
    assert c.get("ServiceRequest/SR2").status_code == 200
    assert c.get("Patient/P2").status_code == 200
    assert c.get("QuestionnaireResponse/QR2").status_code == 404  # no active Consent
    assert secured("ehr-a").get("QuestionnaireResponse/QR2").status_code == 200  # requester


def test_includes_chains_and_has_do_not_leak(secured):
    b = secured("cbo-b")
    inc = b.get("Task", params={"_include": "Task:focus"}).json()
    assert _ids(inc, "include") == {"ServiceRequest/SR1"}
    rev = b.get("ServiceRequest", params={"_revinclude": "Task:focus"}).json()
    assert _ids(rev) == {"ServiceRequest/SR1"} and _ids(rev, "include") == {"Task/T1"}
    chained = b.get("Task", params={"focus:ServiceRequest.subject": "Patient/P2"}).json()
    assert _ids(chained) == set()
    has = b.get("Patient", params={"_has:Task:patient:owner": "Organization/C"}).json()
    assert _ids(has) == set()
    everything = b.get("", params={"_type": "Task,ServiceRequest,Patient"}).json()
    assert _ids(everything) == {"Task/T1", "ServiceRequest/SR1", "Patient/P1"}


def test_history_is_narrowed(secured):
    b = secured("cbo-b")
    ids = {e["fullUrl"].rsplit("/", 1)[-1] for e in b.get("Task/_history").json()["entry"]}
    assert ids == {"T1"}
    assert b.get("Task/T2/_history").status_code == 404
    system = {e["fullUrl"].split("/fhir/", 1)[1]
              for e in b.get("_history", params={"_count": 1000}).json()["entry"]}
    assert "Task/T2" not in system and "Patient/P2" not in system


def test_bundle_entries_use_the_same_checks(secured):
    b = secured("cbo-b")
    batch = b.post("", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Task/T2"}},
        {"request": {"method": "GET", "url": "Task/T1"}}]}).json()
    statuses = [e["response"]["status"] for e in batch["entry"]]
    assert statuses[0].startswith("404") and statuses[1].startswith("200")
    foreign = _task("T2", "SR2", "P2", "B")
    txn = b.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [_put(foreign)]})
    assert txn.status_code == 404
    assert secured("ehr-a").get("Task/T2").json()["owner"]["reference"] == "Organization/C"


def test_insufficient_scope_is_403_and_denials_are_audited(secured):
    before = len(list_audit_events(secured.database, outcome=OUTCOME_DENIED, limit=100000))
    narrow = secured("narrow", "system/Patient.rs")
    resp = narrow.get("Task")
    assert resp.status_code == 403
    assert "insufficient_scope" in resp.headers.get("WWW-Authenticate", "")
    assert narrow.get("Patient/P1").status_code == 200
    assert secured("cbo-b").get("Task/T2").status_code == 404
    after = len(list_audit_events(secured.database, outcome=OUTCOME_DENIED, limit=100000))
    assert after >= before + 2
    assert secured("cbo-b").get("$audit-events").status_code == 403


def test_writes_are_audited_with_provenance(secured):
    b = secured("cbo-b")
    task = b.get("Task/T1").json()
    task["status"] = "accepted"
    resp = b.put("Task/T1", task)
    assert resp.status_code == 200, resp.text
    events = list_audit_events(secured.database, client_id="cbo-b", limit=100000)
    assert any(e["outcome"] == "0" and "Task/T1" in str(e.get("entity")) for e in events)
    version = resp.json()["meta"]["versionId"]
    with secured.database.read() as conn:
        repo = Repository(conn)
        found = [repo.read("Provenance", pid).resource()
                 for pid in find_ids(conn, "Provenance", [("target", "Task/T1")], limit=10)]
    # the clinic's create (it wrote the referral) and the recipient's update
    assert [(p["target"], p["activity"]["coding"][0]["code"]) for p in found] == [
        ([{"reference": "Task/T1/_history/1"}], "CREATE"),
        ([{"reference": f"Task/T1/_history/{version}"}], "UPDATE")]
    assert found[0]["agent"][0]["who"]["identifier"]["value"] == "ehr-a"
    agent = found[1]["agent"][0]
    assert agent["who"]["identifier"]["value"] == "cbo-b"
    assert agent["type"]["coding"][0]["code"] == "author"


def test_directory_entries_are_read_by_all_changed_only_by_their_organization(secured):
    b = secured("cbo-b")
    own = b.get("Organization/B").json()
    own["alias"] = ["Lakeside"]
    assert b.put("Organization/B", own).status_code == 200
    other = b.get("Organization/C").json()
    other["alias"] = ["taken over"]
    assert b.put("Organization/C", other).status_code == 403
    service = sample("HealthcareService", providedBy={"reference": "Organization/C"})
    assert b.post("HealthcareService", service).status_code == 403
    service["providedBy"] = {"reference": "Organization/B"}
    assert b.post("HealthcareService", service).status_code == 201
