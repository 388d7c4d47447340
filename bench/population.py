"""A realistic referral population, written the way a client would write it: transaction
Bundles through the REST API, so every resource goes through validation, profiles, workflow
rules, screening, the search index and history like production traffic.

Per patient: a Patient, a completed PHQ-9 QuestionnaireResponse (the server scores it and
derives its Observations), and above a score of 4 a referral: an SDOHCC ServiceRequest and a
Task created `requested`. Later rounds move the Tasks through the workflow with
`If-Match` updates (accepted, rejected, cancelled, in-progress, on-hold, completed
with a Procedure as output, failed), so every status is present. A provider directory
(community Organizations, HealthcareServices, Locations, clinics, Practitioners) comes first.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare"
N_ORGS, N_CLINICS, N_PRACTITIONERS = 200, 20, 500
PHQ9_ITEMS = ["/44250-9", "/44255-8", "/44259-0", "/44254-1", "/44251-7", "/44258-2",
              "/44252-5", "/44253-3", "/44260-8"]
PHQ9_ANSWERS = [("LA6568-5", "Not at all"), ("LA6569-3", "Several days"),
                ("LA6570-1", "More than half the days"), ("LA6571-9", "Nearly every day")]
# Final Task status -> the path of statuses after `requested` that leads to it.
PATHS: dict[str, list[str]] = {
    "requested": [], "accepted": ["accepted"],
    "rejected": ["rejected"], "cancelled": ["cancelled"],
    "in-progress": ["accepted", "in-progress"],
    "on-hold": ["accepted", "in-progress", "on-hold"],
    "completed": ["accepted", "in-progress", "completed"],
    "failed": ["accepted", "in-progress", "failed"],
}
STATUS_WEIGHTS = {"requested": 16, "accepted": 16, "rejected": 6,
                  "cancelled": 5, "in-progress": 15, "on-hold": 4, "completed": 30,
                  "failed": 6}

Entry = dict[str, Any]


def put(resource: dict[str, Any], if_match: str | None = None) -> Entry:
    """A transaction entry writing `resource` at its own id (update-as-create). No fullUrl:
    it is optional for a PUT, and a relative one is refused (it must be absolute)."""
    request: dict[str, Any] = {"method": "PUT",
                               "url": f"{resource['resourceType']}/{resource['id']}"}
    if if_match:
        request["ifMatch"] = if_match
    return {"resource": resource, "request": request}


def directory_entries() -> Iterator[Entry]:
    """Community organizations with a service and a site each, clinics, practitioners."""
    for i in range(N_ORGS):
        yield put({"resourceType": "Organization", "id": f"cbo-{i}", "active": True,
                   "name": f"Community Service {i}",
                   "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                   "value": f"19{i:08d}"}],
                   "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                   "organization-type", "code": "cg"}]}],
                   "address": [{"city": f"City{i % 37}", "state": "MA"}]})
        yield put({"resourceType": "Location", "id": f"loc-{i}", "name": f"Site {i}",
                   "managingOrganization": {"reference": f"Organization/cbo-{i}"},
                   "position": {"latitude": 42 + (i % 50) / 100,
                                "longitude": -71 - i / 1000}})
        yield put({"resourceType": "HealthcareService", "id": f"hs-{i}", "active": True,
                   "providedBy": {"reference": f"Organization/cbo-{i}"},
                   "location": [{"reference": f"Location/loc-{i}"}],
                   "name": f"Counselling {i}",
                   "category": [{"coding": [{"system": f"{SDOHCC}/CodeSystem/"
                                                       "SDOHCC-CodeSystemTemporaryCodes",
                                             "code": "mental-health"}]}]})
    for i in range(N_CLINICS):
        yield put({"resourceType": "Organization", "id": f"clinic-{i}", "active": True,
                   "name": f"Clinic {i}"})
    for i in range(N_PRACTITIONERS):
        yield put({"resourceType": "Practitioner", "id": f"pr-{i}",
                   "name": [{"family": f"Doctor{i}", "given": ["Sam"]}]})


class Patients:
    """Patient i's resources and, per round, the Task transitions still to make."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.final_status: dict[int, str] = {}
        self.clinic: dict[int, int] = {}
        self.owner: dict[int, int] = {}
        self.day: dict[int, str] = {}

    def first_round(self, i: int) -> list[Entry]:
        """Patient, screening and (for a positive screen) the referral, all creates."""
        rng = self.rng
        pid = f"pat-{i}"
        subject = {"reference": f"Patient/{pid}"}
        day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        self.day[i] = day
        answers = [rng.choice(PHQ9_ANSWERS) if rng.random() < 0.7 else PHQ9_ANSWERS[0]
                   for _ in PHQ9_ITEMS]
        score = sum(PHQ9_ANSWERS.index(a) for a in answers)
        entries = [
            put({"resourceType": "Patient", "id": pid, "active": True,
                 "gender": rng.choice(["female", "male"]),
                 "birthDate": f"{rng.randint(1940, 2008)}-0{rng.randint(1, 9)}"
                              f"-1{rng.randint(0, 9)}",
                 "name": [{"family": f"Family{i % 5000}", "given": [f"Given{i % 700}"]}],
                 "identifier": [{"system": "http://hospital.example.org/mrn",
                                 "value": f"M{i}"}]}),
            put({"resourceType": "QuestionnaireResponse", "id": f"qr-{i}",
                 "status": "completed",
                 "questionnaire": "http://mh-referral.example.org/fhir/Questionnaire/phq-9"
                                  "|1.0.0",
                 "subject": subject, "authored": f"{day}T10:00:00Z",
                 "item": [{"linkId": link, "answer": [{"valueCoding": {
                     "system": "http://loinc.org", "code": code, "display": display}}]}
                     for link, (code, display) in zip(PHQ9_ITEMS, answers, strict=True)]}),
        ]
        if score < 5:
            return entries
        clinic = rng.randrange(N_CLINICS)
        status = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
        self.final_status[i], self.clinic[i] = status, clinic
        requester = {"reference": f"Organization/clinic-{clinic}"}
        entries.append(put({
            "resourceType": "ServiceRequest", "id": f"sr-{i}",
            "meta": {"profile": [f"{SDOHCC}/StructureDefinition/SDOHCC-ServiceRequest"]},
            "status": "active", "intent": "order",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "410606002",
                                      "display": "Social service procedure"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "384692006",
                                 "display": "Mental health counseling"}]},
            "subject": subject, "requester": requester,
            "supportingInfo": [{"reference": f"QuestionnaireResponse/qr-{i}"}],
            "authoredOn": f"{day}T10:10:00Z"}))
        task: dict[str, Any] = {
            "resourceType": "Task", "id": f"task-{i}", "status": "requested",
            "intent": "order",
            "meta": {"profile": [f"{SDOHCC}/StructureDefinition/"
                                 "SDOHCC-TaskForReferralManagement"]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill"}]},
            "focus": {"reference": f"ServiceRequest/sr-{i}"}, "for": subject,
            "requester": requester, "authoredOn": f"{day}T10:11:00Z", "priority": "routine"}
        # A fifth of the open referrals go to no one yet (the "unclaimed queue").
        if status != "requested" or rng.random() < 0.8:
            self.owner[i] = rng.randrange(N_ORGS)
            task["owner"] = {"reference": f"Organization/cbo-{self.owner[i]}"}
        entries.append(put(task))
        return entries

    def transition(self, i: int, step: int) -> list[Entry]:
        """The entries moving task i to its `step`-th status (empty when it has no such
        step). The Task's version before the step is `step + 1`."""
        path = PATHS[self.final_status.get(i, "requested")]
        if step >= len(path):
            return []
        status = path[step]
        day = self.day[i]
        task: dict[str, Any] = {
            "resourceType": "Task", "id": f"task-{i}", "status": status, "intent": "order",
            "meta": {"profile": [f"{SDOHCC}/StructureDefinition/"
                                 "SDOHCC-TaskForReferralManagement"]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill"}]},
            "focus": {"reference": f"ServiceRequest/sr-{i}"},
            "for": {"reference": f"Patient/pat-{i}"},
            "requester": {"reference": f"Organization/clinic-{self.clinic[i]}"},
            "owner": {"reference": f"Organization/cbo-{self.owner[i]}"},
            "authoredOn": f"{day}T10:11:00Z", "priority": "routine"}
        entries: list[Entry] = []
        if status in ("rejected", "cancelled", "on-hold", "failed"):
            task["statusReason"] = {"text": f"{status} during the benchmark"}
        if status == "completed":
            procedure = {"resourceType": "Procedure", "id": f"proc-{i}",
                         "status": "completed", "subject": {"reference": f"Patient/pat-{i}"},
                         "basedOn": [{"reference": f"ServiceRequest/sr-{i}"}],
                         "code": {"coding": [{"system": "http://snomed.info/sct",
                                              "code": "384692006"}]},
                         "performedDateTime": f"{day}T15:00:00Z"}
            entries.append(put(procedure))
            task["output"] = [{"type": {"coding": [{
                "system": f"{SDOHCC}/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                "code": "resulting-activity"}]},
                "valueReference": {"reference": f"Procedure/proc-{i}"}}]
        entries.append(put(task, if_match=f'W/"{step + 1}"'))
        return entries

    @staticmethod
    def rounds() -> int:
        """How many transition rounds the longest path needs."""
        return max(len(p) for p in PATHS.values())


def transaction(entries: list[Entry]) -> dict[str, Any]:
    """A transaction Bundle of the entries."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
