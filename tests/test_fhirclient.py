"""The `fhirclient` package (an independent R4 client) drives the server as a real client."""

from __future__ import annotations

import pytest
from fhirclient import client
from fhirclient.models import humanname, patient, task
from fhirclient.models.fhirreference import FHIRReference

pytestmark = pytest.mark.usefixtures("sample_world")


def _smart(server) -> client.FHIRClient:
    return client.FHIRClient(settings={"app_id": "tests", "api_base": server.base + "/"})


def test_fhirclient_create_read_update_search(server):
    smart = _smart(server)
    pat = patient.Patient({"gender": "female", "birthDate": "1984-07-01"})
    name = humanname.HumanName()
    name.family, name.given = "Nakamura", ["Emi"]
    pat.name = [name]
    created = pat.create(smart.server)
    assert created["resourceType"] == "Patient"
    rid = created["id"]

    fetched = patient.Patient.read(rid, smart.server)
    assert fetched.name[0].family == "Nakamura"
    assert fetched.meta.versionId == "1"

    fetched.gender = "other"
    updated = fetched.update(smart.server)
    assert updated["meta"]["versionId"] == "2"
    assert patient.Patient.read(rid, smart.server).gender == "other"

    results = patient.Patient.where(struct={"family": "Nakamura"}).perform_resources(
        smart.server)
    assert rid in {p.id for p in results}


def test_fhirclient_task_with_references(server):
    smart = _smart(server)
    ref = FHIRReference({"reference": "Patient/p1"})
    t = task.Task({"status": "requested", "intent": "order"})
    t.for_fhir = ref
    created = t.create(smart.server)
    fetched = task.Task.read(created["id"], smart.server)
    assert fetched.status == "requested" and fetched.for_fhir.reference == "Patient/p1"
