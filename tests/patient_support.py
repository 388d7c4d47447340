"""A small world for the patient's pages: a clinic that screened and referred a patient, a
provider that accepted the referral, the patient's own account, and a second patient who
must see none of it. Everything is made through real interfaces (FHIR over HTTP with the
organizations' Backend Services tokens, `users add --patient`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.live import FhirHttp
from tests.web_support import Staff, WebServer

SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
SDOHCC_CODES = ("http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                "SDOHCC-CodeSystemTemporaryCodes")
TASK_FOR_PATIENT = ("http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
                    "SDOHCC-TaskForPatient")
PHQ9 = "http://mh-referral.example.org/fhir/Questionnaire/phq-9|1.0.0"


@dataclass
class PatientWorld:
    server: WebServer
    clinic: FhirHttp  # the referring clinic's system
    provider: FhirHttp  # the receiving provider's system
    doctor: Staff
    patient: str  # id
    other_patient: str
    username: str
    other_username: str
    referral: dict  # {task, service_request, consent}

    @property
    def patient_ref(self) -> str:
        return f"Patient/{self.patient}"


def contact_details(server: WebServer, patient_id: str, email: str, phone: str) -> None:
    """Give the patient an e-mail address and a mobile number on file (as the server)."""
    from fhir_server.interactions import crud

    call = server.network.call
    patient = crud.read(call, "Patient", patient_id).stored.resource()
    patient["telecom"] = [{"system": "email", "value": email},
                          {"system": "phone", "value": phone, "use": "mobile"}]
    crud.update(call, "Patient", patient_id, patient)


def move(client: FhirHttp, task_id: str, status: str, **extra: Any) -> dict:
    task = client.get(f"Task/{task_id}").json()
    task.update(status=status, **extra)
    return client.put(f"Task/{task_id}", task, headers={
        "If-Match": f'W/"{task["meta"]["versionId"]}"'}).json()


def build_world(server: WebServer) -> PatientWorld:
    net = server.network
    net.organization("riverside-clinic", "Riverside Family Health Center")
    net.organization("lakeside", "Lakeside Behavioral Health")
    service = net.service(
        "lakeside-counseling", "lakeside", "Lakeside Counseling", "therapy", "306226009",
        telecom=[{"system": "phone", "value": "617-555-0142"},
                 {"system": "url", "value": "https://lakeside.example.org"}],
        hours=[{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                "availableStartTime": "09:00:00", "availableEndTime": "17:00:00"}])
    doctor = net.staff("dr_rivera", "riverside-clinic", "Ana", "Rivera")
    clinic = net.client_for("riverside-clinic")
    provider = net.client_for("lakeside")
    patient = net.screened_patient(clinic, doctor, "Marisol", "Delgado",
                                   [2, 2, 2, 2, 2, 2, 2, 2, 0], [2, 2, 2, 1, 1, 1, 1])
    other = net.screened_patient(clinic, doctor, "Teodoro", "Quispe",
                                 [1, 1, 1, 1, 1, 1, 1, 1, 0])
    contact_details(server, patient, "marisol@example.org", "+1 617 555 0100")
    contact_details(server, other, "teo@example.org", "+1 617 555 0199")
    referral = net.refer(clinic, doctor, patient, service.split("/")[1],
                         screening_of(server, patient))
    net.refer(clinic, doctor, other, service.split("/")[1], screening_of(server, other))
    move(provider, referral["task"]["id"], "accepted")
    return PatientWorld(server=server, clinic=clinic, provider=provider, doctor=doctor,
                        patient=patient, other_patient=other,
                        username=net.patient_account(patient, "marisol.delgado"),
                        other_username=net.patient_account(other, "teo.quispe"),
                        referral=referral)


def screening_of(server: WebServer, patient_id: str) -> list[str]:
    """The patient's screening responses (the referral carries them)."""
    return [f"QuestionnaireResponse/{r['id']}" for r in stored(
        server, "QuestionnaireResponse", [("subject", f"Patient/{patient_id}")])]


def follow_up_task(world: PatientWorld, patient_id: str | None = None,
                   questionnaire: str = PHQ9, **extra: Any) -> dict:
    """A TaskForPatient asking the patient to answer a questionnaire, written by the
    clinic (the shape the outcomes work schedules when care starts)."""
    patient = f"Patient/{patient_id or world.patient}"
    task = {
        "resourceType": "Task", "meta": {"profile": [TASK_FOR_PATIENT]},
        "status": "ready", "intent": "order", "priority": "routine",
        "code": {"coding": [{"system": SDC_TEMP, "code": "complete-questionnaire"}],
                 "text": "Answer the PHQ-9 follow-up questions"},
        "description": "Follow-up PHQ-9: how you have been feeling since your care started.",
        "for": {"reference": patient}, "owner": {"reference": patient},
        "authoredOn": "2026-12-01T10:00:00Z",
        "requester": {"reference": world.doctor.role},
        "input": [
            {"type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire"}]},
             "valueCanonical": questionnaire},
            {"type": {"coding": [{"system": SDOHCC_CODES, "code": "questionnaire-category"}]},
             "valueCodeableConcept": {"coding": [{"system": SDOHCC_CODES,
                                                  "code": "risk-questionnaire"}]}}],
        **extra}
    if patient_id is None:
        task["basedOn"] = [{"reference": "ServiceRequest/"
                                          f"{world.referral['service_request']['id']}"}]
    return world.clinic.post("Task", task).json()


def stored(server: WebServer, res_type: str, params: list[tuple[str, str]]) -> list[dict]:
    """What the server stored, searched without any access policy (to check what a write
    produced, not who may see it)."""
    from fhir_server.interactions.search import search_bundle

    with server.db.read() as conn:
        bundle = search_bundle(conn, res_type, params, base_url=server.base, strict=True)
    return [e["resource"] for e in bundle.get("entry", [])
            if (e.get("search") or {}).get("mode", "match") == "match"]
