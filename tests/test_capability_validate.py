"""The CapabilityStatement reflects what is wired; $validate uses base R4 and the profiles."""

from __future__ import annotations

from fhir_server.resource_types import resource_types
from tests.samples import sample

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"


def test_capability_statement_is_generated_from_the_server(server):
    cap = server.get("metadata").json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    assert {"application/fhir+json", "application/fhir+xml"} <= set(cap["format"])
    rest = cap["rest"][0]
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch",
                                                          "history-system", "search-system"}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(by_type) == set(resource_types())  # every R4 resource type
    task = by_type["Task"]
    assert {i["code"] for i in task["interaction"]} >= {"read", "vread", "update", "patch",
                                                        "delete", "create", "search-type",
                                                        "history-instance", "history-type"}
    assert SDOHCC + "SDOHCC-TaskForReferralManagement" in task["supportedProfile"]
    assert {"redirect", "timeline", "validate"} <= {o["name"] for o in task["operation"]}
    params = {p["name"]: p["type"] for p in task["searchParam"]}
    assert params["owner"] == "reference" and params["status"] == "token"
    assert "output" in params  # the Gravity Task output parameter
    registry = server.app.extensions["fhir_services"].operations
    for op in registry.operations.values():  # every registered operation is advertised
        if op.system:
            assert op.name in {o["name"] for o in rest["operation"]}
    sub = by_type["Subscription"]
    assert any(e["url"].endswith("capabilitystatement-subscriptiontopic-canonical")
               for e in sub.get("extension", []))


def test_advertised_search_params_work(server):
    """Every search parameter advertised for the referral types is accepted in strict mode."""
    cap = server.get("metadata").json()
    by_type = {r["type"]: r for r in cap["rest"][0]["resource"]}
    for res_type in ("Task", "ServiceRequest", "Patient", "Observation", "HealthcareService"):
        for param in by_type[res_type]["searchParam"]:
            if param["type"] in ("composite", "special"):
                continue
            value = {"token": "x", "string": "x", "reference": "Patient/x",
                     "date": "2026-01-01", "number": "1", "quantity": "1",
                     "uri": "http://x"}[param["type"]]
            resp = server.get(res_type, params={param["name"]: value},
                              headers={"Prefer": "handling=strict"})
            assert resp.status_code == 200, (res_type, param["name"], resp.text)


def test_validate_operation(server):
    ok = server.post("Patient/$validate", sample("Patient"))
    assert ok.status_code == 200
    assert all(i["severity"] not in ("error", "fatal") for i in ok.json()["issue"])
    bad = server.post("Patient/$validate", sample("Patient", birthDate="soon"))
    assert bad.status_code == 200
    assert bad.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    task = sample("Task")
    task["code"]["coding"][0]["code"] = "fulfill"
    task["focus"] = {"reference": "ServiceRequest/x"}
    del task["requester"]
    wrapped = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": task},
        {"name": "profile", "valueUri": SDOHCC + "SDOHCC-TaskForReferralManagement"}]}
    profiled = server.post("Task/$validate", wrapped).json()
    assert any(i["severity"] == "error" and "requester" in " ".join(i.get("expression", []))
               for i in profiled["issue"]), profiled
    unknown = server.post("Patient/$validate", sample("Patient"),
                          params={"profile": "http://example.org/nope"})
    assert unknown.status_code == 400
    rid = server.post("Patient", sample("Patient")).json()["id"]
    stored = server.post(f"Patient/{rid}/$validate")
    assert stored.status_code == 200


def test_missing_required_element_on_write_is_400(server):
    sr = sample("ServiceRequest")
    del sr["subject"]
    resp = server.post("ServiceRequest", sr)
    assert resp.status_code == 400, resp.text  # base R4 cardinality (1..1): structure
    issue = resp.json()["issue"][0]
    assert (issue["code"], issue["expression"]) == ("required", ["ServiceRequest.subject"])


def test_structure_definitions_are_published(server):
    url = SDOHCC + "SDOHCC-ServiceRequest"
    found = server.get("StructureDefinition", params={"url": url}).json()
    assert [e["resource"]["url"] for e in found["entry"]] == [url]
    topics = server.get("Basic", params={
        "code": "http://hl7.org/fhir/fhir-types|SubscriptionTopic"}).json()
    assert len(topics.get("entry", [])) >= 2
    questionnaires = server.get("Questionnaire", params={
        "url": "http://mh-referral.example.org/fhir/Questionnaire/phq-9",
        "version": "1.0.0"}).json()
    assert len(questionnaires["entry"]) == 1
