"""Common client libraries on their common paths against the live server (both databases):
fhirpy (create, read, update, search, count above 100 matches, paging with fetch_all,
references, operations by GET, delete, errors as OperationOutcome) and fhirclient (search
paging, _summary=count, transaction, operation, delete)."""

from __future__ import annotations

import uuid

import pytest
from fhirclient import client as fc_client
from fhirclient.models import bundle as fc_bundle
from fhirclient.models import patient as fc_patient
from fhirclient.models.fhirsearch import FHIRSearch
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.samples import sample

MANY = 105  # more than the 100 matches a default Bundle.total is exact for


@pytest.fixture(scope="module")
def cohort(server):  # type: ignore[no-untyped-def]
    """MANY patients sharing one identifier system, written in one transaction."""
    system = f"http://example.org/cohort/{uuid.uuid4().hex[:8]}"
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": sample("Patient", identifier=[{"system": system, "value": str(i)}]),
                "request": {"method": "POST", "url": "Patient"}} for i in range(MANY)]
    resp = server.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert resp.status_code == 200, resp.text
    return system


def test_fhirpy_crud_search_references_and_delete(server):
    fhir = SyncFHIRClient(server.base)
    mrn = uuid.uuid4().hex[:10]
    patient = fhir.resource("Patient", name=[{"family": "Okoye", "given": ["Ada"]}],
                            identifier=[{"system": "http://hospital.example/mrn",
                                         "value": mrn}], gender="female")
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    found = fhir.resources("Patient").search(identifier=f"http://hospital.example/mrn|{mrn}")
    assert found.first().id == patient.id
    patient["birthDate"] = "1980-02-29"
    patient.save()
    assert fhir.reference("Patient", patient.id).to_resource()["meta"]["versionId"] == "2"

    task = fhir.resource("Task", status="requested", intent="order",
                         code={"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                           "code": "approve"}]},
                         **{"for": patient.to_reference()})
    task.save()
    raw = fhir.resources("Task").search(_id=task.id).include("Task", "patient").fetch_raw()
    assert {e["resource"]["resourceType"] for e in raw["entry"]} == {"Task", "Patient"}
    timeline = fhir.execute(f"Task/{task.id}/$timeline", method="get")
    assert timeline["resourceType"] == "Parameters"

    with pytest.raises(OperationOutcome) as refused:
        fhir.resource("Patient", birthDate="1980-02-30").save()
    assert refused.value.resource["issue"][0]["expression"] == ["Patient.birthDate"]

    task.delete()
    with pytest.raises(ResourceNotFound):
        fhir.reference("Task", task.id).to_resource()


def test_fhirpy_count_and_fetch_all_above_100_matches(server, cohort):
    fhir = SyncFHIRClient(server.base)
    patients = fhir.resources("Patient").search(identifier=f"{cohort}|")
    assert patients.count() == MANY  # _count=0: the server gives the total
    everyone = patients.limit(20).fetch_all()  # follows the `next` links
    assert len(everyone) == MANY and len({p.id for p in everyone}) == MANY


def test_fhirpy_operation_by_get_with_parameters(server):
    fhir = SyncFHIRClient(server.base)
    sr = fhir.resource("ServiceRequest", status="active", intent="order",
                       code={"coding": [{"system": "http://snomed.info/sct",
                                         "code": "306226009"}]},
                       subject={"reference": "Patient/" + fhir.resource(
                           "Patient", gender="male").save().id})
    sr.save()
    ranked = fhir.execute(f"ServiceRequest/{sr.id}/$match", method="get",
                          params={"count": 2, "near-misses": 1})
    assert ranked["resourceType"] == "Bundle" and ranked["type"] == "searchset"


def test_fhirclient_paging_count_transaction_and_delete(server, cohort):
    smart = fc_client.FHIRClient(settings={"app_id": "tests", "api_base": server.base + "/"})
    search = FHIRSearch(fc_patient.Patient, {"identifier": f"{cohort}|", "_count": "25"})
    pages = list(search.perform_iter(smart.server))
    assert sum(len(p.entry or []) for p in pages) == MANY and len(pages) == 5
    counted = FHIRSearch(fc_patient.Patient, {"identifier": f"{cohort}|",
                                              "_summary": "count"}).perform(smart.server)
    assert counted.total == MANY and not counted.entry

    transaction = fc_bundle.Bundle({"type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6b3b4a0a-96b2-4e3f-8f4d-3c0e4b0d9b01",
         "resource": sample("Patient"), "request": {"method": "POST", "url": "Patient"}}]})
    response = smart.server.post_json("", transaction.as_json()).json()
    assert response["type"] == "transaction-response"
    location = response["entry"][0]["response"]["location"]
    created = fc_patient.Patient.read(location.split("/")[1], smart.server)
    assert created.id == location.split("/")[1]
    smart.server.delete_json(f"Patient/{created.id}")
    assert server.get(f"Patient/{created.id}").status_code == 410
