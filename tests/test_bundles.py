"""Transaction and batch Bundles: atomic, references resolved, conditional entries honoured."""

from __future__ import annotations

import base64
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live import FhirHttp
from tests.samples import sample
from tests.snapshot import db_snapshot

pytestmark = pytest.mark.usefixtures("sample_world")


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def entry(resource: dict, method: str = "POST", url: str | None = None, full_url: str | None = None,
          **request) -> dict:
    e = {"resource": resource, "request": {"method": method,
                                           "url": url or resource["resourceType"], **request}}
    if full_url:
        e["fullUrl"] = full_url
    return e


def bundle(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def mrn_patient(mrn: str) -> dict:
    return sample("Patient", identifier=[{"system": "http://hospital.example/mrn", "value": mrn}])


def referral_bundle(mrn: str) -> dict:
    pat, org, sr = urn(), urn(), urn()
    org_res = sample("Organization", identifier=[{"system": "http://hl7.org/fhir/sid/us-npi",
                                                  "value": f"NPI-{mrn}"}])
    sr_res = sample("ServiceRequest", subject={"reference": pat},
                    requester={"reference": org})
    sr_res["extension"] = [{"url": "http://example.org/ext/ref",
                            "valueReference": {"reference": pat}}]
    sr_res["contained"] = [{"resourceType": "Provenance", "id": "p1",
                            "target": [{"reference": sr}], "recorded": "2026-01-01T00:00:00Z",
                            "agent": [{"who": {"reference": org}}]}]
    sr_res["relevantHistory"] = [{"reference": "#p1"}]  # dom-3: contained is referenced
    task = sample("Task", focus={"reference": sr}, requester={"reference": org},
                  owner={"reference": org})
    task["for"] = {"reference": pat}
    return bundle(
        entry(mrn_patient(mrn), full_url=pat,
              ifNoneExist=f"identifier=http://hospital.example/mrn|{mrn}"),
        entry(org_res, full_url=org,
              ifNoneExist=f"identifier=http://hl7.org/fhir/sid/us-npi|NPI-{mrn}"),
        entry(sr_res, full_url=sr),
        entry(task, full_url=urn()),
    )


def test_transaction_creates_all_and_rewrites_references(server):
    resp = server.post("", referral_bundle("T-1"))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created"] * 4
    for e in out["entry"]:
        assert e["response"]["etag"] == 'W/"1"'
        assert e["response"]["lastModified"]
        assert e["response"]["location"].endswith("/_history/1")
    pat_id = out["entry"][0]["resource"]["id"]
    org_id = out["entry"][1]["resource"]["id"]
    sr = out["entry"][2]["resource"]
    assert sr["subject"]["reference"] == f"Patient/{pat_id}"
    assert sr["extension"][0]["valueReference"]["reference"] == f"Patient/{pat_id}"
    assert sr["contained"][0]["target"][0]["reference"] == f"ServiceRequest/{sr['id']}"
    assert sr["contained"][0]["agent"][0]["who"]["reference"] == f"Organization/{org_id}"
    task = server.get(out["entry"][3]["response"]["location"].rsplit("/_history", 1)[0]).json()
    assert task["focus"]["reference"] == f"ServiceRequest/{sr['id']}"


def test_second_referral_reuses_patient_and_organization(server):
    first = server.post("", referral_bundle("T-2")).json()
    second = server.post("", referral_bundle("T-2")).json()
    assert [e["response"]["status"] for e in second["entry"][:2]] == ["200 OK", "200 OK"]
    assert second["entry"][0]["resource"]["id"] == first["entry"][0]["resource"]["id"]
    assert second["entry"][2]["resource"]["subject"] == first["entry"][2]["resource"]["subject"]
    found = server.get("Patient", params={"identifier": "http://hospital.example/mrn|T-2"})
    assert len(found.json()["entry"]) == 1


def test_conditional_reference_resolution(server):
    server.post("Patient", mrn_patient("COND-1"))
    task = sample("Task")
    task["for"] = {"reference": "Patient?identifier=http://hospital.example/mrn|COND-1"}
    ok = server.post("", bundle(entry(task)))
    assert ok.status_code == 200, ok.text
    assert ok.json()["entry"][0]["resource"]["for"]["reference"].startswith("Patient/")

    before = db_snapshot(server.database)
    task["for"] = {"reference": "Patient?identifier=http://hospital.example/mrn|NOBODY"}
    none = server.post("", bundle(entry(sample("Basic")), entry(task)))
    assert none.status_code == 404
    assert none.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert db_snapshot(server.database) == before  # the Basic of entry 0 is not kept
    server.post("Patient", mrn_patient("TWIN"))
    server.post("Patient", mrn_patient("TWIN"))
    before = db_snapshot(server.database)
    task["for"] = {"reference": "Patient?identifier=http://hospital.example/mrn|TWIN"}
    many = server.post("", bundle(entry(sample("Basic")), entry(task)))
    assert many.status_code == 412
    assert db_snapshot(server.database) == before


def test_failing_entry_rolls_back_everything(server):
    before = db_snapshot(server.database)
    bad = sample("Patient", birthDate="not-a-date")
    resp = server.post("", bundle(entry(sample("Basic")), entry(sample("Organization")),
                                  entry(bad), entry(sample("Basic"))))
    assert resp.status_code == 400
    issue = resp.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.birthDate"]
    assert "Bundle.entry[2]" in issue["diagnostics"]
    assert db_snapshot(server.database) == before


def test_if_match_in_entry_rolls_back(server):
    rid = server.post("Task", sample("Task")).json()["id"]
    before = db_snapshot(server.database)
    resp = server.post("", bundle(entry(sample("Basic")),
                                  entry(sample("Task", id=rid), "PUT", f"Task/{rid}",
                                        ifMatch='W/"9"')))
    assert resp.status_code == 412
    assert db_snapshot(server.database) == before


@pytest.mark.parametrize("payload,status", [
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, 400),
    ({"resourceType": "Patient"}, 400),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Basic", "code": {"text": "x"}}}]}, 400),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Basic", "code": {"text": "x"}},
                 "request": {"method": "TRACE", "url": "Basic"}}]}, 400),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"request": {"method": "POST", "url": "Basic"}}]}, 400),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Basic", "code": {"text": "x"},
                              "subject": {"reference": "urn:uuid:" + "1" * 32}},
                 "request": {"method": "POST", "url": "Basic"}}]}, 404),
])
def test_bad_bundles_change_nothing(server, payload, status):
    before = db_snapshot(server.database)
    resp = server.post("", payload)
    assert resp.status_code == status, resp.text
    assert db_snapshot(server.database) == before


def test_duplicate_full_urls_and_identities(server):
    u = urn()
    before = db_snapshot(server.database)
    dup = server.post("", bundle(entry(sample("Basic"), full_url=u),
                                 entry(sample("Basic"), full_url=u)))
    assert dup.status_code == 400
    assert "Bundle.entry[1]" in dup.json()["issue"][0]["diagnostics"]
    same = server.post("", bundle(entry(sample("Basic", id="x1"), "PUT", "Basic/x1"),
                                  entry(sample("Basic", id="x1"), "PUT", "Basic/x1")))
    assert same.status_code == 400
    assert db_snapshot(server.database) == before


def test_processing_order_and_get_entries(server):
    victim = server.post("Basic", sample("Basic")).json()["id"]
    resp = server.post("", bundle(
        {"request": {"method": "GET", "url": f"Basic?_id={victim}"}},
        entry(sample("Basic"), full_url=urn()),
        {"request": {"method": "DELETE", "url": f"Basic/{victim}"}},
    ))
    assert resp.status_code == 200, resp.text
    out = resp.json()["entry"]
    assert out[1]["response"]["status"] == "201 Created"
    assert out[2]["response"]["status"] == "200 OK"
    # GET entries run last (after DELETE), so the search no longer finds the victim.
    assert out[0]["resource"]["type"] == "searchset"
    assert out[0]["resource"].get("entry", []) == []
    assert server.get(f"Basic/{victim}").status_code == 410


def test_patch_entry_via_binary(server):
    rid = server.post("Task", sample("Task")).json()["id"]
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    resp = server.post("", bundle(entry(binary, "PATCH", f"Task/{rid}")))
    assert resp.status_code == 200, resp.text
    assert server.get(f"Task/{rid}").json()["status"] == "accepted"


def test_batch_entries_are_independent(server):
    good = sample("Basic")
    resp = server.post("", bundle(entry(good), entry(sample("Patient", gender="robot")),
                                  {"request": {"method": "GET", "url": "Basic/missing"}},
                                  entry(sample("Basic")), kind="batch"))
    assert resp.status_code == 200
    out = resp.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0].startswith("201") and statuses[3].startswith("201")
    assert statuses[1].startswith("400") and statuses[2].startswith("404")
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_entry_limit(server):
    limit = server.app.extensions["fhir_services"].settings.max_bundle_entries
    too_many = bundle(*[entry(sample("Basic")) for _ in range(limit + 1)])
    assert server.post("", too_many).status_code == 413


def test_concurrent_conditional_creates_make_one_patient(server):
    mrn = f"RACE-{uuid.uuid4().hex[:6]}"

    def post(_: int) -> int:
        client = FhirHttp(server.base)
        return client.post("", referral_bundle(mrn)).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(post, range(6)))
    assert statuses == [200] * 6
    found = server.get("Patient", params={"identifier": f"http://hospital.example/mrn|{mrn}"})
    assert len(found.json()["entry"]) == 1
    orgs = server.get("Organization",
                      params={"identifier": f"http://hl7.org/fhir/sid/us-npi|NPI-{mrn}"})
    assert len(orgs.json()["entry"]) == 1


def test_bundle_entries_use_the_http_route_table(server):
    """Every entry goes through the same route table as HTTP: a GET entry answers what the
    same GET over HTTP answers (compartment search, vread of a deletion: 410), and routes
    that need their own transaction are refused inside a Bundle."""
    patient = server.post("Patient", sample("Patient")).json()
    obs = sample("Observation", subject={"reference": f"Patient/{patient['id']}"})
    obs_id = server.post("Observation", obs).json()["id"]
    gone = server.post("Basic", sample("Basic")).json()["id"]
    assert server.delete(f"Basic/{gone}").status_code == 200
    urls = [f"Patient/{patient['id']}/Observation", f"Basic/{gone}/_history/2",
            f"Observation/{obs_id}", f"Observation/{obs_id}/_history",
            f"Observation/{obs_id}/$validate", "metadata"]
    out = server.post("", bundle(*[{"request": {"method": "GET", "url": u}} for u in urls],
                                 kind="batch")).json()["entry"]
    over_http = [server.get(u) for u in urls[:3]]
    assert [e["response"]["status"][:3] for e in out] == ["200", "410", "200", "400",
                                                           "400", "400"]
    assert [r.status_code for r in over_http] == [200, 410, 200]
    assert [e["resource"]["id"] for e in out[0]["resource"]["entry"]] == [obs_id]
    assert over_http[0].json()["entry"][0]["resource"]["id"] == obs_id
    assert "not supported inside a Bundle" in json.dumps(out[3]["response"]["outcome"])
    wrong = server.post("", bundle({"request": {"method": "DELETE", "url": "metadata"}},
                                   kind="batch")).json()["entry"][0]["response"]
    assert wrong["status"].startswith("405")


# -- references resolved as R4 Bundle "Resolving references in Bundles" says -------------------
EHR = "http://ehr.example/fhir"


def test_relative_references_resolve_against_absolute_full_urls(server):
    """Entries with RESTful fullUrls from another server: `Patient/pat-1` inside the Bundle
    means the entry `http://ehr.example/fhir/Patient/pat-1`, not a literal local id."""
    patient = mrn_patient(f"ABS-{uuid.uuid4().hex[:6]}")
    patient["id"] = "pat-1"
    sr = sample("ServiceRequest", id="sr-1", subject={"reference": "Patient/pat-1"})
    task = sample("Task", focus={"reference": "ServiceRequest/sr-1"})
    task["for"] = {"reference": "Patient/pat-1"}
    resp = server.post("", bundle(entry(patient, full_url=f"{EHR}/Patient/pat-1"),
                                  entry(sr, full_url=f"{EHR}/ServiceRequest/sr-1"),
                                  entry(task, full_url=f"{EHR}/Task/t-1")))
    assert resp.status_code == 200, resp.text
    out = resp.json()["entry"]
    pat_id, sr_id = out[0]["resource"]["id"], out[1]["resource"]["id"]
    assert pat_id != "pat-1"  # POST: the server assigns the id
    assert out[1]["resource"]["subject"]["reference"] == f"Patient/{pat_id}"
    assert out[2]["resource"]["for"]["reference"] == f"Patient/{pat_id}"
    assert out[2]["resource"]["focus"]["reference"] == f"ServiceRequest/{sr_id}"
    assert server.get(f"Patient/{pat_id}").status_code == 200


def test_relative_absolute_urn_and_conditional_references_mixed(server):
    mrn = f"MIX-{uuid.uuid4().hex[:6]}"
    existing = server.post("Organization", sample(
        "Organization", identifier=[{"system": "http://hl7.org/fhir/sid/us-npi",
                                     "value": mrn}])).json()
    pat_urn = urn()
    practitioner = sample("Practitioner", id="dr-1")
    sr = sample("ServiceRequest", subject={"reference": pat_urn},  # urn:uuid
                requester={"reference": f"{EHR}/Practitioner/dr-1"},  # absolute
                performer=[{"reference": "Organization?identifier="
                                         f"http://hl7.org/fhir/sid/us-npi|{mrn}"}])  # conditional
    task = sample("Task", focus={"reference": "ServiceRequest/sr-9"},  # relative
                  owner={"reference": f"Organization/{existing['id']}"})  # a stored resource
    task["for"] = {"reference": pat_urn}
    resp = server.post("", bundle(
        entry(mrn_patient(mrn), full_url=pat_urn),
        entry(practitioner, full_url=f"{EHR}/Practitioner/dr-1"),
        entry(sr, full_url=f"{EHR}/ServiceRequest/sr-9"),
        entry(task, full_url=f"{EHR}/Task/t-9")))
    assert resp.status_code == 200, resp.text
    out = resp.json()["entry"]
    pat_id, dr_id, sr_id = (out[i]["resource"]["id"] for i in range(3))
    stored_sr = out[2]["resource"]
    assert stored_sr["subject"]["reference"] == f"Patient/{pat_id}"
    assert stored_sr["requester"]["reference"] == f"Practitioner/{dr_id}"
    assert stored_sr["performer"][0]["reference"] == f"Organization/{existing['id']}"
    stored_task = out[3]["resource"]
    assert stored_task["focus"]["reference"] == f"ServiceRequest/{sr_id}"
    assert stored_task["for"]["reference"] == f"Patient/{pat_id}"
    assert stored_task["owner"]["reference"] == f"Organization/{existing['id']}"


def test_every_failing_entry_is_reported(server):
    before = db_snapshot(server.database)
    resp = server.post("", bundle(entry(sample("Patient", birthDate="not-a-date")),
                                  entry(sample("Basic")),
                                  entry(sample("Patient", gender="woman")),
                                  entry(sample("Basic"), full_url="Basic/relative")))
    assert resp.status_code == 400, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [i["expression"][0] for i in outcome["issue"] if i["severity"] == "error"]
    assert expressions == ["Bundle.entry[0].resource.birthDate",
                           "Bundle.entry[2].resource.gender", "Bundle.entry[3].fullUrl"]
    assert db_snapshot(server.database) == before


def test_every_failing_entry_is_reported_when_executing(server):
    a = server.post("Task", sample("Task")).json()
    b = server.post("Task", sample("Task")).json()
    before = db_snapshot(server.database)
    resp = server.post("", bundle(
        entry(sample("Task", id=a["id"]), "PUT", f"Task/{a['id']}", ifMatch='W/"9"'),
        entry(sample("Basic")),
        entry(sample("Task", id=b["id"]), "PUT", f"Task/{b['id']}", ifMatch='W/"7"')))
    assert resp.status_code == 412, resp.text
    expressions = [i["expression"][0] for i in resp.json()["issue"]]
    assert [e.split(".")[1] for e in expressions] == ["entry[0]", "entry[2]"]
    assert db_snapshot(server.database) == before
